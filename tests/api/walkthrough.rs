//! The README's local walkthrough, run as written: `serve` with
//! `examples/local.env`, `scripts/try-locally` (signed Vercel and generic
//! deliveries through curl and openssl), the approval link the console
//! channel prints, an approval, and the console's report of the dry-run
//! rollback.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

fn example_env() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/local.env"))
        .unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// Waits for a line of the server's stdout containing `needle`.
async fn line_with(lines: &mut mpsc::UnboundedReceiver<String>, needle: &str) -> String {
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(l) = lines.recv().await {
            if l.contains(needle) {
                return l;
            }
        }
        panic!("the server exited before printing {needle:?}");
    })
    .await
    .unwrap_or_else(|_| panic!("the server never printed {needle:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walkthrough_runs_end_to_end_on_the_console_channel() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    let port = crate::helpers::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut vars = example_env();
    for (k, v) in vars.iter_mut() {
        match k.as_str() {
            "PUBLIC_BASE_URL" => *v = base.clone(),
            "ROLLBACK_GUARD_SQLITE_PATH" => *v = dir.path().join("try.db").display().to_string(),
            "ROLLBACK_GUARD_POLICY" => *v = format!("{root}/{v}"),
            _ => {}
        }
    }
    let mut server = tokio::process::Command::new(env!("CARGO_BIN_EXE_rollback-guard"))
        .args(["serve", "--port", &port.to_string(), "--no-crons"])
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (tx, mut lines) = mpsc::unbounded_channel();
    let mut out = BufReader::new(server.stdout.take().unwrap()).lines();
    tokio::spawn(async move {
        while let Ok(Some(l)) = out.next_line().await {
            let _ = tx.send(l);
        }
    });
    line_with(&mut lines, "listening on").await;

    let script = tokio::process::Command::new(format!("{root}/scripts/try-locally"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&script.stdout).into_owned()
        + &String::from_utf8_lossy(&script.stderr);
    assert!(script.status.success(), "{said}");
    assert!(said.contains("\"action\":\"approval_requested\""), "{said}");

    line_with(
        &mut lines,
        "=== notification: Approve rollback of production? ===",
    )
    .await;
    let link_line = line_with(&mut lines, "you@example.com: http").await;
    let link = link_line.split_whitespace().last().unwrap().to_string();
    assert!(
        link.starts_with(&format!("{base}/api/approve?token=")),
        "{link}"
    );

    let client = reqwest::Client::new();
    let page = client.get(&link).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let token = link.split("token=").nth(1).unwrap();
    let res = client
        .post(format!("{base}/api/approve"))
        .form(&[("token", token), ("decision", "approve")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let outcome = line_with(
        &mut lines,
        "=== notification: [production] rolled back to dpl_good",
    )
    .await;
    assert!(outcome.contains("dry run"), "{outcome}");
    // No probes in the example policy: the report says nothing was checked.
    line_with(
        &mut lines,
        "Verification: no probes are configured for production",
    )
    .await;
    let _ = server.kill().await;
}
