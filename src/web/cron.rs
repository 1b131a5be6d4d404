//! Cron plumbing shared by `/api/cron/*`. Vercel may deliver one scheduled
//! event twice and may start a run while the previous one still works, so a
//! job runs only if (1) this minute's run was not already claimed and (2) the
//! job's lease is free. Either way the answer is 200 with what happened.

use std::future::Future;
use std::time::Duration;

use http::StatusCode;
use serde_json::{json, Value};

use crate::core::detect::window::minute_of;
use crate::runtime::app::App;
use crate::store::lease::{run_exclusive, LeaseOutcome};
use crate::store::Store;
use crate::web::error::ApiError;
use crate::web::respond::{json_response, Response};

/// Runs `job` at most once per minute and never concurrently with itself.
pub async fn run<F, Fut>(
    app: &App,
    name: &str,
    lease_ttl: Duration,
    job: F,
) -> Result<Response, ApiError>
where
    F: FnOnce(std::sync::Arc<dyn Store>) -> Fut,
    Fut: Future<Output = Result<Value, ApiError>>,
{
    let store = std::sync::Arc::clone(app.store().await?);
    let now = app.clock().now();
    let minute = minute_of(now.as_millis());
    if !store
        .claim_once(
            "cron",
            &format!("{name}:{minute}"),
            now,
            Duration::from_secs(3600),
        )
        .await?
    {
        return Ok(json_response(
            StatusCode::OK,
            &json!({"status": "skipped", "reason": "this minute's run already happened"}),
        ));
    }
    let lease = format!("cron:{name}");
    match run_exclusive(
        store.as_ref(),
        app.clock(),
        &lease,
        lease_ttl,
        job(std::sync::Arc::clone(&store)),
    )
    .await?
    {
        LeaseOutcome::Ran(Ok(result)) => Ok(json_response(
            StatusCode::OK,
            &json!({"status": "ran", "result": result}),
        )),
        LeaseOutcome::Ran(Err(e)) => {
            // Let a retry in the same minute run again.
            let _ = store
                .release_claim("cron", &format!("{name}:{minute}"))
                .await;
            Err(e)
        }
        LeaseOutcome::Busy => Ok(json_response(
            StatusCode::OK,
            &json!({"status": "skipped", "reason": "a previous run is still going"}),
        )),
    }
}

/// `GET /api/cron/probe`.
pub async fn probe(app: &App) -> Result<Response, ApiError> {
    let config = app.config()?;
    let now = app.clock().now();
    run(app, "probe", Duration::from_secs(55), |store| async move {
        let results = crate::flows::probe::run_all(
            store.as_ref(),
            app.http_client(),
            &config.policy.probes,
            now,
        )
        .await?;
        Ok(crate::flows::probe::to_json(&results))
    })
    .await
}

/// `GET /api/cron/evaluate`: verdicts, then what the policy does about them,
/// then expiring approvals and resuming rollbacks.
pub async fn evaluate(app: &App, req: &crate::web::Request) -> Result<Response, ApiError> {
    let config = app.config()?;
    let now = app.clock().now();
    let base_url = crate::web::respond::base_url(config, req);
    run(
        app,
        "evaluate",
        Duration::from_secs(280),
        |store| async move {
            let outcomes =
                crate::flows::evaluate::run(store.as_ref(), &config.policy.rules, now).await?;
            let ctx = app.decide_ctx(store.as_ref(), config, base_url);
            let mut environments = crate::flows::evaluate::to_json(&outcomes);
            for (i, o) in outcomes.iter().enumerate() {
                environments[i]["decision"] = crate::flows::decide::act_on(&ctx, o)
                    .await?
                    .unwrap_or(Value::Null);
            }
            let housekeeping = crate::flows::decide::housekeeping(&ctx).await?;
            let audit = crate::flows::audit_check::advance(store.as_ref(), now).await?;
            // Dedupe claims past their window, a bounded number per run.
            let pruned = store.prune_claims(now, PRUNE_PER_RUN).await?;
            Ok(json!({"environments": environments, "housekeeping": housekeeping, "audit_chain": audit, "pruned_claims": pruned}))
        },
    )
    .await
}

/// `GET /api/cron/backups`.
pub async fn backups(app: &App) -> Result<Response, ApiError> {
    let config = app.config()?;
    let now = app.clock().now();
    run(
        app,
        "backups",
        Duration::from_secs(280),
        |store| async move {
            Ok(crate::flows::backup::job::run(
                store.as_ref(),
                &config.backup_job(),
                app.http_client(),
                app.notifier(),
                now,
            )
            .await?)
        },
    )
    .await
}

/// Expired dedupe claims deleted per evaluate run (every minute): 7.2M a day,
/// far above what intake leaves, while each run stays short.
const PRUNE_PER_RUN: usize = 5_000;
