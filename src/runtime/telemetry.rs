//! Logging setup: JSON lines on Vercel (one object per line, easy to drain),
//! human-readable locally (coloured only on a terminal). `RUST_LOG` sets the
//! filter as `level` and `target=level` directives (`debug`,
//! `info,rollback_guard=debug`); the default is `info`, with Postgres server
//! NOTICEs (which tokio-postgres logs at INFO: "schema already exists,
//! skipping") at `warn`. A `RUST_LOG` that does not parse is reported and
//! the default applies.
//!
//! The filter is `tracing_subscriber`'s `Targets`, not `EnvFilter`: the
//! latter's span and field matching pulls in a regex engine, which cost
//! every Vercel build about 25 s of CPU for a feature nobody here uses.

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The filter without `RUST_LOG`.
pub const DEFAULT_FILTER: &str = "info,tokio_postgres=warn";

/// The filter `RUST_LOG` asks for (`None`: unset or blank), or why it does not parse.
pub fn filter_from(rust_log: Option<&str>) -> Result<Targets, String> {
    let text = rust_log
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .unwrap_or(DEFAULT_FILTER);
    text.parse::<Targets>()
        .map_err(|e| format!("RUST_LOG {text:?} is not a filter ({e}); using {DEFAULT_FILTER:?}"))
}

/// Installs the global subscriber once; later calls do nothing.
pub fn init() {
    let rust_log = std::env::var("RUST_LOG").ok();
    let (filter, problem) = match filter_from(rust_log.as_deref()) {
        Ok(f) => (f, None),
        Err(why) => (
            DEFAULT_FILTER.parse().expect("the default filter parses"),
            Some(why),
        ),
    };
    let on_vercel = std::env::var_os("VERCEL").is_some();
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    let _ = if on_vercel {
        registry.with(fmt.json()).try_init()
    } else {
        registry.with(fmt).try_init()
    };
    if let Some(why) = problem {
        tracing::warn!("{why}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::level_filters::LevelFilter;

    #[test]
    fn the_default_keeps_postgres_notices_out_and_rust_log_directives_apply() {
        for unset in [None, Some(""), Some("  ")] {
            let f = filter_from(unset).unwrap();
            assert!(f.would_enable("rollback_guard::web", &tracing::Level::INFO));
            assert!(!f.would_enable("rollback_guard::web", &tracing::Level::DEBUG));
            assert!(!f.would_enable("tokio_postgres::connection", &tracing::Level::INFO));
            assert!(f.would_enable("tokio_postgres::connection", &tracing::Level::WARN));
        }
        let f = filter_from(Some("warn,rollback_guard=debug")).unwrap();
        assert!(f.would_enable("rollback_guard::flows", &tracing::Level::DEBUG));
        assert!(!f.would_enable("hyper", &tracing::Level::INFO));
        assert_eq!(
            filter_from(Some("off")).unwrap().default_level(),
            Some(LevelFilter::OFF)
        );
    }

    #[test]
    fn a_rust_log_that_does_not_parse_says_so_and_names_the_default() {
        let e = filter_from(Some("rollback_guard=loud")).unwrap_err();
        assert!(
            e.contains("rollback_guard=loud") && e.contains(DEFAULT_FILTER),
            "{e}"
        );
    }
}
