use std::time::Duration;

use super::*;
use crate::core::detect::sketch::LatencySketch;

fn window(requests: u64, errors: u64) -> Window {
    Window {
        requests,
        errors_5xx: errors,
        minutes_with_data: 5,
        ..Window::default()
    }
}

fn evidence(current: Window) -> Evidence {
    Evidence {
        current,
        observed_for: Duration::from_secs(600),
        ..Evidence::default()
    }
}

fn finding<'a>(v: &'a Verdict, rule: &str) -> &'a Finding {
    v.findings
        .iter()
        .find(|f| f.rule == rule)
        .unwrap_or_else(|| panic!("no {rule} finding in {v:#?}"))
}

#[test]
fn too_few_requests_is_an_explicit_insufficient_data_verdict() {
    let v = evaluate(&evidence(window(40, 20)), &Rules::default());
    assert_eq!(v.level, Level::InsufficientData);
    assert_eq!(finding(&v, "error_rate").level, Level::InsufficientData);
    assert!(finding(&v, "error_rate")
        .summary
        .contains("only 40 requests"));
}

#[test]
fn a_healthy_deployment_is_ok() {
    let v = evaluate(&evidence(window(1000, 3)), &Rules::default());
    assert_eq!(v.level, Level::Ok);
}

#[test]
fn error_rate_levels_follow_the_seed_thresholds_when_the_sample_confirms_them() {
    let rules = Rules::default();
    assert_eq!(
        finding(
            &evaluate(&evidence(window(2000, 200)), &rules),
            "error_rate"
        )
        .level,
        Level::Critical
    );
    assert_eq!(
        finding(&evaluate(&evidence(window(2000, 70)), &rules), "error_rate").level,
        Level::Warning
    );
    assert_eq!(
        finding(&evaluate(&evidence(window(2000, 20)), &rules), "error_rate").level,
        Level::Ok
    );
}

#[test]
fn a_borderline_rate_on_a_small_sample_drops_one_level() {
    // 5/100 = 5% observed, but the 95% lower bound is ~2.2%: warning, not critical.
    let v = evaluate(&evidence(window(100, 5)), &Rules::default());
    let f = finding(&v, "error_rate");
    assert_eq!(f.level, Level::Warning);
    assert!(f.evidence["wilson_low"].as_f64().unwrap() < 0.05);
}

#[test]
fn an_unsustained_breach_can_only_warn() {
    let mut e = evidence(window(2000, 400));
    e.observed_for = Duration::from_secs(120);
    assert_eq!(
        finding(&evaluate(&e, &Rules::default()), "error_rate").level,
        Level::Warning
    );
}

#[test]
fn a_ten_fold_significant_increase_over_the_previous_deployment_is_critical() {
    let mut e = evidence(window(1000, 30));
    e.baseline = Some(window(5000, 10));
    let v = evaluate(&e, &Rules::default());
    let f = finding(&v, "regression_vs_previous");
    assert_eq!(f.level, Level::Critical, "{f:#?}");
    assert!(f.evidence["p_value"].as_f64().unwrap() < 1e-6);
    assert_eq!(v.level, Level::Critical);
}

#[test]
fn a_similar_rate_to_the_previous_deployment_is_not_a_regression() {
    let mut e = evidence(window(1000, 4));
    e.baseline = Some(window(1000, 3));
    assert_eq!(
        finding(&evaluate(&e, &Rules::default()), "regression_vs_previous").level,
        Level::Ok
    );
}

#[test]
fn a_zero_error_baseline_does_not_make_one_error_a_spike() {
    let mut e = evidence(window(200, 1));
    e.baseline = Some(window(200, 0));
    assert_eq!(
        finding(&evaluate(&e, &Rules::default()), "regression_vs_previous").level,
        Level::Ok
    );
}

#[test]
fn latency_p95_thresholds_apply_to_the_sketch() {
    let mut w = window(500, 0);
    let mut s = LatencySketch::default();
    for i in 0..500 {
        s.add(if i < 450 { 120.0 } else { 1500.0 });
    }
    w.latency = s;
    let v = evaluate(&evidence(w), &Rules::default());
    let f = finding(&v, "latency_p95");
    assert_eq!(f.level, Level::Critical);
    assert!((f.evidence["p95_ms"].as_f64().unwrap() - 1500.0).abs() < 20.0);
}

#[test]
fn consecutive_probe_failures_escalate_without_traffic() {
    let mut e = evidence(window(0, 0));
    e.current.probe_fail = 3;
    e.consecutive_probe_failures = 3;
    let v = evaluate(&e, &Rules::default());
    assert_eq!(finding(&v, "health_check").level, Level::Critical);
    assert_eq!(v.level, Level::Critical);
    e.consecutive_probe_failures = 1;
    assert_eq!(
        finding(&evaluate(&e, &Rules::default()), "health_check").level,
        Level::Warning
    );
}

#[test]
fn db_errors_memory_and_alerts_map_to_levels() {
    let mut e = evidence(window(1000, 0));
    e.current.db_errors = 300; // 60/min over 5 min
    e.current.memory_max_pct = Some(85.0);
    e.firing_alerts = vec![FiringAlert {
        source: "sentry".into(),
        name: "Too many errors".into(),
        severity: "warning".into(),
    }];
    let v = evaluate(&e, &Rules::default());
    assert_eq!(finding(&v, "db_errors").level, Level::Critical);
    assert_eq!(finding(&v, "memory").level, Level::Warning);
    assert_eq!(finding(&v, "alert").level, Level::Warning);
    assert_eq!(v.level, Level::Critical);
}
