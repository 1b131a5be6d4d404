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
use crate::web::respond::{json_response, Request, Response};

fn query(req: &Request, key: &str) -> Option<String> {
    url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

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
pub async fn detail(store: &dyn Store, id: &str) -> StoreResult<Option<Value>> {
    let Some(inc) = store.get_doc(INCIDENT_KIND, id).await? else {
        return Ok(None);
    };
    let approval = store.get_doc(APPROVAL_KIND, &format!("apr_{id}")).await?;
    let execution = store.get_doc(EXECUTION_KIND, &execution_id(id)).await?;
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
    out["verdict"] = inc.body["verdict"].clone();
    out["approval"] = approval.map_or(Value::Null, |a| json!({"id": a.id, "state": a.status, "quorum": a.body["quorum"], "decisions": a.body["decisions"], "expires_at": a.body["expires_at"]}));
    out["execution"] = execution.map_or(Value::Null, |e| json!({"id": e.id, "status": e.status, "target_deployment": e.body["target_deployment"], "steps": e.body["steps"], "verification": e.body["verification"]}));
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
