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

/// Reasons a script destroys data; empty when it does not. The SQL is parsed
/// with Postgres's own grammar (`pg_query`), so comments, strings and dollar
/// quoting cannot hide or fake a statement. What cannot be checked — SQL
/// that does not parse, `DO` blocks — counts as destructive.
pub fn destructive(sql: &str) -> Vec<String> {
    use pg_query::protobuf::node::Node as N;
    use pg_query::protobuf::{AlterTableType, ObjectType};
    let parsed = match pg_query::parse(sql, pg_query::ParserOptions::DEFAULT) {
        Ok(p) => p,
        Err(e) => {
            return vec![format!(
                "could not be parsed, so it cannot be shown to be safe: {e}"
            )]
        }
    };
    let text = |loc: i32, len: i32| -> String {
        let start = loc.max(0) as usize;
        let end = if len > 0 {
            start + len as usize
        } else {
            sql.len()
        };
        sql.get(start..end.min(sql.len()))
            .unwrap_or("")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .take(120)
            .collect()
    };
    let mut reasons = Vec::new();
    for raw in &parsed.protobuf.stmts {
        let Some(node) = raw.stmt.as_ref().and_then(|s| s.node.as_ref()) else {
            continue;
        };
        let why: Vec<&str> = match node {
            N::DropStmt(d) => match d.remove_type() {
                ObjectType::ObjectTable => vec!["drops a table"],
                ObjectType::ObjectSchema => vec!["drops a schema"],
                ObjectType::ObjectType | ObjectType::ObjectDomain => vec!["drops a type"],
                ObjectType::ObjectMatview => vec!["drops a materialized view"],
                ObjectType::ObjectSequence => vec!["drops a sequence"],
                _ => vec![],
            },
            N::TruncateStmt(_) => vec!["truncates a table"],
            N::DeleteStmt(_) => vec!["deletes rows"],
            N::UpdateStmt(_) => vec!["rewrites rows"],
            N::DoStmt(_) => vec!["runs a DO block, which cannot be checked"],
            N::AlterTableStmt(a) => a
                .cmds
                .iter()
                .filter_map(|c| match c.node.as_ref() {
                    Some(N::AlterTableCmd(cmd)) => match cmd.subtype() {
                        AlterTableType::AtDropColumn => Some("drops a column"),
                        AlterTableType::AtAlterColumnType => Some("changes a column type"),
                        _ => None,
                    },
                    _ => None,
                })
                .collect(),
            _ => vec![],
        };
        for w in why {
            reasons.push(format!("{w}: {}", text(raw.stmt_location, raw.stmt_len)));
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
ALTER TABLE "User" DROP CONSTRAINT "User_pkey", ALTER COLUMN "name" DROP NOT NULL;
ALTER TABLE "User" ALTER COLUMN "name" DROP DEFAULT;
INSERT INTO audit VALUES ('DROP TABLE x; TRUNCATE y');
CREATE TABLE "Old" (id int);
"#;
        assert_eq!(destructive(down), Vec::<String>::new());
    }

    #[test]
    fn dollar_quotes_do_blocks_and_unparseable_sql_are_treated_safely() {
        // Text that only looks like a statement inside a dollar-quoted string is not one…
        assert_eq!(
            destructive("SELECT $x$ DROP TABLE users; $x$;"),
            Vec::<String>::new()
        );
        // …but a DO block cannot be checked, and SQL that does not parse is not assumed safe.
        assert!(
            destructive("DO $$ BEGIN EXECUTE 'DROP TABLE users'; END $$;")[0].contains("DO block")
        );
        assert!(destructive("DROP TABEL users;")[0].contains("could not be parsed"));
        assert!(
            destructive("TRUNCATE users; DELETE FROM sessions; UPDATE users SET name = NULL;")
                .len()
                == 3
        );
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
