//! The Vercel REST API, behind [`VercelApi`], with one real implementation.
//! Instant Rollback is `POST /v9/projects/{id}/rollback/{deploymentId}` (201,
//! no body); its progress is `lastAliasRequest` on `GET /v9/projects/{id}`.
//! 429 and 5xx are retried with backoff, honouring `Retry-After` (seconds or
//! an HTTP date), as the official CLI does.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

/// Vercel REST API credentials.
#[derive(Clone, Debug)]
pub struct VercelConfig {
    pub token: crate::core::secret::Secret,
    pub project_id: String,
    pub team_id: Option<String>,
    /// Overridable for tests; defaults to `https://api.vercel.com`.
    pub api_base: url::Url,
}

/// An alias (rollback/promote) job as Vercel reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct AliasRequest {
    pub from_deployment: Option<String>,
    pub to_deployment: String,
    /// `pending`, `in-progress`, `succeeded`, `failed`, `skipped`.
    pub job_status: String,
    /// Milliseconds since the epoch.
    pub requested_at: i64,
    /// `rollback` or `promote`.
    pub kind: String,
}

/// A project environment variable (`GET /v10/projects/{id}/env`).
#[derive(Clone, Debug, PartialEq)]
pub struct EnvVar {
    pub id: String,
    pub key: String,
    /// The readable value: `plain` values, and `encrypted` ones the API
    /// returned with `decrypted: true`. `None` otherwise: `sensitive` values
    /// are write-only (listed as `""`), `secret` and `system` are references.
    pub value: Option<String>,
    /// `plain`, `encrypted`, `secret`, `sensitive`, `system`.
    pub kind: String,
    /// `production`, `preview`, `development`.
    pub targets: Vec<String>,
    pub git_branch: Option<String>,
    pub comment: Option<String>,
    pub custom_environment_ids: Vec<String>,
}

/// A Vercel API failure.
#[derive(Debug, thiserror::Error)]
pub enum VercelError {
    #[error("Vercel API answered {status} {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("Vercel API still rate limited or failing after {0} attempts")]
    GaveUp(u32),
    #[error("Vercel API unreachable: {0}")]
    Unreachable(String),
    #[error("unexpected Vercel API response: {0}")]
    Decode(String),
}

/// What the executor needs from Vercel.
#[async_trait]
pub trait VercelApi: Send + Sync {
    /// Asks Vercel to point production at `deployment_id`.
    async fn request_rollback(
        &self,
        deployment_id: &str,
        description: &str,
    ) -> Result<(), VercelError>;
    /// The project's most recent alias job, if any.
    async fn last_alias_request(&self) -> Result<Option<AliasRequest>, VercelError>;
    /// The deployment production serves now (`targets.production.id` of
    /// `GET /v9/projects/{id}`; vercel/sdk `getprojectresponsebody.ts`).
    async fn production_deployment(&self) -> Result<Option<String>, VercelError>;
    /// A deployment's `readyState` (`GET /v13/deployments/{id}`: READY,
    /// ERROR, BUILDING, …); `None` when Vercel does not know it (404).
    async fn deployment_state(&self, id: &str) -> Result<Option<String>, VercelError>;
    /// Every project environment variable, decrypted where the API allows.
    async fn list_env(&self) -> Result<Vec<EnvVar>, VercelError>;
    /// Creates a variable (`POST /v10/projects/{id}/env?upsert=true`) with
    /// its targets, branch, comment and custom environments. The 201 answer
    /// lists per-variable failures in `failed[]`: any is an error.
    async fn create_env(&self, var: &EnvVar, value: &str) -> Result<(), VercelError>;
    /// Sets a variable's value (`PATCH /v9/projects/{id}/env/{envId}`).
    async fn edit_env(&self, id: &str, value: &str) -> Result<(), VercelError>;
}

/// Retry settings.
#[derive(Clone, Copy, Debug)]
pub struct Retry {
    pub max_attempts: u32,
    pub base_delay: Duration,
    /// Longest wait honoured, even if `Retry-After` asks for more.
    pub max_delay: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

/// The real client.
pub struct VercelClient {
    http: reqwest::Client,
    cfg: VercelConfig,
    retry: Retry,
}

impl VercelClient {
    pub fn new(cfg: VercelConfig, retry: Retry) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .user_agent(concat!("rollback-guard/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("static client configuration");
        Self { http, cfg, retry }
    }

    fn url(&self, path: &str, query: &[(&str, &str)]) -> Result<url::Url, VercelError> {
        let mut u = self
            .cfg
            .api_base
            .join(path)
            .map_err(|e| VercelError::Decode(e.to_string()))?;
        {
            let mut q = u.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
            if let Some(team) = &self.cfg.team_id {
                q.append_pair("teamId", team);
            }
        }
        Ok(u)
    }

    /// Sends with retries on 429/5xx and transport errors.
    async fn send(
        &self,
        method: reqwest::Method,
        url: url::Url,
        body: Option<Value>,
    ) -> Result<(u16, Value), VercelError> {
        let mut last = String::new();
        for attempt in 0..self.retry.max_attempts {
            let mut req = self
                .http
                .request(method.clone(), url.clone())
                .bearer_auth(self.cfg.token.expose());
            if let Some(b) = &body {
                req = req.json(b);
            }
            let wait = match req.send().await {
                Ok(res) => {
                    let status = res.status().as_u16();
                    let retry_after = res
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_retry_after);
                    let text = res.text().await.unwrap_or_default();
                    let json: Value = if text.is_empty() {
                        Value::Null
                    } else {
                        serde_json::from_str(&text).unwrap_or(Value::Null)
                    };
                    if status < 400 {
                        return Ok((status, json));
                    }
                    let code = json
                        .pointer("/error/code")
                        .and_then(Value::as_str)
                        .unwrap_or("unknown")
                        .to_string();
                    let message = json
                        .pointer("/error/message")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    if status != 429 && status < 500 {
                        return Err(VercelError::Api {
                            status,
                            code,
                            message,
                        });
                    }
                    last = format!("{status} {code}");
                    retry_after.unwrap_or_else(|| self.backoff(attempt))
                }
                Err(e) => {
                    last = e.without_url().to_string();
                    self.backoff(attempt)
                }
            };
            tracing::warn!(attempt = attempt + 1, wait_ms = wait.as_millis() as u64, error = %last, "Vercel API call failed; retrying");
            if attempt + 1 < self.retry.max_attempts {
                tokio::time::sleep(wait.min(self.retry.max_delay)).await;
            }
        }
        tracing::error!(error = %last, "Vercel API: giving up");
        Err(VercelError::GaveUp(self.retry.max_attempts))
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self.retry.base_delay.saturating_mul(1 << attempt.min(10));
        let jitter = Duration::from_millis(rand::random::<u64>() % 100);
        (exp + jitter).min(self.retry.max_delay)
    }
}

/// `Retry-After` as seconds or an HTTP date (RFC 9110).
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate(v.trim())?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs() as i64;
    Some(Duration::from_secs((when - now).max(0) as u64))
}

fn httpdate(s: &str) -> Option<i64> {
    let f = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::PrimitiveDateTime::parse(s, &f)
        .ok()
        .map(|t| t.assume_utc().unix_timestamp())
}

#[async_trait]
impl VercelApi for VercelClient {
    async fn request_rollback(
        &self,
        deployment_id: &str,
        description: &str,
    ) -> Result<(), VercelError> {
        let path = format!(
            "/v9/projects/{}/rollback/{}",
            self.cfg.project_id, deployment_id
        );
        let desc: String = description.chars().take(250).collect();
        let url = self.url(&path, &[("description", &desc)])?;
        self.send(reqwest::Method::POST, url, Some(serde_json::json!({})))
            .await
            .map(|_| ())
    }

    async fn last_alias_request(&self) -> Result<Option<AliasRequest>, VercelError> {
        let url = self.url(&format!("/v9/projects/{}", self.cfg.project_id), &[])?;
        let (_, body) = self.send(reqwest::Method::GET, url, None).await?;
        let Some(r) = body.get("lastAliasRequest").filter(|v| !v.is_null()) else {
            return Ok(None);
        };
        let to = r
            .get("toDeploymentId")
            .and_then(Value::as_str)
            .ok_or_else(|| VercelError::Decode("lastAliasRequest.toDeploymentId".into()))?;
        Ok(Some(AliasRequest {
            from_deployment: r
                .get("fromDeploymentId")
                .and_then(Value::as_str)
                .map(String::from),
            to_deployment: to.to_string(),
            job_status: r
                .get("jobStatus")
                .and_then(Value::as_str)
                .unwrap_or("pending")
                .to_string(),
            requested_at: r.get("requestedAt").and_then(Value::as_i64).unwrap_or(0),
            kind: r
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("rollback")
                .to_string(),
        }))
    }

    async fn production_deployment(&self) -> Result<Option<String>, VercelError> {
        let url = self.url(&format!("/v9/projects/{}", self.cfg.project_id), &[])?;
        let (_, body) = self.send(reqwest::Method::GET, url, None).await?;
        Ok(body
            .pointer("/targets/production/id")
            .and_then(Value::as_str)
            .map(String::from))
    }

    async fn deployment_state(&self, id: &str) -> Result<Option<String>, VercelError> {
        let url = self.url(&format!("/v13/deployments/{id}"), &[])?;
        match self.send(reqwest::Method::GET, url, None).await {
            Ok((_, body)) => Ok(Some(
                body.get("readyState")
                    .and_then(Value::as_str)
                    .ok_or_else(|| VercelError::Decode("readyState".into()))?
                    .to_string(),
            )),
            Err(VercelError::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn list_env(&self) -> Result<Vec<EnvVar>, VercelError> {
        // Listed without the deprecated `decrypt=true`; an encrypted value the
        // list did not decrypt is read from the per-variable endpoint.
        let url = self.url(&format!("/v10/projects/{}/env", self.cfg.project_id), &[])?;
        let (_, body) = self.send(reqwest::Method::GET, url, None).await?;
        let list = body
            .get("envs")
            .and_then(Value::as_array)
            .ok_or_else(|| VercelError::Decode("envs".into()))?;
        let mut out = Vec::with_capacity(list.len());
        for item in list {
            let Some(mut var) = env_from(item) else {
                continue;
            };
            if var.kind == "encrypted" && var.value.is_none() {
                let url = self.url(
                    &format!("/v1/projects/{}/env/{}", self.cfg.project_id, var.id),
                    &[],
                )?;
                let (_, one) = self.send(reqwest::Method::GET, url, None).await?;
                var.value = env_from(&one).and_then(|v| v.value);
            }
            out.push(var);
        }
        Ok(out)
    }

    async fn create_env(&self, var: &EnvVar, value: &str) -> Result<(), VercelError> {
        let url = self.url(
            &format!("/v10/projects/{}/env", self.cfg.project_id),
            &[("upsert", "true")],
        )?;
        let mut body = serde_json::json!({"key": var.key, "value": value, "type": var.kind, "target": var.targets});
        if let Some(b) = &var.git_branch {
            body["gitBranch"] = serde_json::json!(b);
        }
        if let Some(c) = &var.comment {
            body["comment"] = serde_json::json!(c);
        }
        if !var.custom_environment_ids.is_empty() {
            body["customEnvironmentIds"] = serde_json::json!(var.custom_environment_ids);
        }
        let (status, answer) = self.send(reqwest::Method::POST, url, Some(body)).await?;
        match answer.get("failed").and_then(Value::as_array) {
            Some(failed) if !failed.is_empty() => Err(VercelError::Api {
                status,
                code: failed[0]
                    .pointer("/error/code")
                    .and_then(Value::as_str)
                    .unwrap_or("failed")
                    .to_string(),
                message: failed[0]
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("Vercel did not create the variable")
                    .to_string(),
            }),
            _ => Ok(()),
        }
    }

    async fn edit_env(&self, id: &str, value: &str) -> Result<(), VercelError> {
        let url = self.url(
            &format!("/v9/projects/{}/env/{id}", self.cfg.project_id),
            &[],
        )?;
        self.send(
            reqwest::Method::PATCH,
            url,
            Some(serde_json::json!({"value": value})),
        )
        .await
        .map(|_| ())
    }
}

fn env_from(v: &Value) -> Option<EnvVar> {
    let kind = v
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("encrypted")
        .to_string();
    let raw = v.get("value").and_then(Value::as_str).map(String::from);
    // Only values the API says are readable count (filterprojectenvsop.ts:
    // `decrypted` per variable); never a write-only "" or a ciphertext.
    let value = match kind.as_str() {
        "plain" => raw,
        "encrypted" if v.get("decrypted").and_then(Value::as_bool) == Some(true) => raw,
        _ => None,
    };
    let strings = |k: &str| -> Vec<String> {
        match v.get(k) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|t| t.as_str().map(String::from))
                .collect(),
            Some(Value::String(t)) => vec![t.clone()],
            _ => Vec::new(),
        }
    };
    Some(EnvVar {
        id: v.get("id")?.as_str()?.to_string(),
        key: v.get("key")?.as_str()?.to_string(),
        value,
        kind,
        targets: strings("target"),
        git_branch: v.get("gitBranch").and_then(Value::as_str).map(String::from),
        comment: v.get("comment").and_then(Value::as_str).map(String::from),
        custom_environment_ids: strings("customEnvironmentIds"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO),
            "a past date means now"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
