//! How to reach one remote service: where, how patiently, and as whom.
//!
//! Never prints an API key or a signing secret: `ServiceCredentials`' `Debug`
//! redacts both, and its errors name the identity only.

use std::time::Duration;

use super::resilience::{BreakerConfig, RetryPolicy};

/// Per-attempt timeout when nothing is configured.
pub const TIMEOUT_DEFAULT: Duration = Duration::from_secs(2);

/// The fewest bytes a signing secret may have: as long as the HMAC-SHA256
/// output (RFC 2104 §3 advises no shorter key), so guessing it is no easier
/// than forging the tag.
pub const SIGNING_SECRET_BYTES_MIN: usize = 32;

/// One service identity's credentials (seed 001): the API key it presents in
/// `X-Internal-API-Key`, which identifies it, and the secret it signs with,
/// which is never sent. The same type describes the engine to a service it
/// calls and, on the receiving side, each service registered to call it.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceCredentials {
    /// `X-Service-Identity`, e.g. `algo_engine`.
    pub identity: String,
    /// Sent with every request; identifies and authorizes the caller.
    pub api_key: String,
    /// The HMAC key of `clients::signing`; shared by the two parties only.
    pub signing_secret: String,
}

/// Why credentials cannot be used. Names the identity, never a key or secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error("service identity {identity:?} must be letters, digits, '_', '-' or '.' (it is a header value and a signed line)")]
    BadIdentity { identity: String },
    #[error("service {identity:?} has an empty API key")]
    EmptyApiKey { identity: String },
    #[error("the signing secret of service {identity:?} is {len} bytes; at least {min} are required")]
    SecretTooShort { identity: String, len: usize, min: usize },
    #[error("the signing secret of service {identity:?} equals its API key; the key is sent with every request, so the secret must be another value")]
    SecretIsApiKey { identity: String },
}

impl ServiceCredentials {
    pub fn new(identity: impl Into<String>, api_key: impl Into<String>, signing_secret: impl Into<String>) -> Self {
        Self {
            identity: identity.into(),
            api_key: api_key.into(),
            signing_secret: signing_secret.into(),
        }
    }

    /// Checks what start-up must refuse: an identity that is not a plain
    /// token, an empty key, a secret under [`SIGNING_SECRET_BYTES_MIN`] bytes
    /// or equal to the key.
    pub fn validate(&self) -> Result<(), CredentialsError> {
        let identity = || self.identity.clone();
        let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
        if self.identity.is_empty() || !self.identity.chars().all(plain) {
            return Err(CredentialsError::BadIdentity { identity: identity() });
        }
        if self.api_key.is_empty() {
            return Err(CredentialsError::EmptyApiKey { identity: identity() });
        }
        if self.signing_secret.len() < SIGNING_SECRET_BYTES_MIN {
            return Err(CredentialsError::SecretTooShort {
                identity: identity(),
                len: self.signing_secret.len(),
                min: SIGNING_SECRET_BYTES_MIN,
            });
        }
        if self.signing_secret == self.api_key {
            return Err(CredentialsError::SecretIsApiKey { identity: identity() });
        }
        Ok(())
    }
}

impl std::fmt::Debug for ServiceCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceCredentials")
            .field("identity", &self.identity)
            .field("api_key", &"<redacted>")
            .field("signing_secret", &"<redacted>")
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
    #[error("the signing credentials are not usable: {0}")]
    Credentials(#[from] CredentialsError),
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

    const SECRET: &str = "order-engine-signing-secret-0123456789";

    #[test]
    fn debug_output_never_shows_the_api_key_or_the_secret() {
        // Proves a logged config does not leak either value.
        let config = RemoteServiceConfig::new("http://x").with_credentials(ServiceCredentials::new(
            "order_engine",
            "s3cret-key",
            SECRET,
        ));
        let shown = format!("{config:?}");
        assert!(shown.contains("order_engine"));
        assert!(!shown.contains("s3cret-key") && !shown.contains(SECRET), "{shown}");
    }

    #[test]
    fn unusable_credentials_are_named_by_identity() {
        // Proves start-up refuses a short secret, a secret equal to the key, an empty key and an
        // identity that could not be a header line, and that no message echoes a key or secret.
        let short = "x".repeat(SIGNING_SECRET_BYTES_MIN - 1);
        let cases = [
            (ServiceCredentials::new("order_engine", "key", SECRET), None),
            (
                ServiceCredentials::new("order_engine", "key", "x".repeat(SIGNING_SECRET_BYTES_MIN)),
                None,
            ),
            (
                ServiceCredentials::new("algo_engine", "key", short.clone()),
                Some(CredentialsError::SecretTooShort {
                    identity: "algo_engine".into(),
                    len: SIGNING_SECRET_BYTES_MIN - 1,
                    min: SIGNING_SECRET_BYTES_MIN,
                }),
            ),
            (
                ServiceCredentials::new("algo_engine", SECRET, SECRET),
                Some(CredentialsError::SecretIsApiKey {
                    identity: "algo_engine".into(),
                }),
            ),
            (
                ServiceCredentials::new("algo_engine", "", SECRET),
                Some(CredentialsError::EmptyApiKey {
                    identity: "algo_engine".into(),
                }),
            ),
            (
                ServiceCredentials::new("algo engine\n", "key", SECRET),
                Some(CredentialsError::BadIdentity {
                    identity: "algo engine\n".into(),
                }),
            ),
        ];
        for (credentials, expected) in cases {
            let result = credentials.validate();
            assert_eq!(result.clone().err(), expected, "{credentials:?}");
            if let Err(error) = result {
                let text = error.to_string();
                assert!(!text.contains(SECRET) && !text.contains(&short), "{text}");
            }
        }
    }
}
