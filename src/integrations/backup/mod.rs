//! Where backups of the app's database live: providers behind
//! [`BackupSource`] (a pg_dump directory, Neon, S3). Whether they meet the
//! policy is [`crate::core::backup`]; the scheduled job is
//! [`crate::flows::backup`].

pub mod neon;
pub mod pg_dump;
pub mod s3;

use std::time::Duration;

use async_trait::async_trait;

pub use crate::core::backup::BackupInfo;

/// Backup provider credentials and locations.
#[derive(Clone, Debug)]
pub struct BackupAccess {
    /// Directory of `pg_dump` files (provider `pg_dump`).
    pub dir: Option<std::path::PathBuf>,
    pub neon_api_key: Option<crate::core::secret::Secret>,
    pub neon_project_id: Option<String>,
    /// Default `https://console.neon.tech/api/v2`.
    pub neon_api_base: String,
    /// S3-compatible endpoint, e.g. `https://s3.us-east-1.amazonaws.com`.
    pub s3_endpoint: Option<url::Url>,
    pub s3_bucket: Option<String>,
    pub s3_prefix: String,
    pub s3_region: String,
    pub s3_access_key: Option<String>,
    pub s3_secret_key: Option<crate::core::secret::Secret>,
}

/// A provider failure.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("backup provider unreachable: {0}")]
    Unreachable(String),
    #[error("backup provider answered {status}: {detail}")]
    Rejected { status: u16, detail: String },
    #[error("backup location unreadable: {0}")]
    Io(String),
}

/// Where backups live.
#[async_trait]
pub trait BackupSource: Send + Sync {
    fn name(&self) -> &'static str;
    /// Every backup, any order.
    async fn list(&self) -> Result<Vec<BackupInfo>, BackupError>;
    /// The point-in-time restore window, if the provider has one.
    async fn history_window(&self) -> Result<Option<Duration>, BackupError>;
}
