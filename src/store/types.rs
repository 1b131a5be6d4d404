//! Records kept by the store.

use crate::clock::Timestamp;

/// A deployment of the watched app, as learned from Vercel webhooks or the API.
#[derive(Clone, Debug, PartialEq)]
pub struct Deployment {
    /// Vercel deployment id (`dpl_…`).
    pub id: String,
    /// `production`, `preview`/`staging`, or a custom environment.
    pub environment: String,
    /// Deployment URL without scheme, as Vercel reports it.
    pub url: String,
    pub state: DeploymentState,
    /// Git commit, when known.
    pub git_sha: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Anything else the source reported.
    pub meta: serde_json::Value,
}

/// Lifecycle of a deployment as the guard sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeploymentState {
    Building,
    Ready,
    Error,
    Canceled,
    /// Serving production traffic.
    Promoted,
    /// Replaced by a rollback.
    RolledBack,
}

impl DeploymentState {
    /// Stable storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Building => "building",
            Self::Ready => "ready",
            Self::Error => "error",
            Self::Canceled => "canceled",
            Self::Promoted => "promoted",
            Self::RolledBack => "rolled_back",
        }
    }

    /// Parses a storage name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "building" => Self::Building,
            "ready" => Self::Ready,
            "error" => Self::Error,
            "canceled" => Self::Canceled,
            "promoted" => Self::Promoted,
            "rolled_back" => Self::RolledBack,
            _ => return None,
        })
    }
}
