//! `kill -9` of the real server (`rollback-guard serve` on Postgres) at the
//! worst moment: the approver's POST has recorded the decision and Vercel
//! has accepted the rollback, but the job is still running and nothing else
//! is recorded. A new process's evaluate run must finish it with exactly one
//! rollback (the one in flight is adopted, not requested again).

use std::process::Stdio;
use std::time::Duration;

use rollback_guard::core::clock::Clock;
use rollback_guard::integrations::clock::SystemClock;
use rollback_guard::store::StoreConfig;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::fake_http;
use super::fake_vercel::{self, State};
use super::helpers::{Backend, TestStore};
use super::seed::{traffic, CRON};

const KEYS: &str = super::approval::KEYS;

struct Server {
    child: Child,
    url: String,
}

async fn start(vars: &[(&str, String)], dir: &std::path::Path) -> Server {
    let port = crate::helpers::free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rollback-guard"));
    cmd.args(["serve", "--port", &port.to_string()])
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("listening on") {
                return;
            }
        }
        panic!("server exited before listening");
    })
    .await
    .expect("server did not start");
    Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

async fn evaluate(client: &reqwest::Client, s: &Server) -> serde_json::Value {
    client
        .get(format!("{}/api/cron/evaluate", s.url))
        .bearer_auth(CRON)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_after_vercel_accepted_the_rollback_ends_in_exactly_one_rollback() {
    let ts = TestStore::new(Backend::Postgres).await;
    let StoreConfig::Postgres { url, schema } = ts.config.clone() else {
        unreachable!()
    };
    let resend = fake_http::start(vec![], (200, r#"{"id":"email_1"}"#)).await;
    // The alias job stays in progress until the test lets it finish.
    let vercel = fake_vercel::start(State {
        polls_until_done: u32::MAX,
        ..State::default()
    })
    .await;
    let now = SystemClock.now().as_millis();
    let t0 = now - 6 * 60_000;
    super::approval::bad_deploy(ts.store.as_ref(), "production", t0).await;
    traffic(
        ts.store.as_ref(),
        "production",
        "dpl_bad",
        t0 + 6 * 60_000,
        t0 + 30 * 60_000,
        200.0,
        30.0,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let vars = [
        ("DATABASE_URL", url.expose().to_string()),
        ("DATABASE_SCHEMA", schema),
        ("CRON_SECRET", CRON.to_string()),
        ("APPROVAL_SIGNING_KEYS", KEYS.to_string()),
        (
            "ROLLBACK_GUARD_POLICY_TOML",
            "[environments.production]\napproval = \"required\"\napprovers = [\"alice@example.com\"]\nquorum = 1\napproval_timeout = \"2h\"\n".to_string(),
        ),
        ("RESEND_API_KEY", "re_test_key_123".to_string()),
        ("EMAIL_FROM", "Rollback Guard <guard@example.com>".to_string()),
        ("RESEND_API_BASE", resend.url.clone()),
        ("VERCEL_TOKEN", fake_vercel::TOKEN.to_string()),
        ("VERCEL_PROJECT_ID", fake_vercel::PROJECT.to_string()),
        ("VERCEL_API_BASE", vercel.url.clone()),
    ];
    let client = reqwest::Client::new();
    let mut first = start(&vars, dir.path()).await;
    let report = evaluate(&client, &first).await;
    assert_eq!(
        report["result"]["environments"][0]["decision"]["action"], "approval_requested",
        "{report}"
    );
    let link = {
        let reqs = resend.requests.lock().unwrap();
        let mail = reqs
            .iter()
            .find(|r| r.body.contains("api/approve?token="))
            .expect("approval mail");
        let v: serde_json::Value = serde_json::from_str(&mail.body).unwrap();
        let text = v["text"].as_str().unwrap().to_string();
        let start = text.find("token=").unwrap() + "token=".len();
        text[start..].split_whitespace().next().unwrap().to_string()
    };
    // The approver confirms; the server requests the rollback and waits on Vercel…
    let post = tokio::spawn({
        let client = client.clone();
        let url = format!("{}/api/approve", first.url);
        async move {
            let _ = client
                .post(url)
                .form(&[("token", link.as_str()), ("decision", "approve")])
                .send()
                .await;
        }
    });
    tokio::time::timeout(Duration::from_secs(20), async {
        while vercel.state.lock().unwrap().accepted == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the rollback was never requested");
    // …and dies.
    first.child.start_kill().unwrap();
    first.child.wait().await.unwrap();
    let _ = post.await;
    vercel.state.lock().unwrap().polls_until_done = 0;

    // A new process. The killed run spent this minute's evaluate claim and
    // still holds the execution lease until it expires (30 s, no heartbeat):
    // the next minutes' runs finish what was started.
    let second = start(&vars, dir.path()).await;
    let exe_id = {
        let incidents = ts
            .store
            .list_docs("incident", &Default::default(), 5)
            .await
            .unwrap();
        format!("exe_{}", incidents[0].id)
    };
    for _ in 0..3 {
        let minute_left = 60_000 - SystemClock.now().as_millis() % 60_000;
        tokio::time::sleep(Duration::from_millis(minute_left as u64 + 200)).await;
        let report = evaluate(&client, &second).await;
        assert_eq!(report["status"], "ran", "{report}");
        let exe = ts
            .store
            .get_doc("execution", &exe_id)
            .await
            .unwrap()
            .unwrap();
        if exe.status == "succeeded" {
            break;
        }
    }
    assert_eq!(
        vercel.state.lock().unwrap().accepted,
        1,
        "the rollback was requested again"
    );
    let incidents = ts
        .store
        .list_docs("incident", &Default::default(), 5)
        .await
        .unwrap();
    let exe = ts
        .store
        .get_doc("execution", &format!("exe_{}", incidents[0].id))
        .await
        .unwrap()
        .expect("execution");
    assert_eq!(exe.status, "succeeded", "{}", exe.body);
    assert_eq!(incidents[0].status, "closed", "{}", incidents[0].body);
}
