//! `GET /api/incidents` and `/api/incidents/{id}` for operators.

use super::approval::{bad_deploy, cron, CRON};
use super::helpers::{json, Backend, TestApp};

const OPERATOR: &str = "operator-token-0123456789";

#[tokio::test]
async fn operators_list_incidents_and_read_one_with_its_audit_trail() {
    let app = TestApp::spawn(
        Backend::Sqlite,
        &[("CRON_SECRET", CRON), ("OPERATOR_TOKEN", OPERATOR)],
    )
    .await;
    let now =
        rollback_guard::core::clock::Clock::now(&rollback_guard::integrations::clock::SystemClock)
            .as_millis();
    bad_deploy(app.store().as_ref(), "production", now - 6 * 60_000).await;
    cron(&app, "/api/cron/evaluate").await;

    assert_eq!(app.get("/api/incidents").await.status(), 401);
    let res = app
        .client
        .get(app.url("/api/incidents?status=open"))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let list = json(res).await;
    let inc = &list["incidents"][0];
    assert_eq!(
        (
            inc["status"].as_str(),
            inc["level"].as_str(),
            inc["deployment_id"].as_str()
        ),
        (Some("open"), Some("critical"), Some("dpl_bad"))
    );
    let id = inc["id"].as_str().unwrap().to_string();

    for path in [
        format!("/api/incidents/{id}"),
        format!("/api/incidents?id={id}"),
    ] {
        let res = app
            .client
            .get(app.url(&path))
            .bearer_auth(OPERATOR)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let d = json(res).await;
        assert_eq!(d["verdict"]["level"], "critical");
        let actions: Vec<&str> = d["audit"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["action"].as_str().unwrap())
            .collect();
        assert!(
            actions.contains(&"incident_opened") && actions.contains(&"evaluation"),
            "{actions:?}"
        );
        // No approvers configured for production: nothing was asked, and that is on record.
        assert!(actions.contains(&"approval_impossible"), "{actions:?}");
    }
    let res = app
        .client
        .get(app.url("/api/incidents/inc_nope"))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let res = app
        .client
        .get(app.url("/api/incidents?limit=0"))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap();
    assert_eq!(json(res).await["code"], "invalid_limit");
    // Closed (rolled back) incidents can be listed; other statuses are refused.
    let res = app
        .client
        .get(app.url("/api/incidents?status=closed"))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(json(res).await["incidents"], serde_json::json!([]));
    let res = app
        .client
        .get(app.url("/api/incidents?status=bogus"))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(json(res).await["code"], "invalid_status");
}
