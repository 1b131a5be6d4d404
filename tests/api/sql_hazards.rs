//! The SQL hazard corpus: adversarial scripts that once passed as safe,
//! Prisma-generated shapes, and the allowlist's safe forms, each with the
//! hazard kinds it must get. Every case marked safe is also run on real
//! Postgres against a populated schema (in a transaction that is rolled
//! back): it must keep every row and every column.

use rollback_guard::core::sql::{analyze, HazardKind};

use super::database_rollback::ScratchDb;
use rollback_guard::integrations::app_database;

use HazardKind::{
    ChangesData as Changes, DestroysData as Destroys, MayFail as Fails, NotInTransaction as NoTx,
    Unchecked as Unknown,
};

const SAFE: &[HazardKind] = &[];

/// (script, the kinds it must get; empty = safe)
const CORPUS: &[(&str, &[HazardKind])] = &[
    // Destructive statement not first, or hidden inside another statement.
    ("WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x", &[Destroys]),
    ("WITH x AS (UPDATE t SET a = 'q' RETURNING id) SELECT count(*) FROM x", &[Destroys]),
    ("WITH x AS (INSERT INTO u VALUES (5, 1) RETURNING id) SELECT * FROM x", &[Destroys]),
    ("EXPLAIN ANALYZE DELETE FROM t", &[Destroys]),
    ("PREPARE p AS DELETE FROM t; EXECUTE p", &[Destroys, Unknown]),
    ("MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DELETE", &[Destroys]),
    ("MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN UPDATE SET a = 'x'", &[Destroys]),
    ("INSERT INTO t (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET a = 'z'", &[Destroys]),
    ("CREATE RULE r AS ON INSERT TO u DO INSTEAD DELETE FROM t; INSERT INTO u VALUES (9, 1)", &[Unknown, Changes]),
    ("CREATE FUNCTION f2() RETURNS void LANGUAGE sql AS $$ DELETE FROM t $$; SELECT f2()", &[Unknown, Unknown]),
    ("CREATE PROCEDURE p() LANGUAGE sql AS $$ DELETE FROM t $$; CALL p()", &[Unknown, Unknown]),
    ("CREATE TRIGGER tr2 AFTER INSERT ON u FOR EACH ROW EXECUTE FUNCTION trg()", &[Unknown]),
    ("DO $$ BEGIN DELETE FROM t; END $$", &[Unknown]),
    ("DO LANGUAGE plpgsql $$ BEGIN TRUNCATE t; END $$", &[Unknown]),
    ("SELECT pg_terminate_backend(1)", &[Unknown]),
    ("SELECT 1; DELETE FROM t", &[Destroys]),
    // "Safe" drops that drop tables or columns.
    ("DROP OWNED BY bob", &[Unknown]),
    ("DROP EXTENSION citext CASCADE", &[Destroys]),
    ("DROP COLLATION c CASCADE", &[Destroys]),
    ("ALTER TYPE mood DROP ATTRIBUTE a CASCADE", &[Unknown]),
    ("DROP VIEW v CASCADE", &[Destroys]),
    ("DROP INDEX t_a_idx CASCADE", &[Destroys]),
    ("ALTER TABLE u DROP CONSTRAINT u_t_fk CASCADE", &[Destroys]),
    ("DROP FUNCTION trg() CASCADE", &[Destroys]),
    // Tokenizer mismatches with Postgres.
    // Postgres reads `é$$` as one identifier: the DROP is a statement of its own.
    ("SELECT 1 AS é$$; DROP TABLE t; SELECT 1 AS x$$", &[Destroys]),
    // `x_E` is an identifier, not an E'' string: the quote ends at the backslash.
    ("SELECT 1 AS x_E'\\'; DROP TABLE t; --'", &[Unknown, Destroys]),
    ("ALTER TABLE t DROP COLUMN identity", &[Destroys]),
    ("ALTER TABLE t DROP expression", &[Destroys]),
    ("ALTER TABLE t ALTER COLUMN c DROP IDENTITY", &[Unknown]),
    ("CREATE TABLE z (x int); SELECT 'unterminated", &[Unknown]),
    ("SELECT 1; /* unterminated comment", &[Unknown]),
    // Data loss, named.
    ("DROP TABLE IF EXISTS t", &[Destroys]),
    ("DROP SCHEMA s", &[Destroys]),
    ("DROP SEQUENCE s", &[Destroys]),
    ("DROP TYPE mood", &[Destroys]),
    ("DROP MATERIALIZED VIEW mv", &[Destroys]),
    ("TRUNCATE t RESTART IDENTITY CASCADE", &[Destroys]),
    ("DELETE FROM t WHERE id = 1", &[Destroys]),
    ("UPDATE t SET a = 'x'", &[Destroys]),
    ("ALTER TABLE t ALTER COLUMN a TYPE text", &[Destroys]),
    ("INSERT INTO u VALUES (7, 1)", &[Changes]),
    // May fail on existing data.
    ("ALTER TABLE t ADD COLUMN n int NOT NULL", &[Fails]),
    ("ALTER TABLE t ALTER COLUMN a SET NOT NULL", &[Fails]),
    ("ALTER TABLE t ADD CONSTRAINT t_a_key UNIQUE (a)", &[Fails]),
    ("ALTER TABLE t ADD CONSTRAINT t_b_check CHECK (b > 0)", &[Fails]),
    ("ALTER TABLE u VALIDATE CONSTRAINT u_t_fk", &[Fails]),
    ("CREATE UNIQUE INDEX t_b_key ON t (b)", &[Fails]),
    ("ALTER TABLE t ADD COLUMN w int DEFAULT f()", &[Unknown]),
    // Cannot run in one transaction.
    ("CREATE INDEX CONCURRENTLY t_b_idx ON t (b)", &[NoTx]),
    ("DROP INDEX CONCURRENTLY t_a_idx", &[NoTx]),
    ("REINDEX INDEX CONCURRENTLY t_a_idx", &[NoTx]),
    ("VACUUM t", &[NoTx]),
    ("BEGIN; CREATE TABLE y (x int); COMMIT", &[NoTx, NoTx]),
    ("LOCK TABLE t", &[Unknown]),
    ("COPY t FROM STDIN", &[Unknown]),
    ("ALTER TABLE t ENABLE ROW LEVEL SECURITY", &[Unknown]),
    // Prisma-generated shapes (prisma migrate diff).
    (
        "-- AlterEnum\nBEGIN;\nCREATE TYPE \"Role_new\" AS ENUM ('USER', 'ADMIN');\nALTER TABLE \"User\" ALTER COLUMN \"role\" DROP DEFAULT;\nALTER TABLE \"User\" ALTER COLUMN \"role\" TYPE \"Role_new\" USING (\"role\"::text::\"Role_new\");\nALTER TYPE \"Role\" RENAME TO \"Role_old\";\nALTER TYPE \"Role_new\" RENAME TO \"Role\";\nDROP TYPE \"Role_old\";\nALTER TABLE \"User\" ALTER COLUMN \"role\" SET DEFAULT 'USER';\nCOMMIT;",
        &[NoTx, Destroys, Destroys, NoTx],
    ),
    ("-- AlterTable\nALTER TABLE \"User\" RENAME COLUMN \"name\" TO \"fullName\";", SAFE),
    (
        "-- DropForeignKey\nALTER TABLE \"Post\" DROP CONSTRAINT \"Post_authorId_fkey\";\n-- AddForeignKey\nALTER TABLE \"Post\" ADD CONSTRAINT \"Post_authorId_fkey\" FOREIGN KEY (\"authorId\") REFERENCES \"User\"(\"id\") ON DELETE CASCADE ON UPDATE CASCADE;",
        &[Fails],
    ),
    ("-- AlterTable\nALTER TABLE \"User\" ADD COLUMN \"age\" INTEGER NOT NULL;", &[Fails]),
    ("-- AlterTable\nALTER TABLE \"User\" ALTER COLUMN \"name\" SET DATA TYPE VARCHAR(100);", &[Destroys]),
    ("-- AlterTable\nALTER TABLE \"User\" DROP COLUMN \"email\";", &[Destroys]),
    ("-- DropTable\nDROP TABLE \"Post\";", &[Destroys]),
    ("-- DropEnum\nDROP TYPE \"Role\";", &[Destroys]),
    ("-- CreateIndex\nCREATE UNIQUE INDEX \"User_email_key\" ON \"User\"(\"email\");", &[Fails]),
    // Safe forms (each also run on Postgres below).
    (
        "-- CreateTable\nCREATE TABLE \"Profile\" (\n    \"id\" SERIAL NOT NULL,\n    \"bio\" TEXT,\n    \"createdAt\" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,\n    \"tags\" TEXT[] DEFAULT '{}',\n    CONSTRAINT \"Profile_pkey\" PRIMARY KEY (\"id\")\n);",
        SAFE,
    ),
    ("-- CreateEnum\nCREATE TYPE \"Status\" AS ENUM ('ACTIVE', 'DISABLED');", SAFE),
    ("-- CreateIndex\nCREATE INDEX \"User_name_idx\" ON \"User\"(\"name\");", SAFE),
    ("-- DropIndex\nDROP INDEX \"t_a_idx\";", SAFE),
    ("-- AlterTable\nALTER TABLE \"User\" ADD COLUMN \"nickname\" TEXT;", SAFE),
    ("ALTER TABLE t ADD COLUMN seen timestamptz NOT NULL DEFAULT now()", SAFE),
    ("ALTER TABLE t ADD COLUMN flag boolean DEFAULT false", SAFE),
    ("ALTER TABLE t ADD CONSTRAINT t_b_pos CHECK (b > 0) NOT VALID", SAFE),
    ("ALTER TABLE u ADD CONSTRAINT u_t_fk2 FOREIGN KEY (t_id) REFERENCES t (id) NOT VALID", SAFE),
    ("ALTER TABLE u DROP CONSTRAINT u_t_fk", SAFE),
    ("ALTER TABLE t ALTER COLUMN b DROP NOT NULL", SAFE),
    ("ALTER TABLE t ALTER COLUMN a SET DEFAULT 'x'", SAFE),
    ("ALTER TABLE t ALTER COLUMN a DROP DEFAULT", SAFE),
    ("ALTER TABLE t RENAME TO t_renamed", SAFE),
    ("ALTER INDEX t_a_idx RENAME TO t_a_idx2", SAFE),
    ("ALTER TYPE mood ADD VALUE 'happy'", SAFE),
    ("ALTER TYPE mood RENAME VALUE 'sad' TO 'blue'", SAFE),
    ("CREATE VIEW v2 AS SELECT id, a FROM t", SAFE),
    ("CREATE MATERIALIZED VIEW mv2 AS SELECT id FROM t", SAFE),
    ("CREATE TABLE t_copy AS SELECT * FROM t", SAFE),
    ("CREATE SEQUENCE s2", SAFE),
    ("CREATE SCHEMA s2", SAFE),
    ("CREATE EXTENSION IF NOT EXISTS plpgsql", SAFE),
    ("COMMENT ON TABLE t IS 'DROP TABLE t; -- not a statement'", SAFE),
    ("COMMENT ON COLUMN t.a IS NULL", SAFE),
    ("GRANT SELECT ON t TO PUBLIC", SAFE),
    ("SET LOCAL lock_timeout = '5s'", SAFE),
    ("DROP VIEW v", SAFE),
    ("DROP TRIGGER tr ON t", SAFE),
    ("SELECT lower(a) FROM t", SAFE),
    ("EXPLAIN DELETE FROM t", SAFE),
    ("ALTER TABLE t ALTER COLUMN \"identity\" DROP NOT NULL", SAFE),
    ("ALTER TABLE t RENAME COLUMN \"expression\" TO expr", SAFE),
    ("CREATE INDEX t_b_idx ON t (b) WHERE b > 0", SAFE),
    ("SELECT 'it''s; DROP TABLE t', $q$ ; DELETE FROM t; $q$ -- ; TRUNCATE t", SAFE),
];

/// The schema every safe case runs against, with rows in every table.
const FIXTURE: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'ok');
CREATE TYPE "Role" AS ENUM ('USER', 'ADMIN');
CREATE TABLE t (id int PRIMARY KEY, a text, b int NOT NULL, "identity" int, "expression" text, m mood);
CREATE TABLE u (id int PRIMARY KEY, t_id int);
CREATE TABLE "User" (id SERIAL PRIMARY KEY, name text, email text, role "Role" NOT NULL DEFAULT 'USER');
CREATE TABLE "Post" (id SERIAL PRIMARY KEY, "authorId" int NOT NULL);
ALTER TABLE u ADD CONSTRAINT u_t_fk FOREIGN KEY (t_id) REFERENCES t (id);
ALTER TABLE "Post" ADD CONSTRAINT "Post_authorId_fkey" FOREIGN KEY ("authorId") REFERENCES "User"(id);
CREATE INDEX t_a_idx ON t (a);
CREATE VIEW v AS SELECT id FROM t;
CREATE FUNCTION trg() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER tr AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION trg();
INSERT INTO t VALUES (1, 'x', 1, 1, 'e', 'sad'), (2, 'y', 2, 2, 'f', 'ok');
INSERT INTO u VALUES (1, 1);
INSERT INTO "User" (name, email) VALUES ('Ada', 'ada@example.com'), ('Bob', 'bob@example.com');
INSERT INTO "Post" ("authorId") VALUES (1), (2);
"#;

fn sorted(k: &[HazardKind]) -> Vec<HazardKind> {
    let mut k = k.to_vec();
    k.sort();
    k
}

#[test]
fn every_case_gets_exactly_its_hazard_kinds_with_names() {
    assert!(CORPUS.len() >= 60, "the corpus has {} cases", CORPUS.len());
    let mut wrong = Vec::new();
    for (sql, want) in CORPUS {
        let got = analyze(sql);
        let kinds: Vec<HazardKind> = got.iter().map(|h| h.kind).collect();
        if sorted(&kinds) != sorted(want) {
            wrong.push(format!(
                "{sql:?}\n   want {want:?}\n   got  {:?}",
                got.iter()
                    .map(|h| format!("{:?}: {}", h.kind, h.reason))
                    .collect::<Vec<_>>()
            ));
        }
        // Reasons name what they are about, never an elided "…".
        for h in &got {
            assert!(!h.reason.contains('…'), "{sql}: {}", h.reason);
        }
    }
    assert!(
        wrong.is_empty(),
        "{} cases misclassified:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn no_adversarial_case_passes_as_safe() {
    let safe: Vec<&str> = CORPUS
        .iter()
        .filter(|(sql, want)| !want.is_empty() && analyze(sql).is_empty())
        .map(|(sql, _)| *sql)
        .collect();
    assert!(safe.is_empty(), "classified safe: {safe:#?}");
}

/// Table -> (columns, rows) for every base table in `public`.
async fn contents(tx: &tokio_postgres::Transaction<'_>) -> Vec<(String, Vec<String>, i64)> {
    let tables: Vec<String> = tx
        .query(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut out = Vec::new();
    for t in tables {
        let cols: Vec<String> = tx
            .query(
                "SELECT column_name::text FROM information_schema.columns WHERE table_schema = 'public' AND table_name = $1 ORDER BY 1",
                &[&t],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let n: i64 = tx
            .query_one(&format!("SELECT count(*) FROM \"{t}\""), &[])
            .await
            .unwrap()
            .get(0);
        out.push((t, cols, n));
    }
    out
}

#[tokio::test]
async fn every_case_marked_safe_keeps_all_rows_and_columns_on_postgres() {
    let db = ScratchDb::new().await;
    let mut client = app_database::connect(&db.url).await.unwrap();
    client.batch_execute(FIXTURE).await.unwrap();
    let mut checked = 0;
    for (sql, want) in CORPUS.iter().filter(|(_, want)| want.is_empty()) {
        let _ = want;
        let tx = client.transaction().await.unwrap();
        let before = contents(&tx).await;
        tx.batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("safe case failed on Postgres: {sql}: {e}"));
        let after = contents(&tx).await;
        for (table, cols, rows) in &before {
            // A rename keeps the data under a new name.
            let now = after.iter().find(|(t, _, _)| t == table).or_else(|| {
                after
                    .iter()
                    .find(|(t, _, n)| !before.iter().any(|(b, _, _)| b == t) && n == rows)
            });
            let (_, now_cols, now_rows) =
                now.unwrap_or_else(|| panic!("{sql}: table {table} is gone"));
            assert_eq!(now_rows, rows, "{sql}: rows of {table}");
            let renamed_cols = cols.iter().filter(|c| !now_cols.contains(c)).count();
            let new_cols = now_cols.iter().filter(|c| !cols.contains(c)).count();
            assert!(
                renamed_cols <= new_cols,
                "{sql}: {table} lost columns {cols:?} -> {now_cols:?}"
            );
        }
        tx.rollback().await.unwrap();
        checked += 1;
    }
    assert!(checked >= 30, "only {checked} safe cases ran");
}
