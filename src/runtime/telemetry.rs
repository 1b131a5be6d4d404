//! Logging setup: JSON lines on Vercel (one object per line, easy to drain),
//! human-readable locally. `RUST_LOG` sets the filter (default `info`).

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once; later calls do nothing.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let on_vercel = std::env::var_os("VERCEL").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if on_vercel {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
