//! The `rollback-guard` CLI, run as a process against the real server.

use rollback_guard::core::approval::token::{mint, Claims};

use super::approval::{bad_deploy, cron, CRON, KEYS};
use super::helpers::{Backend, TestApp};

const OPERATOR: &str = "operator-token-0123456789";

async fn run(app: &TestApp, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_rollback-guard"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("ROLLBACK_GUARD_URL", app.url(""))
        .env("OPERATOR_TOKEN", OPERATOR)
        .env("ROLLBACK_GUARD_POLICY_TOML", "")
        .env("RUST_LOG", "error")
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A guard on SQLite with `vars`, whose production got a bad deployment
/// six minutes ago (errors enough for evaluation to open an incident).
async fn with_a_bad_deploy(vars: &[(&str, &str)]) -> TestApp {
    let app = TestApp::spawn(Backend::Sqlite, vars).await;
    let now =
        rollback_guard::core::clock::Clock::now(&rollback_guard::integrations::clock::SystemClock);
    bad_deploy(
        app.store().as_ref(),
        "production",
        now.as_millis() - 6 * 60_000,
    )
    .await;
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_check_status_preview_and_execute_rollbacks_and_approve_from_the_cli() {
    let policy =
        "[environments.production]\napprovers = [\"alice@example.com\"]\n[channels]\norder = [\"console\"]\n";
    let app = with_a_bad_deploy(&[
        ("CRON_SECRET", CRON),
        ("OPERATOR_TOKEN", OPERATOR),
        ("APPROVAL_SIGNING_KEYS", KEYS),
        ("ROLLBACK_GUARD_POLICY_TOML", policy),
    ])
    .await;
    cron(&app, "/api/cron/evaluate").await;

    let (code, out, err) = run(&app, &["status"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("incidents 1 open") && out.contains("critical") && out.contains("dpl_bad"),
        "{out}"
    );

    let (code, out, _) = run(&app, &["incidents", "--status", "open", "--json"]).await;
    assert_eq!(code, 0);
    assert!(out.ends_with('\n'), "{out:?}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let incident = list["incidents"][0]["id"].as_str().unwrap().to_string();

    // By default a table, times in UTC, filters passed on.
    let (code, out, err) = run(
        &app,
        &["incidents", "--environment", "production", "--limit", "5"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("ID")
            && lines[0].contains("ENVIRONMENT")
            && lines[0].ends_with("OPENED"),
        "{out}"
    );
    assert!(lines[1].starts_with(&incident), "{out}");
    assert!(
        lines[1].contains("production")
            && lines[1].contains("critical")
            && lines[1].contains("dpl_bad"),
        "{out}"
    );
    assert!(lines[1].ends_with(" UTC"), "{out}");
    let (_, out, _) = run(&app, &["incidents", "--environment", "staging"]).await;
    assert_eq!(out, "no incidents\n");
    let (code, out, _) = run(&app, &["incidents", "--id", &incident]).await;
    assert_eq!(code, 0);
    assert!(
        out.starts_with(&format!(
            "{incident}  production critical on dpl_bad (open)"
        )),
        "{out}"
    );
    assert!(out.contains("finding  critical error_rate:"), "{out}");

    // Approve via the approver's token: first shown, then recorded with --yes.
    let now =
        rollback_guard::core::clock::Clock::now(&rollback_guard::integrations::clock::SystemClock);
    let apr = format!("apr_{incident}");
    let keys = super::helpers::config(&[("APPROVAL_SIGNING_KEYS", KEYS)]).signing_keys;
    let token = mint(
        &keys[0],
        &Claims::new(
            &apr,
            &incident,
            "rollback",
            "alice@example.com",
            "dpl_good",
            now,
            600,
            rand::random(),
        ),
    );
    let link = app.url(&format!("/api/approve?token={token}"));
    let (code, out, _) = run(&app, &["approve", &link]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("for alice@example.com") && out.contains("nothing recorded"),
        "{out}"
    );
    assert_eq!(
        app.store()
            .get_doc("approval", &apr)
            .await
            .unwrap()
            .unwrap()
            .status,
        "pending"
    );
    let (code, out, err) = run(&app, &["approve", &token, "--yes"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("request is now approved") && out.contains("rollback: succeeded"),
        "{out}"
    );
    let (code, _, err) = run(&app, &["approve", &token, "--yes"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("409 already_decided"), "{err}");

    // Operator rollback: preview without --yes, action with it.
    let (code, out, _) = run(&app, &["rollback", "--environment", "production"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("from dpl_bad to dpl_good") && out.contains("nothing done"),
        "{out}"
    );
    // Every step of the plan the execution will run.
    assert!(
        out.contains("  - Code: Vercel Instant Rollback from dpl_bad to dpl_good"),
        "{out}"
    );
    let (code, out, err) = run(
        &app,
        &[
            "rollback",
            "--environment",
            "production",
            "--reason",
            "cli test",
            "--yes",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(": succeeded"), "{out}");
    assert!(out.contains("  step code: succeeded"), "{out}");
    assert!(
        out.contains("verification: no probes configured for this environment"),
        "{out}"
    );
    let (code, _, err) = run(&app, &["rollback", "--environment", "nowhere"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("409 no_rollback_target"), "{err}");
}

#[tokio::test]
async fn migrations_check_flags_destructive_downs_and_fails_on_missing_ones() {
    let fixtures = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/prisma/migrations"
    );
    let out =
        rollback_guard::cli::migrations_check(std::path::Path::new(fixtures), "down.sql", false);
    // Anything but safe downs fails the check, and each hazard names its objects.
    assert_eq!(out.code, 1, "{}", out.text);
    assert!(
        out.text.contains("HAZARDS    20261101000000_init  (down)"),
        "{}",
        out.text
    );
    assert!(
        out.text
            .contains("destroys_data       statement 1: drops a table (\"User\")"),
        "{}",
        out.text
    );
    assert!(out
        .text
        .contains("ok         20261124000000_add_name_index"));
    let json =
        rollback_guard::cli::migrations_check(std::path::Path::new(fixtures), "down.sql", true);
    assert_eq!(json.code, 1);
    let v: serde_json::Value = serde_json::from_str(&json.text).unwrap();
    assert_eq!(v["ok"], false);
    let init = v["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["migration"] == "20261101000000_init")
        .unwrap();
    assert_eq!(init["down"], "hazardous");
    assert_eq!(init["down_hazards"][0]["kind"], "destroys_data");
    assert_eq!(
        init["down_hazards"][0]["reason"],
        "drops a table (\"User\")"
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("20261201000000_x")).unwrap();
    std::fs::write(
        dir.path().join("20261201000000_x/migration.sql"),
        "CREATE TABLE t (id int);",
    )
    .unwrap();
    let out = rollback_guard::cli::migrations_check(dir.path(), "down.sql", false);
    assert_eq!(out.code, 1);
    assert!(out.text.contains("MISSING    20261201000000_x"));
    // An empty or wrong directory says why.
    let empty = tempfile::tempdir().unwrap();
    let out = rollback_guard::cli::migrations_check(empty.path(), "down.sql", false);
    assert_eq!(out.code, 1);
    assert!(out.text.contains("no migrations found in"), "{}", out.text);
}

#[test]
fn migrations_check_refuses_downs_that_cannot_run_in_one_transaction() {
    let dir = tempfile::tempdir().unwrap();
    for (name, down) in [
        ("20261201000000_a", r#"DROP INDEX CONCURRENTLY "i";"#),
        ("20261202000000_b", "DROP INDEX i; COMMIT; DROP INDEX j;"),
    ] {
        std::fs::create_dir(dir.path().join(name)).unwrap();
        std::fs::write(
            dir.path().join(name).join("migration.sql"),
            "ALTER TABLE t DROP COLUMN c;",
        )
        .unwrap();
        std::fs::write(dir.path().join(name).join("down.sql"), down).unwrap();
    }
    let out = rollback_guard::cli::migrations_check(dir.path(), "down.sql", false);
    assert_eq!(out.code, 1, "{}", out.text);
    assert!(
        out.text
            .contains("NOT ATOMIC 20261201000000_a  statement 1 (DROP INDEX CONCURRENTLY) cannot run inside a transaction"),
        "{}",
        out.text
    );
    assert!(
        out.text.contains(
            "NOT ATOMIC 20261202000000_b  statement 2 (COMMIT) controls transactions itself"
        ),
        "{}",
        out.text
    );
    // Up scripts that destroy data say they need a pre-migration backup.
    assert!(
        out.text
            .contains("up needs a pre-migration backup: statement 1: drops a column (c of t)"),
        "{}",
        out.text
    );
    // Prisma's enum rewrite (BEGIN … COMMIT inside the script) is accepted.
    let fixtures = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/prisma_enum/migrations"
    );
    let out =
        rollback_guard::cli::migrations_check(std::path::Path::new(fixtures), "down.sql", false);
    assert!(!out.text.contains("NOT ATOMIC"), "{}", out.text);
    // Its down still rewrites a column's type and drops a type: a hazard, named.
    assert!(
        out.text.contains("changes the type of \"User\".\"role\""),
        "{}",
        out.text
    );
}

#[tokio::test]
async fn serve_runs_the_crons_of_vercel_json_unless_told_not_to() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("vercel.json"),
        r#"{"crons": [{"path": "/api/cron/probe", "schedule": "* * * * *"}, {"path": "/api/cron/backups", "schedule": "0 0 1 1 *"}]}"#,
    )
    .unwrap();
    for no_crons in [false, true] {
        let mut args = vec!["serve", "--port", "0"];
        if no_crons {
            args.push("--no-crons");
        }
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_rollback-guard"))
            .args(&args)
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CRON_SECRET", "cron-secret-0123456789")
            .env("ROLLBACK_GUARD_SQLITE_PATH", dir.path().join("guard.db"))
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = Vec::new();
        let wait = std::time::Duration::from_secs(if no_crons { 3 } else { 10 });
        let _ = tokio::time::timeout(wait, async {
            while let Ok(Some(l)) = lines.next_line().await {
                let done = l.starts_with("cron /api/cron/probe");
                seen.push(l);
                if done {
                    break;
                }
            }
        })
        .await;
        let text = seen.join("\n");
        if no_crons {
            assert!(!text.contains("cron /api/cron/probe"), "{text}");
            assert!(!text.contains("running the crons"), "{text}");
        } else {
            assert!(
                text.contains("running the crons of vercel.json (--no-crons to turn off): /api/cron/probe (* * * * *), /api/cron/backups (0 0 1 1 *)"),
                "{text}"
            );
            // Due this minute: run at start, with the cron secret.
            assert!(text.contains("cron /api/cron/probe -> 200"), "{text}");
            assert!(!text.contains("cron /api/cron/backups"), "{text}");
        }
        let _ = child.kill().await;
    }
}

#[tokio::test]
async fn status_fails_when_the_operator_token_is_refused() {
    let app = TestApp::spawn(
        super::helpers::Backend::Sqlite,
        &[("OPERATOR_TOKEN", "another-operator-token-0123")],
    )
    .await;
    let (code, out, err) = run(&app, &["status"]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        format!("{out}{err}").contains("incidents unavailable: 401"),
        "{out}{err}"
    );
}

/// `rollback-guard serve | head -n1`, a log shipper that restarts, a test
/// harness that stops reading: a closed stdout must not take the server
/// (and its crons) down.
#[tokio::test]
async fn serve_keeps_serving_after_its_stdout_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("vercel.json"),
        r#"{"crons": [{"path": "/api/cron/probe", "schedule": "* * * * *"}]}"#,
    )
    .unwrap();
    let port = crate::helpers::free_port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_rollback-guard"))
        .args(["serve", "--port", &port.to_string()])
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CRON_SECRET", "cron-secret-0123456789")
        .env("ROLLBACK_GUARD_SQLITE_PATH", dir.path().join("guard.db"))
        .env(
            "ROLLBACK_GUARD_POLICY_TOML",
            "[environments.production]\napprovers = [\"a@example.com\"]\n[channels]\norder = [\"console\"]\n",
        )
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // The reader is gone before the server prints its first line.
    drop(child.stdout.take());
    let client = reqwest::Client::new();
    // Every print fails with EPIPE: the banner, the cron lines.
    let mut answered = false;
    for _ in 0..30 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(
            child.try_wait().unwrap().is_none(),
            "the server died when its stdout closed"
        );
        if let Ok(health) = client
            .get(format!("http://127.0.0.1:{port}/api/health"))
            .send()
            .await
        {
            assert_eq!(health.status(), 200);
            answered = true;
        }
    }
    assert!(answered, "the server never answered");
    let _ = child.kill().await;
}

#[tokio::test]
async fn a_bad_url_or_an_unreachable_guard_says_why() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_rollback-guard"))
        .args(["status", "--url", "notaurl"])
        .env_clear()
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--url \"notaurl\" is not a URL"), "{err}");
    assert!(!err.contains("builder error"), "{err}");

    let port = crate::helpers::free_port();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_rollback-guard"))
        .args(["incidents", "--url", &format!("http://127.0.0.1:{port}")])
        .env_clear()
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        err.contains("cannot reach") && err.contains("connection refused"),
        "{err}"
    );
}

#[tokio::test]
async fn status_shows_why_the_guard_is_not_ready() {
    let app = TestApp::spawn(
        super::helpers::Backend::Sqlite,
        &[
            ("OPERATOR_TOKEN", OPERATOR),
            (
                "ROLLBACK_GUARD_POLICY_TOML",
                "[environments.production]\napproval = \"required\"\napprovers = []\n",
            ),
        ],
    )
    .await;
    let (code, _, out) = run(&app, &["status"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("config    NOT READY ROLLBACK_GUARD_POLICY_TOML environments.production.approvers: approval is required but nobody is listed"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_whose_verification_fails_says_why_and_exits_1() {
    // The environment's probe hits a port nothing listens on.
    let closed = crate::helpers::free_port();
    let policy = format!(
        "[environments.production]\napprovers = [\"alice@example.com\"]\n[channels]\norder = [\"console\"]\n[[probes]]\nname = \"home\"\nurl = \"http://127.0.0.1:{closed}/\"\n"
    );
    let app = with_a_bad_deploy(&[
        ("OPERATOR_TOKEN", OPERATOR),
        ("ROLLBACK_GUARD_POLICY_TOML", &policy),
    ])
    .await;
    let (code, out, err) = run(&app, &["rollback", "--environment", "production", "--yes"]).await;
    assert_eq!(code, 1, "{out}{err}");
    let text = format!("{out}{err}").to_lowercase();
    assert!(text.contains(": succeeded"), "{text}");
    assert!(
        text.contains("verification failed: home: request failed:"),
        "{text}"
    );
    assert!(text.contains("connection refused"), "{text}");
}
