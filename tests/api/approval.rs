//! Approval and rollback through HTTP: incident → approval request → email
//! with a personal link → confirmation page (acts on nothing) → POST approve
//! → Vercel rollback → verification → audit. And every refusal.

use std::sync::Arc;
use std::time::Duration;

use rollback_guard::core::clock::{Clock, ManualClock, Timestamp};
use rollback_guard::core::detect::window::minute_of;
use rollback_guard::integrations::clock::SystemClock;
use rollback_guard::store::Store;

use super::fake_http;
use super::fake_vercel::{self, State};
use super::helpers::{json, Backend, TestApp};

pub use super::seed::{cron, deploy, traffic, CRON};
pub const KEYS: &str =
    "k2:k2-secret-0123456789-0123456789-abc,k1:k1-secret-0123456789-0123456789-abc";

/// dpl_good served healthily and became last known good; dpl_bad then went live and fails.
pub async fn bad_deploy(store: &dyn Store, env: &str, t0: i64) {
    deploy(store, env, "dpl_good", t0 - 2 * 3_600_000).await;
    traffic(store, env, "dpl_good", t0 - 3_600_000, t0, 200.0, 0.0).await;
    store.set_last_known_good(env, "dpl_good").await.unwrap();
    deploy(store, env, "dpl_bad", t0).await;
    traffic(store, env, "dpl_bad", t0, t0 + 6 * 60_000, 200.0, 30.0).await;
}

fn now_ms() -> i64 {
    SystemClock.now().as_millis()
}

/// Pulls the approval link out of a Resend request body.
fn link_in(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    let text = v["text"].as_str().unwrap();
    let start = text.find("http://").unwrap();
    text[start..].split_whitespace().next().unwrap().to_string()
}

fn token_of(link: &str) -> String {
    link.split("token=").nth(1).unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_rolls_back_only_after_an_approver_confirms_on_the_page() {
    let resend = fake_http::start(vec![], (200, r#"{"id":"email_123"}"#)).await;
    // Slack is down for the whole test (every call 500, including the client's one retry).
    let slack = fake_http::start(vec![], (500, "internal_error")).await;
    let vercel = fake_vercel::start(State {
        polls_until_done: 1,
        ..State::default()
    })
    .await;
    let probe_target = super::helpers::fake_upstream(vec![(
        "/health",
        super::helpers::Canned {
            status: 200,
            body: "ok",
            delay: Duration::ZERO,
        },
    )])
    .await;
    let policy = format!(
        "[environments.production]\napproval = \"required\"\napprovers = [\"alice@example.com\", \"bob@example.com\"]\nquorum = 1\n\
         [[probes]]\nname = \"home\"\nurl = \"{probe_target}/health\"\n"
    );
    let t0 = now_ms() - 6 * 60_000;
    let app = TestApp::spawn(
        Backend::Postgres,
        &[
            ("CRON_SECRET", CRON),
            ("APPROVAL_SIGNING_KEYS", KEYS),
            ("ROLLBACK_GUARD_POLICY_TOML", &policy),
            (
                "SLACK_WEBHOOK_URL",
                &format!("{}/services/T0/B0/x", slack.url),
            ),
            ("RESEND_API_KEY", "re_test_key_123"),
            ("EMAIL_FROM", "Rollback Guard <guard@example.com>"),
            ("RESEND_API_BASE", &resend.url),
            ("VERCEL_TOKEN", fake_vercel::TOKEN),
            ("VERCEL_PROJECT_ID", fake_vercel::PROJECT),
            ("VERCEL_API_BASE", &vercel.url),
        ],
    )
    .await;
    let s = app.store().clone();
    bad_deploy(s.as_ref(), "production", t0).await;

    // Evaluate: critical incident, approval requested. Slack fails…
    let report = cron(&app, "/api/cron/evaluate").await;
    let env = &report["result"]["environments"][0];
    assert_eq!(env["level"], "critical", "{report}");
    assert_eq!(env["decision"]["action"], "approval_requested", "{report}");
    assert_eq!(
        env["decision"]["notified_via"], "email",
        "Slack failed, email was the fallback: {report}"
    );
    assert_eq!(
        vercel.state.lock().unwrap().accepted,
        0,
        "nothing rolls back without approval"
    );

    // …and each approver got their own link by email, sent the way Resend documents.
    let mails: Vec<_> = resend
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.path == "/emails")
        .cloned()
        .collect();
    let approval_mails: Vec<_> = mails
        .iter()
        .filter(|m| m.body.contains("api/approve?token="))
        .collect();
    assert_eq!(approval_mails.len(), 2);
    for m in &approval_mails {
        assert_eq!(m.method, "POST");
        assert_eq!(m.header("authorization"), Some("Bearer re_test_key_123"));
        assert_eq!(m.header("content-type"), Some("application/json"));
        assert!(m
            .header("idempotency-key")
            .unwrap()
            .starts_with("approval/apr_inc_"));
        assert!(m
            .header("user-agent")
            .unwrap()
            .starts_with("rollback-guard/"));
    }
    let alice = approval_mails
        .iter()
        .find(|m| m.body.contains("alice@example.com"))
        .unwrap();
    assert!(
        alice
            .body
            .contains("Code: Vercel Instant Rollback from dpl_bad to dpl_good"),
        "{}",
        alice.body
    );
    let link = link_in(&alice.body);
    let token = token_of(&link);

    // GET shows the page and changes nothing, however often it is fetched (scanners, unfurls).
    for _ in 0..3 {
        let res = app
            .client
            .get(&link)
            .header("user-agent", "Slackbot-LinkExpanding 1.0")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["cache-control"], "no-store");
        assert_eq!(res.headers()["referrer-policy"], "no-referrer");
        assert!(res.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'"));
        let page = res.text().await.unwrap();
        assert!(
            page.contains("dpl_good")
                && page.contains("dpl_bad")
                && page.contains("Approve rollback"),
            "{page}"
        );
        // The page says plainly who can use the link.
        assert!(
            page.contains("Anyone holding it can decide") && !page.contains("works only for them"),
            "{page}"
        );
        // The plan the execution will run, step by step.
        assert!(
            page.contains("What happens")
                && page.contains("Code: Vercel Instant Rollback from dpl_bad to dpl_good"),
            "{page}"
        );
    }
    assert_eq!(vercel.state.lock().unwrap().accepted, 0);
    let apr = s
        .list_docs("approval", &Default::default(), 10)
        .await
        .unwrap();
    assert_eq!(apr[0].status, "pending");

    // A forged token is refused with a page and a 401, and audited.
    // Change one character in the middle of the MAC (the last one may only touch padding bits).
    let (head, tag) = token.rsplit_once('.').unwrap();
    let mut tag: Vec<char> = tag.chars().collect();
    tag[10] = if tag[10] == 'A' { 'B' } else { 'A' };
    let forged = format!("{head}.{}", tag.into_iter().collect::<String>());
    let res = app
        .client
        .post(app.url("/api/approve"))
        .form(&[("token", forged.as_str()), ("decision", "approve")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert!(res.text().await.unwrap().contains("signature is invalid"));

    // POST approve: the decision is recorded once and the rollback runs.
    let res = app
        .client
        .post(app.url("/api/approve"))
        .form(&[("token", token.as_str()), ("decision", "approve")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let page = res.text().await.unwrap();
    assert!(page.contains("The rollback is complete"), "{page}");
    {
        let v = vercel.state.lock().unwrap();
        assert_eq!(v.accepted, 1);
        assert_eq!(
            v.rollback_calls[0].0,
            "/v9/projects/prj_shop/rollback/dpl_good"
        );
    }
    // Replaying the same link is refused; so is a second approver after the request closed.
    let res = app
        .client
        .post(app.url("/api/approve"))
        .form(&[("token", token.as_str()), ("decision", "approve")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 409);
    let bob = approval_mails
        .iter()
        .find(|m| m.body.contains("bob@example.com"))
        .unwrap();
    let res = app
        .client
        .post(app.url("/api/approve"))
        .header("accept", "application/json")
        .form(&[
            ("token", token_of(&link_in(&bob.body)).as_str()),
            ("decision", "approve"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 409);
    assert_eq!(json(res).await["code"], "already_decided");
    assert_eq!(
        vercel.state.lock().unwrap().accepted,
        1,
        "exactly one rollback"
    );

    // Verified by the probes, notified, and every step is in a verifying audit chain.
    let exe = s
        .get_doc(
            "execution",
            &format!("exe_{}", env["incident"]["id"].as_str().unwrap()),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exe.status, "succeeded");
    assert_eq!(exe.body["verification"]["healthy"], true);
    // The incident of the rolled-back deployment is closed with the outcome.
    let incident = s
        .get_doc("incident", env["incident"]["id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(incident.status, "closed", "{}", incident.body);
    assert_eq!(incident.body["outcome"]["execution_id"], exe.id);
    assert_eq!(incident.body["outcome"]["result"], "rolled_back");
    assert_eq!(incident.body["outcome"]["target_deployment"], "dpl_good");
    assert_eq!(incident.body["outcome"]["verified"], true);
    let audit = s.audit_after(0, 1000).await.unwrap();
    rollback_guard::core::audit::verify_chain(
        (0, rollback_guard::core::audit::GENESIS_HASH),
        &audit,
    )
    .unwrap();
    let actions: Vec<&str> = audit.iter().map(|r| r.entry.action.as_str()).collect();
    for want in [
        "incident_opened",
        "approval_requested",
        "notification_failed",
        "notification_sent",
        "approval_approve",
        "rollback_planned",
        "vercel_rollback_requested",
        "rollback_succeeded",
        "rollback_verified",
        "incident_closed",
    ] {
        assert!(actions.contains(&want), "missing {want} in {actions:?}");
    }
    // The forged link was counted, not audited: it identifies nobody. The
    // replayed link and Bob's late approval are genuine links: audited.
    let refused: Vec<&str> = audit
        .iter()
        .filter(|r| r.entry.action == "approval_refused")
        .map(|r| r.entry.subject.as_str())
        .collect();
    assert_eq!(
        refused,
        ["already_decided", "already_decided"],
        "{actions:?}"
    );
    assert_eq!(
        refused_counts(s.as_ref(), now_ms()).await,
        vec![("invalid_link".to_string(), 1.0)]
    );
    let approved = audit
        .iter()
        .find(|r| r.entry.action == "approval_approve")
        .unwrap();
    assert_eq!(approved.entry.actor, "approver:alice@example.com");
}

#[tokio::test]
async fn expired_unknown_and_foreign_links_are_refused_with_clear_pages() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_795_600_800_000)));
    let policy = "[environments.production]\napprovers = [\"alice@example.com\"]\napproval_timeout = \"10m\"\n";
    let app = TestApp::spawn_with_clock(
        Backend::Sqlite,
        &[
            ("CRON_SECRET", CRON),
            ("APPROVAL_SIGNING_KEYS", KEYS),
            ("ROLLBACK_GUARD_POLICY_TOML", policy),
        ],
        clock.clone(),
    )
    .await;
    let s = app.store().clone();
    let t0 = clock.now().as_millis();
    bad_deploy(s.as_ref(), "production", t0).await;
    clock.advance(Duration::from_secs(6 * 60));
    cron(&app, "/api/cron/evaluate").await;
    let apr = s
        .list_docs("approval", &Default::default(), 10)
        .await
        .unwrap()
        .remove(0);

    // Mint a link the way the guard does, for someone who is not an approver.
    let keys = super::helpers::config(&[("APPROVAL_SIGNING_KEYS", KEYS)]).signing_keys;
    let claims = |who: &str| {
        rollback_guard::core::approval::token::Claims::new(
            &apr.id,
            apr.body["incident_id"].as_str().unwrap(),
            "rollback",
            who,
            "dpl_good",
            clock.now(),
            600,
            [1; 16],
        )
    };
    let mallory =
        rollback_guard::core::approval::token::mint(&keys[0], &claims("mallory@example.com"));
    let res = app
        .client
        .post(app.url("/api/approve"))
        .form(&[("token", mallory.as_str()), ("decision", "approve")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    // A link bound to another target deployment does not match the request.
    let mut other = claims("alice@example.com");
    other.target = "dpl_other".into();
    let res = app
        .get(&format!(
            "/api/approve?token={}",
            rollback_guard::core::approval::token::mint(&keys[0], &other)
        ))
        .await;
    assert_eq!(res.status(), 401);
    // Unknown request.
    let mut unknown = claims("alice@example.com");
    unknown.request = "apr_nope".into();
    assert_eq!(
        app.get(&format!(
            "/api/approve?token={}",
            rollback_guard::core::approval::token::mint(&keys[0], &unknown)
        ))
        .await
        .status(),
        404
    );
    // Expired.
    let alice = rollback_guard::core::approval::token::mint(&keys[1], &claims("alice@example.com"));
    clock.advance(Duration::from_secs(700));
    let res = app.get(&format!("/api/approve?token={alice}")).await;
    assert_eq!(res.status(), 410);
    assert!(res.text().await.unwrap().contains("expired"));
    // Missing pieces are 400 JSON.
    let res = app
        .client
        .post(app.url("/api/approve"))
        .form(&[("decision", "approve")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(json(res).await["code"], "missing_token");
    let refusals = s
        .audit_after(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.entry.action == "approval_refused")
        .count();
    // Genuine links (their signature verified) are audited: not an approver,
    // another target, an unknown request. The expired one identifies nobody
    // it can still vouch for: it is counted, not audited.
    assert_eq!(refusals, 3);
    assert_eq!(
        refused_counts(s.as_ref(), clock.now().as_millis()).await,
        vec![("link_expired".to_string(), 1.0)]
    );
}

/// Refusals of unidentified callers counted in the last hour, by reason.
async fn refused_counts(store: &dyn Store, now_ms: i64) -> Vec<(String, f64)> {
    let m = minute_of(now_ms);
    let mut rows: Vec<(String, f64)> = store
        .rollups("_refusals", "approve", m - 60, m + 1)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.name, r.value))
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows
}

#[tokio::test]
async fn staging_rolls_back_automatically_on_a_critical_verdict() {
    let vercel = fake_vercel::start(State::default()).await;
    let t0 = now_ms() - 6 * 60_000;
    let app = TestApp::spawn(
        Backend::Redis,
        &[
            ("CRON_SECRET", CRON),
            (
                "ROLLBACK_GUARD_POLICY_TOML",
                "[environments.staging]\napproval = \"auto\"\n",
            ),
            ("VERCEL_TOKEN", fake_vercel::TOKEN),
            ("VERCEL_PROJECT_ID", fake_vercel::PROJECT),
            ("VERCEL_API_BASE", &vercel.url),
        ],
    )
    .await;
    bad_deploy(app.store().as_ref(), "staging", t0).await;
    let report = cron(&app, "/api/cron/evaluate").await;
    let env = &report["result"]["environments"][0];
    assert_eq!(env["decision"]["action"], "auto_rollback", "{report}");
    assert_eq!(
        env["decision"]["rollback"]["status"], "succeeded",
        "{report}"
    );
    assert_eq!(vercel.state.lock().unwrap().accepted, 1);
}

#[tokio::test]
async fn an_unanswered_request_escalates_or_rolls_back_as_configured() {
    for (on_timeout, rolls_back) in [("hold_and_escalate", false), ("rollback", true)] {
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_795_600_800_000)));
        let slack = fake_http::start(vec![], (200, "ok")).await;
        let policy = format!("[environments.production]\napprovers = [\"alice@example.com\"]\napproval_timeout = \"10m\"\non_timeout = \"{on_timeout}\"\n");
        let app = TestApp::spawn_with_clock(
            Backend::Sqlite,
            &[
                ("CRON_SECRET", CRON),
                ("APPROVAL_SIGNING_KEYS", KEYS),
                ("ROLLBACK_GUARD_POLICY_TOML", &policy),
                ("SLACK_WEBHOOK_URL", &format!("{}/hook", slack.url)),
            ],
            clock.clone(),
        )
        .await;
        let s = app.store().clone();
        bad_deploy(s.as_ref(), "production", clock.now().as_millis()).await;
        clock.advance(Duration::from_secs(6 * 60));
        cron(&app, "/api/cron/evaluate").await;
        // The Slack message carries Approve/Reject buttons for the request.
        let first = slack
            .requests
            .lock()
            .unwrap()
            .iter()
            .find(|r| r.body.contains("rollback_decision"))
            .cloned()
            .unwrap();
        assert!(
            first.body.contains("\"action_id\":\"approve\""),
            "{}",
            first.body
        );
        clock.advance(Duration::from_secs(11 * 60));
        let report = cron(&app, "/api/cron/evaluate").await;
        let expired = &report["result"]["housekeeping"]["expired_approvals"][0];
        assert_eq!(expired["on_timeout"], on_timeout, "{report}");
        let executions = s
            .list_docs("execution", &Default::default(), 10)
            .await
            .unwrap();
        assert_eq!(!executions.is_empty(), rolls_back, "{on_timeout}: {report}");
        if !rolls_back {
            assert!(slack
                .requests
                .lock()
                .unwrap()
                .iter()
                .any(|r| r.body.contains("ESCALATION")));
        } else {
            assert_eq!(
                executions[0].body["dry_run"], true,
                "no VERCEL_TOKEN: dry run"
            );
        }
    }
}

/// An app with email approvals for production, fake Vercel and Resend.
async fn production_with_email(
    backend: Backend,
    vercel: &fake_vercel::FakeVercel,
    resend: &fake_http::Recorder,
) -> TestApp {
    let policy = "[environments.production]\napproval = \"required\"\napprovers = [\"alice@example.com\"]\nquorum = 1\n";
    TestApp::spawn(
        backend,
        &[
            ("CRON_SECRET", CRON),
            ("APPROVAL_SIGNING_KEYS", KEYS),
            ("ROLLBACK_GUARD_POLICY_TOML", policy),
            ("RESEND_API_KEY", "re_test_key_123"),
            ("EMAIL_FROM", "Rollback Guard <guard@example.com>"),
            ("RESEND_API_BASE", &resend.url),
            ("VERCEL_TOKEN", fake_vercel::TOKEN),
            ("VERCEL_PROJECT_ID", fake_vercel::PROJECT),
            ("VERCEL_API_BASE", &vercel.url),
        ],
    )
    .await
}

fn approval_links(resend: &fake_http::Recorder) -> Vec<String> {
    resend
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.path == "/emails" && r.body.contains("api/approve?token="))
        .map(|r| link_in(&r.body))
        .collect()
}

#[tokio::test]
async fn an_approval_for_a_deployment_production_no_longer_serves_is_superseded_and_calls_nothing()
{
    let resend = fake_http::start(vec![], (200, r#"{"id":"email_1"}"#)).await;
    let vercel = fake_vercel::start(State::default()).await;
    let app = production_with_email(Backend::Postgres, &vercel, &resend).await;
    let s = app.store().clone();
    bad_deploy(s.as_ref(), "production", now_ms() - 6 * 60_000).await;
    let report = cron(&app, "/api/cron/evaluate").await;
    let env = &report["result"]["environments"][0];
    assert_eq!(env["decision"]["action"], "approval_requested", "{report}");
    let link = approval_links(&resend).pop().unwrap();

    // While the link waits in the inbox, a fix is promoted.
    super::seed::deploy(s.as_ref(), "production", "dpl_fix", now_ms()).await;
    vercel.state.lock().unwrap().production = Some("dpl_fix".into());

    let res = app
        .client
        .post(app.url("/api/approve"))
        .form(&[("token", token_of(&link).as_str()), ("decision", "approve")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let page = res.text().await.unwrap();
    assert!(page.contains("Nothing was rolled back"), "{page}");
    assert!(page.contains("dpl_fix"), "{page}");
    {
        let v = vercel.state.lock().unwrap();
        assert_eq!(v.accepted, 0, "production was rolled back from the fix");
        assert!(v.rollback_calls.is_empty());
    }
    let id = env["incident"]["id"].as_str().unwrap();
    let exe = s
        .get_doc("execution", &format!("exe_{id}"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exe.status, "superseded", "{}", exe.body);
    assert_eq!(exe.body["superseded"]["serving_now"], "dpl_fix");
    let incident = s.get_doc("incident", id).await.unwrap().unwrap();
    assert_eq!(incident.status, "closed");
    assert_eq!(incident.body["outcome"]["result"], "superseded");
    // People are told, and the audit says why.
    let told = resend
        .requests
        .lock()
        .unwrap()
        .iter()
        .any(|r| r.body.contains("superseded") && r.body.contains("dpl_fix"));
    assert!(told);
    let actions: Vec<String> = s
        .audit_after(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.entry.action)
        .collect();
    assert!(
        actions.contains(&"rollback_superseded".to_string()),
        "{actions:?}"
    );
    // Reopening the link shows what happened instead of asking again.
    let page = app
        .client
        .get(&link)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("superseded"), "{page}");
    assert!(!page.contains("Approve rollback"), "{page}");
}

#[tokio::test]
async fn approval_links_that_could_not_be_delivered_are_sent_again_after_a_backoff() {
    // Resend fails the first delivery (both tries), then works.
    let resend = fake_http::start(
        vec![(500, "internal_error"), (500, "internal_error")],
        (200, r#"{"id":"email_2"}"#),
    )
    .await;
    let vercel = fake_vercel::start(State::default()).await;
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    let policy = "[environments.production]\napproval = \"required\"\napprovers = [\"alice@example.com\"]\nquorum = 1\napproval_timeout = \"2h\"\n";
    let app = TestApp::spawn_with_clock(
        Backend::Sqlite,
        &[
            ("CRON_SECRET", CRON),
            ("APPROVAL_SIGNING_KEYS", KEYS),
            ("ROLLBACK_GUARD_POLICY_TOML", policy),
            ("RESEND_API_KEY", "re_test_key_123"),
            ("EMAIL_FROM", "Rollback Guard <guard@example.com>"),
            ("RESEND_API_BASE", &resend.url),
            ("VERCEL_TOKEN", fake_vercel::TOKEN),
            ("VERCEL_PROJECT_ID", fake_vercel::PROJECT),
            ("VERCEL_API_BASE", &vercel.url),
        ],
        clock.clone(),
    )
    .await;
    let s = app.store().clone();
    let t0 = clock.now().as_millis() - 6 * 60_000;
    bad_deploy(s.as_ref(), "production", t0).await;
    traffic(
        s.as_ref(),
        "production",
        "dpl_bad",
        t0 + 6 * 60_000,
        t0 + 60 * 60_000,
        200.0,
        30.0,
    )
    .await;

    let report = cron(&app, "/api/cron/evaluate").await;
    let env = &report["result"]["environments"][0];
    assert_eq!(env["decision"]["action"], "approval_requested", "{report}");
    assert!(env["decision"]["notified_via"].is_null(), "{report}");
    // Each attempt carries its own idempotency key (a retry inside one attempt reuses it).
    let attempts = || {
        let mut keys: Vec<String> = resend
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.body.contains("api/approve?token="))
            .filter_map(|r| r.header("idempotency-key").map(String::from))
            .collect();
        keys.dedup();
        keys
    };
    assert_eq!(attempts().len(), 1);
    assert!(attempts()[0].contains("/1/"), "{:?}", attempts());

    // Not before the backoff…
    clock.advance(Duration::from_secs(30));
    cron(&app, "/api/cron/evaluate").await;
    assert_eq!(attempts().len(), 1);
    // …then again, with a fresh link that works.
    clock.advance(Duration::from_secs(60));
    let report = cron(&app, "/api/cron/evaluate").await;
    assert_eq!(attempts().len(), 2, "{report}");
    let links = approval_links(&resend);
    let apr = s
        .list_docs("approval", &Default::default(), 1)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(apr.body["notification"]["status"], "sent");
    assert_eq!(apr.body["notification"]["attempts"], 2);
    assert!(attempts()[1].contains("/2/"), "{:?}", attempts());
    // Sent once: later runs do not mail again.
    clock.advance(Duration::from_secs(600));
    cron(&app, "/api/cron/evaluate").await;
    assert_eq!(attempts().len(), 2);
    let res = app
        .client
        .post(app.url("/api/approve"))
        .form(&[
            ("token", token_of(links.last().unwrap()).as_str()),
            ("decision", "approve"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(vercel.state.lock().unwrap().accepted, 1);
}
