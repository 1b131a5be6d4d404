//! Signed deliveries for every alert source, as each sender signs them, and
//! a test app configured with every source's secret.

use rollback_guard::flows::intake::verify::{
    sign_sha1_hex, sign_sha256_hex, sign_standard_webhooks,
};
use serde_json::json;

use super::helpers::{Backend, TestApp};

pub async fn spawn(backend: Backend) -> TestApp {
    TestApp::spawn(
        backend,
        &[
            ("SENTRY_CLIENT_SECRET", SENTRY),
            ("VERCEL_WEBHOOK_SECRET", VERCEL),
            ("VERCEL_LOG_DRAIN_SECRET", DRAIN),
            ("ALERTMANAGER_TOKEN", AM_TOKEN),
            ("GENERIC_WEBHOOK_SECRET", GENERIC),
            ("GRAFANA_WEBHOOK_SECRET", GRAFANA),
        ],
    )
    .await
}

pub const SENTRY: &str = "sentry-client-secret-1";
pub const VERCEL: &str = "vercel-webhook-secret-1";
pub const DRAIN: &str = "vercel-drain-secret-1";
pub const AM_TOKEN: &str = "alertmanager-token-0123456789";
pub const GENERIC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const GRAFANA: &str = "grafana-secret-1";

pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub fn sentry_metric_alert(action: &str) -> serde_json::Value {
    json!({
        "action": action,
        "installation": {"uuid": "7a485448-a9e2-4c85-8a3c-4f44175783c9"},
        "data": {
            "metric_alert": {
                "id": "7", "identifier": "7", "title": "High error rate", "status": 20,
                "date_started": "2026-11-25T10:00:00.000000Z", "date_detected": "2026-11-25T10:01:00.000000Z",
                "alert_rule": {"id": 42, "name": "High error rate", "aggregate": "count()", "environment": "production", "time_window": 5}
            },
            "description_title": "Critical: High error rate",
            "description_text": "120 events in the last 5 minutes",
            "web_url": "https://sentry.io/organizations/acme/alerts/rules/details/42/"
        },
        "actor": {"type": "application", "id": "sentry", "name": "Sentry"}
    })
}

/// POSTs `body` to `/api/alerts?source=…` with the given headers.
pub async fn post_signed(
    app: &TestApp,
    source: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> reqwest::Response {
    let mut req = app
        .client
        .post(app.url(&format!("/api/alerts?source={source}")));
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    req.body(body).send().await.unwrap()
}

pub async fn post_sentry(
    app: &TestApp,
    resource: &str,
    body: &serde_json::Value,
) -> reqwest::Response {
    let bytes = serde_json::to_vec(body).unwrap();
    app.client
        .post(app.url("/api/alerts?source=sentry"))
        .header("content-type", "application/json")
        .header("sentry-hook-resource", resource)
        .header("sentry-hook-timestamp", now_secs().to_string())
        .header(
            "sentry-hook-signature",
            sign_sha256_hex(SENTRY.as_bytes(), &[&bytes]),
        )
        .body(bytes)
        .send()
        .await
        .unwrap()
}

pub async fn post_vercel(app: &TestApp, body: &serde_json::Value) -> reqwest::Response {
    let bytes = serde_json::to_vec(body).unwrap();
    let sig = sign_sha1_hex(VERCEL.as_bytes(), &bytes);
    post_signed(app, "vercel", &[("x-vercel-signature", sig)], bytes).await
}

/// A log drain batch (NDJSON or a JSON array), signed with the drain secret.
pub async fn post_drain(app: &TestApp, body: &str) -> reqwest::Response {
    let sig = sign_sha1_hex(DRAIN.as_bytes(), body.as_bytes());
    post_signed(app, "logdrain", &[("x-vercel-signature", sig)], body.into()).await
}

/// A Grafana delivery signed with `x-grafana-alerting-signature`.
pub async fn post_grafana(app: &TestApp, body: Vec<u8>) -> reqwest::Response {
    let sig = sign_sha256_hex(GRAFANA.as_bytes(), &[&body]);
    post_signed(
        app,
        "grafana",
        &[("x-grafana-alerting-signature", sig)],
        body,
    )
    .await
}

pub fn vercel_event(
    kind: &str,
    delivery: &str,
    deployment: &str,
    target: Option<&str>,
    created_at: i64,
) -> serde_json::Value {
    json!({
        "type": kind, "id": delivery, "createdAt": created_at, "region": "iad1",
        "payload": {
            "team": {"id": "team_1"}, "user": {"id": "user_1"},
            "deployment": {"id": deployment, "url": format!("{deployment}.vercel.app"), "name": "shop",
                           "meta": {"githubCommitSha": format!("sha-{deployment}")}},
            "links": {"deployment": "https://vercel.com/acme/shop/x", "project": "https://vercel.com/acme/shop"},
            "target": target, "project": {"id": "prj_1"}, "plan": "pro", "regions": ["iad1"]
        }
    })
}

pub async fn post_generic(app: &TestApp, id: &str, body: &serde_json::Value) -> reqwest::Response {
    post_generic_at(app, id, now_secs(), serde_json::to_vec(body).unwrap()).await
}

/// A Standard Webhooks delivery signed for timestamp `ts` (seconds).
pub async fn post_generic_at(app: &TestApp, id: &str, ts: i64, body: Vec<u8>) -> reqwest::Response {
    let headers = [
        ("webhook-id", id.to_string()),
        ("webhook-timestamp", ts.to_string()),
        (
            "webhook-signature",
            sign_standard_webhooks(GENERIC, id, ts, &body),
        ),
    ];
    post_signed(app, "generic", &headers, body).await
}
