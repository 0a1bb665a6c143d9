//! Latency histograms: creation, a compact serialisable form for crossing process
//! boundaries, merging and summaries.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// A new latency histogram in microseconds (3 significant figures, auto-resizing).
pub fn new_hist() -> Histogram<u64> {
    // Constant, valid bounds (1 µs .. 60 s, 3 significant figures): this cannot fail.
    #[allow(clippy::expect_used)]
    let mut h = Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid constant bounds");
    h.auto(true);
    h
}

/// Records `value` (clamped to at least 1).
pub fn record(h: &mut Histogram<u64>, value: u64) {
    // With auto-resize on, recording cannot fail for values below u64::MAX / 2.
    let _ = h.record(value.clamp(1, u64::MAX / 4));
}

/// A histogram as `(value, count)` pairs of its non-empty buckets: small enough to send as
/// JSON between processes, exact enough to merge (values are bucket representatives).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistPairs(pub Vec<(u64, u64)>);

impl HistPairs {
    /// The non-empty buckets of `h`.
    pub fn of(h: &Histogram<u64>) -> HistPairs {
        HistPairs(h.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect())
    }

    /// Adds these counts to `h`.
    pub fn add_to(&self, h: &mut Histogram<u64>) {
        for &(value, count) in &self.0 {
            let _ = h.record_n(value.clamp(1, u64::MAX / 4), count);
        }
    }

    /// A histogram of these counts.
    pub fn to_hist(&self) -> Histogram<u64> {
        let mut h = new_hist();
        self.add_to(&mut h);
        h
    }
}

/// Percentiles of a latency distribution, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Number of samples.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 95th percentile.
    pub p95_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Largest sample.
    pub max_us: u64,
}

impl Summary {
    /// The summary of `h` (all zero when empty).
    pub fn of(h: &Histogram<u64>) -> Summary {
        if h.is_empty() {
            return Summary::default();
        }
        Summary {
            count: h.len(),
            p50_us: h.value_at_quantile(0.50),
            p95_us: h.value_at_quantile(0.95),
            p99_us: h.value_at_quantile(0.99),
            max_us: h.max(),
        }
    }
}

/// `(latency in µs, cumulative fraction)` points of the distribution of `h`, for a CDF plot:
/// one point per distinct bucket, thinned to at most `max_points`.
pub fn cdf_points(h: &Histogram<u64>, max_points: usize) -> Vec<(u64, f64)> {
    let total = h.len();
    if total == 0 || max_points == 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut seen = 0u64;
    for v in h.iter_recorded() {
        seen += v.count_at_value();
        out.push((h.highest_equivalent(v.value_iterated_to()), seen as f64 / total as f64));
    }
    if out.len() > max_points {
        let stride = out.len().div_ceil(max_points);
        let last = out.last().copied();
        out = out.into_iter().step_by(stride).collect();
        if let (Some(last), Some(end)) = (last, out.last())
            && *end != last
        {
            out.push(last);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip_and_merge() {
        let mut a = new_hist();
        for v in 1..=1000 {
            record(&mut a, v);
        }
        let pairs = HistPairs::of(&a);
        let json = serde_json::to_string(&pairs).unwrap();
        let back: HistPairs = serde_json::from_str(&json).unwrap();
        let mut merged = back.to_hist();
        pairs.add_to(&mut merged);
        assert_eq!(merged.len(), 2000);
        let s = Summary::of(&merged);
        assert_eq!(s.count, 2000);
        assert!((495..=505).contains(&s.p50_us), "{s:?}");
        assert!((985..=1000).contains(&s.p99_us), "{s:?}");
        assert_eq!(Summary::of(&new_hist()), Summary::default());
    }

    #[test]
    fn cdf_ends_at_one_and_is_thinned() {
        let mut h = new_hist();
        for v in 1..=5000 {
            record(&mut h, v * 10);
        }
        let points = cdf_points(&h, 100);
        assert!(points.len() <= 101, "{}", points.len());
        assert_eq!(points.last().map(|p| p.1), Some(1.0));
        assert!(points.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        assert!(cdf_points(&new_hist(), 10).is_empty());
    }
}
