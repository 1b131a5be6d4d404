//! Vercel deployment webhooks: `{type, id, createdAt, payload: {deployment,
//! target, project, …}}`. Deployment events feed the registry; other event
//! types are accepted and ignored.

use serde_json::Value;

use super::str_field;
use crate::core::clock::Timestamp;
use crate::flows::intake::signal::{environment_of_target, DeploymentEvent, Malformed, Signal};
use crate::store::DeploymentState;

/// The delivery id (`id`), used for dedupe.
pub fn delivery_id(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    str_field(&v, &["id"]).map(String::from)
}

/// The event's `createdAt` (ms), inside the signed body.
pub fn created_at(body: &[u8]) -> Option<Timestamp> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.get("createdAt")
        .and_then(Value::as_i64)
        .map(Timestamp::from_millis)
}

/// Parses a Vercel webhook.
pub fn parse(body: &[u8], now: Timestamp) -> Result<Vec<Signal>, Malformed> {
    let v: Value = serde_json::from_slice(body).map_err(Malformed::json)?;
    let kind = str_field(&v, &["type"]).ok_or_else(|| Malformed("missing \"type\"".into()))?;
    let state = match kind {
        "deployment.created" => DeploymentState::Building,
        "deployment.succeeded" | "deployment.ready" => DeploymentState::Ready,
        "deployment.error" => DeploymentState::Error,
        "deployment.canceled" => DeploymentState::Canceled,
        // A promotion, or Vercel accepting a rollback *to* this deployment:
        // either way it is what production serves next.
        "deployment.promoted" | "deployment.rollback" => DeploymentState::Promoted,
        _ => return Ok(Vec::new()),
    };
    let p = v
        .get("payload")
        .ok_or_else(|| Malformed("missing \"payload\"".into()))?;
    let d = p
        .get("deployment")
        .ok_or_else(|| Malformed("missing payload.deployment".into()))?;
    let id =
        str_field(d, &["id"]).ok_or_else(|| Malformed("missing payload.deployment.id".into()))?;
    let meta = d.get("meta").cloned().unwrap_or(Value::Null);
    let git_sha = ["githubCommitSha", "gitlabCommitSha", "bitbucketCommitSha"]
        .iter()
        .find_map(|k| meta.get(*k).and_then(Value::as_str))
        .map(String::from);
    let at = v
        .get("createdAt")
        .and_then(Value::as_i64)
        .map(Timestamp::from_millis)
        .unwrap_or(now);
    let custom = str_field(p, &["customEnvironment", "slug"])
        .or(str_field(d, &["customEnvironment", "slug"]));
    Ok(vec![Signal::Deployment(DeploymentEvent {
        id: id.to_string(),
        state,
        environment: environment_of_target(str_field(p, &["target"]), custom),
        url: str_field(d, &["url"]).unwrap_or_default().to_string(),
        git_sha,
        at,
        event: kind.to_string(),
        meta: serde_json::json!({"name": d.get("name"), "project_id": p.pointer("/project/id"), "git": meta, "webhook_id": v.get("id")}),
    })])
}
