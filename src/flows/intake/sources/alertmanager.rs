//! Prometheus Alertmanager webhook (`version: "4"`) and Grafana's
//! Alertmanager-style payload. One signal per alert, keyed by its fingerprint.

use serde::de::{Deserializer, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use crate::core::clock::Timestamp;
use crate::flows::intake::signal::{AlertSignal, Malformed, Signal};

#[derive(Deserialize)]
struct Payload<'a> {
    #[serde(default, borrow)]
    alerts: Vec<Alert<'a>>,
    #[serde(default, rename = "groupKey", borrow)]
    group_key: Text<'a>,
}

#[derive(Deserialize)]
struct Alert<'a> {
    #[serde(default, borrow)]
    status: Text<'a>,
    #[serde(default, borrow)]
    labels: BTreeMap<Text<'a>, Text<'a>>,
    #[serde(default, borrow)]
    annotations: BTreeMap<Text<'a>, Text<'a>>,
    #[serde(default, rename = "startsAt", borrow)]
    starts_at: Option<&'a RawValue>,
    /// When a resolved alert ended (firing alerts carry the zero time).
    #[serde(default, rename = "endsAt", borrow)]
    ends_at: Option<&'a RawValue>,
    #[serde(default, borrow)]
    fingerprint: Text<'a>,
    #[serde(default, rename = "generatorURL", borrow)]
    generator_url: Text<'a>,
}

/// A JSON string, borrowed from the body unless it holds escapes: a
/// delivery is parsed without a copy of each label (Alertmanager posts
/// every notification; this parser runs once per delivered alert).
#[derive(Default, PartialEq, Eq, PartialOrd, Ord)]
struct Text<'a>(Cow<'a, str>);

impl std::borrow::Borrow<str> for Text<'_> {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(TextVisitor).map(Text)
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// A time field's value: an RFC 3339 string, or anything else, which is
/// no time (senders disagree on precision and on what "no end" looks like).
fn time_of(v: &RawValue) -> Option<Timestamp> {
    let text: Text = serde_json::from_str(v.get()).ok()?;
    Timestamp::parse_rfc3339(&text.0)
}

/// Parses an Alertmanager or Grafana delivery; `source` names it in signals.
pub fn parse(source: &'static str, body: &[u8], now: Timestamp) -> Result<Vec<Signal>, Malformed> {
    let p: Payload = serde_json::from_slice(body).map_err(Malformed::json)?;
    if p.alerts.is_empty() {
        return Err(Malformed("no alerts in the payload".into()));
    }
    let group_key = &p.group_key.0;
    p.alerts
        .into_iter()
        .map(|a| {
            let fingerprint = if a.fingerprint.0.is_empty() {
                // Older senders: identity is the label set.
                a.labels
                    .iter()
                    .map(|(k, v)| format!("{}={}", k.0, v.0))
                    .collect::<Vec<_>>()
                    .join(",")
            } else {
                a.fingerprint.0.into_owned()
            };
            let label = |keys: &[&str]| {
                keys.iter()
                    .find_map(|k| a.labels.get(*k))
                    .map(|v| v.0.to_string())
            };
            let annotation = |k: &str| a.annotations.get(k).map(|v| &*v.0);
            let resolved = a.status.0 == "resolved";
            Ok(Signal::Alert(AlertSignal {
                source,
                fingerprint,
                name: label(&["alertname"]).unwrap_or_else(|| "unnamed alert".into()),
                firing: !resolved,
                severity: label(&["severity"]).unwrap_or_else(|| "warning".into()),
                environment: label(&["environment", "env"]),
                deployment: label(&["deployment_id", "deployment"]),
                at: match (resolved, a.ends_at) {
                    (true, Some(end)) => time_of(end).unwrap_or(now),
                    _ => a.starts_at.and_then(time_of).unwrap_or(now),
                },
                detail: serde_json::json!({
                    "summary": annotation("summary").or(annotation("description")),
                    "group_key": group_key,
                    "generator_url": a.generator_url.0,
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

    #[test]
    fn labels_with_escapes_and_times_of_any_shape_parse_as_before() {
        let now = Timestamp::from_millis(5);
        // Escaped strings are decoded (the owned path); the identity of an
        // alert without a fingerprint is its sorted label set.
        let body = br#"{"groupKey":"g\"1","alerts":[{"status":"firing",
            "labels":{"severity":"crit\u0069cal","alertname":"Disk \"full\"","env":"staging"},
            "annotations":{"description":"d\n2"},"startsAt":{"not":["a","time"]}}]}"#;
        let s = parse("grafana", body, now).unwrap();
        let Signal::Alert(a) = &s[0] else { panic!() };
        assert_eq!(a.name, "Disk \"full\"");
        assert_eq!(a.severity, "critical");
        assert_eq!(a.environment.as_deref(), Some("staging"));
        assert_eq!(
            a.fingerprint,
            "alertname=Disk \"full\",env=staging,severity=critical"
        );
        assert_eq!(a.at, now);
        assert_eq!(a.detail["summary"], "d\n2");
        assert_eq!(a.detail["group_key"], "g\"1");
        // A resolution without an end is dated by its start; one whose end
        // is not a time, by its arrival.
        let start = "2026-11-25T10:00:00Z";
        for (ends, want) in [
            ("", Timestamp::parse_rfc3339(start).unwrap()),
            (r#","endsAt":7"#, now),
            (
                r#","endsAt":null"#,
                Timestamp::parse_rfc3339(start).unwrap(),
            ),
        ] {
            let body = format!(
                r#"{{"alerts":[{{"status":"resolved","labels":{{}},"startsAt":"{start}"{ends},"fingerprint":"f"}}]}}"#
            );
            let s = parse("alertmanager", body.as_bytes(), now).unwrap();
            let Signal::Alert(a) = &s[0] else { panic!() };
            assert_eq!(a.at, want, "{ends}");
        }
        // Labels must be strings, as before.
        let body = br#"{"alerts":[{"labels":{"alertname":5}}]}"#;
        assert!(parse("alertmanager", body, now).is_err());
    }
}
