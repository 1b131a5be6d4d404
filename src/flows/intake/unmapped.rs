//! Signals that could not be attributed: an alert or metric batch without an
//! environment (and no `signals.default_environment`), and metrics for a
//! deployment the registry has never seen (deployments come from Vercel's
//! deployment webhooks). They are still stored, but count nowhere until
//! mapped, so each one is reported: in the intake answer, and counted per
//! source and reason for health and the dashboard (last 24 h).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::core::clock::Timestamp;
use crate::core::detect::window::minute_of;
use crate::store::{Store, StoreResult};

/// Pseudo-environment and deployment the counts are kept under.
const ENVIRONMENT: &str = "_intake";
const DEPLOYMENT: &str = "_unmapped";

/// One signal of a delivery that counts nowhere, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Unmapped {
    /// `no_environment` or `unregistered_deployment`.
    pub reason: &'static str,
    /// The alert's name or the deployment's id.
    pub signal: String,
    /// What to do about it.
    pub detail: String,
}

impl Unmapped {
    pub fn no_environment(signal: impl Into<String>) -> Self {
        Self {
            reason: "no_environment",
            signal: signal.into(),
            detail: "no environment (Alertmanager/Grafana label environment or env, Sentry's environment tag, generic \"environment\") and no signals.default_environment in the policy: stored under \"unknown\", counted nowhere".into(),
        }
    }

    pub fn unregistered_deployment(deployment: &str, environment: &str) -> Self {
        Self {
            reason: "unregistered_deployment",
            signal: deployment.to_string(),
            detail: format!("{deployment} is not in the deployment registry (deployments come from Vercel deployment webhooks): its metrics are stored under {environment} but not evaluated until Vercel reports it"),
        }
    }
}

/// Counts a delivery's unmapped signals, per `source:reason`.
pub async fn count(
    store: &dyn Store,
    source: &str,
    unmapped: &[Unmapped],
    now: Timestamp,
) -> StoreResult<()> {
    if unmapped.is_empty() {
        return Ok(());
    }
    let values: Vec<(String, f64)> = unmapped
        .iter()
        .map(|u| (format!("{source}:{}", u.reason), 1.0))
        .collect();
    store
        .add_rollup(ENVIRONMENT, DEPLOYMENT, minute_of(now.as_millis()), &values)
        .await
}

/// `source:reason` → signals in the last 24 hours.
pub async fn last_day(store: &dyn Store, now: Timestamp) -> StoreResult<BTreeMap<String, u64>> {
    let to = minute_of(now.as_millis()) + 1;
    let rows = store
        .rollups(ENVIRONMENT, DEPLOYMENT, to - 24 * 60, to)
        .await?;
    let mut out = BTreeMap::new();
    for r in rows {
        *out.entry(r.name).or_insert(0) += r.value as u64;
    }
    Ok(out)
}
