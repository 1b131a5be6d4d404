//! Records kept by the store.

use crate::core::clock::Timestamp;

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

/// A versioned JSON document: incidents, alert states, probe states and
/// (later) approvals and executions. Writes are compare-and-set on `version`.
#[derive(Clone, Debug, PartialEq)]
pub struct Doc {
    /// Record type, e.g. `incident`.
    pub kind: String,
    /// Unique within `kind`.
    pub id: String,
    /// Starts at 1; every successful write increments it. Intake's writes
    /// of alert states may count as one (Postgres folds a batch's writes,
    /// and the writes logged between two reads, into one): a state read
    /// again after a later write has a later version.
    pub version: i64,
    /// Grouping used for listing, usually the environment.
    pub scope: String,
    /// Lifecycle state used for listing, e.g. `open`.
    pub status: String,
    pub updated_at: Timestamp,
    pub body: serde_json::Value,
}

/// Outcome of a compare-and-set document write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DocWrite {
    /// Written; the document now has this version.
    Written(i64),
    /// The stored version was not the expected one (or the document already
    /// existed on create); nothing was written.
    Conflict,
}

/// Filter for listing documents of one kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DocFilter {
    pub scope: Option<String>,
    pub status: Option<String>,
}

pub use crate::core::detect::window::RollupRow;

/// Counters whose name starts with this keep the maximum instead of the sum.
pub const MAX_PREFIX: &str = "max:";

/// One rollup increment of an environment's deployment in one minute.
#[derive(Clone, Debug, PartialEq)]
pub struct RollupAdd {
    pub environment: String,
    pub deployment: String,
    pub minute: i64,
    pub values: Vec<(String, f64)>,
}

/// What [`super::Store::migrate`] did: the schema version before and after.
/// `from == 0` means the schema was created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Migration {
    pub from: u32,
    pub to: u32,
}

/// One intake delivery, ready to record: its dedupe claim and everything it
/// adds. Recorded by [`super::Store::ingest`], many at a time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ingest {
    /// Dedupe claim scope (`intake:<source>`) and key (the delivery id).
    pub scope: String,
    pub key: String,
    pub rollups: Vec<RollupAdd>,
    pub alerts: Vec<AlertWrite>,
}

/// An alert's new state. Stored as document `alert/<id>`: the body plus
/// `first_seen` (kept while the alert stays firing, else `at`) and
/// `last_seen` (`at`).
#[derive(Clone, Debug, PartialEq)]
pub struct AlertWrite {
    pub id: String,
    /// The environment (the document's scope).
    pub environment: String,
    pub firing: bool,
    /// When the sender says it happened (ms).
    pub at: i64,
    /// `source`, `name`, `severity`, `deployment`, `detail`.
    pub body: JsonText,
}

/// JSON text, valid by construction: an alert write's body, written once
/// where intake builds it and handed to the store as is (Postgres and
/// Redis store the text; neither builds nor re-serialises a JSON value
/// per delivered alert).
#[derive(Clone, Debug)]
pub struct JsonText(Box<serde_json::value::RawValue>);

impl JsonText {
    /// `value` written as JSON.
    pub fn of(value: &impl serde::Serialize) -> serde_json::Result<Self> {
        serde_json::value::to_raw_value(value).map(Self)
    }

    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// The text parsed (valid JSON, so never the fallback `null`).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(self.0.get()).unwrap_or_default()
    }
}

impl PartialEq for JsonText {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl AlertWrite {
    /// The document this write leaves, given the one it replaces.
    pub fn apply(&self, existing: Option<&Doc>, now: Timestamp) -> Doc {
        let first_seen = existing
            .filter(|d| d.status == "firing")
            .and_then(|d| d.body.get("first_seen").and_then(|v| v.as_i64()))
            .unwrap_or(self.at);
        let mut body = self.body.to_value();
        if let Some(fields) = body.as_object_mut() {
            fields.insert("first_seen".into(), first_seen.into());
            fields.insert("last_seen".into(), self.at.into());
        }
        Doc {
            kind: ALERT_KIND.into(),
            id: self.id.clone(),
            version: 0,
            scope: self.environment.clone(),
            status: if self.firing { "firing" } else { "resolved" }.into(),
            updated_at: now,
            body,
        }
    }
}

/// Document kind of alert states.
pub const ALERT_KIND: &str = "alert";
