//! The result of a run: JSON for machines (`--output`) and a short summary
//! for people. Pure: every figure comes from what the run measured.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::memory::MemoryReport;
use super::stats::LatencySummary;

/// Orders that did not complete, by cause.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Errors {
    /// AMQP publishes the broker refused or that failed.
    pub publish: u64,
    /// HTTP requests that failed or were not answered 2xx.
    pub http: u64,
    /// Orders sent without a position update within the timeout.
    pub timeouts: u64,
}

impl Errors {
    pub fn total(&self) -> u64 {
        self.publish + self.http + self.timeouts
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// `amqp` or `http`.
    pub transport: &'static str,
    /// Orders per second offered; `null` for `--rate max`.
    pub offered_rate_per_s: Option<f64>,
    /// The bound on orders in flight (`--in-flight`).
    pub in_flight_max: usize,
    pub users: usize,
    pub symbols: Vec<String>,
    pub started_at: DateTime<Utc>,
    pub timeout_s: f64,
    /// Orders handed to the transport.
    pub sent: u64,
    /// Orders whose position update arrived in time.
    pub completed: u64,
    pub errors: Errors,
    /// Position updates for orders this run did not send, or sent again.
    pub unmatched_updates: u64,
    /// From the first order's due time to the last send.
    pub send_s: f64,
    /// From the first order's due time to the last completion (to the
    /// run's end when nothing completed).
    pub elapsed_s: f64,
    /// Orders sent per second over `send_s`.
    pub sent_per_s: f64,
    /// Completions per second over `elapsed_s`.
    pub throughput_per_s: f64,
    /// End to end, from the due time to the matching position update.
    pub latency: Option<LatencySummary>,
    /// The engine's memory (`--engine-pid`).
    pub engine_memory: Option<MemoryReport>,
}

/// A few lines for stderr.
pub fn summary(report: &Report) -> String {
    let mut text = String::new();
    let offered = report
        .offered_rate_per_s
        .map_or_else(|| "max".to_owned(), |r| format!("{r}/s"));
    let _ = writeln!(
        text,
        "loadgen {} rate {offered} (in flight ≤ {}), {} users: sent {} in {:.2}s ({:.0}/s), completed {} in {:.2}s: {:.1} orders/s",
        report.transport,
        report.in_flight_max,
        report.users,
        report.sent,
        report.send_s,
        report.sent_per_s,
        report.completed,
        report.elapsed_s,
        report.throughput_per_s,
    );
    match &report.latency {
        Some(l) => {
            let _ = writeln!(
                text,
                "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  (min {:.2}, mean {:.2})",
                l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.min_ms, l.mean_ms
            );
        }
        None => {
            let _ = writeln!(text, "latency: no order completed");
        }
    }
    let _ = writeln!(
        text,
        "errors: {} (publish {}, http {}, timeouts {} after {}s); unmatched updates {}",
        report.errors.total(),
        report.errors.publish,
        report.errors.http,
        report.errors.timeouts,
        report.timeout_s,
        report.unmatched_updates
    );
    if let Some(m) = &report.engine_memory {
        let _ = writeln!(
            text,
            "engine pid {}: peak VmRSS {:.1} MiB over {} samples, last {:.1} MiB, VmHWM {:.1} MiB",
            m.pid,
            m.peak_rss_kib as f64 / 1024.0,
            m.samples,
            m.last_rss_kib as f64 / 1024.0,
            m.hwm_kib as f64 / 1024.0
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;

    fn report() -> Report {
        Report {
            transport: "amqp",
            offered_rate_per_s: Some(100.0),
            in_flight_max: 256,
            users: 10,
            symbols: vec!["AAPL".into()],
            started_at: Utc.with_ymd_and_hms(2026, 11, 21, 23, 0, 0).unwrap(),
            timeout_s: 30.0,
            sent: 100,
            completed: 98,
            errors: Errors {
                publish: 1,
                http: 0,
                timeouts: 1,
            },
            unmatched_updates: 0,
            send_s: 0.99,
            elapsed_s: 1.25,
            sent_per_s: 101.0,
            throughput_per_s: 78.4,
            latency: LatencySummary::from_latencies(vec![std::time::Duration::from_millis(12)]),
            engine_memory: Some(MemoryReport {
                pid: 42,
                samples: 5,
                peak_rss_kib: 2048,
                last_rss_kib: 1024,
                hwm_kib: 4096,
            }),
        }
    }

    #[test]
    fn the_json_names_every_figure() {
        // Proves the machine-readable result carries rate, counts, errors by cause, percentiles and memory under stable keys.
        let value = serde_json::to_value(report()).unwrap();
        assert_eq!(value["transport"], "amqp");
        assert_eq!(value["offered_rate_per_s"], json!(100.0));
        assert_eq!(value["completed"], json!(98));
        assert_eq!(value["errors"], json!({"publish": 1, "http": 0, "timeouts": 1}));
        assert_eq!(value["latency"]["p99_ms"], json!(12.0));
        assert_eq!(value["latency"]["p999_ms"], json!(12.0));
        assert_eq!(value["engine_memory"]["peak_rss_kib"], json!(2048));
        assert_eq!(value["started_at"], "2026-11-21T23:00:00Z");
        let max = Report {
            offered_rate_per_s: None,
            ..report()
        };
        assert_eq!(serde_json::to_value(max).unwrap()["offered_rate_per_s"], json!(null));
    }

    #[test]
    fn the_summary_reads_as_a_sentence_per_topic() {
        // Proves the human summary states rate, throughput, the tail, errors and memory.
        let text = summary(&report());
        assert!(text.contains("rate 100/s"), "{text}");
        assert!(text.contains("78.4 orders/s"), "{text}");
        assert!(text.contains("p99.9 12.00"), "{text}");
        assert!(
            text.contains("errors: 2 (publish 1, http 0, timeouts 1 after 30s)"),
            "{text}"
        );
        assert!(text.contains("peak VmRSS 2.0 MiB"), "{text}");
    }
}
