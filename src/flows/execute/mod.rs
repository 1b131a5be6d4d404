//! Rollback execution. A plan is a persisted document (one per incident, so a
//! rollback is never planned twice) holding ordered steps. Each step is
//! written before it starts and after it ends, under a lease, so a crash at
//! any point resumes (from the evaluate cron) to exactly one rollback: the
//! code step first asks Vercel whether a rollback to the target is already
//! in flight (the crashed run's) before requesting one.

mod code;
mod config;
pub mod database;
mod preflight;
mod step;

use std::time::Duration;

use serde_json::{json, Value};

use crate::core::clock::{Clock, Timestamp};
use crate::flows::registry;
use crate::integrations::vercel::VercelApi;
use crate::store::lease::{run_exclusive, LeaseOutcome};
use crate::store::{DeploymentState, Doc, DocFilter, DocWrite, Store, StoreError, StoreResult};
use preflight::Preflight;
use step::{StepCtx, StepResult};

/// Lease of one execution's drive; renewed every third of it while held.
pub const EXECUTION_LEASE_TTL: Duration = Duration::from_secs(30);

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
    pub url: crate::core::secret::Secret,
    pub migrations_dir: std::path::PathBuf,
    pub down_file: String,
    pub require_backup: bool,
}

/// What steps may call.
#[derive(Clone, Copy, Default)]
pub struct Deps<'a> {
    pub vercel: Option<&'a dyn VercelApi>,
    pub app_db: Option<&'a AppDb>,
    pub sealer: Option<&'a crate::flows::config_snapshot::Sealer>,
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
/// one that served before the current one, else the newest earlier one. A
/// deployment that was rolled back, errored, was canceled or never finished
/// building is never a target.
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
    let mut candidates: Vec<String> = Vec::new();
    if let Some(lkg) = store.last_known_good(environment).await? {
        candidates.push(lkg.id);
    }
    candidates.extend(current.previous_id.clone());
    candidates.extend(
        store
            .recent_deployments(environment, 50)
            .await?
            .into_iter()
            .map(|d| d.id),
    );
    let mut target = None;
    for id in candidates {
        if id == current.deployment_id {
            continue;
        }
        if let Some(d) = store.deployment(&id).await? {
            if matches!(d.state, DeploymentState::Ready | DeploymentState::Promoted) {
                target = Some(id);
                break;
            }
        }
    }
    let Some(target) = target else {
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
    start_described(store, p, Value::Null, now).await
}

/// [`start`], keeping the plan's description (see [`crate::flows::plan`]).
pub async fn start_described(
    store: &dyn Store,
    p: &Plan,
    description: Value,
    now: Timestamp,
) -> StoreResult<(String, bool)> {
    let id = execution_id(&p.incident_id);
    let has_snapshot = store
        .get_doc(
            crate::flows::config_snapshot::SNAPSHOT_KIND,
            &p.target_deployment,
        )
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
            "plan": description,
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
    /// Production no longer serves the deployment the plan was made for
    /// (it serves this one): nothing was called.
    Superseded(String),
    /// A preflight check failed before any step acted: nothing was called.
    Refused(String),
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
    // Renewed while the drive runs (see run_exclusive): a crashed run's
    // lease frees within this, so the next evaluate run can resume.
    let ttl = EXECUTION_LEASE_TTL;
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
        "superseded" => return Ok(Progress::Superseded(serving_now(&doc))),
        "refused" => return Ok(Progress::Refused(refusal(&doc))),
        _ => {}
    }
    let cx = StepCtx {
        store,
        deps,
        clock,
        limits,
    };
    if doc.status == "pending" {
        // Act only on the world the plan was made for, and only once every
        // step is known to be possible.
        let now = clock.now();
        let (status, action, detail) = match preflight::check(&cx, &doc).await? {
            Preflight::Go(detail) => {
                doc.body["preflight"] = detail;
                ("running", None, Value::Null)
            }
            Preflight::Retry(error) => {
                doc.body["preflight"] = json!({"last_error": error});
                save(store, &mut doc, now).await?;
                return Ok(Progress::InProgress);
            }
            Preflight::Superseded { serving_now } => {
                let detail = json!({"serving_now": serving_now, "planned_from": doc.body["from_deployment"], "at": now.as_millis()});
                doc.body["superseded"] = detail.clone();
                ("superseded", Some("rollback_superseded"), detail)
            }
            Preflight::Refused(reasons) => {
                doc.body["refused"] = json!(reasons);
                (
                    "refused",
                    Some("rollback_refused"),
                    json!({"reasons": reasons}),
                )
            }
        };
        doc.status = status.into();
        save(store, &mut doc, now).await?;
        if let Some(action) = action {
            crate::store::audit(store, now, "executor", action, id, detail).await?;
            return Ok(match status {
                "superseded" => Progress::Superseded(serving_now(&doc)),
                _ => Progress::Refused(refusal(&doc)),
            });
        }
    }
    let steps = doc.body["steps"].as_array().map_or(0, Vec::len);
    for i in 0..steps {
        if doc.body["steps"][i]["status"] == "succeeded" {
            continue;
        }
        let outcome = match doc.body["steps"][i]["kind"].as_str() {
            Some("database") => database::run(&cx, &mut doc, i).await?,
            Some("config") => config::run(&cx, &mut doc, i).await?,
            _ => code::run(&cx, &mut doc, i).await?,
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

/// The migrations an execution reverses, newest first.
pub(crate) fn migration_names(doc: &Doc) -> Vec<String> {
    doc.body["migrations"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Which deployment a superseded execution found serving.
fn serving_now(doc: &Doc) -> String {
    doc.body["superseded"]["serving_now"]
        .as_str()
        .unwrap_or("?")
        .to_string()
}

fn refusal(doc: &Doc) -> String {
    doc.body["refused"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_else(|| "refused".into())
}

/// Executions that have not finished (for the evaluate cron to resume).
pub async fn unfinished(store: &dyn Store) -> StoreResult<Vec<String>> {
    with_status(store, &["pending", "running"], 100, |_| true).await
}

/// Finished executions whose outcome was not reported yet (verification,
/// incident outcome, notification), for the evaluate cron to report.
pub async fn unreported(store: &dyn Store) -> StoreResult<Vec<String>> {
    with_status(
        store,
        &["succeeded", "failed", "superseded", "refused"],
        20,
        |d| d.body["reported"] != true,
    )
    .await
}

async fn with_status(
    store: &dyn Store,
    statuses: &[&str],
    limit: usize,
    keep: impl Fn(&Doc) -> bool,
) -> StoreResult<Vec<String>> {
    let mut ids = Vec::new();
    for status in statuses {
        let filter = DocFilter {
            scope: None,
            status: Some((*status).into()),
        };
        ids.extend(
            store
                .list_docs(EXECUTION_KIND, &filter, limit)
                .await?
                .into_iter()
                .filter(|d| keep(d))
                .map(|d| d.id),
        );
    }
    Ok(ids)
}
