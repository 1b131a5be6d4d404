//! The `database` step of a rollback: roll back, newest first, the Prisma
//! migrations applied since the target deployment (see
//! [`crate::integrations::app_database`]). Resumable: a migration already marked
//! `rolled_back_at` (by a run that crashed after committing) counts as done.

use serde_json::{json, Value};

use super::step::{begin_step, end_step, StepCtx, StepResult};
use super::AppDb;
use crate::integrations::app_database::{self, DbRollbackError};
use crate::store::{Doc, Store, StoreResult};

/// Document kind of backup records; a verified pre-migration backup of
/// migration `m` is `backup` / `pre_migration:m` with status `verified`.
pub const BACKUP_KIND: &str = "backup";

/// Runs (or resumes) the database step `i` of `doc`.
pub(crate) async fn run(cx: &StepCtx<'_>, doc: &mut Doc, i: usize) -> StoreResult<StepResult> {
    let StepCtx { store, clock, .. } = *cx;
    let app_db = cx.deps.app_db;
    let names = super::migration_names(doc);
    let dry_run = doc.body["dry_run"].as_bool().unwrap_or(true);
    begin_step(
        store,
        clock,
        doc,
        i,
        json!({"migrations": names, "dry_run": dry_run}),
    )
    .await?;
    let result = match (dry_run, app_db) {
        (true, _) => Ok(json!({"dry_run": true, "would_roll_back": names})),
        (false, None) => {
            Err("APP_DATABASE_URL is not set; the database step cannot run".to_string())
        }
        (false, Some(db)) => roll_back_all(store, db, &names).await,
    };
    end_step(store, clock, doc, i, result).await
}

async fn roll_back_all(store: &dyn Store, db: &AppDb, names: &[String]) -> Result<Value, String> {
    let all = crate::integrations::migrations::read_dir(&db.migrations_dir, &db.down_file)
        .map_err(|e| format!("cannot read {}: {e}", db.migrations_dir.display()))?;
    let mut client = app_database::connect(db.url.expose())
        .await
        .map_err(|e| e.to_string())?;
    let mut receipts = Vec::new();
    for name in names {
        let m = all
            .iter()
            .find(|m| &m.name == name)
            .ok_or_else(|| format!("migration {name} is not in {}", db.migrations_dir.display()))?;
        let backup_verified = store
            .get_doc(BACKUP_KIND, &format!("pre_migration:{name}"))
            .await
            .map_err(|e| e.to_string())?
            .is_some_and(|d| d.status == "verified");
        match app_database::roll_back(
            &mut client,
            m,
            db.require_backup,
            backup_verified,
            app_database::LOCK_TIMEOUT,
        )
        .await
        {
            Ok(r) => receipts.push(r),
            Err(DbRollbackError::NotApplied(_)) if already_rolled_back(&client, name).await => {
                receipts.push(json!({"migration": name, "already_rolled_back": true}))
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(json!({"rolled_back": receipts}))
}

async fn already_rolled_back(client: &tokio_postgres::Client, name: &str) -> bool {
    client
        .query_opt("SELECT 1 FROM _prisma_migrations WHERE migration_name = $1 AND rolled_back_at IS NOT NULL", &[&name])
        .await
        .is_ok_and(|r| r.is_some())
}
