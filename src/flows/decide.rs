//! What happens after a verdict, by environment policy: a critical incident
//! rolls back on its own where `approval = "auto"` (development, staging) and
//! asks the approvers where it is `required` (production). Each evaluate run
//! also expires overdue approval requests (then holds and escalates, or
//! rolls back, as configured) and resumes unfinished rollbacks. A finished
//! rollback is verified with the environment's probes, notified and audited.

use std::time::Duration;

use serde_json::{json, Value};

use crate::core::approval::quorum::State;
use crate::core::approval::token::SigningKey;
use crate::core::clock::Clock;
use crate::core::detect::verdict::Level;
use crate::core::policy::ApprovalMode;
use crate::core::policy::Policy;
use crate::flows::approval::{self as request, ApprovalView, ApproveError};
use crate::flows::evaluate::Outcome;
use crate::flows::evaluate::INCIDENT_KIND;
use crate::flows::execute::{self, Limits, Plan, Progress};
use crate::flows::notify::{Link, Message, Notifier};
use crate::integrations::vercel::VercelApi;
use crate::store::Doc;
use crate::store::{Store, StoreResult};

/// Everything a decision needs.
pub struct Ctx<'a> {
    pub store: &'a dyn Store,
    pub policy: &'a Policy,
    /// Approval-link signing keys; the first signs.
    pub signing_keys: &'a [SigningKey],
    pub vercel: Option<&'a dyn VercelApi>,
    pub notifier: &'a Notifier,
    pub clock: &'a dyn Clock,
    pub http: &'a reqwest::Client,
    /// Base URL for approval links.
    pub base_url: String,
    /// How long one call waits on Vercel before leaving the rest to the next run.
    pub wait_budget: Duration,
    /// The app's database, when `APP_DATABASE_URL` is set.
    pub app_db: Option<execute::AppDb>,
    /// Seals env-var snapshot values, when `SNAPSHOT_ENCRYPTION_KEY` is set.
    pub sealer: Option<crate::flows::config_snapshot::Sealer>,
}

impl Ctx<'_> {
    fn limits(&self) -> Limits {
        Limits {
            wait_budget: self.wait_budget,
            ..Limits::default()
        }
    }
}

/// Acts on one environment's evaluation.
pub async fn act_on(ctx: &Ctx<'_>, o: &Outcome) -> StoreResult<Option<Value>> {
    // The env-var snapshot a later rollback to this deployment restores.
    if let Some(api) = ctx.vercel {
        crate::flows::config_snapshot::take(
            ctx.store,
            api,
            ctx.sealer.as_ref(),
            &o.environment,
            &o.deployment,
            ctx.clock.now(),
        )
        .await?;
    }
    // What is applied while this deployment serves: a later rollback to it
    // reverses exactly what was applied since.
    if let Some(db) = &ctx.app_db {
        crate::flows::plan::record_applied(
            ctx.store,
            db,
            &o.environment,
            &o.deployment,
            ctx.clock.now(),
        )
        .await?;
    }
    let Some((incident_id, transition)) = &o.incident else {
        return Ok(None);
    };
    let now = ctx.clock.now();
    if *transition == "incident_opened" {
        let msg = Message {
            subject: format!(
                "[{}] incident {} ({})",
                o.environment,
                incident_id,
                o.verdict.level.as_str()
            ),
            text: o
                .verdict
                .findings
                .iter()
                .filter(|f| f.level >= Level::Warning)
                .map(|f| format!("• {}", f.summary))
                .collect::<Vec<_>>()
                .join("\n"),
            request_id: None,
            links: vec![],
            email_to: ctx.policy.channels.email_to.clone(),
            sms_to: vec![],
            idempotency_key: format!("incident/{incident_id}/opened"),
        };
        ctx.notifier
            .deliver(ctx.store, incident_id, &msg, now)
            .await?;
    }
    if o.verdict.level != Level::Critical {
        return Ok(None);
    }
    decide_incident(ctx, incident_id).await
}

/// Makes (or resumes) the decision for an open critical incident. The open
/// incident is the durable intent: every evaluate run calls this for each
/// one that has no recorded decision, so a crash or a store error at any
/// point is picked up by the next run. Each action is idempotent (one
/// approval request and one execution per incident), and the decision is
/// written on the incident once its action exists.
pub async fn decide_incident(ctx: &Ctx<'_>, incident_id: &str) -> StoreResult<Option<Value>> {
    let Some(incident) = ctx.store.get_doc(INCIDENT_KIND, incident_id).await? else {
        return Ok(None);
    };
    let b = &incident.body;
    if incident.status != "open" || b["level"] != "critical" {
        return Ok(None);
    }
    if !b["decision"].is_null() {
        // Decided before: report it, and keep driving what it started.
        let mut decision = b["decision"].clone();
        if let Some(request_id) = decision["request"].as_str() {
            if let Some(view) = request::load(ctx.store, request_id).await? {
                decision["notified_via"] = json!(notify_approvers(ctx, &view).await?);
            }
        }
        return Ok(Some(decision));
    }
    let environment = b["environment"].as_str().unwrap_or_default().to_string();
    let now = ctx.clock.now();
    let env = ctx.policy.environment(&environment);
    let requested_by = if env.approval == ApprovalMode::Auto {
        "system:auto"
    } else {
        "system"
    };
    let dry_run = ctx.vercel.is_none();
    let Some(plan) = execute::plan(
        ctx.store,
        &environment,
        incident_id,
        requested_by,
        &reason_of(&incident),
        dry_run,
    )
    .await?
    else {
        let decision = json!({"action": "none", "reason": "no rollback target"});
        record_decision(ctx, incident_id, &decision, "rollback_unavailable", json!({"reason": "no earlier deployment is known to roll back to", "environment": environment})).await?;
        return Ok(Some(decision));
    };
    match env.approval {
        ApprovalMode::Auto => {
            let id = start_execution(ctx, &plan, None).await?;
            record_decision(
                ctx,
                incident_id,
                &json!({"action": "auto_rollback", "execution_id": id}),
                "rollback_decided",
                json!({"mode": "auto", "execution_id": id}),
            )
            .await?;
            let result = drive_and_finish(ctx, &id).await?;
            Ok(Some(json!({"action": "auto_rollback", "rollback": result})))
        }
        ApprovalMode::Required => {
            if env.approvers.is_empty() {
                let decision = json!({"action": "none", "reason": "no approvers configured"});
                record_decision(
                    ctx,
                    incident_id,
                    &decision,
                    "approval_impossible",
                    json!({"reason": "no approvers configured", "environment": environment}),
                )
                .await?;
                return Ok(Some(decision));
            }
            let (plan, description) = complete_plan(ctx, &plan).await?;
            match request::open(
                ctx.store,
                ctx.signing_keys,
                &plan,
                &description,
                &env,
                &b["verdict"],
                now,
            )
            .await
            {
                Ok((view, _)) => {
                    let decision = json!({"action": "approval_requested", "request": view.id});
                    record_decision(
                        ctx,
                        incident_id,
                        &decision,
                        "rollback_decided",
                        json!({"mode": "approval", "request": view.id}),
                    )
                    .await?;
                    let channel = notify_approvers(ctx, &view).await?;
                    Ok(Some(
                        json!({"action": "approval_requested", "request": view.id, "notified_via": channel}),
                    ))
                }
                Err(ApproveError::Store(e)) => Err(e),
                Err(e) => {
                    let decision = json!({"action": "none", "reason": e.to_string()});
                    record_decision(
                        ctx,
                        incident_id,
                        &decision,
                        "approval_impossible",
                        json!({"reason": e.to_string()}),
                    )
                    .await?;
                    Ok(Some(decision))
                }
            }
        }
    }
}

fn reason_of(incident: &Doc) -> String {
    let b = &incident.body;
    let crit: Vec<&str> = b["verdict"]["findings"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|f| f["level"] == "critical")
                .filter_map(|f| f["summary"].as_str())
                .collect()
        })
        .unwrap_or_default();
    format!(
        "{} on {}: {}",
        b["environment"].as_str().unwrap_or("?"),
        b["deployment_id"].as_str().unwrap_or("?"),
        crit.join("; ")
    )
}

/// Writes the decision on the incident (once) and audits it.
async fn record_decision(
    ctx: &Ctx<'_>,
    incident_id: &str,
    decision: &Value,
    action: &str,
    detail: Value,
) -> StoreResult<()> {
    let now = ctx.clock.now();
    let first = crate::store::update_doc(ctx.store, INCIDENT_KIND, incident_id, |d| {
        if !d.body["decision"].is_null() {
            return false;
        }
        d.body["decision"] = decision.clone();
        d.updated_at = now;
        true
    })
    .await?;
    if first {
        crate::store::audit(ctx.store, now, "decider", action, incident_id, detail).await?;
    }
    Ok(())
}

/// How long to wait before re-sending approval links after `attempts` tries.
fn resend_backoff(attempts: u64) -> Duration {
    Duration::from_secs((60u64 << attempts.min(4).saturating_sub(1)).min(15 * 60))
}

/// Sends the approval links if they have not been delivered yet and a try
/// is due. The attempt is recorded before sending (so a crash re-sends after
/// the backoff rather than never), and the delivery after.
async fn notify_approvers(ctx: &Ctx<'_>, view: &ApprovalView) -> StoreResult<Option<Value>> {
    let n = &view.body["notification"];
    if n["status"] == "sent" {
        return Ok(Some(n["channel"].clone()));
    }
    let now = ctx.clock.now();
    if view.state != State::Pending || n["next_at"].as_i64().unwrap_or(0) > now.as_millis() {
        return Ok(None);
    }
    let attempt = n["attempts"].as_u64().unwrap_or(0) + 1;
    let next_at = now.plus(resend_backoff(attempt));
    request::set_field(
        ctx.store,
        &view.id,
        "notification",
        json!({"status": "sending", "attempts": attempt, "next_at": next_at.as_millis()}),
        now,
    )
    .await?;
    let links = match request::mint_links(ctx.signing_keys, view, &ctx.base_url, now) {
        Ok(l) => l,
        Err(ApproveError::Store(e)) => return Err(e),
        Err(_) => return Ok(None),
    };
    if links.is_empty() {
        return Ok(None);
    }
    let plan = request::plan_of(view, "system".into(), None, ctx.vercel.is_none());
    let mut msg = approval_message(view, &plan, links, ctx.policy);
    msg.idempotency_key = format!("approval/{}/{attempt}", view.id);
    let channel = ctx.notifier.deliver(ctx.store, &view.id, &msg, now).await?;
    if let Some(c) = &channel {
        request::set_field(
            ctx.store,
            &view.id,
            "notification",
            json!({"status": "sent", "attempts": attempt, "channel": c, "at": now.as_millis()}),
            now,
        )
        .await?;
    }
    Ok(channel.map(|c| json!(c)))
}

fn approval_message(
    view: &ApprovalView,
    plan: &Plan,
    links: Vec<(String, String)>,
    policy: &Policy,
) -> Message {
    Message {
        subject: format!("Approve rollback of {}?", plan.environment),
        text: format!(
            "{}\nServing now: {}\nRoll back to: {}\n{}\nApprovals needed: {}. The request expires at {}.",
            plan.reason,
            plan.from_deployment,
            plan.target_deployment,
            crate::core::plan::summary_lines(&view.body["plan"]).join("\n"),
            view.rules.quorum,
            view.rules.expires_at
        ),
        request_id: Some(view.id.clone()),
        links: links.into_iter().map(|(approver, url)| Link { approver, url }).collect(),
        email_to: vec![],
        sms_to: policy.channels.sms_to.clone(),
        idempotency_key: format!("approval/{}", view.id),
    }
}

/// Starts (or resumes) the execution for a plan, drives it, and on success
/// verifies and notifies.
pub async fn run_rollback(ctx: &Ctx<'_>, plan: &Plan) -> StoreResult<Value> {
    let id = start_execution(ctx, plan, None).await?;
    drive_and_finish(ctx, &id).await
}

/// [`run_rollback`] for a plan already completed and described (the one an
/// operator previewed or approvers were shown), so the execution runs and
/// records exactly that.
pub async fn run_described(ctx: &Ctx<'_>, plan: &Plan, description: Value) -> StoreResult<Value> {
    let id = start_execution(ctx, plan, Some(description)).await?;
    drive_and_finish(ctx, &id).await
}

/// Persists the execution for a plan (once per incident) and returns its id.
/// The plan is completed (migrations attributed) and described the same way
/// the preview and the approval request show it.
async fn start_execution(
    ctx: &Ctx<'_>,
    plan: &Plan,
    description: Option<Value>,
) -> StoreResult<String> {
    let id = execute::execution_id(&plan.incident_id);
    if ctx
        .store
        .get_doc(execute::EXECUTION_KIND, &id)
        .await?
        .is_some()
    {
        return Ok(id);
    }
    let (plan, description) = match description.filter(|d| !d.is_null()) {
        Some(d) => (plan.clone(), d),
        None => complete_plan(ctx, plan).await?,
    };
    Ok(
        execute::start_described(ctx.store, &plan, description, ctx.clock.now())
            .await?
            .0,
    )
}

/// The plan with its migrations attributed, and its description.
pub async fn complete_plan(ctx: &Ctx<'_>, plan: &Plan) -> StoreResult<(Plan, Value)> {
    let mut plan = plan.clone();
    let attribution =
        crate::flows::plan::attribute_migrations(ctx.store, ctx.app_db.as_ref(), &mut plan).await?;
    let description =
        crate::flows::plan::describe(ctx.store, ctx.app_db.as_ref(), &plan, &attribution).await?;
    Ok((plan, description))
}

async fn drive_and_finish(ctx: &Ctx<'_>, id: &str) -> StoreResult<Value> {
    let deps = execute::Deps {
        vercel: ctx.vercel,
        app_db: ctx.app_db.as_ref(),
        sealer: ctx.sealer.as_ref(),
    };
    let progress = execute::drive_with(ctx.store, deps, ctx.clock, id, ctx.limits()).await?;
    let (status, error) = match &progress {
        Progress::Succeeded => ("succeeded", None),
        Progress::Failed(e) => ("failed", Some(e.clone())),
        Progress::Superseded(now) => (
            "superseded",
            Some(format!(
                "production serves {now} now, not the deployment the plan was made for"
            )),
        ),
        Progress::Refused(e) => ("refused", Some(e.clone())),
        Progress::InProgress | Progress::Busy => ("in_progress", None),
    };
    let mut result = json!({"execution_id": id, "status": status, "error": error});
    if !matches!(progress, Progress::InProgress | Progress::Busy) {
        result["verification"] = finish(ctx, id, &progress).await?;
    }
    Ok(result)
}

/// Verifies a finished rollback with the environment's probes (once), records
/// the outcome on the incident, and tells people (the policy's recipients and
/// the approvers of the request, if there was one).
async fn finish(ctx: &Ctx<'_>, id: &str, progress: &Progress) -> StoreResult<Value> {
    let Some(mut doc) = ctx.store.get_doc(execute::EXECUTION_KIND, id).await? else {
        return Ok(Value::Null);
    };
    if doc.body["reported"] == true {
        return Ok(doc.body["verification"].clone());
    }
    let now = ctx.clock.now();
    let b = doc.body.clone();
    let env = b["environment"].as_str().unwrap_or_default().to_string();
    let target = b["target_deployment"].as_str().unwrap_or("?").to_string();
    let dry_run = b["dry_run"].as_bool().unwrap_or(true);
    // Verified once; everything after is resumable until `reported` is set,
    // so a crash or store error between the steps below is finished by the
    // next evaluate run instead of leaving the incident open.
    let verification = if !b["verification"].is_null() {
        b["verification"].clone()
    } else {
        let v = verify(ctx, &env, progress, now).await?;
        doc.body["verification"] = v.clone();
        if let crate::store::DocWrite::Conflict = ctx.store.put_doc(&doc, Some(doc.version)).await?
        {
            // Another run is finishing it.
            return Ok(v);
        }
        v
    };
    let healthy = verification["healthy"].as_bool();
    let action = match (progress, healthy) {
        (Progress::Succeeded, Some(true)) => "rollback_verified",
        (Progress::Succeeded, _) => "rollback_verification_failed",
        _ => "rollback_not_verified",
    };
    crate::store::audit(ctx.store, now, "decider", action, id, verification.clone()).await?;
    let (result, close) = match (progress, dry_run) {
        (Progress::Succeeded, false) => ("rolled_back", true),
        (Progress::Succeeded, true) => ("dry_run", false),
        // The deployment the incident is about no longer serves.
        (Progress::Superseded(_), _) => ("superseded", true),
        (Progress::Refused(_), _) => ("refused", false),
        _ => ("rollback_failed", false),
    };
    let incident_id = b["incident_id"].as_str().unwrap_or_default();
    crate::flows::evaluate::record_outcome(
        ctx.store,
        incident_id,
        json!({"execution_id": id, "result": result, "target_deployment": target,
                   "verified": healthy, "error": b["error"], "refused": b["refused"],
                   "superseded": b["superseded"], "at": now.as_millis()}),
        close,
        now,
    )
    .await?;
    let dry = if dry_run {
        " (dry run: nothing was called)"
    } else {
        ""
    };
    let (subject, text) = match progress {
            Progress::Succeeded => (
                format!("[{env}] rolled back to {target}{dry}"),
                match healthy {
                    Some(true) if verification["probes"].as_array().is_some_and(Vec::is_empty) => {
                        format!("Verification: no probes are configured for {env}, so nothing was checked.")
                    }
                    Some(true) => "Verification: every probe passed.".to_string(),
                    _ => format!(
                        "Verification FAILED: {}.",
                        verification["reasons"]
                            .as_array()
                            .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; "))
                            .unwrap_or_default()
                    ),
                },
            ),
            Progress::Superseded(serving) => (
                format!("[{env}] rollback superseded: production serves {serving} now"),
                format!(
                    "The rollback from {} to {target} was superseded: production serves {serving} now. Nothing was rolled back.",
                    b["from_deployment"].as_str().unwrap_or("?")
                ),
            ),
            Progress::Refused(e) => (
                format!("[{env}] rollback REFUSED before acting{dry}"),
                format!("Nothing was rolled back. {e}"),
            ),
            Progress::Failed(e) => (format!("[{env}] rollback FAILED{dry}"), format!("Error: {e}")),
            _ => (format!("[{env}] rollback {}", doc.status), String::new()),
        };
    let mut email_to = ctx.policy.channels.email_to.clone();
    if let Some(apr) = request::load(ctx.store, &format!("apr_{incident_id}")).await? {
        for a in &apr.rules.approvers {
            if a.contains('@') && !email_to.contains(a) {
                email_to.push(a.clone());
            }
        }
    }
    let msg = Message {
        subject,
        text: format!("Execution {id}: {}. {text}", doc.status),
        request_id: None,
        links: vec![],
        email_to,
        sms_to: ctx.policy.channels.sms_to.clone(),
        idempotency_key: format!("execution/{id}/finished"),
    };
    ctx.notifier.deliver(ctx.store, id, &msg, now).await?;
    mark_reported(ctx, id).await?;
    Ok(verification)
}

/// The probes' verdict on a finished rollback (skipped when nothing changed).
async fn verify(
    ctx: &Ctx<'_>,
    env: &str,
    progress: &Progress,
    now: crate::core::clock::Timestamp,
) -> StoreResult<Value> {
    Ok(match progress {
        Progress::Succeeded => {
            let probes: Vec<_> = ctx
                .policy
                .probes
                .iter()
                .filter(|p| p.environment == env)
                .cloned()
                .collect();
            let results = crate::flows::probe::run_all(ctx.store, ctx.http, &probes, now).await?;
            let ok = results.iter().all(|r| r.ok);
            let reasons: Vec<String> = results
                .iter()
                .filter(|r| !r.ok)
                .map(|r| format!("{}: {}", r.name, r.error.as_deref().unwrap_or("failed")))
                .collect();
            json!({"probes": crate::flows::probe::to_json(&results), "healthy": ok, "reasons": reasons, "checked_at": now.as_millis()})
        }
        Progress::Superseded(serving) => {
            json!({"skipped": format!("superseded: production serves {serving}")})
        }
        Progress::Refused(e) => json!({"skipped": format!("refused before acting: {e}")}),
        _ => json!({"skipped": "rollback failed"}),
    })
}

async fn mark_reported(ctx: &Ctx<'_>, id: &str) -> StoreResult<()> {
    crate::store::update_doc(ctx.store, execute::EXECUTION_KIND, id, |d| {
        d.body["reported"] = json!(true);
        true
    })
    .await?;
    Ok(())
}

/// Drives every recorded intent to an end: expires overdue approvals, then
/// decides open critical incidents that have no decision yet, re-sends
/// undelivered approval links, starts the rollback of approved requests
/// (and of expired ones whose policy says so) that have no execution, and
/// resumes unfinished or unverified executions.
pub async fn housekeeping(ctx: &Ctx<'_>) -> StoreResult<Value> {
    let now = ctx.clock.now();
    request::expire_due(ctx.store, now).await?;
    let mut decided = Vec::new();
    let open = crate::store::DocFilter {
        scope: None,
        status: Some("open".into()),
    };
    for incident in ctx.store.list_docs(INCIDENT_KIND, &open, 200).await? {
        if incident.body["level"] == "critical" && incident.body["decision"].is_null() {
            if let Some(d) = decide_incident(ctx, &incident.id).await? {
                decided.push(json!({"incident": incident.id, "decision": d}));
            }
        }
    }
    let mut notified = Vec::new();
    for view in request::in_state(ctx.store, State::Pending, 200).await? {
        if view.body["notification"]["status"] != "sent" {
            if let Some(c) = notify_approvers(ctx, &view).await? {
                notified.push(json!({"request": view.id, "via": c}));
            }
        }
    }
    let mut started = Vec::new();
    for view in request::in_state(ctx.store, State::Approved, 50).await? {
        if let Some(r) = act_on_decided(ctx, &view, format!("approval:{}", view.id), None).await? {
            started.push(json!({"request": view.id, "rollback": r}));
        }
    }
    let mut expired = Vec::new();
    for view in request::in_state(ctx.store, State::Expired, 50).await? {
        let b = &view.body;
        let outcome = if b["on_timeout"] == "rollback" {
            let reason = format!(
                "approval timed out; policy rolls back. {}",
                b["reason"].as_str().unwrap_or("")
            );
            act_on_decided(ctx, &view, format!("timeout:{}", view.id), Some(reason)).await?
        } else if b["escalated"].is_null() {
            let msg = Message {
                subject: format!("ESCALATION: nobody decided on rolling back {}", b["environment"].as_str().unwrap_or("?")),
                text: format!("Approval request {} expired without a decision. Production was NOT rolled back. {}", view.id, b["reason"].as_str().unwrap_or("")),
                request_id: None,
                links: vec![],
                email_to: ctx.policy.channels.email_to.clone(),
                sms_to: ctx.policy.channels.sms_to.clone(),
                idempotency_key: format!("approval/{}/expired", view.id),
            };
            let via = ctx.notifier.deliver(ctx.store, &view.id, &msg, now).await?;
            request::set_field(
                ctx.store,
                &view.id,
                "escalated",
                json!({"at": now.as_millis(), "via": via}),
                now,
            )
            .await?;
            Some(json!({"notified_via": via}))
        } else {
            None
        };
        if let Some(outcome) = outcome {
            expired.push(
                json!({"request": view.id, "on_timeout": b["on_timeout"], "outcome": outcome}),
            );
        }
    }
    let mut resumed = Vec::new();
    for id in execute::unfinished(ctx.store).await? {
        resumed.push(drive_and_finish(ctx, &id).await?);
    }
    for id in execute::unreported(ctx.store).await? {
        resumed.push(drive_and_finish(ctx, &id).await?);
    }
    Ok(
        json!({"decided": decided, "notified": notified, "started_rollbacks": started,
              "expired_approvals": expired, "resumed_rollbacks": resumed}),
    )
}

/// Starts the rollback a decided request stands for, unless its execution
/// exists already. `None` when there was nothing to start.
async fn act_on_decided(
    ctx: &Ctx<'_>,
    view: &ApprovalView,
    requested_by: String,
    reason: Option<String>,
) -> StoreResult<Option<Value>> {
    let incident = view.body["incident_id"].as_str().unwrap_or_default();
    let id = execute::execution_id(incident);
    if ctx
        .store
        .get_doc(execute::EXECUTION_KIND, &id)
        .await?
        .is_some()
    {
        return Ok(None);
    }
    let plan = request::plan_of(view, requested_by, reason, ctx.vercel.is_none());
    Ok(Some(
        run_described(ctx, &plan, view.body["plan"].clone()).await?,
    ))
}
