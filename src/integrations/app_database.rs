//! The app's own database (the one Prisma migrates), for database rollback:
//! a migration's down SQL runs in one transaction under Prisma's advisory
//! lock (72707369, so it cannot race `prisma migrate deploy`), and the
//! migration's `_prisma_migrations` row gets `rolled_back_at`, exactly the
//! state `prisma migrate resolve --rolled-back` leaves for failed migrations.
//! Needs a direct (unpooled) connection: the lock is session-level.

use std::time::Duration;

use serde_json::{json, Value};

use crate::core::sql::destructive;
use crate::integrations::migrations::Migration;

/// Prisma Migrate's advisory lock key.
pub const PRISMA_LOCK: i64 = 72_707_369;
/// How long to wait for the lock by default (Prisma itself waits 10 s).
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Connects to the app's database, with the same TLS rules as the store.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, DbRollbackError> {
    let cfg =
        crate::integrations::postgres::client_config(url).map_err(DbRollbackError::Unavailable)?;
    let (client, conn) = cfg
        .connect(crate::integrations::postgres::tls())
        .await
        .map_err(|e| DbRollbackError::Unavailable(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::warn!(error = %e, "app database connection ended");
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
    let down = m
        .down_sql
        .as_deref()
        .ok_or_else(|| DbRollbackError::NoDownScript(m.name.clone()))?;
    let reasons = destructive(down);
    if !reasons.is_empty() && require_backup && !backup_verified {
        return Err(DbRollbackError::DestructiveWithoutBackup {
            name: m.name.clone(),
            reasons: reasons.join("; "),
        });
    }
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
    let result = run_down(client, m, down).await;
    // Always give the lock back, whatever happened.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&PRISMA_LOCK])
        .await;
    let rows = result?;
    Ok(
        json!({"migration": m.name, "destructive": reasons, "history_rows_marked": rows, "ms": started.elapsed().as_millis() as u64}),
    )
}

async fn run_down(
    client: &mut tokio_postgres::Client,
    m: &Migration,
    down: &str,
) -> Result<u64, DbRollbackError> {
    let tx = client.transaction().await.map_err(db)?;
    let marked = tx
        .execute(
            "UPDATE _prisma_migrations SET rolled_back_at = now()
             WHERE migration_name = $1 AND rolled_back_at IS NULL AND finished_at IS NOT NULL",
            &[&m.name],
        )
        .await
        .map_err(db)?;
    if marked == 0 {
        return Err(DbRollbackError::NotApplied(m.name.clone()));
    }
    tx.batch_execute(down).await.map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(marked)
}
