//! The app's Prisma migrations folder and their down scripts:
//! `<dir>/<timestamp>_<name>/migration.sql` plus the inverse in `down.sql`
//! (policy `database.down_file`), and Prisma's checksum. What a script would
//! do to data is [`crate::core::sql`]'s job.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// One migration folder.
#[derive(Clone, Debug, PartialEq)]
pub struct Migration {
    /// Folder name, as in `_prisma_migrations.migration_name`.
    pub name: String,
    pub dir: PathBuf,
    pub up_sql: String,
    pub down_sql: Option<String>,
}

impl Migration {
    /// Prisma's checksum: lowercase hex SHA-256 of `migration.sql`.
    pub fn checksum(&self) -> String {
        hex::encode(Sha256::digest(self.up_sql.as_bytes()))
    }
}

/// Reads every migration folder, in Prisma's (name) order.
pub fn read_dir(dir: &Path, down_file: &str) -> std::io::Result<Vec<Migration>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let up = path.join("migration.sql");
        if !path.is_dir() || !up.exists() {
            continue;
        }
        let down = path.join(down_file);
        out.push(Migration {
            name: entry.file_name().to_string_lossy().into_owned(),
            up_sql: std::fs::read_to_string(&up)?,
            down_sql: if down.exists() {
                Some(std::fs::read_to_string(&down)?)
            } else {
                None
            },
            dir: path,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_is_prismas() {
        let m = Migration {
            name: "x".into(),
            dir: PathBuf::new(),
            up_sql: "hello".into(),
            down_sql: None,
        };
        assert_eq!(
            m.checksum(),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
    }
}
