//! The settings layer's Prometheus metrics. Created before the engine (the
//! settings come first), registered into the engine's registry by
//! `Application::build`. Labels are configuration keys and flag names: a
//! small administrative set, never a user or order id.

use prometheus::core::Collector;
use prometheus::{Gauge, IntCounter, IntCounterVec, Opts};

pub const FALLBACK_TOTAL: &str = "config_fallback_total";
pub const DISCREPANCY_TOTAL: &str = "config_discrepancy_total";
pub const STALE_SERVED_TOTAL: &str = "config_stale_served_total";
pub const CACHE_HITS_TOTAL: &str = "config_cache_hits_total";
pub const CACHE_MISSES_TOTAL: &str = "config_cache_misses_total";
pub const CACHE_HIT_RATIO: &str = "config_cache_hit_ratio";
pub const REFRESH_FAILURES_TOTAL: &str = "config_refresh_failures_total";
pub const REGISTRY_FAILURES_TOTAL: &str = "config_registry_failures_total";
pub const FLAG_ERRORS_TOTAL: &str = "config_flag_errors_total";

#[derive(Clone)]
pub struct ConfigMetrics {
    /// Label `key`: values taken from the environment because the config service failed (new_with_fallback).
    pub fallback_total: IntCounterVec,
    /// Label `key`: environment values that differ from the config service's (legacy_with_validation).
    pub discrepancy_total: IntCounterVec,
    /// Label `key`: reads answered with an expired value because the service failed.
    pub stale_served_total: IntCounterVec,
    pub cache_hits_total: IntCounter,
    pub cache_misses_total: IntCounter,
    /// Hits over reads since start (seed 003: above 0.95 in steady state).
    pub cache_hit_ratio: Gauge,
    /// Periodic reloads that failed (the last values stay in force).
    pub refresh_failures_total: IntCounter,
    /// Label `operation` (register, heartbeat, deregister): registry calls that failed.
    pub registry_failures_total: IntCounterVec,
    /// Label `flag`: evaluations that failed and answered the flag's default.
    pub flag_errors_total: IntCounterVec,
}

impl ConfigMetrics {
    /// Fails only on a malformed name, a programming error.
    pub fn new() -> Result<Self, prometheus::Error> {
        let by_key = |name: &str, help: &str| IntCounterVec::new(Opts::new(name, help), &["key"]);
        Ok(Self {
            fallback_total: by_key(
                FALLBACK_TOTAL,
                "Settings read from the environment because the config service failed.",
            )?,
            discrepancy_total: by_key(
                DISCREPANCY_TOTAL,
                "Environment values that differ from the config service's.",
            )?,
            stale_served_total: by_key(
                STALE_SERVED_TOTAL,
                "Expired cached values served because the config service failed.",
            )?,
            cache_hits_total: IntCounter::new(CACHE_HITS_TOTAL, "Configuration reads answered from the cache.")?,
            cache_misses_total: IntCounter::new(
                CACHE_MISSES_TOTAL,
                "Configuration reads that went to the config service.",
            )?,
            cache_hit_ratio: Gauge::new(CACHE_HIT_RATIO, "Share of configuration reads answered from the cache.")?,
            refresh_failures_total: IntCounter::new(
                REFRESH_FAILURES_TOTAL,
                "Periodic reloads of the configuration that failed.",
            )?,
            registry_failures_total: IntCounterVec::new(
                Opts::new(REGISTRY_FAILURES_TOTAL, "Service registry calls that failed."),
                &["operation"],
            )?,
            flag_errors_total: IntCounterVec::new(
                Opts::new(FLAG_ERRORS_TOTAL, "Feature flag evaluations that failed."),
                &["flag"],
            )?,
        })
    }

    /// Every collector, for registration in the engine's registry.
    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.fallback_total.clone()),
            Box::new(self.discrepancy_total.clone()),
            Box::new(self.stale_served_total.clone()),
            Box::new(self.cache_hits_total.clone()),
            Box::new(self.cache_misses_total.clone()),
            Box::new(self.cache_hit_ratio.clone()),
            Box::new(self.refresh_failures_total.clone()),
            Box::new(self.registry_failures_total.clone()),
            Box::new(self.flag_errors_total.clone()),
        ]
    }

    pub(crate) fn record_read(&self, hit: bool) {
        if hit {
            self.cache_hits_total.inc();
        } else {
            self.cache_misses_total.inc();
        }
        let hits = self.cache_hits_total.get() as f64;
        let total = hits + self.cache_misses_total.get() as f64;
        self.cache_hit_ratio.set(hits / total);
    }
}
