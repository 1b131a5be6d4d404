//! Small-sample statistics for regression detection (pure, no allocation-heavy
//! libraries): Wilson intervals for one rate, the exact conditional binomial
//! test for two rates, and a Mann-Whitney U test on two latency sketches.

use super::sketch::LatencySketch;

/// z for a two-sided 95% interval.
pub const Z95: f64 = 1.959_963_984_540_054;

/// Wilson score interval for `k` successes in `n` trials.
pub fn wilson(k: u64, n: u64, z: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (k, n) = (k as f64, n as f64);
    let p = k / n;
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let centre = p + z2 / (2.0 * n);
    let margin = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    (
        ((centre - margin) / denom).max(0.0),
        ((centre + margin) / denom).min(1.0),
    )
}

/// ln(n!) via Stirling's series for large n (exact table-free; error < 1e-10 for n ≥ 10).
fn ln_factorial(n: u64) -> f64 {
    if n < 20 {
        return (1..=n).map(|i| (i as f64).ln()).sum();
    }
    let x = n as f64 + 1.0;
    (x - 0.5) * x.ln() - x + 0.5 * (2.0 * std::f64::consts::PI).ln() + 1.0 / (12.0 * x)
        - 1.0 / (360.0 * x.powi(3))
        + 1.0 / (1260.0 * x.powi(5))
}

/// P(X ≥ k) for X ~ Binomial(n, p), summed exactly in log space.
pub fn binomial_upper_tail(k: u64, n: u64, p: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if k > n || p <= 0.0 {
        return 0.0;
    }
    if p >= 1.0 {
        return 1.0;
    }
    let (lp, lq) = (p.ln(), (1.0 - p).ln());
    let ln_n = ln_factorial(n);
    let mut total = 0.0;
    for i in k..=n {
        let term =
            (ln_n - ln_factorial(i) - ln_factorial(n - i) + i as f64 * lp + (n - i) as f64 * lq)
                .exp();
        total += term;
        // Terms fall off geometrically past the mode; stop once they no longer matter.
        if term < total * 1e-15 && (i as f64) > n as f64 * p {
            break;
        }
    }
    total.min(1.0)
}

/// One-sided exact test that the current rate (`k1` of `n1`) exceeds the
/// baseline rate (`k2` of `n2`): given `k1 + k2` events, under equal rates
/// `k1 ~ Binomial(k1 + k2, n1 / (n1 + n2))`. Returns the p-value.
pub fn rate_increase_p_value(k1: u64, n1: u64, k2: u64, n2: u64) -> f64 {
    if n1 == 0 || n2 == 0 {
        return 1.0;
    }
    let share = n1 as f64 / (n1 + n2) as f64;
    binomial_upper_tail(k1, k1 + k2, share)
}

/// Standard normal upper tail P(Z > z) (Abramowitz-Stegun 7.1.26 via erfc; error < 1.5e-7).
pub fn normal_upper_tail(z: f64) -> f64 {
    let x = z / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erfc = poly * (-x * x).exp();
    let erfc = if x >= 0.0 { erfc } else { 2.0 - erfc };
    0.5 * erfc
}

/// One-sided Mann-Whitney U test that `current` latencies are stochastically
/// larger than `baseline`, on sketch buckets (values in one bucket are ties).
/// Normal approximation with tie correction. Returns `(p_value, cles)` where
/// `cles` = P(current > baseline) + ½·P(tie).
pub fn mann_whitney_greater(
    current: &LatencySketch,
    baseline: &LatencySketch,
) -> Option<(f64, f64)> {
    let (n1, n2) = (current.count() as f64, baseline.count() as f64);
    if n1 == 0.0 || n2 == 0.0 {
        return None;
    }
    let cur: std::collections::BTreeMap<i32, u64> = current.buckets().collect();
    let base: std::collections::BTreeMap<i32, u64> = baseline.buckets().collect();
    let mut keys: Vec<i32> = cur.keys().chain(base.keys()).copied().collect();
    keys.sort_unstable();
    keys.dedup();
    let (mut u, mut below_base, mut tie_term) = (0.0, 0.0, 0.0);
    for k in keys {
        let a = *cur.get(&k).unwrap_or(&0) as f64;
        let b = *base.get(&k).unwrap_or(&0) as f64;
        u += a * (below_base + 0.5 * b);
        below_base += b;
        let t = a + b;
        tie_term += t * t * t - t;
    }
    let n = n1 + n2;
    let mean = n1 * n2 / 2.0;
    let var = n1 * n2 / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)).max(1.0));
    let cles = u / (n1 * n2);
    if var <= 0.0 {
        return Some((if u > mean { 0.0 } else { 1.0 }, cles));
    }
    // Continuity correction of 0.5 toward the mean.
    let z = (u - mean - 0.5) / var.sqrt();
    Some((normal_upper_tail(z), cles))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn wilson_matches_published_examples() {
        // 3/100 → [1.0%, 8.5%]; 2/1000 → [0.05%, 0.73%] (anchors.md §4.2).
        let (lo, hi) = wilson(3, 100, Z95);
        assert!(
            close(lo, 0.0103, 0.0005) && close(hi, 0.0845, 0.0005),
            "{lo} {hi}"
        );
        let (lo, hi) = wilson(2, 1000, Z95);
        assert!(
            close(lo, 0.00055, 0.0001) && close(hi, 0.0073, 0.0001),
            "{lo} {hi}"
        );
        assert_eq!(wilson(0, 0, Z95), (0.0, 1.0));
    }

    #[test]
    fn conditional_binomial_matches_published_examples() {
        // 3/100 vs 2/1000 → p ≈ 0.0065; 1/100 vs 2/1000 → p ≈ 0.25 (anchors.md §4.3).
        assert!(close(
            rate_increase_p_value(3, 100, 2, 1000),
            0.0065,
            0.0005
        ));
        assert!(close(rate_increase_p_value(1, 100, 2, 1000), 0.25, 0.01));
        assert_eq!(rate_increase_p_value(0, 100, 5, 1000), 1.0);
    }

    #[test]
    fn binomial_tail_is_exact_for_small_cases_and_stable_for_large_ones() {
        // P(X ≥ 2) for Bin(3, 0.5) = 4/8.
        assert!(close(binomial_upper_tail(2, 3, 0.5), 0.5, 1e-12));
        assert!(close(
            binomial_upper_tail(1, 10, 0.1),
            1.0 - 0.9f64.powi(10),
            1e-12
        ));
        // Large n: mean 10_000, sd ≈ 99.5; 3 sd above → ≈ 0.00135.
        let p = binomial_upper_tail(10_299, 1_000_000, 0.01);
        assert!(close(p, 0.00135, 0.0003), "{p}");
    }

    #[test]
    fn normal_tail_is_accurate() {
        assert!(close(normal_upper_tail(0.0), 0.5, 1e-7));
        assert!(close(normal_upper_tail(1.959_964), 0.025, 1e-6));
        assert!(close(normal_upper_tail(-1.0), 0.841_344_7, 1e-6));
    }

    #[test]
    fn mann_whitney_detects_a_shift_and_not_noise() {
        let (mut base, mut same, mut slower) = (
            LatencySketch::default(),
            LatencySketch::default(),
            LatencySketch::default(),
        );
        for i in 0..300 {
            let v = 100.0 + (i % 50) as f64;
            base.add(v);
            same.add(v + 0.2);
            slower.add(v * 1.3);
        }
        let (p, cles) = mann_whitney_greater(&slower, &base).unwrap();
        assert!(p < 1e-6 && cles > 0.8, "{p} {cles}");
        let (p, _) = mann_whitney_greater(&same, &base).unwrap();
        assert!(p > 0.05, "{p}");
        assert_eq!(mann_whitney_greater(&LatencySketch::default(), &base), None);
    }
}
