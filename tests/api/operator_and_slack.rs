//! `POST /api/rollback` (operator), `POST /api/slack/actions` (Slack buttons)
//! and the SMS fallback through Twilio's Messages API.

use std::time::Duration;

use rollback_guard::core::clock::Clock;
use rollback_guard::flows::intake::verify::sign_sha256_hex;
use rollback_guard::integrations::clock::SystemClock;
use serde_json::json;

use super::approval::{bad_deploy, cron, CRON, KEYS};
use super::fake_http;
use super::fake_vercel::{self, State};
use super::helpers::{json, Backend, TestApp};

const OPERATOR: &str = "operator-token-0123456789";
const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

fn now_ms() -> i64 {
    SystemClock.now().as_millis()
}

#[tokio::test]
async fn operators_preview_and_execute_rollbacks_with_their_token() {
    let vercel = fake_vercel::start(State::default()).await;
    let app = TestApp::spawn(
        Backend::Sqlite,
        &[
            ("OPERATOR_TOKEN", OPERATOR),
            ("VERCEL_TOKEN", fake_vercel::TOKEN),
            ("VERCEL_PROJECT_ID", fake_vercel::PROJECT),
            ("VERCEL_API_BASE", &vercel.url),
        ],
    )
    .await;
    bad_deploy(app.store().as_ref(), "production", now_ms() - 6 * 60_000).await;
    let url = app.url("/api/rollback");
    let res = app
        .client
        .post(&url)
        .json(&json!({"environment": "production"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = app
        .client
        .post(&url)
        .bearer_auth("wrong-token-0123456789")
        .json(&json!({"environment": "production"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    let res = app
        .client
        .post(&url)
        .bearer_auth(OPERATOR)
        .json(&json!({"environment": "production", "preview": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body = json(res).await;
    assert_eq!(body["plan"]["target_deployment"], "dpl_good");
    assert_eq!(body["plan"]["from_deployment"], "dpl_bad");
    assert_eq!(
        vercel.state.lock().unwrap().accepted,
        0,
        "a preview changes nothing"
    );
    assert!(app
        .store()
        .list_docs("execution", &Default::default(), 10)
        .await
        .unwrap()
        .is_empty());

    for (body, code) in [
        (
            json!({"environment": "production", "target_deployment": "dpl_nope"}),
            "invalid_target",
        ),
        (
            json!({"environment": "production", "target_deployment": "dpl_bad"}),
            "invalid_target",
        ),
        (
            json!({"environment": "production", "extra": 1}),
            "invalid_body",
        ),
    ] {
        let res = app
            .client
            .post(&url)
            .bearer_auth(OPERATOR)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400);
        assert_eq!(json(res).await["code"], code);
    }
    let res = app
        .client
        .post(&url)
        .bearer_auth(OPERATOR)
        .json(&json!({"environment": "staging"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 409);

    let res = app
        .client
        .post(&url)
        .bearer_auth(OPERATOR)
        .json(&json!({"environment": "production", "reason": "checkout broken"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body = json(res).await;
    assert_eq!(body["rollback"]["status"], "succeeded", "{body}");
    assert_eq!(vercel.state.lock().unwrap().accepted, 1);
    let desc = &vercel.state.lock().unwrap().rollback_calls[0].1;
    assert!(desc.contains("checkout+broken"), "{desc}");
}

fn slack_request(app: &TestApp, body: &str, ts: i64, secret: &str) -> reqwest::RequestBuilder {
    let sig = format!(
        "v0={}",
        sign_sha256_hex(
            secret.as_bytes(),
            &[b"v0:", ts.to_string().as_bytes(), b":", body.as_bytes()]
        )
    );
    app.client
        .post(app.url("/api/slack/actions"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", ts.to_string())
        .header("x-slack-signature", sig)
        .body(body.to_string())
}

fn click(user: &str, action: &str, request: &str, trigger: &str) -> String {
    let payload = json!({"type": "block_actions", "user": {"id": user, "username": "someone", "team_id": "T1"}, "team": {"id": "T1"},
                         "trigger_id": trigger, "response_url": "https://hooks.slack.com/actions/x",
                         "actions": [{"action_id": action, "block_id": "rollback_decision", "value": request, "type": "button", "action_ts": "1700000000.1"}]});
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &payload.to_string())
        .finish()
}

#[tokio::test]
async fn slack_buttons_record_decisions_for_listed_slack_approvers_only() {
    let slack = fake_http::start(vec![], (200, "ok")).await;
    let vercel = fake_vercel::start(State::default()).await;
    let policy =
        "[environments.production]\napprovers = [\"slack:U111\", \"slack:U222\"]\nquorum = 2\n";
    let app = TestApp::spawn(
        Backend::Postgres,
        &[
            ("CRON_SECRET", CRON),
            ("APPROVAL_SIGNING_KEYS", KEYS),
            ("ROLLBACK_GUARD_POLICY_TOML", policy),
            ("SLACK_WEBHOOK_URL", &format!("{}/hook", slack.url)),
            ("SLACK_SIGNING_SECRET", SLACK_SECRET),
            ("VERCEL_TOKEN", fake_vercel::TOKEN),
            ("VERCEL_PROJECT_ID", fake_vercel::PROJECT),
            ("VERCEL_API_BASE", &vercel.url),
        ],
    )
    .await;
    bad_deploy(app.store().as_ref(), "production", now_ms() - 6 * 60_000).await;
    let report = cron(&app, "/api/cron/evaluate").await;
    let request = report["result"]["environments"][0]["decision"]["request"]
        .as_str()
        .unwrap()
        .to_string();
    let ts = now_ms() / 1000;

    // Bad signature, stale timestamp: 401.
    assert_eq!(
        slack_request(
            &app,
            &click("U111", "approve", &request, "t0"),
            ts,
            "wrong-secret"
        )
        .send()
        .await
        .unwrap()
        .status(),
        401
    );
    assert_eq!(
        slack_request(
            &app,
            &click("U111", "approve", &request, "t0"),
            ts - 301,
            SLACK_SECRET
        )
        .send()
        .await
        .unwrap()
        .status(),
        401
    );
    // A stranger's click is not recorded.
    let res = slack_request(
        &app,
        &click("U999", "approve", &request, "t1"),
        ts,
        SLACK_SECRET,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    assert!(json(res).await["text"]
        .as_str()
        .unwrap()
        .contains("not an approver"));
    // First approval: pending (quorum 2); the same click redelivered counts once.
    let first = click("U111", "approve", &request, "t2");
    assert!(json(
        slack_request(&app, &first, ts, SLACK_SECRET)
            .send()
            .await
            .unwrap()
    )
    .await["text"]
        .as_str()
        .unwrap()
        .contains("pending"));
    assert!(json(
        slack_request(&app, &first, ts, SLACK_SECRET)
            .send()
            .await
            .unwrap()
    )
    .await["text"]
        .as_str()
        .unwrap()
        .contains("Already recorded"));
    assert_eq!(vercel.state.lock().unwrap().accepted, 0);
    // Second distinct approver: approved, rollback requested.
    let res = slack_request(
        &app,
        &click("U222", "approve", &request, "t3"),
        ts,
        SLACK_SECRET,
    )
    .send()
    .await
    .unwrap();
    assert!(json(res).await["text"]
        .as_str()
        .unwrap()
        .starts_with("Approved"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(vercel.state.lock().unwrap().accepted, 1);
    let apr = app
        .store()
        .get_doc("approval", &request)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(apr.status, "approved");
    assert_eq!(apr.body["decisions"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn sms_through_twilio_is_the_last_fallback() {
    let slack = fake_http::start(vec![], (503, "down")).await;
    let resend = fake_http::start(vec![], (500, r#"{"message":"down"}"#)).await;
    let twilio = fake_http::start(vec![], (201, r#"{"sid":"SM123","status":"queued"}"#)).await;
    let policy =
        "[environments.production]\napprovers = [\"alice@example.com\", \"+15551230000\"]\n";
    let app = TestApp::spawn(
        Backend::Sqlite,
        &[
            ("CRON_SECRET", CRON),
            ("APPROVAL_SIGNING_KEYS", KEYS),
            ("ROLLBACK_GUARD_POLICY_TOML", policy),
            ("SLACK_WEBHOOK_URL", &format!("{}/hook", slack.url)),
            ("RESEND_API_KEY", "re_test_key_123"),
            ("EMAIL_FROM", "guard@example.com"),
            ("RESEND_API_BASE", &resend.url),
            ("TWILIO_ACCOUNT_SID", "AC123"),
            ("TWILIO_AUTH_TOKEN", "twilio-auth-token"),
            ("TWILIO_FROM", "+15550000000"),
            ("TWILIO_API_BASE", &twilio.url),
        ],
    )
    .await;
    bad_deploy(app.store().as_ref(), "production", now_ms() - 6 * 60_000).await;
    let report = cron(&app, "/api/cron/evaluate").await;
    assert_eq!(
        report["result"]["environments"][0]["decision"]["notified_via"], "sms",
        "{report}"
    );
    let sms = twilio.requests.lock().unwrap().clone();
    assert_eq!(sms.len(), 1);
    assert_eq!(sms[0].path, "/2010-04-01/Accounts/AC123/Messages.json");
    assert_eq!(
        sms[0].header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    use base64::Engine;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("AC123:twilio-auth-token")
    );
    assert_eq!(sms[0].header("authorization"), Some(basic.as_str()));
    let form: Vec<(String, String)> = url::form_urlencoded::parse(sms[0].body.as_bytes())
        .into_owned()
        .collect();
    let field = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(field("To"), "+15551230000");
    assert_eq!(field("From"), "+15550000000");
    assert!(field("Body").contains("/api/approve?token=v1."));
    // Both failed channels were tried (with their one retry) and audited.
    let audit = app.store().audit_after(0, 1000).await.unwrap();
    let failed: Vec<String> = audit
        .iter()
        .filter(|r| r.entry.action == "notification_failed" && r.entry.subject.starts_with("apr_"))
        .map(|r| r.entry.detail["channel"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(failed, ["slack", "email"]);
    assert_eq!(
        slack
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.body.contains("rollback_decision"))
            .count(),
        2,
        "one retry on 503"
    );
}

#[tokio::test]
async fn slack_requests_with_extreme_timestamps_are_refused_not_panicked_on() {
    let app = TestApp::spawn(
        Backend::Sqlite,
        &[("SLACK_SIGNING_SECRET", "slack-signing-secret-123")],
    )
    .await;
    for ts in [i64::MIN, i64::MAX] {
        let res = slack_request(&app, "payload=%7B%7D", ts, "slack-signing-secret-123")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "timestamp {ts}");
    }
}

#[tokio::test]
async fn outside_text_cannot_become_a_link_in_slack_or_markup_in_email() {
    use rollback_guard::core::policy::ChannelKind;
    use rollback_guard::integrations::notify::{channels_from_config, Message, NotifyConfig};
    let slack = super::fake_http::start(vec![], (200, "ok")).await;
    let resend = super::fake_http::start(vec![], (200, r#"{"id":"e1"}"#)).await;
    let cfg = NotifyConfig {
        slack_webhook_url: Some(rollback_guard::core::secret::Secret::new(format!(
            "{}/services/T0/B0/x",
            slack.url
        ))),
        slack_signing_secret: None,
        resend_api_key: Some(rollback_guard::core::secret::Secret::new("re_key")),
        email_from: Some("guard@example.com".into()),
        twilio_account_sid: None,
        twilio_auth_token: None,
        twilio_from: None,
        resend_api_base: url::Url::parse(&resend.url).unwrap(),
        twilio_api_base: url::Url::parse("http://127.0.0.1:9").unwrap(),
    };
    let evil = "alert <https://evil.example/approve|Click to approve> & <!channel>";
    let msg = Message {
        subject: "Approve rollback of production?".into(),
        text: format!("production on dpl_bad: {evil}"),
        request_id: None,
        links: vec![],
        email_to: vec!["ops@example.com".into()],
        sms_to: vec![],
        idempotency_key: "test/1".into(),
    };
    for ch in channels_from_config(&cfg, &[ChannelKind::Slack, ChannelKind::Email]) {
        ch.send(&msg).await.unwrap();
    }
    let body: serde_json::Value =
        serde_json::from_str(&slack.requests.lock().unwrap()[0].body).unwrap();
    let section = body["blocks"][1]["text"]["text"].as_str().unwrap();
    let fallback = body["text"].as_str().unwrap();
    for text in [section, fallback] {
        assert!(!text.contains("<https://"), "{text}");
        assert!(!text.contains("<!channel>"), "{text}");
        assert!(
            text.contains(
                "&lt;https://evil.example/approve|Click to approve&gt; &amp; &lt;!channel&gt;"
            ),
            "{text}"
        );
    }
    let mail: serde_json::Value =
        serde_json::from_str(&resend.requests.lock().unwrap()[0].body).unwrap();
    let html = mail["html"].as_str().unwrap();
    assert!(!html.contains("<https://"), "{html}");
    assert!(html.contains("&lt;https://evil.example/approve"), "{html}");
}
