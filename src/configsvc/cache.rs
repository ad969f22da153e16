//! The TTL cache in front of the config service (seed 002, pattern 2): a
//! value is served from memory for `ttl`, then fetched again; when that
//! fetch fails the last value is served (stale on error) with a warning and
//! `config_stale_served_total{key}`. Never logs a value.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;
use std::time::Duration;

use tokio::time::Instant;

use super::client::{ConfigServiceClient, ConfigServiceError};
use super::metrics::ConfigMetrics;

/// Seed 002: a cached value is kept for 300 s.
pub const CACHE_TTL_DEFAULT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
struct Cached {
    /// None: the service said the key does not exist (404), cached like a value.
    value: Option<String>,
    fetched: Instant,
}

/// Values of `order_service` by key.
pub struct ConfigCache {
    client: ConfigServiceClient,
    ttl: Duration,
    entries: RwLock<HashMap<String, Cached>>,
    metrics: ConfigMetrics,
}

impl ConfigCache {
    pub fn new(client: ConfigServiceClient, ttl: Duration, metrics: ConfigMetrics) -> Self {
        Self {
            client,
            ttl,
            entries: RwLock::new(HashMap::new()),
            metrics,
        }
    }

    pub fn client(&self) -> &ConfigServiceClient {
        &self.client
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn metrics(&self) -> &ConfigMetrics {
        &self.metrics
    }

    /// Fills the cache from one bulk load (at start, and on each refresh).
    pub fn fill(&self, values: &BTreeMap<String, String>) {
        let now = Instant::now();
        let mut entries = self.entries.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        // A key the service no longer lists is gone, not stale.
        entries.clear();
        entries.extend(values.iter().map(|(key, value)| {
            (
                key.clone(),
                Cached {
                    value: Some(value.clone()),
                    fetched: now,
                },
            )
        }));
    }

    /// What the cache holds now, fresh or not (the last known values).
    pub fn snapshot(&self) -> BTreeMap<String, String> {
        let entries = self.entries.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        entries
            .iter()
            .filter_map(|(key, cached)| cached.value.clone().map(|value| (key.clone(), value)))
            .collect()
    }

    /// One key: from memory within the TTL, else from the service; when the
    /// service fails, the last value it gave (stale), else the error.
    pub async fn get(&self, key: &str) -> Result<Option<String>, ConfigServiceError> {
        let last = {
            let entries = self.entries.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            entries.get(key).cloned()
        };
        if let Some(cached) = &last {
            if cached.fetched.elapsed() < self.ttl {
                self.metrics.record_read(true);
                return Ok(cached.value.clone());
            }
        }
        self.metrics.record_read(false);
        match self.client.get(key).await {
            Ok(value) => {
                let mut entries = self.entries.write().unwrap_or_else(std::sync::PoisonError::into_inner);
                entries.insert(
                    key.to_owned(),
                    Cached {
                        value: value.clone(),
                        fetched: Instant::now(),
                    },
                );
                Ok(value)
            }
            Err(error) => match last {
                Some(cached) => {
                    self.metrics.stale_served_total.with_label_values(&[key]).inc();
                    tracing::warn!(
                        key,
                        age_s = cached.fetched.elapsed().as_secs(),
                        %error,
                        "config service failed; serving the last value of {key} (stale)"
                    );
                    Ok(cached.value)
                }
                None => Err(error),
            },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use wiremock::matchers::{header, method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::*;

    fn cache(server: &MockServer, ttl: Duration) -> ConfigCache {
        let client = ConfigServiceClient::new(&server.uri(), "prod", "engine-key").unwrap();
        ConfigCache::new(client, ttl, ConfigMetrics::new().unwrap())
    }

    #[tokio::test]
    async fn a_value_is_served_from_memory_within_the_ttl_and_stale_when_the_service_fails() {
        // Proves the TTL cache of seed 002: one fetch, hits after it, a refetch after the TTL, and the
        // last value (with the stale metric) when that refetch fails.
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/api/v1/config/ORDER_SERVICE_DAILY_ORDER_LIMIT"))
            .and(query_param("environment", "prod"))
            .and(query_param("service_name", "order_service"))
            .and(header("X-Internal-API-Key", "engine-key"))
            .respond_with(ResponseTemplate::new(200).set_body_json(
                serde_json::json!({"key": "ORDER_SERVICE_DAILY_ORDER_LIMIT", "value": "10", "version": 3}),
            ))
            .up_to_n_times(2)
            .mount(&server)
            .await;
        let cache = cache(&server, Duration::from_millis(200));
        for _ in 0..5 {
            assert_eq!(
                cache.get("ORDER_SERVICE_DAILY_ORDER_LIMIT").await.unwrap().as_deref(),
                Some("10")
            );
        }
        assert_eq!(
            (
                cache.metrics.cache_hits_total.get(),
                cache.metrics.cache_misses_total.get()
            ),
            (4, 1)
        );
        assert!((cache.metrics.cache_hit_ratio.get() - 0.8).abs() < 1e-9);
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(
            cache.get("ORDER_SERVICE_DAILY_ORDER_LIMIT").await.unwrap().as_deref(),
            Some("10")
        );
        assert_eq!(cache.metrics.cache_misses_total.get(), 2);
        // The service now answers 503: the expired value is still served, and counted.
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(503))
            .mount(&server)
            .await;
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(
            cache.get("ORDER_SERVICE_DAILY_ORDER_LIMIT").await.unwrap().as_deref(),
            Some("10")
        );
        assert_eq!(
            cache
                .metrics
                .stale_served_total
                .with_label_values(&["ORDER_SERVICE_DAILY_ORDER_LIMIT"])
                .get(),
            1
        );
        // A key never fetched has nothing to fall back on.
        assert!(cache.get("ORDER_SERVICE_NEVER_SEEN").await.is_err());
    }

    #[tokio::test]
    async fn a_missing_key_is_none_and_cached() {
        // Proves a 404 is "not set" (the default applies), not an error, and is not asked again within the TTL.
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(404))
            .expect(1)
            .mount(&server)
            .await;
        let cache = cache(&server, Duration::from_secs(300));
        assert_eq!(cache.get("ORDER_SERVICE_NOPE").await.unwrap(), None);
        assert_eq!(cache.get("ORDER_SERVICE_NOPE").await.unwrap(), None);
    }
}
