//! What happens after a verdict, by environment policy: a critical incident
//! rolls back on its own where `approval = "auto"` (development, staging) and
//! asks the approvers where it is `required` (production). Each evaluate run
//! also expires overdue approval requests (then holds and escalates, or
//! rolls back, as configured) and resumes unfinished rollbacks. A finished
//! rollback is verified with the environment's probes, notified and audited.

use std::time::Duration;

use serde_json::{json, Value};

use crate::core::approval::token::SigningKey;
use crate::core::clock::Clock;
use crate::core::detect::verdict::Level;
use crate::core::policy::ApprovalMode;
use crate::core::policy::Policy;
use crate::flows::approval::{self as request, ApprovalView, ApproveError};
use crate::flows::evaluate::{verdict_json, Outcome};
use crate::flows::execute::{self, Limits, Plan, Progress};
use crate::flows::notify::{Link, Message, Notifier};
use crate::integrations::vercel::VercelApi;
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

fn reason(o: &Outcome) -> String {
    let crit: Vec<&str> = o
        .verdict
        .findings
        .iter()
        .filter(|f| f.level == Level::Critical)
        .map(|f| f.summary.as_str())
        .collect();
    format!("{} on {}: {}", o.environment, o.deployment, crit.join("; "))
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
    if o.verdict.level != Level::Critical
        || !matches!(*transition, "incident_opened" | "incident_escalated")
    {
        return Ok(None);
    }
    let env = ctx.policy.environment(&o.environment);
    let requested_by = if env.approval == ApprovalMode::Auto {
        "system:auto"
    } else {
        "system"
    };
    let dry_run = ctx.vercel.is_none();
    let Some(plan) = execute::plan(
        ctx.store,
        &o.environment,
        incident_id,
        requested_by,
        &reason(o),
        dry_run,
    )
    .await?
    else {
        crate::store::audit(ctx.store, now, "decider", "rollback_unavailable", incident_id, json!({"reason": "no earlier deployment is known to roll back to", "environment": o.environment})).await?;
        return Ok(Some(
            json!({"action": "none", "reason": "no rollback target"}),
        ));
    };
    match env.approval {
        ApprovalMode::Auto => {
            let result = run_rollback(ctx, &plan).await?;
            Ok(Some(json!({"action": "auto_rollback", "rollback": result})))
        }
        ApprovalMode::Required => {
            if env.approvers.is_empty() {
                crate::store::audit(
                    ctx.store,
                    now,
                    "decider",
                    "approval_impossible",
                    incident_id,
                    json!({"reason": "no approvers configured", "environment": o.environment}),
                )
                .await?;
                return Ok(Some(
                    json!({"action": "none", "reason": "no approvers configured"}),
                ));
            }
            match request::open(
                ctx.store,
                ctx.signing_keys,
                &plan,
                &env,
                &verdict_json(&o.verdict),
                &ctx.base_url,
                now,
            )
            .await
            {
                Ok((view, Some(links))) => {
                    let msg = approval_message(&view, &plan, links, ctx.policy);
                    let channel = ctx.notifier.deliver(ctx.store, &view.id, &msg, now).await?;
                    Ok(Some(
                        json!({"action": "approval_requested", "request": view.id, "notified_via": channel}),
                    ))
                }
                Ok((view, None)) => Ok(Some(
                    json!({"action": "approval_pending", "request": view.id}),
                )),
                Err(ApproveError::Store(e)) => Err(e),
                Err(e) => {
                    crate::store::audit(
                        ctx.store,
                        now,
                        "decider",
                        "approval_impossible",
                        incident_id,
                        json!({"reason": e.to_string()}),
                    )
                    .await?;
                    Ok(Some(json!({"action": "none", "reason": e.to_string()})))
                }
            }
        }
    }
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
            "{}\nServing now: {}\nRoll back to: {}\nApprovals needed: {}. The request expires at {}.",
            plan.reason,
            plan.from_deployment,
            plan.target_deployment,
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
    let mut plan = plan.clone();
    if let (Some(db), true) = (&ctx.app_db, plan.migrations.is_empty()) {
        plan.migrations = migrations_since_target(ctx, db, &plan).await?;
    }
    let (id, _) = execute::start(ctx.store, &plan, ctx.clock.now()).await?;
    drive_and_finish(ctx, &id).await
}

/// Prisma migrations applied after the target deployment was created, newest first.
async fn migrations_since_target(
    ctx: &Ctx<'_>,
    db: &execute::AppDb,
    plan: &Plan,
) -> StoreResult<Vec<String>> {
    let Some(target) = ctx.store.deployment(&plan.target_deployment).await? else {
        return Ok(Vec::new());
    };
    match crate::integrations::app_database::connect(db.url.expose()).await {
        Ok(client) => {
            match crate::integrations::app_database::applied_since(
                &client,
                target.created_at.as_millis(),
            )
            .await
            {
                Ok(names) => Ok(names),
                Err(e) => {
                    tracing::warn!(error = %e, "could not read _prisma_migrations; planning without a database step");
                    Ok(Vec::new())
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "app database unreachable; planning without a database step");
            Ok(Vec::new())
        }
    }
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
    if !doc.body["verification"].is_null() {
        return Ok(doc.body["verification"].clone());
    }
    let now = ctx.clock.now();
    let b = doc.body.clone();
    let env = b["environment"].as_str().unwrap_or_default().to_string();
    let target = b["target_deployment"].as_str().unwrap_or("?").to_string();
    let dry_run = b["dry_run"].as_bool().unwrap_or(true);
    let verification = match progress {
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
    };
    doc.body["verification"] = verification.clone();
    if let crate::store::DocWrite::Written(_) = ctx.store.put_doc(&doc, Some(doc.version)).await? {
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
    }
    Ok(verification)
}

/// Expires overdue approvals and resumes unfinished rollbacks.
pub async fn housekeeping(ctx: &Ctx<'_>) -> StoreResult<Value> {
    let now = ctx.clock.now();
    let mut expired = Vec::new();
    for view in request::expire_due(ctx.store, now).await? {
        let b = &view.body;
        let action = b["on_timeout"].as_str().unwrap_or("hold_and_escalate");
        let outcome = if action == "rollback" {
            let reason = format!(
                "approval timed out; policy rolls back. {}",
                b["reason"].as_str().unwrap_or("")
            );
            let plan = request::plan_of(
                &view,
                format!("timeout:{}", view.id),
                Some(reason),
                ctx.vercel.is_none(),
            );
            run_rollback(ctx, &plan).await?
        } else {
            let msg = Message {
                subject: format!("ESCALATION: nobody decided on rolling back {}", b["environment"].as_str().unwrap_or("?")),
                text: format!("Approval request {} expired without a decision. Production was NOT rolled back. {}", view.id, b["reason"].as_str().unwrap_or("")),
                request_id: None,
                links: vec![],
                email_to: ctx.policy.channels.email_to.clone(),
                sms_to: ctx.policy.channels.sms_to.clone(),
                idempotency_key: format!("approval/{}/expired", view.id),
            };
            json!({"notified_via": ctx.notifier.deliver(ctx.store, &view.id, &msg, now).await?})
        };
        expired.push(json!({"request": view.id, "on_timeout": action, "outcome": outcome}));
    }
    let mut resumed = Vec::new();
    for id in execute::unfinished(ctx.store).await? {
        resumed.push(drive_and_finish(ctx, &id).await?);
    }
    Ok(json!({"expired_approvals": expired, "resumed_rollbacks": resumed}))
}
