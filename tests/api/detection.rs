//! Probing and evaluation end to end: real probe targets on loopback, a
//! manual clock, rollups → verdict → incident → audit.

use std::sync::Arc;
use std::time::Duration;

use rollback_guard::core::clock::{Clock, ManualClock, Timestamp};
use rollback_guard::core::detect::window::minute_of;
use rollback_guard::flows::intake::signal::Signal;
use rollback_guard::store::{DeploymentState, DocFilter};
use serde_json::json;

use super::helpers::{fake_upstream, Backend, Canned, TestApp};

use super::seed::{cron, deployment_event, traffic_total, CRON};
/// 2026-11-25T10:00:00Z
const T0: i64 = 1_795_600_800_000;

#[tokio::test]
async fn probes_run_concurrently_and_record_failures_per_deployment() {
    let upstream = fake_upstream(vec![
        (
            "/ok",
            Canned {
                status: 200,
                body: "all good",
                delay: Duration::ZERO,
            },
        ),
        (
            "/broken",
            Canned {
                status: 500,
                body: "boom",
                delay: Duration::ZERO,
            },
        ),
        (
            "/slow",
            Canned {
                status: 200,
                body: "late",
                delay: Duration::from_millis(1500),
            },
        ),
        (
            "/wrong-body",
            Canned {
                status: 200,
                body: "maintenance",
                delay: Duration::ZERO,
            },
        ),
    ])
    .await;
    // Nothing listens there.
    let closed = crate::helpers::free_port();
    let policy = format!(
        r#"
[[probes]]
name = "down"
url = "http://127.0.0.1:{closed}/health"
[[probes]]
name = "ok"
url = "{upstream}/ok"
body_contains = "good"
[[probes]]
name = "broken"
url = "{upstream}/broken"
[[probes]]
name = "slow"
url = "{upstream}/slow"
timeout = "300ms"
[[probes]]
name = "body"
url = "{upstream}/wrong-body"
body_contains = "good"
"#
    );
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(T0)));
    let app = TestApp::spawn_with_clock(
        Backend::Postgres,
        &[
            ("CRON_SECRET", CRON),
            ("ROLLBACK_GUARD_POLICY_TOML", &policy),
        ],
        clock.clone(),
    )
    .await;
    deployment_event(
        app.store().as_ref(),
        "production",
        "dpl_1",
        "deployment.promoted",
        DeploymentState::Promoted,
        T0 - 60_000,
    )
    .await;

    let started = std::time::Instant::now();
    let body = cron(&app, "/api/cron/probe").await;
    assert!(
        started.elapsed() < Duration::from_millis(1200),
        "probes must run concurrently with their own timeouts"
    );
    assert_eq!(body["status"], "ran");
    let results = body["result"].as_array().unwrap();
    let by_name = |n: &str| results.iter().find(|r| r["name"] == n).unwrap().clone();
    assert_eq!(by_name("ok")["ok"], true);
    assert_eq!(by_name("ok")["deployment"], "dpl_1");
    assert_eq!(by_name("broken")["error"], "status 500, expected 200");
    let down = by_name("down")["error"].as_str().unwrap().to_lowercase();
    assert!(down.contains("connection refused"), "{down}");
    assert!(by_name("slow")["error"]
        .as_str()
        .unwrap()
        .contains("timed out"));
    assert!(by_name("body")["error"]
        .as_str()
        .unwrap()
        .contains("does not contain"));

    // A duplicate delivery in the same minute does nothing.
    assert_eq!(cron(&app, "/api/cron/probe").await["status"], "skipped");

    clock.advance(Duration::from_secs(60));
    cron(&app, "/api/cron/probe").await;
    let s = app.store();
    assert_eq!(
        rollback_guard::flows::probe::consecutive_failures(s.as_ref(), "production", "dpl_1")
            .await
            .unwrap(),
        2
    );
    let minute = minute_of(T0);
    let w = rollback_guard::core::detect::window::Window::from_rows(
        &s.rollups("production", "dpl_1", minute, minute + 2)
            .await
            .unwrap(),
    );
    // Two runs: "ok" passes, "down", "broken", "slow" and "body" fail.
    assert_eq!((w.probe_ok, w.probe_fail), (2, 8));
}

#[tokio::test]
async fn a_bad_deployment_opens_a_critical_incident_with_evidence_and_a_recovery_resolves_it() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(T0)));
    let app =
        TestApp::spawn_with_clock(Backend::Postgres, &[("CRON_SECRET", CRON)], clock.clone()).await;
    let s = app.store().clone();
    // dpl_1 served the previous hour with 0.2% errors; dpl_2 went live at T0.
    deployment_event(
        s.as_ref(),
        "production",
        "dpl_1",
        "deployment.promoted",
        DeploymentState::Promoted,
        T0 - 2 * 3_600_000,
    )
    .await;
    traffic_total(
        s.as_ref(),
        "production",
        "dpl_1",
        T0 - 3_600_000,
        T0,
        12_000,
        24,
    )
    .await;
    deployment_event(
        s.as_ref(),
        "production",
        "dpl_2",
        "deployment.promoted",
        DeploymentState::Promoted,
        T0,
    )
    .await;
    traffic_total(
        s.as_ref(),
        "production",
        "dpl_2",
        T0,
        T0 + 6 * 60_000,
        1_200,
        96,
    )
    .await;

    clock.advance(Duration::from_secs(6 * 60));
    let body = cron(&app, "/api/cron/evaluate").await;
    let env = &body["result"]["environments"][0];
    assert_eq!(
        (
            env["environment"].as_str(),
            env["deployment"].as_str(),
            env["level"].as_str()
        ),
        (Some("production"), Some("dpl_2"), Some("critical"))
    );
    assert_eq!(env["incident"]["transition"], "incident_opened");
    let incident_id = env["incident"]["id"].as_str().unwrap().to_string();

    let inc = s.get_doc("incident", &incident_id).await.unwrap().unwrap();
    assert_eq!(inc.status, "open");
    let findings = inc.body["verdict"]["findings"].as_array().unwrap();
    let spike = findings
        .iter()
        .find(|f| f["rule"] == "regression_vs_previous")
        .unwrap();
    assert_eq!(spike["level"], "critical");
    assert_eq!(spike["evidence"]["baseline"]["requests"], 12_000);
    assert!(spike["evidence"]["p_value"].as_f64().unwrap() < 1e-10);
    let rate = findings.iter().find(|f| f["rule"] == "error_rate").unwrap();
    // The window is the last `sustained` (5) minutes: 5 of the 6 minutes of traffic.
    assert_eq!(rate["evidence"]["errors_5xx"], 80);
    assert_eq!(rate["evidence"]["requests"], 1_000);

    // The decision is in the audit log, and the chain verifies.
    let audit = s.audit_after(0, 1000).await.unwrap();
    rollback_guard::core::audit::verify_chain(
        (0, rollback_guard::core::audit::GENESIS_HASH),
        &audit,
    )
    .unwrap();
    assert!(audit.iter().any(|r| r.entry.action == "evaluation"
        && r.entry.subject == "dpl_2"
        && r.entry.detail["verdict"]["level"] == "critical"));
    assert!(audit
        .iter()
        .any(|r| r.entry.action == "incident_opened" && r.entry.subject == incident_id));

    // A fix: healthy traffic at the same volume (200 requests/min). The bad
    // minutes (16 errors/min) first have to leave the 5-minute window —
    // evaluations 0-3 still see enough of them to warn — then the verdict must
    // stay clean for a whole window: the first clean verdict is at evaluation
    // 4, so resolution comes at evaluation 9, not before.
    let mut resolved_at = None;
    for i in 0..12 {
        clock.advance(Duration::from_secs(60));
        let now = clock.now().as_millis();
        traffic_total(s.as_ref(), "production", "dpl_2", now - 60_000, now, 200, 0).await;
        let body = cron(&app, "/api/cron/evaluate").await;
        if body["result"]["environments"][0]["incident"]["transition"] == "incident_resolved" {
            resolved_at = Some(i);
            break;
        }
    }
    assert_eq!(resolved_at, Some(9));
    let inc = s.get_doc("incident", &incident_id).await.unwrap().unwrap();
    assert_eq!(inc.status, "resolved");
    assert!(s
        .list_docs(
            "incident",
            &DocFilter {
                scope: None,
                status: Some("open".into())
            },
            10
        )
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn low_traffic_gives_an_explicit_insufficient_data_verdict_and_no_incident() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(T0)));
    let app =
        TestApp::spawn_with_clock(Backend::Sqlite, &[("CRON_SECRET", CRON)], clock.clone()).await;
    let s = app.store().clone();
    deployment_event(
        s.as_ref(),
        "production",
        "dpl_1",
        "deployment.promoted",
        DeploymentState::Promoted,
        T0,
    )
    .await;
    traffic_total(
        s.as_ref(),
        "production",
        "dpl_1",
        T0,
        T0 + 5 * 60_000,
        30,
        6,
    )
    .await;
    clock.advance(Duration::from_secs(6 * 60));
    let body = cron(&app, "/api/cron/evaluate").await;
    assert_eq!(
        body["result"]["environments"][0]["level"],
        "insufficient_data"
    );
    assert!(body["result"]["environments"][0]["incident"].is_null());
    assert_eq!(
        s.last_known_good("production").await.unwrap(),
        None,
        "never vouched for without data"
    );
}

#[tokio::test]
async fn a_healthy_deployment_becomes_last_known_good_after_a_full_window() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(T0)));
    let app =
        TestApp::spawn_with_clock(Backend::Redis, &[("CRON_SECRET", CRON)], clock.clone()).await;
    let s = app.store().clone();
    deployment_event(
        s.as_ref(),
        "production",
        "dpl_1",
        "deployment.promoted",
        DeploymentState::Promoted,
        T0,
    )
    .await;
    traffic_total(
        s.as_ref(),
        "production",
        "dpl_1",
        T0,
        T0 + 3 * 60_000,
        3_000,
        1,
    )
    .await;
    clock.advance(Duration::from_secs(3 * 60));
    assert_eq!(
        cron(&app, "/api/cron/evaluate").await["result"]["environments"][0]["level"],
        "ok"
    );
    assert_eq!(
        s.last_known_good("production").await.unwrap(),
        None,
        "3 minutes is not yet a sustained window"
    );
    clock.advance(Duration::from_secs(3 * 60));
    traffic_total(
        s.as_ref(),
        "production",
        "dpl_1",
        T0 + 3 * 60_000,
        T0 + 6 * 60_000,
        3_000,
        1,
    )
    .await;
    cron(&app, "/api/cron/evaluate").await;
    assert_eq!(
        s.last_known_good("production").await.unwrap().map(|d| d.id),
        Some("dpl_1".to_string())
    );
}

#[tokio::test]
async fn firing_alerts_raised_after_the_deploy_count_against_it() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(T0)));
    let app =
        TestApp::spawn_with_clock(Backend::Sqlite, &[("CRON_SECRET", CRON)], clock.clone()).await;
    let s = app.store().clone();
    deployment_event(
        s.as_ref(),
        "production",
        "dpl_1",
        "deployment.promoted",
        DeploymentState::Promoted,
        T0,
    )
    .await;
    let alert = |fp: &str, at: i64| {
        Signal::Alert(rollback_guard::flows::intake::signal::AlertSignal {
            source: "alertmanager",
            fingerprint: fp.into(),
            name: format!("alert {fp}"),
            firing: true,
            severity: "critical".into(),
            environment: Some("production".into()),
            deployment: None,
            at: Timestamp::from_millis(at),
            detail: json!({}),
        })
    };
    // One started long before the deploy (not this deployment's fault), one after.
    rollback_guard::flows::intake::record(s.as_ref(), &[alert("old", T0 - 3_600_000)], clock.now())
        .await
        .unwrap();
    clock.advance(Duration::from_secs(60));
    let body = cron(&app, "/api/cron/evaluate").await;
    assert_eq!(
        body["result"]["environments"][0]["level"],
        "insufficient_data"
    );
    rollback_guard::flows::intake::record(s.as_ref(), &[alert("new", T0 + 90_000)], clock.now())
        .await
        .unwrap();
    clock.advance(Duration::from_secs(60));
    let body = cron(&app, "/api/cron/evaluate").await;
    assert_eq!(body["result"]["environments"][0]["level"], "critical");
}
