//! What intake turns a delivery into, whatever the source.

use crate::core::clock::Timestamp;
use crate::store::DeploymentState;

/// One fact learned from a delivery.
#[derive(Clone, Debug, PartialEq)]
pub enum Signal {
    Alert(AlertSignal),
    Deployment(DeploymentEvent),
    Metrics(MetricBatch),
}

/// A monitoring alert firing or resolving.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertSignal {
    pub source: &'static str,
    /// Stable identity of the problem across deliveries.
    pub fingerprint: String,
    pub name: String,
    pub firing: bool,
    /// `critical`, `warning`, `info`…
    pub severity: String,
    pub environment: Option<String>,
    pub deployment: Option<String>,
    pub at: Timestamp,
    pub detail: serde_json::Value,
}

/// A deployment lifecycle event.
#[derive(Clone, Debug, PartialEq)]
pub struct DeploymentEvent {
    pub id: String,
    pub state: DeploymentState,
    pub environment: String,
    pub url: String,
    pub git_sha: Option<String>,
    pub at: Timestamp,
    /// The webhook event type, e.g. `deployment.promoted`.
    pub event: String,
    pub meta: serde_json::Value,
}

/// Counters for one deployment and minute (see `detect::window` for names).
#[derive(Clone, Debug, PartialEq)]
pub struct MetricBatch {
    /// `None` when the sender did not say; resolved from the deployment registry.
    pub environment: Option<String>,
    /// `None` means "whatever is current in the environment".
    pub deployment: Option<String>,
    pub at: Timestamp,
    pub counters: Vec<(String, f64)>,
}

/// A delivery the parser could not understand.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

impl Malformed {
    pub fn json(e: serde_json::Error) -> Self {
        Malformed(format!("invalid JSON: {e}"))
    }
}

/// Maps a Vercel deployment target to the guard's environment name.
pub fn environment_of_target(target: Option<&str>, custom_environment: Option<&str>) -> String {
    // Vercel's webhook docs list `target` as production | staging | null;
    // `staging` is the staging environment the policy names, not a preview.
    match (target, custom_environment) {
        (Some("production"), _) => "production".into(),
        (Some("staging"), None) => "staging".into(),
        (_, Some(slug)) if !slug.is_empty() => slug.to_string(),
        _ => "preview".into(),
    }
}
