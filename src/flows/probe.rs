//! `GET /api/cron/probe`: runs every configured probe concurrently, each with
//! its own timeout, and records the outcome against the environment's current
//! deployment: `probe_ok`/`probe_fail` rollup counters and a per-probe state
//! document holding the run of consecutive failures.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::core::clock::Timestamp;
use crate::core::detect::window::{minute_of, PROBE_FAIL, PROBE_OK};
use crate::core::policy::Probe;
use crate::flows::registry;
use crate::store::{Doc, Store, StoreError, StoreResult};

/// Document kind of probe states.
pub const PROBE_KIND: &str = "probe";
/// Largest body a probe reads when it checks `body_contains`.
const MAX_BODY: usize = 256 * 1024;

/// The outcome of one probe run.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeResult {
    pub name: String,
    pub environment: String,
    pub deployment: String,
    pub ok: bool,
    pub status: Option<u16>,
    pub latency_ms: f64,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// Runs one probe (no store access).
pub async fn check(
    client: &reqwest::Client,
    p: &Probe,
) -> (bool, Option<u16>, f64, Option<String>) {
    let method = reqwest::Method::from_bytes(p.method.as_bytes()).unwrap_or(reqwest::Method::GET);
    let started = Instant::now();
    let res = client
        .request(method, &p.url)
        .timeout(p.timeout)
        .header("user-agent", "rollback-guard-probe/1")
        .send()
        .await;
    let outcome = match res {
        Err(e) if e.is_timeout() => (
            None,
            Some(format!(
                "timed out after {}",
                crate::core::duration::format(p.timeout)
            )),
        ),
        // The reason ("connection refused", a DNS failure) is a few sources down.
        Err(e) => (
            None,
            Some(format!(
                "request failed: {}",
                crate::core::cause::chain(&e.without_url())
            )),
        ),
        Ok(r) => {
            let status = r.status().as_u16();
            if status != p.expect_status {
                (
                    Some(status),
                    Some(format!("status {status}, expected {}", p.expect_status)),
                )
            } else if let Some(needle) = &p.body_contains {
                match read_limited(r).await {
                    Ok(body) if body.contains(needle.as_str()) => (Some(status), None),
                    Ok(_) => (
                        Some(status),
                        Some(format!("body does not contain {needle:?}")),
                    ),
                    Err(e) => (Some(status), Some(format!("reading body failed: {e}"))),
                }
            } else {
                (Some(status), None)
            }
        }
    };
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let (status, mut error) = outcome;
    if error.is_none() && latency_ms > p.latency_budget.as_secs_f64() * 1000.0 {
        error = Some(format!(
            "took {latency_ms:.0} ms, budget {}",
            crate::core::duration::format(p.latency_budget)
        ));
    }
    (error.is_none(), status, latency_ms, error)
}

async fn read_limited(mut r: reqwest::Response) -> Result<String, String> {
    let mut buf = Vec::new();
    while let Some(chunk) = r.chunk().await.map_err(|e| e.without_url().to_string())? {
        buf.extend_from_slice(&chunk);
        if buf.len() >= MAX_BODY {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Runs every probe concurrently and records the results.
pub async fn run_all(
    store: &dyn Store,
    client: &reqwest::Client,
    probes: &[Probe],
    now: Timestamp,
) -> StoreResult<Vec<ProbeResult>> {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, p) in probes.iter().enumerate() {
        let (client, p) = (client.clone(), p.clone());
        tasks.spawn(async move { (i, check(&client, &p).await) });
    }
    let mut outcomes = vec![None; probes.len()];
    while let Some(joined) = tasks.join_next().await {
        let (i, outcome) =
            joined.map_err(|e| StoreError::Unavailable(format!("probe task failed: {e}")))?;
        outcomes[i] = Some(outcome);
    }
    let mut results = Vec::with_capacity(probes.len());
    for (p, outcome) in probes.iter().zip(outcomes) {
        let (ok, status, latency_ms, error) = outcome.expect("every probe task reports");
        let deployment = registry::current(store, &p.environment)
            .await?
            .map_or_else(|| "unknown".to_string(), |c| c.deployment_id);
        let r = ProbeResult {
            name: p.name.clone(),
            environment: p.environment.clone(),
            deployment,
            ok,
            status,
            latency_ms,
            error,
        };
        record(store, &r, now).await?;
        results.push(r);
    }
    Ok(results)
}

async fn record(store: &dyn Store, r: &ProbeResult, now: Timestamp) -> StoreResult<()> {
    let counter = if r.ok { PROBE_OK } else { PROBE_FAIL };
    store
        .add_rollup(
            &r.environment,
            &r.deployment,
            minute_of(now.as_millis()),
            &[(counter.to_string(), 1.0)],
        )
        .await?;
    let id = format!("{}:{}", r.name, r.deployment);
    crate::store::upsert_doc(store, PROBE_KIND, &id, |existing| {
        let previous_failures = existing
            .and_then(|d| d.body.get("consecutive_failures")?.as_u64())
            .unwrap_or(0);
        let consecutive = if r.ok { 0 } else { previous_failures + 1 };
        Doc {
            kind: PROBE_KIND.into(),
            id: id.clone(),
            version: 0,
            scope: r.environment.clone(),
            status: if r.ok { "ok" } else { "failing" }.into(),
            updated_at: now,
            body: json!({
                "probe": r.name, "deployment": r.deployment, "consecutive_failures": consecutive,
                "last_status": r.status, "last_latency_ms": r.latency_ms, "last_error": r.error,
            }),
        }
    })
    .await
}

/// The longest run of consecutive failures among the environment's probes
/// against `deployment`.
pub async fn consecutive_failures(
    store: &dyn Store,
    environment: &str,
    deployment: &str,
) -> StoreResult<u32> {
    let filter = crate::store::DocFilter {
        scope: Some(environment.into()),
        status: None,
    };
    let docs = store.list_docs(PROBE_KIND, &filter, 500).await?;
    Ok(docs
        .iter()
        .filter(|d| d.body.get("deployment").and_then(Value::as_str) == Some(deployment))
        .filter_map(|d| d.body.get("consecutive_failures")?.as_u64())
        .max()
        .unwrap_or(0) as u32)
}

/// JSON for the cron response.
pub fn to_json(results: &[ProbeResult]) -> Value {
    json!(results
        .iter()
        .map(|r| json!({"name": r.name, "environment": r.environment, "deployment": r.deployment, "ok": r.ok,
                        "status": r.status, "latency_ms": (r.latency_ms * 10.0).round() / 10.0, "error": r.error}))
        .collect::<Vec<_>>())
}

/// Default probe client: no redirects followed silently beyond 3, rustls, short connect timeout.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .redirect(reqwest::redirect::Policy::limited(3))
        .build()
        .expect("static client configuration")
}
