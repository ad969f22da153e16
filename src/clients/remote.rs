//! One remote HTTP service behind the resilience layer: builds, signs and
//! sends requests and hands back the raw answer.
//!
//! Never interprets a 4xx (the typed client knows what it means) and never
//! retries one; only connection failures, timeouts and 5xx are retried.

use std::sync::Arc;

use reqwest::{Method, Url};

use super::config::{ConfigError, RemoteServiceConfig, ServiceCredentials};
use super::discovery::{AddressLookup, CachedAddress};
use super::resilience::{BreakerState, CircuitBreaker, Resilience, ResilienceError, Transient};
use super::signing;
use crate::clock::{Clock, SystemClock};
use crate::telemetry::traces;

/// The most of an answer's body that is read; a larger one is refused rather
/// than buffered (every answer in the contracts is a few hundred bytes).
pub const RESPONSE_BYTES_MAX: usize = 1024 * 1024;
/// How much of an error body is kept for messages and logs.
pub const ERROR_BODY_CHARS_MAX: usize = 512;

/// What one attempt can fail with below the HTTP semantics of the service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error("could not reach the service or the connection broke: {0}")]
    Connection(String),
    #[error("the service failed with HTTP {status}: {body}")]
    ServerError { status: u16, body: String },
    #[error("the request could not be built: {0}")]
    InvalidRequest(String),
    #[error("the answer is larger than {limit_bytes} bytes; refusing to buffer it")]
    ResponseTooLarge { limit_bytes: usize },
}

impl Transient for TransportError {
    fn is_transient(&self) -> bool {
        matches!(self, Self::Connection(_) | Self::ServerError { .. })
    }
}

/// Why a call to a remote service produced no answer.
pub type RemoteError = ResilienceError<TransportError>;

/// An answer below 500: the status and the whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as text, cut to [`ERROR_BODY_CHARS_MAX`] characters, for messages.
    pub fn body_excerpt(&self) -> String {
        excerpt(&String::from_utf8_lossy(&self.body))
    }
}

fn excerpt(text: &str) -> String {
    let mut chars = text.chars();
    let mut cut: String = chars.by_ref().take(ERROR_BODY_CHARS_MAX).collect();
    if chars.next().is_some() {
        cut.push('…');
    }
    cut
}

/// A request to send: method, path with query (appended to the base URL),
/// optional JSON body and extra headers.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    pub method: Method,
    pub path_and_query: &'a str,
    pub json_body: Option<Vec<u8>>,
    pub headers: Vec<(&'static str, String)>,
}

impl<'a> Call<'a> {
    pub fn get(path_and_query: &'a str) -> Self {
        Self {
            method: Method::GET,
            path_and_query,
            json_body: None,
            headers: Vec::new(),
        }
    }

    pub fn post(path_and_query: &'a str, json_body: Vec<u8>) -> Self {
        Self {
            method: Method::POST,
            path_and_query,
            json_body: Some(json_body),
            headers: Vec::new(),
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// A remote service: its address, credentials, HTTP connection pool and
/// resilience (one breaker per service, shared by every call to it).
pub struct RemoteService {
    name: &'static str,
    http: reqwest::Client,
    /// Replaced when discovery finds the service elsewhere.
    address: CachedAddress,
    credentials: Option<ServiceCredentials>,
    resilience: Resilience,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for RemoteService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteService")
            .field("name", &self.name)
            .field("base_url", &self.base_url())
            .field("credentials", &self.credentials)
            .field("resilience", &self.resilience)
            .finish_non_exhaustive()
    }
}

impl RemoteService {
    /// `name` labels logs (`balance`, `accounts`).
    pub fn new(name: &'static str, config: &RemoteServiceConfig) -> Result<Self, ConfigError> {
        let base_url = config.base_url.trim_end_matches('/').to_owned();
        let parsed = Url::parse(&base_url).map_err(|e| ConfigError::BaseUrl {
            url: config.base_url.clone(),
            reason: e.to_string(),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.cannot_be_a_base() {
            return Err(ConfigError::BaseUrl {
                url: config.base_url.clone(),
                reason: "the scheme must be http or https".into(),
            });
        }
        if config.retry.attempts_max == 0 {
            return Err(ConfigError::NoAttempts);
        }
        if config.timeout.is_zero() {
            return Err(ConfigError::ZeroTimeout);
        }
        if let Some(credentials) = &config.credentials {
            credentials.validate()?;
        }
        let http = reqwest::Client::builder()
            // The per-attempt timeout bounds the whole exchange; this only stops a
            // connect from outliving it inside the pool.
            .connect_timeout(config.timeout)
            .user_agent(concat!("order-engine/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConfigError::HttpClient(error_chain(&e)))?;
        Ok(Self {
            name,
            http,
            address: CachedAddress::new(name, &base_url),
            credentials: config.credentials.clone(),
            resilience: Resilience::new(config.retry, config.breaker, config.timeout),
            clock: Arc::new(SystemClock),
        })
    }

    /// Looks the service up again through `discovery` when a call cannot connect.
    pub fn with_discovery(mut self, discovery: Arc<dyn AddressLookup>) -> Self {
        self.address = self.address.with_lookup(discovery);
        self
    }

    /// The address calls go to now.
    pub fn base_url(&self) -> String {
        self.address.get()
    }

    /// After a connection error: ask discovery where the service is now, so
    /// the next attempt (this call's retry, or the next call) goes there.
    async fn rediscover(&self) {
        let usable = |url: &str| Url::parse(url).map(drop).map_err(|e| e.to_string());
        self.address.refresh(usable).await;
    }

    /// Replaces the clock that timestamps signatures (tests, simulation).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn breaker_state(&self) -> BreakerState {
        self.resilience.breaker().state()
    }

    /// The breaker, for `/health/circuit-breaker` and `/metrics`.
    pub fn breaker(&self) -> Arc<CircuitBreaker> {
        self.resilience.shared_breaker()
    }

    /// Sends `call` under the timeout, breaker and retry policy. Each attempt
    /// is signed afresh, so a retry after a long backoff carries a current timestamp.
    pub async fn send(&self, call: Call<'_>) -> Result<Answer, RemoteError> {
        let mut previous_timestamp: Option<i64> = None;
        let result = self
            .resilience
            .run(|attempt| {
                // The signature is the receiver's nonce: a retry within the same second
                // would repeat it and be refused as a replay, so each attempt steps past
                // the last one. That runs ahead of the clock by at most `attempts_max`
                // seconds, far inside the receiver's 300 s window.
                let now = self.clock.now().timestamp();
                let timestamp = previous_timestamp.map_or(now, |previous| now.max(previous.saturating_add(1)));
                previous_timestamp = Some(timestamp);
                let call = &call;
                async move {
                    let result = self.attempt(call, attempt, timestamp).await;
                    if matches!(result, Err(TransportError::Connection(_))) {
                        self.rediscover().await;
                    }
                    result
                }
            })
            .await;
        if let Err(error) = &result {
            tracing::warn!(service = self.name, path = call.path_and_query, %error, "remote call failed");
        }
        result
    }

    async fn attempt(&self, call: &Call<'_>, attempt: u32, timestamp: i64) -> Result<Answer, TransportError> {
        let url = Url::parse(&format!("{}{}", self.base_url(), call.path_and_query))
            .map_err(|e| TransportError::InvalidRequest(format!("{}: {e}", call.path_and_query)))?;
        let body = call.json_body.as_deref().unwrap_or_default();
        let mut request = self.http.request(call.method.clone(), url.clone());
        if call.json_body.is_some() {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_vec());
        }
        for (name, value) in &call.headers {
            request = request.header(*name, value);
        }
        // Exported, the callee continues the caller's trace (the saga step's
        // balance call); off, nothing is added.
        if let Some(trace) = traces::current(None) {
            request = request.header("traceparent", trace.traceparent);
            if let Some(state) = trace.tracestate {
                request = request.header("tracestate", state);
            }
        }
        if let Some(credentials) = &self.credentials {
            // Signed over the path as it goes on the wire (percent-encoded by `Url`),
            // and over the user the call acts for when it names one.
            let path_and_query = match url.query() {
                Some(query) => format!("{}?{query}", url.path()),
                None => url.path().to_owned(),
            };
            let user_id = call
                .headers
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(signing::HEADER_USER_ID))
                .map(|(_, value)| value.as_str());
            let signed = signing::SignedRequest {
                method: call.method.as_str(),
                path_and_query: &path_and_query,
                body,
                user_id,
            };
            for (name, value) in signing::sign(credentials, timestamp, &signed) {
                request = request.header(name, value);
            }
        }
        tracing::debug!(service = self.name, method = %call.method, path = call.path_and_query, attempt, "calling");
        let mut response = request.send().await.map_err(|e| classify(&e))?;
        let status = response.status().as_u16();
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| classify(&e))? {
            if bytes.len() + chunk.len() > RESPONSE_BYTES_MAX {
                return Err(TransportError::ResponseTooLarge {
                    limit_bytes: RESPONSE_BYTES_MAX,
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        if status >= 500 {
            return Err(TransportError::ServerError {
                status,
                body: excerpt(&String::from_utf8_lossy(&bytes)),
            });
        }
        Ok(Answer { status, body: bytes })
    }
}

fn classify(error: &reqwest::Error) -> TransportError {
    if error.is_builder() {
        TransportError::InvalidRequest(error_chain(error))
    } else {
        TransportError::Connection(error_chain(error))
    }
}

/// reqwest's own message is terse ("error sending request"); the cause is in the sources.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::clients::config::CredentialsError;

    #[test]
    fn bad_configurations_are_refused_with_the_reason() {
        // Proves a client cannot be built that would never call or never succeed.
        let ok = RemoteServiceConfig::new("http://127.0.0.1:1/prefix/");
        assert!(RemoteService::new("t", &ok).is_ok());
        let bad_url = RemoteServiceConfig::new("balance:8080");
        assert!(matches!(
            RemoteService::new("t", &bad_url),
            Err(ConfigError::BaseUrl { .. })
        ));
        let mut no_attempts = ok.clone();
        no_attempts.retry.attempts_max = 0;
        assert_eq!(
            RemoteService::new("t", &no_attempts).unwrap_err(),
            ConfigError::NoAttempts
        );
        let mut zero = ok.clone();
        zero.timeout = std::time::Duration::ZERO;
        assert_eq!(RemoteService::new("t", &zero).unwrap_err(), ConfigError::ZeroTimeout);
        let weak = ok.with_credentials(ServiceCredentials::new("order_engine", "key", "short"));
        assert!(matches!(
            RemoteService::new("t", &weak),
            Err(ConfigError::Credentials(CredentialsError::SecretTooShort { .. }))
        ));
    }

    #[test]
    fn error_bodies_are_cut_for_messages() {
        // Proves a huge error body cannot flood logs or error strings.
        let answer = Answer {
            status: 400,
            body: vec![b'x'; ERROR_BODY_CHARS_MAX + 10],
        };
        let cut = answer.body_excerpt();
        assert_eq!(cut.chars().count(), ERROR_BODY_CHARS_MAX + 1);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn only_connection_failures_and_server_errors_are_transient() {
        // Proves the retry classification of the transport layer.
        assert!(TransportError::Connection("refused".into()).is_transient());
        assert!(TransportError::ServerError {
            status: 503,
            body: String::new()
        }
        .is_transient());
        assert!(!TransportError::InvalidRequest("x".into()).is_transient());
        assert!(!TransportError::ResponseTooLarge { limit_bytes: 1 }.is_transient());
    }
}
