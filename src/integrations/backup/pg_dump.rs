//! Plain `pg_dump` backups in a directory. File names carry a sortable UTC
//! timestamp and the label: `20261125T010000Z_full.dump`,
//! `20261125T010000Z_pre-migration_<migration>.dump`.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;

use super::{BackupError, BackupInfo, BackupSource};
use crate::core::clock::Timestamp;

/// Backups as files in `dir`.
pub struct PgDumpDir {
    pub dir: PathBuf,
}

/// The file name for a new backup.
pub fn file_name(at: Timestamp, label: &str) -> String {
    let ts = at.to_rfc3339();
    let compact: String = ts[..19]
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == 'T')
        .collect();
    format!("{compact}Z_{}.dump", label.replace('/', "_"))
}

/// Parses a file name back into (time, label).
pub fn parse_name(name: &str) -> Option<(Timestamp, String)> {
    let stem = name.strip_suffix(".dump")?;
    let (ts, label) = stem.split_once("Z_")?;
    if ts.len() != 15 {
        return None;
    }
    let rfc = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &ts[0..4],
        &ts[4..6],
        &ts[6..8],
        &ts[9..11],
        &ts[11..13],
        &ts[13..15]
    );
    let label = match label.strip_prefix("pre-migration_") {
        Some(m) => format!("pre-migration/{m}"),
        None => label.to_string(),
    };
    Some((Timestamp::parse_rfc3339(&rfc)?, label))
}

#[async_trait]
impl BackupSource for PgDumpDir {
    fn name(&self) -> &'static str {
        "pg_dump"
    }

    async fn list(&self) -> Result<Vec<BackupInfo>, BackupError> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            for entry in std::fs::read_dir(&dir)
                .map_err(|e| BackupError::Io(format!("{}: {e}", dir.display())))?
            {
                let entry = entry.map_err(|e| BackupError::Io(e.to_string()))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some((created_at, label)) = parse_name(&name) else {
                    continue;
                };
                // An empty file is a dump that never finished.
                let ready = entry.metadata().map(|m| m.len() > 0).unwrap_or(false);
                out.push(BackupInfo {
                    id: entry.path().display().to_string(),
                    label,
                    created_at,
                    ready,
                });
            }
            Ok(out)
        })
        .await
        .map_err(|e| BackupError::Io(e.to_string()))?
    }

    async fn history_window(&self) -> Result<Option<Duration>, BackupError> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let at = Timestamp::parse_rfc3339("2026-11-25T01:02:03Z").unwrap();
        let n = file_name(at, "pre-migration/20261120000000_add_profile");
        assert_eq!(
            n,
            "20261125T010203Z_pre-migration_20261120000000_add_profile.dump"
        );
        assert_eq!(
            parse_name(&n),
            Some((at, "pre-migration/20261120000000_add_profile".into()))
        );
        assert_eq!(
            parse_name(&file_name(at, "full")),
            Some((at, "full".into()))
        );
        assert_eq!(parse_name("notes.txt"), None);
    }
}
