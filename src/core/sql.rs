//! SQL hazard analysis (pure): flags statements that destroy data (a down
//! that drops what the up created also drops every row written since).

/// Splits SQL into statements, upper-cased with comments removed, string
/// literals and dollar-quoted bodies blanked, quoted identifiers kept (as
/// `"…"` placeholders) and whitespace folded. Understands Postgres's nested
/// block comments, `''` and `E'\''` escapes, and `$tag$…$tag$` quoting.
/// Errors on an unterminated quote or comment.
fn statements(sql: &str) -> Result<Vec<String>, String> {
    Ok(split(sql)?.into_iter().map(|s| s.words).collect())
}

/// One statement of a script: its normalized words (comments removed,
/// literals elided, upper case) for classifying, and its original text for running.
#[derive(Clone, Debug, PartialEq)]
pub struct Statement {
    pub words: String,
    pub text: String,
}

fn split(sql: &str) -> Result<Vec<Statement>, String> {
    let b = sql.as_bytes();
    let (mut out, mut cur, mut i) = (Vec::new(), String::new(), 0usize);
    let mut start = 0usize;
    let push_space = |cur: &mut String| {
        if !cur.ends_with(' ') && !cur.is_empty() {
            cur.push(' ');
        }
    };
    while i < b.len() {
        let c = b[i];
        match c {
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                push_space(&mut cur);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 1;
                i += 2;
                while depth > 0 {
                    match (b.get(i), b.get(i + 1)) {
                        (None, _) => return Err("unterminated /* comment".into()),
                        (Some(b'/'), Some(b'*')) => {
                            depth += 1;
                            i += 2;
                        }
                        (Some(b'*'), Some(b'/')) => {
                            depth -= 1;
                            i += 2;
                        }
                        _ => i += 1,
                    }
                }
                push_space(&mut cur);
                continue;
            }
            b'\'' => {
                let backslash = i > 0
                    && matches!(b[i - 1], b'E' | b'e')
                    && (i < 2 || !b[i - 2].is_ascii_alphanumeric());
                i += 1;
                loop {
                    match b.get(i) {
                        None => return Err("unterminated string literal".into()),
                        Some(b'\\') if backslash => i += 2,
                        Some(b'\'') if b.get(i + 1) == Some(&b'\'') => i += 2,
                        Some(b'\'') => break,
                        _ => i += 1,
                    }
                }
                cur.push_str("''");
            }
            b'"' => {
                i += 1;
                loop {
                    match b.get(i) {
                        None => return Err("unterminated quoted identifier".into()),
                        Some(b'"') if b.get(i + 1) == Some(&b'"') => i += 2,
                        Some(b'"') => break,
                        _ => i += 1,
                    }
                }
                cur.push_str("\"…\"");
            }
            b'$' if !cur
                .chars()
                .last()
                .is_some_and(|p| p.is_ascii_alphanumeric() || p == '_') =>
            {
                // `$tag$` opens a dollar-quoted string; `$1` is a parameter.
                let tag_end = b[i + 1..]
                    .iter()
                    .position(|x| !(x.is_ascii_alphanumeric() || *x == b'_'))
                    .map(|p| i + 1 + p);
                match tag_end {
                    Some(e)
                        if b[e] == b'$' && !b[i + 1..e].first().is_some_and(u8::is_ascii_digit) =>
                    {
                        let tag = &sql[i..=e];
                        let body_start = e + 1;
                        let close = sql[body_start..]
                            .find(tag)
                            .ok_or("unterminated dollar-quoted string")?;
                        i = body_start + close + tag.len();
                        cur.push_str("$$");
                        continue;
                    }
                    _ => cur.push('$'),
                }
            }
            b';' => {
                let stmt = cur.trim().to_string();
                if !stmt.is_empty() {
                    out.push(Statement {
                        words: stmt,
                        text: sql[start..i].trim().to_string(),
                    });
                }
                cur.clear();
                start = i + 1;
            }
            c if c.is_ascii_whitespace() => push_space(&mut cur),
            _ => {
                // Multi-byte characters are copied whole.
                let ch = sql[i..].chars().next().unwrap_or(' ');
                cur.extend(ch.to_uppercase());
                i += ch.len_utf8();
                continue;
            }
        }
        i += 1;
    }
    let last = cur.trim().to_string();
    if !last.is_empty() {
        out.push(Statement {
            words: last,
            text: sql[start..].trim().to_string(),
        });
    }
    Ok(out)
}

/// Why a script cannot run as one atomic step.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotAtomic {
    #[error("could not be checked ({0})")]
    Unreadable(String),
    #[error("statement {index} ({what}) controls transactions itself; only one outer BEGIN/COMMIT pair is accepted (and removed)")]
    TransactionControl { index: usize, what: String },
    #[error("statement {index} ({what}) cannot run inside a transaction")]
    OutsideTransactionOnly { index: usize, what: String },
}

/// The statements of a script to run inside the caller's one transaction.
/// Balanced `BEGIN`/`START TRANSACTION` … `COMMIT`/`END` blocks (what
/// `prisma migrate diff` writes around an enum rewrite, in the middle of a
/// larger script) are removed: their bodies run in the one transaction with
/// everything else. Any other transaction control (`ROLLBACK`, `SAVEPOINT`,
/// a `COMMIT` without `BEGIN`, nesting, a `BEGIN` never closed), and
/// statements Postgres refuses inside a transaction (`CONCURRENTLY`,
/// `VACUUM`, database and tablespace DDL, `ALTER SYSTEM`), make the script
/// not atomic. Statement numbers in errors count from 1 in the script.
pub fn atomic_body(sql: &str) -> Result<Vec<Statement>, NotAtomic> {
    let stmts = split(sql).map_err(NotAtomic::Unreadable)?;
    let mut body = Vec::with_capacity(stmts.len());
    let mut open = false;
    for (n, s) in stmts.into_iter().enumerate() {
        let index = n + 1;
        let words: Vec<&str> = s.words.split(' ').collect();
        let what = words.iter().take(3).copied().collect::<Vec<_>>().join(" ");
        let begins =
            words[0] == "BEGIN" || (words[0] == "START" && words.get(1) == Some(&"TRANSACTION"));
        let ends = matches!(words[0], "COMMIT" | "END");
        let control = matches!(words[0], "ROLLBACK" | "ABORT" | "SAVEPOINT" | "RELEASE")
            || (matches!(words[0], "PREPARE" | "SET") && words.get(1) == Some(&"TRANSACTION"));
        match (begins, ends, open) {
            (true, _, false) => open = true,
            (_, true, true) => open = false,
            (true, _, true) | (_, true, false) => {
                return Err(NotAtomic::TransactionControl { index, what })
            }
            _ if control => return Err(NotAtomic::TransactionControl { index, what }),
            _ => body.push((index, what, s)),
        }
    }
    if open {
        return Err(NotAtomic::TransactionControl {
            index: body.len() + 1,
            what: "BEGIN without COMMIT".into(),
        });
    }
    let stmts: Vec<Statement> = body
        .iter()
        .map(|(index, what, s)| check_in_transaction(*index, what, s).map(|()| s.clone()))
        .collect::<Result<_, _>>()?;
    Ok(stmts)
}

fn check_in_transaction(index: usize, what: &str, s: &Statement) -> Result<(), NotAtomic> {
    let words: Vec<&str> = s.words.split(' ').collect();
    let what = what.to_string();
    let outside = words.contains(&"CONCURRENTLY")
        || words[0] == "VACUUM"
        || (matches!(words[0], "CREATE" | "DROP" | "ALTER")
            && matches!(
                words.get(1),
                Some(&"DATABASE") | Some(&"TABLESPACE") | Some(&"SYSTEM")
            ))
        || (words[0] == "REINDEX" && matches!(words.get(1), Some(&"DATABASE") | Some(&"SYSTEM")));
    if outside {
        return Err(NotAtomic::OutsideTransactionOnly { index, what });
    }
    Ok(())
}

/// `DROP` targets that lose no data.
const SAFE_DROPS: &[&str] = &[
    "INDEX",
    "VIEW",
    "FUNCTION",
    "PROCEDURE",
    "TRIGGER",
    "POLICY",
    "RULE",
    "EXTENSION",
    "AGGREGATE",
    "OPERATOR",
    "CAST",
    "COLLATION",
    "PUBLICATION",
    "SUBSCRIPTION",
    "STATISTICS",
    "EVENT",
    "TEXT",
    "OWNED",
    "ROLE",
    "USER",
    "SERVER",
    "ACCESS",
];

/// Reasons a script destroys data; empty when it does not. What cannot be
/// checked — an unterminated quote, a `DO` block, a `DROP` of an unknown kind
/// — counts as destructive.
pub fn destructive(sql: &str) -> Vec<String> {
    let stmts = match statements(sql) {
        Ok(s) => s,
        Err(e) => {
            return vec![format!(
                "could not be checked ({e}), so it is not assumed safe"
            )]
        }
    };
    let mut reasons = Vec::new();
    for stmt in stmts {
        let words: Vec<&str> = stmt
            .split(' ')
            .map(|w| w.trim_matches(|c| matches!(c, ',' | '(' | ')')))
            .filter(|w| !w.is_empty())
            .collect();
        let flag = |w: &str| words.first() == Some(&w);
        let why: Vec<&str> = if flag("DROP") {
            let what = words.get(1).copied().unwrap_or("");
            match what {
                "TABLE" => vec!["drops a table"],
                "SCHEMA" => vec!["drops a schema"],
                "TYPE" | "DOMAIN" => vec!["drops a type"],
                "SEQUENCE" => vec!["drops a sequence"],
                "MATERIALIZED" => vec!["drops a materialized view"],
                w if SAFE_DROPS.contains(&w) => vec![],
                _ => vec!["is a DROP the classifier does not recognise"],
            }
        } else if flag("TRUNCATE") {
            vec!["truncates a table"]
        } else if flag("DELETE") {
            vec!["deletes rows"]
        } else if flag("UPDATE") {
            vec!["rewrites rows"]
        } else if flag("DO") {
            vec!["runs a DO block, which cannot be checked"]
        } else if flag("ALTER") && words.get(1) == Some(&"TABLE") {
            let mut w = Vec::new();
            for (i, word) in words.iter().enumerate() {
                let next = words.get(i + 1).copied().unwrap_or("");
                if *word == "DROP"
                    && !matches!(
                        next,
                        "CONSTRAINT" | "DEFAULT" | "NOT" | "IDENTITY" | "EXPRESSION"
                    )
                {
                    w.push("drops a column");
                }
                // `ALTER TABLE t ALTER [COLUMN] c [SET DATA] TYPE …` (a column named
                // `type` is a false alarm, which errs on the safe side).
                if *word == "TYPE" && i >= 4 {
                    w.push("changes a column type");
                }
            }
            w.dedup();
            w
        } else {
            vec![]
        };
        for w in why {
            reasons.push(format!(
                "{w}: {}",
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
ALTER TABLE "User" DROP CONSTRAINT "User_pkey", ALTER COLUMN "name" DROP NOT NULL;
ALTER TABLE "User" ALTER COLUMN "name" DROP DEFAULT;
INSERT INTO audit VALUES ('DROP TABLE x; TRUNCATE y');
CREATE TABLE "Old" (id int);
"#;
        assert_eq!(destructive(down), Vec::<String>::new());
    }

    #[test]
    fn dollar_quotes_do_blocks_and_unknown_sql_are_treated_safely() {
        // Text that only looks like a statement inside a dollar-quoted string is not one…
        assert_eq!(
            destructive("SELECT $x$ DROP TABLE users; $x$;"),
            Vec::<String>::new()
        );
        assert_eq!(
            destructive(
                "CREATE FUNCTION f() RETURNS int AS $$ DELETE FROM t; SELECT 1 $$ LANGUAGE sql;"
            ),
            Vec::<String>::new()
        );
        // …but a DO block cannot be checked, and what is not recognised is not assumed safe.
        assert!(
            destructive("DO $$ BEGIN EXECUTE 'DROP TABLE users'; END $$;")[0].contains("DO block")
        );
        assert!(destructive("DROP TABEL users;")[0].contains("does not recognise"));
        assert!(destructive("SELECT 'unterminated")[0].contains("could not be checked"));
        assert!(
            destructive("/* a /* nested */ DROP TABLE x; */ SELECT 1;").is_empty(),
            "nested comments"
        );
        assert_eq!(
            destructive("TRUNCATE users; DELETE FROM sessions; UPDATE users SET name = NULL;")
                .len(),
            3
        );
        // Quoted identifiers with semicolons or keywords inside do not split or match.
        assert_eq!(
            destructive(r#"ALTER TABLE "a;DROP TABLE b" ADD COLUMN "drop" int;"#),
            Vec::<String>::new()
        );
        assert_eq!(
            destructive(r"SELECT E'it\'s; DROP TABLE x';"),
            Vec::<String>::new()
        );
        assert_eq!(
            destructive("ALTER TABLE t ALTER COLUMN c SET DATA TYPE bigint;").len(),
            1
        );
        assert_eq!(
            destructive(
                "ALTER TABLE t ALTER COLUMN c DROP IDENTITY, ALTER COLUMN d DROP EXPRESSION;"
            ),
            Vec::<String>::new()
        );
    }

    #[test]
    fn one_outer_begin_commit_pair_is_removed_and_the_body_kept_verbatim() {
        let sql = "-- AlterEnum\nBEGIN;\nCREATE TYPE \"Role_new\" AS ENUM ('USER');\nALTER TYPE \"Role\" RENAME TO \"Role_old\";\nCOMMIT;\n";
        let body = atomic_body(sql).unwrap();
        assert_eq!(
            body.iter().map(|s| s.text.as_str()).collect::<Vec<_>>(),
            vec![
                "CREATE TYPE \"Role_new\" AS ENUM ('USER')",
                "ALTER TYPE \"Role\" RENAME TO \"Role_old\""
            ]
        );
        assert_eq!(
            atomic_body("start transaction; select 1; end;")
                .unwrap()
                .len(),
            1
        );
        // Prisma puts the block in the middle of a larger script.
        let mixed = "ALTER TABLE a ADD COLUMN x int; BEGIN; CREATE TYPE t AS ENUM ('a'); COMMIT; ALTER TABLE a DROP COLUMN y;";
        assert_eq!(atomic_body(mixed).unwrap().len(), 3);
    }

    #[test]
    fn transaction_control_inside_the_body_is_refused_with_its_position() {
        for sql in [
            "CREATE TABLE a (x int); COMMIT; DROP TABLE b;",
            "BEGIN; BEGIN; CREATE TABLE a (x int); COMMIT; COMMIT;",
            "BEGIN; CREATE TABLE a (x int); ROLLBACK;",
            "SAVEPOINT s; DROP TABLE b;",
            "ROLLBACK;",
            "CREATE TABLE a (x int); BEGIN;",
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE; SELECT 1;",
        ] {
            assert!(
                matches!(atomic_body(sql), Err(NotAtomic::TransactionControl { .. })),
                "{sql}"
            );
        }
        assert_eq!(
            atomic_body("CREATE TABLE a (x int); COMMIT; SELECT 1;").unwrap_err(),
            NotAtomic::TransactionControl {
                index: 2,
                what: "COMMIT".into()
            }
        );
    }

    #[test]
    fn statements_postgres_refuses_in_a_transaction_are_refused() {
        for sql in [
            "DROP INDEX CONCURRENTLY \"User_name_idx\";",
            "CREATE UNIQUE INDEX CONCURRENTLY i ON t (x);",
            "VACUUM FULL t;",
            "CREATE DATABASE x;",
            "ALTER SYSTEM SET work_mem = '1GB';",
        ] {
            assert!(
                matches!(
                    atomic_body(sql),
                    Err(NotAtomic::OutsideTransactionOnly { .. })
                ),
                "{sql}"
            );
        }
        // The word inside a string or identifier is not a statement.
        assert!(atomic_body("COMMENT ON TABLE t IS 'COMMIT; VACUUM';").is_ok());
        assert!(atomic_body("ALTER TABLE \"concurrently\" ADD COLUMN x int;").is_ok());
    }
}
