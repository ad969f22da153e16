//! Latency percentiles over every completed order: a sorted vector and the
//! nearest-rank rule, so p99.9 of 1,000 samples is the slowest one, not an
//! interpolation between two. Pure.

use std::time::Duration;

use serde::Serialize;

/// The distribution of end-to-end latencies, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: usize,
    pub min_ms: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// The nearest-rank percentile `q` (0 < q ≤ 1) of ascending `sorted`: the
/// smallest sample with at least `q` of all samples at or below it.
pub fn percentile(sorted: &[Duration], q: f64) -> Option<Duration> {
    if sorted.is_empty() || !(q > 0.0 && q <= 1.0) {
        return None;
    }
    // ceil(q·n) as a 1-based rank; the float product is exact enough for n < 2^52.
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}

impl LatencySummary {
    /// Summarises `latencies` (any order; sorted here). `None` when empty.
    pub fn from_latencies(mut latencies: Vec<Duration>) -> Option<Self> {
        latencies.sort_unstable();
        let count = latencies.len();
        let total: Duration = latencies.iter().sum();
        let at = |q: f64| percentile(&latencies, q).map_or(0.0, ms);
        Some(Self {
            count,
            min_ms: ms(*latencies.first()?),
            mean_ms: ms(total) / count as f64,
            p50_ms: at(0.50),
            p90_ms: at(0.90),
            p99_ms: at(0.99),
            p999_ms: at(0.999),
            max_ms: ms(*latencies.last()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(values: impl IntoIterator<Item = u64>) -> Vec<Duration> {
        values.into_iter().map(Duration::from_millis).collect()
    }

    #[test]
    fn nearest_rank_picks_a_real_sample() {
        // Proves the percentiles of 1..=100 ms are the textbook nearest-rank values.
        let sorted = millis(1..=100);
        assert_eq!(percentile(&sorted, 0.50), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&sorted, 0.99), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&sorted, 0.999), Some(Duration::from_millis(100)));
        assert_eq!(percentile(&sorted, 1.0), Some(Duration::from_millis(100)));
        assert_eq!(percentile(&sorted, 0.001), Some(Duration::from_millis(1)));
    }

    #[test]
    fn empty_input_or_a_bad_quantile_has_no_percentile() {
        // Proves nothing is invented when there are no samples or q is outside (0, 1].
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&millis([1]), 0.0), None);
        assert_eq!(percentile(&millis([1]), 1.5), None);
        assert_eq!(LatencySummary::from_latencies(Vec::new()), None);
    }

    #[test]
    fn the_summary_sorts_and_reports_the_tail() {
        // Proves an unsorted input of 1,000 samples with one 5 s outlier gives p99.9 below the outlier and max at it.
        let mut latencies = millis((1..=999).rev());
        latencies.push(Duration::from_secs(5));
        let summary = LatencySummary::from_latencies(latencies).unwrap();
        assert_eq!(summary.count, 1_000);
        assert_eq!(summary.min_ms, 1.0);
        assert_eq!(summary.p50_ms, 500.0);
        assert_eq!(summary.p99_ms, 990.0);
        assert_eq!(summary.p999_ms, 999.0);
        assert_eq!(summary.max_ms, 5_000.0);
        assert!((summary.mean_ms - (499_500.0 + 5_000.0) / 1_000.0).abs() < 1e-9);
    }
}
