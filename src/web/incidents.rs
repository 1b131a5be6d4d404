//! `GET /api/incidents` (newest first; `?status=open|resolved|closed`,
//! `?environment=…`, `?limit=…`) and `GET /api/incidents/{id}` (the incident
//! with its approval request, execution and audit trail). Operator token.

use http::StatusCode;
use serde_json::{json, Value};

use crate::core::clock::Timestamp;
use crate::flows::approval::APPROVAL_KIND;
use crate::flows::evaluate::INCIDENT_KIND;
use crate::flows::execute::{execution_id, EXECUTION_KIND};
use crate::runtime::app::App;
use crate::store::{Doc, DocFilter, Store, StoreResult};
use crate::web::error::ApiError;
use crate::web::respond::{json_response, query, Request, Response};

/// An incident as operators see it.
pub fn incident_json(d: &Doc) -> Value {
    let b = &d.body;
    let ts = |k: &str| {
        b[k].as_i64()
            .map(|ms| Timestamp::from_millis(ms).to_rfc3339())
    };
    json!({
        "id": d.id, "status": d.status, "environment": d.scope, "deployment_id": b["deployment_id"], "level": b["level"],
        "opened_at": ts("opened_at"), "resolved_at": ts("resolved_at"), "updated_at": d.updated_at.to_rfc3339(),
        "findings": b["verdict"]["findings"],
    })
}

/// Everything known about one incident.
/// A break-glass rollback (`manual_…`, started from `/api/rollback`) has no
/// incident document; it is shown from its execution, as `kind: "manual"`.
pub async fn detail(store: &dyn Store, id: &str) -> StoreResult<Option<Value>> {
    let inc = store.get_doc(INCIDENT_KIND, id).await?;
    let approval = store.get_doc(APPROVAL_KIND, &format!("apr_{id}")).await?;
    let execution = store.get_doc(EXECUTION_KIND, &execution_id(id)).await?;
    let inc = match (inc, &execution) {
        (Some(inc), _) => inc,
        (None, Some(e)) => Doc {
            kind: INCIDENT_KIND.into(),
            id: id.to_string(),
            version: 0,
            scope: e.body["environment"].as_str().unwrap_or("").to_string(),
            status: e.status.clone(),
            updated_at: e.updated_at,
            body: json!({"kind": "manual", "deployment_id": e.body["from_deployment"],
                         "opened_at": e.body["created_at"], "reason": e.body["reason"],
                         "requested_by": e.body["requested_by"]}),
        },
        (None, None) => return Ok(None),
    };
    let mut subjects = vec![id.to_string(), format!("apr_{id}"), execution_id(id)];
    subjects.extend(inc.body["deployment_id"].as_str().map(String::from));
    // Indexed by subject: only this incident's records are read.
    let trail: Vec<Value> = store
        .audit_of(&subjects, 500)
        .await?
        .into_iter()
        .map(|r| json!({"seq": r.seq, "at": r.entry.at.to_rfc3339(), "actor": r.entry.actor, "action": r.entry.action, "subject": r.entry.subject, "detail": r.entry.detail}))
        .collect();
    let mut out = incident_json(&inc);
    out["kind"] = json!(inc.body["kind"].as_str().unwrap_or("incident"));
    out["reason"] = inc.body["reason"].clone();
    out["outcome"] = inc.body["outcome"].clone();
    out["verdict"] = inc.body["verdict"].clone();
    out["approval"] = approval.map_or(Value::Null, |a| json!({"id": a.id, "state": a.status, "quorum": a.body["quorum"], "decisions": a.body["decisions"], "expires_at": a.body["expires_at"]}));
    out["execution"] = execution.map_or(Value::Null, |e| json!({"id": e.id, "status": e.status, "target_deployment": e.body["target_deployment"], "steps": e.body["steps"], "verification": e.body["verification"], "dry_run": e.body["dry_run"], "error": e.body["error"], "refused": e.body["refused"], "plan": e.body["plan"]}));
    out["audit"] = json!(trail);
    Ok(Some(out))
}

/// Handles both routes (auth already checked by the router).
pub async fn get(app: &App, req: &Request) -> Result<Response, ApiError> {
    let store = app.store().await?;
    let path = req.uri().path().trim_end_matches('/');
    // `/api/incidents/{id}` locally; on Vercel the rewrite passes `?id=`.
    if let Some(id) = path
        .strip_prefix("/api/incidents/")
        .map(String::from)
        .or_else(|| query(req, "id"))
    {
        return match detail(store.as_ref(), &id).await? {
            Some(v) => Ok(json_response(StatusCode::OK, &v)),
            None => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("incident {id} does not exist"),
            )),
        };
    }
    let limit = match query(req, "limit") {
        None => 50,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=500).contains(n))
            .ok_or_else(|| ApiError::bad_request("invalid_limit", "limit must be 1-500"))?,
    };
    let status = query(req, "status");
    if status
        .as_deref()
        .is_some_and(|s| !matches!(s, "open" | "resolved" | "closed"))
    {
        return Err(ApiError::bad_request(
            "invalid_status",
            "status must be open, resolved or closed",
        ));
    }
    let filter = DocFilter {
        scope: query(req, "environment"),
        status,
    };
    let list = store.list_docs(INCIDENT_KIND, &filter, limit).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"incidents": list.iter().map(incident_json).collect::<Vec<_>>()}),
    ))
}
