//! `GET /api/approve?token=…` renders a confirmation page and never acts, so
//! mail scanners and chat unfurls that fetch links are harmless.
//! `POST /api/approve` (form: `token`, `decision`) records the decision once
//! and, when the quorum is reached, starts the rollback. Refusals are pages
//! with a 4xx status, and are audited. `Accept: application/json` gets JSON.

use http::{header, StatusCode};
use serde_json::{json, Value};

use crate::core::approval::quorum::{Decision, DecisionError, State};
use crate::core::approval::token::TokenError;
use crate::core::audit::AuditEntry;
use crate::core::clock::Timestamp;
use crate::core::html::escape;
use crate::flows::approval::{self as request, ApprovalView, ApproveError};
use crate::runtime::app::App;
use crate::store::Doc;
use crate::web::error::ApiError;
use crate::web::respond::{html_response, json_response, Request, Response};

fn wants_json(req: &Request) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"))
}

fn refusal(e: &ApproveError) -> (StatusCode, &'static str) {
    match e {
        ApproveError::Token(TokenError::Expired)
        | ApproveError::Decision(DecisionError::Expired) => (StatusCode::GONE, "link_expired"),
        ApproveError::Token(_) | ApproveError::Mismatch => {
            (StatusCode::UNAUTHORIZED, "invalid_link")
        }
        ApproveError::UnknownRequest => (StatusCode::NOT_FOUND, "unknown_request"),
        ApproveError::Decision(
            DecisionError::NotEligible(_) | DecisionError::RequesterCannotApprove,
        ) => (StatusCode::FORBIDDEN, "not_allowed"),
        ApproveError::Decision(_) | ApproveError::Replayed => {
            (StatusCode::CONFLICT, "already_decided")
        }
        ApproveError::NoKeys => (StatusCode::SERVICE_UNAVAILABLE, "not_configured"),
        ApproveError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
    }
}

/// Where refusals of unidentified callers are counted (rollup counters).
pub const REFUSALS_ENV: &str = "_refusals";
pub const REFUSALS_OF: &str = "approve";

async fn refuse(
    app: &App,
    req_json: bool,
    e: ApproveError,
    now: Timestamp,
    client: &Value,
) -> Result<Response, ApiError> {
    if let ApproveError::Store(s) = e {
        return Err(s.into());
    }
    let (status, code) = refusal(&e);
    if let Ok(store) = app.store().await {
        if matches!(e, ApproveError::Token(_)) {
            // Nobody identified: a forged, expired or garbled link. Counted
            // per minute and reason (the dashboard shows them), not audited,
            // so junk requests cannot flood the audit log.
            let _ = store
                .add_rollup(
                    REFUSALS_ENV,
                    REFUSALS_OF,
                    crate::core::detect::window::minute_of(now.as_millis()),
                    &[(code.to_string(), 1.0)],
                )
                .await;
        } else {
            // A genuine link (its signature verified) refused: audited.
            let _ = store
                .append_audit(AuditEntry {
                    at: now,
                    actor: "approval_link".into(),
                    action: "approval_refused".into(),
                    subject: code.into(),
                    detail: json!({"reason": e.to_string(), "client": client}),
                })
                .await;
        }
    }
    tracing::warn!(code, reason = %e, "approval link refused");
    if req_json {
        return Ok(json_response(
            status,
            &json!({"code": code, "detail": e.to_string()}),
        ));
    }
    Ok(html_response(status, "Link not accepted", &format!("<h1>This link cannot be used</h1><p>{}</p><p class=\"note\">Nothing was changed. If a rollback is still needed, ask for a new link or use the dashboard.</p>", escape(&e.to_string()))))
}

fn token_from_query(req: &Request) -> Option<String> {
    url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
}

fn client_info(req: &Request) -> Value {
    let h = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(200).collect::<String>())
    };
    json!({"user_agent": h("user-agent"), "forwarded_for": h("x-forwarded-for")})
}

/// `GET /api/approve`.
pub async fn get(app: &App, req: Request) -> Result<Response, ApiError> {
    let config = app.config()?;
    let now = app.clock().now();
    let json_wanted = wants_json(&req);
    let Some(token) = token_from_query(&req) else {
        return Err(ApiError::bad_request(
            "missing_token",
            "the link has no token",
        ));
    };
    let store = app.store().await?;
    match request::inspect(store.as_ref(), &config.signing_keys, &token, now).await {
        Ok((claims, view)) if json_wanted => Ok(json_response(
            StatusCode::OK,
            &json!({"approver": claims.approver, "request": summary(&view)}),
        )),
        Ok((claims, view)) => {
            let execution = match view.body["incident_id"].as_str() {
                Some(i) if view.state != State::Pending => {
                    store
                        .get_doc(
                            crate::flows::execute::EXECUTION_KIND,
                            &crate::flows::execute::execution_id(i),
                        )
                        .await?
                }
                _ => None,
            };
            Ok(html_response(
                StatusCode::OK,
                "Confirm rollback",
                &confirmation(&token, &claims.approver, &view, execution.as_ref()),
            ))
        }
        Err(e) => refuse(app, json_wanted, e, now, &client_info(&req)).await,
    }
}

/// `POST /api/approve`.
pub async fn post(app: &App, req: Request) -> Result<Response, ApiError> {
    let config = app.config()?;
    let now = app.clock().now();
    let json_wanted = wants_json(&req);
    let client = client_info(&req);
    let form: Vec<(String, String)> = url::form_urlencoded::parse(req.body())
        .into_owned()
        .collect();
    let field = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let token = field("token").ok_or_else(|| {
        ApiError::bad_request("missing_token", "form field \"token\" is required")
    })?;
    let decision = field("decision")
        .as_deref()
        .and_then(Decision::parse)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_decision",
                "form field \"decision\" must be \"approve\" or \"reject\"",
            )
        })?;
    let store = app.store().await?;
    let view = match request::decide(
        store.as_ref(),
        &config.signing_keys,
        &token,
        decision,
        &client,
        now,
    )
    .await
    {
        Ok(v) => v,
        Err(e) => return refuse(app, json_wanted, e, now, &client).await,
    };
    let rollback = if view.state == State::Approved {
        match start_rollback(app, &req, &view, now).await {
            Ok(r) => Some(r),
            // The decision is recorded: the evaluate cron starts what is left.
            Err(e) if e.status == StatusCode::SERVICE_UNAVAILABLE => Some(json!({
                "status": "queued",
                "error": "the state store did not answer just now; the rollback starts automatically on the next evaluate run",
            })),
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    if json_wanted {
        return Ok(json_response(
            StatusCode::OK,
            &json!({"request": summary(&view), "rollback": rollback}),
        ));
    }
    Ok(html_response(
        StatusCode::OK,
        "Decision recorded",
        &outcome_page(&view, decision, rollback.as_ref()),
    ))
}

/// Starts (or resumes) the execution for an approved request, drives it
/// briefly (the evaluate cron finishes what is left), verifies and notifies.
pub async fn start_rollback(
    app: &App,
    req: &Request,
    view: &ApprovalView,
    now: Timestamp,
) -> Result<Value, ApiError> {
    let config = app.config()?;
    let store = app.store().await?;
    let plan = request::plan_of(
        view,
        format!("approval:{}", view.id),
        None,
        app.vercel().is_none(),
    );
    let _ = now;
    let ctx = app.decide_ctx(
        store.as_ref(),
        config,
        crate::web::respond::base_url(config, req),
    );
    let mut result =
        crate::flows::decide::run_described(&ctx, &plan, view.body["plan"].clone()).await?;
    result["dry_run"] = json!(plan.dry_run);
    Ok(result)
}

fn summary(v: &ApprovalView) -> Value {
    json!({
        "id": v.id, "state": v.state.as_str(), "environment": v.body["environment"], "incident_id": v.body["incident_id"],
        "from_deployment": v.body["from_deployment"], "target_deployment": v.body["target_deployment"],
        "quorum": v.rules.quorum, "approvals": v.rules.decisions.iter().filter(|(_, d)| *d == Decision::Approve).count(),
        "expires_at": Timestamp::from_millis(v.body["expires_at"].as_i64().unwrap_or(0)).to_rfc3339(),
    })
}

fn facts(v: &ApprovalView) -> String {
    let b = &v.body;
    let s = |k: &str| escape(b[k].as_str().unwrap_or("?"));
    let approvals = v
        .rules
        .decisions
        .iter()
        .filter(|(_, d)| *d == Decision::Approve)
        .count();
    // Once decided, what served then may no longer serve now.
    let serving = if v.state == State::Pending {
        "Serving now"
    } else {
        "Serving when asked"
    };
    format!(
        "<dl><dt>Environment</dt><dd>{}</dd><dt>{serving}</dt><dd>{}</dd><dt>Roll back to</dt><dd>{}</dd>\
         <dt>Incident</dt><dd>{}</dd><dt>Approvals</dt><dd>{approvals} of {}</dd><dt>Link expires</dt><dd>{}</dd></dl>",
        s("environment"),
        s("from_deployment"),
        s("target_deployment"),
        s("incident_id"),
        v.rules.quorum,
        escape(&Timestamp::from_millis(b["expires_at"].as_i64().unwrap_or(0)).to_utc_display()),
    )
}

fn plan_steps(v: &ApprovalView) -> String {
    let lines = crate::core::plan::summary_lines(&v.body["plan"]);
    if lines.is_empty() {
        return String::new();
    }
    let items: String = lines
        .iter()
        .map(|l| {
            let class = if l.contains("LOSES DATA") || l.starts_with("A real run would refuse") {
                " class=\"critical\""
            } else {
                ""
            };
            format!("<li{class}>{}</li>", escape(l))
        })
        .collect();
    format!("<h2>What happens</h2><ul>{items}</ul>")
}

fn findings(v: &ApprovalView) -> String {
    let items: Vec<String> = v.body["evidence"]["findings"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|f| matches!(f["level"].as_str(), Some("warning" | "critical")))
                .map(|f| {
                    let level = f["level"].as_str().unwrap_or("");
                    format!(
                        "<li class=\"finding {level}\"><strong>{}</strong> {}</li>",
                        escape(level),
                        escape(f["summary"].as_str().unwrap_or(""))
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    if items.is_empty() {
        String::new()
    } else {
        format!("<h2>Why</h2><ul>{}</ul>", items.join(""))
    }
}

fn confirmation(token: &str, approver: &str, v: &ApprovalView, execution: Option<&Doc>) -> String {
    let actions = if v.state == State::Pending {
        format!(
            "<form method=\"post\" action=\"/api/approve\"><input type=\"hidden\" name=\"token\" value=\"{}\">\
             <button class=\"approve\" name=\"decision\" value=\"approve\">Approve rollback</button>\
             <button class=\"reject\" name=\"decision\" value=\"reject\">Reject</button></form>\
             <p class=\"note\">Opening this page changed nothing. Only the buttons record a decision.</p>",
            escape(token)
        )
    } else {
        let what =
            match execution {
                Some(e) if e.status == "superseded" => format!(
                " The rollback was superseded: production serves {} now. Nothing was rolled back.",
                escape(e.body["superseded"]["serving_now"].as_str().unwrap_or("another deployment"))
            ),
                Some(e) if e.status == "refused" => {
                    " The rollback was refused before anything was called. Nothing was rolled back."
                        .into()
                }
                Some(e) if e.status == "succeeded" && e.body["dry_run"] == true => {
                    " Dry run: Vercel was not called.".into()
                }
                Some(e) => format!(" Rollback: {}.", escape(&e.status)),
                None => String::new(),
            };
        format!(
            "<p><strong>This request is already {}.{what}</strong></p>",
            escape(v.state.as_str())
        )
    };
    let env = escape(v.body["environment"].as_str().unwrap_or("?"));
    let heading = if v.state == State::Pending {
        format!("Roll back {env}?")
    } else {
        format!("Rollback of {env}")
    };
    // Pending: the facts, then the buttons. Decided: the outcome first.
    let (status_first, buttons_last) = if v.state == State::Pending {
        (String::new(), actions)
    } else {
        (actions, String::new())
    };
    format!(
        "<h1>{heading}</h1>{status_first}<p>This link was issued to <strong>{}</strong>. Anyone holding it can decide, and the decision is recorded as theirs, so do not forward it.</p>{}{}{}{buttons_last}",
        escape(approver),
        facts(v),
        plan_steps(v),
        findings(v),
    )
}

fn outcome_page(v: &ApprovalView, decision: Decision, rollback: Option<&Value>) -> String {
    let headline = match (decision, v.state) {
        (Decision::Reject, _) => "Rollback rejected. Nothing will be rolled back.".to_string(),
        (Decision::Approve, State::Approved) => match rollback.and_then(|r| r["status"].as_str()) {
            Some("succeeded") if rollback.is_some_and(|r| r["dry_run"] == true) => "Approved. Dry run: the rollback was recorded but Vercel was not called (no VERCEL_TOKEN).".into(),
            Some("succeeded") => "Approved. The rollback is complete.".into(),
            Some("failed") => format!("Approved, but the rollback failed: {}", rollback.and_then(|r| r["error"].as_str()).unwrap_or("unknown error")),
            Some("queued") => "Approved. Your decision is recorded; the rollback starts automatically within a minute.".into(),
            Some("superseded") => format!("Approved, but the plan was superseded. Nothing was rolled back: {}.", rollback.and_then(|r| r["error"].as_str()).unwrap_or("production changed")),
            Some("refused") => format!("Approved, but the rollback was refused before anything was called. Nothing was rolled back: {}", rollback.and_then(|r| r["error"].as_str()).unwrap_or("a preflight check failed")),
            _ => "Approved. The rollback is in progress.".into(),
        },
        (Decision::Approve, _) => format!("Approval recorded. Waiting for {} more.", v.rules.quorum as usize - v.rules.decisions.iter().filter(|(_, d)| *d == Decision::Approve).count()),
    };
    format!("<h1>{}</h1>{}", escape(&headline), facts(v))
}
