//! How to reach one remote service: where, how patiently, and as whom.
//!
//! Never prints the API key: `ServiceCredentials`' `Debug` redacts it.

use std::time::Duration;

use super::resilience::{BreakerConfig, RetryPolicy};

/// Per-attempt timeout when nothing is configured.
pub const TIMEOUT_DEFAULT: Duration = Duration::from_secs(2);

/// Who this engine is to another service, and the shared key that proves it
/// (seed 001: `X-Service-Identity`, `X-Internal-API-Key`, HMAC signature).
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceCredentials {
    pub identity: String,
    pub api_key: String,
}

impl ServiceCredentials {
    pub fn new(identity: impl Into<String>, api_key: impl Into<String>) -> Self {
        Self {
            identity: identity.into(),
            api_key: api_key.into(),
        }
    }
}

impl std::fmt::Debug for ServiceCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceCredentials")
            .field("identity", &self.identity)
            .field("api_key", &"<redacted>")
            .finish()
    }
}

/// One remote service's address and resilience settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteServiceConfig {
    /// `http(s)://host:port`, optionally with a path prefix; a trailing `/` is ignored.
    pub base_url: String,
    /// Bound on one attempt: connecting, sending and reading the whole answer.
    pub timeout: Duration,
    pub retry: RetryPolicy,
    pub breaker: BreakerConfig,
    /// When set, every request is signed (see `clients::signing`).
    pub credentials: Option<ServiceCredentials>,
}

impl RemoteServiceConfig {
    /// The defaults: 2 s per attempt, 3 attempts with 100 ms–2 s backoff, a
    /// breaker opening after 5 consecutive failures for 30 s, unsigned.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            timeout: TIMEOUT_DEFAULT,
            retry: RetryPolicy::default(),
            breaker: BreakerConfig::default(),
            credentials: None,
        }
    }

    pub fn with_credentials(mut self, credentials: ServiceCredentials) -> Self {
        self.credentials = Some(credentials);
        self
    }
}

/// A client could not be built from its configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("base_url {url:?} is not an absolute http(s) URL: {reason}")]
    BaseUrl { url: String, reason: String },
    #[error("retry.attempts_max is 0; it counts the first attempt, so it must be at least 1")]
    NoAttempts,
    #[error("timeout is zero; every call would time out")]
    ZeroTimeout,
    #[error("the HTTP client could not be built (TLS set-up?): {0}")]
    HttpClient(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_values() {
        // Proves the defaults the module doc and the contracts promise.
        let config = RemoteServiceConfig::new("http://balance:8080");
        assert_eq!(config.timeout, Duration::from_secs(2));
        assert_eq!(config.retry.attempts_max, 3);
        assert_eq!(config.retry.base_delay, Duration::from_millis(100));
        assert_eq!(config.retry.max_delay, Duration::from_secs(2));
        assert_eq!(config.breaker.failure_threshold, 5);
        assert_eq!(config.breaker.open_for, Duration::from_secs(30));
        assert!(config.credentials.is_none());
    }

    #[test]
    fn debug_output_never_shows_the_api_key() {
        // Proves a logged config does not leak the shared secret.
        let config =
            RemoteServiceConfig::new("http://x").with_credentials(ServiceCredentials::new("order_engine", "s3cret"));
        let shown = format!("{config:?}");
        assert!(shown.contains("order_engine"));
        assert!(!shown.contains("s3cret"));
    }
}
