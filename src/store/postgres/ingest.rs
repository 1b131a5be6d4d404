//! Intake batches on Postgres ([`Store::ingest`](super::Store::ingest)):
//! many deliveries, their dedupe claims, counters and alert writes, in one
//! transaction. Alert writes are appended to the alert log, folded into
//! alert states when those are read (see [`super::alert_log`]).
//!
//! Usually that transaction is **one statement** (one round trip and one
//! commit): the claims, the counters and the alert writes are
//! data-modifying CTEs of one `INSERT`, written on the assumption that every
//! delivery of the batch is new. If a claim was taken already (a sender's
//! retry of a recorded delivery, or a claim of a batch still in flight), the
//! statement fails on the claims' unique key (see [`all_new_sql`]) and so
//! writes nothing, and the batch goes again the careful way: claims first,
//! then only the taken deliveries' writes, in an explicit transaction. A
//! batch without counters (alert intake's usual batch) has a shorter
//! statement of its own ([`all_new_no_counters_sql`]).
//! Measured side by side at 16 deliveries per batch, the one statement took
//! about a quarter less database CPU per batch than the careful way's two
//! round trips and five statements (640 against 830-930 µs), and less than
//! half the guard's CPU (160 against 370-400 µs).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use super::alert_log::{compose, FirstSeen};
use super::{in_schema, pg_err, ts, PostgresStore, ADD_TO_ROLLUP};
use crate::core::clock::Timestamp;
use crate::store::{combine, ttl_millis, Ingest, RollupAdd, StoreResult};

/// Intake's statements for one schema, written once: intake runs them
/// for every batch, and the text is the statement cache's key.
pub(super) struct Statements {
    all_new: String,
    all_new_no_counters: String,
    claim: String,
    add_rollups: String,
    append_alerts: String,
}

impl Statements {
    pub(super) fn for_schema(schema: &str) -> Self {
        let s = |text: String| in_schema(&text, schema);
        Self {
            all_new: s(all_new_sql()),
            all_new_no_counters: s(all_new_no_counters_sql()),
            claim: s(claim_sql()),
            add_rollups: s(add_rollups_sql(1)),
            append_alerts: s(append_alerts_sql(1, 8)),
        }
    }
}

impl PostgresStore {
    /// [`Store::ingest`](super::Store::ingest) on Postgres (see the module docs).
    pub(super) async fn ingest_batch(
        &self,
        batch: &[Ingest],
        now: Timestamp,
        ttl: Duration,
    ) -> StoreResult<Vec<bool>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        // Equal keys in one batch: the first is the delivery, the rest are
        // its duplicates (one row cannot be claimed twice in a statement).
        let mut first = HashSet::new();
        let fresh: Vec<bool> = batch
            .iter()
            .map(|i| first.insert((i.scope.as_str(), i.key.as_str())))
            .collect();
        let claims = Claims::of(batch, &fresh, now, ttl);
        let client = self.client().await?;
        let c: &deadpool_postgres::ClientWrapper = &client.0;
        let result = match self.record_if_all_new(c, &claims, batch, &fresh).await {
            Ok(true) => Ok(fresh),
            Ok(false) => self.record_claimed_first(c, &claims, batch, &fresh).await,
            Err(e) => Err(e),
        };
        if result.is_err() {
            // The connection may be the reason (terminated, suspended):
            // it leaves the pool rather than fail the sender's retry too.
            let _ = deadpool_postgres::Object::take(client.0);
        }
        result
    }

    /// The one-statement path: records every fresh delivery and returns
    /// `true`, or, if any of their claims is taken already, records nothing
    /// and returns `false`.
    async fn record_if_all_new(
        &self,
        c: &deadpool_postgres::ClientWrapper,
        claims: &Claims<'_>,
        batch: &[Ingest],
        fresh: &[bool],
    ) -> StoreResult<bool> {
        let writes = Writes::of(batch, fresh);
        let mut params: Vec<&(dyn ToSql + Sync)> = claims.params();
        let text = if writes.counters.0.is_empty() {
            &self.ingest_sql.all_new_no_counters
        } else {
            params.extend(writes.counter_params());
            &self.ingest_sql.all_new
        };
        params.extend(writes.alert_params());
        let statement = c.prepare_cached(text).await.map_err(pg_err)?;
        match c.execute(&statement, &params).await {
            Ok(_) => Ok(true),
            Err(e) if recorded_already(&e) => Ok(false),
            Err(e) => Err(pg_err(e)),
        }
    }

    /// The careful path: claims first, then the writes of the deliveries
    /// whose claim was taken, in one explicit transaction (two round trips:
    /// BEGIN and the claims pipelined, then the writes and COMMIT).
    async fn record_claimed_first(
        &self,
        c: &deadpool_postgres::ClientWrapper,
        claims: &Claims<'_>,
        batch: &[Ingest],
        fresh: &[bool],
    ) -> StoreResult<Vec<bool>> {
        let claim = c
            .prepare_cached(&self.ingest_sql.claim)
            .await
            .map_err(pg_err)?;
        let add = c
            .prepare_cached(&self.ingest_sql.add_rollups)
            .await
            .map_err(pg_err)?;
        let append = c
            .prepare_cached(&self.ingest_sql.append_alerts)
            .await
            .map_err(pg_err)?;
        let claim_params = claims.params();
        let (begin, claimed) =
            tokio::join!(c.batch_execute("BEGIN"), c.query(&claim, &claim_params));
        begin.map_err(pg_err)?;
        let claimed: HashSet<(String, String)> = claimed
            .map_err(pg_err)?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let taken: Vec<bool> = batch
            .iter()
            .zip(fresh)
            .map(|(i, f)| *f && claimed.contains(&(i.scope.clone(), i.key.clone())))
            .collect();
        let writes = Writes::of(batch, &taken);
        let counters = async {
            if writes.counters.0.is_empty() {
                return Ok(0);
            }
            c.execute(&add, &writes.counter_params()).await
        };
        let states = async {
            if writes.alerts.0.is_empty() {
                return Ok(0);
            }
            let mut params = writes.alert_params();
            params.push(&claims.now);
            c.execute(&append, &params).await
        };
        // A failed statement aborts the transaction: the COMMIT after it
        // then rolls back, and the failure is what is reported.
        let (counters, states, commit) = tokio::join!(counters, states, c.batch_execute("COMMIT"));
        counters.map_err(pg_err)?;
        states.map_err(pg_err)?;
        commit.map_err(pg_err)?;
        Ok(taken)
    }
}

/// The fresh deliveries' claims, sorted (rows are locked in one order in
/// every batch: claims sorted, counters folded in key order, so concurrent
/// batches cannot deadlock; alert writes are appended and lock nothing),
/// with their expiry and the time.
struct Claims<'a> {
    scopes: Vec<&'a str>,
    keys: Vec<&'a str>,
    expires: f64,
    now: f64,
}

impl<'a> Claims<'a> {
    fn of(batch: &'a [Ingest], fresh: &[bool], now: Timestamp, ttl: Duration) -> Self {
        let mut claims: Vec<(&str, &str)> = batch
            .iter()
            .zip(fresh)
            .filter(|(_, f)| **f)
            .map(|(i, _)| (i.scope.as_str(), i.key.as_str()))
            .collect();
        claims.sort_unstable();
        let (scopes, keys) = claims.into_iter().unzip();
        Self {
            scopes,
            keys,
            expires: now.as_millis().saturating_add(ttl_millis(ttl)) as f64,
            now: now.as_millis() as f64,
        }
    }

    /// `$1` scopes, `$2` keys, `$3` expiry, `$4` now (ms).
    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![&self.scopes, &self.keys, &self.expires, &self.now]
    }
}

/// Takes the claims of [`Claims::params`]; returns a row for each one that
/// was free or expired.
fn claim_sql() -> String {
    format!(
        "INSERT INTO {{s}}.once_claims AS c (scope, key, expires_at)
         SELECT s, k, {} FROM unnest($1::text[], $2::text[]) AS t(s, k)
         ON CONFLICT (scope, key) DO UPDATE SET expires_at = EXCLUDED.expires_at
         WHERE c.expires_at <= {}
         RETURNING scope, key",
        ts(3),
        ts(4)
    )
}

/// The batch in one statement (parameters: [`Claims::params`], then
/// [`Writes::counter_params`] from `$5`, then [`Writes::alert_params`] from
/// `$10`). Its claims are a plain `INSERT`: a claim that is held (or
/// expired but not yet pruned) is a unique violation on `once_claims_pkey`
/// ([`recorded_already`]), which fails the statement and so undoes all of
/// it. A batch holding an already recorded delivery thus writes nothing
/// and goes the careful way, which also takes expired claims over. Without
/// `ON CONFLICT` Postgres checks uniqueness once, as it inserts, instead of
/// probing the index first: about 3 µs less database CPU per delivery
/// (30 against 33, alternated in one run). (A version that took claims with
/// `ON CONFLICT` and failed itself on a count, and one that looked the
/// claims up first to refuse without an error, cost more.)
///
/// The final SELECT reads `claimed`, then `counters`, then `logged`
/// (operands are evaluated left to right), so rows are locked in the
/// careful way's order: claims, then counters (each sorted); the alert
/// writes are appended and lock no row. Without the reads, Postgres would
/// run the unread CTEs after the main query in an order of its own, and a
/// batch of each way could deadlock on a shared claim and counter.
fn all_new_sql() -> String {
    format!(
        "WITH claimed AS ({} RETURNING 1),
         counters AS ({} RETURNING 1),
         logged AS ({} RETURNING 1)
         SELECT (SELECT count(*) FROM claimed) + (SELECT count(*) FROM counters)
                + (SELECT count(*) FROM logged)",
        insert_claims_sql(),
        add_rollups_sql(5),
        append_alerts_sql(10, 4)
    )
}

/// The one-statement ways' claims: a plain `INSERT` of [`Claims::params`]
/// (see [`all_new_sql`]).
fn insert_claims_sql() -> String {
    format!(
        "INSERT INTO {{s}}.once_claims (scope, key, expires_at)
         SELECT s, k, {} FROM unnest($1::text[], $2::text[]) AS t(s, k)",
        ts(3)
    )
}

/// [`all_new_sql`] for a batch without counters (alerts only, the usual
/// batch of alert intake): the claims and the alert log, with no counters
/// and no final reads (parameters: [`Claims::params`], then
/// [`Writes::alert_params`] from `$5`). With no counter to lock, the order
/// in which Postgres runs the two does not matter: the claims are the only
/// rows locked, and the alert writes are appended. A held claim fails the
/// statement as it fails [`all_new_sql`]. Alternated with [`all_new_sql`]
/// on batches of 12 alerts (the backend's CPU, interleaved in one run):
/// 21.0 against 23.0 µs per delivery; in the benchmark's Postgres runs,
/// alternated four times, the database's CPU per alert went from 16-19 to
/// 13-17 µs and the rate up by about a tenth.
fn all_new_no_counters_sql() -> String {
    format!(
        "WITH claimed AS ({} RETURNING 1) {}",
        insert_claims_sql(),
        append_alerts_sql(5, 4)
    )
}

/// The claims' key, whose violation is a one-statement batch holding a
/// recorded delivery (see [`all_new_sql`]).
const CLAIMS_KEY: &str = "once_claims_pkey";

/// Whether `e` is the one-statement batch meeting a held claim.
fn recorded_already(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| {
        *db.code() == SqlState::UNIQUE_VIOLATION && db.constraint() == Some(CLAIMS_KEY)
    })
}

/// Adds many counters, one row each (from `$p`: environments, deployments,
/// minutes, names, values; see [`ADD_TO_ROLLUP`]).
fn add_rollups_sql(p: usize) -> String {
    format!(
        "INSERT INTO {{s}}.rollups AS r (environment, deployment, minute, name, value)
         SELECT * FROM unnest(${}::text[], ${}::text[], ${}::int8[], ${}::text[], ${}::float8[])
         {ADD_TO_ROLLUP}",
        p,
        p + 1,
        p + 2,
        p + 3,
        p + 4
    )
}

/// Appends folded alert writes to the alert log (from `$p`: ids, scopes,
/// statuses, whether `first_seen` is inherited from the state before,
/// first_seen, last_seen, bodies as JSON text; `$now`: the time in ms, the states'
/// `updated_at`). See [`super::alert_log`].
fn append_alerts_sql(p: usize, now: usize) -> String {
    format!(
        "INSERT INTO {{s}}.alert_log
           (id, scope, status, inherit, first_seen, last_seen, updated_at, body)
         SELECT t.id, t.scope, t.status, t.inherit, t.first_seen, t.last_seen, {}, t.body
         FROM unnest(${}::text[], ${}::text[], ${}::text[], ${}::bool[], ${}::int8[], ${}::int8[],
                     ${}::text[])
              AS t(id, scope, status, inherit, first_seen, last_seen, body)",
        ts(now),
        p,
        p + 1,
        p + 2,
        p + 3,
        p + 4,
        p + 5,
        p + 6
    )
}

type CounterColumns<'a> = (Vec<&'a str>, Vec<&'a str>, Vec<i64>, Vec<&'a str>, Vec<f64>);
type AlertColumns<'a> = (
    Vec<&'a str>,
    Vec<&'a str>,
    Vec<&'static str>,
    Vec<bool>,
    Vec<i64>,
    Vec<i64>,
    Vec<&'a str>,
);

/// What the recorded deliveries write, as parameter columns: every counter
/// folded to one row, every alert to its last state.
struct Writes<'a> {
    counters: CounterColumns<'a>,
    alerts: AlertColumns<'a>,
}

impl<'a> Writes<'a> {
    /// The writes of the deliveries flagged in `recorded`.
    fn of(batch: &'a [Ingest], recorded: &[bool]) -> Self {
        let mine = || {
            batch
                .iter()
                .zip(recorded)
                .filter(|(_, r)| **r)
                .map(|(i, _)| i)
        };
        let mut counters = CounterColumns::default();
        for ((env, dep, minute, name), v) in fold_rollups(mine().flat_map(|i| i.rollups.iter())) {
            counters.0.push(env);
            counters.1.push(dep);
            counters.2.push(minute);
            counters.3.push(name);
            counters.4.push(v);
        }
        // Appended, not upserted: the order of different alerts' writes in
        // a batch locks nothing and changes nothing.
        let writes = mine()
            .flat_map(|i| i.alerts.iter())
            .map(|w| (w.id.as_str(), FirstSeen::of_write(w.at), w));
        let mut alerts = AlertColumns::default();
        for f in compose(writes, |w| w.firing) {
            alerts.0.push(&f.last.id);
            alerts.1.push(&f.last.environment);
            alerts
                .2
                .push(if f.last.firing { "firing" } else { "resolved" });
            alerts.3.push(f.first.inherit);
            alerts.4.push(f.first.at);
            alerts.5.push(f.last.at);
            alerts.6.push(f.last.body.as_str());
        }
        Self { counters, alerts }
    }

    fn counter_params(&self) -> Vec<&(dyn ToSql + Sync)> {
        let c = &self.counters;
        vec![&c.0, &c.1, &c.2, &c.3, &c.4]
    }

    fn alert_params(&self) -> Vec<&(dyn ToSql + Sync)> {
        let a = &self.alerts;
        vec![&a.0, &a.1, &a.2, &a.3, &a.4, &a.5, &a.6]
    }
}

type RollupKey<'a> = (&'a str, &'a str, i64, &'a str);

/// Counters folded to one value per row (see [`combine`]), so a multi-row
/// upsert never touches a row twice.
fn fold_rollups<'a>(adds: impl Iterator<Item = &'a RollupAdd>) -> BTreeMap<RollupKey<'a>, f64> {
    let mut rows: BTreeMap<RollupKey<'a>, f64> = BTreeMap::new();
    for a in adds {
        for (name, v) in &a.values {
            let key = (
                a.environment.as_str(),
                a.deployment.as_str(),
                a.minute,
                name.as_str(),
            );
            rows.entry(key)
                .and_modify(|cur| *cur = combine(name, *cur, *v))
                .or_insert(*v);
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_one_statement_claims_fail_on_a_held_claim_instead_of_updating_it() {
        for (sql, end) in [
            (all_new_sql(), "counters AS"),
            (all_new_no_counters_sql(), "INSERT INTO {s}.alert_log"),
        ] {
            let claims = &sql[..sql.find(end).unwrap()];
            assert!(claims.contains("INSERT INTO {s}.once_claims"));
            assert!(!claims.contains("ON CONFLICT"), "{claims}");
        }
    }
}
