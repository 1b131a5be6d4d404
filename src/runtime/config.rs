//! Typed configuration. This is the only module that reads environment
//! variables, and it reads them through a lookup function so tests never touch
//! the process environment. Secrets are wrapped in [`Secret`].
//!
//! Loading never stops at the first problem: every invalid key is reported,
//! each error naming the variable or policy key it is about.

use std::path::PathBuf;

pub use crate::core::approval::token::SigningKey;
use crate::core::policy::{Policy, PolicyError};
use crate::core::secret::Secret;
pub use crate::flows::intake::AlertSecrets;
pub use crate::flows::notify::NotifyConfig;
pub use crate::integrations::backup::BackupAccess;
pub use crate::integrations::vercel::VercelConfig;
pub use crate::store::StoreConfig;

/// Default request body limit for webhooks and forms.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;
/// Default policy file, relative to the working directory (the deployment root on Vercel).
pub const DEFAULT_POLICY_PATH: &str = "rollback-guard.toml";
/// Default SQLite file when no external store is configured.
pub const DEFAULT_SQLITE_PATH: &str = ".rollback-guard/guard.db";

/// Everything the guard needs, read once per process.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where state lives.
    pub store: StoreConfig,
    /// How long connecting to the store and one store operation may take.
    pub store_timeouts: crate::store::StoreTimeouts,
    /// `Authorization: Bearer` value Vercel cron sends; cron routes refuse everything without it.
    pub cron_secret: Option<Secret>,
    /// Bearer token for operator routes (`/api/rollback`, `/api/incidents`, dashboard).
    pub operator_token: Option<Secret>,
    /// Base64 32-byte key sealing env-var snapshot values; without it values are only fingerprinted.
    pub snapshot_key: Option<Secret>,
    /// Backup provider access.
    pub backups: BackupAccess,
    /// The app's own database (the one Prisma migrates), for database rollback steps.
    pub app_database_url: Option<Secret>,
    /// Vercel REST API access; `None` puts the executor in dry-run mode.
    pub vercel: Option<VercelConfig>,
    /// Approval-link signing keys; the first is used to sign, all verify.
    pub signing_keys: Vec<SigningKey>,
    /// Public base URL of this deployment, for links in notifications.
    pub public_base_url: Option<url::Url>,
    /// Per-source webhook secrets.
    pub alert_secrets: AlertSecrets,
    /// Notification credentials.
    pub notify: NotifyConfig,
    /// Largest accepted request body in bytes.
    pub body_limit: usize,
    /// The policy file, parsed and validated.
    pub policy: Policy,
    /// Where the policy came from, for health output.
    pub policy_source: String,
}

/// A configuration problem naming the variable or policy key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {detail}")]
pub struct ConfigError {
    pub key: String,
    pub detail: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            detail: detail.into(),
        }
    }
}

impl From<PolicyError> for ConfigError {
    fn from(e: PolicyError) -> Self {
        Self::new(format!("policy {}", e.key), e.detail)
    }
}

/// All problems found while loading; displayed one per line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<ConfigError>);

struct Reader<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    errors: Vec<ConfigError>,
}

impl Reader<'_> {
    /// A variable's value; empty strings count as unset.
    fn var(&self, key: &str) -> Option<String> {
        (self.lookup)(key)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    fn secret(&mut self, key: &str, min_len: usize) -> Option<Secret> {
        let v = self.var(key)?;
        if v.len() < min_len {
            self.errors.push(ConfigError::new(
                key,
                format!("must be at least {min_len} characters"),
            ));
            return None;
        }
        Some(Secret::new(v))
    }

    fn url(&mut self, key: &str) -> Option<url::Url> {
        let v = self.var(key)?;
        match url::Url::parse(&v) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Some(u),
            Ok(_) => {
                self.errors
                    .push(ConfigError::new(key, "must be an http(s) URL"));
                None
            }
            Err(e) => {
                self.errors
                    .push(ConfigError::new(key, format!("not a URL: {e}")));
                None
            }
        }
    }
}

impl Config {
    /// Reads the process environment and the policy file it points to.
    pub fn from_env() -> Result<Self, ConfigErrors> {
        Self::from_lookup(&|k| std::env::var(k).ok())
    }

    /// Reads configuration through `lookup` (tests pass a map).
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigErrors> {
        let mut r = Reader {
            lookup,
            errors: Vec::new(),
        };
        let store = read_store(&mut r);
        let cron_secret = r.secret("CRON_SECRET", 16);
        let operator_token = r.secret("OPERATOR_TOKEN", 16);
        let app_database_url = r.var("APP_DATABASE_URL").map(Secret::new);
        let backups = BackupAccess {
            dir: r.var("BACKUP_DIR").map(PathBuf::from),
            neon_api_key: r.secret("NEON_API_KEY", 8),
            neon_project_id: r.var("NEON_PROJECT_ID"),
            neon_api_base: r.url("NEON_API_BASE").map_or_else(
                || "https://console.neon.tech/api/v2".to_string(),
                |u| u.as_str().trim_end_matches('/').to_string(),
            ),
            s3_endpoint: r.url("S3_ENDPOINT"),
            s3_bucket: r.var("S3_BUCKET"),
            s3_prefix: r.var("S3_PREFIX").unwrap_or_default(),
            s3_region: r.var("S3_REGION").unwrap_or_else(|| "us-east-1".into()),
            s3_access_key: r.var("AWS_ACCESS_KEY_ID"),
            s3_secret_key: r.secret("AWS_SECRET_ACCESS_KEY", 8),
        };
        // Checked as what it must be (32 bytes, base64), not by its length.
        let snapshot_key = r.secret("SNAPSHOT_ENCRYPTION_KEY", 1);
        if let Some(k) = &snapshot_key {
            if crate::flows::config_snapshot::Sealer::from_base64(k).is_none() {
                r.errors.push(ConfigError::new(
                    "SNAPSHOT_ENCRYPTION_KEY",
                    "must be 32 bytes, base64-encoded (e.g. openssl rand -base64 32)",
                ));
            }
        }
        let vercel = read_vercel(&mut r);
        let signing_keys = read_signing_keys(&mut r);
        let public_base_url = r.url("PUBLIC_BASE_URL");
        let alert_secrets = AlertSecrets {
            sentry_client_secret: r.secret("SENTRY_CLIENT_SECRET", 8),
            vercel_webhook_secret: r.secret("VERCEL_WEBHOOK_SECRET", 8),
            vercel_log_drain_secret: r.secret("VERCEL_LOG_DRAIN_SECRET", 8),
            vercel_drain_verify: r.var("VERCEL_DRAIN_VERIFY"),
            grafana_secret: r.secret("GRAFANA_WEBHOOK_SECRET", 8),
            grafana_timestamp_header: r
                .var("GRAFANA_TIMESTAMP_HEADER")
                .map(|h| h.to_ascii_lowercase()),
            alertmanager_token: r.secret("ALERTMANAGER_TOKEN", 16),
            generic_secret: r.secret("GENERIC_WEBHOOK_SECRET", 16),
        };
        let notify = read_notify(&mut r);
        let body_limit = match r.var("MAX_BODY_BYTES") {
            None => DEFAULT_BODY_LIMIT,
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1024..=4_500_000).contains(&n) => n,
                _ => {
                    r.errors.push(ConfigError::new(
                        "MAX_BODY_BYTES",
                        "must be a byte count from 1024 to 4500000 (Vercel's body limit)",
                    ));
                    DEFAULT_BODY_LIMIT
                }
            },
        };
        let mut duration = |key: &str, default: std::time::Duration| match r.var(key) {
            None => default,
            Some(v) => match crate::core::duration::parse(&v) {
                Ok(d)
                    if d >= std::time::Duration::from_millis(100)
                        && d <= std::time::Duration::from_secs(60) =>
                {
                    d
                }
                _ => {
                    r.errors.push(ConfigError::new(
                        key,
                        "must be a duration from 100ms to 60s, like \"2s\" or \"500ms\"",
                    ));
                    default
                }
            },
        };
        let defaults = crate::store::StoreTimeouts::default();
        let store_timeouts = crate::store::StoreTimeouts {
            connect: duration("STORE_CONNECT_TIMEOUT", defaults.connect),
            operation: duration("STORE_OPERATION_TIMEOUT", defaults.operation),
        };
        let (policy, policy_source) = read_policy(&mut r);
        if policy.database.backup.provider == crate::core::policy::BackupProvider::PgDump
            && backups.dir.is_none()
        {
            r.errors.push(ConfigError::new(
                "BACKUP_DIR",
                "is required when database.backup.provider = \"pg_dump\" (the directory of dump files)",
            ));
        }
        let on_vercel = r.var("VERCEL").is_some() && r.var("VERCEL_DEV").is_none();
        if on_vercel
            && policy
                .channels
                .order
                .contains(&crate::core::policy::ChannelKind::Console)
        {
            r.errors.push(ConfigError::new(
                format!("{policy_source} channels.order"),
                "\"console\" is for local use: on Vercel the function log would hold usable approval links; configure slack, email or sms",
            ));
        }
        if r.errors.is_empty() {
            Ok(Config {
                store,
                store_timeouts,
                cron_secret,
                operator_token,
                app_database_url,
                backups,
                snapshot_key,
                vercel,
                signing_keys,
                public_base_url,
                alert_secrets,
                notify,
                body_limit,
                policy,
                policy_source,
            })
        } else {
            Err(ConfigErrors(r.errors))
        }
    }

    /// Things that are allowed but probably not intended; shown by health and check-config.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.cron_secret.is_none() {
            w.push("CRON_SECRET is not set: cron routes refuse every call".to_string());
        }
        if self.operator_token.is_none() {
            w.push("OPERATOR_TOKEN is not set: operator routes refuse every call".to_string());
        }
        if self.vercel.is_none() {
            w.push("VERCEL_TOKEN is not set: rollbacks run in dry-run mode".to_string());
        }
        if self.signing_keys.is_empty() {
            w.push("APPROVAL_SIGNING_KEYS is not set: approval links cannot be issued".to_string());
        }
        w
    }
}

/// Store choice: `ROLLBACK_GUARD_STORE` if set; else Postgres when a database
/// URL is present, Redis when a Redis URL is present, SQLite otherwise.
fn read_store(r: &mut Reader) -> StoreConfig {
    // The unpooled URL is preferred: the guard takes advisory locks and runs DDL.
    let pg_url = r
        .var("DATABASE_URL_UNPOOLED")
        .or_else(|| r.var("DATABASE_URL"));
    let redis_url = r.var("REDIS_URL").or_else(|| r.var("KV_URL"));
    let schema = r
        .var("DATABASE_SCHEMA")
        .unwrap_or_else(|| "rollback_guard".into());
    if !is_identifier(&schema) {
        r.errors.push(ConfigError::new(
            "DATABASE_SCHEMA",
            "must match [a-z_][a-z0-9_]* and be at most 63 characters",
        ));
    }
    let prefix = r.var("REDIS_KEY_PREFIX").unwrap_or_else(|| "rg:".into());
    let sqlite = StoreConfig::Sqlite {
        path: r
            .var("ROLLBACK_GUARD_SQLITE_PATH")
            .unwrap_or_else(|| DEFAULT_SQLITE_PATH.into())
            .into(),
    };
    let choice = r.var("ROLLBACK_GUARD_STORE");
    let postgres = |r: &mut Reader, url: Option<String>| match url {
        Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
            StoreConfig::Postgres {
                url: Secret::new(u),
                schema: schema.clone(),
            }
        }
        Some(_) => {
            r.errors.push(ConfigError::new(
                "DATABASE_URL",
                "must start with postgres:// or postgresql://",
            ));
            sqlite.clone()
        }
        None => {
            r.errors.push(ConfigError::new(
                "DATABASE_URL",
                "is required when ROLLBACK_GUARD_STORE=postgres",
            ));
            sqlite.clone()
        }
    };
    let redis = |r: &mut Reader, url: Option<String>| match url {
        Some(u) if u.starts_with("redis://") || u.starts_with("rediss://") => StoreConfig::Redis {
            url: Secret::new(u),
            prefix: prefix.clone(),
        },
        Some(_) => {
            r.errors.push(ConfigError::new(
                "REDIS_URL",
                "must start with redis:// or rediss://",
            ));
            sqlite.clone()
        }
        None => {
            r.errors.push(ConfigError::new(
                "REDIS_URL",
                "is required when ROLLBACK_GUARD_STORE=redis",
            ));
            sqlite.clone()
        }
    };
    let chosen = match choice.as_deref() {
        Some("postgres") => postgres(r, pg_url),
        Some("redis") => redis(r, redis_url),
        Some("sqlite") => sqlite.clone(),
        Some(other) => {
            r.errors.push(ConfigError::new(
                "ROLLBACK_GUARD_STORE",
                format!("{other:?} is not one of postgres, redis, sqlite"),
            ));
            sqlite.clone()
        }
        None if pg_url.is_some() => postgres(r, pg_url),
        None if redis_url.is_some() => redis(r, redis_url),
        None => sqlite.clone(),
    };
    // On Vercel (but not `vercel dev`) the embedded store cannot work.
    let on_vercel = r.var("VERCEL").is_some() && r.var("VERCEL_DEV").is_none();
    if on_vercel && matches!(chosen, StoreConfig::Sqlite { .. }) {
        r.errors.push(ConfigError::new(
            "DATABASE_URL",
            "on Vercel, set DATABASE_URL (Postgres, e.g. Neon) or REDIS_URL (Upstash / Vercel KV): \
             the function file system is read-only and every function runs in its own instance, \
             so the embedded SQLite store cannot hold the guard's state there",
        ));
    }
    chosen
}

fn read_vercel(r: &mut Reader) -> Option<VercelConfig> {
    let token = r.secret("VERCEL_TOKEN", 8)?;
    let Some(project_id) = r.var("VERCEL_PROJECT_ID") else {
        r.errors.push(ConfigError::new(
            "VERCEL_PROJECT_ID",
            "is required when VERCEL_TOKEN is set",
        ));
        return None;
    };
    let api_base = match r.var("VERCEL_API_BASE") {
        None => url::Url::parse("https://api.vercel.com").expect("constant URL"),
        Some(_) => r.url("VERCEL_API_BASE")?,
    };
    Some(VercelConfig {
        token,
        project_id,
        team_id: r.var("VERCEL_TEAM_ID"),
        api_base,
    })
}

/// `APPROVAL_SIGNING_KEYS="k2:<secret>,k1:<secret>"`; the first key signs.
fn read_signing_keys(r: &mut Reader) -> Vec<SigningKey> {
    const KEY: &str = "APPROVAL_SIGNING_KEYS";
    let Some(raw) = r.var(KEY) else {
        return Vec::new();
    };
    let mut keys: Vec<SigningKey> = Vec::new();
    for (i, part) in raw.split(',').map(str::trim).enumerate() {
        let Some((kid, secret)) = part.split_once(':') else {
            r.errors.push(ConfigError::new(
                KEY,
                format!("entry {} must look like <kid>:<secret>", i + 1),
            ));
            continue;
        };
        if kid.is_empty()
            || kid.len() > 16
            || !kid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            r.errors.push(ConfigError::new(
                KEY,
                format!("entry {}: key id must be 1-16 of [A-Za-z0-9_-]", i + 1),
            ));
            continue;
        }
        if secret.len() < 32 {
            r.errors.push(ConfigError::new(
                KEY,
                format!("key {kid:?} must be at least 32 characters"),
            ));
            continue;
        }
        if keys.iter().any(|k| k.kid == kid) {
            r.errors.push(ConfigError::new(
                KEY,
                format!("key id {kid:?} appears twice"),
            ));
            continue;
        }
        keys.push(SigningKey {
            kid: kid.to_string(),
            key: Secret::new(secret),
        });
    }
    keys
}

fn read_notify(r: &mut Reader) -> NotifyConfig {
    let slack_webhook_url = r
        .url("SLACK_WEBHOOK_URL")
        .map(|u| Secret::new(u.to_string()));
    NotifyConfig {
        slack_webhook_url,
        slack_signing_secret: r.secret("SLACK_SIGNING_SECRET", 8),
        resend_api_key: r.secret("RESEND_API_KEY", 8),
        email_from: r.var("EMAIL_FROM"),
        twilio_account_sid: r.var("TWILIO_ACCOUNT_SID"),
        twilio_auth_token: r.secret("TWILIO_AUTH_TOKEN", 8),
        twilio_from: r.var("TWILIO_FROM"),
        resend_api_base: r
            .url("RESEND_API_BASE")
            .unwrap_or_else(|| url::Url::parse("https://api.resend.com").expect("constant URL")),
        twilio_api_base: r
            .url("TWILIO_API_BASE")
            .unwrap_or_else(|| url::Url::parse("https://api.twilio.com").expect("constant URL")),
    }
}

/// The policy: inline `ROLLBACK_GUARD_POLICY_TOML`, else the file at
/// `ROLLBACK_GUARD_POLICY` (which must exist), else `rollback-guard.toml` if
/// present, else the built-in defaults.
fn read_policy(r: &mut Reader) -> (Policy, String) {
    let (text, source) = if let Some(inline) =
        (r.lookup)("ROLLBACK_GUARD_POLICY_TOML").filter(|v| !v.trim().is_empty())
    {
        (inline, "ROLLBACK_GUARD_POLICY_TOML".to_string())
    } else if let Some(path) = r.var("ROLLBACK_GUARD_POLICY") {
        match std::fs::read_to_string(&path) {
            Ok(t) => (t, path),
            Err(e) => {
                r.errors.push(ConfigError::new(
                    "ROLLBACK_GUARD_POLICY",
                    format!("cannot read {path}: {e}"),
                ));
                return (
                    Policy::with_standard_environments(),
                    "built-in defaults".into(),
                );
            }
        }
    } else {
        match std::fs::read_to_string(DEFAULT_POLICY_PATH) {
            Ok(t) => (t, DEFAULT_POLICY_PATH.to_string()),
            Err(_) => {
                return (
                    Policy::with_standard_environments(),
                    "built-in defaults".into(),
                )
            }
        }
    };
    match Policy::from_toml(&text) {
        Ok(p) => (p, source),
        Err(errs) => {
            r.errors.extend(
                errs.into_iter()
                    .map(|e| ConfigError::new(format!("{source} {}", e.key), e.detail)),
            );
            (Policy::with_standard_environments(), source)
        }
    }
}

fn is_identifier(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'_'))
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'))
        && s.len() <= 63
}

mod readiness;
#[cfg(test)]
mod tests;

impl Config {
    /// What the backup job reads from the configuration.
    pub fn backup_job(&self) -> crate::flows::backup::job::Inputs<'_> {
        crate::flows::backup::job::Inputs {
            access: &self.backups,
            policy: &self.policy,
            app_database_url: self.app_database_url.as_ref(),
        }
    }
}
