//! The app's Prisma migrations folder and their down scripts (pure):
//! `<dir>/<timestamp>_<name>/migration.sql` plus the inverse in `down.sql`
//! (policy `database.down_file`), Prisma's checksum, and a classifier that
//! flags down scripts that destroy data (a down that drops what the up
//! created also drops every row written since).

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

/// SQL with comments and quoted literals blanked out, upper-cased, whitespace folded.
fn normalise(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '-' if chars.peek() == Some(&'-') => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        break;
                    }
                }
                out.push(' ');
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                for n in chars.by_ref() {
                    if prev == '*' && n == '/' {
                        break;
                    }
                    prev = n;
                }
                out.push(' ');
            }
            '\'' => {
                for n in chars.by_ref() {
                    if n == '\'' {
                        break;
                    }
                }
                out.push_str("''");
            }
            c if c.is_whitespace() => {
                if !out.ends_with(' ') {
                    out.push(' ');
                }
            }
            c => out.extend(c.to_uppercase()),
        }
    }
    out
}

/// Reasons a script destroys data; empty when it does not.
pub fn destructive(sql: &str) -> Vec<String> {
    let text = normalise(sql);
    let mut reasons = Vec::new();
    for stmt in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let flag = if stmt.starts_with("DROP TABLE") {
            Some("drops a table")
        } else if stmt.starts_with("DROP SCHEMA") {
            Some("drops a schema")
        } else if stmt.starts_with("TRUNCATE") {
            Some("truncates a table")
        } else if stmt.starts_with("DELETE FROM") {
            Some("deletes rows")
        } else if stmt.starts_with("ALTER TABLE")
            && stmt.contains(" DROP ")
            && !stmt.contains(" DROP CONSTRAINT ")
            && !stmt.contains(" DROP DEFAULT")
            && !stmt.contains(" DROP NOT NULL")
        {
            Some("drops a column")
        } else if stmt.starts_with("ALTER TABLE")
            && (stmt.contains(" TYPE ") || stmt.contains(" SET DATA TYPE "))
        {
            Some("changes a column type")
        } else if stmt.starts_with("DROP TYPE") {
            Some("drops a type")
        } else {
            None
        };
        if let Some(why) = flag {
            reasons.push(format!(
                "{why}: {}",
                stmt.chars().take(120).collect::<String>()
            ));
        }
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_statements_that_lose_data() {
        let down = r#"
-- drop the new table
DROP TABLE "Profile";
ALTER TABLE "User" DROP COLUMN "bio";
alter table "Order" alter column "total" type integer;
"#;
        let r = destructive(down);
        assert_eq!(r.len(), 3, "{r:?}");
        assert!(r[0].starts_with("drops a table"));
        assert!(r[1].starts_with("drops a column"));
        assert!(r[2].starts_with("changes a column type"));
    }

    #[test]
    fn ignores_safe_statements_comments_and_strings() {
        let down = r#"
/* DROP TABLE "User"; */
DROP INDEX "User_email_key";
ALTER TABLE "User" DROP CONSTRAINT "User_pkey", DROP NOT NULL;
ALTER TABLE "User" ALTER COLUMN "name" DROP DEFAULT;
INSERT INTO audit VALUES ('DROP TABLE x; TRUNCATE y');
CREATE TABLE "Old" (id int);
"#;
        assert_eq!(destructive(down), Vec::<String>::new());
    }

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
