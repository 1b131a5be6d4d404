//! The audit log's hash chain. Every record commits to the one before it, so
//! editing or deleting a past record is detectable by [`verify_chain`]. Pure:
//! the store supplies sequence numbers and persistence.

use sha2::{Digest, Sha256};

use crate::core::clock::Timestamp;

/// The hash that precedes the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened, before it is sequenced.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEntry {
    pub at: Timestamp,
    /// Who did it: `cron:evaluate`, `approver:alice@example.com`, `operator`, `webhook:sentry`.
    pub actor: String,
    /// What was done, snake_case: `rollback_requested`, `approval_rejected`.
    pub action: String,
    /// What it was done to: an incident id, deployment id, lease name.
    pub subject: String,
    /// Evidence and parameters.
    pub detail: serde_json::Value,
}

/// A sequenced, chained audit record.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditRecord {
    /// 1-based position in the log.
    pub seq: i64,
    pub entry: AuditEntry,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditRecord {
    /// Chains `entry` after the record with `prev_seq` and `prev_hash`.
    pub fn chain(prev_seq: i64, prev_hash: &str, entry: AuditEntry) -> Self {
        let seq = prev_seq + 1;
        let hash = record_hash(seq, prev_hash, &entry);
        Self {
            seq,
            entry,
            prev_hash: prev_hash.to_string(),
            hash,
        }
    }
}

/// SHA-256 over the previous hash and a canonical encoding of the record.
/// `serde_json` keeps object keys sorted, so the detail's encoding is stable.
pub fn record_hash(seq: i64, prev_hash: &str, e: &AuditEntry) -> String {
    let mut h = Sha256::new();
    for part in [
        prev_hash.as_bytes(),
        seq.to_string().as_bytes(),
        e.at.as_millis().to_string().as_bytes(),
        e.actor.as_bytes(),
        e.action.as_bytes(),
        e.subject.as_bytes(),
        e.detail.to_string().as_bytes(),
    ] {
        // Length-prefix each field so field boundaries cannot be shifted.
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    hex::encode(h.finalize())
}

/// Why a chain does not verify.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("record {seq}: expected sequence number {expected}")]
    Gap { seq: i64, expected: i64 },
    #[error("record {seq}: previous hash does not match record {}", seq - 1)]
    BrokenLink { seq: i64 },
    #[error("record {seq}: contents do not match its hash")]
    Tampered { seq: i64 },
}

/// Checks a contiguous run of records. `before` is the `(seq, hash)` of the
/// record preceding the run (`(0, GENESIS_HASH)` for the start of the log).
pub fn verify_chain(before: (i64, &str), records: &[AuditRecord]) -> Result<(), ChainError> {
    let (mut seq, mut hash) = (before.0, before.1.to_string());
    for r in records {
        if r.seq != seq + 1 {
            return Err(ChainError::Gap {
                seq: r.seq,
                expected: seq + 1,
            });
        }
        if r.prev_hash != hash {
            return Err(ChainError::BrokenLink { seq: r.seq });
        }
        if record_hash(r.seq, &r.prev_hash, &r.entry) != r.hash {
            return Err(ChainError::Tampered { seq: r.seq });
        }
        seq = r.seq;
        hash = r.hash.clone();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(action: &str) -> AuditEntry {
        AuditEntry {
            at: Timestamp::from_millis(1_000),
            actor: "cron:evaluate".into(),
            action: action.into(),
            subject: "inc_1".into(),
            detail: serde_json::json!({"b": 2, "a": 1}),
        }
    }

    fn chain(n: usize) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = Vec::new();
        for i in 0..n {
            let (seq, hash) = out
                .last()
                .map_or((0, GENESIS_HASH.to_string()), |r| (r.seq, r.hash.clone()));
            out.push(AuditRecord::chain(seq, &hash, entry(&format!("step_{i}"))));
        }
        out
    }

    #[test]
    fn a_fresh_chain_verifies() {
        assert_eq!(verify_chain((0, GENESIS_HASH), &chain(5)), Ok(()));
    }

    #[test]
    fn editing_a_record_is_detected() {
        let mut c = chain(3);
        c[1].entry.detail = serde_json::json!({"a": 1, "b": 3});
        assert_eq!(
            verify_chain((0, GENESIS_HASH), &c),
            Err(ChainError::Tampered { seq: 2 })
        );
    }

    #[test]
    fn deleting_a_record_is_detected() {
        let mut c = chain(3);
        c.remove(1);
        assert_eq!(
            verify_chain((0, GENESIS_HASH), &c),
            Err(ChainError::Gap {
                seq: 3,
                expected: 2
            })
        );
    }

    #[test]
    fn rehashing_an_edited_record_still_breaks_the_next_link() {
        let mut c = chain(3);
        c[1].entry.actor = "mallory".into();
        c[1].hash = record_hash(2, &c[1].prev_hash.clone(), &c[1].entry);
        assert_eq!(
            verify_chain((0, GENESIS_HASH), &c),
            Err(ChainError::BrokenLink { seq: 3 })
        );
    }

    #[test]
    fn field_boundaries_cannot_be_shifted() {
        let mut a = entry("x");
        a.actor = "ab".into();
        a.action = "c".into();
        let mut b = entry("x");
        b.actor = "a".into();
        b.action = "bc".into();
        assert_ne!(
            record_hash(1, GENESIS_HASH, &a),
            record_hash(1, GENESIS_HASH, &b)
        );
    }
}
