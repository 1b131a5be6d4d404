//! The deployment registry: every deployment seen, and per environment which
//! one is current and which came before it (the baseline for comparisons).
//!
//! Vercel semantics kept here: a promotion or an accepted rollback makes a
//! deployment current; a rollback *pins* production, so later builds stay
//! staged (not current) until something is promoted again.

use serde_json::json;

use crate::core::clock::Timestamp;
use crate::flows::intake::signal::DeploymentEvent;
use crate::store::{Deployment, DeploymentState, Doc, DocWrite, Store, StoreError, StoreResult};

const CURRENT_KIND: &str = "current_deployment";

/// Which deployment serves an environment now.
#[derive(Clone, Debug, PartialEq)]
pub struct Current {
    pub deployment_id: String,
    /// The deployment that served before it, if known.
    pub previous_id: Option<String>,
    pub since: Timestamp,
    /// Set by a rollback: new builds do not become current until a promotion.
    pub pinned: bool,
}

/// Records a deployment event and moves the environment's current pointer.
pub async fn apply_event(store: &dyn Store, ev: &DeploymentEvent) -> StoreResult<()> {
    let existing = store.deployment(&ev.id).await?;
    let created_at = existing.as_ref().map_or(ev.at, |d| d.created_at.min(ev.at));
    // Events can arrive out of order: never move a promoted deployment back to "ready".
    let state = match (existing.as_ref().map(|d| d.state), ev.state) {
        (
            Some(DeploymentState::Promoted | DeploymentState::RolledBack),
            DeploymentState::Ready | DeploymentState::Building,
        ) => existing.as_ref().map(|d| d.state).unwrap_or(ev.state),
        _ => ev.state,
    };
    store
        .upsert_deployment(&Deployment {
            id: ev.id.clone(),
            environment: ev.environment.clone(),
            url: if ev.url.is_empty() {
                existing.as_ref().map(|d| d.url.clone()).unwrap_or_default()
            } else {
                ev.url.clone()
            },
            state,
            git_sha: ev
                .git_sha
                .clone()
                .or_else(|| existing.as_ref().and_then(|d| d.git_sha.clone())),
            created_at,
            updated_at: ev.at,
            meta: ev.meta.clone(),
        })
        .await?;
    let becomes_current = match ev.state {
        // A promotion older than what made the current deployment current is
        // a late delivery: it must not move the environment backwards.
        DeploymentState::Promoted => current(store, &ev.environment)
            .await?
            .is_none_or(|c| c.deployment_id == ev.id || ev.at >= c.since),
        DeploymentState::Ready => current(store, &ev.environment)
            .await?
            .is_none_or(|c| !c.pinned && ev.at >= c.since),
        _ => false,
    };
    if becomes_current {
        set_current(
            store,
            &ev.environment,
            &ev.id,
            ev.at,
            ev.event == "deployment.rollback",
        )
        .await?;
    }
    Ok(())
}

/// The environment's current deployment pointer.
pub async fn current(store: &dyn Store, environment: &str) -> StoreResult<Option<Current>> {
    Ok(store
        .get_doc(CURRENT_KIND, environment)
        .await?
        .and_then(|d| decode(&d)))
}

fn decode(d: &Doc) -> Option<Current> {
    Some(Current {
        deployment_id: d.body.get("deployment_id")?.as_str()?.to_string(),
        previous_id: d
            .body
            .get("previous_id")
            .and_then(|v| v.as_str())
            .map(String::from),
        since: Timestamp::from_millis(d.body.get("since")?.as_i64()?),
        pinned: d
            .body
            .get("pinned")
            .and_then(|v| v.as_bool())
            .unwrap_or(false),
    })
}

/// Points the environment at `id` (compare-and-set; retried on races).
pub async fn set_current(
    store: &dyn Store,
    environment: &str,
    id: &str,
    at: Timestamp,
    pinned: bool,
) -> StoreResult<()> {
    for _ in 0..20 {
        let doc = store.get_doc(CURRENT_KIND, environment).await?;
        let old = doc.as_ref().and_then(decode);
        if old
            .as_ref()
            .is_some_and(|c| c.deployment_id == id && c.pinned == pinned)
        {
            return Ok(());
        }
        let previous_id = match &old {
            Some(c) if c.deployment_id != id => Some(c.deployment_id.clone()),
            Some(c) => c.previous_id.clone(),
            None => None,
        };
        let next = Doc {
            kind: CURRENT_KIND.into(),
            id: environment.into(),
            version: 0,
            scope: environment.into(),
            status: "current".into(),
            updated_at: at,
            body: json!({"deployment_id": id, "previous_id": previous_id, "since": at.as_millis(), "pinned": pinned}),
        };
        if let DocWrite::Written(_) = store
            .put_doc(&next, doc.as_ref().map(|d| d.version))
            .await?
        {
            // The deployment that was replaced by a rollback is marked as such.
            if let (true, Some(prev)) = (pinned, previous_id.as_deref()) {
                if let Some(mut d) = store.deployment(prev).await? {
                    d.state = DeploymentState::RolledBack;
                    d.updated_at = at;
                    store.upsert_deployment(&d).await?;
                }
            }
            return Ok(());
        }
    }
    Err(StoreError::Contention(format!(
        "current deployment of {environment}"
    )))
}
