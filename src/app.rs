//! Application-wide state shared by every request: configuration (or why it
//! is invalid), the store (connected and migrated lazily on first use, so cold
//! starts do no I/O), and the clock.

use std::sync::Arc;

use tokio::sync::OnceCell;

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, ConfigErrors};
use crate::error::ApiError;
use crate::store::{self, Store, StoreResult};
use crate::vercel_api::{Retry, VercelApi, VercelClient};

/// Shared state. Cheap to share behind an `Arc`.
pub struct App {
    config: Result<Arc<Config>, ConfigErrors>,
    store: OnceCell<Arc<dyn Store>>,
    clock: Arc<dyn Clock>,
    http: reqwest::Client,
    vercel: Option<Arc<dyn VercelApi>>,
    notifier: crate::notify::Notifier,
}

impl App {
    /// State from the process environment and the real clock.
    pub fn from_env() -> Self {
        let config = Config::from_env();
        if let Err(errs) = &config {
            for e in &errs.0 {
                tracing::error!(key = %e.key, detail = %e.detail, "invalid configuration");
            }
        }
        Self::new(config, Arc::new(SystemClock))
    }

    /// State from an already-loaded configuration.
    pub fn new(config: Result<Config, ConfigErrors>, clock: Arc<dyn Clock>) -> Self {
        Self {
            config: config.map(Arc::new),
            store: OnceCell::new(),
            clock,
            http: crate::probe::client(),
            vercel: None,
            notifier: crate::notify::Notifier::new(Vec::new()),
        }
        .with_vercel_from_config()
    }

    /// State with a store that is already connected and migrated (tests, CLI).
    pub fn with_store(config: Config, store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Self {
            config: Ok(Arc::new(config)),
            store: OnceCell::new_with(Some(store)),
            clock,
            http: crate::probe::client(),
            vercel: None,
            notifier: crate::notify::Notifier::new(Vec::new()),
        }
        .with_vercel_from_config()
    }

    fn with_vercel_from_config(mut self) -> Self {
        if let Ok(c) = &self.config {
            self.vercel = c
                .vercel
                .clone()
                .map(|v| Arc::new(VercelClient::new(v, Retry::default())) as Arc<dyn VercelApi>);
            self.notifier =
                crate::notify::Notifier::from_config(&c.notify, &c.policy.channels.order);
        }
        self
    }

    /// The Vercel API, or `None` in dry-run mode (no `VERCEL_TOKEN`).
    pub fn vercel(&self) -> Option<&dyn VercelApi> {
        self.vercel.as_deref()
    }

    /// The notification channels.
    pub fn notifier(&self) -> &crate::notify::Notifier {
        &self.notifier
    }

    /// The configuration, or a 503 when it is invalid.
    pub fn config(&self) -> Result<&Arc<Config>, ApiError> {
        self.config.as_ref().map_err(|_| ApiError::config_invalid())
    }

    /// The configuration problems, if any.
    pub fn config_errors(&self) -> Option<&ConfigErrors> {
        self.config.as_ref().err()
    }

    /// The shared outbound HTTP client (probes).
    pub fn http_client(&self) -> &reqwest::Client {
        &self.http
    }

    /// The clock.
    pub fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }

    /// The store, connecting and migrating on first use. A failure is not
    /// cached: the next call tries again.
    pub async fn store(&self) -> StoreResult<&Arc<dyn Store>> {
        let cfg = match &self.config {
            Ok(c) => Arc::clone(c),
            Err(_) => {
                return Err(store::StoreError::Unavailable(
                    "configuration is invalid".into(),
                ))
            }
        };
        self.store
            .get_or_try_init(|| async move {
                let s = store::connect(&cfg.store).await?;
                let version = s.migrate().await?;
                tracing::info!(
                    backend = s.backend(),
                    schema_version = version,
                    "store ready"
                );
                Ok(s)
            })
            .await
    }
}
