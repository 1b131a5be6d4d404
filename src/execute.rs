//! Rollback execution. A plan is a persisted document (one per incident, so a
//! rollback is never planned twice) holding ordered steps. Each step is
//! written before it starts and after it ends, under a lease, so a crash at
//! any point resumes (from the evaluate cron) to exactly one rollback: the
//! code step first asks Vercel whether a rollback to the target is already
//! in flight (the crashed run's) before requesting one.

use std::time::Duration;

use serde_json::{json, Value};

use crate::clock::{Clock, Timestamp};
use crate::lease::{run_exclusive, LeaseOutcome};
use crate::registry;
use crate::store::{Doc, DocFilter, DocWrite, Store, StoreError, StoreResult};
use crate::vercel_api::VercelApi;

/// Document kind of executions.
pub const EXECUTION_KIND: &str = "execution";

/// What to roll back, and to what.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub environment: String,
    pub incident_id: String,
    pub from_deployment: String,
    pub target_deployment: String,
    /// Who or what asked: `system:auto`, `approval:apr_…`, `operator`.
    pub requested_by: String,
    pub reason: String,
    /// No Vercel token: record what would happen, call nothing.
    pub dry_run: bool,
    /// Prisma migrations to roll back after the code, newest first.
    pub migrations: Vec<String>,
}

/// How to reach the app's database for `database` steps.
#[derive(Clone, Debug)]
pub struct AppDb {
    pub url: crate::secret::Secret,
    pub migrations_dir: std::path::PathBuf,
    pub down_file: String,
    pub require_backup: bool,
}

/// What steps may call.
#[derive(Clone, Copy, Default)]
pub struct Deps<'a> {
    pub vercel: Option<&'a dyn VercelApi>,
    pub app_db: Option<&'a AppDb>,
    pub sealer: Option<&'a crate::config_snapshot::Sealer>,
}

/// Polling limits for Vercel's alias job.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub poll_every: Duration,
    /// How long one drive waits for Vercel before leaving the rest to the next run.
    pub wait_budget: Duration,
    /// After this long without success the step fails.
    pub step_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            poll_every: Duration::from_millis(500),
            wait_budget: Duration::from_secs(60),
            step_timeout: Duration::from_secs(300),
        }
    }
}

/// Chooses the rollback target: the last known good deployment, else the
/// one that served before the current one.
pub async fn plan(
    store: &dyn Store,
    environment: &str,
    incident_id: &str,
    requested_by: &str,
    reason: &str,
    dry_run: bool,
) -> StoreResult<Option<Plan>> {
    let Some(current) = registry::current(store, environment).await? else {
        return Ok(None);
    };
    let lkg = store
        .last_known_good(environment)
        .await?
        .map(|d| d.id)
        .filter(|id| *id != current.deployment_id);
    let Some(target) = lkg
        .or(current.previous_id.clone())
        .filter(|t| *t != current.deployment_id)
    else {
        return Ok(None);
    };
    Ok(Some(Plan {
        environment: environment.into(),
        incident_id: incident_id.into(),
        from_deployment: current.deployment_id,
        target_deployment: target,
        requested_by: requested_by.into(),
        reason: reason.into(),
        dry_run,
        migrations: Vec::new(),
    }))
}

/// The execution id for an incident (one execution per incident).
pub fn execution_id(incident_id: &str) -> String {
    format!("exe_{incident_id}")
}

/// Code first (old code tolerates a newer schema far better than the
/// reverse), then configuration (for the next deployment), then the schema.
fn steps(p: &Plan, has_snapshot: bool) -> Value {
    let step = |kind: &str| json!({"kind": kind, "status": "pending", "attempts": 0, "started_at": null, "finished_at": null, "detail": null});
    let mut steps = vec![step("code")];
    if has_snapshot {
        steps.push(step("config"));
    }
    if !p.migrations.is_empty() {
        steps.push(step("database"));
    }
    json!(steps)
}

/// Persists a plan. Returns the execution id and whether this call created it
/// (`false`: an execution for the incident already exists and is reused).
pub async fn start(store: &dyn Store, p: &Plan, now: Timestamp) -> StoreResult<(String, bool)> {
    let id = execution_id(&p.incident_id);
    let has_snapshot = store
        .get_doc(crate::config_snapshot::SNAPSHOT_KIND, &p.target_deployment)
        .await?
        .is_some();
    let doc = Doc {
        kind: EXECUTION_KIND.into(),
        id: id.clone(),
        version: 0,
        scope: p.environment.clone(),
        status: "pending".into(),
        updated_at: now,
        body: json!({
            "environment": p.environment, "incident_id": p.incident_id, "from_deployment": p.from_deployment,
            "target_deployment": p.target_deployment, "requested_by": p.requested_by, "reason": p.reason,
            "dry_run": p.dry_run, "created_at": now.as_millis(),
            "migrations": p.migrations,
            "steps": steps(p, has_snapshot),
        }),
    };
    let created = store.put_doc(&doc, None).await? != DocWrite::Conflict;
    if created {
        crate::store::audit(
            store,
            now,
            &p.requested_by,
            "rollback_planned",
            &id,
            json!({"plan": doc.body}),
        )
        .await?;
    }
    Ok((id, created))
}

/// Writes `doc` with a new status/body over `version`; a conflict means
/// another writer got there first, which under the lease is a bug.
pub(crate) async fn save(store: &dyn Store, doc: &mut Doc, now: Timestamp) -> StoreResult<()> {
    doc.updated_at = now;
    match store.put_doc(doc, Some(doc.version)).await? {
        DocWrite::Written(v) => {
            doc.version = v;
            Ok(())
        }
        DocWrite::Conflict => Err(StoreError::Contention(format!(
            "execution {} changed under its lease",
            doc.id
        ))),
    }
}

/// Where an execution stands after a drive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    Succeeded,
    Failed(String),
    /// Still waiting on Vercel; the next evaluate run continues.
    InProgress,
    /// Another run holds the lease.
    Busy,
}

/// Advances an execution as far as it can go now (code steps only; see [`drive_with`]).
pub async fn drive(
    store: &dyn Store,
    vercel: Option<&dyn VercelApi>,
    clock: &dyn Clock,
    id: &str,
    limits: Limits,
) -> StoreResult<Progress> {
    drive_with(
        store,
        Deps {
            vercel,
            app_db: None,
            sealer: None,
        },
        clock,
        id,
        limits,
    )
    .await
}

/// Advances an execution as far as it can go now.
pub async fn drive_with(
    store: &dyn Store,
    deps: Deps<'_>,
    clock: &dyn Clock,
    id: &str,
    limits: Limits,
) -> StoreResult<Progress> {
    let lease = format!("exec:{id}");
    let ttl = limits.wait_budget + Duration::from_secs(60);
    match run_exclusive(
        store,
        clock,
        &lease,
        ttl,
        drive_locked(store, deps, clock, id, limits),
    )
    .await?
    {
        LeaseOutcome::Ran(r) => r,
        LeaseOutcome::Busy => Ok(Progress::Busy),
    }
}

async fn drive_locked(
    store: &dyn Store,
    deps: Deps<'_>,
    clock: &dyn Clock,
    id: &str,
    limits: Limits,
) -> StoreResult<Progress> {
    let mut doc = store
        .get_doc(EXECUTION_KIND, id)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("execution {id}")))?;
    match doc.status.as_str() {
        "succeeded" => return Ok(Progress::Succeeded),
        "failed" => {
            return Ok(Progress::Failed(
                doc.body["error"].as_str().unwrap_or("failed").to_string(),
            ))
        }
        _ => {}
    }
    if doc.status == "pending" {
        doc.status = "running".into();
        save(store, &mut doc, clock.now()).await?;
    }
    let steps = doc.body["steps"].as_array().map_or(0, Vec::len);
    for i in 0..steps {
        if doc.body["steps"][i]["status"] == "succeeded" {
            continue;
        }
        let outcome = match doc.body["steps"][i]["kind"].as_str() {
            Some("database") => {
                crate::execute_db::run(store, deps.app_db, clock, &mut doc, i).await?
            }
            Some("config") => run_config_step(store, deps, clock, &mut doc, i).await?,
            _ => run_code_step(store, deps.vercel, clock, &mut doc, i, limits).await?,
        };
        match outcome {
            StepResult::Done => {}
            StepResult::Waiting => return Ok(Progress::InProgress),
            StepResult::Failed(e) => {
                doc.status = "failed".into();
                doc.body["error"] = json!(e);
                save(store, &mut doc, clock.now()).await?;
                crate::store::audit(
                    store,
                    clock.now(),
                    "executor",
                    "rollback_failed",
                    id,
                    json!({"error": e, "step": i}),
                )
                .await?;
                return Ok(Progress::Failed(e));
            }
        }
    }
    let env = doc.body["environment"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let target = doc.body["target_deployment"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let dry_run = doc.body["dry_run"].as_bool().unwrap_or(true);
    if !dry_run {
        // Vercel pins production to the target; mirror it so detection follows the rollback.
        registry::set_current(store, &env, &target, clock.now(), true).await?;
    }
    doc.status = "succeeded".into();
    doc.body["finished_at"] = json!(clock.now().as_millis());
    save(store, &mut doc, clock.now()).await?;
    crate::store::audit(
        store,
        clock.now(),
        "executor",
        "rollback_succeeded",
        id,
        json!({"environment": env, "target_deployment": target, "dry_run": dry_run}),
    )
    .await?;
    Ok(Progress::Succeeded)
}

/// Restores the target deployment's env-var snapshot (see [`crate::config_snapshot`]).
async fn run_config_step(
    store: &dyn Store,
    deps: Deps<'_>,
    clock: &dyn Clock,
    doc: &mut Doc,
    i: usize,
) -> StoreResult<StepResult> {
    let target = doc.body["target_deployment"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let dry_run = doc.body["dry_run"].as_bool().unwrap_or(true);
    begin_step(
        store,
        clock,
        doc,
        i,
        json!({"target_deployment": target, "dry_run": dry_run}),
    )
    .await?;
    let result = match (dry_run, deps.vercel) {
        (false, Some(api)) => {
            crate::config_snapshot::restore(store, api, deps.sealer, &target).await
        }
        _ => Ok(json!({"dry_run": true, "would_restore_snapshot_of": target})),
    };
    end_step(store, clock, doc, i, result).await
}

pub(crate) enum StepResult {
    Done,
    Waiting,
    Failed(String),
}

async fn run_code_step(
    store: &dyn Store,
    vercel: Option<&dyn VercelApi>,
    clock: &dyn Clock,
    doc: &mut Doc,
    i: usize,
    limits: Limits,
) -> StoreResult<StepResult> {
    let target = doc.body["target_deployment"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let reason = doc.body["reason"]
        .as_str()
        .unwrap_or("rollback-guard")
        .to_string();
    let dry_run = doc.body["dry_run"].as_bool().unwrap_or(true);
    let started_at = begin_step(
        store,
        clock,
        doc,
        i,
        json!({"target_deployment": target, "dry_run": dry_run}),
    )
    .await?;
    let api = match (dry_run, vercel) {
        (false, Some(api)) => api,
        _ => {
            let detail = json!({"dry_run": true, "would_call": format!("POST /v9/projects/{{project}}/rollback/{target}")});
            return end_step(store, clock, doc, i, Ok(detail)).await;
        }
    };
    // Exactly once: a rollback to the target requested since this step first started
    // (by a run that then crashed) is adopted, not repeated.
    let in_flight = match api.last_alias_request().await {
        Ok(r) => r.filter(|r| {
            r.kind == "rollback"
                && r.to_deployment == target
                && r.requested_at >= started_at - 5_000
        }),
        Err(e) => return transient(store, doc, clock, i, limits, started_at, e.to_string()).await,
    };
    if in_flight.is_none() {
        match api.request_rollback(&target, &reason).await {
            Ok(()) => {
                crate::store::audit(
                    store,
                    clock.now(),
                    "executor",
                    "vercel_rollback_requested",
                    &doc.id,
                    json!({"target_deployment": target}),
                )
                .await?
            }
            Err(crate::vercel_api::VercelError::Api {
                status,
                code,
                message,
            }) => {
                let err = format!("Vercel refused the rollback ({status} {code}): {message}");
                return end_step(store, clock, doc, i, Err(err)).await;
            }
            Err(other) => {
                return transient(store, doc, clock, i, limits, started_at, other.to_string()).await
            }
        }
    }
    let waited_from = std::time::Instant::now();
    loop {
        match api.last_alias_request().await {
            Ok(Some(r)) if r.to_deployment == target && r.job_status == "succeeded" => {
                return end_step(
                    store,
                    clock,
                    doc,
                    i,
                    Ok(json!({"job_status": r.job_status, "from_deployment": r.from_deployment})),
                )
                .await;
            }
            Ok(Some(r)) if r.to_deployment == target && r.job_status == "failed" => {
                return end_step(
                    store,
                    clock,
                    doc,
                    i,
                    Err("Vercel reported the rollback job as failed".into()),
                )
                .await;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "polling Vercel failed; will retry"),
        }
        if clock.now().as_millis() - started_at > limits.step_timeout.as_millis() as i64 {
            let err = format!(
                "Vercel did not finish the rollback within {}",
                crate::duration::format(limits.step_timeout)
            );
            return end_step(store, clock, doc, i, Err(err)).await;
        }
        if waited_from.elapsed() >= limits.wait_budget {
            return Ok(StepResult::Waiting);
        }
        tokio::time::sleep(limits.poll_every).await;
    }
}

/// Marks step `i` running (keeping the time it first started), counts the
/// attempt, saves, and audits. Returns the first start time.
pub(crate) async fn begin_step(
    store: &dyn Store,
    clock: &dyn Clock,
    doc: &mut Doc,
    i: usize,
    detail: Value,
) -> StoreResult<i64> {
    let now = clock.now();
    let step = &mut doc.body["steps"][i];
    let started_at = step["started_at"].as_i64().unwrap_or(now.as_millis());
    step["status"] = json!("running");
    step["started_at"] = json!(started_at);
    step["attempts"] = json!(step["attempts"].as_u64().unwrap_or(0) + 1);
    let kind = step["kind"].clone();
    save(store, doc, now).await?;
    let mut detail = detail;
    detail["step"] = kind;
    crate::store::audit(store, now, "executor", "step_started", &doc.id, detail).await?;
    Ok(started_at)
}

/// Records step `i`'s outcome, saves, and audits it.
pub(crate) async fn end_step(
    store: &dyn Store,
    clock: &dyn Clock,
    doc: &mut Doc,
    i: usize,
    result: Result<Value, String>,
) -> StoreResult<StepResult> {
    let now = clock.now();
    let (status, detail, out) = match result {
        Ok(d) => ("succeeded", d, StepResult::Done),
        Err(e) => ("failed", json!({"error": e}), StepResult::Failed(e)),
    };
    let step = &mut doc.body["steps"][i];
    step["status"] = json!(status);
    step["finished_at"] = json!(now.as_millis());
    step["detail"] = detail.clone();
    let kind = step["kind"].clone();
    save(store, doc, now).await?;
    crate::store::audit(
        store,
        now,
        "executor",
        &format!("step_{status}"),
        &doc.id,
        json!({"step": kind, "detail": detail}),
    )
    .await?;
    Ok(out)
}

/// A retryable failure: leave the step running for the next drive, unless it timed out.
async fn transient(
    store: &dyn Store,
    doc: &mut Doc,
    clock: &dyn Clock,
    i: usize,
    limits: Limits,
    started_at: i64,
    error: String,
) -> StoreResult<StepResult> {
    doc.body["steps"][i]["detail"] = json!({"last_error": error});
    if clock.now().as_millis() - started_at > limits.step_timeout.as_millis() as i64 {
        doc.body["steps"][i]["status"] = json!("failed");
        save(store, doc, clock.now()).await?;
        return Ok(StepResult::Failed(error));
    }
    save(store, doc, clock.now()).await?;
    Ok(StepResult::Waiting)
}

/// Executions that have not finished (for the evaluate cron to resume).
pub async fn unfinished(store: &dyn Store) -> StoreResult<Vec<String>> {
    let mut ids = Vec::new();
    for status in ["pending", "running"] {
        let filter = DocFilter {
            scope: None,
            status: Some(status.into()),
        };
        ids.extend(
            store
                .list_docs(EXECUTION_KIND, &filter, 100)
                .await?
                .into_iter()
                .map(|d| d.id),
        );
    }
    Ok(ids)
}
