//! One plan, shown truthfully. Completes a rollback plan with the database
//! migrations it reverses (attributed by what was applied while the target
//! was current, not by clocks) and describes every step the same way for
//! the preview, the approval request, its page and message, and the
//! execution: the code target, each env var and whether it can be restored,
//! each migration with its down script's hazards and backup, and what a real
//! run would refuse.

use serde_json::{json, Value};

use crate::core::clock::Timestamp;
use crate::core::sql::{atomic_body, destructive};
use crate::flows::execute::{database::BACKUP_KIND, AppDb, Plan};
use crate::flows::registry;
use crate::integrations::app_database;
use crate::store::{Doc, Store, StoreResult};

/// Document kind of the applied-migrations record (id = deployment id).
pub const APPLIED_KIND: &str = "applied_migrations";

/// Records which migrations are applied while `deployment` is the current
/// one of `environment` (once per time it becomes current). Failures to
/// reach the app database are logged; the next run tries again.
pub async fn record_applied(
    store: &dyn Store,
    db: &AppDb,
    environment: &str,
    deployment: &str,
    now: Timestamp,
) -> StoreResult<()> {
    let Some(current) = registry::current(store, environment).await? else {
        return Ok(());
    };
    if current.deployment_id != deployment {
        return Ok(());
    }
    let existing = store.get_doc(APPLIED_KIND, deployment).await?;
    if existing
        .as_ref()
        .is_some_and(|d| d.body["since"] == current.since.as_millis())
    {
        return Ok(());
    }
    let names = match applied_now(db).await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "could not record the applied migrations");
            return Ok(());
        }
    };
    let doc = Doc {
        kind: APPLIED_KIND.into(),
        id: deployment.into(),
        version: 0,
        scope: environment.into(),
        status: "recorded".into(),
        updated_at: now,
        body: json!({"names": names, "since": current.since.as_millis(), "recorded_at": now.as_millis()}),
    };
    store
        .put_doc(&doc, existing.as_ref().map(|d| d.version))
        .await?;
    Ok(())
}

async fn applied_now(db: &AppDb) -> Result<Vec<String>, String> {
    let client = app_database::connect(db.url.expose())
        .await
        .map_err(|e| e.to_string())?;
    app_database::applied_since(&client, 0)
        .await
        .map_err(|e| e.to_string())
}

/// Fills `plan.migrations` (newest first) unless already set, and returns
/// how they were attributed.
pub async fn attribute_migrations(
    store: &dyn Store,
    db: Option<&AppDb>,
    plan: &mut Plan,
) -> StoreResult<Value> {
    let Some(db) = db else {
        return Ok(json!(
            "no APP_DATABASE_URL: the database is not part of the plan"
        ));
    };
    if !plan.migrations.is_empty() {
        return Ok(json!("given"));
    }
    let now = match applied_now(db).await {
        Ok(n) => n,
        Err(e) => {
            return Ok(json!(format!(
                "app database unreachable ({e}); no database step"
            )))
        }
    };
    if let Some(rec) = store.get_doc(APPLIED_KIND, &plan.target_deployment).await? {
        let then: Vec<&str> = rec.body["names"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        plan.migrations = now
            .into_iter()
            .filter(|n| !then.contains(&n.as_str()))
            .collect();
        return Ok(json!(format!(
            "applied since {} was last current (recorded)",
            plan.target_deployment
        )));
    }
    // No record (the guard was installed after the target went live): fall
    // back to what finished after the target was created, and say so.
    let Some(target) = store.deployment(&plan.target_deployment).await? else {
        return Ok(json!("target unknown: no database step"));
    };
    let client = match app_database::connect(db.url.expose()).await {
        Ok(c) => c,
        Err(e) => {
            return Ok(json!(format!(
                "app database unreachable ({e}); no database step"
            )))
        }
    };
    plan.migrations = app_database::applied_since(&client, target.created_at.as_millis())
        .await
        .unwrap_or_default();
    Ok(json!(format!(
        "by time: no record of what was applied while {} was current; migrations finished after it was created",
        plan.target_deployment
    )))
}

/// The plan as every reader sees it.
pub async fn describe(
    store: &dyn Store,
    db: Option<&AppDb>,
    plan: &Plan,
    attribution: &Value,
) -> StoreResult<Value> {
    let mut would_refuse: Vec<String> = Vec::new();
    let mut steps = vec![
        json!({"kind": "code", "from": plan.from_deployment, "to": plan.target_deployment,
        "action": format!("Vercel Instant Rollback to {}", plan.target_deployment)}),
    ];
    if let Some(snap) = store
        .get_doc(
            crate::flows::config_snapshot::SNAPSHOT_KIND,
            &plan.target_deployment,
        )
        .await?
    {
        let vars: Vec<Value> = snap.body["vars"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|v| {
                        let kind = v["type"].as_str().unwrap_or("");
                        let restorable = matches!(kind, "plain" | "encrypted") && !v["sealed"].is_null();
                        json!({"key": v["key"], "restore": if restorable { "if drifted" } else { "manual" },
                               "why": if restorable { Value::Null } else if kind == "sensitive" { json!("sensitive values are write-only in Vercel") }
                                      else if matches!(kind, "plain" | "encrypted") { json!("no value was sealed (SNAPSHOT_ENCRYPTION_KEY)") }
                                      else { json!(format!("{kind} variables are not restored automatically")) }})
                    })
                    .collect()
            })
            .unwrap_or_default();
        steps.push(json!({"kind": "config", "snapshot_of": plan.target_deployment, "vars": vars}));
    }
    if !plan.migrations.is_empty() {
        let all = db.and_then(|d| {
            crate::integrations::migrations::read_dir(&d.migrations_dir, &d.down_file).ok()
        });
        let mut items = Vec::new();
        for name in &plan.migrations {
            let m = all
                .as_ref()
                .and_then(|a| a.iter().find(|m| &m.name == name));
            let backup = store
                .get_doc(BACKUP_KIND, &format!("pre_migration:{name}"))
                .await?
                .is_some_and(|d| d.status == "verified");
            let (hazards, atomic) = match m.and_then(|m| m.down_sql.as_deref()) {
                Some(down) => (
                    destructive(down),
                    atomic_body(down).err().map(|e| e.to_string()),
                ),
                None => {
                    would_refuse.push(format!("{name} has no down script"));
                    (Vec::new(), None)
                }
            };
            if let Some(e) = &atomic {
                would_refuse.push(format!("{name}: {e}"));
            }
            if !hazards.is_empty() && db.is_some_and(|d| d.require_backup) && !backup {
                would_refuse.push(format!(
                    "{name} destroys data and has no verified pre-migration backup"
                ));
            }
            items.push(json!({"name": name, "hazards": hazards, "not_atomic": atomic, "backup_verified": backup}));
        }
        if db.is_none() {
            would_refuse.push("APP_DATABASE_URL is not set".into());
        }
        steps.push(json!({"kind": "database", "attribution": attribution, "migrations": items}));
    }
    Ok(json!({
        "environment": plan.environment, "from_deployment": plan.from_deployment,
        "target_deployment": plan.target_deployment, "reason": plan.reason, "dry_run": plan.dry_run,
        "steps": steps, "would_refuse": would_refuse,
        // Why the database is (or is not) part of the plan.
        "database": attribution,
    }))
}
