//! Database rollback on a real Postgres with a real Prisma-style migrations
//! folder (`tests/fixtures/prisma/migrations`): migrations are applied the
//! way `prisma migrate deploy` does (history row, checksum, whole file in one
//! simple query), then rolled back; `pg_dump --schema-only` must equal the
//! schema before the migration.

use std::time::Duration;

use rollback_guard::integrations::app_database::{self, DbRollbackError, PRISMA_LOCK};
use rollback_guard::integrations::migrations::{self, Migration};

use super::helpers::{pg_url, unique};

/// A scratch database, dropped at the end (even on panic).
pub struct ScratchDb {
    name: String,
    pub url: String,
}

impl ScratchDb {
    pub async fn new() -> Self {
        let name = unique("rg_app");
        let admin = app_database::connect(&pg_url()).await.unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let mut url = url::Url::parse(&pg_url()).unwrap();
        url.set_path(&format!("/{name}"));
        Self {
            name,
            url: url.to_string(),
        }
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok(admin) = app_database::connect(&pg_url()).await {
                    let _ = admin
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// What `prisma migrate deploy` does for one migration (db.md §1.2–1.3).
pub async fn prisma_deploy(client: &tokio_postgres::Client, m: &Migration) {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS _prisma_migrations (
                id VARCHAR(36) PRIMARY KEY NOT NULL, checksum VARCHAR(64) NOT NULL, finished_at TIMESTAMPTZ,
                migration_name VARCHAR(255) NOT NULL, logs TEXT, rolled_back_at TIMESTAMPTZ,
                started_at TIMESTAMPTZ NOT NULL DEFAULT now(), applied_steps_count INTEGER NOT NULL DEFAULT 0)",
        )
        .await
        .unwrap();
    let id = format!("{:032x}", rand::random::<u128>());
    client
        .execute(
            "INSERT INTO _prisma_migrations (id, checksum, migration_name) VALUES ($1, $2, $3)",
            &[&id, &m.checksum(), &m.name],
        )
        .await
        .unwrap();
    client.simple_query(&m.up_sql).await.unwrap();
    client
        .execute("UPDATE _prisma_migrations SET finished_at = now(), applied_steps_count = applied_steps_count + 1 WHERE id = $1", &[&id])
        .await
        .unwrap();
}

fn schema_dump(url: &str) -> String {
    let out = std::process::Command::new("pg_dump")
        .args([
            "--schema-only",
            "--no-owner",
            "--no-privileges",
            "--restrict-key=rollbackguard",
            url,
        ])
        .output()
        .expect("pg_dump");
    assert!(
        out.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn fixtures() -> Vec<Migration> {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/prisma/migrations");
    migrations::read_dir(&dir, "down.sql").unwrap()
}

#[tokio::test]
async fn up_then_down_restores_the_schema_exactly_and_records_prisma_history() {
    let db = ScratchDb::new().await;
    let mut client = app_database::connect(&db.url).await.unwrap();
    let m = fixtures();
    assert_eq!(
        m.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        [
            "20261101000000_init",
            "20261120000000_add_profile",
            "20261124000000_add_name_index"
        ]
    );
    prisma_deploy(&client, &m[0]).await;
    let after_init = schema_dump(&db.url);
    prisma_deploy(&client, &m[1]).await;
    let after_profile = schema_dump(&db.url);
    client
        .batch_execute(r#"INSERT INTO "User" (email, name, bio) VALUES ('a@x.io', 'A', 'hi')"#)
        .await
        .unwrap();
    prisma_deploy(&client, &m[2]).await;
    assert_ne!(schema_dump(&db.url), after_profile);

    // A non-destructive down needs no backup.
    let receipt = app_database::roll_back(&mut client, &m[2], true, false, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(receipt["history_rows_marked"], 1);
    assert_eq!(
        schema_dump(&db.url),
        after_profile,
        "schema after down equals schema before up"
    );

    // A destructive down is refused without a verified backup, and nothing changes…
    let err = app_database::roll_back(&mut client, &m[1], true, false, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        matches!(err, DbRollbackError::DestructiveWithoutBackup { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("drops a table"), "{err}");
    assert_eq!(schema_dump(&db.url), after_profile);
    // …and allowed with one.
    app_database::roll_back(&mut client, &m[1], true, true, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(schema_dump(&db.url), after_init);

    // Prisma's view: both rows are rolled back (ignored by migrate), the first is still applied.
    let rows = client.query("SELECT migration_name, rolled_back_at IS NOT NULL FROM _prisma_migrations ORDER BY migration_name", &[]).await.unwrap();
    let state: Vec<(String, bool)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        state,
        [
            ("20261101000000_init".to_string(), false),
            ("20261120000000_add_profile".into(), true),
            ("20261124000000_add_name_index".into(), true)
        ]
    );
    // Rolling back again is refused: it is no longer applied.
    let err = app_database::roll_back(&mut client, &m[2], true, false, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(err, DbRollbackError::NotApplied(_)), "{err}");
    assert_eq!(
        app_database::applied_since(&client, 0).await.unwrap(),
        ["20261101000000_init"]
    );
}

#[tokio::test]
async fn the_rollback_waits_for_prismas_lock_and_a_failing_down_changes_nothing() {
    let db = ScratchDb::new().await;
    let mut client = app_database::connect(&db.url).await.unwrap();
    let m = fixtures();
    prisma_deploy(&client, &m[0]).await;
    prisma_deploy(&client, &m[2]).await;
    let before = schema_dump(&db.url);

    // A concurrent `prisma migrate deploy` holds the lock: the guard does not run.
    let other = app_database::connect(&db.url).await.unwrap();
    other
        .execute("SELECT pg_advisory_lock($1)", &[&PRISMA_LOCK])
        .await
        .unwrap();
    let err = app_database::roll_back(&mut client, &m[2], true, false, Duration::from_millis(600))
        .await
        .unwrap_err();
    assert!(matches!(err, DbRollbackError::LockBusy), "{err}");
    assert_eq!(schema_dump(&db.url), before);
    other
        .execute("SELECT pg_advisory_unlock($1)", &[&PRISMA_LOCK])
        .await
        .unwrap();

    // A down script that fails halfway leaves schema and history untouched.
    let mut broken = m[2].clone();
    broken.down_sql =
        Some("DROP INDEX \"User_name_idx\"; ALTER TABLE \"Nope\" ADD COLUMN x int;".into());
    let err = app_database::roll_back(&mut client, &broken, true, false, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(err, DbRollbackError::DownFailed(_)), "{err}");
    assert_eq!(schema_dump(&db.url), before);
    assert_eq!(
        app_database::applied_since(&client, 0).await.unwrap().len(),
        2
    );
    // The lock was released after the failure: the next rollback goes through.
    app_database::roll_back(&mut client, &m[2], true, false, Duration::from_secs(5))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_rollback_plan_undoes_code_then_the_migrations_since_the_target_and_resumes_safely() {
    use rollback_guard::flows::execute::{self, AppDb, Deps, Limits, Plan, Progress};
    use rollback_guard::integrations::clock::SystemClock;
    let db = ScratchDb::new().await;
    let client = app_database::connect(&db.url).await.unwrap();
    let m = fixtures();
    prisma_deploy(&client, &m[0]).await;
    let before = schema_dump(&db.url);
    let since_ms =
        rollback_guard::core::clock::Clock::now(&rollback_guard::integrations::clock::SystemClock)
            .as_millis();
    tokio::time::sleep(Duration::from_millis(20)).await;
    prisma_deploy(&client, &m[2]).await;
    let t = super::helpers::TestStore::new(super::helpers::Backend::Sqlite).await;
    let app_db = AppDb {
        url: rollback_guard::core::secret::Secret::new(db.url.clone()),
        migrations_dir: std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/prisma/migrations"),
        down_file: "down.sql".into(),
        require_backup: true,
    };
    let migrations = app_database::applied_since(&client, since_ms)
        .await
        .unwrap();
    assert_eq!(migrations, ["20261124000000_add_name_index"]);
    let plan = Plan {
        environment: "production".into(),
        incident_id: "inc_db".into(),
        from_deployment: "dpl_bad".into(),
        target_deployment: "dpl_good".into(),
        requested_by: "operator".into(),
        reason: "bad migration".into(),
        dry_run: false,
        migrations,
    };
    let (id, _) = execute::start(
        t.store.as_ref(),
        &plan,
        rollback_guard::core::clock::Clock::now(&SystemClock),
    )
    .await
    .unwrap();
    // The code step needs Vercel: use the fake.
    let fake = super::fake_vercel::start(super::fake_vercel::State::default()).await;
    let vercel = rollback_guard::integrations::vercel::VercelClient::new(
        super::fake_vercel::config(&fake.url),
        rollback_guard::integrations::vercel::Retry::default(),
    );
    let deps = Deps {
        vercel: Some(&vercel),
        app_db: Some(&app_db),
        sealer: None,
    };
    let limits = Limits {
        poll_every: Duration::from_millis(20),
        ..Limits::default()
    };
    assert_eq!(
        execute::drive_with(t.store.as_ref(), deps, &SystemClock, &id, limits)
            .await
            .unwrap(),
        Progress::Succeeded
    );
    assert_eq!(schema_dump(&db.url), before);
    let doc = t.store.get_doc("execution", &id).await.unwrap().unwrap();
    let kinds: Vec<&str> = doc.body["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["code", "database"], "code first, then the schema");

    // A crash after the database commit but before the step was saved: re-running adopts it.
    let mut doc = doc;
    doc.status = "running".into();
    doc.body["steps"][1]["status"] = json_value("running");
    t.store.put_doc(&doc, Some(doc.version)).await.unwrap();
    assert_eq!(
        execute::drive_with(t.store.as_ref(), deps, &SystemClock, &id, limits)
            .await
            .unwrap(),
        Progress::Succeeded
    );
    let doc = t.store.get_doc("execution", &id).await.unwrap().unwrap();
    assert_eq!(
        doc.body["steps"][1]["detail"]["rolled_back"][0]["already_rolled_back"],
        true
    );
    assert_eq!(fake.state.lock().unwrap().accepted, 1);
}

fn json_value(s: &str) -> serde_json::Value {
    serde_json::Value::String(s.into())
}

fn enum_fixtures() -> Vec<Migration> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/prisma_enum/migrations");
    migrations::read_dir(&dir, "down.sql").unwrap()
}

async fn history(client: &tokio_postgres::Client) -> Vec<(String, bool)> {
    let rows = client
        .query(
            "SELECT migration_name, rolled_back_at IS NOT NULL FROM _prisma_migrations ORDER BY migration_name",
            &[],
        )
        .await
        .unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

#[tokio::test]
async fn prismas_begin_commit_enum_rewrite_commits_with_the_history_or_not_at_all() {
    let db = ScratchDb::new().await;
    let mut client = app_database::connect(&db.url).await.unwrap();
    let m = enum_fixtures();
    prisma_deploy(&client, &m[0]).await;
    let after_init = schema_dump(&db.url);
    prisma_deploy(&client, &m[1]).await;
    client
        .batch_execute(r#"INSERT INTO "User" (email, nickname) VALUES ('a@x.io', 'a')"#)
        .await
        .unwrap();
    // A view someone created by hand depends on the column the down drops.
    client
        .batch_execute(r#"CREATE VIEW "Nicknames" AS SELECT "nickname" FROM "User""#)
        .await
        .unwrap();
    let before = schema_dump(&db.url);

    // The enum rewrite succeeds, then DROP COLUMN fails on the view: nothing
    // may stay applied, and Prisma's history must not say "rolled back".
    let err = app_database::roll_back(&mut client, &m[1], true, true, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(err, DbRollbackError::DownFailed(_)), "{err}");
    assert!(err.to_string().contains("2BP01"), "{err}");
    assert_eq!(schema_dump(&db.url), before, "half of the down was applied");
    assert_eq!(
        history(&client).await,
        [
            ("20261201000000_init".to_string(), false),
            ("20261202000000_guest_role_and_nickname".into(), false)
        ]
    );

    // Without the view the whole down applies, in one transaction with the history.
    client
        .batch_execute(r#"DROP VIEW "Nicknames""#)
        .await
        .unwrap();
    let receipt = app_database::roll_back(&mut client, &m[1], true, true, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(receipt["history_rows_marked"], 1);
    assert_eq!(schema_dump(&db.url), after_init);
    assert_eq!(
        history(&client).await,
        [
            ("20261201000000_init".to_string(), false),
            ("20261202000000_guest_role_and_nickname".into(), true)
        ]
    );
    // The data survived the type rewrite.
    let role: String = client
        .query_one(r#"SELECT "role"::text FROM "User""#, &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(role, "USER");
}

#[tokio::test]
async fn downs_that_cannot_run_in_one_transaction_are_refused_before_anything_runs() {
    let db = ScratchDb::new().await;
    let mut client = app_database::connect(&db.url).await.unwrap();
    let m = fixtures();
    prisma_deploy(&client, &m[0]).await;
    prisma_deploy(&client, &m[2]).await;
    let before = schema_dump(&db.url);
    for down in [
        // Postgres refuses this inside a transaction (25001).
        r#"DROP INDEX CONCURRENTLY "User_name_idx";"#,
        // A COMMIT in the middle would commit the history row with half the script.
        r#"DROP INDEX "User_name_idx"; COMMIT; CREATE TABLE "Later" (x int);"#,
    ] {
        let mut hazardous = m[2].clone();
        hazardous.down_sql = Some(down.into());
        let err =
            app_database::roll_back(&mut client, &hazardous, true, true, Duration::from_secs(5))
                .await
                .unwrap_err();
        assert!(
            matches!(err, DbRollbackError::NotAtomic { .. }),
            "{down}: {err}"
        );
        assert_eq!(schema_dump(&db.url), before, "{down}");
        assert_eq!(
            app_database::applied_since(&client, 0).await.unwrap().len(),
            2,
            "{down}"
        );
    }
}

#[tokio::test]
async fn a_down_that_would_fail_is_refused_before_vercel_moves_the_code() {
    use rollback_guard::flows::execute::{self, AppDb, Deps, Limits, Plan, Progress};
    use rollback_guard::integrations::clock::SystemClock;
    let db = ScratchDb::new().await;
    let client = app_database::connect(&db.url).await.unwrap();
    let m = enum_fixtures();
    prisma_deploy(&client, &m[0]).await;
    prisma_deploy(&client, &m[1]).await;
    // A view made by hand depends on the column the down drops (2BP01 at run time).
    client
        .batch_execute(r#"CREATE VIEW "Nicknames" AS SELECT "nickname" FROM "User""#)
        .await
        .unwrap();
    let before = schema_dump(&db.url);
    let t = super::helpers::TestStore::new(super::helpers::Backend::Sqlite).await;
    let app_db = AppDb {
        url: rollback_guard::core::secret::Secret::new(db.url.clone()),
        migrations_dir: std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/prisma_enum/migrations"),
        down_file: "down.sql".into(),
        require_backup: false,
    };
    let plan = Plan {
        environment: "production".into(),
        incident_id: "inc_pre".into(),
        from_deployment: "dpl_bad".into(),
        target_deployment: "dpl_good".into(),
        requested_by: "operator".into(),
        reason: "bad migration".into(),
        dry_run: false,
        migrations: vec![m[1].name.clone()],
    };
    let now = rollback_guard::core::clock::Clock::now(&SystemClock);
    let (id, _) = execute::start(t.store.as_ref(), &plan, now).await.unwrap();
    let fake = super::fake_vercel::start(super::fake_vercel::State::default()).await;
    let vercel = rollback_guard::integrations::vercel::VercelClient::new(
        super::fake_vercel::config(&fake.url),
        rollback_guard::integrations::vercel::Retry::default(),
    );
    let deps = Deps {
        vercel: Some(&vercel),
        app_db: Some(&app_db),
        sealer: None,
    };
    let progress =
        execute::drive_with(t.store.as_ref(), deps, &SystemClock, &id, Limits::default())
            .await
            .unwrap();
    assert!(
        matches!(progress, Progress::Refused(ref e) if e.contains("2BP01") && e.contains(&m[1].name)),
        "{progress:?}"
    );
    assert_eq!(fake.state.lock().unwrap().accepted, 0, "Vercel was called");
    assert!(fake.state.lock().unwrap().rollback_calls.is_empty());
    assert_eq!(schema_dump(&db.url), before, "the rehearsal left a trace");
    assert_eq!(
        history(&client).await,
        [
            ("20261201000000_init".to_string(), false),
            ("20261202000000_guest_role_and_nickname".into(), false)
        ]
    );
    let doc = t.store.get_doc("execution", &id).await.unwrap().unwrap();
    assert_eq!(doc.status, "refused");
    assert!(doc.body["steps"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["status"] == "pending"));
    // Driving again does not act either.
    let again = execute::drive_with(t.store.as_ref(), deps, &SystemClock, &id, Limits::default())
        .await
        .unwrap();
    assert!(matches!(again, Progress::Refused(_)));
    assert_eq!(fake.state.lock().unwrap().accepted, 0);
}

const OPERATOR: &str = "operator-token-0123456789";

/// A guard over `db` with the fixture migrations folder, the operator token,
/// and Vercel when given (else rollbacks are dry runs).
async fn app_over(
    db: &ScratchDb,
    vercel: Option<&super::fake_vercel::FakeVercel>,
) -> super::helpers::TestApp {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/prisma/migrations");
    let policy = format!("[database]\nmigrations_dir = \"{}\"\n", dir.display());
    let mut vars = vec![
        ("CRON_SECRET", super::seed::CRON.to_string()),
        ("OPERATOR_TOKEN", OPERATOR.to_string()),
        ("APP_DATABASE_URL", db.url.clone()),
        ("ROLLBACK_GUARD_POLICY_TOML", policy),
    ];
    if let Some(v) = vercel {
        vars.push(("VERCEL_TOKEN", super::fake_vercel::TOKEN.to_string()));
        vars.push(("VERCEL_PROJECT_ID", super::fake_vercel::PROJECT.to_string()));
        vars.push(("VERCEL_API_BASE", v.url.clone()));
    }
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    super::helpers::TestApp::spawn(super::helpers::Backend::Sqlite, &vars).await
}

#[tokio::test]
async fn migrations_of_the_targets_own_build_stay_and_the_preview_shows_the_plan_that_runs() {
    use super::helpers::json;
    use super::seed::{cron, deploy, traffic};
    let db = ScratchDb::new().await;
    let client = app_database::connect(&db.url).await.unwrap();
    let m = fixtures();
    let vercel = super::fake_vercel::start(super::fake_vercel::State::default()).await;
    let app = app_over(&db, Some(&vercel)).await;
    let s = app.store().clone();
    let now =
        rollback_guard::core::clock::Clock::now(&rollback_guard::integrations::clock::SystemClock)
            .as_millis();
    // dpl_good was created, then its build applied two migrations, then it went live.
    deploy(s.as_ref(), "production", "dpl_good", now - 2 * 3_600_000).await;
    prisma_deploy(&client, &m[0]).await;
    prisma_deploy(&client, &m[1]).await;
    let after_good = schema_dump(&db.url);
    traffic(
        s.as_ref(),
        "production",
        "dpl_good",
        now - 600_000,
        now,
        200.0,
        0.0,
    )
    .await;
    cron(&app, "/api/cron/evaluate").await;
    // dpl_bad ships with one more migration and fails.
    deploy(s.as_ref(), "production", "dpl_bad", now - 6 * 60_000).await;
    prisma_deploy(&client, &m[2]).await;
    s.set_last_known_good("production", "dpl_good")
        .await
        .unwrap();

    let preview = app
        .client
        .post(app.url("/api/rollback"))
        .bearer_auth(OPERATOR)
        .json(&serde_json::json!({"environment": "production", "preview": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(preview.status(), 200);
    let plan = json(preview).await["plan"].clone();
    let kinds: Vec<&str> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    // dpl_good's env snapshot was taken while it was current: a config step too.
    assert_eq!(kinds, ["code", "config", "database"], "{plan}");
    let database = &plan["steps"][2];
    let names: Vec<&str> = database["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["20261124000000_add_name_index"],
        "only what was applied since dpl_good was current: {plan}"
    );
    assert!(
        database["attribution"]
            .as_str()
            .unwrap()
            .contains("recorded"),
        "{plan}"
    );
    assert_eq!(database["migrations"][0]["hazards"], serde_json::json!([]));
    assert_eq!(plan["would_refuse"], serde_json::json!([]));

    // The execution runs that plan, and only that.
    let res = app
        .client
        .post(app.url("/api/rollback"))
        .bearer_auth(OPERATOR)
        .json(&serde_json::json!({"environment": "production"}))
        .send()
        .await
        .unwrap();
    let body = json(res).await;
    assert_eq!(body["rollback"]["status"], "succeeded", "{body}");
    assert_eq!(body["plan"]["steps"], plan["steps"]);
    let exe = s
        .get_doc(
            "execution",
            body["rollback"]["execution_id"].as_str().unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        exe.body["migrations"],
        serde_json::json!(["20261124000000_add_name_index"])
    );
    assert_eq!(exe.body["plan"]["steps"], plan["steps"]);
    assert_eq!(schema_dump(&db.url), after_good);
}

#[tokio::test]
async fn a_preview_and_a_dry_run_say_what_a_real_run_would_refuse() {
    use super::helpers::json;
    use super::seed::deploy;
    let db = ScratchDb::new().await;
    let client = app_database::connect(&db.url).await.unwrap();
    let m = fixtures();
    // No VERCEL_TOKEN: a dry run.
    let app = app_over(&db, None).await;
    let s = app.store().clone();
    let now =
        rollback_guard::core::clock::Clock::now(&rollback_guard::integrations::clock::SystemClock)
            .as_millis();
    deploy(s.as_ref(), "production", "dpl_good", now - 2 * 3_600_000).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Applied after dpl_good was created, with no record: attributed by time,
    // and add_profile's down drops a table (no verified backup).
    prisma_deploy(&client, &m[0]).await;
    prisma_deploy(&client, &m[1]).await;
    deploy(s.as_ref(), "production", "dpl_bad", now - 6 * 60_000).await;
    let before = schema_dump(&db.url);
    let post = |preview: bool| {
        app.client
            .post(app.url("/api/rollback"))
            .bearer_auth(OPERATOR)
            .json(&serde_json::json!({"environment": "production", "preview": preview}))
            .send()
    };
    let plan = json(post(true).await.unwrap()).await["plan"].clone();
    assert_eq!(plan["dry_run"], true);
    assert!(
        plan["steps"][1]["attribution"]
            .as_str()
            .unwrap()
            .starts_with("by time"),
        "{plan}"
    );
    let refuse = plan["would_refuse"].to_string();
    assert!(
        refuse.contains(
            "20261120000000_add_profile destroys data and has no verified pre-migration backup"
        ),
        "{plan}"
    );
    let drops = plan["steps"][1]["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "20261120000000_add_profile")
        .unwrap()["hazards"]
        .to_string();
    assert!(drops.contains("drops a table"), "{plan}");
    // The dry run refuses exactly that, instead of reporting success.
    let body = json(post(false).await.unwrap()).await;
    assert_eq!(body["rollback"]["status"], "refused", "{body}");
    assert!(
        body["rollback"]["error"]
            .as_str()
            .unwrap()
            .contains("no verified pre-migration backup"),
        "{body}"
    );
    assert_eq!(schema_dump(&db.url), before);
}
