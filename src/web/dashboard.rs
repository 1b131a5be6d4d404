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
use crate::core::clock::Timestamp;
use crate::core::detect::window::{minute_of, Window};
use crate::core::html::escape;
use crate::core::session::{self, Session};
use crate::runtime::app::App;
use crate::store::{DocFilter, Store, StoreResult};
use crate::web::error::ApiError;
use crate::web::respond::{html_page, html_response};
use crate::web::respond::{Request, Response};

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
    let html = render(store.as_ref(), app.clock().now()).await?;
    Ok(html_page(StatusCode::OK, "rollback-guard", &html, 72))
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

fn when(ms: Option<i64>) -> String {
    ms.map(|m| Timestamp::from_millis(m).to_rfc3339()[..19].replace('T', " "))
        .unwrap_or_else(|| "—".into())
}

async fn render(store: &dyn Store, now: Timestamp) -> StoreResult<String> {
    let mut h = String::from(
        "<form method=\"post\" action=\"/api/dashboard\" style=\"float:right;margin:0\">\
         <input type=\"hidden\" name=\"action\" value=\"sign_out\"><button class=\"reject\">Sign out</button></form>\
         <h1>rollback-guard</h1>",
    );
    // Incidents.
    let incidents = store
        .list_docs(
            crate::flows::evaluate::INCIDENT_KIND,
            &DocFilter::default(),
            20,
        )
        .await?;
    h.push_str("<h2>Incidents</h2>");
    if incidents.is_empty() {
        h.push_str("<p class=\"note\">No incidents.</p>");
    } else {
        h.push_str("<table><tr><th>Incident</th><th>Env</th><th>Deployment</th><th>Level</th><th>Status</th><th>Opened</th></tr>");
        for d in &incidents {
            let level = d.body["level"].as_str().unwrap_or("");
            let _ = write!(
                h,
                "<tr><td><code>{}</code></td><td>{}</td><td><code>{}</code></td><td class=\"{level}\">{level}</td><td>{}</td><td>{}</td></tr>",
                escape(&d.id),
                escape(&d.scope),
                escape(d.body["deployment_id"].as_str().unwrap_or("")),
                escape(&d.status),
                when(d.body["opened_at"].as_i64())
            );
        }
        h.push_str("</table>");
    }
    // Environments: deployments and charts.
    for cur in store
        .list_docs("current_deployment", &DocFilter::default(), 50)
        .await?
    {
        let env = cur.id.clone();
        let current = cur.body["deployment_id"].as_str().unwrap_or("").to_string();
        let lkg = store.last_known_good(&env).await?.map(|d| d.id);
        let _ = write!(h, "<h2>{}</h2><div class=\"charts\">", escape(&env));
        let (rates, p95s) = series(store, &env, &current, now).await?;
        h.push_str(&chart("Error rate, last 60 min (%)", &rates, 5.0));
        h.push_str(&chart("P95 latency, last 60 min (ms)", &p95s, 1000.0));
        h.push_str(
            "</div><table><tr><th>Deployment</th><th>State</th><th>Created</th><th></th></tr>",
        );
        for d in store.recent_deployments(&env, 8).await? {
            let mark = match (d.id == current, lkg.as_deref() == Some(d.id.as_str())) {
                (true, true) => "current · last known good",
                (true, false) => "current",
                (false, true) => "last known good",
                _ => "",
            };
            let _ = write!(h, "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td><strong>{mark}</strong></td></tr>", escape(&d.id), d.state.as_str(), when(Some(d.created_at.as_millis())));
        }
        h.push_str("</table>");
    }
    // Approvals and rollbacks.
    h.push_str("<h2>Approvals and rollbacks</h2><table><tr><th>Record</th><th>Status</th><th>Detail</th><th>Updated</th></tr>");
    for kind in [
        crate::flows::approval::APPROVAL_KIND,
        crate::flows::execute::EXECUTION_KIND,
    ] {
        for d in store.list_docs(kind, &DocFilter::default(), 10).await? {
            let detail = match kind {
                "approval" => format!(
                    "{} of {} approvals, target {}",
                    d.body["decisions"].as_array().map_or(0, Vec::len),
                    d.body["quorum"],
                    d.body["target_deployment"].as_str().unwrap_or("?")
                ),
                _ => format!(
                    "→ {}{}",
                    d.body["target_deployment"].as_str().unwrap_or("?"),
                    if d.body["dry_run"] == true {
                        " (dry run)"
                    } else {
                        ""
                    }
                ),
            };
            let _ = write!(
                h,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&d.id),
                escape(&d.status),
                escape(&detail),
                when(Some(d.updated_at.as_millis()))
            );
        }
    }
    h.push_str("</table>");
    // Audit trail.
    // Refused approval links from unidentified callers: counted, not audited.
    let minute = minute_of(now.as_millis());
    let refused = store
        .rollups(
            crate::web::approve::REFUSALS_ENV,
            crate::web::approve::REFUSALS_OF,
            minute - 59,
            minute + 1,
        )
        .await?;
    let mut by_reason: std::collections::BTreeMap<&str, f64> = std::collections::BTreeMap::new();
    for r in &refused {
        *by_reason.entry(r.name.as_str()).or_default() += r.value;
    }
    let total: f64 = by_reason.values().sum();
    let _ = write!(
        h,
        "<h2>Refused approval links</h2><p class=\"note\">Last 60 minutes: {total:.0}{}</p>",
        if by_reason.is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                escape(
                    &by_reason
                        .iter()
                        .map(|(k, v)| format!("{k}: {v:.0}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            )
        }
    );
    let (trail, chain) = audit_tail(store, 30).await?;
    let _ = write!(h, "<h2>Audit trail</h2><p class=\"note\">Hash chain: {}</p><table><tr><th>#</th><th>At</th><th>Actor</th><th>Action</th><th>Subject</th></tr>", escape(&chain));
    for r in trail.iter().rev() {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            r.seq,
            when(Some(r.entry.at.as_millis())),
            escape(&r.entry.actor),
            escape(&r.entry.action),
            escape(&r.entry.subject)
        );
    }
    h.push_str("</table>");
    h.push_str("<style>table{width:100%;border-collapse:collapse;font-size:.9rem;margin:.5rem 0 1.5rem}th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #e4e7ec}\
        .charts{display:flex;gap:1rem;flex-wrap:wrap}svg{background:#fafbfc;border:1px solid #e4e7ec;border-radius:8px}</style>");
    Ok(h)
}

/// Per-minute error rate (%) and P95 (ms) of a deployment over the last hour.
async fn series(
    store: &dyn Store,
    env: &str,
    dep: &str,
    now: Timestamp,
) -> StoreResult<(Vec<Option<f64>>, Vec<Option<f64>>)> {
    let to = minute_of(now.as_millis()) + 1;
    let rows = store.rollups(env, dep, to - 60, to).await?;
    let (mut rates, mut p95s) = (Vec::new(), Vec::new());
    for m in to - 60..to {
        let minute: Vec<_> = rows.iter().filter(|r| r.minute == m).cloned().collect();
        let w = Window::from_rows(&minute);
        rates.push(w.error_rate().map(|r| r * 100.0));
        p95s.push(w.latency.quantile(0.95));
    }
    Ok((rates, p95s))
}

/// A small line chart: gaps where there was no data, a dot on every
/// measured minute (so a lone minute still shows), 20% headroom above the
/// highest point, and `floor` as the minimum scale so flat lines stay low.
pub fn chart(title: &str, points: &[Option<f64>], floor: f64) -> String {
    let (w, hgt, pad, top) = (520.0, 160.0, 28.0, 34.0);
    let highest = points.iter().flatten().fold(0.0f64, |a, b| a.max(*b));
    let max = (highest * 1.2).max(floor);
    let n = points.len().max(2) as f64;
    let x = |i: usize| pad + (w - 2.0 * pad) * i as f64 / (n - 1.0);
    let y = |v: f64| hgt - pad - (hgt - pad - top) * v / max;
    let (mut lines, mut dots, mut seg) = (String::new(), String::new(), String::new());
    let flush = |seg: &mut String, lines: &mut String| {
        if !seg.is_empty() {
            let _ = write!(
                lines,
                "<path d=\"{}\" fill=\"none\" stroke=\"#b3261e\" stroke-width=\"2\"/>",
                std::mem::take(seg)
            );
        }
    };
    for (i, p) in points.iter().enumerate() {
        match p {
            Some(v) => {
                let _ = write!(
                    seg,
                    "{}{:.1},{:.1}",
                    if seg.is_empty() { "M" } else { " L" },
                    x(i),
                    y(*v)
                );
                let _ = write!(
                    dots,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"#b3261e\"/>",
                    x(i),
                    y(*v)
                );
            }
            None => flush(&mut seg, &mut lines),
        }
    }
    flush(&mut seg, &mut lines);
    let empty = if points.iter().all(Option::is_none) {
        "<text x=\"50%\" y=\"55%\" text-anchor=\"middle\" fill=\"#5a6275\" font-size=\"13\">no data</text>"
    } else {
        ""
    };
    format!(
        "<svg role=\"img\" aria-label=\"{t}\" width=\"{w}\" height=\"{hgt}\" viewBox=\"0 0 {w} {hgt}\"><title>{t}</title>\
         <text x=\"{pad}\" y=\"18\" font-size=\"13\" fill=\"#1d2330\">{t}</text>\
         <text x=\"{r}\" y=\"18\" font-size=\"11\" text-anchor=\"end\" fill=\"#5a6275\">{peak}</text>\
         <line x1=\"{pad}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#c8ccd4\"/>\
         <text x=\"{pad}\" y=\"{lbl}\" font-size=\"11\" fill=\"#5a6275\">-60 min</text><text x=\"{r}\" y=\"{lbl}\" font-size=\"11\" text-anchor=\"end\" fill=\"#5a6275\">now</text>\
         {lines}{dots}{empty}</svg>",
        t = escape(title),
        b = hgt - pad,
        r = w - pad,
        lbl = hgt - 10.0,
        peak = if empty.is_empty() { format!("peak {highest:.1}") } else { String::new() },
    )
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

#[cfg(test)]
mod tests {
    use super::chart;

    #[test]
    fn charts_break_lines_at_gaps_and_mark_lone_points() {
        let svg = chart("t", &[Some(1.0), Some(2.0), None, Some(3.0), None], 5.0);
        assert_eq!(svg.matches("<path").count(), 2, "{svg}");
        assert_eq!(svg.matches("<circle").count(), 3);
        assert!(!svg.contains("no data"));
        assert!(chart("t", &[None, None], 5.0).contains("no data"));
    }

    #[test]
    fn titles_are_escaped() {
        assert!(chart("<script>", &[Some(1.0)], 1.0).contains("&lt;script&gt;"));
    }
}
