//! `GET /api/health`: store reachability, config validity and readiness
//! (approvers listed and reachable). Public, so it reports problems by key
//! and category only — never values or hosts.

use std::time::Instant;

use http::StatusCode;
use serde_json::json;

use crate::runtime::app::App;
use crate::store::StoreError;
use crate::web::respond::{json_response, Response};

/// Answers 200 when the config is valid and ready and the store answers, else 503.
pub async fn get(app: &App, head: bool) -> Response {
    let config = match app.config_errors() {
        None => {
            let c = app.config().expect("no errors means a config");
            json!({
                "valid": true,
                "errors": [],
                "readiness": c.readiness().iter().map(|e| json!({"key": e.key, "detail": e.detail})).collect::<Vec<_>>(),
                "warnings": c.warnings(),
                "policy": c.policy_source,
            })
        }
        Some(errs) => json!({
            "valid": false,
            "errors": errs.0.iter().map(|e| json!({"key": e.key, "detail": e.detail})).collect::<Vec<_>>(),
            "warnings": [],
        }),
    };
    let ready = config["readiness"]
        .as_array()
        .is_some_and(|problems| problems.is_empty());
    let config_ok = app.config_errors().is_none();
    let store = if config_ok {
        check_store(app).await
    } else {
        json!({"reachable": false, "error": "not checked: configuration is invalid"})
    };
    let store_ok = store["reachable"] == true;
    // Signals that count nowhere (see flows::intake::unmapped): reported, not failed on.
    let mut intake = serde_json::Value::Null;
    if store_ok {
        if let Ok(s) = app.store().await {
            if let Ok(counts) =
                crate::flows::intake::unmapped::last_day(s.as_ref(), app.clock().now()).await
            {
                intake = json!({"unmapped_last_24h": counts});
            }
        }
    }
    let ok = config_ok && ready && store_ok;
    let body = json!({
        "status": if ok { "ok" } else { "degraded" },
        "version": env!("CARGO_PKG_VERSION"),
        "store": store,
        "config": config,
        "intake": intake,
    });
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut res = json_response(status, &body);
    if head {
        *res.body_mut() = bytes::Bytes::new();
    }
    res
}

async fn check_store(app: &App) -> serde_json::Value {
    let backend = app.config().map(|c| c.store.backend()).unwrap_or("unknown");
    let started = Instant::now();
    let result = match app.store().await {
        Ok(store) => store.ping().await,
        Err(e) => Err(e),
    };
    let latency_ms = (started.elapsed().as_secs_f64() * 1000.0 * 100.0).round() / 100.0;
    match result {
        Ok(()) => json!({"backend": backend, "reachable": true, "latency_ms": latency_ms}),
        Err(e) => {
            tracing::warn!(backend, error = %e, "health: store check failed");
            let category = match e {
                StoreError::Unavailable(_) => "unavailable",
                StoreError::Query(_) => "query_failed",
                StoreError::Corrupt(_) => "corrupt",
                StoreError::NotFound(_) => "not_found",
                StoreError::Contention(_) => "contention",
            };
            json!({"backend": backend, "reachable": false, "error": category, "latency_ms": latency_ms})
        }
    }
}
