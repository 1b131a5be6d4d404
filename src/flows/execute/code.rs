//! The `code` step: Vercel Instant Rollback to the target deployment, exactly
//! once. A rollback to the target requested since the step first started
//! (by a run that then crashed) is adopted, not repeated; then the alias job
//! is polled until it succeeds, fails, or the step times out.

use serde_json::json;

use super::step::{begin_step, end_step, transient, StepCtx, StepResult};
use crate::store::{Doc, StoreResult};

pub(crate) async fn run(cx: &StepCtx<'_>, doc: &mut Doc, i: usize) -> StoreResult<StepResult> {
    let StepCtx {
        store,
        deps,
        clock,
        limits,
    } = *cx;
    let vercel = deps.vercel;
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
            Err(crate::integrations::vercel::VercelError::Api {
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
                crate::core::duration::format(limits.step_timeout)
            );
            return end_step(store, clock, doc, i, Err(err)).await;
        }
        if waited_from.elapsed() >= limits.wait_budget {
            return Ok(StepResult::Waiting);
        }
        tokio::time::sleep(limits.poll_every).await;
    }
}
