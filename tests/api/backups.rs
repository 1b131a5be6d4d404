//! Backups: the `/api/cron/backups` checks with the pg_dump provider (an
//! incident while they fail, resolved when they pass), pre-migration backups
//! for destructive migrations, and `backup create` / `backup verify` against
//! a real Postgres.

use std::sync::Arc;
use std::time::Duration;

use rollback_guard::core::clock::{Clock, ManualClock, Timestamp};
use rollback_guard::flows::backup::local;
use rollback_guard::integrations::clock::SystemClock;
use rollback_guard::store::DocFilter;

use super::approval::{cron, CRON};
use super::database_rollback::{fixtures, prisma_deploy, ScratchDb};
use super::helpers::{Backend, TestApp};

#[tokio::test]
async fn stale_backups_open_an_incident_that_resolves_once_a_fresh_one_exists() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    let policy = "[database.backup]\nprovider = \"pg_dump\"\nmax_age = \"26h\"\n";
    let app = TestApp::spawn_with_clock(
        Backend::Sqlite,
        &[
            ("CRON_SECRET", CRON),
            ("ROLLBACK_GUARD_POLICY_TOML", policy),
            ("BACKUP_DIR", dir.path().to_str().unwrap()),
        ],
        clock.clone(),
    )
    .await;
    // Only an old dump, and an empty (unfinished) recent one.
    let old = clock.now().minus(Duration::from_secs(30 * 3600));
    std::fs::write(
        dir.path()
            .join(rollback_guard::integrations::backup::pg_dump::file_name(
                old, "full",
            )),
        b"PGDMP...",
    )
    .unwrap();
    std::fs::write(
        dir.path()
            .join(rollback_guard::integrations::backup::pg_dump::file_name(
                clock.now(),
                "full",
            )),
        b"",
    )
    .unwrap();
    let report = cron(&app, "/api/cron/backups").await;
    assert_eq!(report["result"]["ok"], false, "{report}");
    assert_eq!(report["result"]["checks"][0]["check"], "freshness");
    assert_eq!(report["result"]["checks"][0]["detail"]["age_s"], 30 * 3600);
    assert_eq!(
        report["result"]["incident"]["transition"],
        "incident_opened"
    );
    let open = app
        .store()
        .list_docs(
            "incident",
            &DocFilter {
                scope: Some("database".into()),
                status: Some("open".into()),
            },
            5,
        )
        .await
        .unwrap();
    assert_eq!(open.len(), 1);
    assert!(open[0].body["verdict"]["findings"][0]["summary"]
        .as_str()
        .unwrap()
        .contains("30 h old"));

    // Still failing next minute: the same incident stays open (no duplicate).
    clock.advance(Duration::from_secs(60));
    assert_eq!(
        cron(&app, "/api/cron/backups").await["result"]["incident"]["transition"],
        "still_open"
    );

    std::fs::write(
        dir.path()
            .join(rollback_guard::integrations::backup::pg_dump::file_name(
                clock.now(),
                "full",
            )),
        b"PGDMP...fresh",
    )
    .unwrap();
    clock.advance(Duration::from_secs(60));
    let report = cron(&app, "/api/cron/backups").await;
    assert_eq!(report["result"]["ok"], true, "{report}");
    assert_eq!(
        report["result"]["incident"]["transition"],
        "incident_resolved"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destructive_migrations_need_a_pre_migration_backup_and_verify_restores_it() {
    let db = ScratchDb::new().await;
    let client = rollback_guard::integrations::app_database::connect(&db.url)
        .await
        .unwrap();
    let m = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let policy = format!(
        "[database]\nmigrations_dir = \"{}\"\n[database.backup]\nprovider = \"pg_dump\"\n",
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/prisma/migrations"
        )
    );
    let app = TestApp::spawn(
        Backend::Postgres,
        &[
            ("CRON_SECRET", CRON),
            ("ROLLBACK_GUARD_POLICY_TOML", &policy),
            ("BACKUP_DIR", dir.path().to_str().unwrap()),
            ("APP_DATABASE_URL", &db.url),
        ],
    )
    .await;
    let store = app.store().clone();
    // init goes in without a backup; add_profile (destructive down) gets one first.
    prisma_deploy(&client, &m[0]).await;
    client
        .batch_execute(r#"INSERT INTO "User" (email) VALUES ('a@x.io'), ('b@x.io')"#)
        .await
        .unwrap();
    let pre = local::create(
        store.as_ref(),
        &db.url,
        dir.path(),
        &format!("pre-migration/{}", m[1].name),
        SystemClock.now(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    prisma_deploy(&client, &m[1]).await;
    local::create(
        store.as_ref(),
        &db.url,
        dir.path(),
        "full",
        SystemClock.now(),
    )
    .await
    .unwrap();

    let report = cron(&app, "/api/cron/backups").await;
    let pre_check = &report["result"]["checks"][2];
    assert_eq!(pre_check["check"], "pre_migration");
    assert_eq!(
        pre_check["detail"]["missing"],
        serde_json::json!([m[0].name]),
        "{report}"
    );
    assert_eq!(
        report["result"]["checks"][0]["ok"], true,
        "the full dump is fresh"
    );

    // Verify the pre-migration dump: restored into a scratch database and checked.
    let receipt = local::verify(store.as_ref(), &db.url, &pre, SystemClock.now())
        .await
        .unwrap();
    assert_eq!(receipt["checks"]["rows"]["public.\"User\""], 2, "{receipt}");
    assert_eq!(receipt["checks"]["prisma_migrations_applied"], 1);
    let record = store
        .get_doc("backup", &format!("pre_migration:{}", m[1].name))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        record.status, "verified",
        "this is what lets the destructive down run"
    );
    // The CLI's `backup verify` says what it did and nothing alarming: the
    // scratch database going away is not a warning.
    let guard = super::helpers::TestStore::new(Backend::Postgres).await;
    let rollback_guard::store::StoreConfig::Postgres { url, schema } = guard.config.clone() else {
        unreachable!()
    };
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_rollback-guard"))
        .args(["backup", "verify", "--file", pre.to_str().unwrap()])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", url.expose())
        .env("DATABASE_SCHEMA", &schema)
        .env("ROLLBACK_GUARD_POLICY_TOML", &policy)
        .env("BACKUP_DIR", dir.path())
        .env("APP_DATABASE_URL", &db.url)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("WARN"), "{stderr}");

    // A corrupt dump fails verification, and says so.
    let bad = dir
        .path()
        .join(rollback_guard::integrations::backup::pg_dump::file_name(
            Timestamp::from_millis(0),
            "full",
        ));
    std::fs::write(&bad, b"not a dump").unwrap();
    let err = local::verify(store.as_ref(), &db.url, &bad, SystemClock.now())
        .await
        .unwrap_err();
    assert!(err.contains("pg_restore failed"), "{err}");
    let record = store
        .get_doc(
            "backup",
            &format!("full:{}", bad.file_name().unwrap().to_string_lossy()),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.status, "failed");
    assert!(store
        .audit_after(0, 100)
        .await
        .unwrap()
        .iter()
        .any(|r| r.entry.action == "backup_failed"));
}

#[tokio::test]
async fn neon_branches_and_snapshots_are_backups_and_its_history_is_the_pitr_window() {
    let body_project = r#"{"project":{"id":"prj-1","history_retention_seconds":86400}}"#;
    let now = SystemClock.now();
    let snap_at = now.minus(Duration::from_secs(3600)).to_rfc3339();
    let branches = format!(
        r#"{{"branches":[{{"id":"br-main","name":"main","created_at":"2026-01-01T00:00:00Z","current_state":"ready"}},{{"id":"br-pre","name":"pre-migration/20261120000000_add_profile","created_at":"{snap_at}","current_state":"ready"}}]}}"#
    );
    let snapshots = format!(
        r#"{{"snapshots":[{{"id":"snap-1","name":"nightly","created_at":"{snap_at}","expires_at":null}}]}}"#
    );
    let routes: Vec<(&'static str, super::helpers::Canned)> = vec![
        (
            "/api/v2/projects/prj-1",
            super::helpers::Canned {
                status: 200,
                body: Box::leak(body_project.to_string().into_boxed_str()),
                delay: Duration::ZERO,
            },
        ),
        (
            "/api/v2/projects/prj-1/branches",
            super::helpers::Canned {
                status: 200,
                body: Box::leak(branches.into_boxed_str()),
                delay: Duration::ZERO,
            },
        ),
        (
            "/api/v2/projects/prj-1/snapshots",
            super::helpers::Canned {
                status: 200,
                body: Box::leak(snapshots.into_boxed_str()),
                delay: Duration::ZERO,
            },
        ),
    ];
    let base = super::helpers::fake_upstream(routes).await;
    let src = rollback_guard::integrations::backup::neon::Neon {
        http: reqwest::Client::new(),
        base: format!("{base}/api/v2"),
        api_key: rollback_guard::core::secret::Secret::new("neon-key-123"),
        project_id: "prj-1".into(),
    };
    use rollback_guard::integrations::backup::BackupSource;
    let list = src.list().await.unwrap();
    assert_eq!(list.len(), 2, "the main branch is not a backup: {list:?}");
    assert!(list.iter().any(|b| b.label == "full" && b.id == "snap-1"));
    assert!(list
        .iter()
        .any(|b| b.migration() == Some("20261120000000_add_profile")));
    assert_eq!(
        src.history_window().await.unwrap(),
        Some(Duration::from_secs(86_400))
    );
    let results = rollback_guard::core::backup::check(
        &list,
        Some(Duration::from_secs(86_400)),
        &Default::default(),
        &[],
        now,
    );
    assert!(
        results[0].ok && !results[1].ok,
        "fresh snapshot, but 1 day of history is less than the 7 days required: {results:?}"
    );
}

/// `moto_server` (PyPI `moto[server]`) on a free loopback port.
struct Moto {
    child: tokio::process::Child,
    url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn start_moto() -> Moto {
    let port = crate::helpers::free_port();
    let child = tokio::process::Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("moto_server (pip install 'moto[server]'; .ci/run does)");
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..200 {
        if reqwest::get(format!("{url}/moto-api/")).await.is_ok() {
            return Moto { child, url };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("moto_server did not start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_provider_reads_backups_from_a_real_s3_compatible_server() {
    use rollback_guard::integrations::backup::pg_dump::file_name;
    use rollback_guard::integrations::backup::BackupSource;
    let moto = start_moto().await;
    let s3 = rollback_guard::integrations::backup::s3::S3 {
        http: reqwest::Client::new(),
        endpoint: url::Url::parse(&moto.url).unwrap(),
        bucket: "backups".into(),
        prefix: "shop/".into(),
        region: "us-east-1".into(),
        access_key: "AKIAIOSFODNN7EXAMPLE".into(),
        secret_key: rollback_guard::core::secret::Secret::new(
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ),
    };
    s3.put("", Vec::new()).await.expect("create bucket");
    let now = SystemClock.now();
    let h = |n: u64| now.minus(Duration::from_secs(n * 3600));
    for (at, label, body) in [
        (h(50), "full", b"PGDMP old".to_vec()),
        (h(2), "full", b"PGDMP fresh".to_vec()),
        (
            h(1),
            "pre-migration/20261120000000_add_profile",
            b"PGDMP pre".to_vec(),
        ),
        (h(0), "full", Vec::new()),
    ] {
        s3.put(&format!("shop/{}", file_name(at, label)), body)
            .await
            .unwrap();
    }
    s3.put("other-app/20261125T000000Z_full.dump", b"x".to_vec())
        .await
        .unwrap();
    let list = s3.list().await.unwrap();
    assert_eq!(list.len(), 4, "only the prefix: {list:?}");
    assert_eq!(
        list.iter().filter(|b| !b.ready).count(),
        1,
        "the empty object is not usable"
    );
    let results = rollback_guard::core::backup::check(&list, None, &Default::default(), &[], now);
    assert!(results[0].ok, "{results:?}");
    assert_eq!(
        results[0].detail["age_s"],
        2 * 3600,
        "newest usable full backup, by the time in its key"
    );
    assert!(list
        .iter()
        .any(|b| b.migration() == Some("20261120000000_add_profile")));
    // A missing bucket is a clear error, not an empty list.
    let missing = rollback_guard::integrations::backup::s3::S3 {
        bucket: "no-such-bucket".into(),
        ..s3
    };
    let err = missing.list().await.unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
}
