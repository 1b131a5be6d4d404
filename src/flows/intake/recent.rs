//! What the intake batcher knows about claims without asking the store:
//! which deliveries it recorded lately ([`Recent`]; which are in a batch
//! still in flight, the batcher keeps by hash). Both replicas of an Alertmanager HA
//! pair send every notification, milliseconds apart: the second copy is
//! answered from here, exactly as the store would answer it, instead of
//! costing a store call (on Postgres, a one-statement batch that waits for
//! the first copy's commit, fails on its claim, and goes again claims
//! first).

use std::collections::VecDeque;
use std::hash::BuildHasher;

use foldhash::fast::RandomState;
use hashbrown::HashTable;

use crate::core::clock::Timestamp;

/// Claims kept, the oldest forgotten first. At 20,000 deliveries a second
/// that is about three seconds: enough for the copies of an HA pair. A
/// later copy (a sender's retry minutes on) goes to the store as before.
pub const KEPT: usize = 65_536;

/// A recorded claim: its scope and key (moved in, not copied), when it
/// ends, and which insert recorded it last.
struct Entry {
    scope: String,
    key: String,
    until: Timestamp,
    seq: u64,
}

/// Claims this instance recorded, each with the time its claim in the
/// store ends (the batch's `now` plus the dedupe window, as the store
/// computes it). Redis also ends a claim by its own clock (the key's
/// expiry): with the two clocks apart, the end can differ by that skew, a
/// day after the delivery.
///
/// One table of entries, hashed with foldhash (seeded per instance) and
/// compared by scope and key; the insertion order keeps each insert's hash
/// and number, so forgetting the oldest finds its entry without a copy of
/// its key, and leaves an entry recorded again since.
#[derive(Default)]
pub struct Recent {
    claims: HashTable<Entry>,
    order: VecDeque<(u64, u64)>,
    next: u64,
    kept: usize,
    hasher: RandomState,
}

impl Recent {
    /// At most `kept` claims.
    pub fn with_capacity(kept: usize) -> Self {
        Self {
            kept,
            ..Self::default()
        }
    }

    fn hash(hasher: &RandomState, scope: &str, key: &str) -> u64 {
        hasher.hash_one((scope, key))
    }

    /// Records that the claim (`scope`, `key`) is held until `until`.
    pub fn insert(&mut self, scope: String, key: String, until: Timestamp) {
        if self.order.len() >= self.kept.max(1) {
            if let Some((hash, seq)) = self.order.pop_front() {
                // Only if not recorded again since.
                if let Ok(oldest) = self.claims.find_entry(hash, |e| e.seq == seq) {
                    oldest.remove();
                }
            }
        }
        let Self {
            claims,
            order,
            next,
            hasher,
            ..
        } = self;
        let hash = Self::hash(hasher, &scope, &key);
        let seq = *next;
        *next += 1;
        match claims.find_mut(hash, |e| e.scope == scope && e.key == key) {
            Some(e) => {
                e.until = until;
                e.seq = seq;
            }
            None => {
                let entry = Entry {
                    scope,
                    key,
                    until,
                    seq,
                };
                claims.insert_unique(hash, entry, |e| Self::hash(hasher, &e.scope, &e.key));
            }
        }
        order.push_back((hash, seq));
    }

    /// Whether the store holds the claim at `now`, by what this instance
    /// recorded: a delivery of it now is a duplicate. (`false` says only
    /// that this instance does not know.)
    pub fn holds(&self, scope: &str, key: &str, now: Timestamp) -> bool {
        let hash = Self::hash(&self.hasher, scope, key);
        self.claims
            .find(hash, |e| e.scope == scope && e.key == key)
            .is_some_and(|e| now < e.until)
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
        assert_eq!(r.claims.len(), 3);
    }

    /// Against a model of what is remembered (the last `kept` inserts; a
    /// claim is known by its latest insert among them), over many inserts
    /// of few keys in two scopes, with a tiny seeded generator.
    #[test]
    fn what_is_held_matches_the_last_inserts_kept() {
        let kept = 5;
        let mut r = Recent::with_capacity(kept);
        let mut inserts: Vec<(String, String, i64)> = Vec::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for step in 0..5_000_i64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let scope = if x.is_multiple_of(2) { "s" } else { "t" };
            let key = format!("k{}", (x >> 8) % 8);
            // Ends from just before now to a few steps on.
            let until = step + ((x >> 20) % 4) as i64 - 1;
            r.insert(scope.into(), key.clone(), at(until));
            inserts.push((scope.into(), key, until));
            let last = &inserts[inserts.len().saturating_sub(kept)..];
            for scope in ["s", "t"] {
                for k in 0..8 {
                    let key = format!("k{k}");
                    let model = last
                        .iter()
                        .rev()
                        .find(|(s, kk, _)| s == scope && *kk == key)
                        .is_some_and(|(_, _, until)| step < *until);
                    assert_eq!(
                        r.holds(scope, &key, at(step)),
                        model,
                        "{step} {scope} {key}"
                    );
                }
            }
        }
        assert!(r.claims.len() <= kept);
    }
}
