//! `POST /api/rollback`: an operator (bearer `OPERATOR_TOKEN`) rolls an
//! environment back now — break-glass, no approval round. `"preview": true`
//! returns the plan without doing anything.
//!
//! ```json
//! {"environment": "production", "target_deployment": "dpl_…", "reason": "checkout broken", "preview": false}
//! ```

use http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use crate::flows::execute;
use crate::runtime::app::App;
use crate::web::error::ApiError;
use crate::web::respond::{json_response, Request, Response};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    environment: String,
    target_deployment: Option<String>,
    reason: Option<String>,
    #[serde(default)]
    preview: bool,
}

/// Handles the request (auth already checked by the router).
pub async fn rollback(app: &App, req: Request) -> Result<Response, ApiError> {
    let body: Body = serde_json::from_slice(req.body())
        .map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))?;
    let config = app.config()?;
    let store = app.store().await?;
    let incident = format!("manual_{:016x}", rand::random::<u64>());
    let reason = body
        .reason
        .clone()
        .unwrap_or_else(|| "operator-requested rollback".into());
    let Some(mut plan) = execute::plan(
        store.as_ref(),
        &body.environment,
        &incident,
        "operator",
        &reason,
        app.vercel().is_none(),
    )
    .await?
    else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_rollback_target",
            format!(
                "no current deployment with an earlier one to roll back to in {:?}",
                body.environment
            ),
        ));
    };
    if let Some(target) = &body.target_deployment {
        match store.deployment(target).await? {
            Some(d) if d.environment == body.environment && d.id != plan.from_deployment => {
                plan.target_deployment = d.id
            }
            Some(_) => {
                return Err(ApiError::bad_request(
                    "invalid_target",
                    format!("{target} is not an earlier {} deployment", body.environment),
                ))
            }
            None => {
                return Err(ApiError::bad_request(
                    "invalid_target",
                    format!("deployment {target} is unknown"),
                ))
            }
        }
    }
    let ctx = app.decide_ctx(
        store.as_ref(),
        config,
        crate::web::respond::base_url(config, &req),
    );
    // The preview shows exactly what the execution will run.
    let (plan, plan_json) = crate::flows::decide::complete_plan(&ctx, &plan).await?;
    if body.preview {
        return Ok(json_response(
            StatusCode::OK,
            &json!({"preview": true, "incident_id": plan.incident_id, "plan": plan_json}),
        ));
    }
    let result = crate::flows::decide::run_described(&ctx, &plan, plan_json.clone()).await?;
    Ok(json_response(
        StatusCode::OK,
        // The id opens it like an incident (dashboard, /api/incidents/{id}).
        &json!({"incident_id": plan.incident_id, "plan": plan_json, "rollback": result}),
    ))
}
