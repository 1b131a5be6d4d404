//! Backups as data and the checks against the policy (pure). A backup's
//! `label` is `full` or `pre-migration/<migration name>`. The checks: the newest full backup is fresh
//! enough, the point-in-time window is long enough, and every applied
//! migration that destroys data has a pre-migration backup taken before it.

use std::time::Duration;

use serde_json::json;

use crate::core::clock::Timestamp;
use crate::core::policy::Backup;

/// One backup as a provider reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct BackupInfo {
    pub id: String,
    pub label: String,
    pub created_at: Timestamp,
    /// Usable for a restore now.
    pub ready: bool,
}

impl BackupInfo {
    /// The migration this backup was taken before, if it is a pre-migration backup.
    pub fn migration(&self) -> Option<&str> {
        self.label.strip_prefix("pre-migration/")
    }
}

/// One check's outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckResult {
    pub check: &'static str,
    pub ok: bool,
    pub detail: serde_json::Value,
}

/// An applied migration that destroys data, and when it was applied.
#[derive(Clone, Debug, PartialEq)]
pub struct DestructiveMigration {
    pub name: String,
    pub applied_at: Timestamp,
}

/// Runs every check.
pub fn check(
    backups: &[BackupInfo],
    window: Option<Duration>,
    policy: &Backup,
    destructive: &[DestructiveMigration],
    now: Timestamp,
) -> Vec<CheckResult> {
    let newest = backups
        .iter()
        .filter(|b| b.ready && b.migration().is_none())
        .max_by_key(|b| b.created_at);
    let freshness = match newest {
        Some(b) => {
            let age =
                Duration::from_millis((now.as_millis() - b.created_at.as_millis()).max(0) as u64);
            CheckResult {
                check: "freshness",
                ok: age <= policy.max_age,
                detail: json!({"newest": b.id, "created_at": b.created_at.to_rfc3339(), "age_s": age.as_secs(), "max_age_s": policy.max_age.as_secs()}),
            }
        }
        None => CheckResult {
            check: "freshness",
            ok: false,
            detail: json!({"error": "no usable full backup found", "max_age_s": policy.max_age.as_secs()}),
        },
    };
    let pitr = match window {
        Some(w) => CheckResult {
            check: "pitr_window",
            ok: w >= policy.pitr_window,
            detail: json!({"window_s": w.as_secs(), "required_s": policy.pitr_window.as_secs()}),
        },
        None => CheckResult {
            check: "pitr_window",
            ok: true,
            detail: json!({"not_applicable": "the provider has no point-in-time restore"}),
        },
    };
    let missing: Vec<&str> = destructive
        .iter()
        .filter(|m| {
            !backups.iter().any(|b| {
                b.ready && b.migration() == Some(m.name.as_str()) && b.created_at <= m.applied_at
            })
        })
        .map(|m| m.name.as_str())
        .collect();
    let pre = CheckResult {
        check: "pre_migration",
        ok: missing.is_empty() || !policy.require_pre_migration,
        detail: json!({"destructive_applied": destructive.len(), "missing": missing}),
    };
    vec![freshness, pitr, pre]
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;
    const NOW: Timestamp = Timestamp::from_millis(1_000 * H);

    fn b(label: &str, hours_ago: i64) -> BackupInfo {
        BackupInfo {
            id: format!("{label}@{hours_ago}"),
            label: label.into(),
            created_at: Timestamp::from_millis(NOW.as_millis() - hours_ago * H),
            ready: true,
        }
    }

    #[test]
    fn freshness_uses_the_newest_ready_full_backup() {
        let policy = Backup::default();
        let r = check(&[b("full", 30), b("full", 20)], None, &policy, &[], NOW);
        assert!(r[0].ok, "{:?}", r[0]);
        let r = check(
            &[b("full", 30), b("pre-migration/x", 1)],
            None,
            &policy,
            &[],
            NOW,
        );
        assert!(!r[0].ok, "pre-migration backups are not full backups");
        let mut not_ready = b("full", 1);
        not_ready.ready = false;
        assert!(!check(&[not_ready], None, &policy, &[], NOW)[0].ok);
        assert!(!check(&[], None, &policy, &[], NOW)[0].ok);
    }

    #[test]
    fn the_pitr_window_must_cover_the_policy() {
        let policy = Backup::default();
        assert!(!check(&[], Some(Duration::from_secs(86_400)), &policy, &[], NOW)[1].ok);
        assert!(
            check(
                &[],
                Some(Duration::from_secs(8 * 86_400)),
                &policy,
                &[],
                NOW
            )[1]
            .ok
        );
        assert!(check(&[], None, &policy, &[], NOW)[1].ok);
    }

    #[test]
    fn destructive_migrations_need_a_backup_taken_before_them() {
        let policy = Backup::default();
        let m = |name: &str, hours_ago: i64| DestructiveMigration {
            name: name.into(),
            applied_at: Timestamp::from_millis(NOW.as_millis() - hours_ago * H),
        };
        let backups = [b("pre-migration/drop_a", 5), b("pre-migration/drop_b", 1)];
        let r = check(
            &backups,
            None,
            &policy,
            &[m("drop_a", 4), m("drop_b", 2), m("drop_c", 1)],
            NOW,
        );
        assert!(!r[2].ok);
        assert_eq!(
            r[2].detail["missing"],
            json!(["drop_b", "drop_c"]),
            "drop_b's backup came after it"
        );
    }
}
