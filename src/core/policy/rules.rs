//! Detection thresholds. Defaults are the seed's table: error rate warn 2% /
//! crit 5% sustained 5 min, spike 10x baseline, P95 warn 500 ms / crit 1000 ms,
//! health check warn 1 / crit 3 consecutive failures, DB errors warn 10/min /
//! crit 50/min, memory warn 80% / crit 90%.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::PolicyError;
use crate::core::duration::serde_human;

/// A warning and a critical level of one measure.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    pub warning: f64,
    pub critical: f64,
}

/// All detection rules.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rules {
    /// Below this many requests in the window the verdict is "insufficient data".
    pub min_requests: u64,
    /// Share of requests answered 5xx (0.02 = 2%).
    pub error_rate: Threshold,
    /// How long a breach must last before it counts.
    #[serde(with = "serde_human")]
    pub sustained: Duration,
    /// Error rate this many times the previous deployment's counts as a spike.
    pub spike_factor: f64,
    /// P95 latency in milliseconds.
    pub latency_p95_ms: Threshold,
    /// Consecutive failed health probes.
    pub health_check_failures: Threshold,
    /// Database errors per minute.
    pub db_errors_per_min: Threshold,
    /// Memory use in percent of the limit.
    pub memory_pct: Threshold,
    /// Significance level for comparing against the previous deployment.
    pub significance: f64,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            min_requests: 100,
            error_rate: Threshold {
                warning: 0.02,
                critical: 0.05,
            },
            sustained: Duration::from_secs(5 * 60),
            spike_factor: 10.0,
            latency_p95_ms: Threshold {
                warning: 500.0,
                critical: 1000.0,
            },
            health_check_failures: Threshold {
                warning: 1.0,
                critical: 3.0,
            },
            db_errors_per_min: Threshold {
                warning: 10.0,
                critical: 50.0,
            },
            memory_pct: Threshold {
                warning: 80.0,
                critical: 90.0,
            },
            significance: 0.01,
        }
    }
}

impl Rules {
    pub(super) fn validate(&self) -> Vec<PolicyError> {
        let mut errs = Vec::new();
        let checks: [(&str, Threshold, f64); 5] = [
            ("error_rate", self.error_rate, 1.0),
            ("latency_p95_ms", self.latency_p95_ms, f64::MAX),
            (
                "health_check_failures",
                self.health_check_failures,
                f64::MAX,
            ),
            ("db_errors_per_min", self.db_errors_per_min, f64::MAX),
            ("memory_pct", self.memory_pct, 100.0),
        ];
        for (name, t, max) in checks {
            for (level, v) in [("warning", t.warning), ("critical", t.critical)] {
                if !v.is_finite() || v <= 0.0 || v > max {
                    errs.push(PolicyError::new(
                        format!("rules.{name}.{level}"),
                        format!("must be greater than 0 and at most {max}, got {v}"),
                    ));
                }
            }
            if t.warning > t.critical {
                errs.push(PolicyError::new(
                    format!("rules.{name}.warning"),
                    format!(
                        "({}) must not exceed rules.{name}.critical ({})",
                        t.warning, t.critical
                    ),
                ));
            }
        }
        if !(self.spike_factor > 1.0 && self.spike_factor.is_finite()) {
            errs.push(PolicyError::new(
                "rules.spike_factor",
                "must be greater than 1",
            ));
        }
        if !(self.significance > 0.0 && self.significance < 0.5) {
            errs.push(PolicyError::new(
                "rules.significance",
                "must be between 0 and 0.5",
            ));
        }
        if self.sustained.is_zero() {
            errs.push(PolicyError::new(
                "rules.sustained",
                "must be greater than 0",
            ));
        }
        errs
    }
}
