//! The plan model as people read it: a plan description (built by
//! `flows::plan`: steps, hazards, what a real run would refuse) rendered as
//! short lines for the approval page, messages and the CLI. Pure.

use serde_json::Value;

/// The description as short lines for people (messages and the approval page).
pub fn summary_lines(description: &Value) -> Vec<String> {
    let mut lines = Vec::new();
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    };
    for step in description["steps"].as_array().into_iter().flatten() {
        match step["kind"].as_str() {
            Some("code") => lines.push(format!(
                "Code: Vercel Instant Rollback from {} to {}",
                step["from"].as_str().unwrap_or("?"),
                step["to"].as_str().unwrap_or("?")
            )),
            Some("config") => {
                let vars = step["vars"].as_array().cloned().unwrap_or_default();
                let manual: Vec<&str> = vars
                    .iter()
                    .filter(|v| v["restore"] == "manual")
                    .filter_map(|v| v["key"].as_str())
                    .collect();
                let mut line = format!(
                    "Config: env vars of {} restored where they drifted ({} of {})",
                    step["snapshot_of"].as_str().unwrap_or("?"),
                    vars.len() - manual.len(),
                    vars.len()
                );
                if !manual.is_empty() {
                    line.push_str(&format!("; restore by hand: {}", manual.join(", ")));
                }
                lines.push(line);
            }
            Some("database") => {
                for m in step["migrations"].as_array().into_iter().flatten() {
                    let hazards = strs(&m["hazards"]);
                    let mut line =
                        format!("Database: reverse {}", m["name"].as_str().unwrap_or("?"));
                    if hazards.is_empty() {
                        line.push_str(" (keeps data)");
                    } else {
                        line.push_str(&format!(
                            " (LOSES DATA: {}; backup {})",
                            hazards.join("; "),
                            if m["backup_verified"] == true {
                                "verified"
                            } else {
                                "NOT verified"
                            }
                        ));
                    }
                    lines.push(line);
                }
            }
            _ => {}
        }
    }
    let has_database_step = description["steps"]
        .as_array()
        .is_some_and(|s| s.iter().any(|s| s["kind"] == "database"));
    if let (false, Some(why)) = (has_database_step, description["database"].as_str()) {
        if why.contains("unreachable") || why.contains("handshake") {
            lines.push(format!("Database: not checked: {why}"));
        }
    }
    for r in strs(&description["would_refuse"]) {
        lines.push(format!("A real run would refuse: {r}"));
    }
    if description["dry_run"] == true {
        lines.push("Dry run: no VERCEL_TOKEN, so nothing will be called.".into());
    }
    lines
}
