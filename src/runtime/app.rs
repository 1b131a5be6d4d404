//! Application-wide state shared by every request: configuration (or why it
//! is invalid), the store (connected and migrated lazily on first use, so cold
//! starts do no I/O), and the clock.

use std::sync::Arc;

use tokio::sync::OnceCell;

use crate::core::clock::Clock;
use crate::flows::decide::Ctx;
use crate::flows::execute::AppDb;
use crate::integrations::clock::SystemClock;
use crate::integrations::vercel::{Retry, VercelApi, VercelClient};
use crate::runtime::config::{Config, ConfigErrors};
use crate::store::{self, Store, StoreResult};

/// The configuration did not validate; `GET /api/health` lists the problems.
#[derive(Clone, Copy, Debug, thiserror::Error)]
#[error("the guard's configuration is invalid; GET /api/health lists the problems")]
pub struct ConfigInvalid;

/// Shared state. Cheap to share behind an `Arc`.
pub struct App {
    config: Result<Arc<Config>, ConfigErrors>,
    store: OnceCell<Arc<dyn Store>>,
    intake: OnceCell<crate::flows::intake::batch::Batcher>,
    clock: Arc<dyn Clock>,
    http: reqwest::Client,
    vercel: Option<Arc<dyn VercelApi>>,
    notifier: crate::flows::notify::Notifier,
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
            intake: OnceCell::new(),
            clock,
            http: crate::flows::probe::client(),
            vercel: None,
            notifier: crate::flows::notify::Notifier::new(Vec::new()),
        }
        .with_vercel_from_config()
    }

    /// State with a store that is already connected and migrated (tests, CLI).
    pub fn with_store(config: Config, store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Self {
            config: Ok(Arc::new(config)),
            store: OnceCell::new_with(Some(store)),
            intake: OnceCell::new(),
            clock,
            http: crate::flows::probe::client(),
            vercel: None,
            notifier: crate::flows::notify::Notifier::new(Vec::new()),
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
                crate::flows::notify::Notifier::from_config(&c.notify, &c.policy.channels.order);
        }
        self
    }

    /// The Vercel API, or `None` in dry-run mode (no `VERCEL_TOKEN`).
    pub fn vercel(&self) -> Option<&dyn VercelApi> {
        self.vercel.as_deref()
    }

    /// The notification channels.
    pub fn notifier(&self) -> &crate::flows::notify::Notifier {
        &self.notifier
    }

    /// The configuration, or [`ConfigInvalid`] (a 503 on the web) when it is invalid.
    pub fn config(&self) -> Result<&Arc<Config>, ConfigInvalid> {
        self.config.as_ref().map_err(|_| ConfigInvalid)
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
                let s = store::connect_with(&cfg.store, cfg.store_timeouts).await?;
                let m = s.migrate().await?;
                tracing::info!(
                    backend = s.backend(),
                    schema_version = m.to,
                    migrated_from = m.from,
                    "store ready"
                );
                Ok(s)
            })
            .await
    }

    /// Records one intake delivery: through the instance's group-commit
    /// writer when the store records batches in one write, else directly
    /// (concurrent requests stay concurrent). `Ok(false)`: a duplicate.
    pub async fn ingest(&self, item: crate::store::Ingest) -> StoreResult<bool> {
        let store = self.store().await?;
        if store.batches_ingest() {
            return self.intake().await?.submit(item).await;
        }
        let taken = store
            .ingest(
                std::slice::from_ref(&item),
                self.clock.now(),
                crate::flows::intake::DEDUPE_TTL,
            )
            .await?;
        Ok(taken.first().copied().unwrap_or(false))
    }

    /// What the instance's intake writer has written so far (`None` before
    /// its first delivery, or when the store records deliveries directly).
    pub fn intake_stats(&self) -> Option<crate::flows::intake::batch::BatchStats> {
        self.intake.get().map(|b| b.stats())
    }

    /// The instance's intake writer (group commit), started on first use.
    async fn intake(&self) -> StoreResult<&crate::flows::intake::batch::Batcher> {
        let store = Arc::clone(self.store().await?);
        let clock = Arc::clone(&self.clock);
        self.intake
            .get_or_try_init(|| async move {
                Ok(crate::flows::intake::batch::Batcher::start(
                    store,
                    clock,
                    crate::flows::intake::DEDUPE_TTL,
                ))
            })
            .await
    }

    /// Everything a decision needs, from this app's parts and `config`.
    pub fn decide_ctx<'a>(
        &'a self,
        store: &'a dyn Store,
        config: &'a Config,
        base_url: String,
    ) -> Ctx<'a> {
        let app_db = config.app_database_url.clone().map(|url| AppDb {
            url,
            migrations_dir: config.policy.database.migrations_dir.clone().into(),
            down_file: config.policy.database.down_file.clone(),
            require_backup: config.policy.database.backup.require_pre_migration,
        });
        Ctx {
            store,
            policy: &config.policy,
            signing_keys: &config.signing_keys,
            vercel: self.vercel(),
            notifier: self.notifier(),
            clock: self.clock(),
            http: self.http_client(),
            base_url,
            wait_budget: std::time::Duration::from_secs(20),
            app_db,
            sealer: config
                .snapshot_key
                .as_ref()
                .and_then(crate::flows::config_snapshot::Sealer::from_base64),
        }
    }
}
