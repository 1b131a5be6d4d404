//! The one contract every step of an execution follows. A step module
//! (`code`, `config`, `database`) exposes
//! `run(cx: &StepCtx, doc: &mut Doc, i: usize) -> StoreResult<StepResult>`:
//! it calls [`begin_step`] first (persisted and audited before anything
//! acts), then [`end_step`] with its outcome, or returns
//! [`StepResult::Waiting`] to be resumed by the next drive.

use serde_json::{json, Value};

use super::{save, Deps, Limits};
use crate::core::clock::Clock;
use crate::store::{Doc, Store, StoreResult};

/// What a step may use.
pub(crate) struct StepCtx<'a> {
    pub store: &'a dyn Store,
    pub deps: Deps<'a>,
    pub clock: &'a dyn Clock,
    pub limits: Limits,
}

/// How a step ended this time.
pub(crate) enum StepResult {
    Done,
    Waiting,
    Failed(String),
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
pub(crate) async fn transient(
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
