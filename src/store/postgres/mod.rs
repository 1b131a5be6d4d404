//! Postgres backend (primary; Neon-compatible). The guard's tables live in
//! their own schema (`rollback_guard` by default) beside the app's Prisma
//! tables. Only transaction-scoped advisory locks are used, so the pooled
//! (PgBouncer transaction mode) URL works too.

mod alert_log;
mod ingest;

use crate::integrations::postgres::{client_config, tls};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::Row;

use super::{
    merge_values, ttl_millis, Deployment, DeploymentState, Doc, DocFilter, DocWrite, Ingest,
    Migration, RollupAdd, RollupRow, Store, StoreError, StoreResult, ALERT_KIND,
};
use crate::core::audit::{AuditEntry, AuditRecord, GENESIS_HASH};
use crate::core::clock::Timestamp;

/// Schema migrations, applied in order; `{s}` is the guard's schema.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE {s}.leases (
    name       text PRIMARY KEY,
    holder     text NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE TABLE {s}.once_claims (
    scope      text NOT NULL,
    key        text NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE TABLE {s}.audit_log (
    seq       bigint PRIMARY KEY,
    at        timestamptz NOT NULL,
    actor     text NOT NULL,
    action    text NOT NULL,
    subject   text NOT NULL,
    detail    text NOT NULL,
    prev_hash text NOT NULL,
    hash      text NOT NULL
);
CREATE TABLE {s}.deployments (
    id          text PRIMARY KEY,
    environment text NOT NULL,
    url         text NOT NULL,
    state       text NOT NULL,
    git_sha     text,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    meta        jsonb NOT NULL
);
CREATE INDEX deployments_env_created ON {s}.deployments (environment, created_at DESC, id DESC);
CREATE TABLE {s}.last_known_good (
    environment   text PRIMARY KEY,
    deployment_id text NOT NULL REFERENCES {s}.deployments (id)
);
"#,
    r#"
CREATE TABLE {s}.docs (
    kind       text NOT NULL,
    id         text NOT NULL,
    version    bigint NOT NULL,
    scope      text NOT NULL,
    status     text NOT NULL,
    updated_at timestamptz NOT NULL,
    body       jsonb NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX docs_listing ON {s}.docs (kind, scope, status, updated_at DESC, id DESC);
CREATE TABLE {s}.rollups (
    environment text NOT NULL,
    deployment  text NOT NULL,
    minute      bigint NOT NULL,
    name        text NOT NULL,
    value       float8 NOT NULL,
    PRIMARY KEY (environment, deployment, minute, name)
);
"#,
    "CREATE INDEX audit_log_subject ON {s}.audit_log (subject, seq DESC);",
    // Alert states leave the listing index: intake writes one per delivery
    // and its entry was a third of Postgres's work per alert (`cargo bench
    // --bench guard`), while they are listed once a minute and are few
    // (one per alert identity). `list_docs` names the predicate so that the
    // other kinds keep the index.
    r#"
DROP INDEX {s}.docs_listing;
CREATE INDEX docs_listing ON {s}.docs (kind, scope, status, updated_at DESC, id DESC)
    WHERE kind <> 'alert';
"#,
    // Intake appends alert writes here; they are folded into `docs` before
    // alert states are read (see `alert_log`). Read whole, oldest first: no
    // index to keep up per write.
    r#"
CREATE TABLE {s}.alert_log (
    seq        bigint GENERATED ALWAYS AS IDENTITY,
    id         text NOT NULL,
    scope      text NOT NULL,
    status     text NOT NULL,
    inherit    boolean NOT NULL,
    first_seen bigint NOT NULL,
    last_seen  bigint NOT NULL,
    updated_at timestamptz NOT NULL,
    body       json NOT NULL
);
"#,
    // Intake's two per-delivery costs in Postgres, measured with pgbench
    // (32 clients, batches of 12 new claims into 100,000): claims compared
    // bytewise instead of by the database's collation (which copies both
    // strings for `strcoll` at every step of an index descent) took
    // 10-25% more batches a second; nothing reads claims in order. Logged
    // bodies are JSON the guard wrote itself, parsed when folded: stored
    // as text, a batch no longer validates each one as `json` on arrival.
    r#"
ALTER TABLE {s}.once_claims
    ALTER COLUMN scope TYPE text COLLATE "C",
    ALTER COLUMN key TYPE text COLLATE "C";
ALTER TABLE {s}.alert_log ALTER COLUMN body TYPE text;
"#,
];

/// Parameter `$n` (milliseconds) as a timestamptz inside SQL.
fn ts(n: usize) -> String {
    format!("to_timestamp(${n}::float8 / 1000)")
}
/// timestamptz → milliseconds inside SQL.
fn ms(col: &str) -> String {
    format!("(extract(epoch from {col}) * 1000)::int8")
}

/// `text` with `{s}` replaced by `schema`, quoted as SQL names it.
fn in_schema(text: &str, schema: &str) -> String {
    text.replace("{s}", &format!("\"{schema}\""))
}

/// Postgres-backed [`Store`].
pub struct PostgresStore {
    pool: Pool,
    schema: String,
    /// `host:port` for error messages.
    server: String,
    /// Intake's statements, written out once for this schema.
    ingest_sql: ingest::Statements,
    /// The alert log's fold statements, likewise.
    alert_log_sql: alert_log::Statements,
    /// How long a migration may take before it is cancelled on the server
    /// (see [`Store::migrate`]).
    migration_limit: Duration,
}

/// A migration's bound unless set ([`PostgresStore::with_migration_limit`];
/// the configured store sets five operations): under [`TimedStore`]'s own
/// for a migration with the default timeouts (six operations, 30 s), so the
/// server's statement is cancelled before the guard gives up on it.
///
/// [`TimedStore`]: super::timed::TimedStore
pub const MIGRATION_LIMIT: Duration = Duration::from_secs(25);

/// Connections per instance.
const POOL_SIZE: usize = 8;

/// How long a pooled connection may sit unused before it is checked before
/// use (see [`verify_if_idle`]).
const VERIFY_AFTER_IDLE: Duration = Duration::from_secs(5);

/// Checks a pooled connection that sat unused for [`VERIFY_AFTER_IDLE`] or
/// more (an empty query, one round trip) before it is handed out; one the
/// server ended is dropped and the pool takes or opens another. Neon ends
/// idle connections (its compute suspends, its pooler restarts), and a
/// Vercel instance is frozen between requests, so the pool's own check (has
/// the connection task ended?) cannot see the end before the next checkout.
/// Connections in steady use (intake under load) are never checked.
fn verify_if_idle<'a>(
    client: &'a mut deadpool_postgres::ClientWrapper,
    metrics: &'a deadpool_postgres::Metrics,
) -> std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<(), deadpool_postgres::HookError>> + Send + 'a>,
> {
    Box::pin(async move {
        if metrics.last_used() < VERIFY_AFTER_IDLE {
            return Ok(());
        }
        client.simple_query("").await.map(|_| ()).map_err(|e| {
            tracing::debug!(error = %e, "an idle pooled Postgres connection had ended; replacing it");
            deadpool_postgres::HookError::Backend(e)
        })
    })
}

impl PostgresStore {
    /// Builds a lazy pool; no connection is made until the first call.
    pub fn connect(url: &str, schema: &str, connect_timeout: Duration) -> StoreResult<Self> {
        let mut cfg = client_config(url).map_err(StoreError::Unavailable)?;
        cfg.connect_timeout(connect_timeout);
        let server = cfg
            .get_hosts()
            .iter()
            .zip(cfg.get_ports().iter().chain(std::iter::repeat(&5432)))
            .map(|(h, port)| match h {
                tokio_postgres::config::Host::Tcp(name) => format!("{name}:{port}"),
                #[cfg(unix)]
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            })
            .collect::<Vec<_>>()
            .join(", ");
        let mgr = Manager::from_config(
            cfg,
            tls(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(POOL_SIZE)
            .pre_recycle(deadpool_postgres::Hook::async_fn(verify_if_idle))
            .wait_timeout(Some(connect_timeout))
            // Bounds the whole handshake, not only the TCP connect.
            .create_timeout(Some(connect_timeout))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(Self {
            ingest_sql: ingest::Statements::for_schema(schema),
            alert_log_sql: alert_log::Statements::for_schema(schema),
            pool,
            schema: schema.to_string(),
            server,
            migration_limit: MIGRATION_LIMIT,
        })
    }

    /// The same store, its migrations cancelled after `limit`.
    pub fn with_migration_limit(mut self, limit: Duration) -> Self {
        self.migration_limit = limit;
        self
    }
}

impl PostgresStore {
    /// [`Store::migrate`]'s work, on `c`.
    async fn migrate_on(&self, c: &mut Conn) -> StoreResult<Migration> {
        let tx = c.transaction().await.map_err(pg_err)?;
        // Serialises concurrent cold starts; released at commit.
        let lock_key = format!("rollback_guard.migrate.{}", self.schema);
        tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&lock_key])
            .await
            .map_err(pg_err)?;
        tx.batch_execute(&self.sql(
            "CREATE SCHEMA IF NOT EXISTS {s};
             CREATE TABLE IF NOT EXISTS {s}.schema_migrations (
                 version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
        ))
        .await
        .map_err(pg_err)?;
        let row = tx
            .query_one(
                &self.sql("SELECT coalesce(max(version), 0) FROM {s}.schema_migrations"),
                &[],
            )
            .await
            .map_err(pg_err)?;
        let current: i32 = row.get(0);
        for (i, m) in MIGRATIONS.iter().enumerate() {
            let version = i32::try_from(i + 1).expect("few migrations");
            if version <= current {
                continue;
            }
            tx.batch_execute(&self.sql(m)).await.map_err(pg_err)?;
            tx.execute(
                &self.sql("INSERT INTO {s}.schema_migrations (version) VALUES ($1)"),
                &[&version],
            )
            .await
            .map_err(pg_err)?;
        }
        tx.commit().await.map_err(pg_err)?;
        Ok(Migration {
            from: u32::try_from(current).unwrap_or(0),
            to: u32::try_from(MIGRATIONS.len()).expect("few migrations"),
        })
    }

    /// Drops the guard's schema and everything in it (tests, uninstall).
    pub async fn drop_schema(&self) -> StoreResult<()> {
        let c = self.client().await?;
        c.batch_execute(&self.sql("DROP SCHEMA IF EXISTS {s} CASCADE"))
            .await
            .map_err(pg_err)
    }

    /// Takes a once-claim ($1 scope, $2 key, $3 expires ms, $4 now ms):
    /// returns a row only if the claim was free or expired.
    fn claim_sql(&self) -> String {
        self.sql(&format!(
            "INSERT INTO {{s}}.once_claims AS c (scope, key, expires_at) VALUES ($1, $2, {})
             ON CONFLICT (scope, key) DO UPDATE SET expires_at = EXCLUDED.expires_at
             WHERE c.expires_at <= {}
             RETURNING 1",
            ts(3),
            ts(4)
        ))
    }

    /// Folds the alert log first if `kind` is alert states (see `alert_log`).
    async fn fold_before(&self, kind: &str) -> StoreResult<()> {
        if kind == ALERT_KIND {
            self.fold_alert_log().await?;
        }
        Ok(())
    }

    fn sql(&self, text: &str) -> String {
        in_schema(text, &self.schema)
    }

    /// A pooled connection. (The pool's recycling drops one whose
    /// connection task has ended, and checks one that sat idle, see
    /// [`verify_if_idle`]; intake also drops the connection of a failed
    /// batch, see `ingest`.)
    async fn client(&self) -> StoreResult<Conn> {
        self.pool.get().await.map(Conn).map_err(|e| {
            // Host and port (never the password), and the reason.
            StoreError::Unavailable(format!(
                "cannot connect to Postgres at {}: {}",
                self.server,
                crate::core::cause::chain(&e)
            ))
        })
    }
}

type Params<'a> = &'a [&'a (dyn tokio_postgres::types::ToSql + Sync)];

/// A pooled connection whose queries go through the per-connection statement
/// cache: one round trip per query instead of prepare + execute.
struct Conn(deadpool_postgres::Object);

impl std::ops::Deref for Conn {
    type Target = deadpool_postgres::Object;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Conn {
    async fn query(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let st = self.0.prepare_cached(sql).await?;
        self.0.query(&st, params).await
    }

    async fn query_opt(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Option<Row>, tokio_postgres::Error> {
        let st = self.0.prepare_cached(sql).await?;
        self.0.query_opt(&st, params).await
    }

    async fn execute(&self, sql: &str, params: Params<'_>) -> Result<u64, tokio_postgres::Error> {
        let st = self.0.prepare_cached(sql).await?;
        self.0.execute(&st, params).await
    }
}

/// How an added counter meets a stored one (table alias `r`): the sum, or
/// the maximum for `max:` names (as `store::combine`).
const ADD_TO_ROLLUP: &str =
    "ON CONFLICT (environment, deployment, minute, name) DO UPDATE SET value =
       CASE WHEN starts_with(EXCLUDED.name, 'max:') THEN greatest(r.value, EXCLUDED.value)
            ELSE r.value + EXCLUDED.value END";

/// Adds one minute's counters (see [`ADD_TO_ROLLUP`]).
fn add_rollup_sql() -> String {
    format!(
        "INSERT INTO {{s}}.rollups AS r (environment, deployment, minute, name, value)
         SELECT $1, $2, $3, n, v FROM unnest($4::text[], $5::float8[]) AS t(n, v)
         {ADD_TO_ROLLUP}"
    )
}

fn pg_err(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => StoreError::Query(format!("{}: {}", db.code().code(), db.message())),
        None if e.is_closed() => StoreError::Unavailable("connection closed".into()),
        None => StoreError::Unavailable(crate::core::cause::chain(&e)),
    }
}

fn deployment_from_row(r: &Row) -> StoreResult<Deployment> {
    let state: String = r.get("state");
    Ok(Deployment {
        id: r.get("id"),
        environment: r.get("environment"),
        url: r.get("url"),
        state: DeploymentState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("deployment state {state:?}")))?,
        git_sha: r.get("git_sha"),
        created_at: Timestamp::from_millis(r.get("created_ms")),
        updated_at: Timestamp::from_millis(r.get("updated_ms")),
        meta: r.get("meta"),
    })
}

fn doc_from_row(kind: &str, r: &Row) -> Doc {
    Doc {
        kind: kind.to_string(),
        id: r.get("id"),
        version: r.get("version"),
        scope: r.get("scope"),
        status: r.get("status"),
        updated_at: Timestamp::from_millis(r.get("updated_ms")),
        body: r.get("body"),
    }
}

fn audit_from_row(r: &Row) -> StoreResult<AuditRecord> {
    let detail: String = r.get("detail");
    Ok(AuditRecord {
        seq: r.get("seq"),
        entry: AuditEntry {
            at: Timestamp::from_millis(r.get("at_ms")),
            actor: r.get("actor"),
            action: r.get("action"),
            subject: r.get("subject"),
            detail: serde_json::from_str(&detail)
                .map_err(|e| StoreError::Corrupt(format!("audit detail: {e}")))?,
        },
        prev_hash: r.get("prev_hash"),
        hash: r.get("hash"),
    })
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> StoreResult<()> {
        self.client()
            .await?
            .simple_query("SELECT 1")
            .await
            .map_err(pg_err)
            .map(|_| ())
    }

    /// Applies the migrations not applied yet, in one transaction. One
    /// that outlives [`Self::with_migration_limit`] is cancelled on the
    /// server: dropped by the guard alone, its statement would go on (a
    /// schema change waiting for, then holding, a lock that every query of
    /// its table waits behind) until it ended, then roll back.
    async fn migrate(&self) -> StoreResult<Migration> {
        let mut c = self.client().await?;
        let cancel = c.cancel_token();
        match tokio::time::timeout(self.migration_limit, self.migrate_on(&mut c)).await {
            Ok(done) => done,
            Err(_) => {
                let cancelled = cancel.cancel_query(tls()).await;
                // Its transaction aborted: the connection leaves the pool.
                let _ = deadpool_postgres::Object::take(c.0);
                Err(StoreError::Unavailable(format!(
                    "the migration did not finish within {} ms and was {}",
                    self.migration_limit.as_millis(),
                    match cancelled {
                        Ok(()) => "cancelled".to_string(),
                        Err(e) => format!("not cancelled: {}", crate::core::cause::chain(&e)),
                    }
                )))
            }
        }
    }

    async fn try_acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> StoreResult<bool> {
        let sql = self.sql(&format!(
            "INSERT INTO {{s}}.leases AS l (name, holder, expires_at) VALUES ($1, $2, {})
             ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
             WHERE l.expires_at <= {} OR l.holder = EXCLUDED.holder
             RETURNING 1",
            ts(3),
            ts(4)
        ));
        let expires = now.plus(ttl).as_millis() as f64;
        let now = now.as_millis() as f64;
        let rows = self
            .client()
            .await?
            .query(&sql, &[&name, &holder, &expires, &now])
            .await
            .map_err(pg_err)?;
        Ok(rows.len() == 1)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> StoreResult<bool> {
        let sql = self.sql("DELETE FROM {s}.leases WHERE name = $1 AND holder = $2");
        let n = self
            .client()
            .await?
            .execute(&sql, &[&name, &holder])
            .await
            .map_err(pg_err)?;
        Ok(n == 1)
    }

    async fn claim_once(
        &self,
        scope: &str,
        key: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> StoreResult<bool> {
        let sql = self.claim_sql();
        let expires = now.as_millis().saturating_add(ttl_millis(ttl)) as f64;
        let now = now.as_millis() as f64;
        let rows = self
            .client()
            .await?
            .query(&sql, &[&scope, &key, &expires, &now])
            .await
            .map_err(pg_err)?;
        Ok(rows.len() == 1)
    }

    async fn release_claim(&self, scope: &str, key: &str) -> StoreResult<()> {
        let sql = self.sql("DELETE FROM {s}.once_claims WHERE scope = $1 AND key = $2");
        self.client()
            .await?
            .execute(&sql, &[&scope, &key])
            .await
            .map_err(pg_err)?;
        Ok(())
    }

    async fn put_doc(&self, doc: &Doc, expected: Option<i64>) -> StoreResult<DocWrite> {
        self.fold_before(&doc.kind).await?;
        let updated = doc.updated_at.as_millis() as f64;
        let c = self.client().await?;
        let row = match expected {
            None => {
                let sql = self.sql(&format!(
                    "INSERT INTO {{s}}.docs (kind, id, version, scope, status, updated_at, body)
                     VALUES ($1, $2, 1, $3, $4, {}, $6) ON CONFLICT (kind, id) DO NOTHING RETURNING version",
                    ts(5)
                ));
                c.query_opt(&sql, &[&doc.kind, &doc.id, &doc.scope, &doc.status, &updated, &doc.body]).await
            }
            Some(v) => {
                let sql = self.sql(&format!(
                    "UPDATE {{s}}.docs SET version = version + 1, scope = $3, status = $4, updated_at = {}, body = $6
                     WHERE kind = $1 AND id = $2 AND version = $7 RETURNING version",
                    ts(5)
                ));
                c.query_opt(&sql, &[&doc.kind, &doc.id, &doc.scope, &doc.status, &updated, &doc.body, &v]).await
            }
        }
        .map_err(pg_err)?;
        Ok(row.map_or(DocWrite::Conflict, |r| DocWrite::Written(r.get(0))))
    }

    async fn get_doc(&self, kind: &str, id: &str) -> StoreResult<Option<Doc>> {
        self.fold_before(kind).await?;
        let sql = self.sql(&format!(
            "SELECT id, version, scope, status, {} AS updated_ms, body FROM {{s}}.docs WHERE kind = $1 AND id = $2",
            ms("updated_at")
        ));
        let row = self
            .client()
            .await?
            .query_opt(&sql, &[&kind, &id])
            .await
            .map_err(pg_err)?;
        Ok(row.map(|r| doc_from_row(kind, &r)))
    }

    async fn list_docs(
        &self,
        kind: &str,
        filter: &DocFilter,
        limit: usize,
    ) -> StoreResult<Vec<Doc>> {
        self.fold_before(kind).await?;
        // Alert states are not in the listing index (see MIGRATIONS); the
        // other kinds say so, or the planner could not use it.
        let indexed = if kind == ALERT_KIND {
            String::new()
        } else {
            format!("AND kind <> '{ALERT_KIND}'")
        };
        let sql = self.sql(&format!(
            "SELECT id, version, scope, status, {} AS updated_ms, body FROM {{s}}.docs
             WHERE kind = $1 {indexed} AND ($2::text IS NULL OR scope = $2) AND ($3::text IS NULL OR status = $3)
             ORDER BY updated_at DESC, id DESC LIMIT $4",
            ms("updated_at")
        ));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .client()
            .await?
            .query(&sql, &[&kind, &filter.scope, &filter.status, &limit])
            .await
            .map_err(pg_err)?;
        Ok(rows.iter().map(|r| doc_from_row(kind, r)).collect())
    }

    async fn add_rollup(
        &self,
        environment: &str,
        deployment: &str,
        minute: i64,
        values: &[(String, f64)],
    ) -> StoreResult<()> {
        let merged = merge_values(values);
        if merged.is_empty() {
            return Ok(());
        }
        let (names, vals): (Vec<String>, Vec<f64>) = merged.into_iter().unzip();
        let sql = self.sql(&add_rollup_sql());
        self.client()
            .await?
            .execute(&sql, &[&environment, &deployment, &minute, &names, &vals])
            .await
            .map_err(pg_err)?;
        Ok(())
    }

    fn batches_ingest(&self) -> bool {
        true
    }

    async fn prune_claims(&self, now: Timestamp, limit: usize) -> StoreResult<u64> {
        // Claims an intake batch holds (re-taking an expired one) are
        // skipped, not waited for: the batch locks its claims in key order,
        // and a prune waiting on one while holding another could deadlock
        // with it. A skipped claim is pruned by a later run, or renewed.
        // The cron that prunes also folds the alert log, so the log stays
        // short where nothing reads alert states.
        self.fold_alert_log().await?;
        let sql = self.sql(&format!(
            "DELETE FROM {{s}}.once_claims WHERE ctid IN (
               SELECT ctid FROM {{s}}.once_claims WHERE expires_at <= {} LIMIT $2
               FOR UPDATE SKIP LOCKED)",
            ts(1)
        ));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.client()
            .await?
            .execute(&sql, &[&(now.as_millis() as f64), &limit])
            .await
            .map_err(pg_err)
    }

    async fn ingest(
        &self,
        batch: &[Ingest],
        now: Timestamp,
        ttl: Duration,
    ) -> StoreResult<Vec<bool>> {
        self.ingest_batch(batch, now, ttl).await
    }

    async fn add_rollups_once(
        &self,
        scope: &str,
        key: &str,
        adds: &[RollupAdd],
        now: Timestamp,
        ttl: Duration,
    ) -> StoreResult<bool> {
        // One transaction (Postgres) or one script (Redis), via ingest.
        super::add_rollups_once_by_ingest(self, scope, key, adds, now, ttl).await
    }

    async fn rollups(
        &self,
        environment: &str,
        deployment: &str,
        from: i64,
        to: i64,
    ) -> StoreResult<Vec<RollupRow>> {
        let sql = self.sql(
            "SELECT minute, name, value FROM {s}.rollups
             WHERE environment = $1 AND deployment = $2 AND minute >= $3 AND minute < $4 ORDER BY minute, name",
        );
        let rows = self
            .client()
            .await?
            .query(&sql, &[&environment, &deployment, &from, &to])
            .await
            .map_err(pg_err)?;
        Ok(rows
            .iter()
            .map(|r| RollupRow {
                minute: r.get(0),
                name: r.get(1),
                value: r.get(2),
            })
            .collect())
    }

    async fn append_audit(&self, entry: AuditEntry) -> StoreResult<AuditRecord> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let lock_key = format!("rollback_guard.audit.{}", self.schema);
        tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&lock_key])
            .await
            .map_err(pg_err)?;
        let head_sql = self.sql("SELECT seq, hash FROM {s}.audit_log ORDER BY seq DESC LIMIT 1");
        let head_st = tx.prepare_cached(&head_sql).await.map_err(pg_err)?;
        let head = tx.query_opt(&head_st, &[]).await.map_err(pg_err)?;
        let (seq, hash) = head.map_or((0, GENESIS_HASH.to_string()), |r| (r.get(0), r.get(1)));
        let rec = AuditRecord::chain(seq, &hash, entry);
        let sql = self.sql(&format!(
            "INSERT INTO {{s}}.audit_log (seq, at, actor, action, subject, detail, prev_hash, hash)
             VALUES ($1, {}, $2, $3, $4, $5, $6, $7)",
            ts(8)
        ));
        let at = rec.entry.at.as_millis() as f64;
        let detail = rec.entry.detail.to_string();
        let insert = tx.prepare_cached(&sql).await.map_err(pg_err)?;
        tx.execute(
            &insert,
            &[
                &rec.seq,
                &rec.entry.actor,
                &rec.entry.action,
                &rec.entry.subject,
                &detail,
                &rec.prev_hash,
                &rec.hash,
                &at,
            ],
        )
        .await
        .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(rec)
    }

    async fn audit_tail(&self, n: usize) -> StoreResult<Vec<AuditRecord>> {
        let sql = self.sql(&format!(
            "SELECT * FROM (SELECT seq, {} AS at_ms, actor, action, subject, detail, prev_hash, hash
             FROM {{s}}.audit_log ORDER BY seq DESC LIMIT $1) t ORDER BY seq",
            ms("at")
        ));
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        let rows = self
            .client()
            .await?
            .query(&sql, &[&n])
            .await
            .map_err(pg_err)?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn audit_of(&self, subjects: &[String], limit: usize) -> StoreResult<Vec<AuditRecord>> {
        let sql = self.sql(&format!(
            "SELECT * FROM (SELECT seq, {} AS at_ms, actor, action, subject, detail, prev_hash, hash
             FROM {{s}}.audit_log WHERE subject = ANY($1) ORDER BY seq DESC LIMIT $2) t ORDER BY seq",
            ms("at")
        ));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .client()
            .await?
            .query(&sql, &[&subjects, &limit])
            .await
            .map_err(pg_err)?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn audit_after(&self, after: i64, limit: usize) -> StoreResult<Vec<AuditRecord>> {
        let sql = self.sql(&format!(
            "SELECT seq, {} AS at_ms, actor, action, subject, detail, prev_hash, hash
             FROM {{s}}.audit_log WHERE seq > $1 ORDER BY seq LIMIT $2",
            ms("at")
        ));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .client()
            .await?
            .query(&sql, &[&after, &limit])
            .await
            .map_err(pg_err)?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn upsert_deployment(&self, d: &Deployment) -> StoreResult<()> {
        let sql = self.sql(&format!(
            "INSERT INTO {{s}}.deployments (id, environment, url, state, git_sha, created_at, updated_at, meta)
             VALUES ($1, $2, $3, $4, $5, {}, {}, $6)
             ON CONFLICT (id) DO UPDATE SET environment = EXCLUDED.environment, url = EXCLUDED.url,
               state = EXCLUDED.state, git_sha = EXCLUDED.git_sha, created_at = EXCLUDED.created_at,
               updated_at = EXCLUDED.updated_at, meta = EXCLUDED.meta",
            ts(7),
            ts(8)
        ));
        let (created, updated) = (
            d.created_at.as_millis() as f64,
            d.updated_at.as_millis() as f64,
        );
        self.client()
            .await?
            .execute(
                &sql,
                &[
                    &d.id,
                    &d.environment,
                    &d.url,
                    &d.state.as_str(),
                    &d.git_sha,
                    &d.meta,
                    &created,
                    &updated,
                ],
            )
            .await
            .map_err(pg_err)?;
        Ok(())
    }

    async fn deployment(&self, id: &str) -> StoreResult<Option<Deployment>> {
        let sql = self.sql(&format!("{} WHERE id = $1", select_deployments()));
        let row = self
            .client()
            .await?
            .query_opt(&sql, &[&id])
            .await
            .map_err(pg_err)?;
        row.as_ref().map(deployment_from_row).transpose()
    }

    async fn recent_deployments(
        &self,
        environment: &str,
        limit: usize,
    ) -> StoreResult<Vec<Deployment>> {
        let sql = self.sql(&format!(
            "{} WHERE environment = $1 ORDER BY created_at DESC, id DESC LIMIT $2",
            select_deployments()
        ));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .client()
            .await?
            .query(&sql, &[&environment, &limit])
            .await
            .map_err(pg_err)?;
        rows.iter().map(deployment_from_row).collect()
    }

    async fn set_last_known_good(&self, environment: &str, deployment_id: &str) -> StoreResult<()> {
        let sql = self.sql(
            "INSERT INTO {s}.last_known_good (environment, deployment_id)
             SELECT $1, id FROM {s}.deployments WHERE id = $2
             ON CONFLICT (environment) DO UPDATE SET deployment_id = EXCLUDED.deployment_id",
        );
        let n = self
            .client()
            .await?
            .execute(&sql, &[&environment, &deployment_id])
            .await
            .map_err(pg_err)?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("deployment {deployment_id}")));
        }
        Ok(())
    }

    async fn last_known_good(&self, environment: &str) -> StoreResult<Option<Deployment>> {
        let sql = self.sql(&format!(
            "{} WHERE id = (SELECT deployment_id FROM {{s}}.last_known_good WHERE environment = $1)",
            select_deployments()
        ));
        let row = self
            .client()
            .await?
            .query_opt(&sql, &[&environment])
            .await
            .map_err(pg_err)?;
        row.as_ref().map(deployment_from_row).transpose()
    }
}

fn select_deployments() -> String {
    format!(
        "SELECT id, environment, url, state, git_sha, {} AS created_ms, {} AS updated_ms, meta FROM {{s}}.deployments",
        ms("created_at"),
        ms("updated_at")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listing_index_leaves_out_the_alert_kind_by_its_name() {
        let predicate = format!("WHERE kind <> '{ALERT_KIND}'");
        assert!(MIGRATIONS.iter().any(|m| m.contains(&predicate)));
    }
}
