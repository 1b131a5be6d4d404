use std::collections::HashMap;

use super::*;

fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    // Point the policy at inline defaults so tests never depend on the working directory.
    Config::from_lookup(&move |k| {
        map.get(k)
            .cloned()
            .or_else(|| (k == "ROLLBACK_GUARD_POLICY_TOML").then(String::new))
    })
}

fn error_keys(e: &ConfigErrors) -> Vec<&str> {
    e.0.iter().map(|e| e.key.as_str()).collect()
}

#[test]
fn no_variables_means_embedded_sqlite() {
    let c = load(&[]).unwrap();
    assert_eq!(
        c.store,
        StoreConfig::Sqlite {
            path: DEFAULT_SQLITE_PATH.into()
        }
    );
    assert_eq!(c.body_limit, DEFAULT_BODY_LIMIT);
    assert!(c.warnings().iter().any(|w| w.contains("CRON_SECRET")));
}

#[test]
fn database_url_selects_postgres_and_prefers_the_unpooled_url() {
    let c = load(&[
        ("DATABASE_URL", "postgres://u:p@pooler.example/db"),
        ("DATABASE_URL_UNPOOLED", "postgres://u:p@direct.example/db"),
    ])
    .unwrap();
    match c.store {
        StoreConfig::Postgres { url, schema } => {
            assert_eq!(url.expose(), "postgres://u:p@direct.example/db");
            assert_eq!(schema, "rollback_guard");
        }
        other => panic!("expected postgres, got {other:?}"),
    }
}

#[test]
fn redis_url_selects_redis_when_no_database_url() {
    let c = load(&[("REDIS_URL", "rediss://default:pw@x.upstash.io:6379")]).unwrap();
    assert_eq!(c.store.backend(), "redis");
    assert!(!c.store.describe().contains("pw"));
}

#[test]
fn explicit_store_choice_wins_and_is_checked() {
    let c = load(&[
        ("DATABASE_URL", "postgres://x/y"),
        ("ROLLBACK_GUARD_STORE", "sqlite"),
    ])
    .unwrap();
    assert_eq!(c.store.backend(), "sqlite");
    let e = load(&[("ROLLBACK_GUARD_STORE", "mongo")]).unwrap_err();
    assert_eq!(error_keys(&e), ["ROLLBACK_GUARD_STORE"]);
    let e = load(&[("ROLLBACK_GUARD_STORE", "redis")]).unwrap_err();
    assert_eq!(error_keys(&e), ["REDIS_URL"]);
}

#[test]
fn every_invalid_variable_is_reported_by_name() {
    let e = load(&[
        ("CRON_SECRET", "short"),
        ("DATABASE_URL", "mysql://x"),
        ("DATABASE_SCHEMA", "Bad-Name"),
        ("VERCEL_TOKEN", "tok_123456789"),
        ("APPROVAL_SIGNING_KEYS", "k1:tooshort,nocolon"),
        ("MAX_BODY_BYTES", "lots"),
        ("PUBLIC_BASE_URL", "guard.example.com"),
    ])
    .unwrap_err();
    let keys = error_keys(&e);
    for want in [
        "CRON_SECRET",
        "DATABASE_URL",
        "DATABASE_SCHEMA",
        "VERCEL_PROJECT_ID",
        "APPROVAL_SIGNING_KEYS",
        "MAX_BODY_BYTES",
        "PUBLIC_BASE_URL",
    ] {
        assert!(keys.contains(&want), "missing {want} in {keys:?}");
    }
}

#[test]
fn errors_and_debug_output_never_contain_secret_values() {
    let secret = "s3cr3t-value-that-must-not-leak";
    let c = load(&[
        ("CRON_SECRET", secret),
        ("OPERATOR_TOKEN", secret),
        ("DATABASE_URL", &format!("postgres://u:{secret}@h/db")),
    ])
    .unwrap();
    assert!(!format!("{c:?}").contains(secret));
    assert!(!c.store.describe().contains(secret));
    let e = load(&[
        ("CRON_SECRET", "tiny"),
        ("APPROVAL_SIGNING_KEYS", "k1:tiny-secret"),
    ])
    .unwrap_err();
    assert!(!e.to_string().contains("tiny-secret"));
}

#[test]
fn signing_keys_keep_their_order_and_ids() {
    let a = "a".repeat(32);
    let b = "b".repeat(40);
    let c = load(&[("APPROVAL_SIGNING_KEYS", &format!("k2:{a}, k1:{b}"))]).unwrap();
    let kids: Vec<&str> = c.signing_keys.iter().map(|k| k.kid.as_str()).collect();
    assert_eq!(kids, ["k2", "k1"]);
    assert_eq!(c.signing_keys[1].key.expose(), b);
}

#[test]
fn invalid_inline_policy_names_the_policy_key() {
    let map = [(
        "ROLLBACK_GUARD_POLICY_TOML",
        "[rules]\nspike_factor = 0.5\n",
    )];
    let e = Config::from_lookup(&|k| {
        map.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    })
    .unwrap_err();
    assert_eq!(
        error_keys(&e),
        ["ROLLBACK_GUARD_POLICY_TOML rules.spike_factor"]
    );
}

#[test]
fn a_missing_policy_file_is_an_error_when_named_explicitly() {
    let map = [("ROLLBACK_GUARD_POLICY", "/nonexistent/guard.toml")];
    let e = Config::from_lookup(&|k| {
        map.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    })
    .unwrap_err();
    assert_eq!(error_keys(&e), ["ROLLBACK_GUARD_POLICY"]);
}

#[test]
fn on_vercel_an_external_store_is_required() {
    // The function file system is read-only and every function runs in its
    // own instance: an embedded SQLite file cannot hold shared state there.
    for vars in [
        vec![("VERCEL", "1")],
        vec![("VERCEL", "1"), ("ROLLBACK_GUARD_STORE", "sqlite")],
    ] {
        let e = load(&vars).unwrap_err();
        let problem =
            e.0.iter()
                .find(|e| e.key == "DATABASE_URL")
                .expect("names DATABASE_URL");
        assert!(problem.detail.contains("REDIS_URL"), "{}", problem.detail);
        assert!(problem.detail.contains("read-only"), "{}", problem.detail);
    }
    assert!(load(&[
        ("VERCEL", "1"),
        ("REDIS_URL", "rediss://default:x@db.upstash.io:6379")
    ])
    .is_ok());
    // Locally SQLite stays the default.
    assert!(load(&[]).is_ok());
}

#[test]
fn backup_and_snapshot_key_mistakes_name_what_is_expected() {
    // A short key is reported as what it must be, not as a length.
    let e = load(&[("SNAPSHOT_ENCRYPTION_KEY", "c2hvcnQ=")]).unwrap_err();
    let d =
        &e.0.iter()
            .find(|e| e.key == "SNAPSHOT_ENCRYPTION_KEY")
            .unwrap()
            .detail;
    assert!(d.contains("32 bytes, base64"), "{d}");
    // The pg_dump provider needs its directory.
    let e = load(&[(
        "ROLLBACK_GUARD_POLICY_TOML",
        "[database.backup]\nprovider = \"pg_dump\"\n",
    )])
    .unwrap_err();
    let d =
        &e.0.iter()
            .find(|e| e.key == "BACKUP_DIR")
            .expect("names BACKUP_DIR")
            .detail;
    assert!(d.contains("pg_dump"), "{d}");
    assert!(load(&[
        (
            "ROLLBACK_GUARD_POLICY_TOML",
            "[database.backup]\nprovider = \"pg_dump\"\n"
        ),
        ("BACKUP_DIR", "/var/backups/app"),
    ])
    .is_ok());
}

fn readiness(vars: &[(&str, &str)]) -> Vec<String> {
    load(vars)
        .unwrap()
        .readiness()
        .iter()
        .map(|e| format!("{}: {}", e.key, e.detail))
        .collect()
}

#[test]
fn required_approval_with_nobody_listed_is_not_ready() {
    let problems = readiness(&[(
        "ROLLBACK_GUARD_POLICY_TOML",
        "[environments.production]\napproval = \"required\"\napprovers = []\n",
    )]);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("ROLLBACK_GUARD_POLICY_TOML environments.production.approvers: approval is required but nobody is listed"),
        "{problems:?}"
    );
}

#[test]
fn every_approver_must_be_reachable_by_a_configured_channel() {
    let policy = "[environments.production]\napprovers = [\"alice@example.com\", \"+15551234567\", \"slack:U024BE7LH\"]\n[channels]\norder = [\"slack\", \"email\"]\n";
    let problems = readiness(&[
        ("ROLLBACK_GUARD_POLICY_TOML", policy),
        ("RESEND_API_KEY", "re_test_key_123"),
        (
            "SLACK_WEBHOOK_URL",
            "https://hooks.slack.com/services/T/B/x",
        ),
    ]);
    assert_eq!(
        problems,
        [
            "ROLLBACK_GUARD_POLICY_TOML environments.production.approvers: alice@example.com is not reachable: EMAIL_FROM not set",
            "ROLLBACK_GUARD_POLICY_TOML environments.production.approvers: +15551234567 is not reachable: \"sms\" is not in channels.order and TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, TWILIO_FROM not set",
            "ROLLBACK_GUARD_POLICY_TOML environments.production.approvers: slack:U024BE7LH is not reachable: SLACK_SIGNING_SECRET not set",
        ]
    );
    // Configured, every approver is reachable.
    let policy = policy.replace("[\"slack\", \"email\"]", "[\"slack\", \"email\", \"sms\"]");
    assert!(readiness(&[
        ("ROLLBACK_GUARD_POLICY_TOML", &policy),
        ("RESEND_API_KEY", "re_test_key_123"),
        ("EMAIL_FROM", "guard@example.com"),
        ("TWILIO_ACCOUNT_SID", "AC123"),
        ("TWILIO_AUTH_TOKEN", "twilio-token-123"),
        ("TWILIO_FROM", "+15550000000"),
        (
            "SLACK_WEBHOOK_URL",
            "https://hooks.slack.com/services/T/B/x"
        ),
        ("SLACK_SIGNING_SECRET", "slack-signing-secret"),
    ])
    .is_empty());
}

#[test]
fn the_console_channel_reaches_everyone_locally_and_is_refused_on_vercel() {
    let policy = "[environments.production]\napprovers = [\"alice@example.com\"]\n[channels]\norder = [\"console\"]\n";
    assert!(readiness(&[("ROLLBACK_GUARD_POLICY_TOML", policy)]).is_empty());
    let errs = load(&[
        ("ROLLBACK_GUARD_POLICY_TOML", policy),
        ("VERCEL", "1"),
        ("DATABASE_URL", "postgres://u:p@db.example/db"),
    ])
    .unwrap_err();
    assert_eq!(
        error_keys(&errs),
        ["ROLLBACK_GUARD_POLICY_TOML channels.order"]
    );
    assert!(
        errs.0[0].detail.contains("local use"),
        "{}",
        errs.0[0].detail
    );
}
