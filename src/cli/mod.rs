//! The operator CLI's commands that talk to a running guard over HTTP
//! (`--url`, default `$ROLLBACK_GUARD_URL` or `http://127.0.0.1:3000`, with
//! `$OPERATOR_TOKEN`), and `migrations check`, which reads the migrations
//! folder. Every command that changes something shows what it will do and
//! acts only with `--yes`.

use crate::core::sql::Hazard;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::{json, Value};

/// A command's printable result and exit code.
pub struct Output {
    pub text: String,
    pub code: u8,
}

fn ok(text: String) -> Output {
    Output { text, code: 0 }
}

/// A failed command (exit code 1) with its message.
pub fn fail(text: impl Into<String>) -> Output {
    Output {
        text: text.into(),
        code: 1,
    }
}

/// HTTP access to a guard.
pub struct Guard {
    pub base: String,
    pub token: Option<String>,
    http: reqwest::Client,
}

impl Guard {
    /// A guard at `base` (an http(s) URL); the error names the flag.
    pub fn new(base: &str, token: Option<String>) -> Result<Self, String> {
        match url::Url::parse(base) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            Ok(u) => {
                return Err(format!(
                    "--url {base:?} is not an http(s) URL (scheme {:?})",
                    u.scheme()
                ))
            }
            Err(e) => {
                return Err(format!(
                    "--url {base:?} is not a URL ({e}); try http://127.0.0.1:3000"
                ))
            }
        }
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(120))
            .build()
            .expect("static client configuration");
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<(u16, Value), String> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let res = req
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| {
                // The reason is a few sources down ("connection refused").
                format!(
                    "cannot reach {}: {}",
                    self.base,
                    crate::core::cause::chain(&e.without_url())
                )
            })?;
        let status = res.status().as_u16();
        let body = res.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    async fn get(&self, path: &str) -> Result<(u16, Value), String> {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }
}

fn error_of(status: u16, body: &Value) -> String {
    format!(
        "{status} {}: {}",
        body["code"].as_str().unwrap_or("error"),
        body["detail"].as_str().unwrap_or("(no detail)")
    )
}

/// `status`: health plus open incidents.
pub async fn status(g: &Guard) -> Output {
    let health = match g.get("/api/health").await {
        Ok((_, h)) => h,
        Err(e) => return fail(e),
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "guard     {} ({})",
        g.base,
        health["status"].as_str().unwrap_or("unknown")
    );
    let _ = writeln!(
        out,
        "store     {} reachable={}",
        health["store"]["backend"].as_str().unwrap_or("?"),
        health["store"]["reachable"]
    );
    for e in health["config"]["errors"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "config    ERROR {}: {}",
            e["key"].as_str().unwrap_or("?"),
            e["detail"].as_str().unwrap_or("")
        );
    }
    for e in health["config"]["readiness"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let _ = writeln!(
            out,
            "config    NOT READY {}: {}",
            e["key"].as_str().unwrap_or("?"),
            e["detail"].as_str().unwrap_or("")
        );
    }
    for w in health["config"]["warnings"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let _ = writeln!(out, "config    warning: {}", w.as_str().unwrap_or(""));
    }
    if let Some(unmapped) = health["intake"]["unmapped_last_24h"].as_object() {
        for (what, n) in unmapped {
            let _ = writeln!(
                out,
                "intake    {n} signal(s) counted nowhere in 24 h: {what}"
            );
        }
    }
    match g.get("/api/incidents?status=open").await {
        Ok((200, body)) => {
            let list = body["incidents"].as_array().cloned().unwrap_or_default();
            let _ = writeln!(out, "incidents {} open", list.len());
            for i in list {
                let _ = writeln!(
                    out,
                    "  {}  {:<11} {:<9} {}",
                    i["id"].as_str().unwrap_or("?"),
                    i["environment"].as_str().unwrap_or("?"),
                    i["level"].as_str().unwrap_or("?"),
                    i["deployment_id"].as_str().unwrap_or("?")
                );
            }
        }
        Ok((s, body)) => {
            let _ = writeln!(out, "incidents unavailable: {}", error_of(s, &body));
            // A refused token or a failing guard is not a healthy status.
            return Output { code: 1, text: out };
        }
        Err(e) => return fail(e),
    }
    Output {
        code: u8::from(health["status"] != "ok"),
        text: out,
    }
}

/// What `incidents` lists.
pub struct IncidentQuery<'a> {
    pub id: Option<&'a str>,
    pub status: Option<&'a str>,
    pub environment: Option<&'a str>,
    pub limit: Option<u32>,
    /// The API's JSON instead of a table.
    pub json: bool,
}

/// `incidents`: a table (newest first, times in UTC), one incident in full,
/// or with `json` the API's answer.
pub async fn incidents(g: &Guard, q: &IncidentQuery<'_>) -> Output {
    let path = match q.id {
        Some(id) => format!("/api/incidents/{id}"),
        None => {
            let mut url = url::Url::parse("http://x/api/incidents").expect("constant URL");
            {
                let mut qp = url.query_pairs_mut();
                if let Some(s) = q.status {
                    qp.append_pair("status", s);
                }
                if let Some(e) = q.environment {
                    qp.append_pair("environment", e);
                }
                if let Some(l) = q.limit {
                    qp.append_pair("limit", &l.to_string());
                }
            }
            match url.query() {
                Some(qs) if !qs.is_empty() => format!("/api/incidents?{qs}"),
                _ => "/api/incidents".into(),
            }
        }
    };
    let body = match g.get(&path).await {
        Ok((200, body)) => body,
        Ok((s, body)) => return fail(error_of(s, &body)),
        Err(e) => return fail(e),
    };
    if q.json {
        return ok(serde_json::to_string_pretty(&body).unwrap_or_default() + "\n");
    }
    if q.id.is_some() {
        return ok(incident_text(&body));
    }
    let list = body["incidents"].as_array().cloned().unwrap_or_default();
    ok(incident_table(&list))
}

/// `2026-11-26T21:24:31.952Z` as `2026-11-26 21:24:31 UTC`.
fn human_time(v: &Value) -> String {
    match v.as_str() {
        Some(t) if t.len() >= 19 => format!("{} {} UTC", &t[..10], &t[11..19]),
        Some(t) => t.to_string(),
        None => "-".into(),
    }
}

fn incident_table(list: &[Value]) -> String {
    if list.is_empty() {
        return "no incidents\n".into();
    }
    let rows: Vec<[String; 6]> = list
        .iter()
        .map(|i| {
            let s = |k: &str| i[k].as_str().unwrap_or("-").to_string();
            [
                s("id"),
                s("environment"),
                s("level"),
                s("status"),
                s("deployment_id"),
                human_time(&i["opened_at"]),
            ]
        })
        .collect();
    let head = [
        "ID",
        "ENVIRONMENT",
        "LEVEL",
        "STATUS",
        "DEPLOYMENT",
        "OPENED",
    ];
    let mut widths = head.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}  ");
            }
        }
        l.push('\n');
        l
    };
    let mut out = line(&head.map(String::from));
    for r in &rows {
        out.push_str(&line(r));
    }
    out
}

fn incident_text(i: &Value) -> String {
    let mut out = String::new();
    let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let _ = writeln!(
        out,
        "{}  {} {} on {} ({})",
        s(&i["id"]),
        s(&i["environment"]),
        s(&i["level"]),
        s(&i["deployment_id"]),
        s(&i["status"])
    );
    let _ = writeln!(out, "opened   {}", human_time(&i["opened_at"]));
    if !i["resolved_at"].is_null() {
        let _ = writeln!(out, "resolved {}", human_time(&i["resolved_at"]));
    }
    for f in i["findings"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "finding  {} {}: {}",
            s(&f["level"]),
            s(&f["rule"]),
            s(&f["summary"])
        );
    }
    if !i["approval"].is_null() {
        let _ = writeln!(
            out,
            "approval {} ({} needed)",
            s(&i["approval"]["state"]),
            i["approval"]["quorum"]
        );
    }
    if !i["execution"].is_null() {
        let _ = writeln!(
            out,
            "rollback {} to {}",
            s(&i["execution"]["status"]),
            s(&i["execution"]["target_deployment"])
        );
    }
    out
}

/// `rollback`: shows the plan; with `yes`, executes it.
pub async fn rollback(
    g: &Guard,
    environment: &str,
    target: Option<&str>,
    reason: Option<&str>,
    yes: bool,
) -> Output {
    let mut body = json!({"environment": environment, "preview": true});
    if let Some(t) = target {
        body["target_deployment"] = json!(t);
    }
    if let Some(r) = reason {
        body["reason"] = json!(r);
    }
    let url = format!("{}/api/rollback", g.base);
    let plan = match g.send(g.http.post(&url).json(&body)).await {
        Ok((200, b)) => b["plan"].clone(),
        Ok((s, b)) => return fail(error_of(s, &b)),
        Err(e) => return fail(e),
    };
    let mut out = format!(
        "plan: roll back {} from {} to {}{}\n",
        plan["environment"].as_str().unwrap_or("?"),
        plan["from_deployment"].as_str().unwrap_or("?"),
        plan["target_deployment"].as_str().unwrap_or("?"),
        if plan["dry_run"] == true {
            " (dry run: the guard has no VERCEL_TOKEN)"
        } else {
            ""
        }
    );
    for line in crate::core::plan::summary_lines(&plan) {
        let _ = writeln!(out, "  - {line}");
    }
    if !yes {
        out.push_str("nothing done; run again with --yes to execute\n");
        return ok(out);
    }
    body["preview"] = json!(false);
    match g.send(g.http.post(&url).json(&body)).await {
        Ok((200, b)) => {
            let r = &b["rollback"];
            let _ = writeln!(
                out,
                "rollback {}: {}",
                r["execution_id"].as_str().unwrap_or("?"),
                r["status"].as_str().unwrap_or("?")
            );
            if let Some(e) = r["error"].as_str() {
                let _ = writeln!(out, "error: {e}");
            }
            // Each step as it ran, from the execution record.
            if let Some(id) = b["incident_id"].as_str() {
                if let Ok((200, d)) = g.get(&format!("/api/incidents/{id}")).await {
                    for st in d["execution"]["steps"].as_array().into_iter().flatten() {
                        let _ = writeln!(
                            out,
                            "  step {}: {}",
                            st["kind"].as_str().unwrap_or("?"),
                            st["status"].as_str().unwrap_or("?")
                        );
                    }
                }
            }
            let v = &r["verification"];
            let healthy = v["healthy"].as_bool();
            match healthy {
                Some(true) => {
                    let n = v["probes"].as_array().map_or(0, Vec::len);
                    let _ = if n == 0 {
                        writeln!(out, "verification: no probes configured for this environment (nothing checked)")
                    } else {
                        writeln!(out, "verification: all {n} probes passed")
                    };
                }
                Some(false) => {
                    let reasons: Vec<&str> = v["reasons"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    let _ = writeln!(out, "verification FAILED: {}", reasons.join("; "));
                }
                None => {
                    if let Some(skipped) = v["skipped"].as_str() {
                        let _ = writeln!(out, "verification skipped: {skipped}");
                    }
                }
            }
            // Superseded, refused, failed, still running or unhealthy after: not done.
            Output {
                code: u8::from(r["status"] != "succeeded" || healthy == Some(false)),
                text: out,
            }
        }
        Ok((s, b)) => fail(format!("{out}{}", error_of(s, &b))),
        Err(e) => fail(e),
    }
}

/// `approve`: shows what a link approves; with `yes`, records the decision.
pub async fn approve(g: &Guard, link_or_token: &str, reject: bool, yes: bool) -> Output {
    let token = link_or_token
        .split("token=")
        .nth(1)
        .unwrap_or(link_or_token)
        .split('&')
        .next()
        .unwrap_or_default()
        .to_string();
    let base = link_or_token
        .split("/api/approve")
        .next()
        .filter(|b| b.starts_with("http"))
        .unwrap_or(&g.base)
        .to_string();
    let view = match g
        .send(
            g.http
                .get(format!("{base}/api/approve"))
                .query(&[("token", &token)]),
        )
        .await
    {
        Ok((200, b)) => b,
        Ok((s, b)) => return fail(error_of(s, &b)),
        Err(e) => return fail(e),
    };
    let r = &view["request"];
    let mut out = format!(
        "request {} ({}) for {}: roll back {} from {} to {}; {} of {} approvals\n",
        r["id"].as_str().unwrap_or("?"),
        r["state"].as_str().unwrap_or("?"),
        view["approver"].as_str().unwrap_or("?"),
        r["environment"].as_str().unwrap_or("?"),
        r["from_deployment"].as_str().unwrap_or("?"),
        r["target_deployment"].as_str().unwrap_or("?"),
        r["approvals"],
        r["quorum"]
    );
    if !yes {
        out.push_str("nothing recorded; run again with --yes to ");
        out.push_str(if reject { "reject\n" } else { "approve\n" });
        return ok(out);
    }
    let decision = if reject { "reject" } else { "approve" };
    match g
        .send(
            g.http
                .post(format!("{base}/api/approve"))
                .form(&[("token", token.as_str()), ("decision", decision)]),
        )
        .await
    {
        Ok((200, b)) => {
            let _ = writeln!(
                out,
                "recorded: {decision}; request is now {}",
                b["request"]["state"].as_str().unwrap_or("?")
            );
            if let Some(s) = b["rollback"]["status"].as_str() {
                let _ = writeln!(out, "rollback: {s}");
            }
            ok(out)
        }
        Ok((s, b)) => fail(format!("{out}{}", error_of(s, &b))),
        Err(e) => fail(e),
    }
}

/// `migrations check`: every migration has a down script; destructive ones are flagged.
pub fn migrations_check(dir: &Path, down_file: &str, as_json: bool) -> Output {
    let list = match crate::integrations::migrations::read_dir(dir, down_file) {
        Ok(l) => l,
        Err(e) => return fail(format!("cannot read {}: {e}", dir.display())),
    };
    let mut report = Vec::new();
    let mut out = String::new();
    let (mut safe, mut hazardous, mut missing, mut not_atomic) = (0, 0, 0, 0);
    for m in &list {
        let up: Vec<Hazard> = crate::core::sql::analyze(&m.up_sql)
            .into_iter()
            .filter(|h| h.kind.needs_backup())
            .collect();
        let (status, down) = match &m.down_sql {
            None => {
                missing += 1;
                ("missing", Vec::new())
            }
            Some(down) => {
                let hazards = crate::core::sql::analyze(down);
                let atomic = crate::core::sql::atomic_body(down).err();
                if let Some(e) = &atomic {
                    not_atomic += 1;
                    let _ = writeln!(out, "NOT ATOMIC {}  {e}", m.name);
                }
                if hazards.is_empty() && atomic.is_none() {
                    safe += 1;
                    ("safe", hazards)
                } else {
                    hazardous += 1;
                    ("hazardous", hazards)
                }
            }
        };
        match status {
            "missing" => {
                let _ = writeln!(out, "MISSING    {}  (no {down_file})", m.name);
            }
            "safe" => {
                let _ = writeln!(out, "ok         {}", m.name);
            }
            _ => {
                let _ = writeln!(out, "HAZARDS    {}  (down)", m.name);
                for h in &down {
                    let _ = writeln!(out, "  {:<19} {h}", h.kind.as_str());
                }
            }
        }
        if !up.is_empty() {
            let _ = writeln!(
                out,
                "  up needs a pre-migration backup: {}",
                up.iter()
                    .map(|h| h.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
        let json_hazards = |hs: &[Hazard]| {
            hs.iter()
                .map(|h| json!({"kind": h.kind.as_str(), "statement": h.statement, "reason": h.reason}))
                .collect::<Vec<_>>()
        };
        report.push(
            json!({"migration": m.name, "down": status, "down_hazards": json_hazards(&down),
                           "up_needs_backup": json_hazards(&up)}),
        );
    }
    let why = if list.is_empty() {
        format!(
            "no migrations found in {}: expected folders like 20240101000000_name/migration.sql (check --dir or database.migrations_dir)",
            dir.display()
        )
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "{} migrations: {safe} safe, {hazardous} with down hazards, {missing} without a down script, {not_atomic} whose down cannot run in one transaction",
        list.len()
    );
    if !why.is_empty() {
        let _ = writeln!(out, "{why}");
    }
    let code = u8::from(hazardous > 0 || missing > 0 || list.is_empty());
    if as_json {
        let body = json!({"ok": code == 0, "migrations": report, "error": if why.is_empty() { Value::Null } else { json!(why) }});
        return Output {
            code,
            text: format!("{body:#}\n"),
        };
    }
    Output { code, text: out }
}
