//! End to end, in a real browser: bad deployment signals → incident →
//! approval email → the link opened in headless Chromium (through
//! ChromeDriver's WebDriver API) → the Approve button clicked → Vercel
//! rollback → verification → audit. A screenshot of the confirmation page
//! is written to `target/e2e/approve-page.png`.
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them).

use std::time::Duration;

use serde_json::Value;

use super::approval::{bad_deploy, cron, CRON, KEYS};
use super::browser::Browser;
use super::fake_http;
use super::fake_vercel::{self, State};
use super::helpers::{Backend, Canned, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_approves_in_a_real_browser_and_production_rolls_back() {
    let resend = fake_http::start(vec![], (200, r#"{"id":"email_1"}"#)).await;
    let vercel = fake_vercel::start(State {
        polls_until_done: 2,
        ..State::default()
    })
    .await;
    let site = super::helpers::fake_upstream(vec![(
        "/health",
        Canned {
            status: 200,
            body: "ok",
            delay: Duration::ZERO,
        },
    )])
    .await;
    let policy = format!(
        "[environments.production]\napprovers = [\"alice@example.com\"]\n[channels]\norder = [\"email\"]\n[[probes]]\nname = \"home\"\nurl = \"{site}/health\"\n"
    );
    let app = TestApp::spawn(
        Backend::Postgres,
        &[
            ("CRON_SECRET", CRON),
            ("APPROVAL_SIGNING_KEYS", KEYS),
            ("ROLLBACK_GUARD_POLICY_TOML", &policy),
            ("RESEND_API_KEY", "re_test_key_123"),
            ("EMAIL_FROM", "guard@example.com"),
            ("RESEND_API_BASE", &resend.url),
            ("VERCEL_TOKEN", fake_vercel::TOKEN),
            ("VERCEL_PROJECT_ID", fake_vercel::PROJECT),
            ("VERCEL_API_BASE", &vercel.url),
        ],
    )
    .await;
    let now =
        rollback_guard::core::clock::Clock::now(&rollback_guard::integrations::clock::SystemClock)
            .as_millis();
    bad_deploy(app.store().as_ref(), "production", now - 6 * 60_000).await;
    let report = cron(&app, "/api/cron/evaluate").await;
    assert_eq!(
        report["result"]["environments"][0]["decision"]["action"], "approval_requested",
        "{report}"
    );
    let mail = resend
        .requests
        .lock()
        .unwrap()
        .iter()
        .find(|r| r.body.contains("/api/approve?token="))
        .cloned()
        .unwrap();
    let text: Value = serde_json::from_str(&mail.body).unwrap();
    let text = text["text"].as_str().unwrap();
    let link = text[text.find("http://").unwrap()..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();

    let browser = Browser::start().await;
    browser.goto(&link).await;
    let page = browser.source().await;
    assert!(
        page.contains("Roll back production?") && page.contains("dpl_good"),
        "{page}"
    );
    // The link's expiry says its zone.
    assert!(
        page.contains("<dt>Link expires</dt><dd>") && page.contains(" UTC</dd>"),
        "{page}"
    );
    let png = browser.screenshot().await;
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG screenshot");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/e2e");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("approve-page.png"), &png).unwrap();
    // Loading the page (twice, as a scanner might) did nothing.
    browser.goto(&link).await;
    assert_eq!(vercel.state.lock().unwrap().accepted, 0);

    browser.click("button.approve").await;
    let mut result = String::new();
    for _ in 0..100 {
        result = browser.source().await;
        if result.contains("rollback is complete") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        result.contains("Approved. The rollback is complete."),
        "{result}"
    );
    assert_eq!(vercel.state.lock().unwrap().accepted, 1);
    let audit = app.store().audit_after(0, 1000).await.unwrap();
    rollback_guard::core::audit::verify_chain(
        (0, rollback_guard::core::audit::GENESIS_HASH),
        &audit,
    )
    .unwrap();
    let approval = audit
        .iter()
        .find(|r| r.entry.action == "approval_approve")
        .unwrap();
    assert!(
        approval.entry.detail["client"]["user_agent"]
            .as_str()
            .unwrap()
            .contains("HeadlessChrome"),
        "{:?}",
        approval.entry.detail
    );
    assert!(audit.iter().any(|r| r.entry.action == "rollback_verified"));
}
