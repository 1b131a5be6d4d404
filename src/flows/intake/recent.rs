//! What the intake batcher knows about claims without asking the store:
//! which deliveries it recorded lately ([`Recent`]; which are in a batch
//! still in flight, the batcher keeps by hash). Both replicas of an Alertmanager HA
//! pair send every notification, milliseconds apart: the second copy is
//! answered from here, exactly as the store would answer it, instead of
//! costing a store call (on Postgres, a one-statement batch that waits for
//! the first copy's commit, fails on its claim, and goes again claims
//! first).

use std::collections::{HashMap, VecDeque};

use foldhash::fast::RandomState;

use crate::core::clock::Timestamp;

/// Claims are looked up several times per delivery: hashed with foldhash
/// (seeded per map) rather than SipHash.
type Map<K, V> = HashMap<K, V, RandomState>;

/// A value per claim (scope, key), looked up without allocating.
struct Claims<V>(Map<String, Map<String, V>>);

impl<V> Default for Claims<V> {
    fn default() -> Self {
        Self(Map::default())
    }
}

impl<V> Claims<V> {
    fn get(&self, scope: &str, key: &str) -> Option<&V> {
        self.0.get(scope)?.get(key)
    }

    fn insert(&mut self, scope: String, key: String, v: V) {
        self.0.entry(scope).or_default().insert(key, v);
    }

    fn remove(&mut self, scope: &str, key: &str) -> Option<V> {
        let keys = self.0.get_mut(scope)?;
        let v = keys.remove(key);
        if keys.is_empty() {
            self.0.remove(scope);
        }
        v
    }
}

/// Claims kept, the oldest forgotten first. At 20,000 deliveries a second
/// that is about three seconds: enough for the copies of an HA pair. A
/// later copy (a sender's retry minutes on) goes to the store as before.
pub const KEPT: usize = 65_536;

/// Claims this instance recorded, each with the time its claim in the
/// store ends (the batch's `now` plus the dedupe window, as the store
/// computes it). Redis also ends a claim by its own clock (the key's
/// expiry): with the two clocks apart, the end can differ by that skew, a
/// day after the delivery.
#[derive(Default)]
pub struct Recent {
    until: Claims<Timestamp>,
    order: VecDeque<(String, String, Timestamp)>,
    kept: usize,
}

impl Recent {
    /// At most `kept` claims.
    pub fn with_capacity(kept: usize) -> Self {
        Self {
            kept,
            ..Self::default()
        }
    }

    /// Records that the claim (`scope`, `key`) is held until `until`.
    pub fn insert(&mut self, scope: String, key: String, until: Timestamp) {
        if self.order.len() >= self.kept.max(1) {
            if let Some((s, k, u)) = self.order.pop_front() {
                // Only if not recorded again since.
                if self.until.get(&s, &k) == Some(&u) {
                    self.until.remove(&s, &k);
                }
            }
        }
        self.order.push_back((scope.clone(), key.clone(), until));
        self.until.insert(scope, key, until);
    }

    /// Whether the store holds the claim at `now`, by what this instance
    /// recorded: a delivery of it now is a duplicate. (`false` says only
    /// that this instance does not know.)
    pub fn holds(&self, scope: &str, key: &str, now: Timestamp) -> bool {
        self.until.get(scope, key).is_some_and(|u| now < *u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    #[test]
    fn a_recorded_claim_is_held_until_it_ends_and_not_after() {
        let mut r = Recent::with_capacity(10);
        r.insert("intake:am".into(), "k".into(), at(1_000));
        assert!(r.holds("intake:am", "k", at(999)));
        // The store takes a claim over once expires_at <= now.
        assert!(!r.holds("intake:am", "k", at(1_000)));
        assert!(!r.holds("intake:sentry", "k", at(500)));
        assert!(!r.holds("intake:am", "other", at(500)));
    }

    #[test]
    fn the_oldest_claims_are_forgotten_first_and_a_renewed_one_is_kept() {
        let mut r = Recent::with_capacity(3);
        r.insert("s".into(), "a".into(), at(100));
        r.insert("s".into(), "b".into(), at(100));
        r.insert("s".into(), "a".into(), at(200));
        // Full: the oldest entry (a's first) leaves, but must not take the
        // renewed claim with it.
        r.insert("s".into(), "c".into(), at(100));
        assert!(r.holds("s", "a", at(150)));
        // Next to leave is b.
        r.insert("s".into(), "d".into(), at(100));
        assert!(!r.holds("s", "b", at(50)));
        assert!(r.holds("s", "c", at(50)) && r.holds("s", "d", at(50)));
        assert_eq!(r.until.0.values().map(Map::len).sum::<usize>(), 3);
    }

    #[test]
    fn claims_are_removed_by_scope_and_key() {
        let mut c: Claims<u8> = Claims::default();
        c.insert("s".into(), "a".into(), 1);
        c.insert("s".into(), "b".into(), 2);
        c.insert("t".into(), "a".into(), 1);
        assert_eq!(c.remove("s", "b"), Some(2));
        assert_eq!(c.remove("s", "b"), None);
        assert_eq!(c.get("s", "a"), Some(&1));
        assert_eq!(c.remove("s", "a"), Some(1));
        // An emptied scope leaves the map.
        assert_eq!(c.0.len(), 1);
    }
}
