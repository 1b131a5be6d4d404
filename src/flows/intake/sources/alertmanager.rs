//! Prometheus Alertmanager webhook (`version: "4"`) and Grafana's
//! Alertmanager-style payload. One signal per alert, keyed by its fingerprint.

use serde::Deserialize;
use std::collections::BTreeMap;

use super::time_or;
use crate::core::clock::Timestamp;
use crate::flows::intake::signal::{AlertSignal, Malformed, Signal};

#[derive(Deserialize)]
struct Payload {
    #[serde(default)]
    alerts: Vec<Alert>,
    #[serde(default, rename = "groupKey")]
    group_key: String,
}

#[derive(Deserialize)]
struct Alert {
    #[serde(default)]
    status: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default, rename = "startsAt")]
    starts_at: Option<serde_json::Value>,
    /// When a resolved alert ended (firing alerts carry the zero time).
    #[serde(default, rename = "endsAt")]
    ends_at: Option<serde_json::Value>,
    #[serde(default)]
    fingerprint: String,
    #[serde(default, rename = "generatorURL")]
    generator_url: String,
}

/// Parses an Alertmanager or Grafana delivery; `source` names it in signals.
pub fn parse(source: &'static str, body: &[u8], now: Timestamp) -> Result<Vec<Signal>, Malformed> {
    let p: Payload = serde_json::from_slice(body).map_err(Malformed::json)?;
    if p.alerts.is_empty() {
        return Err(Malformed("no alerts in the payload".into()));
    }
    p.alerts
        .into_iter()
        .map(|a| {
            let fingerprint = if a.fingerprint.is_empty() {
                // Older senders: identity is the label set.
                a.labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            } else {
                a.fingerprint
            };
            let label = |keys: &[&str]| keys.iter().find_map(|k| a.labels.get(*k)).cloned();
            Ok(Signal::Alert(AlertSignal {
                source,
                fingerprint,
                name: label(&["alertname"]).unwrap_or_else(|| "unnamed alert".into()),
                firing: a.status != "resolved",
                severity: label(&["severity"]).unwrap_or_else(|| "warning".into()),
                environment: label(&["environment", "env"]),
                deployment: label(&["deployment_id", "deployment"]),
                at: if a.status == "resolved" {
                    time_or(a.ends_at.as_ref().or(a.starts_at.as_ref()), now)
                } else {
                    time_or(a.starts_at.as_ref(), now)
                },
                detail: serde_json::json!({
                    "summary": a.annotations.get("summary").or(a.annotations.get("description")),
                    "group_key": p.group_key,
                    "generator_url": a.generator_url,
                }),
            }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resolution_is_dated_by_its_end_not_its_start() {
        let body = br#"{"status":"resolved","alerts":[{"status":"resolved","labels":{"alertname":"X","environment":"production"},
            "startsAt":"2026-11-25T10:00:00Z","endsAt":"2026-11-25T10:07:00Z","fingerprint":"f1"}]}"#;
        let s = parse("alertmanager", body, Timestamp::from_millis(0)).unwrap();
        let Signal::Alert(a) = &s[0] else { panic!() };
        assert!(!a.firing);
        assert_eq!(
            a.at,
            Timestamp::parse_rfc3339("2026-11-25T10:07:00Z").unwrap()
        );
        // Firing alerts carry the zero time as endsAt: their time is the start.
        let body = br#"{"status":"firing","alerts":[{"status":"firing","labels":{"alertname":"X"},
            "startsAt":"2026-11-25T10:00:00Z","endsAt":"0001-01-01T00:00:00Z","fingerprint":"f1"}]}"#;
        let s = parse("alertmanager", body, Timestamp::from_millis(0)).unwrap();
        let Signal::Alert(a) = &s[0] else { panic!() };
        assert_eq!(
            a.at,
            Timestamp::parse_rfc3339("2026-11-25T10:00:00Z").unwrap()
        );
    }
}
