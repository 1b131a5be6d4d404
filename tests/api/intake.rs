//! `POST /api/alerts` with each source's documented payloads and signatures.

use rollback_guard::flows::intake::verify::sign_sha256_hex;
use rollback_guard::store::DocFilter;
use serde_json::json;

use super::helpers::{json, Backend, TestApp};
use super::senders::*;

#[tokio::test]
async fn sentry_metric_alerts_open_and_resolve_an_alert_state() {
    let app = spawn(Backend::Postgres).await;
    let res = post_sentry(&app, "metric_alert", &sentry_metric_alert("critical")).await;
    assert_eq!(res.status(), 202, "{}", res.text().await.unwrap());
    let firing = app
        .store()
        .list_docs(
            "alert",
            &DocFilter {
                scope: Some("production".into()),
                status: Some("firing".into()),
            },
            10,
        )
        .await
        .unwrap();
    assert_eq!(firing.len(), 1);
    assert_eq!(firing[0].id, "sentry:metric_alert:42:7");
    assert_eq!(firing[0].body["severity"], "critical");

    let res = post_sentry(&app, "metric_alert", &sentry_metric_alert("resolved")).await;
    assert_eq!(res.status(), 202);
    let doc = app
        .store()
        .get_doc("alert", "sentry:metric_alert:42:7")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(doc.status, "resolved");
}

#[tokio::test]
async fn a_tampered_or_unsigned_delivery_is_refused_and_nothing_is_stored() {
    let app = spawn(Backend::Sqlite).await;
    let bytes = serde_json::to_vec(&sentry_metric_alert("critical")).unwrap();
    let sig = sign_sha256_hex(SENTRY.as_bytes(), &[&bytes]);
    let mut tampered = bytes.clone();
    tampered[10] ^= 1;
    for (body, sig) in [
        (tampered, Some(sig.clone())),
        (bytes.clone(), None),
        (bytes.clone(), Some("00".repeat(32))),
    ] {
        let mut req = app
            .client
            .post(app.url("/api/alerts?source=sentry"))
            .header("sentry-hook-resource", "metric_alert")
            .body(body);
        if let Some(s) = sig {
            req = req.header("sentry-hook-signature", s);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 401);
        assert_eq!(json(res).await["code"], "unauthorized");
    }
    assert!(app
        .store()
        .list_docs("alert", &DocFilter::default(), 10)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_source_without_a_configured_secret_refuses_everything() {
    let app = TestApp::spawn(Backend::Sqlite, &[]).await;
    let res = post_sentry(&app, "metric_alert", &sentry_metric_alert("critical")).await;
    assert_eq!(res.status(), 401);
    assert!(json(res).await["detail"]
        .as_str()
        .unwrap()
        .contains("SENTRY_CLIENT_SECRET"));
}

#[tokio::test]
async fn unknown_or_missing_sources_and_malformed_bodies_are_400() {
    let app = spawn(Backend::Sqlite).await;
    let res = app
        .client
        .post(app.url("/api/alerts?source=pagerduty"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(json(res).await["code"], "unknown_source");
    let res = app
        .client
        .post(app.url("/api/alerts"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(json(res).await["code"], "missing_source");
    let res = post_sentry(&app, "metric_alert", &json!({"action": "critical"})).await;
    assert_eq!(res.status(), 400);
    let body = json(res).await;
    assert_eq!(body["code"], "malformed_payload");
    assert!(body["detail"].as_str().unwrap().contains("data"), "{body}");
}

#[tokio::test]
async fn duplicate_deliveries_are_accepted_once() {
    let app = spawn(Backend::Redis).await;
    let batch = json!({"environment": "production", "deployment_id": "dpl_a", "at": "2026-11-25T10:00:30Z",
                       "metrics": {"requests": 100, "errors_5xx": 7}});
    assert_eq!(post_generic(&app, "msg_1", &batch).await.status(), 202);
    let again = post_generic(&app, "msg_1", &batch).await;
    assert_eq!(again.status(), 200);
    assert_eq!(json(again).await["status"], "duplicate");
    assert_eq!(post_generic(&app, "msg_2", &batch).await.status(), 202);
    let minute = 1_795_600_800_000i64 / 60_000;
    let rows = app
        .store()
        .rollups("production", "dpl_a", minute, minute + 1)
        .await
        .unwrap();
    let requests = rows.iter().find(|r| r.name == "requests").unwrap().value;
    assert_eq!(requests, 200.0, "two distinct deliveries, one duplicate");
}

#[tokio::test]
async fn generic_metrics_fill_rollups_including_latency_and_custom_counters() {
    let app = spawn(Backend::Sqlite).await;
    let batch = json!({"environment": "production", "deployment_id": "dpl_g", "at": "2026-11-25T10:00:00Z",
        "metrics": {"requests": 3, "errors_5xx": 1, "db_errors": 2, "memory_pct": 77.5,
                    "latency_ms": [10, 20, 900], "custom": {"checkout_failed": 1}},
        "alerts": [{"name": "Queue backlog", "severity": "critical", "fingerprint": "queue"}]});
    let res = post_generic(&app, "msg_g", &batch).await;
    assert_eq!(res.status(), 202);
    assert_eq!(json(res).await["signals"], 2);
    let minute = 1_795_600_800_000i64 / 60_000;
    let w = rollback_guard::core::detect::window::Window::from_rows(
        &app.store()
            .rollups("production", "dpl_g", minute, minute + 1)
            .await
            .unwrap(),
    );
    assert_eq!((w.requests, w.errors_5xx, w.db_errors), (3, 1, 2));
    assert_eq!(w.memory_max_pct, Some(77.5));
    assert_eq!(w.latency.count(), 3);
    assert_eq!(w.custom["checkout_failed"], 1.0);
    assert_eq!(
        app.store()
            .get_doc("alert", "generic:queue")
            .await
            .unwrap()
            .unwrap()
            .status,
        "firing"
    );

    let bad = json!({"metrics": {"requests": 1, "errors_5xx": 5}});
    let res = post_generic(&app, "msg_bad", &bad).await;
    assert_eq!(res.status(), 400);
    let bad = json!({"metrix": {}});
    assert_eq!(post_generic(&app, "msg_bad2", &bad).await.status(), 400);
}

#[tokio::test]
async fn generic_deliveries_with_stale_timestamps_are_refused() {
    let app = spawn(Backend::Sqlite).await;
    let bytes = br#"{"metrics": {"requests": 1}}"#.to_vec();
    let res = post_generic_at(&app, "msg_old", now_secs() - 3600, bytes).await;
    assert_eq!(res.status(), 401);
    assert!(json(res).await["detail"]
        .as_str()
        .unwrap()
        .contains("tolerance"));
}

#[tokio::test]
async fn vercel_deployment_events_maintain_the_registry_and_rollbacks_pin_production() {
    let app = spawn(Backend::Postgres).await;
    let s = app.store().clone();
    // Recent events (Vercel's createdAt, ms): a replay window refuses old ones.
    let t0 = (now_secs() - 600) * 1000;
    for (kind, delivery, dep, at) in [
        ("deployment.created", "d1", "dpl_1", t0 + 1_000),
        ("deployment.succeeded", "d2", "dpl_1", t0 + 2_000),
        ("deployment.created", "d3", "dpl_2", t0 + 3_000),
        ("deployment.succeeded", "d4", "dpl_2", t0 + 4_000),
    ] {
        let res = post_vercel(
            &app,
            &vercel_event(kind, delivery, dep, Some("production"), at),
        )
        .await;
        assert_eq!(res.status(), 202, "{kind}");
    }
    let cur = rollback_guard::flows::registry::current(s.as_ref(), "production")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            cur.deployment_id.as_str(),
            cur.previous_id.as_deref(),
            cur.pinned
        ),
        ("dpl_2", Some("dpl_1"), false)
    );
    assert_eq!(
        s.deployment("dpl_2")
            .await
            .unwrap()
            .unwrap()
            .git_sha
            .as_deref(),
        Some("sha-dpl_2")
    );

    // Vercel accepts a rollback to dpl_1: production is pinned there.
    assert_eq!(
        post_vercel(
            &app,
            &vercel_event(
                "deployment.rollback",
                "d5",
                "dpl_1",
                Some("production"),
                t0 + 5_000,
            )
        )
        .await
        .status(),
        202
    );
    let cur = rollback_guard::flows::registry::current(s.as_ref(), "production")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((cur.deployment_id.as_str(), cur.pinned), ("dpl_1", true));
    assert_eq!(
        s.deployment("dpl_2").await.unwrap().unwrap().state.as_str(),
        "rolled_back"
    );

    // A new build while pinned stays staged; a promotion moves production.
    post_vercel(
        &app,
        &vercel_event(
            "deployment.succeeded",
            "d6",
            "dpl_3",
            Some("production"),
            t0 + 6_000,
        ),
    )
    .await;
    assert_eq!(
        rollback_guard::flows::registry::current(s.as_ref(), "production")
            .await
            .unwrap()
            .unwrap()
            .deployment_id,
        "dpl_1"
    );
    post_vercel(
        &app,
        &vercel_event(
            "deployment.promoted",
            "d7",
            "dpl_3",
            Some("production"),
            t0 + 7_000,
        ),
    )
    .await;
    let cur = rollback_guard::flows::registry::current(s.as_ref(), "production")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            cur.deployment_id.as_str(),
            cur.previous_id.as_deref(),
            cur.pinned
        ),
        ("dpl_3", Some("dpl_1"), false)
    );

    // Previews never touch production.
    post_vercel(
        &app,
        &vercel_event("deployment.succeeded", "d8", "dpl_p", None, t0 + 8_000),
    )
    .await;
    assert_eq!(
        rollback_guard::flows::registry::current(s.as_ref(), "preview")
            .await
            .unwrap()
            .unwrap()
            .deployment_id,
        "dpl_p"
    );
    assert_eq!(
        rollback_guard::flows::registry::current(s.as_ref(), "production")
            .await
            .unwrap()
            .unwrap()
            .deployment_id,
        "dpl_3"
    );

    // Redelivery of the same webhook id is a no-op; every event was audited once.
    let again = post_vercel(
        &app,
        &vercel_event(
            "deployment.promoted",
            "d7",
            "dpl_3",
            Some("production"),
            t0 + 7_000,
        ),
    )
    .await;
    assert_eq!(again.status(), 200);
    let audit = s.audit_after(0, 100).await.unwrap();
    assert_eq!(
        audit
            .iter()
            .filter(|r| r.entry.action == "deployment_event")
            .count(),
        8
    );
}

#[tokio::test]
async fn log_drain_batches_count_requests_once_and_crashes_as_errors() {
    let app = spawn(Backend::Sqlite).await;
    let t = 1_795_600_800_000i64;
    let lines = [
        json!({"id": "1", "deploymentId": "dpl_d", "source": "lambda", "host": "shop.vercel.app", "timestamp": t, "projectId": "prj_1", "level": "info", "requestId": "r1", "statusCode": 200, "proxy": {"statusCode": 200, "path": "/", "method": "GET"}}),
        json!({"id": "2", "deploymentId": "dpl_d", "source": "lambda", "host": "shop.vercel.app", "timestamp": t + 5, "projectId": "prj_1", "level": "error", "requestId": "r1", "message": "log line of the same request"}),
        json!({"id": "3", "deploymentId": "dpl_d", "source": "lambda", "host": "shop.vercel.app", "timestamp": t + 10, "projectId": "prj_1", "level": "error", "requestId": "r2", "statusCode": -1, "proxy": {"statusCode": 502}}),
        json!({"id": "4", "deploymentId": "dpl_d", "source": "edge", "host": "shop.vercel.app", "timestamp": t + 20, "projectId": "prj_1", "level": "info", "requestId": "r3", "proxy": {"statusCode": 503}}),
        json!({"id": "5", "deploymentId": "dpl_d", "source": "static", "host": "shop.vercel.app", "timestamp": t + 30, "projectId": "prj_1", "level": "info", "requestId": "r4", "proxy": {"statusCode": 304}}),
    ];
    let ndjson: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let res = post_drain(&app, &ndjson).await;
    assert_eq!(res.status(), 202);
    let answer = json(res).await;
    let minute = t / 60_000;
    // Unknown deployment and no environment field: counted under "unknown"
    // (nowhere that is evaluated) and reported, not guessed to be production.
    let reasons: Vec<&str> = answer["unmapped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        ["no_environment", "unregistered_deployment"],
        "{answer}"
    );
    let w = rollback_guard::core::detect::window::Window::from_rows(
        &app.store()
            .rollups("unknown", "dpl_d", minute, minute + 1)
            .await
            .unwrap(),
    );
    assert_eq!((w.requests, w.errors_5xx), (4, 2));
    assert!(app
        .store()
        .rollups("production", "dpl_d", minute, minute + 1)
        .await
        .unwrap()
        .is_empty());

    // The same batch as a JSON array is accepted too (it is a different body, so not a duplicate).
    let array = serde_json::to_string(&lines).unwrap();
    let res = post_drain(&app, &array).await;
    assert_eq!(res.status(), 202);
}

#[tokio::test]
async fn grafana_signed_payloads_are_accepted() {
    let app = spawn(Backend::Sqlite).await;
    let body = serde_json::to_vec(&json!({
        "receiver": "guard", "status": "firing", "orgId": 1, "state": "alerting", "title": "[FIRING:1] HighLatency", "message": "",
        "version": "1", "groupKey": "{}:{alertname=\"HighLatency\"}", "truncatedAlerts": 0,
        "alerts": [{"status": "firing", "labels": {"alertname": "HighLatency", "severity": "critical", "environment": "production"},
                    "annotations": {"summary": "p95 over 2s"}, "startsAt": "2026-11-25T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "http://grafana/alerting/1", "fingerprint": "c6eadffa33f6c6e1", "values": {"A": 2.3}, "valueString": "A=2.3"}]
    }))
    .unwrap();
    let res = post_grafana(&app, body).await;
    assert_eq!(res.status(), 202);
    let doc = app
        .store()
        .get_doc("alert", "grafana:c6eadffa33f6c6e1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (doc.scope.as_str(), doc.status.as_str()),
        ("production", "firing")
    );
}

#[tokio::test]
async fn a_store_outage_answers_503_so_the_sender_retries() {
    use rollback_guard::integrations::clock::SystemClock;
    use rollback_guard::runtime::app::App;
    let cfg = super::helpers::config(&[
        ("DATABASE_URL", "postgres://guard@127.0.0.1:1/app"),
        ("ALERTMANAGER_TOKEN", AM_TOKEN),
    ]);
    let app = TestApp::serve(App::new(Ok(cfg), std::sync::Arc::new(SystemClock))).await;
    let body = json!({"version": "4", "status": "firing", "groupKey": "g", "alerts": [{"status": "firing", "labels": {"alertname": "X"}, "fingerprint": "f1"}]});
    let res = post_alertmanager(&app, &body).await;
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "5");
    assert_eq!(json(res).await["code"], "store_unavailable");
}

#[tokio::test]
async fn drain_endpoints_echo_the_vercel_verify_token() {
    let app = TestApp::spawn(Backend::Sqlite, &[("VERCEL_DRAIN_VERIFY", "verify-me-123")]).await;
    let res = app.get("/api/alerts").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-vercel-verify"], "verify-me-123");
    // Refusals carry it too, so the check passes before any secret is set up.
    let res = app
        .client
        .post(app.url("/api/alerts?source=logdrain"))
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["x-vercel-verify"], "verify-me-123");
}

#[tokio::test]
async fn a_staging_target_is_the_staging_environment() {
    let app = spawn(Backend::Sqlite).await;
    let at = (now_secs() - 60) * 1000;
    let res = post_vercel(
        &app,
        &vercel_event("deployment.succeeded", "s1", "dpl_s", Some("staging"), at),
    )
    .await;
    assert_eq!(res.status(), 202);
    let d = app.store().deployment("dpl_s").await.unwrap().unwrap();
    assert_eq!(d.environment, "staging");
    let cur = rollback_guard::flows::registry::current(app.store().as_ref(), "staging")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cur.deployment_id, "dpl_s");
}

#[tokio::test]
async fn an_older_promotion_delivered_late_does_not_move_production_back() {
    let app = spawn(Backend::Sqlite).await;
    let t0 = (now_secs() - 600) * 1000;
    for (delivery, dep, at) in [("p1", "dpl_1", t0), ("p2", "dpl_2", t0 + 60_000)] {
        let ev = vercel_event("deployment.promoted", delivery, dep, Some("production"), at);
        assert_eq!(post_vercel(&app, &ev).await.status(), 202);
    }
    // dpl_1's promotion again, as a late redelivery under a new id, older than dpl_2's.
    let late = vercel_event(
        "deployment.promoted",
        "p1-late",
        "dpl_1",
        Some("production"),
        t0 + 1_000,
    );
    assert_eq!(post_vercel(&app, &late).await.status(), 202);
    let cur = rollback_guard::flows::registry::current(app.store().as_ref(), "production")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (cur.deployment_id.as_str(), cur.previous_id.as_deref()),
        ("dpl_2", Some("dpl_1"))
    );
}

#[tokio::test]
async fn a_captured_vercel_webhook_replayed_after_the_dedupe_window_is_refused() {
    let app = spawn(Backend::Sqlite).await;
    let day_and_hour_ago = (now_secs() - 25 * 3600) * 1000;
    let old = vercel_event(
        "deployment.promoted",
        "r1",
        "dpl_old",
        Some("production"),
        day_and_hour_ago,
    );
    let res = post_vercel(&app, &old).await;
    assert_eq!(res.status(), 401);
    let body = json(res).await;
    assert_eq!(body["code"], "unauthorized");
    assert!(
        body["detail"].as_str().unwrap().contains("older than"),
        "{body}"
    );
    assert!(app.store().deployment("dpl_old").await.unwrap().is_none());
    assert!(
        rollback_guard::flows::registry::current(app.store().as_ref(), "production")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn extreme_timestamps_are_refused_not_panicked_on() {
    let app = spawn(Backend::Sqlite).await;
    for ts in [i64::MIN, i64::MAX, -1] {
        let res = post_generic_at(&app, "msg_extreme", ts, br#"{"metrics": {}}"#.to_vec()).await;
        assert_eq!(res.status(), 401, "timestamp {ts}");
        assert!(json(res).await["detail"]
            .as_str()
            .unwrap()
            .contains("tolerance"));
    }
}

/// POSTs an Alertmanager webhook body with the configured token.
async fn post_alertmanager(app: &TestApp, body: &serde_json::Value) -> reqwest::Response {
    app.client
        .post(app.url("/api/alerts?source=alertmanager"))
        .bearer_auth(AM_TOKEN)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn alertmanager(app: &TestApp, labels: serde_json::Value) -> serde_json::Value {
    let body = json!({"version": "4", "status": "firing", "groupKey": "g", "receiver": "guard",
        "alerts": [{"status": "firing", "labels": labels, "annotations": {},
                    "startsAt": "2026-11-25T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                    "fingerprint": format!("f{}", rand_suffix())}]});
    let res = post_alertmanager(app, &body).await;
    assert_eq!(res.status(), 202);
    json(res).await
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[tokio::test]
async fn signals_that_count_nowhere_are_reported_in_the_answer_health_and_the_dashboard() {
    let app = TestApp::spawn(
        Backend::Sqlite,
        &[
            ("ALERTMANAGER_TOKEN", AM_TOKEN),
            ("GENERIC_WEBHOOK_SECRET", GENERIC),
            ("OPERATOR_TOKEN", "operator-token-0123456789"),
        ],
    )
    .await;
    // No environment label, no policy default: stored under "unknown", reported.
    let answer = alertmanager(
        &app,
        json!({"alertname": "DiskFull", "severity": "critical"}),
    )
    .await;
    assert_eq!(
        answer["unmapped"][0]["reason"], "no_environment",
        "{answer}"
    );
    assert_eq!(answer["unmapped"][0]["signal"], "DiskFull", "{answer}");
    // Labelled, it maps.
    let answer = alertmanager(&app, json!({"alertname": "DiskFull", "env": "production"})).await;
    assert_eq!(answer["unmapped"], json!([]), "{answer}");
    // Metrics for a deployment Vercel never reported.
    let res = post_generic(
        &app,
        "msg_unreg",
        &json!({"environment": "production", "deployment_id": "dpl_ghost", "metrics": {"requests": 10}}),
    )
    .await;
    assert_eq!(res.status(), 202);
    let answer = json(res).await;
    assert_eq!(
        answer["unmapped"][0]["reason"], "unregistered_deployment",
        "{answer}"
    );
    assert!(answer["unmapped"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("Vercel deployment webhooks"));

    let health = json(app.get("/api/health").await).await;
    assert_eq!(
        health["intake"]["unmapped_last_24h"],
        json!({"alertmanager:no_environment": 1, "generic:unregistered_deployment": 1}),
        "{health}"
    );
    let page = app
        .client
        .get(app.url("/api/dashboard"))
        .bearer_auth("operator-token-0123456789")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("Signals that counted nowhere (24 h)"),
        "{page}"
    );
    assert!(
        page.contains("<td>alertmanager:no_environment</td><td>1</td>"),
        "{page}"
    );
}

#[tokio::test]
async fn a_policy_default_environment_maps_signals_that_name_none() {
    let app = TestApp::spawn(
        Backend::Sqlite,
        &[
            ("ALERTMANAGER_TOKEN", AM_TOKEN),
            (
                "ROLLBACK_GUARD_POLICY_TOML",
                "[signals]\ndefault_environment = \"production\"\n",
            ),
        ],
    )
    .await;
    let answer = alertmanager(&app, json!({"alertname": "DiskFull"})).await;
    assert_eq!(answer["unmapped"], json!([]), "{answer}");
    let alerts = app
        .store()
        .list_docs("alert", &DocFilter::default(), 10)
        .await
        .unwrap();
    assert_eq!(alerts[0].scope, "production");
}

/// Concurrent deliveries are committed together (group commit) and each is
/// answered after its batch is durable: every distinct delivery is recorded
/// exactly once and every repeat is a duplicate, however they interleave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deliveries_are_recorded_once_each_through_group_commit() {
    let app = std::sync::Arc::new(spawn(Backend::Postgres).await);
    let mut tasks = Vec::new();
    for i in 0..96usize {
        let app = app.clone();
        // Every delivery is sent twice, at once.
        let n = i % 48;
        tasks.push(tokio::spawn(async move {
            let body = json!({"version": "4", "status": "firing", "groupKey": format!("g{n}"), "receiver": "guard",
                "alerts": [{"status": "firing", "labels": {"alertname": format!("A{n}"), "environment": "production"},
                            "annotations": {}, "startsAt": "2026-11-25T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                            "fingerprint": format!("fp{n}")}]});
            post_alertmanager(&app, &body).await.status().as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 202).count(),
        48,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        48,
        "{statuses:?}"
    );
    let alerts = app
        .store()
        .list_docs("alert", &DocFilter::default(), 500)
        .await
        .unwrap();
    assert_eq!(alerts.len(), 48);
    assert!(
        alerts.iter().all(|a| a.version == 1),
        "each alert written once"
    );
}

/// Every delivery leaves a dedupe claim for 24 h; the evaluate cron deletes
/// expired ones, so the claims table does not grow forever, and a delivery
/// id seen again after its window counts as new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_evaluate_cron_prunes_expired_dedupe_claims() {
    use rollback_guard::core::clock::{ManualClock, Timestamp};
    let t0 = 1_795_600_800_000i64;
    let clock = std::sync::Arc::new(ManualClock::new(Timestamp::from_millis(t0)));
    let app = TestApp::spawn_with_clock(
        Backend::Postgres,
        &[
            ("GENERIC_WEBHOOK_SECRET", GENERIC),
            ("CRON_SECRET", super::seed::CRON),
        ],
        clock.clone(),
    )
    .await;
    let body =
        json!({"environment": "production", "deployment_id": "dpl_a", "metrics": {"requests": 10}});
    let send = |ts: i64| post_generic_at(&app, "msg_prune", ts, serde_json::to_vec(&body).unwrap());
    assert_eq!(send(t0 / 1000).await.status(), 202);
    assert_eq!(
        send(t0 / 1000).await.status(),
        200,
        "a duplicate within the window"
    );
    let report = super::seed::cron(&app, "/api/cron/evaluate").await;
    assert_eq!(report["result"]["pruned_claims"], 0, "{report}");
    // A day and a bit later the claim has expired and the cron removes it.
    clock.advance(std::time::Duration::from_secs(25 * 3600));
    let report = super::seed::cron(&app, "/api/cron/evaluate").await;
    assert!(
        report["result"]["pruned_claims"].as_u64().unwrap() >= 1,
        "{report}"
    );
    let later = (t0 + 25 * 3_600_000) / 1000;
    assert_eq!(
        send(later).await.status(),
        202,
        "the same id after its window is new"
    );
}
