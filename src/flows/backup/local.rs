//! `rollback-guard backup create` and `backup verify` for `pg_dump` backups.
//! Create dumps the app's database (`pg_dump -Fc`) into `BACKUP_DIR`. Verify
//! restores a dump into a scratch database on the same server, runs
//! integrity queries, drops the scratch database, and records a receipt; a
//! verified pre-migration backup is what lets a destructive down migration run.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{json, Value};

use crate::core::clock::Timestamp;
use crate::integrations::backup::pg_dump::{file_name, parse_name};
use crate::store::{Doc, Store, StoreResult};

/// The store record of a backup: `pre_migration:<name>` or `full:<file>`.
pub fn record_id(label: &str, file: &Path) -> String {
    match label.strip_prefix("pre-migration/") {
        Some(m) => format!("pre_migration:{m}"),
        None => format!(
            "full:{}",
            file.file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default()
        ),
    }
}

async fn upsert(
    store: &dyn Store,
    id: &str,
    status: &str,
    body: Value,
    now: Timestamp,
) -> StoreResult<()> {
    crate::store::upsert_doc(
        store,
        crate::flows::execute::database::BACKUP_KIND,
        id,
        |_| Doc {
            kind: crate::flows::execute::database::BACKUP_KIND.into(),
            id: id.into(),
            version: 0,
            scope: "database".into(),
            status: status.into(),
            updated_at: now,
            body: body.clone(),
        },
    )
    .await
}

/// Dumps the database at `url` into `dir`; records it as taken.
pub async fn create(
    store: &dyn Store,
    url: &str,
    dir: &Path,
    label: &str,
    now: Timestamp,
) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(file_name(now, label));
    let partial = path.with_extension("partial");
    let out = tokio::process::Command::new("pg_dump")
        .args(["--format=custom", "--no-owner", "--file"])
        .arg(&partial)
        .arg(url)
        .output()
        .await
        .map_err(|e| format!("cannot run pg_dump: {e}"))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&partial);
        return Err(format!(
            "pg_dump failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    // Only complete dumps get the name the provider lists.
    std::fs::rename(&partial, &path).map_err(|e| e.to_string())?;
    let id = record_id(label, &path);
    upsert(
        store,
        &id,
        "taken",
        json!({"file": path.display().to_string(), "label": label, "created_at": now.as_millis()}),
        now,
    )
    .await
    .map_err(|e| e.to_string())?;
    crate::store::audit(
        store,
        now,
        "cli",
        "backup_created",
        &id,
        json!({"file": path.display().to_string()}),
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(path)
}

/// Restores `file` into a scratch database on the server of `url`, checks
/// it, drops it, and records the receipt. Returns the receipt.
pub async fn verify(
    store: &dyn Store,
    url: &str,
    file: &Path,
    now: Timestamp,
) -> Result<Value, String> {
    let name = file
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let label = parse_name(&name)
        .map(|(_, l)| l)
        .unwrap_or_else(|| "full".into());
    let id = record_id(&label, file);
    let started = Instant::now();
    let result = restore_and_check(url, file).await;
    let duration_ms = started.elapsed().as_millis() as u64;
    let (status, receipt) = match &result {
        Ok(checks) => (
            "verified",
            json!({"file": file.display().to_string(), "label": label, "verified_at": now.as_millis(), "duration_ms": duration_ms, "checks": checks}),
        ),
        Err(e) => (
            "failed",
            json!({"file": file.display().to_string(), "label": label, "verified_at": now.as_millis(), "duration_ms": duration_ms, "error": e}),
        ),
    };
    upsert(store, &id, status, receipt.clone(), now)
        .await
        .map_err(|e| e.to_string())?;
    crate::store::audit(
        store,
        now,
        "cli",
        &format!("backup_{status}"),
        &id,
        receipt.clone(),
    )
    .await
    .map_err(|e| e.to_string())?;
    result.map(|_| receipt)
}

async fn restore_and_check(url: &str, file: &Path) -> Result<Value, String> {
    let scratch = format!("rg_verify_{:016x}", rand::random::<u64>());
    let admin = crate::integrations::app_database::connect(url)
        .await
        .map_err(|e| e.to_string())?;
    admin
        .batch_execute(&format!("CREATE DATABASE {scratch}"))
        .await
        .map_err(|e| format!("cannot create a scratch database: {e}"))?;
    let mut scratch_url = url::Url::parse(url).map_err(|e| e.to_string())?;
    scratch_url.set_path(&format!("/{scratch}"));
    let result = async {
        let out = tokio::process::Command::new("pg_restore")
            .args(["--no-owner", "--exit-on-error", "--dbname"])
            .arg(scratch_url.as_str())
            .arg(file)
            .output()
            .await
            .map_err(|e| format!("cannot run pg_restore: {e}"))?;
        if !out.status.success() {
            return Err(format!("pg_restore failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        let db = crate::integrations::app_database::connect(scratch_url.as_str()).await.map_err(|e| e.to_string())?;
        let tables = db
            .query("SELECT format('%I.%I', schemaname, relname) FROM pg_stat_user_tables ORDER BY 1", &[])
            .await
            .map_err(|e| e.to_string())?;
        let mut rows = serde_json::Map::new();
        for t in &tables {
            let name: String = t.get(0);
            let n: i64 = db.query_one(&format!("SELECT count(*) FROM {name}"), &[]).await.map_err(|e| e.to_string())?.get(0);
            rows.insert(name, json!(n));
        }
        let applied = db
            .query_opt("SELECT count(*) FROM _prisma_migrations WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL", &[])
            .await
            .ok()
            .flatten()
            .map(|r| r.get::<_, i64>(0));
        if tables.is_empty() {
            return Err("the restored database has no tables".to_string());
        }
        Ok(json!({"tables": tables.len(), "rows": rows, "prisma_migrations_applied": applied}))
    }
    .await;
    let _ = admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {scratch} WITH (FORCE)"))
        .await;
    result
}
