//! Rules → verdict. Pure: everything the rules look at comes in as
//! [`Evidence`]; the result says which rules fired, at what level, and why,
//! with the numbers an approver needs (counts, rates, baseline, p-values).

use std::time::Duration;

use serde_json::json;

use super::stats::{mann_whitney_greater, rate_increase_p_value, wilson, Z95};
use super::window::Window;
use crate::core::policy::{Rules, Threshold};

/// How bad things are. Ordered: `Ok < InsufficientData < Warning < Critical`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Ok,
    /// Not enough data to say either way — never read as healthy.
    InsufficientData,
    Warning,
    Critical,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::InsufficientData => "insufficient_data",
            Level::Warning => "warning",
            Level::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Level> {
        Some(match s {
            "ok" => Level::Ok,
            "insufficient_data" => Level::InsufficientData,
            "warning" => Level::Warning,
            "critical" => Level::Critical,
            _ => return None,
        })
    }
}

/// One rule's conclusion.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    pub rule: &'static str,
    pub level: Level,
    pub summary: String,
    pub evidence: serde_json::Value,
}

/// The evaluation of one deployment.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub level: Level,
    pub findings: Vec<Finding>,
}

/// A firing alert attributed to the deployment's environment.
#[derive(Clone, Debug, PartialEq)]
pub struct FiringAlert {
    pub source: String,
    pub name: String,
    /// `critical`, `warning`/`error`, anything else is informational.
    pub severity: String,
}

/// Everything the rules look at.
#[derive(Clone, Debug, Default)]
pub struct Evidence {
    /// The current deployment over the last `rules.sustained`.
    pub current: Window,
    /// How much of the sustained window the deployment has existed for.
    pub observed_for: Duration,
    /// The previous deployment over its last comparable period, if known.
    pub baseline: Option<Window>,
    /// Failed probes in a row, newest first, for the current deployment.
    pub consecutive_probe_failures: u32,
    pub firing_alerts: Vec<FiringAlert>,
}

fn threshold_level(value: f64, t: Threshold) -> Level {
    if value >= t.critical {
        Level::Critical
    } else if value >= t.warning {
        Level::Warning
    } else {
        Level::Ok
    }
}

fn one_below(level: Level) -> Level {
    match level {
        Level::Critical => Level::Warning,
        _ => Level::Ok,
    }
}

/// Until a breach has lasted the sustained window it can only warn.
fn cap_unsustained(level: Level, sustained: bool) -> Level {
    if !sustained && level == Level::Critical {
        Level::Warning
    } else {
        level
    }
}

/// Applies every rule.
pub fn evaluate(e: &Evidence, rules: &Rules) -> Verdict {
    let sustained = e.observed_for >= rules.sustained;
    let mut findings = vec![error_rate(e, rules, sustained)];
    findings.extend(spike(e, rules));
    findings.extend(latency(e, rules, sustained));
    findings.extend(health_checks(e, rules));
    findings.extend(db_errors(e, rules, sustained));
    findings.extend(memory(e, rules, sustained));
    findings.extend(alerts(e));
    let level = findings
        .iter()
        .map(|f| f.level)
        .max()
        .unwrap_or(Level::InsufficientData);
    Verdict { level, findings }
}

fn error_rate(e: &Evidence, rules: &Rules, sustained: bool) -> Finding {
    let (n, k) = (e.current.requests, e.current.errors_5xx);
    if n < rules.min_requests {
        return Finding {
            rule: "error_rate",
            level: Level::InsufficientData,
            summary: format!(
                "only {n} requests in the window (need {})",
                rules.min_requests
            ),
            evidence: json!({"requests": n, "errors_5xx": k, "min_requests": rules.min_requests}),
        };
    }
    let rate = k as f64 / n as f64;
    let (lo, hi) = wilson(k, n, Z95);
    // The observed level stands only if the 95% lower bound confirms it;
    // otherwise it drops one level (small samples are noisy).
    let observed = threshold_level(rate, rules.error_rate);
    let confirmed = if threshold_level(lo, rules.error_rate) >= observed {
        observed
    } else {
        one_below(observed)
    };
    let level = cap_unsustained(confirmed, sustained);
    Finding {
        rule: "error_rate",
        level,
        summary: format!(
            "{k} of {n} requests failed ({:.2}%, 95% CI {:.2}–{:.2}%)",
            rate * 100.0,
            lo * 100.0,
            hi * 100.0
        ),
        evidence: json!({
            "requests": n, "errors_5xx": k, "rate": rate, "wilson_low": lo, "wilson_high": hi,
            "warning": rules.error_rate.warning, "critical": rules.error_rate.critical, "sustained": sustained,
        }),
    }
}

fn spike(e: &Evidence, rules: &Rules) -> Option<Finding> {
    let base = e.baseline.as_ref()?;
    let (n1, k1, n2, k2) = (
        e.current.requests,
        e.current.errors_5xx,
        base.requests,
        base.errors_5xx,
    );
    if n1 < rules.min_requests || n2 < rules.min_requests {
        return Some(Finding {
            rule: "regression_vs_previous",
            level: Level::InsufficientData,
            summary: format!(
                "comparison needs {} requests on both sides (have {n1} and {n2})",
                rules.min_requests
            ),
            evidence: json!({"current_requests": n1, "baseline_requests": n2}),
        });
    }
    let (r1, r2) = (k1 as f64 / n1 as f64, k2 as f64 / n2 as f64);
    // Half an error as a floor keeps a zero-error baseline from giving an infinite ratio.
    let ratio = r1 / r2.max(0.5 / n2 as f64);
    let p = rate_increase_p_value(k1, n1, k2, n2);
    let significant = p < rules.significance && r1 - r2 >= 0.005;
    let level = if significant && ratio >= rules.spike_factor {
        Level::Critical
    } else if significant && ratio >= 1.5 {
        Level::Warning
    } else {
        Level::Ok
    };
    Some(Finding {
        rule: "regression_vs_previous",
        level,
        summary: if k2 == 0 {
            format!(
                "error rate {:.2}% vs no errors in {n2} requests on the previous deployment ({})",
                r1 * 100.0,
                p_value(p)
            )
        } else {
            format!(
                "error rate {:.2}% vs {:.2}% on the previous deployment ({ratio:.1}x, {})",
                r1 * 100.0,
                r2 * 100.0,
                p_value(p)
            )
        },
        evidence: json!({
            "current": {"requests": n1, "errors_5xx": k1, "rate": r1},
            "baseline": {"requests": n2, "errors_5xx": k2, "rate": r2},
            "ratio": ratio, "p_value": p, "test": "exact conditional binomial (one-sided)",
            "spike_factor": rules.spike_factor, "significance": rules.significance,
        }),
    })
}

fn latency(e: &Evidence, rules: &Rules, sustained: bool) -> Option<Finding> {
    let sketch = &e.current.latency;
    if sketch.count() == 0 {
        return None;
    }
    if sketch.count() < rules.min_requests {
        return Some(Finding {
            rule: "latency_p95",
            level: Level::InsufficientData,
            summary: format!(
                "only {} latency samples (need {})",
                sketch.count(),
                rules.min_requests
            ),
            evidence: json!({"samples": sketch.count()}),
        });
    }
    let p95 = sketch.quantile(0.95).unwrap_or(0.0);
    let mut level = cap_unsustained(threshold_level(p95, rules.latency_p95_ms), sustained);
    let mut evidence = json!({"samples": sketch.count(), "p95_ms": p95, "warning_ms": rules.latency_p95_ms.warning, "critical_ms": rules.latency_p95_ms.critical});
    let mut summary = format!("P95 latency {p95:.0} ms over {} requests", sketch.count());
    if let Some(base) = e
        .baseline
        .as_ref()
        .filter(|b| b.latency.count() >= rules.min_requests)
    {
        if let Some((p, cles)) = mann_whitney_greater(sketch, &base.latency) {
            let base_p95 = base.latency.quantile(0.95).unwrap_or(0.0);
            evidence["baseline"] = json!({"samples": base.latency.count(), "p95_ms": base_p95, "mann_whitney_p": p, "cles": cles});
            summary.push_str(&format!(
                " (previous deployment {base_p95:.0} ms, {})",
                p_value(p)
            ));
            if p < rules.significance && p95 >= 1.5 * base_p95 && level == Level::Ok {
                level = Level::Warning;
            }
        }
    }
    Some(Finding {
        rule: "latency_p95",
        level,
        summary,
        evidence,
    })
}

fn health_checks(e: &Evidence, rules: &Rules) -> Option<Finding> {
    if e.current.probe_ok + e.current.probe_fail == 0 && e.consecutive_probe_failures == 0 {
        return None;
    }
    let n = e.consecutive_probe_failures;
    Some(Finding {
        rule: "health_check",
        level: threshold_level(f64::from(n), rules.health_check_failures),
        summary: format!(
            "{n} consecutive failed probes ({} ok / {} failed in the window)",
            e.current.probe_ok, e.current.probe_fail
        ),
        evidence: json!({"consecutive_failures": n, "ok": e.current.probe_ok, "failed": e.current.probe_fail}),
    })
}

fn db_errors(e: &Evidence, rules: &Rules, sustained: bool) -> Option<Finding> {
    if e.current.db_errors == 0 {
        return None;
    }
    let minutes = (rules.sustained.as_secs_f64() / 60.0).max(1.0);
    let per_min = e.current.db_errors as f64 / minutes;
    Some(Finding {
        rule: "db_errors",
        level: cap_unsustained(threshold_level(per_min, rules.db_errors_per_min), sustained),
        summary: format!("{per_min:.1} database errors per minute"),
        evidence: json!({"db_errors": e.current.db_errors, "per_minute": per_min}),
    })
}

fn memory(e: &Evidence, rules: &Rules, sustained: bool) -> Option<Finding> {
    let pct = e.current.memory_max_pct?;
    Some(Finding {
        rule: "memory",
        level: cap_unsustained(threshold_level(pct, rules.memory_pct), sustained),
        summary: format!("memory peaked at {pct:.0}% of the limit"),
        evidence: json!({"max_pct": pct}),
    })
}

fn alerts(e: &Evidence) -> Vec<Finding> {
    e.firing_alerts
        .iter()
        .filter_map(|a| {
            let level = match a.severity.to_ascii_lowercase().as_str() {
                "critical" | "fatal" | "page" => Level::Critical,
                "warning" | "error" | "high" => Level::Warning,
                _ => return None,
            };
            Some(Finding {
                rule: "alert",
                level,
                summary: format!("{} alert firing: {}", a.source, a.name),
                evidence: json!({"source": a.source, "name": a.name, "severity": a.severity}),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;

#[cfg(test)]
#[test]
fn p_values_read_as_people_read_them() {
    assert_eq!(p_value(8.1e-168), "p < 0.0001");
    assert_eq!(p_value(0.0031), "p = 0.0031");
}

/// A p-value as people read it: `p = 0.003`, or `p < 0.0001` when tinier
/// (the exact `8.10e-168` says nothing more and wraps badly on a phone).
/// The exact value stays in the finding's evidence.
pub fn p_value(p: f64) -> String {
    if p < 0.0001 {
        "p < 0.0001".to_string()
    } else {
        format!("p = {p:.4}")
    }
}
