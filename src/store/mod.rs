//! The `Store` contract: everything the guard persists, behind one trait with
//! three backends — Postgres (primary, Neon-compatible), Redis (Upstash-
//! compatible) and embedded SQLite (zero-setup default). The same contract
//! test suite (`tests/store_contract.rs`) runs against all three.
//!
//! Time is always passed in; backends never read the clock, so expiry
//! behaves identically everywhere and is testable without sleeping.

pub mod lease;
pub mod timed;
pub use timed::StoreTimeouts;
mod postgres;
mod redis;
mod sqlite;
mod types;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::core::audit::{AuditEntry, AuditRecord};
use crate::core::clock::Timestamp;
pub use postgres::PostgresStore;
pub use redis::RedisStore;
pub use sqlite::SqliteStore;
pub use types::{
    AlertWrite, Deployment, DeploymentState, Doc, DocFilter, DocWrite, Ingest, JsonText, Migration,
    RollupAdd, RollupRow, ALERT_KIND, MAX_PREFIX,
};

/// Store backend selection.
#[derive(Clone, Debug, PartialEq)]
pub enum StoreConfig {
    /// Postgres (Neon-compatible). Tables live in their own schema, next to the app's.
    Postgres {
        url: crate::core::secret::Secret,
        schema: String,
    },
    /// Redis (Upstash-compatible). Every key starts with `prefix`.
    Redis {
        url: crate::core::secret::Secret,
        prefix: String,
    },
    /// Embedded SQLite file: the zero-setup default.
    Sqlite { path: std::path::PathBuf },
}

impl StoreConfig {
    /// Backend name for health output.
    pub fn backend(&self) -> &'static str {
        match self {
            StoreConfig::Postgres { .. } => "postgres",
            StoreConfig::Redis { .. } => "redis",
            StoreConfig::Sqlite { .. } => "sqlite",
        }
    }

    /// A description safe to print: URLs have passwords removed.
    pub fn describe(&self) -> String {
        match self {
            StoreConfig::Postgres { url, schema } => {
                format!(
                    "{} (schema {schema})",
                    crate::core::secret::redact_url(url.expose())
                )
            }
            StoreConfig::Redis { url, prefix } => {
                format!(
                    "{} (prefix {prefix})",
                    crate::core::secret::redact_url(url.expose())
                )
            }
            StoreConfig::Sqlite { path } => path.display().to_string(),
        }
    }
}

/// A store failure. Every variant is transient from a caller's point of view
/// except `Corrupt`: webhook senders get a 503 and retry.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend could not be reached or the connection broke.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend answered with an error.
    #[error("store query failed: {0}")]
    Query(String),
    /// Stored data could not be decoded.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A record the call depends on does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// Optimistic concurrency lost too many times in a row.
    #[error("store contention: {0}")]
    Contention(String),
}

/// Result alias for store calls.
pub type StoreResult<T> = Result<T, StoreError>;

/// Everything the guard persists. Implementations must be safe to call from
/// many instances at once (Vercel runs functions concurrently).
#[async_trait]
pub trait Store: Send + Sync {
    /// Backend name: `postgres`, `redis` or `sqlite`.
    fn backend(&self) -> &'static str;

    /// Round-trips to the backend.
    async fn ping(&self) -> StoreResult<()>;

    /// Creates or upgrades the guard's own schema. Idempotent and safe to run
    /// concurrently from several instances. Returns the versions before and after.
    async fn migrate(&self) -> StoreResult<Migration>;

    /// Takes the lease `name` for `holder` until `now + ttl`. Succeeds if the
    /// lease is free, expired, or already held by `holder` (which renews it).
    async fn try_acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> StoreResult<bool>;

    /// Gives the lease back if `holder` still has it. Returns whether it did.
    async fn release_lease(&self, name: &str, holder: &str) -> StoreResult<bool>;

    /// Records `key` in `scope` the first time it is seen; returns `false` if
    /// an unexpired claim exists. Used for webhook dedupe and single-use nonces.
    async fn claim_once(
        &self,
        scope: &str,
        key: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> StoreResult<bool>;

    /// Withdraws a claim, so a delivery whose processing failed can be retried.
    async fn release_claim(&self, scope: &str, key: &str) -> StoreResult<()>;

    /// Writes a document if its stored version equals `expected` (`None`:
    /// only if it does not exist yet). `doc.version` is ignored.
    async fn put_doc(&self, doc: &Doc, expected: Option<i64>) -> StoreResult<DocWrite>;

    /// One document.
    async fn get_doc(&self, kind: &str, id: &str) -> StoreResult<Option<Doc>>;

    /// Documents of `kind` matching `filter`, most recently updated first.
    async fn list_docs(
        &self,
        kind: &str,
        filter: &DocFilter,
        limit: usize,
    ) -> StoreResult<Vec<Doc>>;

    /// Adds (or, for `max:` names, raises to) each value in one minute's
    /// counters of `environment`/`deployment`. Atomic per counter.
    async fn add_rollup(
        &self,
        environment: &str,
        deployment: &str,
        minute: i64,
        values: &[(String, f64)],
    ) -> StoreResult<()>;

    /// Records a batch of deliveries. Each is taken only if its claim
    /// `scope`/`key` is free or expired (the first of equal keys in one
    /// batch wins); the returned flags say which were taken. Backends that
    /// can do so record the whole batch in **one transaction** (Postgres:
    /// one commit for many deliveries); then an error means nothing of the
    /// batch was recorded. The default records one delivery after another,
    /// each atomically where the backend allows (see [`ingest_each`]).
    async fn ingest(
        &self,
        batch: &[Ingest],
        now: Timestamp,
        ttl: Duration,
    ) -> StoreResult<Vec<bool>> {
        ingest_each(self, batch, now, ttl).await
    }

    /// Deletes up to `limit` once-claims that expired by `now`; returns how
    /// many. Every delivery leaves a claim for the dedupe window: without
    /// pruning the table only grows. Stores whose keys expire on their own
    /// (Redis) have nothing to prune.
    async fn prune_claims(&self, now: Timestamp, limit: usize) -> StoreResult<u64> {
        let _ = (now, limit);
        Ok(0)
    }

    /// Whether [`Store::ingest`] records a batch in one write, so that
    /// gathering concurrent deliveries pays (group commit). Stores that
    /// record one delivery after another are better called concurrently.
    fn batches_ingest(&self) -> bool {
        false
    }

    /// Adds every increment in `adds` and records the claim `scope`/`key`
    /// in **one atomic write**, unless that claim exists unexpired: then
    /// nothing is added and it returns `false`. So a retried delivery never
    /// counts twice and a failed one never counts half.
    async fn add_rollups_once(
        &self,
        scope: &str,
        key: &str,
        adds: &[RollupAdd],
        now: Timestamp,
        ttl: Duration,
    ) -> StoreResult<bool>;

    /// Counters of `environment`/`deployment` with `from <= minute < to`.
    async fn rollups(
        &self,
        environment: &str,
        deployment: &str,
        from: i64,
        to: i64,
    ) -> StoreResult<Vec<RollupRow>>;

    /// Appends to the hash-chained audit log; sequencing is atomic across instances.
    async fn append_audit(&self, entry: AuditEntry) -> StoreResult<AuditRecord>;

    /// Up to `limit` records with `seq > after`, oldest first.
    /// The last `n` audit records, in order (the dashboard's tail).
    async fn audit_tail(&self, n: usize) -> StoreResult<Vec<AuditRecord>>;

    /// The newest `limit` audit records about any of `subjects`, in order
    /// (indexed by subject: an incident's trail without reading the log).
    async fn audit_of(&self, subjects: &[String], limit: usize) -> StoreResult<Vec<AuditRecord>>;

    async fn audit_after(&self, after: i64, limit: usize) -> StoreResult<Vec<AuditRecord>>;

    /// Inserts or replaces a deployment (keyed by id).
    async fn upsert_deployment(&self, d: &Deployment) -> StoreResult<()>;

    /// One deployment by id.
    async fn deployment(&self, id: &str) -> StoreResult<Option<Deployment>>;

    /// The newest deployments of an environment, newest first.
    async fn recent_deployments(
        &self,
        environment: &str,
        limit: usize,
    ) -> StoreResult<Vec<Deployment>>;

    /// Marks `deployment_id` as the last known good deployment of its environment.
    async fn set_last_known_good(&self, environment: &str, deployment_id: &str) -> StoreResult<()>;

    /// The last known good deployment of an environment.
    async fn last_known_good(&self, environment: &str) -> StoreResult<Option<Deployment>>;
}

/// Appends one audit record: the common case of [`Store::append_audit`].
pub async fn audit(
    store: &dyn Store,
    at: Timestamp,
    actor: &str,
    action: &str,
    subject: &str,
    detail: serde_json::Value,
) -> StoreResult<()> {
    let entry = AuditEntry {
        at,
        actor: actor.into(),
        action: action.into(),
        subject: subject.into(),
        detail,
    };
    store.append_audit(entry).await.map(|_| ())
}

/// Writes the document `build` derives from the current one (if any),
/// compare-and-set, re-reading and rebuilding when another writer got there first.
pub async fn upsert_doc<S, F>(store: &S, kind: &str, id: &str, mut build: F) -> StoreResult<()>
where
    S: Store + ?Sized,
    F: FnMut(Option<&Doc>) -> Doc + Send,
{
    for _ in 0..MAX_CAS_ATTEMPTS {
        let existing = store.get_doc(kind, id).await?;
        let doc = build(existing.as_ref());
        if let DocWrite::Written(_) = store
            .put_doc(&doc, existing.as_ref().map(|d| d.version))
            .await?
        {
            return Ok(());
        }
    }
    Err(StoreError::Contention(format!("{kind} {id}")))
}

/// [`Store::add_rollups_once`] for stores whose [`Store::ingest`] is one
/// atomic write: a one-delivery batch with counters only.
pub(crate) async fn add_rollups_once_by_ingest<S: Store + ?Sized>(
    store: &S,
    scope: &str,
    key: &str,
    adds: &[RollupAdd],
    now: Timestamp,
    ttl: Duration,
) -> StoreResult<bool> {
    let item = Ingest {
        scope: scope.into(),
        key: key.into(),
        rollups: adds.to_vec(),
        alerts: Vec::new(),
    };
    let taken = store.ingest(std::slice::from_ref(&item), now, ttl).await?;
    Ok(taken.first().copied().unwrap_or(false))
}

/// [`Store::ingest`] one delivery at a time with the store's own
/// operations: the claim, then the counters (claimed together with them, so
/// a retry never counts twice), then the alert states. A failure withdraws
/// the delivery's claim so the sender's retry is taken.
pub async fn ingest_each<S: Store + ?Sized>(
    store: &S,
    batch: &[Ingest],
    now: Timestamp,
    ttl: Duration,
) -> StoreResult<Vec<bool>> {
    let mut taken = Vec::with_capacity(batch.len());
    for item in batch {
        if !store.claim_once(&item.scope, &item.key, now, ttl).await? {
            taken.push(false);
            continue;
        }
        let recorded = async {
            if !item.rollups.is_empty() {
                store
                    .add_rollups_once(INGEST_ROLLUP_SCOPE, &item.key, &item.rollups, now, ttl)
                    .await?;
            }
            for a in &item.alerts {
                upsert_doc(store, ALERT_KIND, &a.id, |existing| a.apply(existing, now)).await?;
            }
            StoreResult::Ok(())
        }
        .await;
        if let Err(e) = recorded {
            if let Err(release) = store.release_claim(&item.scope, &item.key).await {
                tracing::error!(error = %release, "could not withdraw the dedupe claim; a retry of this delivery will be dropped");
            }
            return Err(e);
        }
        taken.push(true);
    }
    Ok(taken)
}

/// Claim scope under which a delivery's counters were added (so a retry
/// after a failure between the counters and the alerts does not add them twice).
pub const INGEST_ROLLUP_SCOPE: &str = "intake_rollups";

/// Changes an existing document with compare-and-set, re-reading and
/// re-applying `change` when another writer got there first. `change`
/// returns whether to write at all (`false` leaves the document as it is).
/// Returns whether this call wrote; a missing document is left missing.
pub async fn update_doc<F>(
    store: &dyn Store,
    kind: &str,
    id: &str,
    mut change: F,
) -> StoreResult<bool>
where
    F: FnMut(&mut Doc) -> bool + Send,
{
    for _ in 0..MAX_CAS_ATTEMPTS {
        let Some(mut doc) = store.get_doc(kind, id).await? else {
            return Ok(false);
        };
        let expected = doc.version;
        if !change(&mut doc) {
            return Ok(false);
        }
        if let DocWrite::Written(_) = store.put_doc(&doc, Some(expected)).await? {
            return Ok(true);
        }
    }
    Err(StoreError::Contention(format!("{kind} {id}")))
}

/// Connects to the configured backend. Does not migrate; callers do that once.
pub async fn connect(cfg: &StoreConfig) -> StoreResult<Arc<dyn Store>> {
    connect_with(cfg, StoreTimeouts::default()).await
}

/// Connects within `timeouts.connect`; every operation of the returned store
/// is bounded by `timeouts.operation`.
pub async fn connect_with(
    cfg: &StoreConfig,
    timeouts: StoreTimeouts,
) -> StoreResult<Arc<dyn Store>> {
    let inner: Arc<dyn Store> = timed::bounded(timeouts.connect, "a connect", async {
        Ok(match cfg {
            // Cancelled on the server before `TimedStore` gives up on it
            // (six operations).
            StoreConfig::Postgres { url, schema } => Arc::new(
                PostgresStore::connect(url.expose(), schema, timeouts.connect)?
                    .with_migration_limit(timeouts.operation * 5),
            ) as Arc<dyn Store>,
            StoreConfig::Redis { url, prefix } => {
                Arc::new(RedisStore::connect(url.expose(), prefix, timeouts).await?)
            }
            StoreConfig::Sqlite { path } => Arc::new(SqliteStore::open(path).await?),
        })
    })
    .await?;
    Ok(Arc::new(timed::TimedStore::new(inner, timeouts.operation)))
}

/// How many times a compare-and-set write (audit append, document upsert) retries before giving up.
pub(crate) const MAX_CAS_ATTEMPTS: usize = 50;

fn ttl_millis(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1)
}

/// Two values of counter `name` as one: the sum, or the maximum for `max:`
/// names.
pub(crate) fn combine(name: &str, cur: f64, v: f64) -> f64 {
    if name.starts_with(MAX_PREFIX) {
        cur.max(v)
    } else {
        cur + v
    }
}

/// Folds duplicate counter names in one batch (see [`combine`]), so each
/// counter is written once per statement.
pub(crate) fn merge_values(values: &[(String, f64)]) -> Vec<(String, f64)> {
    let mut merged: std::collections::BTreeMap<&str, f64> = std::collections::BTreeMap::new();
    for (name, v) in values {
        merged
            .entry(name.as_str())
            .and_modify(|cur| *cur = combine(name, *cur, *v))
            .or_insert(*v);
    }
    merged
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}
