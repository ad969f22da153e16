//! Seed 003's success criteria for the settings layer: a configuration read
//! served from the cache in under 10 ms (p99) and a cache hit rate over 95 %
//! in steady state. Reads one key through `ConfigCache` against a local
//! stand-in of the config service (wiremock), each read timed on its own, in
//! two runs: TTL 300 s (the default: every read after the first is a hit) and
//! a TTL short enough that the run crosses it many times (refetches counted as
//! misses), so the hit rate is not 100 % by construction.
//!
//! `CONFIG_CACHE_READS=200000 cargo bench --bench config_cache`.
//! Prints the figures and one JSON line; never asserts a number.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use order_engine::configsvc::{ConfigCache, ConfigMetrics, ConfigServiceClient};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const KEY: &str = "ORDER_SERVICE_DAILY_ORDER_LIMIT";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

async fn run(server: &MockServer, ttl: Duration, reads: usize) -> serde_json::Value {
    let client = ConfigServiceClient::new(&server.uri(), "prod", "bench-key").unwrap();
    let metrics = ConfigMetrics::new().unwrap();
    let cache = ConfigCache::new(client, ttl, metrics.clone());
    let mut times = Vec::with_capacity(reads);
    let started = Instant::now();
    for _ in 0..reads {
        let asked = Instant::now();
        let value = cache.get(KEY).await.unwrap();
        times.push(asked.elapsed());
        assert_eq!(value.as_deref(), Some("100"));
    }
    let wall = started.elapsed();
    times.sort_unstable();
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    let figures = json!({
        "ttl_ms": ttl.as_millis() as u64,
        "reads": reads,
        "wall_ms": wall.as_millis() as u64,
        "p50_us": micros(percentile(&times, 0.50)),
        "p99_us": micros(percentile(&times, 0.99)),
        "p999_us": micros(percentile(&times, 0.999)),
        "max_us": micros(times[times.len() - 1]),
        "hits": metrics.cache_hits_total.get(),
        "misses": metrics.cache_misses_total.get(),
        "hit_ratio": metrics.cache_hit_ratio.get(),
    });
    println!(
        "ttl {:>6} ms: {} reads in {} ms; p50 {:.2} us, p99 {:.2} us, p99.9 {:.2} us, max {:.0} us; hit ratio {:.4} ({} misses)",
        ttl.as_millis(),
        reads,
        wall.as_millis(),
        figures["p50_us"].as_f64().unwrap_or_default(),
        figures["p99_us"].as_f64().unwrap_or_default(),
        figures["p999_us"].as_f64().unwrap_or_default(),
        figures["max_us"].as_f64().unwrap_or_default(),
        figures["hit_ratio"].as_f64().unwrap_or_default(),
        figures["misses"],
    );
    figures
}

fn main() {
    let reads: usize = std::env::var("CONFIG_CACHE_READS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path(format!("/api/v1/config/{KEY}")))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"key": KEY, "value": "100"})))
            .mount(&server)
            .await;
        let default_ttl = run(&server, Duration::from_secs(300), reads).await;
        // Short enough that a run of a few hundred ms crosses it many times.
        let short_ttl = run(&server, Duration::from_millis(10), reads).await;
        println!(
            "{}",
            json!({"bench": "config_cache", "default_ttl": default_ttl, "short_ttl": short_ttl})
        );
    });
}
