//! The app's own database (the one Prisma migrates), for database rollback:
//! a migration's down SQL and the `rolled_back_at` mark on its
//! `_prisma_migrations` row commit together in one transaction, or not at all,
//! under Prisma's advisory lock (72707369, so it cannot race
//! `prisma migrate deploy`), with lock and statement timeouts. A down that
//! controls transactions itself is refused before anything runs; one outer
//! BEGIN/COMMIT pair (Prisma's enum rewrite) is removed and its body run in
//! the guard's transaction ([`crate::core::sql::atomic_body`]).
//! Needs a direct (unpooled) connection: the lock is session-level.

use std::time::Duration;

use serde_json::{json, Value};

use crate::core::sql::{atomic_body, destructive, Statement};
use crate::integrations::migrations::Migration;

/// Prisma Migrate's advisory lock key.
pub const PRISMA_LOCK: i64 = 72_707_369;
/// How long to wait for the lock by default (Prisma itself waits 10 s).
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(10);
/// `lock_timeout` for each statement of a down script.
pub const STATEMENT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);
/// `statement_timeout` for each statement of a down script.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a database rollback did not happen.
#[derive(Debug, thiserror::Error)]
pub enum DbRollbackError {
    #[error("migration {0} has no down script")]
    NoDownScript(String),
    #[error(
        "migration {name} is destructive ({reasons}) and has no verified pre-migration backup"
    )]
    DestructiveWithoutBackup { name: String, reasons: String },
    #[error(
        "migration {0} is not applied (no finished, un-rolled-back row in _prisma_migrations)"
    )]
    NotApplied(String),
    #[error("Prisma's migration lock is held by someone else (a deploy in progress?)")]
    LockBusy,
    #[error("migration {name}'s down script cannot run as one atomic step: {reason}")]
    NotAtomic {
        name: String,
        reason: crate::core::sql::NotAtomic,
    },
    #[error("the down script failed and was rolled back: {0}")]
    DownFailed(String),
    #[error("database unavailable: {0}")]
    Unavailable(String),
}

fn db(e: tokio_postgres::Error) -> DbRollbackError {
    match e.as_db_error() {
        Some(d) => DbRollbackError::DownFailed(format!("{}: {}", d.code().code(), d.message())),
        None => DbRollbackError::Unavailable(e.to_string()),
    }
}

/// How long connecting may take, TLS and startup handshake included.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to the app's database, with the same TLS rules as the store. The
/// whole handshake is bounded (a server that accepts and never answers fails
/// after [`HANDSHAKE_TIMEOUT`]), and every statement of the session is
/// bounded by the server's `statement_timeout` ([`STATEMENT_TIMEOUT`]).
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, DbRollbackError> {
    let mut cfg =
        crate::integrations::postgres::client_config(url).map_err(DbRollbackError::Unavailable)?;
    cfg.connect_timeout(HANDSHAKE_TIMEOUT);
    cfg.options(format!(
        "-c statement_timeout={}",
        STATEMENT_TIMEOUT.as_millis()
    ));
    let (client, conn) = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        cfg.connect(crate::integrations::postgres::tls()),
    )
    .await
    .map_err(|_| {
        DbRollbackError::Unavailable(format!(
            "the app database did not complete the connection handshake within {} s",
            HANDSHAKE_TIMEOUT.as_secs()
        ))
    })?
    .map_err(|e| DbRollbackError::Unavailable(e.to_string()))?;
    tokio::spawn(async move {
        match conn.await {
            Ok(()) => {}
            // Terminated or closed by the server (a scratch database dropped
            // WITH (FORCE) after a backup check, a pg_terminate_backend): a
            // statement in flight reports it to its caller; the connection's
            // end alone is no news.
            Err(e) if ended_by_the_server(&e) => {
                tracing::debug!(error = %e, "app database connection terminated by the server");
            }
            Err(e) => tracing::warn!(error = %e, "app database connection ended"),
        }
    });
    Ok(client)
}

/// Applied migrations newer than `after_ms` (finished and not rolled back), newest first.
pub async fn applied_since(
    client: &tokio_postgres::Client,
    after_ms: i64,
) -> Result<Vec<String>, DbRollbackError> {
    let rows = client
        .query(
            "SELECT migration_name FROM _prisma_migrations
             WHERE rolled_back_at IS NULL AND finished_at IS NOT NULL AND finished_at > to_timestamp($1::float8 / 1000)
             ORDER BY finished_at DESC, migration_name DESC",
            &[&(after_ms as f64)],
        )
        .await
        .map_err(db)?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Rolls one migration back. `backup_verified` says whether a verified
/// pre-migration backup exists; destructive downs are refused without one
/// when `require_backup` is set.
pub async fn roll_back(
    client: &mut tokio_postgres::Client,
    m: &Migration,
    require_backup: bool,
    backup_verified: bool,
    lock_timeout: Duration,
) -> Result<Value, DbRollbackError> {
    let (body, reasons) = checked_body(m, require_backup, backup_verified)?;
    let started = std::time::Instant::now();
    let mut locked = false;
    while started.elapsed() < lock_timeout {
        let row = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&PRISMA_LOCK])
            .await
            .map_err(db)?;
        if row.get::<_, bool>(0) {
            locked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if !locked {
        return Err(DbRollbackError::LockBusy);
    }
    let result = run_down(client, m, &body).await;
    // Always give the lock back, whatever happened.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&PRISMA_LOCK])
        .await;
    let rows = result?;
    Ok(
        json!({"migration": m.name, "destructive": reasons, "history_rows_marked": rows, "ms": started.elapsed().as_millis() as u64}),
    )
}

/// Rehearses the down scripts of `migrations`, in order, in one transaction
/// that is always rolled back (with the same lock and statement timeouts as
/// the real run): a script that would fail fails here, before anything acts.
/// Checks, for each: a down script exists, it can run atomically, it is
/// applied, and a destructive one has a verified backup when required
/// (`backup_verified` answers per migration name).
pub async fn rehearse(
    client: &mut tokio_postgres::Client,
    migrations: &[&Migration],
    require_backup: bool,
    backup_verified: &(dyn Fn(&str) -> bool + Sync),
) -> Result<Value, DbRollbackError> {
    let mut bodies = Vec::new();
    for m in migrations {
        let (body, _) = checked_body(m, require_backup, backup_verified(&m.name))?;
        bodies.push((m, body));
    }
    let started = std::time::Instant::now();
    let tx = bounded_transaction(client).await?;
    for (m, body) in &bodies {
        ensure_applied(&tx, &m.name, "").await?;
        for s in body {
            tx.batch_execute(&s.text).await.map_err(|e| match db(e) {
                DbRollbackError::DownFailed(d) => {
                    DbRollbackError::DownFailed(format!("{}: {d}", m.name))
                }
                other => other,
            })?;
        }
    }
    tx.rollback().await.map_err(db)?;
    Ok(
        json!({"rehearsed": bodies.iter().map(|(m, _)| m.name.as_str()).collect::<Vec<_>>(),
              "ms": started.elapsed().as_millis() as u64}),
    )
}

/// The statements of `m`'s down script to run in one transaction, and its
/// data-loss reasons. Refuses a missing script, one that cannot run
/// atomically, and a destructive one without a verified backup when required.
fn checked_body(
    m: &Migration,
    require_backup: bool,
    backup_verified: bool,
) -> Result<(Vec<Statement>, Vec<String>), DbRollbackError> {
    let down = m
        .down_sql
        .as_deref()
        .ok_or_else(|| DbRollbackError::NoDownScript(m.name.clone()))?;
    let body = atomic_body(down).map_err(|reason| DbRollbackError::NotAtomic {
        name: m.name.clone(),
        reason,
    })?;
    let reasons = destructive(down);
    if !reasons.is_empty() && require_backup && !backup_verified {
        return Err(DbRollbackError::DestructiveWithoutBackup {
            name: m.name.clone(),
            reasons: reasons.join("; "),
        });
    }
    Ok((body, reasons))
}

/// A transaction whose statements give up on a held lock or a slow statement.
async fn bounded_transaction(
    client: &mut tokio_postgres::Client,
) -> Result<tokio_postgres::Transaction<'_>, DbRollbackError> {
    let tx = client.transaction().await.map_err(db)?;
    tx.batch_execute(&format!(
        "SET LOCAL lock_timeout = '{}ms'; SET LOCAL statement_timeout = '{}ms'",
        STATEMENT_LOCK_TIMEOUT.as_millis(),
        STATEMENT_TIMEOUT.as_millis()
    ))
    .await
    .map_err(db)?;
    Ok(tx)
}

/// Fails with `NotApplied` unless `name` has a finished, not rolled-back row
/// (`lock` may be `" FOR UPDATE"`).
async fn ensure_applied(
    tx: &tokio_postgres::Transaction<'_>,
    name: &str,
    lock: &str,
) -> Result<(), DbRollbackError> {
    let sql = format!(
        "SELECT 1 FROM _prisma_migrations
         WHERE migration_name = $1 AND rolled_back_at IS NULL AND finished_at IS NOT NULL{lock}"
    );
    match tx.query_opt(&sql, &[&name]).await.map_err(db)? {
        Some(_) => Ok(()),
        None => Err(DbRollbackError::NotApplied(name.to_string())),
    }
}

async fn run_down(
    client: &mut tokio_postgres::Client,
    m: &Migration,
    body: &[Statement],
) -> Result<u64, DbRollbackError> {
    // Bounded waits: a lock held by the app or a slow statement fails the
    // step (and rolls it back) instead of hanging the rollback.
    let tx = bounded_transaction(client).await?;
    ensure_applied(&tx, &m.name, " FOR UPDATE").await?;
    // A transaction-local marker: if a statement ends our transaction (a
    // COMMIT the splitter did not see), the marker is gone and the history
    // is not touched.
    tx.execute(
        "SELECT set_config('rollback_guard.in_step', 'on', true)",
        &[],
    )
    .await
    .map_err(db)?;
    for s in body {
        tx.batch_execute(&s.text).await.map_err(db)?;
    }
    let still_ours: Option<String> = tx
        .query_one(
            "SELECT current_setting('rollback_guard.in_step', true)",
            &[],
        )
        .await
        .map_err(db)?
        .get(0);
    if still_ours.as_deref() != Some("on") {
        return Err(DbRollbackError::DownFailed(format!(
            "the down script of {} ended the guard's transaction itself; statements after that point ran outside it. \
             _prisma_migrations was not changed; compare the schema by hand",
            m.name
        )));
    }
    let marked = tx
        .execute(
            "UPDATE _prisma_migrations SET rolled_back_at = now()
             WHERE migration_name = $1 AND rolled_back_at IS NULL AND finished_at IS NOT NULL",
            &[&m.name],
        )
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(marked)
}

/// Whether a connection's end is the server closing it: a clean close, an
/// administrator's termination (57P01), or the socket reset or cut before
/// that message could be read (which of these the client sees is a race).
fn ended_by_the_server(e: &tokio_postgres::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    let io = std::error::Error::source(e).and_then(|s| s.downcast_ref::<std::io::Error>());
    e.is_closed()
        || e.code() == Some(&tokio_postgres::error::SqlState::ADMIN_SHUTDOWN)
        || io.is_some_and(|io| {
            matches!(
                io.kind(),
                ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
            )
        })
}
