//! `POST /api/slack/actions`: Approve/Reject buttons in the Slack message.
//! Slack signs `v0:{timestamp}:{body}` with the app's signing secret
//! (`X-Slack-Signature: v0=<hex>`, 300 s window). The clicking user must be
//! listed as an approver as `slack:<user id>`; each click counts once.

use std::time::Duration;

use http::StatusCode;
use serde_json::{json, Value};

use crate::core::approval::quorum::{Decision, State};
use crate::flows::approval::{self as request, ApproveError};
use crate::flows::intake::verify::{self, VerifyError};
use crate::runtime::app::App;
use crate::web::error::ApiError;
use crate::web::respond::{json_response, Request, Response};

fn verify_slack(app: &App, req: &Request) -> Result<(), VerifyError> {
    let config = app
        .config()
        .map_err(|_| VerifyError::NotConfigured("configuration"))?;
    let secret = config
        .notify
        .slack_signing_secret
        .as_ref()
        .ok_or(VerifyError::NotConfigured("SLACK_SIGNING_SECRET"))?;
    let header = |n: &'static str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .ok_or(VerifyError::MissingHeader(n))
    };
    let ts = header("x-slack-request-timestamp")?;
    verify::check_fresh(ts, app.clock().now(), "x-slack-request-timestamp")?;
    let sig = header("x-slack-signature")?
        .strip_prefix("v0=")
        .ok_or(VerifyError::MalformedHeader("x-slack-signature"))?;
    verify::hmac_sha256_hex(
        secret.expose().as_bytes(),
        &[b"v0:", ts.as_bytes(), b":", req.body()],
        sig,
    )
}

fn reply(text: &str) -> Response {
    json_response(
        StatusCode::OK,
        &json!({"response_type": "ephemeral", "replace_original": false, "text": text}),
    )
}

/// Handles one interaction payload.
pub async fn actions(app: &App, req: Request) -> Result<Response, ApiError> {
    verify_slack(app, &req).map_err(|e| ApiError::unauthorized(e.to_string()))?;
    let payload = url::form_urlencoded::parse(req.body())
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| {
            ApiError::bad_request("malformed_payload", "form field \"payload\" is missing")
        })?;
    let p: Value = serde_json::from_str(&payload).map_err(|e| {
        ApiError::bad_request("malformed_payload", format!("payload is not JSON: {e}"))
    })?;
    let (Some(user), Some(action)) = (
        p.pointer("/user/id").and_then(Value::as_str),
        p.pointer("/actions/0"),
    ) else {
        return Err(ApiError::bad_request(
            "malformed_payload",
            "expected a block_actions payload with user.id and actions[0]",
        ));
    };
    let decision = action["action_id"]
        .as_str()
        .and_then(Decision::parse)
        .ok_or_else(|| ApiError::bad_request("malformed_payload", "unknown action_id"))?;
    let request_id = action["value"].as_str().unwrap_or_default();
    let store = app.store().await?;
    let now = app.clock().now();
    let click = p["trigger_id"]
        .as_str()
        .or(action["action_ts"].as_str())
        .unwrap_or(request_id);
    if !store
        .claim_once("slack_action", click, now, Duration::from_secs(3600))
        .await?
    {
        return Ok(reply("Already recorded."));
    }
    let approver = format!("slack:{user}");
    let client = json!({"slack_user": user, "slack_team": p.pointer("/team/id")});
    let mut view = match request::load(store.as_ref(), request_id).await? {
        Some(v) => v,
        None => return Ok(reply("This approval request no longer exists.")),
    };
    let view =
        match request::record(store.as_ref(), &mut view, &approver, decision, &client, now).await {
            Ok(v) => v,
            Err(ApproveError::Store(e)) => {
                let _ = store.release_claim("slack_action", click).await;
                return Err(e.into());
            }
            Err(e) => return Ok(reply(&format!("Not recorded: {e}."))),
        };
    if view.state != State::Approved {
        return Ok(reply(&format!(
            "Recorded your {} ({}).",
            decision.as_str(),
            view.state.as_str()
        )));
    }
    // Slack wants an answer within 3 s: start the rollback, and let the evaluate cron finish it.
    let config = app.config()?;
    let mut ctx = app.decide_ctx(
        store.as_ref(),
        config,
        crate::web::respond::base_url(config, &req),
    );
    ctx.wait_budget = Duration::from_millis(1500);
    let plan = request::plan_of(
        &view,
        format!("approval:{}", view.id),
        None,
        app.vercel().is_none(),
    );
    let result = crate::flows::decide::run_rollback(&ctx, &plan).await?;
    Ok(reply(&format!(
        "Approved. Rollback {}.",
        result["status"]
            .as_str()
            .unwrap_or("started")
            .replace('_', " ")
    )))
}
