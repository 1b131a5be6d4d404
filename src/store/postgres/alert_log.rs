//! Alert states on Postgres are written in two steps: intake appends each
//! batch's alert writes to `alert_log` (a plain insert: no index, bodies
//! kept as the guard wrote them, as text, and no row of `docs` locked),
//! and the writes are folded into
//! the alert states in `docs` before alert states are read or written
//! ([`PostgresStore::fold_alert_log`]), and by the claims-pruning cron.
//!
//! Measured side by side (`cargo bench --bench guard`), appending instead
//! of upserting took Postgres's CPU per delivered alert at intake from
//! 36-43 µs to 22-24 µs. The fold costs about 17 µs per new alert later
//! (the benchmark prints it): the work moves off the delivery's path more
//! than it shrinks, and a fold writes each alert state once however many
//! writes of it it takes.
//!
//! Order: the log's `seq` is the order of the writes. A fold takes the
//! oldest [`FOLD_CHUNK`] rows, composes each alert's writes in `seq` order
//! ([`FirstSeen::then`]: `first_seen` is kept while the state before a
//! write is firing, as `AlertWrite::apply`), and upserts the result, in one
//! transaction. Folds are serialised by an advisory lock: two at once
//! could delete each other's rows in different orders (a deadlock), or the
//! later could apply newer writes before the earlier applies older ones. A
//! write whose batch commits after a fold began is folded by the next fold:
//! it was concurrent with the read that folded, which may be ordered
//! before it.

use std::collections::HashMap;
use std::hash::Hash;

use tokio_postgres::Row;

use super::{in_schema, ms, pg_err, PostgresStore};
use crate::store::{StoreResult, ALERT_KIND};

/// Log rows folded per transaction (a backlog is folded in chunks, oldest
/// first, so a fold's memory is bounded).
pub(super) const FOLD_CHUNK: i64 = 20_000;

/// How a run of writes of one alert sets `first_seen` over the state
/// before it: `inherit` means "the stored `first_seen` if the stored state
/// is firing, else `at`"; otherwise it is `at`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct FirstSeen {
    pub inherit: bool,
    pub at: i64,
}

impl FirstSeen {
    /// One write, sent at `at`.
    pub fn of_write(at: i64) -> Self {
        Self { inherit: true, at }
    }

    /// `self` followed by `next`, where `firing` is the status the writes
    /// of `self` leave (so the status `next` finds).
    pub fn then(self, firing: bool, next: FirstSeen) -> FirstSeen {
        if next.inherit && firing {
            self
        } else {
            FirstSeen {
                inherit: false,
                at: next.at,
            }
        }
    }
}

/// The fold's statements for one schema.
pub(super) struct Statements {
    pending: String,
    take: String,
    lock_states: String,
    upsert_states: String,
    lock_key: String,
}

impl Statements {
    pub(super) fn for_schema(schema: &str) -> Self {
        let s = |text: &str| in_schema(text, schema);
        Self {
            pending: s("SELECT 1 FROM {s}.alert_log LIMIT 1"),
            take: s(&format!(
                "DELETE FROM {{s}}.alert_log WHERE seq IN (
                   SELECT seq FROM {{s}}.alert_log ORDER BY seq LIMIT {FOLD_CHUNK})
                 RETURNING seq, id, scope, status, inherit, first_seen, last_seen,
                           {} AS updated_ms, body",
                ms("updated_at")
            )),
            lock_states: s(&format!(
                "SELECT 1 FROM {{s}}.docs WHERE kind = '{ALERT_KIND}' AND id = ANY($1)
                 ORDER BY id FOR UPDATE"
            )),
            upsert_states: s(&upsert_states_sql()),
            lock_key: format!("rollback_guard.alert_log.{schema}"),
        }
    }
}

/// Upserts folded alert states (`$1` ids, `$2` scopes, `$3` statuses, `$4`
/// whether `first_seen` is inherited from a stored firing state, `$5`
/// first_seen, `$6` last_seen, `$7` updated (ms), `$8` bodies as JSON
/// text). The stored states are locked first ([`Statements`]), so the join
/// reads what the upsert replaces.
fn upsert_states_sql() -> String {
    format!(
        "INSERT INTO {{s}}.docs AS d (kind, id, version, scope, status, updated_at, body)
         SELECT '{ALERT_KIND}', t.id, 1, t.scope, t.status, to_timestamp(t.updated::float8 / 1000),
                t.body::jsonb || jsonb_build_object('first_seen',
                  CASE WHEN t.inherit AND cur.status = 'firing'
                            AND jsonb_typeof(cur.body->'first_seen') = 'number'
                       THEN cur.body->'first_seen' ELSE to_jsonb(t.first_seen) END,
                  'last_seen', t.last_seen)
         FROM unnest($1::text[], $2::text[], $3::text[], $4::bool[], $5::int8[], $6::int8[],
                     $7::int8[], $8::text[])
              AS t(id, scope, status, inherit, first_seen, last_seen, updated, body)
         LEFT JOIN {{s}}.docs cur ON cur.kind = '{ALERT_KIND}' AND cur.id = t.id
         ON CONFLICT (kind, id) DO UPDATE SET
           version = d.version + 1, scope = EXCLUDED.scope, status = EXCLUDED.status,
           updated_at = EXCLUDED.updated_at, body = EXCLUDED.body"
    )
}

/// One logged write's fields, as the upsert takes them.
struct Logged {
    scope: String,
    status: String,
    last_seen: i64,
    updated: i64,
    body: String,
}

/// An alert's writes composed: its id, how they set `first_seen`, and
/// the last of them.
pub(super) struct Composed<K, T> {
    pub id: K,
    pub first: FirstSeen,
    pub last: T,
}

/// Composes writes, in the order given, into one per alert (by `id`): the
/// last write, with `first_seen` as all of them set it ([`FirstSeen::then`];
/// `firing` says whether a write leaves the alert firing). Alerts keep the
/// order of their first write. Intake composes a batch's writes with it,
/// and the fold the logged writes of many batches.
pub(super) fn compose<K: Hash + Eq + Clone, T>(
    writes: impl IntoIterator<Item = (K, FirstSeen, T)>,
    firing: impl Fn(&T) -> bool,
) -> Vec<Composed<K, T>> {
    let mut at: HashMap<K, usize> = HashMap::new();
    let mut out: Vec<Composed<K, T>> = Vec::new();
    for (id, first, last) in writes {
        match at.get(&id) {
            Some(&i) => {
                let acc = &mut out[i];
                acc.first = acc.first.then(firing(&acc.last), first);
                acc.last = last;
            }
            None => {
                at.insert(id.clone(), out.len());
                out.push(Composed { id, first, last });
            }
        }
    }
    out
}

/// Composes log rows (any order) into one state per alert, by `seq`.
fn fold(mut rows: Vec<Row>) -> Vec<Composed<String, Logged>> {
    rows.sort_unstable_by_key(|r| r.get::<_, i64>("seq"));
    let writes = rows.into_iter().map(|r| {
        let first = FirstSeen {
            inherit: r.get("inherit"),
            at: r.get("first_seen"),
        };
        let logged = Logged {
            scope: r.get("scope"),
            status: r.get("status"),
            last_seen: r.get("last_seen"),
            updated: r.get("updated_ms"),
            body: r.get("body"),
        };
        (r.get::<_, String>("id"), first, logged)
    });
    let mut out = compose(writes, |l| l.status == "firing");
    // Rows are locked in one order (by id) in every fold.
    out.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    out
}

impl PostgresStore {
    /// Folds the alert log into the alert states (see the module docs);
    /// nothing to do is one round trip.
    pub(super) async fn fold_alert_log(&self) -> StoreResult<()> {
        let mut client = self.client().await?;
        let sql = &self.alert_log_sql;
        loop {
            let pending = client.query_opt(&sql.pending, &[]).await.map_err(pg_err)?;
            if pending.is_none() {
                return Ok(());
            }
            let tx = client.0.transaction().await.map_err(pg_err)?;
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1))",
                &[&sql.lock_key],
            )
            .await
            .map_err(pg_err)?;
            let rows = tx.query(&sql.take, &[]).await.map_err(pg_err)?;
            let taken = rows.len();
            let folded = fold(rows);
            if !folded.is_empty() {
                let mut cols: Columns = Default::default();
                for c in &folded {
                    cols.0.push(&c.id);
                    cols.1.push(&c.last.scope);
                    cols.2.push(&c.last.status);
                    cols.3.push(c.first.inherit);
                    cols.4.push(c.first.at);
                    cols.5.push(c.last.last_seen);
                    cols.6.push(c.last.updated);
                    cols.7.push(&c.last.body);
                }
                let lock = tx.prepare_cached(&sql.lock_states).await.map_err(pg_err)?;
                tx.execute(&lock, &[&cols.0]).await.map_err(pg_err)?;
                let upsert = tx
                    .prepare_cached(&sql.upsert_states)
                    .await
                    .map_err(pg_err)?;
                tx.execute(
                    &upsert,
                    &[
                        &cols.0, &cols.1, &cols.2, &cols.3, &cols.4, &cols.5, &cols.6, &cols.7,
                    ],
                )
                .await
                .map_err(pg_err)?;
            }
            tx.commit().await.map_err(pg_err)?;
            if (taken as i64) < FOLD_CHUNK {
                return Ok(());
            }
        }
    }
}

type Columns<'a> = (
    Vec<&'a str>,
    Vec<&'a str>,
    Vec<&'a str>,
    Vec<bool>,
    Vec<i64>,
    Vec<i64>,
    Vec<i64>,
    Vec<&'a str>,
);

#[cfg(test)]
mod tests {
    use super::FirstSeen;

    /// The composition of runs equals the write-by-write rule
    /// (`AlertWrite::apply`): over every sequence of up to four writes,
    /// split into runs every possible way, on a stored state that is
    /// firing, resolved or absent.
    #[test]
    fn composed_runs_set_first_seen_as_their_writes_one_by_one() {
        // (firing, at) per write; the stored state (firing, first_seen).
        let stored_states = [Some((true, 1)), Some((false, 1)), None];
        for n in 1..=4usize {
            for statuses in 0..(1u32 << n) {
                let writes: Vec<(bool, i64)> = (0..n)
                    .map(|i| (statuses & (1 << i) != 0, 10 * (i as i64 + 1)))
                    .collect();
                for stored in stored_states {
                    // One by one.
                    let mut state = stored;
                    for &(firing, at) in &writes {
                        let first = match state {
                            Some((true, first)) => first,
                            _ => at,
                        };
                        state = Some((firing, first));
                    }
                    let expected = state.unwrap().1;
                    // Every split into consecutive runs (a cut after write i or not).
                    for cuts in 0..(1u32 << (n - 1)) {
                        let mut runs: Vec<(bool, FirstSeen)> = Vec::new();
                        for (i, &(firing, at)) in writes.iter().enumerate() {
                            let w = FirstSeen::of_write(at);
                            match runs.last_mut() {
                                Some((last, acc)) if i > 0 && cuts & (1 << (i - 1)) == 0 => {
                                    *acc = acc.then(*last, w);
                                    *last = firing;
                                }
                                _ => runs.push((firing, w)),
                            }
                        }
                        // Then the runs composed with each other.
                        let (mut last, mut acc) = runs[0];
                        for &(firing, run) in &runs[1..] {
                            acc = acc.then(last, run);
                            last = firing;
                        }
                        let got = match stored {
                            Some((true, first)) if acc.inherit => first,
                            _ => acc.at,
                        };
                        assert_eq!(got, expected, "{writes:?} on {stored:?}, cuts {cuts:b}");
                    }
                }
            }
        }
    }
}
