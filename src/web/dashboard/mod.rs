//! `GET /api/dashboard`: one server-rendered page for operators — open and
//! recent incidents, each environment's deployments (current and last known
//! good marked) with per-minute error-rate and P95 charts (inline SVG, no
//! JavaScript), approvals, rollbacks, and the audit trail with its chain
//! check. Browsers sign in once through a form (`POST`) that sets a signed
//! session cookie (see [`crate::core::session`]: HMAC, 12 h expiry, ended by
//! sign-out or by changing the operator token; HttpOnly, SameSite=Strict,
//! Secure over https); API clients may send the bearer token.

use std::fmt::Write;

use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};

use crate::core::audit::verify_chain;
use crate::core::html::escape;
use crate::core::session::{self, Session};
use crate::runtime::app::App;
use crate::store::{Store, StoreResult};
use crate::web::error::ApiError;
use crate::web::respond::{html_page, html_response};
use crate::web::respond::{Request, Response};

pub mod chart;
mod incident;
mod overview;

/// Table and level styles both dashboard pages share.
const TABLE_STYLE: &str =
    "table{width:100%;border-collapse:collapse;font-size:.9rem;margin:.5rem 0 1.5rem}\
    th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #e4e7ec;vertical-align:top}\
    .critical{color:#b3261e;font-weight:600}.warning{color:#b26a00;font-weight:600}";

const COOKIE: &str = "rg_session";
/// Document kind of signed-out sessions (id = session id).
const REVOKED_KIND: &str = "session_revoked";

fn cookie_value(req: &Request) -> Option<String> {
    let cookies = req.headers().get(header::COOKIE)?.to_str().ok()?;
    cookies
        .split(';')
        .map(str::trim)
        .find_map(|c| c.strip_prefix(&format!("{COOKIE}=")).map(String::from))
}

fn bearer(req: &Request) -> Option<String> {
    req.headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(String::from)
}

/// The request came over https (Vercel's proxy says so in `x-forwarded-proto`).
fn over_https(config: &crate::runtime::config::Config, req: &Request) -> bool {
    req.headers()
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .map(|p| p.eq_ignore_ascii_case("https"))
        .unwrap_or_else(|| {
            config
                .public_base_url
                .as_ref()
                .is_some_and(|u| u.scheme() == "https")
        })
}

/// The valid, not signed-out session of this request, if any.
async fn session(
    app: &App,
    config: &crate::runtime::config::Config,
    secret: &crate::core::secret::Secret,
    req: &Request,
) -> Result<Option<Session>, ApiError> {
    let Some(value) = cookie_value(req) else {
        return Ok(None);
    };
    let keys = session::keys(&config.signing_keys, secret);
    let Ok(s) = session::verify(
        &keys,
        &value,
        &session::fingerprint(secret),
        app.clock().now(),
    ) else {
        return Ok(None);
    };
    let store = app.store().await?;
    if store.get_doc(REVOKED_KIND, &s.sid).await?.is_some() {
        return Ok(None);
    }
    Ok(Some(s))
}

/// `GET`: the dashboard, or the sign-in form.
pub async fn get(app: &App, req: &Request) -> Result<Response, ApiError> {
    let config = app.config()?;
    let Some(secret) = &config.operator_token else {
        return Ok(html_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "Dashboard",
            "<h1>Dashboard disabled</h1><p>Set OPERATOR_TOKEN to enable it.</p>",
        ));
    };
    let by_bearer = bearer(req).is_some_and(|t| secret.matches(t.as_bytes()));
    if !by_bearer && session(app, config, secret, req).await?.is_none() {
        return Ok(sign_in(StatusCode::UNAUTHORIZED, ""));
    }
    let store = app.store().await?;
    if let Some(id) = crate::web::respond::query(req, "incident") {
        return Ok(match incident::render(store.as_ref(), &id).await? {
            Some(html) => html_page(StatusCode::OK, &format!("{id} · rollback-guard"), &html, 72),
            None => html_response(
                StatusCode::NOT_FOUND,
                "Not found",
                &format!(
                    "<h1>No incident {}</h1><p><a href=\"/api/dashboard\">Back to the dashboard</a></p>",
                    escape(&id)
                ),
            ),
        });
    }
    let html = overview::render(store.as_ref(), &config.policy, app.clock().now()).await?;
    Ok(html_page(StatusCode::OK, "rollback-guard", &html, 80))
}

/// `POST`: signs in (the operator token from the form starts a signed
/// session) or signs out (`action=sign_out` revokes the session).
pub async fn post(app: &App, req: &Request) -> Result<Response, ApiError> {
    let config = app.config()?;
    let form: Vec<(String, String)> = url::form_urlencoded::parse(req.body())
        .into_owned()
        .collect();
    let field = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let Some(secret) = &config.operator_token else {
        return Ok(sign_in(
            StatusCode::UNAUTHORIZED,
            "OPERATOR_TOKEN is not set.",
        ));
    };
    let secure = if over_https(config, req) {
        "; Secure"
    } else {
        ""
    };
    if field("action") == "sign_out" {
        if let Some(s) = session(app, config, secret, req).await? {
            let now = app.clock().now();
            let store = app.store().await?;
            store
                .put_doc(
                    &crate::store::Doc {
                        kind: REVOKED_KIND.into(),
                        id: s.sid.clone(),
                        version: 0,
                        scope: "dashboard".into(),
                        status: "revoked".into(),
                        updated_at: now,
                        body: serde_json::json!({"exp": s.exp}),
                    },
                    None,
                )
                .await?;
        }
        return redirect(&format!(
            "{COOKIE}=; Path=/api/dashboard; HttpOnly; SameSite=Strict; Max-Age=0{secure}"
        ));
    }
    if !secret.matches(field("token").trim().as_bytes()) {
        return Ok(sign_in(
            StatusCode::UNAUTHORIZED,
            "That token is not valid.",
        ));
    }
    let keys = session::keys(&config.signing_keys, secret);
    let value = session::mint(
        &keys[0],
        rand::random(),
        &session::fingerprint(secret),
        app.clock().now(),
    );
    redirect(&format!(
        "{COOKIE}={value}; Path=/api/dashboard; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        session::SESSION_SECS
    ))
}

/// 303 to the dashboard, setting `cookie`.
fn redirect(cookie: &str) -> Result<Response, ApiError> {
    let mut res = http::Response::new(Bytes::new());
    *res.status_mut() = StatusCode::SEE_OTHER;
    let h = res.headers_mut();
    h.insert(header::LOCATION, HeaderValue::from_static("/api/dashboard"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::SET_COOKIE,
        HeaderValue::from_str(cookie).map_err(|_| {
            ApiError::bad_request("invalid_cookie", "the session cookie could not be set")
        })?,
    );
    Ok(res)
}

fn sign_in(status: StatusCode, error: &str) -> Response {
    let err = if error.is_empty() {
        String::new()
    } else {
        format!("<p class=\"critical\">{}</p>", escape(error))
    };
    html_response(
        status,
        "Sign in",
        &format!("<h1>rollback-guard</h1>{err}<form method=\"post\" action=\"/api/dashboard\"><input type=\"password\" name=\"token\" placeholder=\"Operator token\" autocomplete=\"current-password\" required style=\"flex:1;padding:.6rem;font-size:1rem\"><button class=\"reject\">Sign in</button></form>"),
    )
}

/// The audit tail with its chain check.
async fn audit_section(h: &mut String, store: &dyn Store) -> StoreResult<()> {
    let (trail, chain) = audit_tail(store, 30).await?;
    let _ = write!(
        h,
        "<h2>Audit trail</h2><p class=\"note\">Hash chain: {}</p>",
        escape(&chain)
    );
    audit_table(
        h,
        trail.iter().rev().map(|r| AuditRow {
            seq: r.seq.to_string(),
            at: overview::when(Some(r.entry.at.as_millis())),
            actor: r.entry.actor.clone(),
            action: r.entry.action.clone(),
            subject: r.entry.subject.clone(),
        }),
    );
    Ok(())
}

/// One row of an audit-trail table, formatted for display.
struct AuditRow {
    seq: String,
    at: String,
    actor: String,
    action: String,
    subject: String,
}

/// An audit-trail table: the overview's tail and an incident's records.
fn audit_table(h: &mut String, rows: impl Iterator<Item = AuditRow>) {
    h.push_str(
        "<table><tr><th>#</th><th>At</th><th>Actor</th><th>Action</th><th>Subject</th></tr>",
    );
    for r in rows {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            escape(&r.seq),
            r.at,
            escape(&r.actor),
            escape(&r.action),
            escape(&r.subject)
        );
    }
    h.push_str("</table>");
}

/// The newest `n` records, and what is known of the chain: whether the
/// tail's own links hold, and how far the cron's full check has got. Reads
/// only the tail: the dashboard's cost does not grow with the log.
async fn audit_tail(
    store: &dyn Store,
    n: usize,
) -> StoreResult<(Vec<crate::core::audit::AuditRecord>, String)> {
    let tail = store.audit_tail(n).await?;
    let links = match tail.first() {
        None => "empty log".to_string(),
        Some(first) => match verify_chain((first.seq - 1, &first.prev_hash), &tail) {
            Ok(()) => format!("last {} records link up", tail.len()),
            Err(e) => format!("BROKEN in the last {} records: {e}", tail.len()),
        },
    };
    let full = crate::flows::audit_check::status(store).await?;
    Ok((tail, format!("{links}; full chain {full}")))
}
