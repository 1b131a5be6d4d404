//! `rollback-guard check-config`, run as a process: every problem at once,
//! named by what the operator typed, and a store that does not answer is a
//! failure, not "configuration OK".

use super::helpers::{Backend, TestStore};

/// Runs the CLI with `args` in `dir` (SQLite there unless `vars` say
/// otherwise); the exit code and everything it printed.
async fn run_cli(dir: &std::path::Path, args: &[&str], vars: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_rollback-guard"));
    cmd.args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("ROLLBACK_GUARD_SQLITE_PATH", dir.join("guard.db"));
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().await.unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

async fn check_config(
    dir: &std::path::Path,
    args: &[&str],
    vars: &[(&str, &str)],
) -> (i32, String) {
    let args: Vec<&str> = std::iter::once("check-config")
        .chain(args.iter().copied())
        .collect();
    let mut vars = vars.to_vec();
    vars.push(("RUST_LOG", "error"));
    run_cli(dir, &args, &vars).await
}

const READY: &str = "[environments.production]\napprovers = [\"alice@example.com\"]\n[channels]\norder = [\"console\"]\n";

#[tokio::test]
async fn a_ready_configuration_with_a_reachable_store_is_ok() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ready.toml"), READY).unwrap();
    let (code, out) = check_config(dir.path(), &["--policy", "ready.toml"], &[]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("configuration OK"), "{out}");
    assert!(out.contains("store:    sqlite"), "{out}");
    assert!(out.contains("reachable"), "{out}");
}

#[tokio::test]
async fn a_missing_policy_file_names_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = check_config(dir.path(), &["--policy", "missing.toml"], &[]).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("--policy: cannot read missing.toml"), "{out}");
    assert!(!out.contains("ROLLBACK_GUARD_POLICY"), "{out}");
}

#[tokio::test]
async fn every_policy_error_is_listed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        "[environments.production]\nquorum = \"two\"\napprovers = [\"bob\"]\n[rules]\nsustained = \"5 minutes\"\n[database.backup]\nprovider = \"pg_dump\"\n",
    )
    .unwrap();
    let (code, out) = check_config(dir.path(), &["--policy", "bad.toml"], &[]).await;
    assert_eq!(code, 2, "{out}");
    for want in [
        "bad.toml environments.production.quorum",
        "bad.toml rules.sustained",
    ] {
        assert!(out.contains(want), "missing {want}: {out}");
    }
}

#[tokio::test]
async fn nobody_to_ask_or_an_unreachable_approver_fails_the_check() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("nobody.toml"),
        "[environments.production]\napproval = \"required\"\napprovers = []\n",
    )
    .unwrap();
    let (code, out) = check_config(dir.path(), &["--policy", "nobody.toml"], &[]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("nobody.toml environments.production.approvers: approval is required but nobody is listed"),
        "{out}"
    );
    std::fs::write(
        dir.path().join("unreachable.toml"),
        "[environments.production]\napprovers = [\"alice@example.com\"]\n[channels]\norder = [\"email\"]\n",
    )
    .unwrap();
    let (code, out) = check_config(dir.path(), &["--policy", "unreachable.toml"], &[]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("alice@example.com is not reachable: RESEND_API_KEY, EMAIL_FROM not set"),
        "{out}"
    );
}

#[tokio::test]
async fn a_store_that_does_not_answer_fails_the_check_and_names_the_host() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ready.toml"), READY).unwrap();
    // Nothing listens on this port.
    let port = crate::helpers::free_port();
    let url = format!("postgres://guard:secret-password@127.0.0.1:{port}/guard");
    let (code, out) = check_config(
        dir.path(),
        &["--policy", "ready.toml"],
        &[("DATABASE_URL", &url), ("STORE_CONNECT_TIMEOUT", "2s")],
    )
    .await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("127.0.0.1:{port}")), "{out}");
    assert!(out.to_lowercase().contains("connection refused"), "{out}");
    assert!(!out.contains("secret-password"), "{out}");
    // A live one is reachable.
    let ts = TestStore::new(Backend::Postgres).await;
    let rollback_guard::store::StoreConfig::Postgres { url, schema } = ts.config.clone() else {
        unreachable!()
    };
    let (code, out) = check_config(
        dir.path(),
        &["--policy", "ready.toml"],
        &[("DATABASE_URL", url.expose()), ("DATABASE_SCHEMA", &schema)],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("reachable"), "{out}");
}

/// `migrate` at the default log level (the NOTICE check needs it).
async fn migrate(dir: &std::path::Path, vars: &[(&str, &str)]) -> (i32, String) {
    run_cli(dir, &["migrate"], vars).await
}

#[tokio::test]
async fn migrate_says_whether_it_created_the_schema_and_logs_no_postgres_notices() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = migrate(dir.path(), &[]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("created the sqlite store's schema (version "),
        "{out}"
    );
    let (code, out) = migrate(dir.path(), &[]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("the sqlite store is at the current schema"),
        "{out}"
    );

    // Postgres, in a schema of its own: its "already exists, skipping"
    // NOTICEs stay out of the log at the default level.
    let ts = TestStore::new(Backend::Postgres).await;
    let rollback_guard::store::StoreConfig::Postgres { url, schema } = ts.config.clone() else {
        unreachable!()
    };
    let fresh = format!("{schema}_cli");
    let vars = [
        ("DATABASE_URL", url.expose()),
        ("DATABASE_SCHEMA", fresh.as_str()),
    ];
    let (code, out) = migrate(dir.path(), &vars).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("created the postgres store's schema"),
        "{out}"
    );
    let (code, out) = migrate(dir.path(), &vars).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("the postgres store is at the current schema"),
        "{out}"
    );
    assert!(!out.contains("NOTICE"), "{out}");
    let drop = rollback_guard::store::PostgresStore::connect(
        url.expose(),
        &fresh,
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    drop.drop_schema().await.unwrap();
}
