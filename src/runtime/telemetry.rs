//! Logging setup: JSON lines on Vercel (one object per line, easy to drain),
//! human-readable locally (coloured only on a terminal). `RUST_LOG` sets the
//! filter; the default is `info`, with Postgres server NOTICEs (which
//! tokio-postgres logs at INFO: "schema already exists, skipping") at `warn`.

use tracing_subscriber::EnvFilter;

/// The filter without `RUST_LOG`.
pub const DEFAULT_FILTER: &str = "info,tokio_postgres=warn";

/// Installs the global subscriber once; later calls do nothing.
pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let on_vercel = std::env::var_os("VERCEL").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = if on_vercel {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
