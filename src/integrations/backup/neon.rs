//! Neon (Vercel Postgres): branches and snapshots are the backups, the
//! project's `history_retention_seconds` is the point-in-time window.
//! Pre-migration branches are named `pre-migration/<migration>`.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::{BackupError, BackupInfo, BackupSource};
use crate::core::clock::Timestamp;
use crate::core::secret::Secret;

/// The Neon API v2 for one project.
pub struct Neon {
    pub http: reqwest::Client,
    /// Default `https://console.neon.tech/api/v2`.
    pub base: String,
    pub api_key: Secret,
    pub project_id: String,
}

impl Neon {
    async fn get(&self, path: &str) -> Result<Value, BackupError> {
        let url = format!(
            "{}/projects/{}{path}",
            self.base.trim_end_matches('/'),
            self.project_id
        );
        let res = self
            .http
            .get(url)
            .bearer_auth(self.api_key.expose())
            .send()
            .await
            .map_err(|e| BackupError::Unreachable(e.without_url().to_string()))?;
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        if status >= 300 {
            return Err(BackupError::Rejected {
                status,
                detail: body["message"].as_str().unwrap_or("").to_string(),
            });
        }
        Ok(body)
    }
}

fn created(v: &Value) -> Option<Timestamp> {
    v["created_at"].as_str().and_then(Timestamp::parse_rfc3339)
}

#[async_trait]
impl BackupSource for Neon {
    fn name(&self) -> &'static str {
        "neon"
    }

    async fn list(&self) -> Result<Vec<BackupInfo>, BackupError> {
        let mut out = Vec::new();
        for b in self.get("/branches").await?["branches"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let name = b["name"].as_str().unwrap_or("");
            // Only branches made as backups count; the production branch itself is not one.
            if let (Some(m), Some(at)) = (name.strip_prefix("pre-migration/"), created(b)) {
                out.push(BackupInfo {
                    id: b["id"].as_str().unwrap_or("").into(),
                    label: format!("pre-migration/{m}"),
                    created_at: at,
                    ready: b["current_state"] == "ready",
                });
            }
        }
        for s in self.get("/snapshots").await?["snapshots"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let Some(at) = created(s) {
                let expired = s["expires_at"]
                    .as_str()
                    .and_then(Timestamp::parse_rfc3339)
                    .is_some_and(|e| e <= at);
                out.push(BackupInfo {
                    id: s["id"].as_str().unwrap_or("").into(),
                    label: "full".into(),
                    created_at: at,
                    ready: !expired,
                });
            }
        }
        Ok(out)
    }

    async fn history_window(&self) -> Result<Option<Duration>, BackupError> {
        let p = self.get("").await?;
        Ok(p["project"]["history_retention_seconds"]
            .as_u64()
            .map(Duration::from_secs))
    }
}
