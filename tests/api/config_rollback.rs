//! Configuration rollback: the env-var snapshot taken while a deployment is
//! current is restored through Vercel's env API when production rolls back
//! to it. Values are sealed at rest only with `SNAPSHOT_ENCRYPTION_KEY`.

use base64::Engine;
use serde_json::json;

use super::approval::{bad_deploy, cron, CRON};
use super::fake_vercel::{self, State};
use super::helpers::{json, Backend, TestApp};

const OPERATOR: &str = "operator-token-0123456789";

fn env(id: &str, key: &str, value: &str, kind: &str) -> serde_json::Value {
    json!({"id": id, "key": key, "value": value, "type": kind, "target": ["production", "preview"]})
}

/// dpl_good is current and healthy, and the evaluate cron has run (so it has
/// snapshotted dpl_good's configuration). Returns now (ms).
async fn good_is_current(app: &TestApp) -> i64 {
    let s = app.store();
    let now =
        rollback_guard::core::clock::Clock::now(&rollback_guard::integrations::clock::SystemClock)
            .as_millis();
    super::approval::deploy(s.as_ref(), "production", "dpl_good", now - 2 * 3_600_000).await;
    super::approval::traffic(
        s.as_ref(),
        "production",
        "dpl_good",
        now - 600_000,
        now,
        200.0,
        0.0,
    )
    .await;
    cron(app, "/api/cron/evaluate").await;
    now
}

async fn scenario(key: Option<String>) -> (TestApp, fake_vercel::FakeVercel, serde_json::Value) {
    let vercel = fake_vercel::start(State {
        envs: vec![
            env(
                "env_1",
                "DATABASE_URL",
                "postgres://app:old-secret@db/app",
                "encrypted",
            ),
            env("env_2", "FEATURE_CHECKOUT_V2", "false", "plain"),
            env("env_3", "PAYMENT_KEY", "sk_live_old", "sensitive"),
            env("env_4", "REMOVED_LATER", "keep-me", "plain"),
        ],
        ..State::default()
    })
    .await;
    let mut vars = vec![
        ("CRON_SECRET", CRON.to_string()),
        ("OPERATOR_TOKEN", OPERATOR.to_string()),
        ("VERCEL_TOKEN", fake_vercel::TOKEN.to_string()),
        ("VERCEL_PROJECT_ID", fake_vercel::PROJECT.to_string()),
        ("VERCEL_API_BASE", vercel.url.clone()),
    ];
    if let Some(k) = key {
        vars.push(("SNAPSHOT_ENCRYPTION_KEY", k));
    }
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = TestApp::spawn(Backend::Postgres, &vars).await;
    let s = app.store().clone();
    let now = good_is_current(&app).await;
    let snap = s
        .get_doc("env_snapshot", "dpl_good")
        .await
        .unwrap()
        .expect("snapshot taken");
    let snap_text = snap.body.to_string();
    assert!(
        !snap_text.contains("old-secret")
            && !snap_text.contains("keep-me")
            && !snap_text.contains("sk_live_old"),
        "no plaintext at rest: {snap_text}"
    );

    // Then config drifts and a bad deployment ships.
    {
        let mut st = vercel.state.lock().unwrap();
        st.envs[0]["value"] = json!("postgres://app:new-secret@db/app");
        st.envs[1]["value"] = json!("true");
        st.envs[2]["value"] = json!("sk_live_new");
        st.envs.remove(3);
        st.envs.push(env("env_5", "NEW_FLAG", "1", "plain"));
    }
    bad_deploy(s.as_ref(), "production", now - 6 * 60_000).await;
    let res = app
        .client
        .post(app.url("/api/rollback"))
        .bearer_auth(OPERATOR)
        .json(&json!({"environment": "production"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body = json(res).await;
    (app, vercel, body)
}

#[tokio::test]
async fn a_rollback_restores_sealed_values_and_reports_what_it_cannot() {
    let key = base64::engine::general_purpose::STANDARD.encode([42u8; 32]);
    let (app, vercel, body) = scenario(Some(key)).await;
    assert_eq!(body["rollback"]["status"], "succeeded", "{body}");
    let exe = app
        .store()
        .get_doc(
            "execution",
            body["rollback"]["execution_id"].as_str().unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    let steps: Vec<&str> = exe.body["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["code", "config"]);
    let report = &exe.body["steps"][1]["detail"];
    let mut restored: Vec<&str> = report["restored"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    restored.sort();
    assert_eq!(
        restored,
        ["DATABASE_URL", "FEATURE_CHECKOUT_V2", "REMOVED_LATER"]
    );
    assert_eq!(report["needs_manual_restore"][0]["key"], "PAYMENT_KEY");
    assert_eq!(report["added_since_not_removed"], json!(["NEW_FLAG"]));
    {
        let st = vercel.state.lock().unwrap();
        let value = |k: &str| {
            st.envs
                .iter()
                .find(|e| e["key"] == k)
                .map(|e| e["value"].clone())
        };
        assert_eq!(
            value("DATABASE_URL"),
            Some(json!("postgres://app:old-secret@db/app"))
        );
        assert_eq!(value("FEATURE_CHECKOUT_V2"), Some(json!("false")));
        assert_eq!(value("REMOVED_LATER"), Some(json!("keep-me")), "re-created");
        assert_eq!(value("NEW_FLAG"), Some(json!("1")), "never deleted");
    }
    // Nothing secret leaked into the audit log.
    let audit = app.store().audit_after(0, 1000).await.unwrap();
    let text: String = audit.iter().map(|r| r.entry.detail.to_string()).collect();
    assert!(!text.contains("old-secret") && !text.contains("new-secret"));
}

#[tokio::test]
async fn without_a_key_drifted_values_are_listed_for_manual_restore() {
    let (app, vercel, body) = scenario(None).await;
    assert_eq!(body["rollback"]["status"], "succeeded", "{body}");
    let exe = app
        .store()
        .get_doc(
            "execution",
            body["rollback"]["execution_id"].as_str().unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    let report = &exe.body["steps"][1]["detail"];
    assert!(report["restored"].as_array().unwrap().is_empty());
    assert_eq!(report["needs_manual_restore"].as_array().unwrap().len(), 4);
    assert!(
        vercel.state.lock().unwrap().env_writes.is_empty(),
        "nothing written without values to write"
    );
}

#[tokio::test]
async fn restores_never_write_blank_secrets_or_the_secret_type_and_keep_each_variables_settings() {
    let key = base64::engine::general_purpose::STANDARD.encode([42u8; 32]);
    let vercel = fake_vercel::start(State {
        envs: vec![
            env("env_1", "DATABASE_URL", "postgres://app:old-secret@db/app", "encrypted"),
            env("env_3", "PAYMENT_KEY", "sk_live_old", "sensitive"),
            env("env_6", "LEGACY_TOKEN", "sec_abc123", "secret"),
            json!({"id": "env_7", "key": "BRANCH_ONLY", "value": "b-1", "type": "plain", "target": ["production"],
                   "gitBranch": "main", "comment": "set by ops", "customEnvironmentIds": ["env_custom_1"]}),
        ],
        ..State::default()
    })
    .await;
    let vars = [
        ("CRON_SECRET", CRON),
        ("OPERATOR_TOKEN", OPERATOR),
        ("VERCEL_TOKEN", fake_vercel::TOKEN),
        ("VERCEL_PROJECT_ID", fake_vercel::PROJECT),
        ("VERCEL_API_BASE", vercel.url.as_str()),
        ("SNAPSHOT_ENCRYPTION_KEY", key.as_str()),
    ];
    let app = TestApp::spawn(Backend::Sqlite, &vars).await;
    let s = app.store().clone();
    let now = good_is_current(&app).await;
    // The value came from the per-variable endpoint, not the deprecated decrypt=true.
    assert!(
        vercel
            .state
            .lock()
            .unwrap()
            .env_list_queries
            .iter()
            .all(|q| !q.contains("decrypt=true")),
        "listed with decrypt=true"
    );
    // Everything is deleted; a bad deployment ships; the operator rolls back.
    vercel.state.lock().unwrap().envs.clear();
    bad_deploy(s.as_ref(), "production", now - 6 * 60_000).await;
    let res = app
        .client
        .post(app.url("/api/rollback"))
        .bearer_auth(OPERATOR)
        .json(&json!({"environment": "production"}))
        .send()
        .await
        .unwrap();
    let body = json(res).await;
    let exe = s
        .get_doc(
            "execution",
            body["rollback"]["execution_id"].as_str().unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    let report = &exe.body["steps"][1]["detail"];
    let st = vercel.state.lock().unwrap();
    let writes: Vec<&serde_json::Value> = st.env_writes.iter().map(|(_, _, b)| b).collect();
    // No blank value is ever written, and never the `secret` type.
    for w in &writes {
        assert_ne!(w["value"], "", "blank value written: {w}");
        assert_ne!(w["type"], "secret", "secret type sent: {w}");
    }
    let value = |k: &str| st.envs.iter().find(|e| e["key"] == k).cloned();
    assert_eq!(
        value("DATABASE_URL").unwrap()["value"],
        "postgres://app:old-secret@db/app",
        "the decrypted value, not the listed ciphertext"
    );
    assert!(
        value("PAYMENT_KEY").is_none(),
        "a sensitive value was recreated"
    );
    let branch = value("BRANCH_ONLY").expect("recreated");
    assert_eq!(branch["gitBranch"], "main");
    assert_eq!(branch["comment"], "set by ops");
    assert_eq!(branch["customEnvironmentIds"], json!(["env_custom_1"]));
    let mut restored: Vec<&str> = report["restored"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    restored.sort();
    assert_eq!(restored, ["BRANCH_ONLY", "DATABASE_URL"], "{report}");
    let mut manual: Vec<&str> = report["needs_manual_restore"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["key"].as_str().unwrap())
        .collect();
    manual.sort();
    assert_eq!(manual, ["LEGACY_TOKEN", "PAYMENT_KEY"], "{report}");
}
