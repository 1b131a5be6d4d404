//! Embedded SQLite backend: the default when no external store is configured,
//! so `cargo run` works on a fresh machine. WAL mode and a busy timeout let
//! the dev server and several function binaries share one file.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{
    merge_values, ttl_millis, Deployment, DeploymentState, Doc, DocFilter, DocWrite, Migration,
    RollupAdd, RollupRow, Store, StoreError, StoreResult,
};
use crate::core::audit::{AuditEntry, AuditRecord, GENESIS_HASH};
use crate::core::clock::Timestamp;

/// Schema migrations; the applied count is kept in `PRAGMA user_version`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at INTEGER NOT NULL);
CREATE TABLE once_claims (scope TEXT NOT NULL, key TEXT NOT NULL, expires_at INTEGER NOT NULL, PRIMARY KEY (scope, key));
CREATE TABLE audit_log (
    seq INTEGER PRIMARY KEY, at INTEGER NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
    subject TEXT NOT NULL, detail TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL
);
CREATE TABLE deployments (
    id TEXT PRIMARY KEY, environment TEXT NOT NULL, url TEXT NOT NULL, state TEXT NOT NULL,
    git_sha TEXT, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, meta TEXT NOT NULL
);
CREATE INDEX deployments_env_created ON deployments (environment, created_at DESC, id DESC);
CREATE TABLE last_known_good (environment TEXT PRIMARY KEY, deployment_id TEXT NOT NULL REFERENCES deployments (id));
"#,
    r#"
CREATE TABLE docs (
    kind TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL, scope TEXT NOT NULL,
    status TEXT NOT NULL, updated_at INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY (kind, id)
);
CREATE INDEX docs_listing ON docs (kind, scope, status, updated_at DESC, id DESC);
CREATE TABLE rollups (
    environment TEXT NOT NULL, deployment TEXT NOT NULL, minute INTEGER NOT NULL, name TEXT NOT NULL,
    value REAL NOT NULL, PRIMARY KEY (environment, deployment, minute, name)
);
"#,
    "CREATE INDEX audit_log_subject ON audit_log (subject, seq DESC);",
];

/// SQLite-backed [`Store`].
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

/// Takes a once-claim unless an unexpired one exists; whether it did.
fn claim_in(c: &Connection, scope: &str, key: &str, expires: i64, now: i64) -> StoreResult<bool> {
    let n = c
        .execute(
            "INSERT INTO once_claims (scope, key, expires_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (scope, key) DO UPDATE SET expires_at = excluded.expires_at
             WHERE once_claims.expires_at <= ?4",
            params![scope, key, expires, now],
        )
        .map_err(sql_err)?;
    Ok(n == 1)
}

/// Adds one minute's counters inside the caller's transaction.
fn add_in(tx: &rusqlite::Transaction<'_>, a: &RollupAdd) -> StoreResult<()> {
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO rollups (environment, deployment, minute, name, value) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (environment, deployment, minute, name) DO UPDATE SET value =
               CASE WHEN substr(excluded.name, 1, 4) = 'max:' THEN max(rollups.value, excluded.value)
                    ELSE rollups.value + excluded.value END",
        )
        .map_err(sql_err)?;
    for (name, v) in merge_values(&a.values) {
        stmt.execute(params![a.environment, a.deployment, a.minute, name, v])
            .map_err(sql_err)?;
    }
    Ok(())
}

/// Runs an audit query whose columns are seq, at, actor, action, subject,
/// detail, prev_hash, hash.
fn audit_query(
    c: &Connection,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
) -> StoreResult<Vec<AuditRecord>> {
    let mut stmt = c.prepare_cached(sql).map_err(sql_err)?;
    let rows = stmt
        .query_map(params, |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, String>(7)?,
            ))
        })
        .map_err(sql_err)?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, at, actor, action, subject, detail, prev_hash, hash) = row.map_err(sql_err)?;
        out.push(AuditRecord {
            seq,
            entry: AuditEntry {
                at: Timestamp::from_millis(at),
                actor,
                action,
                subject,
                detail: serde_json::from_str(&detail)
                    .map_err(|e| StoreError::Corrupt(format!("audit detail: {e}")))?,
            },
            prev_hash,
            hash,
        });
    }
    Ok(out)
}

fn sql_err(e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
        {
            StoreError::Unavailable(e.to_string())
        }
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::CannotOpen => {
            StoreError::Unavailable(e.to_string())
        }
        other => StoreError::Query(other.to_string()),
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and its parent folder.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        let path = path.to_path_buf();
        let conn = tokio::task::spawn_blocking(move || -> StoreResult<Connection> {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
                })?;
            }
            let conn = Connection::open(&path).map_err(sql_err)?;
            conn.busy_timeout(Duration::from_secs(5)).map_err(sql_err)?;
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(sql_err)?;
            conn.pragma_update(None, "foreign_keys", "ON")
                .map_err(sql_err)?;
            conn.pragma_update(None, "synchronous", "NORMAL")
                .map_err(sql_err)?;
            Ok(conn)
        })
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))??;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` on the connection off the async runtime.
    async fn with<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?
    }
}

fn deployment_from_row(r: &Row) -> rusqlite::Result<(Deployment, String, String)> {
    let state: String = r.get("state")?;
    let meta: String = r.get("meta")?;
    Ok((
        Deployment {
            id: r.get("id")?,
            environment: r.get("environment")?,
            url: r.get("url")?,
            state: DeploymentState::Building,
            git_sha: r.get("git_sha")?,
            created_at: Timestamp::from_millis(r.get("created_at")?),
            updated_at: Timestamp::from_millis(r.get("updated_at")?),
            meta: serde_json::Value::Null,
        },
        state,
        meta,
    ))
}

/// Finishes decoding the columns rusqlite cannot type-check for us.
fn finish_deployment(
    (mut d, state, meta): (Deployment, String, String),
) -> StoreResult<Deployment> {
    d.state = DeploymentState::parse(&state)
        .ok_or_else(|| StoreError::Corrupt(format!("deployment state {state:?}")))?;
    d.meta = serde_json::from_str(&meta)
        .map_err(|e| StoreError::Corrupt(format!("deployment meta: {e}")))?;
    Ok(d)
}

fn doc_from_row(kind: &str, r: &Row) -> rusqlite::Result<(Doc, String)> {
    Ok((
        Doc {
            kind: kind.to_string(),
            id: r.get("id")?,
            version: r.get("version")?,
            scope: r.get("scope")?,
            status: r.get("status")?,
            updated_at: Timestamp::from_millis(r.get("updated_at")?),
            body: serde_json::Value::Null,
        },
        r.get("body")?,
    ))
}

fn finish_doc((mut d, body): (Doc, String)) -> StoreResult<Doc> {
    d.body = serde_json::from_str(&body)
        .map_err(|e| StoreError::Corrupt(format!("document body: {e}")))?;
    Ok(d)
}

const SELECT_DEPLOYMENTS: &str =
    "SELECT id, environment, url, state, git_sha, created_at, updated_at, meta FROM deployments";

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> StoreResult<()> {
        self.with(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(sql_err))
            .await
    }

    async fn migrate(&self) -> StoreResult<Migration> {
        self.with(|c| {
            let tx = c
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(sql_err)?;
            let current: u32 = tx
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .map_err(sql_err)?;
            for (i, m) in MIGRATIONS.iter().enumerate().skip(current as usize) {
                tx.execute_batch(m).map_err(sql_err)?;
                tx.pragma_update(None, "user_version", i + 1)
                    .map_err(sql_err)?;
            }
            tx.commit().map_err(sql_err)?;
            Ok(Migration {
                from: current,
                to: MIGRATIONS.len() as u32,
            })
        })
        .await
    }

    async fn try_acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> StoreResult<bool> {
        let (name, holder) = (name.to_string(), holder.to_string());
        let expires = now.as_millis().saturating_add(ttl_millis(ttl));
        self.with(move |c| {
            let n = c
                .execute(
                    "INSERT INTO leases (name, holder, expires_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
                     WHERE leases.expires_at <= ?4 OR leases.holder = excluded.holder",
                    params![name, holder, expires, now.as_millis()],
                )
                .map_err(sql_err)?;
            Ok(n == 1)
        })
        .await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> StoreResult<bool> {
        let (name, holder) = (name.to_string(), holder.to_string());
        self.with(move |c| {
            let n = c
                .execute(
                    "DELETE FROM leases WHERE name = ?1 AND holder = ?2",
                    params![name, holder],
                )
                .map_err(sql_err)?;
            Ok(n == 1)
        })
        .await
    }

    async fn claim_once(
        &self,
        scope: &str,
        key: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> StoreResult<bool> {
        let (scope, key) = (scope.to_string(), key.to_string());
        let expires = now.as_millis().saturating_add(ttl_millis(ttl));
        self.with(move |c| claim_in(c, &scope, &key, expires, now.as_millis()))
            .await
    }

    async fn release_claim(&self, scope: &str, key: &str) -> StoreResult<()> {
        let (scope, key) = (scope.to_string(), key.to_string());
        self.with(move |c| {
            c.execute(
                "DELETE FROM once_claims WHERE scope = ?1 AND key = ?2",
                params![scope, key],
            )
            .map_err(sql_err)?;
            Ok(())
        })
        .await
    }

    async fn prune_claims(&self, now: Timestamp, limit: usize) -> StoreResult<u64> {
        let (now, limit) = (now.as_millis(), i64::try_from(limit).unwrap_or(i64::MAX));
        self.with(move |c| {
            c.execute(
                "DELETE FROM once_claims WHERE rowid IN (
                   SELECT rowid FROM once_claims WHERE expires_at <= ?1 LIMIT ?2)",
                params![now, limit],
            )
            .map(|n| n as u64)
            .map_err(sql_err)
        })
        .await
    }

    async fn put_doc(&self, doc: &Doc, expected: Option<i64>) -> StoreResult<DocWrite> {
        let d = doc.clone();
        self.with(move |c| {
            let body = d.body.to_string();
            let updated = d.updated_at.as_millis();
            let version: Option<i64> = match expected {
                None => c
                    .query_row(
                        "INSERT INTO docs (kind, id, version, scope, status, updated_at, body) VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6)
                         ON CONFLICT (kind, id) DO NOTHING RETURNING version",
                        params![d.kind, d.id, d.scope, d.status, updated, body],
                        |r| r.get(0),
                    )
                    .optional(),
                Some(v) => c
                    .query_row(
                        "UPDATE docs SET version = version + 1, scope = ?3, status = ?4, updated_at = ?5, body = ?6
                         WHERE kind = ?1 AND id = ?2 AND version = ?7 RETURNING version",
                        params![d.kind, d.id, d.scope, d.status, updated, body, v],
                        |r| r.get(0),
                    )
                    .optional(),
            }
            .map_err(sql_err)?;
            Ok(version.map_or(DocWrite::Conflict, DocWrite::Written))
        })
        .await
    }

    async fn get_doc(&self, kind: &str, id: &str) -> StoreResult<Option<Doc>> {
        let (kind, id) = (kind.to_string(), id.to_string());
        self.with(move |c| {
            let row = c
                .query_row(
                    "SELECT id, version, scope, status, updated_at, body FROM docs WHERE kind = ?1 AND id = ?2",
                    params![kind, id],
                    |r| doc_from_row(&kind, r),
                )
                .optional()
                .map_err(sql_err)?;
            row.map(finish_doc).transpose()
        })
        .await
    }

    async fn list_docs(
        &self,
        kind: &str,
        filter: &DocFilter,
        limit: usize,
    ) -> StoreResult<Vec<Doc>> {
        let (kind, filter) = (kind.to_string(), filter.clone());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT id, version, scope, status, updated_at, body FROM docs
                     WHERE kind = ?1 AND (?2 IS NULL OR scope = ?2) AND (?3 IS NULL OR status = ?3)
                     ORDER BY updated_at DESC, id DESC LIMIT ?4",
                )
                .map_err(sql_err)?;
            let rows = stmt
                .query_map(params![kind, filter.scope, filter.status, limit], |r| {
                    doc_from_row(&kind, r)
                })
                .map_err(sql_err)?;
            rows.map(|r| r.map_err(sql_err).and_then(finish_doc))
                .collect()
        })
        .await
    }

    async fn add_rollup(
        &self,
        environment: &str,
        deployment: &str,
        minute: i64,
        values: &[(String, f64)],
    ) -> StoreResult<()> {
        let add = RollupAdd {
            environment: environment.to_string(),
            deployment: deployment.to_string(),
            minute,
            values: values.to_vec(),
        };
        self.with(move |c| {
            let tx = c
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(sql_err)?;
            add_in(&tx, &add)?;
            tx.commit().map_err(sql_err)
        })
        .await
    }

    async fn add_rollups_once(
        &self,
        scope: &str,
        key: &str,
        adds: &[RollupAdd],
        now: Timestamp,
        ttl: Duration,
    ) -> StoreResult<bool> {
        let (scope, key, adds) = (scope.to_string(), key.to_string(), adds.to_vec());
        let expires = now.as_millis().saturating_add(ttl_millis(ttl));
        self.with(move |c| {
            let tx = c
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(sql_err)?;
            if !claim_in(&tx, &scope, &key, expires, now.as_millis())? {
                return Ok(false);
            }
            for a in &adds {
                add_in(&tx, a)?;
            }
            tx.commit().map_err(sql_err)?;
            Ok(true)
        })
        .await
    }

    async fn rollups(
        &self,
        environment: &str,
        deployment: &str,
        from: i64,
        to: i64,
    ) -> StoreResult<Vec<RollupRow>> {
        let (environment, deployment) = (environment.to_string(), deployment.to_string());
        self.with(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT minute, name, value FROM rollups
                     WHERE environment = ?1 AND deployment = ?2 AND minute >= ?3 AND minute < ?4 ORDER BY minute, name",
                )
                .map_err(sql_err)?;
            let rows = stmt
                .query_map(params![environment, deployment, from, to], |r| {
                    Ok(RollupRow { minute: r.get(0)?, name: r.get(1)?, value: r.get(2)? })
                })
                .map_err(sql_err)?;
            rows.map(|r| r.map_err(sql_err)).collect()
        })
        .await
    }

    async fn append_audit(&self, entry: AuditEntry) -> StoreResult<AuditRecord> {
        self.with(move |c| {
            // IMMEDIATE takes the write lock up front, so the head read and the insert are one step
            // even across processes sharing the file.
            let tx = c
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(sql_err)?;
            let head: Option<(i64, String)> = tx
                .query_row(
                    "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(sql_err)?;
            let (seq, hash) = head.unwrap_or((0, GENESIS_HASH.to_string()));
            let rec = AuditRecord::chain(seq, &hash, entry);
            tx.execute(
                "INSERT INTO audit_log (seq, at, actor, action, subject, detail, prev_hash, hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    rec.seq,
                    rec.entry.at.as_millis(),
                    rec.entry.actor,
                    rec.entry.action,
                    rec.entry.subject,
                    rec.entry.detail.to_string(),
                    rec.prev_hash,
                    rec.hash
                ],
            )
            .map_err(sql_err)?;
            tx.commit().map_err(sql_err)?;
            Ok(rec)
        })
        .await
    }

    async fn audit_after(&self, after: i64, limit: usize) -> StoreResult<Vec<AuditRecord>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with(move |c| {
            audit_query(
                c,
                "SELECT seq, at, actor, action, subject, detail, prev_hash, hash
                 FROM audit_log WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                params![after, limit],
            )
        })
        .await
    }

    async fn audit_tail(&self, n: usize) -> StoreResult<Vec<AuditRecord>> {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        self.with(move |c| {
            audit_query(
                c,
                "SELECT * FROM (SELECT seq, at, actor, action, subject, detail, prev_hash, hash
                 FROM audit_log ORDER BY seq DESC LIMIT ?1) ORDER BY seq",
                params![n],
            )
        })
        .await
    }

    async fn audit_of(&self, subjects: &[String], limit: usize) -> StoreResult<Vec<AuditRecord>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let subjects = serde_json::to_string(subjects)
            .map_err(|e| StoreError::Corrupt(format!("audit subjects: {e}")))?;
        self.with(move |c| {
            audit_query(
                c,
                "SELECT * FROM (SELECT seq, at, actor, action, subject, detail, prev_hash, hash
                 FROM audit_log WHERE subject IN (SELECT value FROM json_each(?1))
                 ORDER BY seq DESC LIMIT ?2) ORDER BY seq",
                params![subjects, limit],
            )
        })
        .await
    }

    async fn upsert_deployment(&self, d: &Deployment) -> StoreResult<()> {
        let d = d.clone();
        self.with(move |c| {
            c.execute(
                "INSERT INTO deployments (id, environment, url, state, git_sha, created_at, updated_at, meta)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (id) DO UPDATE SET environment = excluded.environment, url = excluded.url,
                   state = excluded.state, git_sha = excluded.git_sha, created_at = excluded.created_at,
                   updated_at = excluded.updated_at, meta = excluded.meta",
                params![
                    d.id,
                    d.environment,
                    d.url,
                    d.state.as_str(),
                    d.git_sha,
                    d.created_at.as_millis(),
                    d.updated_at.as_millis(),
                    d.meta.to_string()
                ],
            )
            .map_err(sql_err)?;
            Ok(())
        })
        .await
    }

    async fn deployment(&self, id: &str) -> StoreResult<Option<Deployment>> {
        let id = id.to_string();
        self.with(move |c| {
            let row = c
                .query_row(
                    &format!("{SELECT_DEPLOYMENTS} WHERE id = ?1"),
                    params![id],
                    deployment_from_row,
                )
                .optional()
                .map_err(sql_err)?;
            row.map(finish_deployment).transpose()
        })
        .await
    }

    async fn recent_deployments(
        &self,
        environment: &str,
        limit: usize,
    ) -> StoreResult<Vec<Deployment>> {
        let environment = environment.to_string();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with(move |c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "{SELECT_DEPLOYMENTS} WHERE environment = ?1 ORDER BY created_at DESC, id DESC LIMIT ?2"
                ))
                .map_err(sql_err)?;
            let rows = stmt.query_map(params![environment, limit], deployment_from_row).map_err(sql_err)?;
            rows.map(|r| r.map_err(sql_err).and_then(finish_deployment)).collect()
        })
        .await
    }

    async fn set_last_known_good(&self, environment: &str, deployment_id: &str) -> StoreResult<()> {
        let (environment, deployment_id) = (environment.to_string(), deployment_id.to_string());
        self.with(move |c| {
            let n = c
                .execute(
                    "INSERT INTO last_known_good (environment, deployment_id)
                     SELECT ?1, id FROM deployments WHERE id = ?2
                     ON CONFLICT (environment) DO UPDATE SET deployment_id = excluded.deployment_id",
                    params![environment, deployment_id],
                )
                .map_err(sql_err)?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("deployment {deployment_id}")));
            }
            Ok(())
        })
        .await
    }

    async fn last_known_good(&self, environment: &str) -> StoreResult<Option<Deployment>> {
        let environment = environment.to_string();
        self.with(move |c| {
            let row = c
                .query_row(
                    &format!(
                        "{SELECT_DEPLOYMENTS} WHERE id = (SELECT deployment_id FROM last_known_good WHERE environment = ?1)"
                    ),
                    params![environment],
                    deployment_from_row,
                )
                .optional()
                .map_err(sql_err)?;
            row.map(finish_deployment).transpose()
        })
        .await
    }
}
