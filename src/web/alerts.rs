//! `/api/alerts`: the HTTP face of intake. Picks the source from the query,
//! then authenticates, parses, dedupes and records through [`crate::flows::intake`].

use http::StatusCode;
use serde_json::json;

use crate::flows::intake::signal::Signal;
use crate::flows::intake::{
    authenticate, dedupe_key, parse, prepare, record_delivery_once, Source,
};
use crate::runtime::app::App;
use crate::store::Ingest;
use crate::web::error::ApiError;
use crate::web::respond::{json_response, Request, Response};

/// `/api/alerts`: GET answers Vercel's drain ownership check (and says which
/// sources exist); POST is a delivery. When `VERCEL_DRAIN_VERIFY` is set every
/// answer carries it in `x-vercel-verify`.
pub async fn handle(app: &App, req: Request) -> Result<Response, ApiError> {
    let verify = app
        .config()
        .ok()
        .and_then(|c| c.alert_secrets.vercel_drain_verify.clone());
    let res = if req.method() == http::Method::GET {
        Ok(json_response(
            StatusCode::OK,
            &json!({"status": "ready", "sources": ["sentry", "alertmanager", "grafana", "vercel", "logdrain", "generic"]}),
        ))
    } else {
        receive(app, req).await
    };
    let add = |mut r: Response| {
        if let Some(v) = verify
            .as_deref()
            .and_then(|v| http::HeaderValue::from_str(v).ok())
        {
            r.headers_mut().insert("x-vercel-verify", v);
        }
        r
    };
    match res {
        Ok(r) => Ok(add(r)),
        Err(e) => Ok(add(e.into_response())),
    }
}

/// `POST /api/alerts?source=…`.
pub async fn receive(app: &App, req: Request) -> Result<Response, ApiError> {
    let query = req.uri().query().unwrap_or("");
    let source_name = url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "source")
        .map(|(_, v)| v.into_owned());
    let source = match source_name.as_deref() {
        Some(s) => Source::parse(s).ok_or_else(|| {
            ApiError::bad_request("unknown_source", format!("source {s:?} is not one of sentry, alertmanager, grafana, vercel, logdrain, generic"))
        })?,
        None => return Err(ApiError::bad_request("missing_source", "add ?source=sentry|alertmanager|grafana|vercel|logdrain|generic")),
    };
    let config = app.config()?;
    let now = app.clock().now();
    let (parts, body) = req.into_parts();
    authenticate(source, &config.alert_secrets, &parts.headers, &body, now).map_err(|e| {
        tracing::warn!(source = source.name(), error = %e, "delivery refused");
        ApiError::unauthorized(e.to_string())
    })?;
    let signals = parse(source, &parts.headers, &body, now)
        .map_err(|e| ApiError::bad_request("malformed_payload", e.0))?;
    let store = app.store().await?;
    let scope = format!("intake:{}", source.name());
    let key = dedupe_key(source, &parts.headers, &body);
    let default_env = config.policy.signals.default_environment.as_deref();
    let has_deployments = signals.iter().any(|s| matches!(s, Signal::Deployment(_)));
    let unmapped = if has_deployments {
        // Registry updates are compare-and-set per deployment: one delivery at a time.
        match record_delivery_once(store.as_ref(), &scope, &key, &signals, now, default_env).await?
        {
            Some(unmapped) => unmapped,
            None => return Ok(duplicate()),
        }
    } else {
        // Metrics and alerts: recorded with the deliveries arriving alongside,
        // in one transaction, before this answer.
        let p = prepare(store.as_ref(), &signals, default_env).await?;
        let item = Ingest {
            scope,
            key,
            rollups: p.rollups,
            alerts: p.alerts,
        };
        if !app.ingest(item).await? {
            return Ok(duplicate());
        }
        p.unmapped
    };
    if !unmapped.is_empty() {
        tracing::warn!(
            source = source.name(),
            unmapped = unmapped.len(),
            "signals that count nowhere"
        );
        // The delivery is stored; a failed count only loses the report.
        if let Err(e) =
            crate::flows::intake::unmapped::count(store.as_ref(), source.name(), &unmapped, now)
                .await
        {
            tracing::warn!(error = %e, "could not count unmapped signals");
        }
    }
    Ok(json_response(
        StatusCode::ACCEPTED,
        &Accepted {
            signals: signals.len(),
            status: "accepted",
            unmapped: &unmapped,
        },
    ))
}

/// A recorded delivery's answer, written without building a JSON value
/// (intake answers every delivery). Fields in the order `json!` wrote them.
#[derive(serde::Serialize)]
struct Accepted<'a> {
    signals: usize,
    status: &'static str,
    unmapped: &'a [crate::flows::intake::unmapped::Unmapped],
}

fn duplicate() -> Response {
    json_response(StatusCode::OK, &json!({"status": "duplicate"}))
}
