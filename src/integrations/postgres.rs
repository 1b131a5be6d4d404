//! Connecting to any Postgres this guard talks to (its own store and the
//! app's database): URL parsing with the loopback TLS rule, and TLS.

use std::sync::Arc;
use std::time::Duration;

/// Parses a connection URL. For loopback hosts without an explicit `sslmode`
/// TLS is off (local servers rarely have a trusted certificate); elsewhere
/// TLS is preferred and verified against the Mozilla roots (see [`tls`]).
pub fn client_config(url: &str) -> Result<tokio_postgres::Config, String> {
    let mut cfg: tokio_postgres::Config = url
        .parse()
        .map_err(|e: tokio_postgres::Error| format!("invalid database URL: {e}"))?;
    let loopback = cfg.get_hosts().iter().all(|h| match h {
        tokio_postgres::config::Host::Tcp(name) => {
            matches!(name.as_str(), "localhost" | "127.0.0.1" | "::1")
        }
        #[cfg(unix)]
        tokio_postgres::config::Host::Unix(_) => true,
    });
    if loopback && !url.contains("sslmode=") {
        cfg.ssl_mode(tokio_postgres::config::SslMode::Disable);
    }
    cfg.connect_timeout(Duration::from_secs(5));
    cfg.application_name("rollback-guard");
    Ok(cfg)
}

/// TLS verified against the Mozilla roots (pure Rust: rustls with ring).
pub fn tls() -> tokio_postgres_rustls::MakeRustlsConnect {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_postgres_rustls::MakeRustlsConnect::new(config)
}
