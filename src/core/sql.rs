//! SQL hazard analysis (pure). A script is split into statements with
//! `sqlparser`'s PostgreSQL tokenizer (so quotes, dollar quotes and comments
//! cannot hide a `;`), each statement is parsed with its PostgreSQL dialect,
//! and classified by **allowlist**: a statement is safe only if it is one of
//! a short list of forms that cannot lose or rewrite data (CREATE TABLE /
//! INDEX / TYPE / VIEW / SEQUENCE, ADD COLUMN that is nullable or has a
//! default, ADD CONSTRAINT … NOT VALID, DROP INDEX / VIEW / CONSTRAINT,
//! renames, COMMENT, …). Everything else is a hazard of a named kind, with
//! the objects it touches. A statement that does not tokenize or parse is a
//! hazard: "could not be checked".

use std::fmt;

use sqlparser::ast::{
    AlterColumnOperation, AlterTableOperation, AlterTypeOperation, ColumnOption, DropBehavior,
    Expr, ObjectName, ObjectType, OnConflictAction, OnInsert, SetExpr, Statement as Ast,
    TableConstraint, Visit, Visitor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

/// What a statement can do to the data or to the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum HazardKind {
    /// Loses data: drops a table, column or type, truncates, deletes,
    /// updates, changes a column's type, or cascades.
    DestroysData,
    /// Writes rows (INSERT): what a script writes is not undone by its inverse.
    ChangesData,
    /// Keeps data but can fail on it: NOT NULL without default, SET NOT NULL,
    /// a new unique or validated constraint.
    MayFail,
    /// Cannot run inside one transaction (CONCURRENTLY, VACUUM, transaction control).
    NotInTransaction,
    /// Not on the allowlist, or could not be parsed: not assumed safe.
    Unchecked,
}

impl HazardKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HazardKind::DestroysData => "destroys_data",
            HazardKind::ChangesData => "changes_data",
            HazardKind::MayFail => "may_fail",
            HazardKind::NotInTransaction => "not_in_transaction",
            HazardKind::Unchecked => "unchecked",
        }
    }

    /// Whether running it without a verified backup risks losing data.
    pub fn needs_backup(self) -> bool {
        matches!(
            self,
            HazardKind::DestroysData | HazardKind::ChangesData | HazardKind::Unchecked
        )
    }
}

/// One hazard: its kind, the statement (1-based) and why, naming objects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hazard {
    pub kind: HazardKind,
    pub statement: usize,
    pub reason: String,
}

impl fmt::Display for Hazard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "statement {}: {}", self.statement, self.reason)
    }
}

/// One statement of a script: its keywords (unquoted words, upper case;
/// literals and quoted names as `…`) for quick checks, and its original
/// text for running.
#[derive(Clone, Debug, PartialEq)]
pub struct Statement {
    pub words: String,
    pub text: String,
}

/// Splits a script at top-level semicolons using Postgres' token rules.
fn split(sql: &str) -> Result<Vec<Statement>, String> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize_with_location()
        .map_err(|e| e.to_string())?;
    let offsets = Offsets::new(sql);
    let mut out = Vec::new();
    let mut current: Vec<&TokenWithSpan> = Vec::new();
    let mut flush = |current: &mut Vec<&TokenWithSpan>, end: usize| {
        let meaningful: Vec<&&TokenWithSpan> = current
            .iter()
            .filter(|t| !matches!(t.token, Token::Whitespace(_)))
            .collect();
        if let Some(first) = meaningful.first() {
            let start = offsets.at(first.span.start.line, first.span.start.column);
            let words = meaningful
                .iter()
                .map(|t| match &t.token {
                    Token::Word(w) if w.quote_style.is_none() => w.value.to_uppercase(),
                    Token::Word(_)
                    | Token::SingleQuotedString(_)
                    | Token::DollarQuotedString(_)
                    | Token::EscapedStringLiteral(_)
                    | Token::NationalStringLiteral(_) => "…".to_string(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(" ");
            out.push(Statement {
                words,
                text: sql[start..end].trim().to_string(),
            });
        }
        current.clear();
    };
    for t in &tokens {
        if t.token == Token::SemiColon {
            let end = offsets.at(t.span.start.line, t.span.start.column);
            flush(&mut current, end);
        } else {
            current.push(t);
        }
    }
    flush(&mut current, sql.len());
    Ok(out)
}

/// Byte offsets of the tokenizer's (line, column) locations; columns count characters.
struct Offsets<'a> {
    sql: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> Offsets<'a> {
    fn new(sql: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(sql.match_indices('\n').map(|(i, _)| i + 1));
        Self { sql, line_starts }
    }

    fn at(&self, line: u64, column: u64) -> usize {
        let Some(&start) = self.line_starts.get((line.max(1) - 1) as usize) else {
            return self.sql.len();
        };
        self.sql[start..]
            .char_indices()
            .nth((column.max(1) - 1) as usize)
            .map_or(self.sql.len(), |(i, _)| start + i)
    }
}

/// sqlparser stops nesting deeper than this (its own default, made explicit).
const RECURSION_LIMIT: usize = 50;

/// The stack [`analyze`] runs on. sqlparser recurses once per nesting level,
/// and at opt-level 0 (release builds too, see Cargo.toml) a level can take
/// ~50 KiB: a Tokio worker's 2 MiB ran out near 20 nested subqueries, before
/// [`RECURSION_LIMIT`] stopped them, and a stack overflow aborts the process.
/// 16 MiB held every nesting shape at the limit when measured; this is four
/// times that. It is address space reserved, not memory used.
const ANALYSIS_STACK: usize = 64 << 20;

/// Every hazard of a script, in statement order. Empty means every statement
/// is on the allowlist. Runs on a thread of its own with a stack deep enough
/// for the parser's recursion limit ([`ANALYSIS_STACK`]).
pub fn analyze(sql: &str) -> Vec<Hazard> {
    std::thread::scope(|scope| {
        match std::thread::Builder::new()
            .name("sql-analysis".into())
            .stack_size(ANALYSIS_STACK)
            .spawn_scoped(scope, || analyze_here(sql))
        {
            Ok(handle) => handle
                .join()
                .unwrap_or_else(|_| unchecked("the analysis failed")),
            Err(e) => unchecked(&format!("no thread for the analysis: {e}")),
        }
    })
}

/// The script as one hazard: it could not be checked, for `why`.
fn unchecked(why: &str) -> Vec<Hazard> {
    vec![Hazard {
        kind: HazardKind::Unchecked,
        statement: 1,
        reason: format!("could not be checked ({why}), so it is not assumed safe"),
    }]
}

fn analyze_here(sql: &str) -> Vec<Hazard> {
    let stmts = match split(sql) {
        Ok(s) => s,
        Err(e) => return unchecked(&e.to_string()),
    };
    let mut out = Vec::new();
    for (i, s) in stmts.iter().enumerate() {
        for (kind, reason) in classify_text(s) {
            out.push(Hazard {
                kind,
                statement: i + 1,
                reason,
            });
        }
    }
    out
}

/// Hazards that risk losing data without a verified backup, as text.
pub fn destructive(sql: &str) -> Vec<String> {
    analyze(sql)
        .into_iter()
        .filter(|h| h.kind.needs_backup())
        .map(|h| h.to_string())
        .collect()
}

type Found = Vec<(HazardKind, String)>;

fn classify_text(s: &Statement) -> Found {
    let words: Vec<&str> = s.words.split(' ').collect();
    let first = words.first().copied().unwrap_or("");
    // Forms the parser rejects or misreads, recognised from their keywords.
    if first == "DO" {
        return vec![(
            HazardKind::Unchecked,
            "a DO block runs code that cannot be checked".into(),
        )];
    }
    if words.contains(&"CONCURRENTLY") && matches!(first, "DROP" | "REINDEX") {
        return vec![(
            HazardKind::NotInTransaction,
            format!(
                "{} cannot run inside a transaction",
                words.iter().take(3).copied().collect::<Vec<_>>().join(" ")
            ),
        )];
    }
    let parsed = match Parser::new(&PostgreSqlDialect {})
        .with_recursion_limit(RECURSION_LIMIT)
        .try_with_sql(&s.text)
        .and_then(|mut p| p.parse_statements())
    {
        Ok(p) if p.len() == 1 => p,
        Ok(_) => {
            return vec![(
                HazardKind::Unchecked,
                "could not be checked (not one statement), so it is not assumed safe".into(),
            )]
        }
        Err(e) => {
            return vec![(
                HazardKind::Unchecked,
                format!("could not be checked ({e}), so it is not assumed safe"),
            )]
        }
    };
    classify(&parsed[0])
}

fn names(list: &[ObjectName]) -> String {
    list.iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn one(kind: HazardKind, reason: impl Into<String>) -> Found {
    vec![(kind, reason.into())]
}

fn not_listed(stmt: &Ast) -> Found {
    let head: String = stmt.to_string().chars().take(60).collect();
    one(
        HazardKind::Unchecked,
        format!("`{head}` is not on the list of forms known not to lose data"),
    )
}

fn classify(stmt: &Ast) -> Found {
    use HazardKind::*;
    match stmt {
        Ast::CreateTable(t) => match &t.query {
            Some(q) => query_hazards(q, &format!("CREATE TABLE {} AS", t.name)),
            None => Vec::new(),
        },
        Ast::CreateIndex(i) => {
            let name = i.name.as_ref().map(|n| n.to_string()).unwrap_or_default();
            let mut found = Vec::new();
            if i.concurrently {
                found.push((
                    NotInTransaction,
                    format!("CREATE INDEX CONCURRENTLY {name} cannot run inside a transaction"),
                ));
            }
            if i.unique {
                found.push((
                    MayFail,
                    format!(
                        "unique index {name} on {} fails if existing rows have duplicates",
                        i.table_name
                    ),
                ));
            }
            found
        }
        Ast::CreateView(v) if !v.materialized => Vec::new(),
        Ast::CreateView(v) => query_hazards(&v.query, &format!("materialized view {}", v.name)),
        Ast::CreateType { .. }
        | Ast::CreateSequence { .. }
        | Ast::CreateSchema { .. }
        | Ast::CreateExtension(_)
        | Ast::CreateDomain(_)
        | Ast::Comment { .. }
        | Ast::Grant(_)
        | Ast::Revoke(_)
        | Ast::Set(_) => Vec::new(),
        Ast::AlterIndex { .. } => Vec::new(),
        Ast::AlterType(a) => match &a.operation {
            AlterTypeOperation::AddValue(_)
            | AlterTypeOperation::RenameValue(_)
            | AlterTypeOperation::Rename(_) => Vec::new(),
        },
        Ast::AlterTable(a) => {
            let table = a.name.to_string();
            a.operations
                .iter()
                .flat_map(|op| alter_table(&table, op))
                .collect()
        }
        Ast::Drop {
            object_type,
            names: list,
            cascade,
            ..
        } => {
            let what = format!("{object_type} {}", names(list));
            if *cascade {
                return one(
                    DestroysData,
                    format!("DROP {what} CASCADE also drops everything that depends on it"),
                );
            }
            match object_type {
                ObjectType::Index | ObjectType::View => Vec::new(),
                ObjectType::Table => one(DestroysData, format!("drops a table ({})", names(list))),
                ObjectType::Schema => {
                    one(DestroysData, format!("drops a schema ({})", names(list)))
                }
                ObjectType::Type => one(
                    DestroysData,
                    format!("drops a type ({}) and every value of it", names(list)),
                ),
                ObjectType::Sequence => one(
                    DestroysData,
                    format!("drops a sequence ({}) and its position", names(list)),
                ),
                ObjectType::MaterializedView => one(
                    DestroysData,
                    format!("drops a materialized view ({})", names(list)),
                ),
                _ => one(
                    Unchecked,
                    format!("DROP {what} is not on the list of forms known not to lose data"),
                ),
            }
        }
        Ast::DropTrigger(t) => {
            if t.option == Some(sqlparser::ast::ReferentialAction::Cascade) {
                one(
                    DestroysData,
                    format!("DROP TRIGGER {} CASCADE also drops everything that depends on it", t.trigger_name),
                )
            } else {
                Vec::new()
            }
        }
        Ast::DropFunction(f) => {
            if f.drop_behavior == Some(DropBehavior::Cascade) {
                let names: Vec<String> = f.func_desc.iter().map(|d| d.name.to_string()).collect();
                one(
                    DestroysData,
                    format!(
                        "DROP FUNCTION {} CASCADE also drops every column default, index and trigger using it",
                        names.join(", ")
                    ),
                )
            } else {
                Vec::new()
            }
        }
        Ast::DropExtension(e) => one(
            if e.cascade_or_restrict == Some(sqlparser::ast::ReferentialAction::Cascade) {
                DestroysData
            } else {
                Unchecked
            },
            format!(
                "DROP EXTENSION {} removes its types and functions (and, with CASCADE, every column using them)",
                e.names.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ")
            ),
        ),
        Ast::Truncate(t) => one(
            DestroysData,
            format!(
                "truncates {}",
                t.table_names
                    .iter()
                    .map(|n| n.name.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        Ast::Delete(d) => one(DestroysData, format!("deletes rows ({})", d.from)),
        Ast::Update(u) => one(DestroysData, format!("updates rows of {}", u.table)),
        Ast::Merge(m) => one(
            DestroysData,
            format!("MERGE INTO {} updates or deletes rows", m.table),
        ),
        Ast::Insert(i) => {
            let table = i.table.to_string();
            let mut found = match &i.on {
                Some(OnInsert::OnConflict(c)) if matches!(c.action, OnConflictAction::DoUpdate(_)) => {
                    one(DestroysData, format!("upsert into {table} updates existing rows"))
                }
                Some(OnInsert::DuplicateKeyUpdate(_)) => {
                    one(DestroysData, format!("upsert into {table} updates existing rows"))
                }
                _ => one(ChangesData, format!("inserts rows into {table}")),
            };
            if let Some(q) = &i.source {
                found.extend(query_hazards(q, &format!("INSERT INTO {table}")));
            }
            found
        }
        Ast::Query(q) => query_hazards(q, "the query"),
        Ast::Explain {
            analyze: true,
            statement,
            ..
        } => classify(statement)
            .into_iter()
            .map(|(k, r)| (k, format!("EXPLAIN ANALYZE runs it: {r}")))
            .collect(),
        Ast::Explain { .. } => Vec::new(),
        Ast::Prepare { statement, .. } => {
            let inner = classify(statement);
            if inner.is_empty() {
                Vec::new()
            } else {
                inner
                    .into_iter()
                    .map(|(k, r)| (k, format!("PREPARE makes it runnable by EXECUTE: {r}")))
                    .collect()
            }
        }
        Ast::Execute { .. } => one(
            Unchecked,
            "EXECUTE runs a prepared statement that is not checked here",
        ),
        Ast::Call(f) => one(Unchecked, format!("CALL {} runs code that is not checked", f.name)),
        Ast::CreateFunction(f) => one(
            Unchecked,
            format!("function {} has a body that is not checked", f.name),
        ),
        Ast::CreateProcedure { name, .. } => one(
            Unchecked,
            format!("procedure {name} has a body that is not checked"),
        ),
        Ast::CreateTrigger(t) => one(
            Unchecked,
            format!("trigger {} runs code on later writes", t.name),
        ),
        Ast::CreateRule(r) => one(
            Unchecked,
            format!("rule {} rewrites later statements on {}", r.name, r.table_name),
        ),
        Ast::StartTransaction { .. }
        | Ast::Commit { .. }
        | Ast::Rollback { .. }
        | Ast::Savepoint { .. }
        | Ast::ReleaseSavepoint { .. } => one(
            NotInTransaction,
            format!("`{stmt}` controls transactions itself"),
        ),
        Ast::Vacuum(_) => one(NotInTransaction, "VACUUM cannot run inside a transaction"),
        other => not_listed(other),
    }
}

fn alter_table(table: &str, op: &AlterTableOperation) -> Found {
    use HazardKind::*;
    match op {
        AlterTableOperation::AddColumn { column_def, .. } => {
            let col = &column_def.name;
            let opts: Vec<&ColumnOption> = column_def.options.iter().map(|o| &o.option).collect();
            let default = opts.iter().find_map(|o| match o {
                ColumnOption::Default(e) => Some(e),
                _ => None,
            });
            let mut found = Vec::new();
            if opts.iter().any(|o| matches!(o, ColumnOption::NotNull)) && default.is_none() {
                found.push((
                    MayFail,
                    format!("adds NOT NULL column {col} to {table} without a default: fails if {table} has rows"),
                ));
            }
            if opts
                .iter()
                .any(|o| matches!(o, ColumnOption::Unique(_) | ColumnOption::PrimaryKey(_)))
            {
                found.push((
                    MayFail,
                    format!("adds a unique column {col} to {table}: fails on duplicates"),
                ));
            }
            if let Some(e) = default {
                found.extend(
                    unknown_functions(e)
                        .into_iter()
                        .map(|f| (Unchecked, format!("default of {table}.{col} calls {f}(), run for every existing row"))),
                );
            }
            found
        }
        AlterTableOperation::AddConstraint {
            not_valid: true, ..
        } => Vec::new(),
        AlterTableOperation::AddConstraint { constraint, .. } => {
            let what = match constraint {
                TableConstraint::Unique(_) | TableConstraint::PrimaryKey(_) => {
                    "a unique constraint fails on existing duplicates"
                }
                _ => "existing rows may violate it (add it NOT VALID, then VALIDATE)",
            };
            one(MayFail, format!("adds constraint on {table}: {what}"))
        }
        AlterTableOperation::DropConstraint {
            name,
            drop_behavior,
            ..
        } => {
            if *drop_behavior == Some(DropBehavior::Cascade) {
                one(
                    DestroysData,
                    format!("drops constraint {name} of {table} with CASCADE"),
                )
            } else {
                Vec::new()
            }
        }
        AlterTableOperation::DropColumn {
            column_names,
            drop_behavior,
            ..
        } => {
            let cols = column_names
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            let cascade = if *drop_behavior == Some(DropBehavior::Cascade) {
                " with CASCADE"
            } else {
                ""
            };
            one(
                DestroysData,
                format!("drops a column ({cols} of {table}){cascade}"),
            )
        }
        AlterTableOperation::RenameColumn { .. }
        | AlterTableOperation::RenameTable { .. }
        | AlterTableOperation::RenameConstraint { .. } => Vec::new(),
        AlterTableOperation::AlterColumn { column_name, op } => match op {
            AlterColumnOperation::DropNotNull
            | AlterColumnOperation::SetDefault { .. }
            | AlterColumnOperation::DropDefault => Vec::new(),
            AlterColumnOperation::SetNotNull => one(
                MayFail,
                format!("SET NOT NULL on {table}.{column_name} fails if any row is NULL"),
            ),
            AlterColumnOperation::SetDataType { data_type, .. } => one(
                DestroysData,
                format!("changes the type of {table}.{column_name} to {data_type}: rewrites every row, values may be lost or rejected"),
            ),
            _ => one(
                Unchecked,
                format!("ALTER COLUMN {column_name} of {table} is not on the list of forms known not to lose data"),
            ),
        },
        AlterTableOperation::ValidateConstraint { name } => one(
            MayFail,
            format!("VALIDATE CONSTRAINT {name} fails if existing rows of {table} violate it"),
        ),
        other => one(
            Unchecked,
            format!("ALTER TABLE {table} {other} is not on the list of forms known not to lose data"),
        ),
    }
}

/// Data-modifying CTEs and calls of functions that are not known to be pure.
fn query_hazards(q: &sqlparser::ast::Query, what: &str) -> Found {
    struct Dml(Vec<String>);
    impl Visitor for Dml {
        type Break = ();
        fn pre_visit_query(
            &mut self,
            q: &sqlparser::ast::Query,
        ) -> std::ops::ControlFlow<Self::Break> {
            match q.body.as_ref() {
                SetExpr::Insert(s)
                | SetExpr::Update(s)
                | SetExpr::Delete(s)
                | SetExpr::Merge(s) => self.0.push(s.to_string().chars().take(60).collect()),
                _ => {}
            }
            std::ops::ControlFlow::Continue(())
        }
    }
    let mut dml = Dml(Vec::new());
    let _ = q.visit(&mut dml);
    let mut found: Found = dml
        .0
        .into_iter()
        .map(|s| {
            (
                HazardKind::DestroysData,
                format!("{what} contains a data-modifying statement: `{s}`"),
            )
        })
        .collect();
    found.extend(unknown_functions(q).into_iter().map(|f| {
        (
            HazardKind::Unchecked,
            format!("{what} calls {f}(), which may change data"),
        )
    }));
    found
}

/// Functions that neither write nor depend on hidden state beyond the clock
/// and randomness; calls of anything else are not assumed safe.
const PURE_FUNCTIONS: &[&str] = &[
    "now",
    "current_timestamp",
    "current_date",
    "current_time",
    "localtimestamp",
    "gen_random_uuid",
    "uuid_generate_v4",
    "lower",
    "upper",
    "coalesce",
    "nullif",
    "length",
    "trim",
    "concat",
    "count",
    "sum",
    "min",
    "max",
    "avg",
];

fn unknown_functions<V: Visit>(node: &V) -> Vec<String> {
    struct Calls(Vec<String>);
    impl Visitor for Calls {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &Expr) -> std::ops::ControlFlow<Self::Break> {
            if let Expr::Function(f) = e {
                let name = f.name.to_string();
                if !PURE_FUNCTIONS.contains(&name.to_lowercase().as_str()) {
                    self.0.push(name);
                }
            }
            std::ops::ControlFlow::Continue(())
        }
    }
    let mut calls = Calls(Vec::new());
    let _ = node.visit(&mut calls);
    calls.0
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
    body.into_iter()
        .map(|(index, what, s)| check_in_transaction(index, &what, &s).map(|()| s))
        .collect()
}

fn check_in_transaction(index: usize, what: &str, s: &Statement) -> Result<(), NotAtomic> {
    let words: Vec<&str> = s.words.split(' ').collect();
    let outside = words.contains(&"CONCURRENTLY")
        || words[0] == "VACUUM"
        || (matches!(words[0], "CREATE" | "DROP" | "ALTER")
            && matches!(
                words.get(1),
                Some(&"DATABASE") | Some(&"TABLESPACE") | Some(&"SYSTEM")
            ))
        || (words[0] == "REINDEX" && matches!(words.get(1), Some(&"DATABASE") | Some(&"SYSTEM")));
    if outside {
        return Err(NotAtomic::OutsideTransactionOnly {
            index,
            what: what.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(sql: &str) -> Vec<HazardKind> {
        analyze(sql).into_iter().map(|h| h.kind).collect()
    }

    #[test]
    fn the_splitter_keeps_original_text_and_ignores_semicolons_in_quotes_and_comments() {
        let sql =
            "INSERT INTO t VALUES ('it''s; ok', $x$ ; $x$); -- a; comment\nSELECT 1 /* c; */;";
        let s = split(sql).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].text, "INSERT INTO t VALUES ('it''s; ok', $x$ ; $x$)");
        assert_eq!(s[1].text, "SELECT 1 /* c; */");
        assert_eq!(s[0].words, "INSERT INTO T VALUES ( … , … )");
    }

    #[test]
    fn deep_nesting_is_refused_as_unchecked_within_a_worker_threads_stack() {
        // Release builds run sqlparser at opt-level 0 (Cargo.toml), as tests
        // do: its recursion limit must stop deep input before the 2 MiB
        // stack of a Tokio worker thread runs out.
        let nested = |open: &str, close: &str| {
            format!("SELECT {}1{};", open.repeat(5_000), close.repeat(5_000))
        };
        let inputs = [
            nested("(", ")"),
            nested("(SELECT ", ")"),
            // Unary minus, spaced: "--" would start a comment.
            nested("- ", ""),
            format!("DELETE FROM t WHERE a IN {};", nested("(SELECT ", ")")),
        ];
        let results = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || inputs.iter().map(|sql| kinds(sql)).collect::<Vec<_>>())
            .unwrap()
            .join()
            .expect("no stack overflow");
        for (i, k) in results.into_iter().enumerate() {
            assert!(!k.is_empty(), "deep nesting passed as safe (input {i})");
        }
    }

    #[test]
    fn names_are_shown_not_elided() {
        let h = analyze(r#"DROP TABLE "Profile"; ALTER TABLE "User" DROP COLUMN "bio";"#);
        assert_eq!(h[0].reason, r#"drops a table ("Profile")"#);
        assert_eq!(h[1].reason, r#"drops a column ("bio" of "User")"#);
        assert_eq!(h[1].statement, 2);
    }

    #[test]
    fn safe_forms_are_safe_and_everything_else_is_not() {
        assert!(kinds(
            r#"CREATE INDEX "i" ON "t"("a"); DROP INDEX "i"; COMMENT ON TABLE t IS 'x';"#
        )
        .is_empty());
        assert_eq!(kinds("DELETE FROM t"), [HazardKind::DestroysData]);
        assert_eq!(kinds("LISTEN foo"), [HazardKind::Unchecked]);
        assert_eq!(kinds("DO $$ BEGIN END $$"), [HazardKind::Unchecked]);
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
