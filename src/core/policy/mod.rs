//! The operator's policy, `rollback-guard.toml`: environments and who approves,
//! probes, detection rules (the seed's thresholds by default), notification
//! channels and the database. Pure data and validation; loading the file from
//! disk is [`crate::runtime::config`]'s job.
//!
//! An empty file is a valid policy: every section has documented defaults.
//! Unknown keys are errors, so a typo never silently disables a rule.

mod rules;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::core::duration::serde_human;
pub use rules::{Rules, Threshold};

/// The whole policy file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Per environment (`development`, `staging`, `production`, or custom).
    pub environments: BTreeMap<String, Environment>,
    /// Synthetic health checks run by `GET /api/cron/probe`.
    pub probes: Vec<Probe>,
    /// Detection thresholds.
    pub rules: Rules,
    /// Where approval requests and results are sent, in fallback order.
    pub channels: Channels,
    /// The app's database: migrations and backup policy.
    pub database: Database,
    /// How deliveries that do not name an environment are attributed.
    pub signals: Signals,
}

/// Attribution of signals that carry no environment (an Alertmanager alert
/// without an `environment`/`env` label, a Sentry event without the
/// `environment` tag, a generic batch without `environment`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Signals {
    /// Where such signals count. Unset: they are stored under `unknown`,
    /// count nowhere, and are reported (intake answer, health, dashboard).
    pub default_environment: Option<String>,
}

/// How rollbacks in one environment are decided.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Environment {
    /// `auto`: roll back on a critical verdict without asking; `required`: ask approvers.
    pub approval: ApprovalMode,
    /// People who may approve (emails or Slack user ids).
    pub approvers: Vec<String>,
    /// Distinct approvals needed.
    pub quorum: u32,
    /// How long an approval request stays open.
    #[serde(with = "serde_human")]
    pub approval_timeout: Duration,
    /// What happens when nobody decides in time.
    pub on_timeout: TimeoutAction,
}

impl Default for Environment {
    fn default() -> Self {
        Self {
            approval: ApprovalMode::Required,
            approvers: Vec::new(),
            quorum: 1,
            approval_timeout: Duration::from_secs(30 * 60),
            on_timeout: TimeoutAction::HoldAndEscalate,
        }
    }
}

/// Whether a rollback needs a human.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalMode {
    /// Roll back on critical verdicts without asking (development, staging).
    Auto,
    /// Ask the approvers and wait for the quorum (production).
    Required,
}

/// The default action when an approval request times out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeoutAction {
    /// Do nothing and notify the next channel / escalation list.
    HoldAndEscalate,
    /// Roll back anyway.
    Rollback,
}

/// One synthetic check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    /// Unique name, used in evidence and the dashboard.
    pub name: String,
    /// Environment whose current deployment this probe measures.
    #[serde(default = "default_probe_environment")]
    pub environment: String,
    /// Absolute http(s) URL.
    pub url: String,
    /// HTTP method.
    #[serde(default = "default_probe_method")]
    pub method: String,
    /// Status the probe expects.
    #[serde(default = "default_expect_status")]
    pub expect_status: u16,
    /// Per-request timeout.
    #[serde(with = "serde_human", default = "default_probe_timeout")]
    pub timeout: Duration,
    /// A slower answer counts as a failure.
    #[serde(with = "serde_human", default = "default_latency_budget")]
    pub latency_budget: Duration,
    /// When set, the body must contain this text.
    #[serde(default)]
    pub body_contains: Option<String>,
}

fn default_probe_environment() -> String {
    "production".into()
}
fn default_probe_method() -> String {
    "GET".into()
}
fn default_expect_status() -> u16 {
    200
}
fn default_probe_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_latency_budget() -> Duration {
    Duration::from_secs(1)
}

/// Notification channels, tried in `order` until one succeeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Channels {
    /// Fallback order.
    pub order: Vec<ChannelKind>,
    /// Email recipients (besides the approvers, who always get their own link).
    pub email_to: Vec<String>,
    /// SMS recipients in E.164 form.
    pub sms_to: Vec<String>,
}

impl Default for Channels {
    fn default() -> Self {
        Self {
            order: vec![ChannelKind::Slack, ChannelKind::Email, ChannelKind::Sms],
            email_to: Vec::new(),
            sms_to: Vec::new(),
        }
    }
}

/// A notification channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    Slack,
    Email,
    Sms,
    /// Prints to the log (local use; refused on Vercel).
    Console,
}

/// Removes the value at `path` from `root`; false when it is not there.
fn remove_at(root: &mut toml::Value, path: &serde_path_to_error::Path) -> bool {
    use serde_path_to_error::Segment;
    let segments: Vec<&Segment> = path.iter().collect();
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut here = root;
    for seg in parents {
        let next = match (here, seg) {
            (toml::Value::Table(t), Segment::Map { key }) => t.get_mut(key.as_str()),
            (toml::Value::Array(a), Segment::Seq { index }) => a.get_mut(*index),
            _ => None,
        };
        let Some(next) = next else { return false };
        here = next;
    }
    match (here, last) {
        (toml::Value::Table(t), Segment::Map { key }) => t.remove(key.as_str()).is_some(),
        (toml::Value::Array(a), Segment::Seq { index }) if *index < a.len() => {
            a.remove(*index);
            true
        }
        _ => false,
    }
}

/// The channel that can reach an approver: `name@host` by email, `+digits`
/// (E.164) by SMS, `slack:U…` (a Slack user id) by Slack. `None` for
/// anything else.
pub fn approver_channel(approver: &str) -> Option<ChannelKind> {
    if let Some(user) = approver.strip_prefix("slack:") {
        let ok = user.len() >= 2
            && matches!(user.as_bytes()[0], b'U' | b'W')
            && user.bytes().all(|b| b.is_ascii_alphanumeric());
        return ok.then_some(ChannelKind::Slack);
    }
    if let Some(digits) = approver.strip_prefix('+') {
        let ok = (4..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit());
        return ok.then_some(ChannelKind::Sms);
    }
    let (local, host) = approver.split_once('@')?;
    let ok = !local.is_empty()
        && host.contains('.')
        && !host.starts_with('.')
        && !host.ends_with('.')
        && !approver
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        && !host.contains('@');
    ok.then_some(ChannelKind::Email)
}

/// The app's database.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Database {
    /// Prisma migrations folder.
    pub migrations_dir: String,
    /// File next to each `migration.sql` holding its inverse.
    pub down_file: String,
    /// Backup policy.
    pub backup: Backup,
}

impl Default for Database {
    fn default() -> Self {
        Self {
            migrations_dir: "prisma/migrations".into(),
            down_file: "down.sql".into(),
            backup: Backup::default(),
        }
    }
}

/// Backup freshness and retention requirements.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Backup {
    /// Where backups live.
    pub provider: BackupProvider,
    /// The newest full backup may be at most this old.
    #[serde(with = "serde_human")]
    pub max_age: Duration,
    /// Point-in-time restore window the provider must keep.
    #[serde(with = "serde_human")]
    pub pitr_window: Duration,
    /// Refuse destructive down migrations without a pre-migration backup.
    pub require_pre_migration: bool,
}

impl Default for Backup {
    fn default() -> Self {
        Self {
            provider: BackupProvider::None,
            max_age: Duration::from_secs(26 * 3600),
            pitr_window: Duration::from_secs(7 * 86_400),
            require_pre_migration: true,
        }
    }
}

/// Backup provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupProvider {
    None,
    Neon,
    S3,
    PgDump,
}

/// A policy problem, always naming the key it is about.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {detail}")]
pub struct PolicyError {
    /// Dotted path of the offending key, e.g. `rules.error_rate.warning`.
    pub key: String,
    /// What is wrong and what would be right.
    pub detail: String,
}

impl PolicyError {
    fn new(key: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            detail: detail.into(),
        }
    }
}

impl Policy {
    /// Parses and validates a policy file's text. Every problem is reported,
    /// not only the first.
    pub fn from_toml(text: &str) -> Result<Self, Vec<PolicyError>> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| vec![PolicyError::new("(file)", e.to_string().trim())])?;
        let mut root = toml::Value::Table(table);
        // Serde stops at the first bad key. To report them all, each bad key
        // is taken out and the rest read again, until it reads or a key
        // cannot be located (then what was found is enough to act on).
        let mut errs = Vec::new();
        for _ in 0..64 {
            match serde_path_to_error::deserialize::<_, Policy>(root.clone()) {
                Ok(policy) if errs.is_empty() => {
                    policy.validate()?;
                    return Ok(policy);
                }
                Ok(_) => break,
                Err(e) => {
                    let path = e.path().to_string();
                    let key = if path == "." {
                        "(file)".to_string()
                    } else {
                        path
                    };
                    let detail = e.inner().to_string();
                    // A table whose bad key was taken out may now miss a
                    // field: that is the same mistake, already reported.
                    let echo = detail.starts_with("missing field")
                        && errs
                            .iter()
                            .any(|p: &PolicyError| p.key.starts_with(&format!("{key}.")));
                    if !echo {
                        errs.push(PolicyError::new(key, detail.trim()));
                    }
                    if !remove_at(&mut root, e.path()) {
                        break;
                    }
                }
            }
        }
        Err(errs)
    }

    /// The policy used when no file exists: the seed's thresholds, and the
    /// three standard environments (auto in development and staging,
    /// approval in production).
    pub fn with_standard_environments() -> Self {
        let mut p = Policy::default();
        p.fill_standard_environments();
        p
    }

    fn fill_standard_environments(&mut self) {
        for (name, mode) in [
            ("development", ApprovalMode::Auto),
            ("staging", ApprovalMode::Auto),
            ("production", ApprovalMode::Required),
        ] {
            self.environments
                .entry(name.to_string())
                .or_insert_with(|| Environment {
                    approval: mode,
                    ..Environment::default()
                });
        }
    }

    /// Checks cross-field rules. Errors name the key.
    pub fn validate(&self) -> Result<(), Vec<PolicyError>> {
        let mut errs = Vec::new();
        for (name, env) in &self.environments {
            let key = |k: &str| format!("environments.{name}.{k}");
            if env.quorum == 0 {
                errs.push(PolicyError::new(key("quorum"), "must be at least 1"));
            }
            if env.approval == ApprovalMode::Required {
                if (env.approvers.len() as u64) < u64::from(env.quorum) && !env.approvers.is_empty()
                {
                    errs.push(PolicyError::new(
                        key("quorum"),
                        format!(
                            "is {} but only {} approvers are listed",
                            env.quorum,
                            env.approvers.len()
                        ),
                    ));
                }
                if env.approval_timeout < Duration::from_secs(60) {
                    errs.push(PolicyError::new(
                        key("approval_timeout"),
                        "must be at least 1m",
                    ));
                }
            }
            let mut seen = std::collections::BTreeSet::new();
            for a in &env.approvers {
                if approver_channel(a).is_none() {
                    errs.push(PolicyError::new(
                        key("approvers"),
                        format!("{a:?} is not an email address, an E.164 number (+15551234567) or a Slack user (slack:U…)"),
                    ));
                }
                if !seen.insert(a.to_ascii_lowercase()) {
                    errs.push(PolicyError::new(
                        key("approvers"),
                        format!("{a:?} is listed twice"),
                    ));
                }
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, p) in self.probes.iter().enumerate() {
            let key = |k: &str| format!("probes[{i}].{k}");
            if p.name.trim().is_empty() {
                errs.push(PolicyError::new(key("name"), "must not be empty"));
            } else if !names.insert(p.name.clone()) {
                errs.push(PolicyError::new(
                    key("name"),
                    format!("{:?} is used by another probe", p.name),
                ));
            }
            match url::Url::parse(&p.url) {
                Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
                Ok(u) => errs.push(PolicyError::new(
                    key("url"),
                    format!("scheme {:?} is not http(s)", u.scheme()),
                )),
                Err(e) => errs.push(PolicyError::new(
                    key("url"),
                    format!("not an absolute URL: {e}"),
                )),
            }
            if http::Method::from_bytes(p.method.as_bytes()).is_err() {
                errs.push(PolicyError::new(
                    key("method"),
                    format!("{:?} is not an HTTP method", p.method),
                ));
            }
            if !(100..=599).contains(&p.expect_status) {
                errs.push(PolicyError::new(
                    key("expect_status"),
                    "must be an HTTP status (100-599)",
                ));
            }
            if p.timeout.is_zero() {
                errs.push(PolicyError::new(key("timeout"), "must be greater than 0"));
            }
        }
        errs.extend(self.rules.validate());
        if self.channels.order.is_empty() {
            errs.push(PolicyError::new(
                "channels.order",
                "must list at least one channel",
            ));
        }
        for (i, n) in self.channels.sms_to.iter().enumerate() {
            let ok =
                n.starts_with('+') && n.len() > 4 && n[1..].bytes().all(|b| b.is_ascii_digit());
            if !ok {
                errs.push(PolicyError::new(
                    format!("channels.sms_to[{i}]"),
                    "must be an E.164 number like +15551234567",
                ));
            }
        }
        if self.database.backup.max_age.is_zero() {
            errs.push(PolicyError::new(
                "database.backup.max_age",
                "must be greater than 0",
            ));
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }

    /// The environment's settings, or the production-like default for
    /// environments the file does not name.
    pub fn environment(&self, name: &str) -> Environment {
        self.environments.get(name).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
