//! The generic source: the app (or anything) posts its own measurements and
//! alerts, signed Standard-Webhooks style.
//!
//! ```json
//! {"environment": "production", "deployment_id": "dpl_…", "at": "2026-11-25T10:00:00Z",
//!  "metrics": {"requests": 120, "errors_5xx": 3, "db_errors": 1, "memory_pct": 71.5,
//!              "latency_ms": [12, 40, 380], "custom": {"checkout_failed": 2}},
//!  "alerts": [{"name": "Queue backlog", "status": "firing", "severity": "critical", "fingerprint": "q1"}]}
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::core::clock::Timestamp;
use crate::core::detect::sketch::LatencySketch;
use crate::core::detect::window::{CUSTOM_PREFIX, DB_ERRORS, ERRORS_5XX, MEMORY_PCT, REQUESTS};
use crate::flows::intake::signal::{AlertSignal, Malformed, MetricBatch, Signal};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    environment: Option<String>,
    deployment_id: Option<String>,
    at: Option<String>,
    #[serde(default)]
    metrics: Option<Metrics>,
    #[serde(default)]
    alerts: Vec<Alert>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Metrics {
    requests: Option<u64>,
    errors_5xx: Option<u64>,
    db_errors: Option<u64>,
    memory_pct: Option<f64>,
    #[serde(default)]
    latency_ms: Vec<f64>,
    #[serde(default)]
    custom: BTreeMap<String, f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Alert {
    name: String,
    #[serde(default = "firing")]
    status: String,
    #[serde(default = "warning")]
    severity: String,
    fingerprint: Option<String>,
    #[serde(default)]
    detail: serde_json::Value,
}

fn firing() -> String {
    "firing".into()
}
fn warning() -> String {
    "warning".into()
}

/// Parses a generic delivery.
pub fn parse(body: &[u8], now: Timestamp) -> Result<Vec<Signal>, Malformed> {
    let p: Payload = serde_json::from_slice(body).map_err(Malformed::json)?;
    let at = match &p.at {
        Some(s) => Timestamp::parse_rfc3339(s)
            .ok_or_else(|| Malformed(format!("\"at\" is not RFC 3339: {s:?}")))?,
        None => now,
    };
    let mut out = Vec::new();
    if let Some(m) = p.metrics {
        if m.errors_5xx.unwrap_or(0) > m.requests.unwrap_or(u64::MAX) {
            return Err(Malformed(
                "metrics.errors_5xx exceeds metrics.requests".into(),
            ));
        }
        if m.latency_ms.iter().any(|v| !v.is_finite() || *v < 0.0) {
            return Err(Malformed(
                "metrics.latency_ms must hold non-negative numbers".into(),
            ));
        }
        if m.memory_pct.is_some_and(|v| !(0.0..=1000.0).contains(&v)) {
            return Err(Malformed("metrics.memory_pct must be a percentage".into()));
        }
        let mut counters = Vec::new();
        for (name, v) in [
            (REQUESTS, m.requests),
            (ERRORS_5XX, m.errors_5xx),
            (DB_ERRORS, m.db_errors),
        ] {
            if let Some(v) = v {
                counters.push((name.to_string(), v as f64));
            }
        }
        if let Some(pct) = m.memory_pct {
            counters.push((MEMORY_PCT.to_string(), pct));
        }
        let mut sketch = LatencySketch::default();
        m.latency_ms.iter().for_each(|v| sketch.add(*v));
        counters.extend(sketch.to_counters());
        for (name, v) in m.custom {
            if !v.is_finite() {
                return Err(Malformed(format!("metrics.custom.{name} is not a number")));
            }
            counters.push((format!("{CUSTOM_PREFIX}{name}"), v));
        }
        out.push(Signal::Metrics(MetricBatch {
            environment: p.environment.clone(),
            deployment: p.deployment_id.clone(),
            at,
            counters,
        }));
    }
    for a in p.alerts {
        let fingerprint = a.fingerprint.unwrap_or_else(|| a.name.clone());
        out.push(Signal::Alert(AlertSignal {
            source: "generic",
            fingerprint,
            name: a.name,
            firing: a.status != "resolved",
            severity: a.severity,
            environment: p.environment.clone(),
            deployment: p.deployment_id.clone(),
            at,
            detail: a.detail,
        }));
    }
    if out.is_empty() {
        return Err(Malformed(
            "nothing to record: send \"metrics\" and/or \"alerts\"".into(),
        ));
    }
    Ok(out)
}
