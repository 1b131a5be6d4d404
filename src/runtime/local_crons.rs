//! The crons of `vercel.json`, run by the local server (`serve`) against
//! itself, so a local guard evaluates without anyone calling the cron routes
//! by hand. Each schedule runs at start if it is due in the current minute,
//! then at every minute boundary, with `Authorization: Bearer $CRON_SECRET`
//! as Vercel sends it.

use std::time::Duration;

use crate::core::clock::{Clock, Timestamp};
use crate::core::cron::Schedule;

/// One cron: a path and when it runs.
#[derive(Clone, Debug)]
pub struct Cron {
    pub path: String,
    pub schedule: String,
    parsed: Schedule,
}

/// The `crons` of a `vercel.json` text.
pub fn from_vercel_json(text: &str) -> Result<Vec<Cron>, String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("vercel.json: {e}"))?;
    v["crons"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    let path = c["path"]
                        .as_str()
                        .ok_or("vercel.json: a cron has no path")?;
                    let schedule = c["schedule"]
                        .as_str()
                        .ok_or("vercel.json: a cron has no schedule")?;
                    Ok(Cron {
                        path: path.to_string(),
                        schedule: schedule.to_string(),
                        parsed: Schedule::parse(schedule)?,
                    })
                })
                .collect()
        })
        .unwrap_or_else(|| Ok(Vec::new()))
}

fn now() -> Timestamp {
    crate::integrations::clock::SystemClock.now()
}

/// Runs `crons` against `base` forever, printing each run.
pub async fn run(base: String, crons: Vec<Cron>, secret: String) {
    let client = reqwest::Client::new();
    loop {
        let at = now();
        for c in crons.iter().filter(|c| c.parsed.fires_at(at)) {
            let res = client
                .get(format!("{base}{}", c.path))
                .bearer_auth(&secret)
                .timeout(Duration::from_secs(300))
                .send()
                .await;
            match res {
                Ok(r) => crate::say!("cron {} -> {}", c.path, r.status().as_u16()),
                Err(e) => crate::say!("cron {} failed: {e}", c.path),
            }
        }
        let into_minute = (now().as_millis().rem_euclid(60_000)) as u64;
        tokio::time::sleep(Duration::from_millis(60_000 - into_minute + 50)).await;
    }
}
