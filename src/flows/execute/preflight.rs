//! Checks made once, before the first step of an execution acts: production
//! still serves the deployment the plan was made for (else the plan is
//! superseded), the target exists and is READY, and every down script runs
//! (rehearsed in a transaction that is rolled back). Nothing here changes
//! production. A dry run makes the same checks with what it can reach, so it
//! reports what a real run would refuse.

use serde_json::{json, Value};

use super::database::BACKUP_KIND;
use super::step::StepCtx;
use crate::flows::registry;
use crate::integrations::app_database;
use crate::integrations::vercel::VercelError;
use crate::store::{DeploymentState, Doc, StoreResult};

/// What the checks decided.
pub(crate) enum Preflight {
    /// Go ahead; the detail is kept on the execution.
    Go(Value),
    /// Production serves something else now: act on nothing.
    Superseded { serving_now: String },
    /// A check failed: act on nothing.
    Refused(Vec<String>),
    /// A dependency did not answer; try again on the next drive.
    Retry(String),
}

/// Runs every check for the execution in `doc`.
pub(crate) async fn check(cx: &StepCtx<'_>, doc: &Doc) -> StoreResult<Preflight> {
    let b = &doc.body;
    let field = |k: &str| b[k].as_str().unwrap_or_default().to_string();
    let (env, from, target) = (
        field("environment"),
        field("from_deployment"),
        field("target_deployment"),
    );
    let real = !b["dry_run"].as_bool().unwrap_or(true);
    let mut refused = Vec::new();

    // 1. What production serves now, from Vercel itself when we can ask.
    let serving_now = match (real, cx.deps.vercel) {
        (true, Some(api)) => match api.production_deployment().await {
            Ok(Some(id)) => Some(id),
            Ok(None) => None,
            Err(e) => return Ok(Preflight::Retry(e.to_string())),
        },
        _ => registry::current(cx.store, &env)
            .await?
            .map(|c| c.deployment_id),
    };
    if let Some(now) = serving_now.filter(|now| *now != from) {
        return Ok(Preflight::Superseded { serving_now: now });
    }

    // 2. The target exists and is READY.
    let target_state = match (real, cx.deps.vercel) {
        (true, Some(api)) => match api.deployment_state(&target).await {
            Ok(s) => s,
            Err(VercelError::Api { status, .. }) if status < 500 && status != 429 => None,
            Err(e) => return Ok(Preflight::Retry(e.to_string())),
        },
        _ => cx.store.deployment(&target).await?.map(|d| {
            if matches!(d.state, DeploymentState::Ready | DeploymentState::Promoted) {
                "READY".to_string()
            } else {
                d.state.as_str().to_uppercase()
            }
        }),
    };
    match target_state.as_deref() {
        Some("READY") => {}
        Some(other) => refused.push(format!("target deployment {target} is {other}, not READY")),
        None => refused.push(format!("target deployment {target} does not exist")),
    }

    // 3. Every down script runs, rehearsed and rolled back.
    let names = super::migration_names(doc);
    let mut database = Value::Null;
    if !names.is_empty() {
        match cx.deps.app_db {
            None => refused
                .push("the plan reverses migrations but APP_DATABASE_URL is not set".to_string()),
            Some(db) => match rehearse(cx, db, &names).await? {
                Ok(detail) => database = detail,
                Err(e) => refused.push(e),
            },
        }
    }
    if refused.is_empty() {
        Ok(Preflight::Go(
            json!({"serving_now": from, "target_state": target_state, "database": database}),
        ))
    } else {
        Ok(Preflight::Refused(refused))
    }
}

async fn rehearse(
    cx: &StepCtx<'_>,
    db: &super::AppDb,
    names: &[String],
) -> StoreResult<Result<Value, String>> {
    let all = match crate::integrations::migrations::read_dir(&db.migrations_dir, &db.down_file) {
        Ok(a) => a,
        Err(e) => {
            return Ok(Err(format!(
                "cannot read {}: {e}",
                db.migrations_dir.display()
            )))
        }
    };
    let mut chosen = Vec::new();
    for name in names {
        match all.iter().find(|m| &m.name == name) {
            Some(m) => chosen.push(m),
            None => {
                return Ok(Err(format!(
                    "migration {name} is not in {}",
                    db.migrations_dir.display()
                )))
            }
        }
    }
    let mut verified = Vec::new();
    for name in names {
        if cx
            .store
            .get_doc(BACKUP_KIND, &format!("pre_migration:{name}"))
            .await?
            .is_some_and(|d| d.status == "verified")
        {
            verified.push(name.clone());
        }
    }
    let mut client = match app_database::connect(db.url.expose()).await {
        Ok(c) => c,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let has_backup = |n: &str| verified.iter().any(|v| v == n);
    Ok(
        app_database::rehearse(&mut client, &chosen, db.require_backup, &has_backup)
            .await
            .map_err(|e| format!("database rehearsal: {e}")),
    )
}
