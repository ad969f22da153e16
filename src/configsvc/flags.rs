//! Feature flags (seed 002, pattern 4): `POST /api/v1/feature-flags/evaluate`
//! per flag and user, cached for a short TTL, off when the evaluation fails
//! (seed 002) unless the flag's [`Flag::default_on_error`] says otherwise.
//! Without a config service (the embedded default) every flag is its default.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::client::ConfigServiceClient;
use super::metrics::ConfigMetrics;

/// How long one evaluation is trusted: short, so a roll-out or a kill switch
/// reaches the engine within seconds, long enough to spare the service a call per order.
pub const FLAG_TTL_DEFAULT: Duration = Duration::from_secs(10);
/// Cached evaluations kept at most; the cache starts over when full (per-user flags grow with users).
pub const FLAG_CACHE_ENTRIES_MAX: usize = 10_000;

/// A flag the engine evaluates, with its documented behaviour on error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flag {
    pub name: &'static str,
    /// Evaluated per user (the order's owner) rather than once for everyone.
    pub per_user: bool,
    /// What the flag is when it cannot be evaluated (seed 002: off).
    pub default_on_error: bool,
}

/// Evaluations by (flag, user when per user): whether on, and since when.
type Evaluations = HashMap<(&'static str, Option<String>), (bool, Instant)>;

/// The evaluator.
pub struct FeatureFlags {
    client: Option<ConfigServiceClient>,
    ttl: Duration,
    cache: Mutex<Evaluations>,
    metrics: ConfigMetrics,
}

impl FeatureFlags {
    /// `client` None: no config service, every flag answers its default.
    pub fn new(client: Option<ConfigServiceClient>, ttl: Duration, metrics: ConfigMetrics) -> Self {
        Self {
            client,
            ttl,
            cache: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// Whether `flag` is on, for `user_id` when the flag is per user.
    pub async fn enabled(&self, flag: Flag, user_id: Option<&str>) -> bool {
        let Some(client) = &self.client else {
            return flag.default_on_error;
        };
        let key = (
            flag.name,
            if flag.per_user {
                user_id.map(str::to_owned)
            } else {
                None
            },
        );
        if let Some((on, at)) = self.lock().get(&key) {
            if at.elapsed() < self.ttl {
                return *on;
            }
        }
        match client.evaluate_flag(flag.name, key.1.as_deref()).await {
            Ok(on) => {
                let mut cache = self.lock();
                if cache.len() >= FLAG_CACHE_ENTRIES_MAX {
                    cache.clear();
                }
                cache.insert(key, (on, Instant::now()));
                on
            }
            Err(error) => {
                self.metrics.flag_errors_total.with_label_values(&[flag.name]).inc();
                tracing::warn!(flag = flag.name, %error, on = flag.default_on_error, "feature flag evaluation failed; using its default");
                flag.default_on_error
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Evaluations> {
        self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use wiremock::matchers::{body_partial_json, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::*;

    const PER_USER: Flag = Flag {
        name: "order_service_test_flag",
        per_user: true,
        default_on_error: false,
    };

    #[tokio::test]
    async fn flags_are_evaluated_per_user_cached_and_off_on_error() {
        // Proves per-user evaluation with the contract's body, one call per user within the TTL, and off on error.
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/api/v1/feature-flags/evaluate"))
            .and(body_partial_json(
                serde_json::json!({"flag_name": PER_USER.name, "environment": "prod", "user_id": "alice"}),
            ))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(serde_json::json!({"enabled": true, "reason": "rollout"})),
            )
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(body_partial_json(serde_json::json!({"user_id": "bob"})))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"enabled": false})))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(body_partial_json(serde_json::json!({"user_id": "carol"})))
            .respond_with(ResponseTemplate::new(500))
            .mount(&server)
            .await;
        let client = ConfigServiceClient::new(&server.uri(), "prod", "k").unwrap();
        let metrics = ConfigMetrics::new().unwrap();
        let flags = FeatureFlags::new(Some(client), FLAG_TTL_DEFAULT, metrics.clone());
        for _ in 0..3 {
            assert!(flags.enabled(PER_USER, Some("alice")).await);
            assert!(!flags.enabled(PER_USER, Some("bob")).await);
        }
        assert!(!flags.enabled(PER_USER, Some("carol")).await);
        assert_eq!(metrics.flag_errors_total.with_label_values(&[PER_USER.name]).get(), 1);
        let on_by_default = Flag {
            default_on_error: true,
            ..PER_USER
        };
        assert!(flags.enabled(on_by_default, Some("carol")).await);
        // No config service: the default.
        let offline = FeatureFlags::new(None, FLAG_TTL_DEFAULT, metrics);
        assert!(!offline.enabled(PER_USER, Some("alice")).await);
    }
}
