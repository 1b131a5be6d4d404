//! A mergeable latency sketch (DDSketch-style log buckets): any quantile is
//! within 1% relative error, two sketches merge by adding bucket counts, and
//! buckets map one-to-one onto rollup counters (`lat:<index>`), so per-minute
//! rollups can be summed over any window without rescanning raw events.

use std::collections::BTreeMap;

/// Relative accuracy of quantiles.
pub const RELATIVE_ACCURACY: f64 = 0.01;
/// Rollup counter prefix for bucket counts.
pub const BUCKET_PREFIX: &str = "lat:";
/// Latencies at or below this (ms) share the lowest bucket.
const MIN_MS: f64 = 0.01;

fn gamma() -> f64 {
    (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY)
}

/// Counts of latencies per logarithmic bucket.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LatencySketch {
    buckets: BTreeMap<i32, u64>,
    count: u64,
}

impl LatencySketch {
    /// The bucket index of a latency in milliseconds.
    pub fn index(ms: f64) -> i32 {
        let ms = if ms.is_finite() {
            ms.max(MIN_MS)
        } else {
            MIN_MS
        };
        (ms.ln() / gamma().ln()).ceil() as i32
    }

    /// The representative value of a bucket (relative error ≤ 1% for every member).
    pub fn value(index: i32) -> f64 {
        let g = gamma();
        2.0 * g.powi(index) / (g + 1.0)
    }

    /// Records one latency.
    pub fn add(&mut self, ms: f64) {
        self.add_count(Self::index(ms), 1);
    }

    /// Adds `n` observations to bucket `index`.
    pub fn add_count(&mut self, index: i32, n: u64) {
        if n > 0 {
            *self.buckets.entry(index).or_default() += n;
            self.count += n;
        }
    }

    /// Adds every observation of `other`.
    pub fn merge(&mut self, other: &LatencySketch) {
        for (&i, &n) in &other.buckets {
            self.add_count(i, n);
        }
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Bucket counts in ascending latency order.
    pub fn buckets(&self) -> impl Iterator<Item = (i32, u64)> + '_ {
        self.buckets.iter().map(|(&i, &n)| (i, n))
    }

    /// The `q` quantile (0..=1) in ms, or `None` when empty. Uses the
    /// nearest-rank definition: the smallest value with at least `q·n` at or below it.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (&i, &n) in &self.buckets {
            seen += n;
            if seen >= rank {
                return Some(Self::value(i));
            }
        }
        self.buckets.keys().next_back().map(|&i| Self::value(i))
    }

    /// The rollup counters for this sketch: `("lat:<index>", count)`.
    pub fn to_counters(&self) -> Vec<(String, f64)> {
        self.buckets
            .iter()
            .map(|(i, n)| (format!("{BUCKET_PREFIX}{i}"), *n as f64))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_one_percent_of_the_exact_value() {
        let mut s = LatencySketch::default();
        let values: Vec<f64> = (1..=10_000).map(|i| i as f64 * 0.37).collect();
        for v in &values {
            s.add(*v);
        }
        for q in [0.5, 0.9, 0.95, 0.99] {
            let exact = values[((q * values.len() as f64).ceil() as usize) - 1];
            let got = s.quantile(q).unwrap();
            assert!(
                (got - exact).abs() / exact <= RELATIVE_ACCURACY + 1e-9,
                "q{q}: {got} vs {exact}"
            );
        }
    }

    #[test]
    fn merging_equals_adding_everything_to_one_sketch() {
        let (mut a, mut b, mut all) = (
            LatencySketch::default(),
            LatencySketch::default(),
            LatencySketch::default(),
        );
        for i in 0..500 {
            let v = (i * 7 % 913) as f64 + 0.5;
            if i % 2 == 0 {
                a.add(v)
            } else {
                b.add(v)
            }
            all.add(v);
        }
        a.merge(&b);
        assert_eq!(a, all);
    }

    #[test]
    fn counters_round_trip() {
        let mut s = LatencySketch::default();
        for v in [0.0, 3.0, 3.01, 250.0, 1e6, f64::NAN] {
            s.add(v);
        }
        let mut back = LatencySketch::default();
        for (name, n) in s.to_counters() {
            back.add_count(
                name.trim_start_matches(BUCKET_PREFIX).parse().unwrap(),
                n as u64,
            );
        }
        assert_eq!(back, s);
        assert_eq!(back.count(), 6);
    }

    #[test]
    fn empty_sketch_has_no_quantile() {
        assert_eq!(LatencySketch::default().quantile(0.95), None);
    }
}
