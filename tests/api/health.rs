//! `GET /api/health` on every backend, with invalid config, and with the store down.

use std::sync::Arc;

use rollback_guard::integrations::clock::SystemClock;
use rollback_guard::runtime::app::App;

use super::helpers::{config, json, try_config, Backend, TestApp};

/// A policy the guard can act on: an approver the console channel reaches.
const READY: &str =
    "[environments.production]\napprovers = [\"alice@example.com\"]\n[channels]\norder = [\"console\"]\n";

async fn healthy_on(backend: Backend, name: &str) {
    let app = TestApp::spawn(
        backend,
        &[
            ("CRON_SECRET", "0123456789abcdef0123"),
            ("ROLLBACK_GUARD_POLICY_TOML", READY),
        ],
    )
    .await;
    let res = app.get("/api/health").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body = json(res).await;
    assert_eq!(body["status"], "ok");
    assert_eq!(body["store"]["backend"], name);
    assert_eq!(body["store"]["reachable"], true);
    assert_eq!(body["config"]["valid"], true);
    assert_eq!(body["config"]["readiness"], serde_json::json!([]));
    assert!(body["store"]["latency_ms"].as_f64().is_some());
}

#[tokio::test]
async fn health_fails_when_nobody_would_be_asked_but_intake_keeps_working() {
    let app = TestApp::spawn(
        Backend::Sqlite,
        &[
            ("CRON_SECRET", "0123456789abcdef0123"),
            ("GENERIC_WEBHOOK_SECRET", super::senders::GENERIC),
            (
                "ROLLBACK_GUARD_POLICY_TOML",
                "[environments.production]\napproval = \"required\"\napprovers = []\n",
            ),
        ],
    )
    .await;
    let res = app.get("/api/health").await;
    assert_eq!(res.status(), 503);
    let body = json(res).await;
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["config"]["valid"], true, "{body}");
    assert_eq!(body["store"]["reachable"], true, "{body}");
    let problems = body["config"]["readiness"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{body}");
    assert_eq!(
        problems[0]["key"],
        "ROLLBACK_GUARD_POLICY_TOML environments.production.approvers"
    );
    // Signals are not dropped over a missing approver.
    let res = super::senders::post_generic(
        &app,
        "msg_1",
        &serde_json::json!({"environment": "production", "deployment_id": "dpl_a",
                            "metrics": {"requests": 100, "errors_5xx": 7}}),
    )
    .await;
    assert_eq!(res.status(), 202, "{}", res.text().await.unwrap());
}

#[tokio::test]
async fn health_is_ok_on_sqlite() {
    healthy_on(Backend::Sqlite, "sqlite").await;
}

#[tokio::test]
async fn health_is_ok_on_postgres() {
    healthy_on(Backend::Postgres, "postgres").await;
}

#[tokio::test]
async fn health_is_ok_on_redis() {
    healthy_on(Backend::Redis, "redis").await;
}

#[tokio::test]
async fn health_connects_and_migrates_a_fresh_sqlite_store_lazily() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/guard.db");
    let cfg = config(&[
        ("ROLLBACK_GUARD_SQLITE_PATH", path.to_str().unwrap()),
        ("ROLLBACK_GUARD_POLICY_TOML", READY),
    ]);
    let app = TestApp::serve(App::new(Ok(cfg), Arc::new(SystemClock))).await;
    let body = json(app.get("/api/health").await).await;
    assert_eq!(body["status"], "ok", "{body}");
    assert!(path.exists(), "the SQLite file is created on first use");
    // Warnings tell the operator what is not configured yet.
    let warnings = body["config"]["warnings"].to_string();
    assert!(warnings.contains("CRON_SECRET"), "{warnings}");
}

#[tokio::test]
async fn health_reports_an_unreachable_store_as_503_without_revealing_the_host() {
    // Port 1 on loopback: nothing listens there.
    let cfg = config(&[(
        "DATABASE_URL",
        "postgres://guard:hunter2secret@127.0.0.1:1/app",
    )]);
    let app = TestApp::serve(App::new(Ok(cfg), Arc::new(SystemClock))).await;
    let res = app.get("/api/health").await;
    assert_eq!(res.status(), 503);
    let text = res.text().await.unwrap();
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["store"]["reachable"], false);
    assert_eq!(body["store"]["error"], "unavailable");
    assert!(
        !text.contains("hunter2secret") && !text.contains("127.0.0.1"),
        "{text}"
    );
}

#[tokio::test]
async fn health_lists_config_errors_by_key_and_other_routes_refuse() {
    let errs = try_config(&[
        ("CRON_SECRET", "short-secret"),
        (
            "ROLLBACK_GUARD_POLICY_TOML",
            "[rules.error_rate]\nwarning = 0.5\ncritical = 0.1\n",
        ),
    ])
    .unwrap_err();
    let app = TestApp::serve(App::new(Err(errs), Arc::new(SystemClock))).await;
    let res = app.get("/api/health").await;
    assert_eq!(res.status(), 503);
    let text = res.text().await.unwrap();
    assert!(
        !text.contains("short-secret"),
        "secret value leaked: {text}"
    );
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["config"]["valid"], false);
    let keys: Vec<&str> = body["config"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "CRON_SECRET",
            "ROLLBACK_GUARD_POLICY_TOML rules.error_rate.warning"
        ]
    );

    let res = app.get("/api/cron/probe").await;
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "60");
    assert_eq!(json(res).await["code"], "config_invalid");
}

#[tokio::test]
async fn head_health_has_status_but_no_body() {
    let app = TestApp::spawn(Backend::Sqlite, &[("ROLLBACK_GUARD_POLICY_TOML", READY)]).await;
    let res = app
        .client
        .head(app.url("/api/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.bytes().await.unwrap().is_empty());
}
