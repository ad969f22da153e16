//! One JSON line per concurrency level: throughput, per-order latency
//! percentiles, and what was compared on which machine. Must never print
//! anything but that line to stdout: scripts read stdout as JSON lines.

use std::time::Duration;

use serde::Serialize;

/// The crates and servers a figure depends on.
#[derive(Debug, Clone, Serialize)]
pub struct Versions {
    pub cqrs_es: &'static str,
    pub postgres_es: &'static str,
    pub sqlx: &'static str,
    pub tokio: &'static str,
    pub rustc: &'static str,
    pub postgres: String,
}

impl Versions {
    /// The locked crate versions (from build.rs) and the server's.
    pub fn new(postgres: String) -> Self {
        Self {
            cqrs_es: env!("PEER_VERSION_CQRS_ES"),
            postgres_es: env!("PEER_VERSION_POSTGRES_ES"),
            sqlx: env!("PEER_VERSION_SQLX"),
            tokio: env!("PEER_VERSION_TOKIO"),
            rustc: env!("PEER_VERSION_RUSTC"),
            postgres,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub bench: &'static str,
    /// Orders in flight at once (one worker each).
    pub concurrency: usize,
    /// Connections in the pool the framework's repository uses.
    pub pool_size: u32,
    pub orders: u64,
    /// Rows in the events table after the level: four per order when all is well.
    pub events: u64,
    pub seconds: f64,
    pub orders_per_sec: f64,
    pub events_per_sec: f64,
    /// Per order, from its first command sent to its last one answered.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// What the OS offers this process (the machine's cores unless restricted).
    pub cores: usize,
    /// The tokio worker threads that ran the load.
    pub runtime_threads: usize,
    pub versions: Versions,
}

/// Nearest-rank percentile of sorted latencies, in milliseconds; 0 when empty.
pub fn percentile_ms(sorted: &[Duration], quantile: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    // Nearest rank: the smallest value with at least `quantile` of the values at or below it.
    let rank = (quantile * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    sorted[index].as_secs_f64() * 1_000.0
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::percentile_ms;

    #[test]
    fn percentiles_are_nearest_rank() {
        // Proves p50 and p99 of 1..=100 ms are 50 and 99 ms, and empty input gives 0.
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&sorted, 0.50), 50.0);
        assert_eq!(percentile_ms(&sorted, 0.99), 99.0);
        assert_eq!(percentile_ms(&sorted, 1.0), 100.0);
        assert_eq!(percentile_ms(&[], 0.5), 0.0);
    }
}
