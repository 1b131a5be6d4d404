//! Sentry integration-platform webhooks (`Sentry-Hook-Resource`):
//! `metric_alert` (critical/warning/resolved), `event_alert` (triggered) and
//! `issue` (created, unresolved as regressed/escalating, resolved).

use serde_json::Value;

use super::{str_field, time_or};
use crate::core::clock::Timestamp;
use crate::flows::intake::signal::{AlertSignal, Malformed, Signal};

/// Parses one Sentry delivery. Unknown resources yield no signals.
pub fn parse(resource: &str, body: &[u8], now: Timestamp) -> Result<Vec<Signal>, Malformed> {
    let v: Value = serde_json::from_slice(body).map_err(Malformed::json)?;
    let action =
        str_field(&v, &["action"]).ok_or_else(|| Malformed("missing \"action\"".into()))?;
    let data = v
        .get("data")
        .ok_or_else(|| Malformed("missing \"data\"".into()))?;
    let alert = match resource {
        "metric_alert" => {
            let inc = data
                .get("metric_alert")
                .ok_or_else(|| Malformed("missing data.metric_alert".into()))?;
            let rule_id = inc
                .pointer("/alert_rule/id")
                .map(value_id)
                .unwrap_or_default();
            let inc_id = inc
                .get("id")
                .map(value_id)
                .ok_or_else(|| Malformed("missing data.metric_alert.id".into()))?;
            let (firing, severity) = match action {
                "critical" => (true, "critical"),
                "warning" => (true, "warning"),
                "resolved" => (false, "info"),
                other => return Err(Malformed(format!("unknown metric_alert action {other:?}"))),
            };
            AlertSignal {
                source: "sentry",
                fingerprint: format!("metric_alert:{rule_id}:{inc_id}"),
                // `metric_alert` is the incident; its title can be a generated
                // codename. The alert is its rule (Sentry's metric alert docs).
                name: str_field(inc, &["alert_rule", "name"])
                    .or(str_field(inc, &["title"]))
                    .or(str_field(data, &["description_title"]))
                    .unwrap_or("Sentry metric alert")
                    .to_string(),
                firing,
                severity: severity.into(),
                environment: str_field(inc, &["alert_rule", "environment"]).map(String::from),
                deployment: None,
                at: time_or(inc.get("date_detected").or(inc.get("date_started")), now),
                detail: serde_json::json!({"web_url": data.get("web_url"), "description": data.get("description_text")}),
            }
        }
        "event_alert" => {
            let event = data
                .get("event")
                .ok_or_else(|| Malformed("missing data.event".into()))?;
            let level = str_field(event, &["level"]).unwrap_or("error");
            AlertSignal {
                source: "sentry",
                fingerprint: format!(
                    "issue:{}",
                    event.get("issue_id").map(value_id).unwrap_or_default()
                ),
                name: str_field(data, &["triggered_rule"])
                    .or(str_field(event, &["title"]))
                    .unwrap_or("Sentry issue alert")
                    .to_string(),
                firing: true,
                severity: if level == "fatal" {
                    "critical"
                } else {
                    "warning"
                }
                .into(),
                environment: tag(event, "environment"),
                deployment: None,
                at: time_or(event.get("datetime"), now),
                detail: serde_json::json!({"title": event.get("title"), "release": event.get("release"), "web_url": event.get("web_url")}),
            }
        }
        "issue" => {
            let issue = data
                .get("issue")
                .ok_or_else(|| Malformed("missing data.issue".into()))?;
            let substatus = str_field(issue, &["substatus"]).unwrap_or("");
            let firing = match action {
                "created" => true,
                "unresolved" => matches!(substatus, "regressed" | "escalating"),
                "resolved" | "archived" => false,
                _ => return Ok(Vec::new()),
            };
            let level = str_field(issue, &["level"]).unwrap_or("error");
            AlertSignal {
                source: "sentry",
                fingerprint: format!(
                    "issue:{}",
                    issue.get("id").map(value_id).unwrap_or_default()
                ),
                name: str_field(issue, &["title"])
                    .unwrap_or("Sentry issue")
                    .to_string(),
                firing,
                severity: if level == "fatal" {
                    "critical"
                } else {
                    "warning"
                }
                .into(),
                environment: None,
                deployment: None,
                at: time_or(issue.get("lastSeen"), now),
                detail: serde_json::json!({"short_id": issue.get("shortId"), "substatus": substatus, "web_url": issue.get("web_url")}),
            }
        }
        _ => return Ok(Vec::new()),
    };
    Ok(vec![Signal::Alert(alert)])
}

/// Sentry ids arrive as numbers or strings depending on the resource.
fn value_id(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A tag value from `event.tags` (a list of `[key, value]` pairs).
fn tag(event: &Value, key: &str) -> Option<String> {
    event.get("tags")?.as_array()?.iter().find_map(|pair| {
        let pair = pair.as_array()?;
        (pair.first()?.as_str()? == key).then(|| pair.get(1)?.as_str().map(String::from))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_alerts_are_named_after_their_rule_not_the_incident() {
        let body = br#"{"action":"critical","data":{"metric_alert":{"id":"7","identifier":"7","title":"Brave Otter","status":20,
            "alert_rule":{"id":42,"name":"High error rate","environment":"production"}},
            "description_title":"Critical: High error rate"}}"#;
        let s = parse("metric_alert", body, Timestamp::from_millis(0)).unwrap();
        let Signal::Alert(a) = &s[0] else { panic!() };
        assert_eq!(a.name, "High error rate");
    }
}
