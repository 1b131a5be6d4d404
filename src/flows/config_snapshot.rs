//! Configuration rollback: a snapshot of the project's environment variables
//! for a deployment's target (taken by the evaluate cron once a deployment is
//! current), and the `config` step that restores it through the env API.
//!
//! Values are secrets, so a snapshot never holds them in plaintext: each
//! variable keeps a SHA-256 fingerprint (to detect drift) and, only when
//! `SNAPSHOT_ENCRYPTION_KEY` is set, its value sealed with
//! XChaCha20-Poly1305. Without a key, drifted values are reported for manual
//! restore. `sensitive` variables are write-only in Vercel and can never be
//! restored automatically. Variables added since are reported, not deleted.
//! (An instant rollback keeps the env the target was built with; restoring
//! matters for the next deployment.)

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::core::clock::Timestamp;
use crate::core::secret::Secret;
use crate::integrations::vercel::{EnvVar, VercelApi};
use crate::store::{Doc, DocWrite, Store, StoreResult};

/// Document kind of snapshots (id = deployment id).
pub const SNAPSHOT_KIND: &str = "env_snapshot";

/// Seals and opens snapshot values.
#[derive(Clone)]
pub struct Sealer(XChaCha20Poly1305);

impl Sealer {
    /// From a base64 32-byte key.
    pub fn from_base64(key: &Secret) -> Option<Sealer> {
        let raw = STANDARD.decode(key.expose().trim()).ok()?;
        (raw.len() == 32)
            .then(|| Sealer(XChaCha20Poly1305::new_from_slice(&raw).expect("32-byte key")))
    }

    /// `base64(nonce || ciphertext)`; `aad` binds it to the variable.
    pub fn seal(&self, plaintext: &str, aad: &str, nonce: [u8; 24]) -> String {
        let ct = self
            .0
            .encrypt(
                XNonce::from_slice(&nonce),
                chacha20poly1305::aead::Payload {
                    msg: plaintext.as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .expect("encryption cannot fail for in-memory buffers");
        let mut out = nonce.to_vec();
        out.extend(ct);
        STANDARD.encode(out)
    }

    /// Opens a sealed value; `None` if it was tampered with or sealed with another key.
    pub fn open(&self, sealed: &str, aad: &str) -> Option<String> {
        let raw = STANDARD.decode(sealed).ok()?;
        if raw.len() < 24 {
            return None;
        }
        let (nonce, ct) = raw.split_at(24);
        let pt = self
            .0
            .decrypt(
                XNonce::from_slice(nonce),
                chacha20poly1305::aead::Payload {
                    msg: ct,
                    aad: aad.as_bytes(),
                },
            )
            .ok()?;
        String::from_utf8(pt).ok()
    }
}

fn fingerprint(v: &str) -> String {
    hex::encode(Sha256::digest(v.as_bytes()))
}

/// The Vercel env target an environment deploys with.
pub fn target_of(environment: &str) -> &str {
    match environment {
        "production" => "production",
        "development" => "development",
        _ => "preview",
    }
}

/// Takes the snapshot for `deployment` unless one exists. Returns whether it took one.
pub async fn take(
    store: &dyn Store,
    vercel: &dyn VercelApi,
    sealer: Option<&Sealer>,
    environment: &str,
    deployment: &str,
    now: Timestamp,
) -> StoreResult<bool> {
    if store.get_doc(SNAPSHOT_KIND, deployment).await?.is_some() {
        return Ok(false);
    }
    let target = target_of(environment);
    let vars = match vercel.list_env().await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "could not snapshot environment variables");
            return Ok(false);
        }
    };
    let entries: Vec<Value> = vars
        .iter()
        .filter(|v| v.targets.iter().any(|t| t == target))
        .map(|v| {
            let aad = format!("{deployment}/{}/{target}", v.key);
            json!({
                "key": v.key, "type": v.kind, "id": v.id, "targets": v.targets,
                "git_branch": v.git_branch, "comment": v.comment, "custom_environment_ids": v.custom_environment_ids,
                "fingerprint": v.value.as_deref().map(fingerprint),
                "sealed": match (sealer, &v.value) { (Some(s), Some(val)) => Some(s.seal(val, &aad, rand::random())), _ => None },
            })
        })
        .collect();
    let doc = Doc {
        kind: SNAPSHOT_KIND.into(),
        id: deployment.into(),
        version: 0,
        scope: environment.into(),
        status: "taken".into(),
        updated_at: now,
        body: json!({"environment": environment, "target": target, "taken_at": now.as_millis(), "sealed": sealer.is_some(), "vars": entries}),
    };
    Ok(store.put_doc(&doc, None).await? != DocWrite::Conflict)
}

/// Restores the snapshot of `deployment`. Returns the report for the step.
pub async fn restore(
    store: &dyn Store,
    vercel: &dyn VercelApi,
    sealer: Option<&Sealer>,
    deployment: &str,
) -> Result<Value, String> {
    let Some(snap) = store
        .get_doc(SNAPSHOT_KIND, deployment)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(
            json!({"skipped": format!("no environment snapshot was taken for {deployment}")}),
        );
    };
    let target = snap.body["target"]
        .as_str()
        .unwrap_or("production")
        .to_string();
    let current: Vec<EnvVar> = vercel.list_env().await.map_err(|e| e.to_string())?;
    let current: Vec<&EnvVar> = current
        .iter()
        .filter(|v| v.targets.contains(&target))
        .collect();
    let (mut unchanged, mut restored, mut manual) = (Vec::new(), Vec::new(), Vec::new());
    let empty = Vec::new();
    for s in snap.body["vars"].as_array().unwrap_or(&empty) {
        let key = s["key"].as_str().unwrap_or_default();
        let kind = s["type"].as_str().unwrap_or("encrypted");
        let want = s["fingerprint"].as_str();
        let now = current.iter().find(|v| v.key == key);
        if now.is_some_and(|v| {
            v.value.as_deref().map(fingerprint).as_deref() == want && want.is_some()
        }) {
            unchanged.push(key.to_string());
            continue;
        }
        // Only types Vercel accepts on create are restored (system, encrypted,
        // plain, sensitive); `secret` is a legacy reference and `system` is
        // Vercel's own. A sensitive value is write-only, so it is never known.
        if !matches!(kind, "encrypted" | "plain") {
            manual.push(json!({"key": key, "why": match kind {
                "sensitive" => "sensitive values are write-only in Vercel",
                "secret" => "legacy secret-type variables are not restored automatically",
                _ => "system variables are managed by Vercel",
            }}));
            continue;
        }
        let aad = format!("{deployment}/{key}/{target}");
        let value = s["sealed"]
            .as_str()
            .and_then(|sealed| sealer.and_then(|k| k.open(sealed, &aad)));
        match (value, now) {
            // Never write a blank secret back.
            (Some(v), _) if v.is_empty() && kind != "plain" => manual.push(json!({"key": key, "why": "the snapshot holds no value for it"})),
            (Some(v), Some(cur)) => {
                vercel.edit_env(&cur.id, &v).await.map_err(|e| format!("restoring {key}: {e}"))?;
                restored.push(key.to_string());
            }
            (Some(v), None) => {
                let strings = |k: &str| -> Vec<String> { s[k].as_array().map(|a| a.iter().filter_map(|t| t.as_str().map(String::from)).collect()).unwrap_or_default() };
                let mut targets = strings("targets");
                if targets.is_empty() {
                    targets.push(target.clone());
                }
                let var = EnvVar {
                    id: String::new(),
                    key: key.to_string(),
                    value: None,
                    kind: kind.to_string(),
                    targets,
                    git_branch: s["git_branch"].as_str().map(String::from),
                    comment: s["comment"].as_str().map(String::from),
                    custom_environment_ids: strings("custom_environment_ids"),
                };
                vercel.create_env(&var, &v).await.map_err(|e| format!("recreating {key}: {e}"))?;
                restored.push(key.to_string());
            }
            (None, _) => manual.push(json!({"key": key, "why": "no SNAPSHOT_ENCRYPTION_KEY was set when the snapshot was taken"})),
        }
    }
    let known: Vec<&str> = snap.body["vars"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .filter_map(|s| s["key"].as_str())
        .collect();
    let added: Vec<&str> = current
        .iter()
        .map(|v| v.key.as_str())
        .filter(|k| !known.contains(k))
        .collect();
    Ok(
        json!({"restored": restored, "unchanged": unchanged.len(), "needs_manual_restore": manual, "added_since_not_removed": added}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_the_same_key_and_binding() {
        let key = Secret::new(STANDARD.encode([7u8; 32]));
        let s = Sealer::from_base64(&key).unwrap();
        let sealed = s.seal(
            "postgres://u:pw@db/app",
            "dpl_1/DATABASE_URL/production",
            [1; 24],
        );
        assert!(!sealed.contains("pw@db"));
        assert_eq!(
            s.open(&sealed, "dpl_1/DATABASE_URL/production").as_deref(),
            Some("postgres://u:pw@db/app")
        );
        assert_eq!(
            s.open(&sealed, "dpl_1/OTHER/production"),
            None,
            "bound to the variable"
        );
        let other = Sealer::from_base64(&Secret::new(STANDARD.encode([8u8; 32]))).unwrap();
        assert_eq!(other.open(&sealed, "dpl_1/DATABASE_URL/production"), None);
        assert!(Sealer::from_base64(&Secret::new("too-short")).is_none());
    }
}
