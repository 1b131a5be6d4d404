//! The dashboard's detail view of one incident (or break-glass rollback):
//! findings with their evidence, the rollback plan, the approval state with
//! each decision, the execution's steps and verification, and the audit
//! trail of everything about it. Read from `web::incidents::detail`, the
//! same view the JSON API gives.

use std::fmt::Write;

use serde_json::Value;

use crate::core::html::escape;
use crate::store::{Store, StoreResult};
use crate::web::dashboard::overview::when;

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "—".into(),
        other => other.to_string(),
    }
}

/// An RFC 3339 string from the API view as `… UTC`.
fn at(v: &Value) -> String {
    v.as_str()
        .and_then(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        })
        .map(|t| when(Some((t.unix_timestamp_nanos() / 1_000_000) as i64)))
        .or_else(|| v.as_i64().map(|ms| when(Some(ms))))
        .unwrap_or_else(|| "—".into())
}

/// The page, or `None` when nothing is known by that id.
pub async fn render(store: &dyn Store, id: &str) -> StoreResult<Option<String>> {
    let Some(d) = crate::web::incidents::detail(store, id).await? else {
        return Ok(None);
    };
    let mut h = String::from("<p><a href=\"/api/dashboard\">← Dashboard</a></p>");
    let manual = d["kind"] == "manual";
    let _ = write!(
        h,
        "<h1>{} <code>{}</code></h1><table class=\"facts\">\
         <tr><th>Environment</th><td>{}</td></tr><tr><th>Deployment</th><td><code>{}</code></td></tr>\
         <tr><th>Status</th><td>{}</td></tr><tr><th>Level</th><td class=\"{}\">{}</td></tr>\
         <tr><th>Opened</th><td>{}</td></tr><tr><th>Resolved</th><td>{}</td></tr>",
        if manual { "Break-glass rollback" } else { "Incident" },
        escape(id),
        escape(&s(&d["environment"])),
        escape(&s(&d["deployment_id"])),
        escape(&s(&d["status"])),
        escape(&s(&d["level"])),
        escape(&s(&d["level"])),
        at(&d["opened_at"]),
        at(&d["resolved_at"]),
    );
    if !d["reason"].is_null() {
        let _ = write!(
            h,
            "<tr><th>Reason</th><td>{}</td></tr>",
            escape(&s(&d["reason"]))
        );
    }
    if !d["outcome"].is_null() {
        let o = &d["outcome"];
        let _ = write!(
            h,
            "<tr><th>Outcome</th><td>{} → <code>{}</code>{}</td></tr>",
            escape(&s(&o["result"])),
            escape(&s(&o["target_deployment"])),
            match o["verified"].as_bool() {
                Some(true) => " · verified healthy",
                Some(false) => " · verification FAILED",
                None => "",
            }
        );
    }
    h.push_str("</table>");

    // Findings and their evidence.
    if let Some(findings) = d["verdict"]["findings"].as_array() {
        h.push_str("<h2>Findings</h2><table><tr><th>Rule</th><th>Level</th><th>Summary</th><th>Evidence</th></tr>");
        for f in findings {
            let evidence = serde_json::to_string_pretty(&f["evidence"]).unwrap_or_default();
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td><details><summary>evidence</summary><pre>{}</pre></details></td></tr>",
                escape(&s(&f["rule"])),
                escape(&s(&f["level"])),
                escape(&s(&f["level"])),
                escape(&s(&f["summary"])),
                escape(&evidence)
            );
        }
        h.push_str("</table>");
    }

    // The plan, as approvers were shown it.
    let exe = &d["execution"];
    if !exe["plan"].is_null() {
        h.push_str("<h2>Plan</h2><ul>");
        for line in crate::core::plan::summary_lines(&exe["plan"]) {
            let _ = write!(h, "<li>{}</li>", escape(&line));
        }
        h.push_str("</ul>");
    }

    // Approval.
    let apr = &d["approval"];
    h.push_str("<h2>Approval</h2>");
    if apr.is_null() {
        h.push_str(if manual {
            "<p class=\"note\">None: an operator started this rollback.</p>"
        } else {
            "<p class=\"note\">No approval was requested.</p>"
        });
    } else {
        let _ = write!(
            h,
            "<p><code>{}</code>: <strong>{}</strong>, {} needed, expires {}</p>",
            escape(&s(&apr["id"])),
            escape(&s(&apr["state"])),
            escape(&s(&apr["quorum"])),
            at(&apr["expires_at"])
        );
        let decisions = apr["decisions"].as_array().cloned().unwrap_or_default();
        if !decisions.is_empty() {
            h.push_str("<table><tr><th>Approver</th><th>Decision</th><th>At</th></tr>");
            for x in &decisions {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                    escape(&s(&x["approver"])),
                    escape(&s(&x["decision"])),
                    at(&x["at"])
                );
            }
            h.push_str("</table>");
        }
    }

    // Execution.
    h.push_str("<h2>Rollback</h2>");
    if exe.is_null() {
        h.push_str("<p class=\"note\">Nothing was executed.</p>");
    } else {
        let _ = write!(
            h,
            "<p><code>{}</code>: <strong>{}</strong> → <code>{}</code>{}</p>",
            escape(&s(&exe["id"])),
            escape(&s(&exe["status"])),
            escape(&s(&exe["target_deployment"])),
            if exe["dry_run"] == true {
                " (dry run: nothing was called)"
            } else {
                ""
            }
        );
        if !exe["error"].is_null() {
            let _ = write!(
                h,
                "<p class=\"critical\">Error: {}</p>",
                escape(&s(&exe["error"]))
            );
        }
        h.push_str("<table><tr><th>Step</th><th>Status</th><th>Detail</th></tr>");
        for st in exe["steps"].as_array().into_iter().flatten() {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&s(&st["kind"])),
                escape(&s(&st["status"])),
                escape(&s(&st["error"]
                    .as_str()
                    .map_or(st["detail"].clone(), |e| Value::String(e.into()))))
            );
        }
        h.push_str("</table>");
        let v = &exe["verification"];
        if !v.is_null() {
            let verdict = match v["healthy"].as_bool() {
                Some(true) => "every probe passed".to_string(),
                Some(false) => format!(
                    "FAILED: {}",
                    v["reasons"]
                        .as_array()
                        .map(|a| a
                            .iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join("; "))
                        .unwrap_or_default()
                ),
                None => s(&v["skipped"]),
            };
            let _ = write!(h, "<p>Verification: {}</p>", escape(&verdict));
        }
    }

    // Audit trail.
    h.push_str("<h2>Audit trail</h2>");
    super::audit_table(
        &mut h,
        d["audit"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| super::AuditRow {
                seq: r["seq"].to_string(),
                at: at(&r["at"]),
                actor: s(&r["actor"]),
                action: s(&r["action"]),
                subject: s(&r["subject"]),
            }),
    );
    let _ = write!(
        h,
        "<style>{}table.facts th{{width:9rem}}pre{{white-space:pre-wrap;font-size:.8rem;margin:.3rem 0}}</style>",
        super::TABLE_STYLE
    );
    Ok(Some(h))
}
