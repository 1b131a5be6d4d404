//! What one deployment did over a window of minutes, folded from rollup
//! counters. The counter names are the contract between intake (which
//! writes them) and evaluation (which reads them).

use std::collections::BTreeMap;

use super::sketch::{LatencySketch, BUCKET_PREFIX};

/// One rollup counter of one minute.
#[derive(Clone, Debug, PartialEq)]
pub struct RollupRow {
    /// Minute number: milliseconds since the epoch / 60 000.
    pub minute: i64,
    /// Counter name, e.g. `requests`, `errors_5xx`, `lat:412`, `max:memory_pct`.
    pub name: String,
    pub value: f64,
}

/// Requests served.
pub const REQUESTS: &str = "requests";
/// Requests answered with a 5xx (or no response at all).
pub const ERRORS_5XX: &str = "errors_5xx";
/// Database errors reported by the app.
pub const DB_ERRORS: &str = "db_errors";
/// Synthetic probe outcomes.
pub const PROBE_OK: &str = "probe_ok";
pub const PROBE_FAIL: &str = "probe_fail";
/// Highest memory use reported, in percent of the limit.
pub const MEMORY_PCT: &str = "max:memory_pct";
/// App-defined counters are stored as `custom:<name>`.
pub const CUSTOM_PREFIX: &str = "custom:";

/// Minute number (ms since epoch / 60 000) of an instant.
pub fn minute_of(ms: i64) -> i64 {
    ms.div_euclid(60_000)
}

/// Aggregated measures of one deployment over a window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Window {
    pub requests: u64,
    pub errors_5xx: u64,
    pub db_errors: u64,
    pub probe_ok: u64,
    pub probe_fail: u64,
    pub memory_max_pct: Option<f64>,
    pub latency: LatencySketch,
    pub custom: BTreeMap<String, f64>,
    /// Minutes that had any counter.
    pub minutes_with_data: u32,
}

impl Window {
    /// Folds rollup rows (any order) into one window.
    pub fn from_rows(rows: &[RollupRow]) -> Self {
        let mut w = Window::default();
        let mut minutes = std::collections::BTreeSet::new();
        for r in rows {
            minutes.insert(r.minute);
            let count = if r.value.is_finite() && r.value > 0.0 {
                r.value.round() as u64
            } else {
                0
            };
            match r.name.as_str() {
                REQUESTS => w.requests += count,
                ERRORS_5XX => w.errors_5xx += count,
                DB_ERRORS => w.db_errors += count,
                PROBE_OK => w.probe_ok += count,
                PROBE_FAIL => w.probe_fail += count,
                MEMORY_PCT => {
                    w.memory_max_pct = Some(w.memory_max_pct.map_or(r.value, |m| m.max(r.value)))
                }
                name => {
                    if let Some(idx) = name
                        .strip_prefix(BUCKET_PREFIX)
                        .and_then(|i| i.parse::<i32>().ok())
                    {
                        w.latency.add_count(idx, count);
                    } else if let Some(c) = name.strip_prefix(CUSTOM_PREFIX) {
                        *w.custom.entry(c.to_string()).or_default() += r.value;
                    }
                }
            }
        }
        w.minutes_with_data = minutes.len() as u32;
        w
    }

    /// Share of requests that failed, if any requests were seen.
    pub fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors_5xx as f64 / self.requests as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(minute: i64, name: &str, value: f64) -> RollupRow {
        RollupRow {
            minute,
            name: name.into(),
            value,
        }
    }

    #[test]
    fn folds_counters_across_minutes() {
        let w = Window::from_rows(&[
            row(1, REQUESTS, 100.0),
            row(1, ERRORS_5XX, 3.0),
            row(2, REQUESTS, 50.0),
            row(2, MEMORY_PCT, 71.0),
            row(1, MEMORY_PCT, 64.0),
            row(2, "lat:300", 40.0),
            row(2, "custom:checkout_failures", 2.0),
            row(2, "unknown_counter", 9.0),
        ]);
        assert_eq!((w.requests, w.errors_5xx, w.minutes_with_data), (150, 3, 2));
        assert_eq!(w.memory_max_pct, Some(71.0));
        assert_eq!(w.latency.count(), 40);
        assert_eq!(w.custom["checkout_failures"], 2.0);
        assert_eq!(w.error_rate(), Some(0.02));
    }

    #[test]
    fn minutes_round_down_including_before_the_epoch() {
        assert_eq!(minute_of(119_999), 1);
        assert_eq!(minute_of(-1), -1);
    }
}
