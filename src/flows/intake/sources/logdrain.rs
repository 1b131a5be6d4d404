//! Vercel log drains (JSON array or NDJSON of log entries). Request outcomes
//! become per-deployment, per-minute counters: `requests`, `errors_5xx`
//! (status ≥ 500, or -1 when the function crashed before answering) and
//! latency buckets when the entry carries a duration. A request that logs
//! several lines is counted once per batch (by `requestId`), at its worst status.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use crate::core::clock::Timestamp;
use crate::core::detect::sketch::LatencySketch;
use crate::core::detect::window::{minute_of, ERRORS_5XX, REQUESTS};
use crate::flows::intake::signal::{Malformed, MetricBatch, Signal};

struct Request {
    deployment: String,
    environment: Option<String>,
    minute: i64,
    status: i64,
    duration_ms: Option<f64>,
}

/// Requests of one deployment in one minute.
#[derive(Default)]
struct Group {
    requests: u64,
    errors: u64,
    latency: LatencySketch,
}

fn entries(body: &[u8]) -> Result<Vec<Value>, Malformed> {
    let text = std::str::from_utf8(body).map_err(|_| Malformed("body is not UTF-8".into()))?;
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        return serde_json::from_str(trimmed).map_err(Malformed::json);
    }
    trimmed
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| Malformed(format!("line {}: invalid JSON: {e}", i + 1)))
        })
        .collect()
}

fn status_of(e: &Value) -> Option<i64> {
    e.pointer("/proxy/statusCode")
        .and_then(Value::as_i64)
        .or_else(|| e.get("statusCode").and_then(Value::as_i64))
}

fn duration_of(e: &Value) -> Option<f64> {
    ["/proxy/duration", "/durationMs", "/duration"]
        .iter()
        .find_map(|p| e.pointer(p).and_then(Value::as_f64))
}

/// Parses a drain delivery into metric batches (one per deployment and minute).
pub fn parse(body: &[u8], now: Timestamp) -> Result<Vec<Signal>, Malformed> {
    let mut requests: HashMap<String, Request> = HashMap::new();
    for (i, e) in entries(body)?.into_iter().enumerate() {
        let (Some(status), Some(deployment)) =
            (status_of(&e), e.get("deploymentId").and_then(Value::as_str))
        else {
            continue;
        };
        let at = e
            .get("timestamp")
            .and_then(Value::as_i64)
            .unwrap_or(now.as_millis());
        let key = e
            .get("requestId")
            .and_then(Value::as_str)
            .map_or_else(|| format!("#{i}"), String::from);
        let r = requests.entry(key).or_insert_with(|| Request {
            deployment: deployment.to_string(),
            environment: e
                .get("environment")
                .and_then(Value::as_str)
                .map(String::from),
            minute: minute_of(at),
            status,
            duration_ms: None,
        });
        // -1 (no response) is the worst outcome of all.
        if status == -1 || (r.status != -1 && status > r.status) {
            r.status = status;
        }
        r.duration_ms = r.duration_ms.or(duration_of(&e));
    }
    let mut groups: BTreeMap<(String, Option<String>, i64), Group> = BTreeMap::new();
    for r in requests.into_values() {
        let g = groups
            .entry((r.deployment, r.environment, r.minute))
            .or_default();
        g.requests += 1;
        g.errors += u64::from(r.status >= 500 || r.status == -1);
        if let Some(d) = r.duration_ms {
            g.latency.add(d);
        }
    }
    Ok(groups
        .into_iter()
        .map(|((deployment, environment, minute), g)| {
            let mut counters = vec![
                (REQUESTS.to_string(), g.requests as f64),
                (ERRORS_5XX.to_string(), g.errors as f64),
            ];
            counters.extend(g.latency.to_counters());
            Signal::Metrics(MetricBatch {
                environment,
                deployment: Some(deployment),
                at: Timestamp::from_millis(minute * 60_000),
                counters,
            })
        })
        .collect())
}
