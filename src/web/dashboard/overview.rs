//! The dashboard's main page: incidents (each linking to its detail view),
//! each environment's last hour as charts with thresholds, deployment
//! markers and the incident window, its deployments (current and last known
//! good marked), approvals and rollbacks, signals that counted nowhere,
//! refused approval links, and the audit tail. Times are UTC and say so.

use std::fmt::Write;

use crate::core::clock::Timestamp;
use crate::core::detect::window::{minute_of, Window};
use crate::core::html::escape;
use crate::core::policy::Policy;
use crate::store::{DocFilter, Store, StoreResult};
use crate::web::dashboard::chart::{self, Chart, Marker, Role};

/// `2026-11-26 21:24:31 UTC`, or a dash.
pub fn when(ms: Option<i64>) -> String {
    ms.map(|m| Timestamp::from_millis(m).to_utc_display())
        .unwrap_or_else(|| "—".into())
}

/// A link to an incident's (or break-glass rollback's) detail view.
pub fn incident_link(id: &str) -> String {
    let q: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
    format!(
        "<a href=\"/api/dashboard?incident={q}\"><code>{}</code></a>",
        escape(id)
    )
}

pub async fn render(store: &dyn Store, policy: &Policy, now: Timestamp) -> StoreResult<String> {
    let mut h = String::from(
        "<form method=\"post\" action=\"/api/dashboard\" style=\"float:right;margin:0\">\
         <input type=\"hidden\" name=\"action\" value=\"sign_out\"><button class=\"reject\">Sign out</button></form>\
         <h1>rollback-guard</h1>",
    );
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
        h.push_str("<table><tr><th>Incident</th><th>Environment</th><th>Deployment</th><th>Level</th><th>Status</th><th>Opened</th></tr>");
        for d in &incidents {
            let level = d.body["level"].as_str().unwrap_or("");
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td class=\"{}\">{}</td><td>{}</td><td>{}</td></tr>",
                incident_link(&d.id),
                escape(&d.scope),
                escape(d.body["deployment_id"].as_str().unwrap_or("")),
                escape(level),
                escape(level),
                escape(&d.status),
                when(d.body["opened_at"].as_i64())
            );
        }
        h.push_str("</table>");
    }
    for cur in store
        .list_docs("current_deployment", &DocFilter::default(), 50)
        .await?
    {
        environment(&mut h, store, policy, &cur, &incidents, now).await?;
    }
    approvals_and_rollbacks(&mut h, store).await?;
    unmapped(&mut h, store, now).await?;
    refusals(&mut h, store, now).await?;
    super::audit_section(&mut h, store).await?;
    let _ = write!(h, "<style>{}{CHART_STYLE}</style>", super::TABLE_STYLE);
    Ok(h)
}

const CHART_STYLE: &str = ".charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(380px,1fr));gap:1rem}\
    svg.chart{width:100%;height:auto;background:#fafbfc;border:1px solid #e4e7ec;border-radius:8px}";

async fn environment(
    h: &mut String,
    store: &dyn Store,
    policy: &Policy,
    cur: &crate::store::Doc,
    incidents: &[crate::store::Doc],
    now: Timestamp,
) -> StoreResult<()> {
    let env = cur.id.as_str();
    let current = cur.body["deployment_id"].as_str().unwrap_or("");
    let lkg = store.last_known_good(env).await?.map(|d| d.id);
    let deployments = store.recent_deployments(env, 8).await?;
    let to = minute_of(now.as_millis()) + 1;
    let start = to - 60;
    // The environment's last hour, whichever deployment served it.
    let mut rows = Vec::new();
    for d in &deployments {
        rows.extend(store.rollups(env, &d.id, start, to).await?);
    }
    let (mut rates, mut p95s) = (Vec::new(), Vec::new());
    for m in start..to {
        let minute: Vec<_> = rows.iter().filter(|r| r.minute == m).cloned().collect();
        let w = Window::from_rows(&minute);
        rates.push(w.error_rate().map(|r| r * 100.0));
        p95s.push(w.latency.quantile(0.95));
    }
    let markers: Vec<Marker> = deployments
        .iter()
        .map(|d| {
            let role = if d.id == current {
                Role::Current
            } else if lkg.as_deref() == Some(d.id.as_str()) {
                Role::LastKnownGood
            } else {
                Role::Other
            };
            // The current deployment went live when it became current.
            let live = if d.id == current {
                cur.body["since"]
                    .as_i64()
                    .unwrap_or(d.created_at.as_millis())
            } else {
                d.created_at.as_millis()
            };
            Marker {
                minute: minute_of(live),
                label: d.id.clone(),
                role,
            }
        })
        .collect();
    let shaded = incidents
        .iter()
        .filter(|i| i.scope == env)
        .filter_map(|i| {
            let opened = i.body["opened_at"].as_i64()?;
            let end = i.body["resolved_at"]
                .as_i64()
                .or(i.body["closed_at"].as_i64())
                .unwrap_or(now.as_millis());
            Some((minute_of(opened), minute_of(end) + 1))
        })
        .find(|(_, end)| *end > start);
    let r = &policy.rules;
    let _ = write!(h, "<h2>{}</h2><div class=\"charts\">", escape(env));
    h.push_str(&chart::render(&Chart {
        title: "Error rate (5xx share), per minute",
        unit: "%",
        start,
        points: &rates,
        thresholds: &[
            ("warning", r.error_rate.warning * 100.0),
            ("critical", r.error_rate.critical * 100.0),
        ],
        markers: &markers,
        shaded,
    }));
    h.push_str(&chart::render(&Chart {
        title: "P95 latency, per minute",
        unit: " ms",
        start,
        points: &p95s,
        thresholds: &[
            ("warning", r.latency_p95_ms.warning),
            ("critical", r.latency_p95_ms.critical),
        ],
        markers: &markers,
        shaded,
    }));
    h.push_str(
        "</div><table><tr><th>Deployment</th><th>State</th><th>Created</th><th>Role</th></tr>",
    );
    for d in &deployments {
        let mark = match (d.id == current, lkg.as_deref() == Some(d.id.as_str())) {
            (true, true) => "current · last known good",
            (true, false) => "current",
            (false, true) => "last known good",
            _ => "",
        };
        let _ = write!(
            h,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td><strong>{mark}</strong></td></tr>",
            escape(&d.id),
            d.state.as_str(),
            when(Some(d.created_at.as_millis()))
        );
    }
    h.push_str("</table>");
    Ok(())
}

async fn approvals_and_rollbacks(h: &mut String, store: &dyn Store) -> StoreResult<()> {
    h.push_str("<h2>Approvals and rollbacks</h2><table><tr><th>Incident</th><th>Record</th><th>Status</th><th>Detail</th><th>Updated</th></tr>");
    for kind in [
        crate::flows::approval::APPROVAL_KIND,
        crate::flows::execute::EXECUTION_KIND,
    ] {
        for d in store.list_docs(kind, &DocFilter::default(), 10).await? {
            let detail = if kind == crate::flows::approval::APPROVAL_KIND {
                format!(
                    "{} of {} approvals, target {}",
                    d.body["decisions"].as_array().map_or(0, Vec::len),
                    d.body["quorum"],
                    d.body["target_deployment"].as_str().unwrap_or("?")
                )
            } else {
                format!(
                    "→ {}{}",
                    d.body["target_deployment"].as_str().unwrap_or("?"),
                    if d.body["dry_run"] == true {
                        " (dry run)"
                    } else {
                        ""
                    }
                )
            };
            let incident = d.body["incident_id"].as_str().unwrap_or("");
            let _ = write!(
                h,
                "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                if incident.is_empty() {
                    "—".to_string()
                } else {
                    incident_link(incident)
                },
                escape(&d.id),
                escape(&d.status),
                escape(&detail),
                when(Some(d.updated_at.as_millis()))
            );
        }
    }
    h.push_str("</table>");
    Ok(())
}

async fn unmapped(h: &mut String, store: &dyn Store, now: Timestamp) -> StoreResult<()> {
    let counts = crate::flows::intake::unmapped::last_day(store, now).await?;
    if counts.is_empty() {
        return Ok(());
    }
    h.push_str("<h2>Signals that counted nowhere (24 h)</h2><p class=\"note\">No environment, or a deployment Vercel never reported: stored, not evaluated. See the README on mapping environments.</p><table><tr><th>Source and reason</th><th>Signals</th></tr>");
    for (what, n) in counts {
        let _ = write!(h, "<tr><td>{}</td><td>{n}</td></tr>", escape(&what));
    }
    h.push_str("</table>");
    Ok(())
}

async fn refusals(h: &mut String, store: &dyn Store, now: Timestamp) -> StoreResult<()> {
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
    // Counts, shown as whole numbers (a float sum of nothing is -0.0, which
    // printed as "-0").
    let mut by_reason: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    for r in &refused {
        *by_reason.entry(r.name.as_str()).or_default() += r.value.max(0.0).round() as u64;
    }
    let total: u64 = by_reason.values().sum();
    let detail = if by_reason.is_empty() {
        String::new()
    } else {
        format!(
            " ({})",
            escape(
                &by_reason
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        )
    };
    let _ = write!(
        h,
        "<h2>Refused approval links</h2><p class=\"note\">Last 60 minutes: {total}{detail}</p>"
    );
    Ok(())
}
