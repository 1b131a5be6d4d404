//! Unauthenticated callers cannot grow the audit log, and no request reads
//! the whole log: junk approval links are counted per minute and reason, and
//! the dashboard and incident detail read a bounded number of records
//! however long the log is.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use rollback_guard::core::audit::AuditEntry;
use rollback_guard::core::clock::Clock;
use rollback_guard::integrations::clock::SystemClock;
use rollback_guard::runtime::app::App;
use rollback_guard::store::Store;
use serde_json::json;

use super::faults::FaultyStore;
use super::helpers::{config, Backend, TestApp, TestStore};

const OPERATOR: &str = "operator-token-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_links_do_not_flood_the_audit_log_and_no_request_reads_the_whole_log() {
    let ts = TestStore::new(Backend::Postgres).await;
    let now = SystemClock.now();
    // A long log: 3,000 records about other things, a few about one incident.
    for i in 0..3_000 {
        ts.store
            .append_audit(AuditEntry {
                at: now,
                actor: "test".into(),
                action: "noted".into(),
                subject: format!("other_{}", i % 50),
                detail: json!({"i": i}),
            })
            .await
            .unwrap();
    }
    ts.store
        .put_doc(
            &rollback_guard::store::Doc {
                kind: "incident".into(),
                id: "inc_flood".into(),
                version: 0,
                scope: "production".into(),
                status: "open".into(),
                updated_at: now,
                body: json!({"deployment_id": "dpl_x", "environment": "production", "level": "critical", "opened_at": now.as_millis()}),
            },
            None,
        )
        .await
        .unwrap();
    for action in ["incident_opened", "approval_requested"] {
        ts.store
            .append_audit(AuditEntry {
                at: now,
                actor: "test".into(),
                action: action.into(),
                subject: "inc_flood".into(),
                detail: json!({}),
            })
            .await
            .unwrap();
    }
    let counting = Arc::new(FaultyStore::over(Arc::clone(&ts.store), 0));
    let mut cfg = config(&[
        ("OPERATOR_TOKEN", OPERATOR),
        ("APPROVAL_SIGNING_KEYS", super::approval::KEYS),
    ]);
    cfg.store = ts.config.clone();
    let app = TestApp::serve(App::with_store(
        cfg,
        Arc::clone(&counting) as Arc<dyn Store>,
        Arc::new(SystemClock),
    ))
    .await;
    let before = ts.store.audit_tail(1).await.unwrap()[0].seq;

    // 1,000 junk links.
    for i in 0..1_000 {
        let res = app
            .client
            .post(app.url("/api/approve"))
            .header("accept", "application/json")
            .form(&[
                ("token", format!("v1.k2.junk{i}.AAAA").as_str()),
                ("decision", "approve"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
    }
    assert_eq!(
        ts.store.audit_tail(1).await.unwrap()[0].seq,
        before,
        "junk links were audited"
    );

    // The dashboard shows the count, reading only a tail of the log.
    counting.audit_read.store(0, Ordering::SeqCst);
    let page = app
        .client
        .get(app.url("/api/dashboard"))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("Last 60 minutes: 1000 (invalid_link: 1000)"),
        "{page}"
    );
    let read = counting.audit_read.swap(0, Ordering::SeqCst);
    assert!(read <= 50, "the dashboard read {read} audit records");

    // The incident detail reads only its own trail.
    let detail: serde_json::Value = app
        .client
        .get(app.url("/api/incidents/inc_flood"))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let actions: Vec<&str> = detail["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["incident_opened", "approval_requested"],
        "{detail}"
    );
    assert_eq!(counting.audit_read.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_cron_verifies_the_chain_incrementally_and_reports_tampering() {
    use rollback_guard::flows::audit_check::{advance, status};
    let ts = TestStore::new(Backend::Postgres).await;
    let now = SystemClock.now();
    let append = |i: i64| AuditEntry {
        at: now,
        actor: "test".into(),
        action: "noted".into(),
        subject: "s".into(),
        detail: json!({"i": i}),
    };
    for i in 0..5 {
        ts.store.append_audit(append(i)).await.unwrap();
    }
    assert_eq!(advance(ts.store.as_ref(), now).await.unwrap()["seq"], 5);
    assert!(status(ts.store.as_ref())
        .await
        .unwrap()
        .starts_with("verified through record 5"));
    for i in 5..7 {
        ts.store.append_audit(append(i)).await.unwrap();
    }
    // Someone edits record 7 in the database behind the guard's back.
    let rollback_guard::store::StoreConfig::Postgres { url, schema } = ts.config.clone() else {
        unreachable!()
    };
    let db = rollback_guard::integrations::app_database::connect(url.expose())
        .await
        .unwrap();
    db.batch_execute(&format!(
        "UPDATE \"{schema}\".audit_log SET detail = '{{\"i\": 99}}' WHERE seq = 7"
    ))
    .await
    .unwrap();
    let checked = advance(ts.store.as_ref(), now).await.unwrap();
    assert_eq!(checked["ok"], false, "{checked}");
    let said = status(ts.store.as_ref()).await.unwrap();
    assert!(said.starts_with("BROKEN after record 5"), "{said}");
}
