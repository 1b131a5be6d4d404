//! Seeding a store the way real traffic would, shared by the scenario tests:
//! deployment events through intake, per-minute traffic rollups, and cron
//! calls with the cron secret.

use rollback_guard::core::clock::Timestamp;
use rollback_guard::core::detect::window::minute_of;
use rollback_guard::flows::intake::signal::{DeploymentEvent, Signal};
use rollback_guard::store::{DeploymentState, Store};
use serde_json::json;

use super::helpers::{json, TestApp};

/// The `CRON_SECRET` the scenario tests configure.
pub const CRON: &str = "cron-secret-0123456789";

/// Records a Vercel deployment event (`kind`, e.g. `deployment.promoted`) through intake.
pub async fn deployment_event(
    store: &dyn Store,
    env: &str,
    id: &str,
    kind: &str,
    state: DeploymentState,
    at_ms: i64,
) {
    let ev = DeploymentEvent {
        id: id.into(),
        state,
        environment: env.into(),
        url: format!("{id}.vercel.app"),
        git_sha: None,
        at: Timestamp::from_millis(at_ms),
        event: kind.into(),
        meta: json!({}),
    };
    rollback_guard::flows::intake::record(
        store,
        &[Signal::Deployment(ev)],
        Timestamp::from_millis(at_ms),
    )
    .await
    .unwrap();
}

/// `id` was promoted to `env` at `at_ms`.
pub async fn deploy(store: &dyn Store, env: &str, id: &str, at_ms: i64) {
    deployment_event(
        store,
        env,
        id,
        "deployment.promoted",
        DeploymentState::Promoted,
        at_ms,
    )
    .await;
}

/// `per_minute` requests with `errors` 5xx in each minute of [from, to).
pub async fn traffic(
    store: &dyn Store,
    env: &str,
    dep: &str,
    from_ms: i64,
    to_ms: i64,
    per_minute: f64,
    errors: f64,
) {
    for m in minute_of(from_ms)..minute_of(to_ms) {
        add(store, env, dep, m, per_minute, errors).await;
    }
}

/// `requests` and `errors` in total, spread evenly over the minutes [from, to).
pub async fn traffic_total(
    store: &dyn Store,
    env: &str,
    dep: &str,
    from_ms: i64,
    to_ms: i64,
    requests: u64,
    errors: u64,
) {
    let minutes: Vec<i64> = (minute_of(from_ms)..minute_of(to_ms)).collect();
    let n = minutes.len() as u64;
    for (i, m) in minutes.iter().enumerate() {
        let i = i as u64;
        let share = |total: u64| (total * (i + 1) / n - total * i / n) as f64;
        add(store, env, dep, *m, share(requests), share(errors)).await;
    }
}

async fn add(store: &dyn Store, env: &str, dep: &str, minute: i64, requests: f64, errors: f64) {
    store
        .add_rollup(
            env,
            dep,
            minute,
            &[("requests".into(), requests), ("errors_5xx".into(), errors)],
        )
        .await
        .unwrap();
}

/// Calls a cron route with the cron secret; it must answer 200.
pub async fn cron(app: &TestApp, path: &str) -> serde_json::Value {
    let res = app
        .client
        .get(app.url(path))
        .bearer_auth(CRON)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    json(res).await
}
