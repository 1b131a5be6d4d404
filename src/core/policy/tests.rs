use super::*;

fn keys(errs: &[PolicyError]) -> Vec<&str> {
    errs.iter().map(|e| e.key.as_str()).collect()
}

#[test]
fn an_empty_file_gives_the_seed_defaults() {
    let p = Policy::from_toml("").unwrap();
    assert_eq!(
        p.rules.error_rate,
        Threshold {
            warning: 0.02,
            critical: 0.05
        }
    );
    assert_eq!(p.rules.sustained, Duration::from_secs(300));
    assert_eq!(p.rules.spike_factor, 10.0);
    assert_eq!(
        p.rules.latency_p95_ms,
        Threshold {
            warning: 500.0,
            critical: 1000.0
        }
    );
    assert_eq!(
        p.rules.health_check_failures,
        Threshold {
            warning: 1.0,
            critical: 3.0
        }
    );
    assert_eq!(
        p.rules.db_errors_per_min,
        Threshold {
            warning: 10.0,
            critical: 50.0
        }
    );
    assert_eq!(
        p.rules.memory_pct,
        Threshold {
            warning: 80.0,
            critical: 90.0
        }
    );
    assert_eq!(p.database.backup.max_age, Duration::from_secs(26 * 3600));
}

#[test]
fn the_shipped_example_policy_is_valid() {
    let text = include_str!("../../../rollback-guard.toml");
    let p = Policy::from_toml(text).unwrap();
    assert_eq!(p.environment("production").approval, ApprovalMode::Required);
    assert_eq!(p.environment("staging").approval, ApprovalMode::Auto);
}

#[test]
fn unknown_keys_are_errors_naming_the_path() {
    let errs =
        Policy::from_toml("[rules.error_rate]\nwarning = 0.01\ncritcal = 0.05\n").unwrap_err();
    assert_eq!(keys(&errs), ["rules.error_rate.critcal"]);
    assert!(errs[0].detail.contains("critcal"), "{}", errs[0].detail);
}

#[test]
fn wrong_types_name_the_key() {
    let errs = Policy::from_toml("[environments.production]\nquorum = \"two\"\n").unwrap_err();
    assert_eq!(keys(&errs), ["environments.production.quorum"]);
}

#[test]
fn bad_durations_name_the_key() {
    let errs = Policy::from_toml("[rules]\nsustained = \"5 minutes\"\n").unwrap_err();
    assert_eq!(keys(&errs), ["rules.sustained"]);
    assert!(
        errs[0].detail.contains("unknown unit"),
        "{}",
        errs[0].detail
    );
}

#[test]
fn syntax_errors_are_reported_for_the_file() {
    let errs = Policy::from_toml("[rules\n").unwrap_err();
    assert_eq!(keys(&errs), ["(file)"]);
}

#[test]
fn cross_field_problems_are_all_reported() {
    let text = r#"
[rules.error_rate]
warning = 0.10
critical = 0.05

[rules.memory_pct]
warning = 80
critical = 120

[environments.production]
approvers = ["a@x.io"]
quorum = 2

[[probes]]
name = "home"
url = "ftp://example.com"

[[probes]]
name = "home"
url = "https://example.com"
"#;
    let errs = Policy::from_toml(text).unwrap_err();
    let got = keys(&errs);
    for want in [
        "rules.error_rate.warning",
        "rules.memory_pct.critical",
        "environments.production.quorum",
        "probes[0].url",
        "probes[1].name",
    ] {
        assert!(got.contains(&want), "missing {want} in {got:?}");
    }
}

#[test]
fn unnamed_environments_fall_back_to_requiring_approval() {
    let p = Policy::from_toml("").unwrap();
    let e = p.environment("preview-42");
    assert_eq!(e.approval, ApprovalMode::Required);
    assert_eq!(e.on_timeout, TimeoutAction::HoldAndEscalate);
}

#[test]
fn every_type_error_and_unknown_key_is_reported_at_once() {
    let text = r#"
[environments.production]
quorum = "two"
approvers = ["a@x.io", "b@x.io"]

[environments.staging]
aproval = "auto"

[rules]
sustained = "5 minutes"

[[probes]]
name = "home"
url = "https://example.com"
expect_status = "200"

[database.backup]
provider = "tape"
"#;
    let errs = Policy::from_toml(text).unwrap_err();
    let mut got = keys(&errs);
    got.sort();
    assert_eq!(
        got,
        [
            "database.backup.provider",
            "environments.production.quorum",
            "environments.staging.aproval",
            "probes[0].expect_status",
            "rules.sustained",
        ],
        "{errs:?}"
    );
}

#[test]
fn approvers_must_be_an_email_a_phone_number_or_a_slack_user() {
    use super::{approver_channel, ChannelKind};
    for (a, want) in [
        ("alice@example.com", Some(ChannelKind::Email)),
        ("+15551234567", Some(ChannelKind::Sms)),
        ("slack:U024BE7LH", Some(ChannelKind::Slack)),
        ("slack:W012A3CDE", Some(ChannelKind::Slack)),
        ("alice", None),
        ("@example.com", None),
        ("alice@localhost", None),
        ("alice@@example.com", None),
        ("al ice@example.com", None),
        ("+1-555-123", None),
        ("+12", None),
        ("slack:alice", None),
        ("slack:", None),
        ("U024BE7LH", None),
    ] {
        assert_eq!(approver_channel(a), want, "{a}");
    }
    let errs = Policy::from_toml(
        "[environments.production]\napprovers = [\"alice@example.com\", \"bob\", \"slack:bob\"]\n",
    )
    .unwrap_err();
    assert_eq!(
        keys(&errs),
        [
            "environments.production.approvers",
            "environments.production.approvers"
        ]
    );
    assert!(errs[0].detail.contains("\"bob\""), "{}", errs[0].detail);
}
