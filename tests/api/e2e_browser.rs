//! End to end, in a real browser: bad deployment signals → incident →
//! approval email → the link opened in headless Chromium (through
//! ChromeDriver's WebDriver API) → the Approve button clicked → Vercel
//! rollback → verification → audit. A screenshot of the confirmation page
//! is written to `target/e2e/approve-page.png`.
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them).

use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use super::approval::{bad_deploy, cron, CRON, KEYS};
use super::fake_http;
use super::fake_vercel::{self, State};
use super::helpers::{Backend, Canned, TestApp};

struct Browser {
    driver: tokio::process::Child,
    base: String,
    session: String,
    client: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        for bin in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
            assert!(
                std::path::Path::new(bin).exists(),
                "{bin} missing: install Debian's chromium and chromium-driver (.ci/run does)"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = tokio::process::Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        for _ in 0..100 {
            if client.get(format!("{base}/status")).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--window-size=1000,900", format!("--user-data-dir={}", profile.path().display())]
        }}}});
        let res: Value = client
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = res["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {res}"))
            .to_string();
        Browser {
            driver,
            base,
            session,
            client,
            _profile: profile,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut req = self.client.request(method, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        assert!(
            v["value"].get("error").is_none(),
            "webdriver error on {path}: {v}"
        );
        v["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    async fn source(&self) -> String {
        self.call(reqwest::Method::GET, "/source", None)
            .await
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn click(&self, css: &str) {
        let el = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        let id = el
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .to_string();
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await;
    }

    async fn screenshot(&self) -> Vec<u8> {
        let b64 = self.call(reqwest::Method::GET, "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap())
            .unwrap()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.start_kill();
    }
}

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
    let now = rollback_guard::clock::Clock::now(&rollback_guard::clock::SystemClock).as_millis();
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
    rollback_guard::audit::verify_chain((0, rollback_guard::audit::GENESIS_HASH), &audit).unwrap();
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
