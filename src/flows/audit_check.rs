//! Verifying the audit hash chain without reading the whole log on any
//! request: the evaluate cron advances a checkpoint (the last verified
//! record's seq and hash) by at most [`BATCH`] records a run, and the
//! dashboard shows the checkpoint.

use serde_json::{json, Value};

use crate::core::audit::{verify_chain, GENESIS_HASH};
use crate::core::clock::Timestamp;
use crate::store::{Doc, Store, StoreResult};

/// Document kind and id of the checkpoint.
pub const CHECKPOINT_KIND: &str = "audit_checkpoint";
const CHECKPOINT_ID: &str = "chain";
/// Records verified per run at most.
pub const BATCH: usize = 5_000;

/// Verifies the records after the checkpoint (one batch) and moves it.
pub async fn advance(store: &dyn Store, now: Timestamp) -> StoreResult<Value> {
    let existing = store.get_doc(CHECKPOINT_KIND, CHECKPOINT_ID).await?;
    let body = existing
        .as_ref()
        .map(|d| d.body.clone())
        .unwrap_or(Value::Null);
    if body["ok"] == false {
        // A broken chain stays reported until someone looks.
        return Ok(body);
    }
    let seq = body["seq"].as_i64().unwrap_or(0);
    let hash = body["hash"].as_str().unwrap_or(GENESIS_HASH).to_string();
    let records = store.audit_after(seq, BATCH).await?;
    let Some(last) = records.last() else {
        return Ok(body);
    };
    let next = match verify_chain((seq, &hash), &records) {
        Ok(()) => {
            json!({"ok": true, "seq": last.seq, "hash": last.hash, "checked_at": now.as_millis()})
        }
        Err(e) => {
            json!({"ok": false, "seq": seq, "hash": hash, "error": e.to_string(), "checked_at": now.as_millis()})
        }
    };
    let doc = Doc {
        kind: CHECKPOINT_KIND.into(),
        id: CHECKPOINT_ID.into(),
        version: 0,
        scope: "audit".into(),
        status: if next["ok"] == true {
            "verified"
        } else {
            "broken"
        }
        .into(),
        updated_at: now,
        body: next.clone(),
    };
    // A concurrent run that got there first has verified the same records.
    store.put_doc(&doc, existing.map(|d| d.version)).await?;
    Ok(next)
}

/// The checkpoint as people read it.
pub async fn status(store: &dyn Store) -> StoreResult<String> {
    let Some(d) = store.get_doc(CHECKPOINT_KIND, CHECKPOINT_ID).await? else {
        return Ok("not checked yet (the evaluate cron checks it)".into());
    };
    let at = Timestamp::from_millis(d.body["checked_at"].as_i64().unwrap_or(0)).to_rfc3339();
    Ok(match d.body["ok"].as_bool() {
        Some(true) => format!("verified through record {} (checked {at})", d.body["seq"]),
        _ => format!(
            "BROKEN after record {}: {} (checked {at})",
            d.body["seq"],
            d.body["error"].as_str().unwrap_or("?")
        ),
    })
}
