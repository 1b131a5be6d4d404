//! Every `api/*.rs` binary starts like Vercel's dev runner starts it
//! (`VERCEL_DEV_PORT`, waiting for `Dev server listening: <port>`) and
//! answers its own route through the shared router.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const CRON_SECRET: &str = "cron-secret-0123456789";

struct Function {
    child: Child,
    port: u16,
}

/// Starts a function binary in an empty directory on SQLite, and waits for its
/// readiness line.
async fn start(exe: &str, dir: &std::path::Path) -> Function {
    let port = crate::helpers::free_port();
    let mut child = Command::new(exe)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("VERCEL_DEV", "1")
        .env("VERCEL_DEV_PORT", port.to_string())
        .env("CRON_SECRET", CRON_SECRET)
        .env("ROLLBACK_GUARD_SQLITE_PATH", dir.join("guard.db"))
        // A policy the guard can act on (health is 503 until someone is listed).
        .env(
            "ROLLBACK_GUARD_POLICY_TOML",
            "[environments.production]\napprovers = [\"a@example.com\"]\n[channels]\norder = [\"console\"]\n",
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {exe}: {e}"));
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let want = format!("Dev server listening: {port}");
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.trim() == want {
                return;
            }
        }
        panic!("{exe} exited before printing {want:?}");
    })
    .await
    .unwrap_or_else(|_| panic!("{exe} did not start within 30 s"));
    Function { child, port }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_function_binary_starts_and_answers_its_route() {
    let cases: &[(&str, &str, &str, u16)] = &[
        (env!("CARGO_BIN_EXE_health"), "GET", "/api/health", 200),
        (env!("CARGO_BIN_EXE_alerts"), "PUT", "/api/alerts", 405),
        (env!("CARGO_BIN_EXE_approve"), "PUT", "/api/approve", 405),
        (env!("CARGO_BIN_EXE_rollback"), "GET", "/api/rollback", 405),
        (
            env!("CARGO_BIN_EXE_incidents"),
            "POST",
            "/api/incidents",
            405,
        ),
        (
            env!("CARGO_BIN_EXE_dashboard"),
            "PUT",
            "/api/dashboard",
            405,
        ),
        (
            env!("CARGO_BIN_EXE_cron_probe"),
            "GET",
            "/api/cron/probe",
            401,
        ),
        (
            env!("CARGO_BIN_EXE_cron_evaluate"),
            "GET",
            "/api/cron/evaluate",
            401,
        ),
        (
            env!("CARGO_BIN_EXE_cron_backups"),
            "GET",
            "/api/cron/backups",
            401,
        ),
        (
            env!("CARGO_BIN_EXE_slack_actions"),
            "GET",
            "/api/slack/actions",
            405,
        ),
    ];
    let client = reqwest::Client::new();
    for (exe, method, path, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut f = start(exe, dir.path()).await;
        let url = format!("http://127.0.0.1:{}{path}", f.port);
        let res = client
            .request(method.parse().unwrap(), &url)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let body: serde_json::Value = res
            .json()
            .await
            .unwrap_or_else(|e| panic!("{path}: body is not JSON: {e}"));
        assert_eq!(status, *want, "{method} {path}: {body}");
        if *want == 200 {
            assert_eq!(body["status"], "ok", "{body}");
            assert_eq!(body["store"]["backend"], "sqlite");
        } else {
            assert!(
                body["code"].is_string() && body["detail"].is_string(),
                "{body}"
            );
        }
        // The runtime's own liveness endpoint still answers.
        let ping = client
            .get(format!("http://127.0.0.1:{}/_vercel/ping", f.port))
            .send()
            .await
            .unwrap();
        assert_eq!(ping.status(), 200);
        f.child.kill().await.unwrap();
    }
}
