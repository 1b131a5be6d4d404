//! The operator dashboard: sign-in with the operator token (cookie), the
//! page's content, and a real render in headless Chromium with a screenshot
//! written to `target/e2e/dashboard.png`.

use serde_json::json;

use super::approval::{bad_deploy, cron, CRON};
use super::browser::Browser;
use super::helpers::{Backend, TestApp};

const OPERATOR: &str = "operator-token-0123456789";

async fn app_with_history() -> TestApp {
    let app = TestApp::spawn(
        Backend::Postgres,
        &[
            ("CRON_SECRET", CRON),
            ("OPERATOR_TOKEN", OPERATOR),
            (
                "ROLLBACK_GUARD_POLICY_TOML",
                "[environments.production]\napproval = \"auto\"\n",
            ),
        ],
    )
    .await;
    let now =
        rollback_guard::core::clock::Clock::now(&rollback_guard::integrations::clock::SystemClock)
            .as_millis();
    bad_deploy(app.store().as_ref(), "production", now - 6 * 60_000).await;
    cron(&app, "/api/cron/evaluate").await;
    app
}

#[tokio::test]
async fn the_dashboard_needs_the_operator_token_and_shows_the_history() {
    let app = app_with_history().await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = no_redirects
        .get(app.url("/api/dashboard"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert!(res.text().await.unwrap().contains("Operator token"));
    let res = no_redirects
        .post(app.url("/api/dashboard"))
        .form(&[("token", "wrong-token-0123456789")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = no_redirects
        .post(app.url("/api/dashboard"))
        .form(&[("token", OPERATOR)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let cookie = res.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_string();
    let res = no_redirects
        .get(app.url("/api/dashboard"))
        .header("cookie", session)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let page = res.text().await.unwrap();
    for want in [
        "Incidents",
        "critical",
        "dpl_bad",
        "dpl_good",
        "last known good",
        "<svg",
        "Error rate (5xx share), per minute",
        "P95 latency, per minute",
        // Thresholds from the policy, deployment markers, the incident window.
        ">warning 2%<",
        ">critical 5%<",
        ">critical 1000 ms<",
        "dpl_bad (current)",
        "class=\"incident\"",
        // Times say their zone; the role column has a header.
        " UTC<",
        "<th>Role</th>",
        "verified",
        "rollback_succeeded",
        "(dry run)",
        "href=\"/api/dashboard?incident=inc_",
        // No refused links: zero, not "-0" (an empty float sum is -0.0).
        "Last 60 minutes: 0</p>",
    ] {
        assert!(page.contains(want), "dashboard lacks {want:?}");
    }
    // Bearer works for API clients too.
    let res = app
        .client
        .get(app.url("/api/dashboard"))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // An incident's detail view: findings and evidence, the plan, the
    // approval state, the rollback and its audit trail.
    let incident = app
        .store()
        .list_docs("incident", &Default::default(), 1)
        .await
        .unwrap()[0]
        .id
        .clone();
    let detail = app
        .client
        .get(app.url(&format!("/api/dashboard?incident={incident}")))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap();
    assert_eq!(detail.status(), 200);
    let detail = detail.text().await.unwrap();
    for want in [
        "<h1>Incident <code>inc_",
        "<h2>Findings</h2>",
        "error_rate",
        "<summary>evidence</summary>",
        "<h2>Plan</h2>",
        "Vercel Instant Rollback from dpl_bad to dpl_good",
        "No approval was requested.",
        "(dry run: nothing was called)",
        "incident_opened",
        "rollback_succeeded",
        " UTC<",
    ] {
        assert!(detail.contains(want), "detail lacks {want:?}: {detail}");
    }

    // A break-glass rollback opens like an incident, here and in the API.
    let res = app
        .client
        .post(app.url("/api/rollback"))
        .bearer_auth(OPERATOR)
        .json(&json!({"environment": "production", "reason": "checkout broken"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    let manual = body["incident_id"].as_str().unwrap().to_string();
    assert!(manual.starts_with("manual_"), "{body}");
    let page = app
        .client
        .get(app.url(&format!("/api/dashboard?incident={manual}")))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(
        page.contains("Break-glass rollback") && page.contains("checkout broken"),
        "{page}"
    );
    assert!(page.contains("an operator started this rollback"), "{page}");
    let api = app
        .client
        .get(app.url(&format!("/api/incidents/{manual}")))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 200);
    let api: serde_json::Value = api.json().await.unwrap();
    assert_eq!(api["kind"], "manual");
    assert_eq!(api["execution"]["target_deployment"], "dpl_good");
    // Unknown ids are a 404 page, not an error.
    let missing = app
        .client
        .get(app.url("/api/dashboard?incident=inc_nope"))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_renders_in_a_real_browser() {
    let app = app_with_history().await;
    let browser = Browser::start().await;
    browser.goto(&app.url("/api/dashboard")).await;
    browser.type_into("input[name=token]", OPERATOR).await;
    browser.click("button").await;
    let mut page = String::new();
    for _ in 0..50 {
        page = browser.source().await;
        if page.contains("Audit trail") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        page.contains("Audit trail") && page.contains("<svg"),
        "{page}"
    );
    // What the browser laid out: the charts share the page's width, with
    // ticks on both axes, thresholds and deployment markers.
    let layout = browser
        .call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": "const main = document.querySelector('main').getBoundingClientRect().width;\
                const charts = [...document.querySelectorAll('svg.chart')].map(s => s.getBoundingClientRect().width);\
                return {main, charts, yticks: document.querySelectorAll('svg.chart .ytick').length,\
                        xticks: document.querySelectorAll('svg.chart .xtick').length,\
                        thresholds: document.querySelectorAll('svg.chart .threshold').length,\
                        deploys: document.querySelectorAll('svg.chart .deploy').length};", "args": []})),
        )
        .await;
    let main = layout["main"].as_f64().unwrap();
    let charts: Vec<f64> = layout["charts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_f64().unwrap())
        .collect();
    assert_eq!(charts.len(), 2, "{layout}");
    let total: f64 = charts.iter().sum();
    assert!(total > 0.9 * main, "charts fill the width: {layout}");
    assert!(layout["yticks"].as_u64().unwrap() >= 6, "{layout}");
    assert!(layout["xticks"].as_u64().unwrap() >= 6, "{layout}");
    assert_eq!(layout["thresholds"], 4, "{layout}");
    assert!(layout["deploys"].as_u64().unwrap() >= 2, "{layout}");
    let png = browser.screenshot().await;
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    // Width and height from the IHDR chunk: the window is 1000 px wide.
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    assert!(width >= 900, "screenshot width {width}");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/e2e");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("dashboard.png"), &png).unwrap();

    // The incident's detail view, reached by its link.
    browser.click("a[href^='/api/dashboard?incident=']").await;
    let mut detail = String::new();
    for _ in 0..50 {
        detail = browser.source().await;
        if detail.contains("<h2>Findings</h2>") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        detail.contains("<h2>Plan</h2>") && detail.contains("<h2>Audit trail</h2>"),
        "{detail}"
    );
    std::fs::write(out.join("incident.png"), browser.screenshot().await).unwrap();
}

#[tokio::test]
async fn the_dashboard_session_is_signed_expires_is_secure_over_https_and_signs_out() {
    use rollback_guard::core::clock::ManualClock;
    use std::sync::Arc;
    use std::time::Duration;
    let clock = Arc::new(ManualClock::new(rollback_guard::core::clock::Clock::now(
        &rollback_guard::integrations::clock::SystemClock,
    )));
    let app = TestApp::spawn_with_clock(
        Backend::Sqlite,
        &[
            ("OPERATOR_TOKEN", OPERATOR),
            ("APPROVAL_SIGNING_KEYS", super::approval::KEYS),
        ],
        clock.clone(),
    )
    .await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let sign_in = |proto: &'static str| {
        client
            .post(app.url("/api/dashboard"))
            .header("x-forwarded-proto", proto)
            .form(&[("token", OPERATOR)])
            .send()
    };
    let res = sign_in("https").await.unwrap();
    assert_eq!(res.status(), 303);
    let cookie = res.headers()["set-cookie"].to_str().unwrap().to_string();
    for want in [
        "HttpOnly",
        "SameSite=Strict",
        "Secure",
        "Max-Age=43200",
        "Path=/api/dashboard",
    ] {
        assert!(cookie.contains(want), "{want} missing: {cookie}");
    }
    // The cookie carries a signed session, never the operator token.
    assert!(!cookie.contains(OPERATOR), "{cookie}");
    let session = cookie.split(';').next().unwrap().to_string();
    assert!(session.starts_with("rg_session=s1."), "{session}");
    // Over plain http (local) the cookie is not marked Secure.
    let plain = sign_in("http").await.unwrap();
    assert!(!plain.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Secure"));

    let get = |cookie: String| {
        client
            .get(app.url("/api/dashboard"))
            .header("cookie", cookie)
            .send()
    };
    assert_eq!(get(session.clone()).await.unwrap().status(), 200);
    // The raw token as a cookie, or a tampered session, is not a session.
    assert_eq!(
        get(format!("rg_operator={OPERATOR}"))
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        get(format!("rg_session={OPERATOR}"))
            .await
            .unwrap()
            .status(),
        401
    );
    let mut tampered = session.clone();
    tampered.pop();
    tampered.push(if session.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(get(tampered).await.unwrap().status(), 401);

    // Sign-out clears the cookie and revokes the session on the server.
    let out = client
        .post(app.url("/api/dashboard"))
        .header("cookie", session.clone())
        .form(&[("action", "sign_out")])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    assert!(out.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    assert_eq!(
        get(session).await.unwrap().status(),
        401,
        "a signed-out session still works"
    );

    // Sessions expire after 12 hours.
    let res = sign_in("https").await.unwrap();
    let fresh = res.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(get(fresh.clone()).await.unwrap().status(), 200);
    clock.advance(Duration::from_secs(12 * 3600 + 1));
    assert_eq!(get(fresh).await.unwrap().status(), 401);
}
