//! The `config` step: restores the target deployment's env-var snapshot
//! through the Vercel env API (see [`crate::flows::config_snapshot`]).

use serde_json::json;

use super::step::{begin_step, end_step, StepCtx, StepResult};
use crate::store::{Doc, StoreResult};

/// Restores the target deployment's env-var snapshot (see [`crate::flows::config_snapshot`]).
pub(crate) async fn run(cx: &StepCtx<'_>, doc: &mut Doc, i: usize) -> StoreResult<StepResult> {
    let StepCtx {
        store, deps, clock, ..
    } = *cx;
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
            crate::flows::config_snapshot::restore(store, api, deps.sealer, &target).await
        }
        _ => Ok(json!({"dry_run": true, "would_restore_snapshot_of": target})),
    };
    end_step(store, clock, doc, i, result).await
}
