//! Backups of the app's database: where they are (providers behind
//! [`BackupSource`]), whether they meet the policy ([`check`]), and the
//! `/api/cron/backups` job ([`job`]). A backup's `label` is `full` or
//! `pre-migration/<migration name>`.

pub mod check;
pub mod job;
pub mod local;
pub mod neon;
pub mod pg_dump;
pub mod s3;

use std::time::Duration;

use async_trait::async_trait;

use crate::clock::Timestamp;

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
