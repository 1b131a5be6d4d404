//! Alert intake: `POST /api/alerts?source=…`. Each delivery is verified on
//! its raw bytes, parsed, deduplicated (delivery id or body hash), and stored
//! before the answer: 202 accepted, 200 duplicate, 400 malformed, 401 bad
//! signature, 413 too large, 503 store trouble (so the sender retries; a
//! claim taken for a failed delivery is withdrawn, so the retry is not
//! mistaken for a duplicate).

pub mod batch;
mod recent;
pub mod signal;
pub mod sources;
pub mod unmapped;
pub mod verify;

use std::time::Duration;

use http::HeaderMap;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::core::clock::Timestamp;
use crate::core::detect::window::minute_of;
use crate::flows::registry;
use crate::store::{AlertWrite, JsonText, RollupAdd, Store, StoreResult};
use signal::{AlertSignal, MetricBatch, Signal};
use unmapped::Unmapped;
use verify::VerifyError;

/// Webhook verification secrets, one per alert source.
#[derive(Clone, Debug, Default)]
pub struct AlertSecrets {
    pub sentry_client_secret: Option<crate::core::secret::Secret>,
    pub vercel_webhook_secret: Option<crate::core::secret::Secret>,
    pub vercel_log_drain_secret: Option<crate::core::secret::Secret>,
    /// Token Vercel asks a drain endpoint to echo in `x-vercel-verify` (not a secret).
    pub vercel_drain_verify: Option<String>,
    pub grafana_secret: Option<crate::core::secret::Secret>,
    /// Header Grafana puts its signed timestamp in, when one is configured there.
    pub grafana_timestamp_header: Option<String>,
    pub alertmanager_token: Option<crate::core::secret::Secret>,
    pub generic_secret: Option<crate::core::secret::Secret>,
}

/// How long a delivery id is remembered for dedupe.
pub const DEDUPE_TTL: Duration = Duration::from_secs(24 * 3600);
/// Document kind of alert states.
pub use crate::store::ALERT_KIND;

/// A supported sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Sentry,
    Alertmanager,
    Grafana,
    Vercel,
    LogDrain,
    Generic,
}

impl Source {
    pub fn parse(s: &str) -> Option<Source> {
        Some(match s {
            "sentry" => Source::Sentry,
            "alertmanager" => Source::Alertmanager,
            "grafana" => Source::Grafana,
            "vercel" => Source::Vercel,
            "logdrain" => Source::LogDrain,
            "generic" => Source::Generic,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Source::Sentry => "sentry",
            Source::Alertmanager => "alertmanager",
            Source::Grafana => "grafana",
            Source::Vercel => "vercel",
            Source::LogDrain => "logdrain",
            Source::Generic => "generic",
        }
    }
}

fn header<'a>(h: &'a HeaderMap, name: &'static str) -> Result<&'a str, VerifyError> {
    h.get(name)
        .ok_or(VerifyError::MissingHeader(name))?
        .to_str()
        .map_err(|_| VerifyError::MalformedHeader(name))
}

/// Checks the delivery's authenticity for its source.
pub fn authenticate(
    source: Source,
    secrets: &AlertSecrets,
    h: &HeaderMap,
    body: &[u8],
    now: Timestamp,
) -> Result<(), VerifyError> {
    match source {
        Source::Sentry => {
            let s = secrets
                .sentry_client_secret
                .as_ref()
                .ok_or(VerifyError::NotConfigured("SENTRY_CLIENT_SECRET"))?;
            verify::hmac_sha256_hex(
                s.expose().as_bytes(),
                &[body],
                header(h, "sentry-hook-signature")?,
            )
        }
        Source::Vercel => {
            let s = secrets
                .vercel_webhook_secret
                .as_ref()
                .ok_or(VerifyError::NotConfigured("VERCEL_WEBHOOK_SECRET"))?;
            verify::hmac_sha1_hex(
                s.expose().as_bytes(),
                body,
                header(h, "x-vercel-signature")?,
            )?;
            // Vercel signs the body only, so a captured delivery stays valid
            // forever; its signed `createdAt` bounds replays to the dedupe window.
            match sources::vercel::created_at(body) {
                Some(at)
                    if now.as_millis().saturating_sub(at.as_millis())
                        > DEDUPE_TTL.as_millis() as i64 =>
                {
                    Err(VerifyError::Replayed(DEDUPE_TTL.as_secs() / 3600))
                }
                _ => Ok(()),
            }
        }
        Source::LogDrain => {
            let s = secrets
                .vercel_log_drain_secret
                .as_ref()
                .ok_or(VerifyError::NotConfigured("VERCEL_LOG_DRAIN_SECRET"))?;
            verify::hmac_sha1_hex(
                s.expose().as_bytes(),
                body,
                header(h, "x-vercel-signature")?,
            )
        }
        Source::Grafana => {
            let s = secrets
                .grafana_secret
                .as_ref()
                .ok_or(VerifyError::NotConfigured("GRAFANA_WEBHOOK_SECRET"))?;
            let ts = match &secrets.grafana_timestamp_header {
                Some(name) => Some(
                    h.get(name.as_str())
                        .and_then(|v| v.to_str().ok())
                        .ok_or(VerifyError::MissingHeader("timestamp"))?,
                ),
                None => None,
            };
            verify::grafana(
                s.expose().as_bytes(),
                body,
                header(h, "x-grafana-alerting-signature")?,
                ts,
                now,
            )
        }
        Source::Alertmanager => {
            let s = secrets
                .alertmanager_token
                .as_ref()
                .ok_or(VerifyError::NotConfigured("ALERTMANAGER_TOKEN"))?;
            let presented = header(h, "authorization")?
                .strip_prefix("Bearer ")
                .ok_or(VerifyError::MalformedHeader("authorization"))?;
            if s.matches(presented.as_bytes()) {
                Ok(())
            } else {
                Err(VerifyError::BadSignature)
            }
        }
        Source::Generic => {
            let s = secrets
                .generic_secret
                .as_ref()
                .ok_or(VerifyError::NotConfigured("GENERIC_WEBHOOK_SECRET"))?;
            verify::standard_webhooks(
                s.expose(),
                header(h, "webhook-id")?,
                header(h, "webhook-timestamp")?,
                header(h, "webhook-signature")?,
                body,
                now,
            )
        }
    }
}

/// The dedupe key: the sender's delivery id when it has one, else the body hash.
pub fn dedupe_key(source: Source, h: &HeaderMap, body: &[u8]) -> String {
    let id = match source {
        Source::Generic => h
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .map(String::from),
        Source::Vercel => sources::vercel::delivery_id(body),
        _ => None,
    };
    id.unwrap_or_else(|| body_key(body))
}

/// `sha256:` and the body's SHA-256 in lowercase hex, written straight
/// into one string (intake keys every Alertmanager delivery this way).
fn body_key(body: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut key = String::with_capacity(7 + 64);
    key.push_str("sha256:");
    for b in Sha256::digest(body) {
        key.push(char::from(HEX[usize::from(b >> 4)]));
        key.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    key
}

/// Parses a verified body.
pub fn parse(
    source: Source,
    h: &HeaderMap,
    body: &[u8],
    now: Timestamp,
) -> Result<Vec<Signal>, signal::Malformed> {
    match source {
        Source::Sentry => {
            let resource = h
                .get("sentry-hook-resource")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            sources::sentry::parse(resource, body, now)
        }
        Source::Alertmanager => sources::alertmanager::parse("alertmanager", body, now),
        Source::Grafana => sources::alertmanager::parse("grafana", body, now),
        Source::Vercel => sources::vercel::parse(body, now),
        Source::LogDrain => sources::logdrain::parse(body, now),
        Source::Generic => sources::generic::parse(body, now),
    }
}

/// Stores every signal of one delivery (see [`record_delivery`]; without a
/// delivery key, for signals that are not retried).
pub async fn record(store: &dyn Store, signals: &[Signal], now: Timestamp) -> StoreResult<()> {
    record_delivery(store, None, signals, now, None)
        .await
        .map(|_| ())
}

/// What one delivery adds, resolved against the deployment registry and
/// the policy's default environment, before anything is written.
#[derive(Debug, Default)]
pub struct Prepared {
    pub rollups: Vec<RollupAdd>,
    pub alerts: Vec<AlertWrite>,
    pub deployments: Vec<signal::DeploymentEvent>,
    /// Signals that count nowhere, once per signal and reason.
    pub unmapped: Vec<Unmapped>,
}

/// Resolves a delivery's signals (reads only). Signals without an
/// environment count in `default_env` if given; what counts nowhere is
/// listed (see [`unmapped`]).
pub async fn prepare(
    store: &dyn Store,
    signals: &[Signal],
    default_env: Option<&str>,
) -> StoreResult<Prepared> {
    let mut p = Prepared::default();
    for s in signals {
        match s {
            Signal::Deployment(ev) => p.deployments.push(ev.clone()),
            Signal::Metrics(m) => p
                .rollups
                .push(rollup_of(store, m, default_env, &mut p.unmapped).await?),
            Signal::Alert(a) => {
                let env = a.environment.as_deref().or(default_env);
                if env.is_none() {
                    p.unmapped.push(Unmapped::no_environment(&a.name));
                }
                p.alerts.push(alert_write(a, env.unwrap_or("unknown")));
            }
        }
    }
    // One report per signal and reason, however many minutes it spans.
    let mut seen = std::collections::BTreeSet::new();
    p.unmapped
        .retain(|u| seen.insert((u.reason, u.signal.clone())));
    Ok(p)
}

/// Stores every signal of one delivery so that a retry after a failure
/// never counts twice: deployments and alerts are upserts by id, and all of
/// the delivery's counters are added in one atomic write together with a
/// once-claim on `key` (its dedupe key). A retry whose counters already
/// landed skips them; one whose counters did not land adds them whole.
/// Deliveries without deployment events take the batched path instead
/// ([`batch`]: one transaction for many deliveries).
pub async fn record_delivery(
    store: &dyn Store,
    key: Option<&str>,
    signals: &[Signal],
    now: Timestamp,
    default_env: Option<&str>,
) -> StoreResult<Vec<Unmapped>> {
    let p = prepare(store, signals, default_env).await?;
    for ev in &p.deployments {
        registry::apply_event(store, ev).await?;
        store
            .append_audit(crate::core::audit::AuditEntry {
                at: now,
                actor: "webhook:vercel".into(),
                action: "deployment_event".into(),
                subject: ev.id.clone(),
                detail: json!({"event": ev.event, "environment": ev.environment, "state": ev.state.as_str()}),
            })
            .await?;
    }
    for a in &p.alerts {
        crate::store::upsert_doc(store, ALERT_KIND, &a.id, |existing| a.apply(existing, now))
            .await?;
    }
    match key {
        Some(key) if !p.rollups.is_empty() => {
            store
                .add_rollups_once(ROLLUP_SCOPE, key, &p.rollups, now, DEDUPE_TTL)
                .await?;
        }
        _ => {
            for a in &p.rollups {
                store
                    .add_rollup(&a.environment, &a.deployment, a.minute, &a.values)
                    .await?;
            }
        }
    }
    Ok(p.unmapped)
}

/// [`record_delivery`] at most once per dedupe `key`: claims it in `scope`
/// first (`Ok(None)`: a duplicate, nothing recorded) and, if recording
/// fails, withdraws the claim so the sender's retry is recorded. For
/// deliveries that must go one at a time (deployment events: the registry
/// is compare-and-set per deployment), not through the batched path.
pub async fn record_delivery_once(
    store: &dyn Store,
    scope: &str,
    key: &str,
    signals: &[Signal],
    now: Timestamp,
    default_env: Option<&str>,
) -> StoreResult<Option<Vec<Unmapped>>> {
    if !store.claim_once(scope, key, now, DEDUPE_TTL).await? {
        return Ok(None);
    }
    match record_delivery(store, Some(key), signals, now, default_env).await {
        Ok(unmapped) => Ok(Some(unmapped)),
        Err(e) => {
            if let Err(release) = store.release_claim(scope, key).await {
                tracing::error!(error = %release, "could not withdraw the dedupe claim; a retry of this delivery will be dropped");
            }
            Err(e)
        }
    }
}

/// Claim scope of deliveries whose counters were added.
const ROLLUP_SCOPE: &str = crate::store::INGEST_ROLLUP_SCOPE;

/// Where a metric batch counts: its environment and deployment (from the
/// registry when the sender did not say), and its minute. A batch without an
/// environment counts in `default_env`, else under `unknown`; either way one
/// that names no known deployment is reported.
async fn rollup_of(
    store: &dyn Store,
    m: &MetricBatch,
    default_env: Option<&str>,
    unmapped: &mut Vec<Unmapped>,
) -> StoreResult<RollupAdd> {
    let fallback = |unmapped: &mut Vec<Unmapped>, what: &str| match default_env {
        Some(env) => env.to_string(),
        None => {
            unmapped.push(Unmapped::no_environment(what));
            "unknown".to_string()
        }
    };
    let (environment, deployment) = match (&m.environment, &m.deployment) {
        (Some(env), Some(dep)) => {
            if store.deployment(dep).await?.is_none() {
                unmapped.push(Unmapped::unregistered_deployment(dep, env));
            }
            (env.clone(), dep.clone())
        }
        (None, Some(dep)) => match store.deployment(dep).await? {
            Some(d) => (d.environment, dep.clone()),
            None => {
                let env = fallback(unmapped, &format!("metrics of {dep}"));
                unmapped.push(Unmapped::unregistered_deployment(dep, &env));
                (env, dep.clone())
            }
        },
        (env, None) => {
            let env = match env {
                Some(e) => e.clone(),
                None => fallback(unmapped, "metrics"),
            };
            let dep = match registry::current(store, &env).await? {
                Some(c) => c.deployment_id,
                None => {
                    unmapped.push(Unmapped::unregistered_deployment("(current)", &env));
                    "unknown".to_string()
                }
            };
            (env, dep)
        }
    };
    Ok(RollupAdd {
        environment,
        deployment,
        minute: minute_of(m.at.as_millis()),
        values: m.counters.clone(),
    })
}

fn alert_write(a: &AlertSignal, environment: &str) -> AlertWrite {
    let body = AlertBody {
        deployment: a.deployment.as_deref(),
        detail: &a.detail,
        name: &a.name,
        severity: &a.severity,
        source: a.source,
    };
    AlertWrite {
        id: format!("{}:{}", a.source, a.fingerprint),
        environment: environment.into(),
        firing: a.firing,
        at: a.at.as_millis(),
        // Strings and a JSON value: serde_json fails only on a map with
        // keys that are not strings, which a `Value` cannot hold.
        body: JsonText::of(&body).expect("an alert body serialises"),
    }
}

/// An alert write's body, written straight from the signal as JSON text
/// (fields in the order the stored states have always had: by name).
#[derive(serde::Serialize)]
struct AlertBody<'a> {
    deployment: Option<&'a str>,
    detail: &'a serde_json::Value,
    name: &'a str,
    severity: &'a str,
    source: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Claims outlive deploys: a retry reaching the next version must get
    /// the same key.
    #[test]
    fn a_body_key_is_sha256_in_lowercase_hex() {
        assert_eq!(
            body_key(b"abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let body = br#"{"alerts":[{"status":"firing"}]}"#;
        assert_eq!(
            dedupe_key(Source::Alertmanager, &HeaderMap::new(), body),
            format!("sha256:{}", hex::encode(Sha256::digest(body)))
        );
    }

    /// The body written as text is the one intake stored before, byte for
    /// byte (the JSON object of these fields, keys by name).
    #[test]
    fn an_alert_body_is_written_as_its_json_object_was() {
        let a = AlertSignal {
            source: "alertmanager",
            fingerprint: "f1".into(),
            name: "Disk \"full\"".into(),
            firing: true,
            severity: "critical".into(),
            environment: None,
            deployment: Some("dpl_1".into()),
            at: Timestamp::from_millis(7),
            detail: json!({"summary": "s", "group_key": "g", "generator_url": ""}),
        };
        let w = alert_write(&a, "production");
        let before = json!({
            "source": a.source, "name": a.name, "severity": a.severity,
            "deployment": a.deployment, "detail": a.detail,
        });
        assert_eq!(w.body.as_str(), before.to_string());
        assert_eq!(w.body.to_value(), before);
        assert_eq!((w.id.as_str(), w.at), ("alertmanager:f1", 7));
    }
}
