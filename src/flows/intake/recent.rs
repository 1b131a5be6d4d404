//! What the intake batcher knows about claims without asking the store:
//! which deliveries it recorded lately ([`Recent`]; which are in a batch
//! still in flight, the batcher keeps by hash). Both replicas of an Alertmanager HA
//! pair send every notification, milliseconds apart: the second copy is
//! answered from here, exactly as the store would answer it, instead of
//! costing a store call (on Postgres, a one-statement batch that waits for
//! the first copy's commit, fails on its claim, and goes again claims
//! first).

use std::hash::BuildHasher;

use foldhash::fast::RandomState;
use hashbrown::HashTable;

use crate::core::clock::Timestamp;

/// Claims kept: at least the last `KEPT / 2` recorded, at most `KEPT`.
/// At 20,000 deliveries a second half of it is over a second and a half:
/// enough for the copies of an HA pair, which arrive milliseconds apart. A
/// later copy (a sender's retry minutes on) goes to the store as before.
pub const KEPT: usize = 65_536;

/// A recorded claim: its scope and key (moved in, not copied) and when it
/// ends.
struct Entry {
    scope: String,
    key: String,
    until: Timestamp,
}

/// Claims this instance recorded, each with the time its claim in the
/// store ends (the batch's `now` plus the dedupe window, as the store
/// computes it). Redis also ends a claim by its own clock (the key's
/// expiry): with the two clocks apart, the end can differ by that skew, a
/// day after the delivery.
///
/// Two generations of claims, each a table hashed with foldhash (seeded per
/// instance) and compared by scope and key: claims are recorded in the
/// current one; when it holds half of what is kept, the previous one is
/// forgotten as a whole and the current one takes its place. Nothing is
/// removed one by one, so the tables never fill with tombstones and never
/// rehash, and both are allocated once. Before, one table lost its oldest
/// entry at each insert: in an isolated loop of 400,000 inserts (key
/// copies included) that took 217-233 ns an insert against 130-150 now,
/// and its worst single insert (a rehash or a resize, while every
/// delivery waits on the batcher) 2.9-24 ms against 0.9-1.0 ms now (a
/// generation cleared). The benchmark's rates cannot tell them apart.
pub struct Recent {
    current: HashTable<Entry>,
    previous: HashTable<Entry>,
    /// Claims a generation holds.
    half: usize,
    hasher: RandomState,
}

impl Recent {
    /// At least the last `kept / 2` claims recorded, at most `kept`.
    pub fn with_capacity(kept: usize) -> Self {
        let half = (kept / 2).max(1);
        Self {
            current: HashTable::with_capacity(half),
            previous: HashTable::with_capacity(half),
            half,
            hasher: RandomState::default(),
        }
    }

    /// The one hash of a claim: for looking it up, and for placing an
    /// entry when its table grows.
    fn hash(hasher: &RandomState, scope: &str, key: &str) -> u64 {
        hasher.hash_one((scope, key))
    }

    /// Records that the claim (`scope`, `key`) is held until `until`.
    pub fn insert(&mut self, scope: String, key: String, until: Timestamp) {
        let hash = Self::hash(&self.hasher, &scope, &key);
        let same = |e: &Entry| e.scope == scope && e.key == key;
        if let Some(e) = self.current.find_mut(hash, same) {
            e.until = until;
            return;
        }
        if self.current.len() >= self.half {
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.clear();
        }
        // Recorded again after the generation began, a claim of the
        // previous one is found here first, with its later end.
        let entry = Entry { scope, key, until };
        let hasher = &self.hasher;
        self.current
            .insert_unique(hash, entry, |e| Self::hash(hasher, &e.scope, &e.key));
    }

    /// Whether the store holds the claim at `now`, by what this instance
    /// recorded: a delivery of it now is a duplicate. (`false` says only
    /// that this instance does not know.)
    pub fn holds(&self, scope: &str, key: &str, now: Timestamp) -> bool {
        let hash = Self::hash(&self.hasher, scope, key);
        let same = |e: &Entry| e.scope == scope && e.key == key;
        self.current
            .find(hash, same)
            .or_else(|| self.previous.find(hash, same))
            .is_some_and(|e| now < e.until)
    }

    /// Claims kept now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
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
    fn a_generation_is_forgotten_whole_and_a_renewed_claim_is_kept() {
        // Generations of two claims.
        let mut r = Recent::with_capacity(4);
        r.insert("s".into(), "a".into(), at(100));
        r.insert("s".into(), "b".into(), at(100));
        // Renewed in the current generation: updated, not added.
        r.insert("s".into(), "a".into(), at(200));
        assert!(r.holds("s", "a", at(150)));
        // c starts a generation; a and b are still known.
        r.insert("s".into(), "c".into(), at(100));
        assert!(r.holds("s", "a", at(150)) && r.holds("s", "b", at(50)));
        // a renewed from the previous generation: its later end counts.
        r.insert("s".into(), "a".into(), at(300));
        assert!(r.holds("s", "a", at(250)));
        // d starts another: b leaves with its generation, a stays (renewed).
        r.insert("s".into(), "d".into(), at(100));
        assert!(!r.holds("s", "b", at(50)));
        assert!(r.holds("s", "a", at(250)));
        assert!(r.holds("s", "c", at(50)) && r.holds("s", "d", at(50)));
        assert_eq!(r.len(), 3);
    }

    /// Against a model of what was inserted, over many inserts of few keys
    /// in two scopes with a tiny seeded generator: a claim is never held
    /// unless its latest insert holds it (a wrong "held" would answer a new
    /// delivery as a duplicate); a claim whose latest insert is among the
    /// last `kept / 2` is known exactly; no more than `kept` are kept.
    #[test]
    fn what_is_held_matches_the_inserts_kept() {
        let kept = 6;
        let mut r = Recent::with_capacity(kept);
        let mut inserts: Vec<(String, String, i64)> = Vec::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let (mut known, mut forgotten) = (0, 0);
        for step in 0..5_000_i64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let scope = if x.is_multiple_of(2) { "s" } else { "t" };
            let key = format!("k{}", (x >> 8) % 8);
            // Ends from just before now to past the generations kept.
            let until = step + ((x >> 20) % 24) as i64 - 1;
            r.insert(scope.into(), key.clone(), at(until));
            inserts.push((scope.into(), key, until));
            for scope in ["s", "t"] {
                for k in 0..8 {
                    let key = format!("k{k}");
                    let latest = inserts
                        .iter()
                        .rev()
                        .position(|(s, kk, _)| s == scope && *kk == key);
                    let held = r.holds(scope, &key, at(step));
                    let Some(age) = latest else {
                        assert!(!held, "{step} {scope} {key}");
                        continue;
                    };
                    let (_, _, until) = &inserts[inserts.len() - 1 - age];
                    let model = step < *until;
                    if age < kept / 2 {
                        assert_eq!(held, model, "{step} {scope} {key}");
                    } else {
                        assert!(!held || model, "{step} {scope} {key}");
                    }
                    if model {
                        if held {
                            known += 1;
                        } else {
                            forgotten += 1;
                        }
                    }
                }
            }
            assert!(r.len() <= kept);
        }
        // Both cases happened: the model tested something.
        assert!(known > 0 && forgotten > 0, "{known} {forgotten}");
    }
}
