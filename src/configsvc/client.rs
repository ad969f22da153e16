//! The config service's HTTP API as the engine speaks it (shared/contracts/
//! config-service.md): configuration, ports, feature flags and the service
//! registry. One attempt per call under a 2 s timeout; retrying is the
//! caller's choice (`config::source` at start). Never logs a value.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde::{Deserialize, Serialize};

use crate::clients::remote::error_chain;

/// The engine's name in the config service and the registry (seed 000's port registry name).
pub const SERVICE_NAME: &str = "order_service";
/// The name of the engine's gRPC port in the port registry.
pub const GRPC_SERVICE_NAME: &str = "order_service_grpc";
/// Seed 002: every request to the config service times out after 2 s.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Every request carries the engine's key in this header (seed 002).
pub const API_KEY_HEADER: &str = "X-Internal-API-Key";
/// Bodies larger than this are refused rather than buffered.
const RESPONSE_BYTES_MAX: usize = 1 << 20;

/// Why a call to the config service failed. `url` never carries a secret
/// (the key travels in a header).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConfigServiceError {
    #[error("config service at {url} is unreachable: {cause}")]
    Unreachable { url: String, cause: String },
    #[error("config service at {url} answered {status}: {body}")]
    Status { url: String, status: u16, body: String },
    #[error("config service at {url} answered with a body outside the contract: {cause}")]
    Contract { url: String, cause: String },
    #[error("CONFIG_SERVICE_URL={url:?} is not an http(s) URL")]
    BadUrl { url: String },
}

impl ConfigServiceError {
    /// Whether trying again may help: no answer, a timeout, a 5xx or 429.
    /// A refusal (401, 403, 404, a malformed body) will not go away by itself.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Status { status, .. } => *status >= 500 || *status == 429,
            Self::Contract { .. } | Self::BadUrl { .. } => false,
        }
    }
}

/// One configuration entry as the service sends it; other fields are ignored.
#[derive(Debug, Deserialize)]
struct Entry {
    key: String,
    value: serde_json::Value,
}

/// A value as text: the contract sends strings, a stand-in may send a number or a boolean.
fn text_of(value: serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(text) => Some(text),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// What the engine says about itself at registration (contract: register).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Registration {
    pub service_url: String,
    pub health_check_url: String,
    pub version: String,
    pub region: String,
}

/// A client of one config service for one environment.
#[derive(Clone)]
pub struct ConfigServiceClient {
    http: reqwest::Client,
    base: Url,
    environment: String,
    api_key: String,
}

impl std::fmt::Debug for ConfigServiceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigServiceClient")
            .field("base", &self.base.as_str())
            .field("environment", &self.environment)
            .finish_non_exhaustive()
    }
}

impl ConfigServiceClient {
    pub fn new(base_url: &str, environment: &str, api_key: &str) -> Result<Self, ConfigServiceError> {
        let bad = || ConfigServiceError::BadUrl {
            url: base_url.to_owned(),
        };
        let base = Url::parse(base_url.trim_end_matches('/')).map_err(|_| bad())?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(bad());
        }
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| ConfigServiceError::Unreachable {
                url: base_url.to_owned(),
                cause: e.to_string(),
            })?;
        Ok(Self {
            http,
            base,
            environment: environment.to_owned(),
            api_key: api_key.to_owned(),
        })
    }

    /// The service's address, for messages.
    pub fn base_url(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    pub fn environment(&self) -> &str {
        &self.environment
    }

    /// Every key of `order_service` in this environment (contract: loaded once at start).
    pub async fn load_all(&self) -> Result<BTreeMap<String, String>, ConfigServiceError> {
        let url = self.url(
            &["api", "v1", "config", "service", SERVICE_NAME],
            &[("environment", self.environment.as_str())],
        );
        let (status, body) = self.send(Method::GET, url.clone(), None, false).await?;
        let entries: Vec<Entry> = self.expect_json(&url, status, &body)?;
        Ok(entries
            .into_iter()
            .filter_map(|entry| text_of(entry.value).map(|value| (entry.key, value)))
            .collect())
    }

    /// One key's value; None when the service does not have it (404).
    pub async fn get(&self, key: &str) -> Result<Option<String>, ConfigServiceError> {
        let url = self.url(
            &["api", "v1", "config", key],
            &[
                ("environment", self.environment.as_str()),
                ("service_name", SERVICE_NAME),
            ],
        );
        let (status, body) = self.send(Method::GET, url.clone(), None, false).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let entry: Entry = self.expect_json(&url, status, &body)?;
        Ok(text_of(entry.value))
    }

    /// A service's port in the port registry; None when it has none (404).
    pub async fn port(&self, service_name: &str) -> Result<Option<u16>, ConfigServiceError> {
        #[derive(Deserialize)]
        struct Port {
            port: u16,
        }
        let url = self.url(
            &["api", "v1", "ports", service_name],
            &[("environment", self.environment.as_str())],
        );
        let (status, body) = self.send(Method::GET, url.clone(), None, false).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let port: Port = self.expect_json(&url, status, &body)?;
        Ok(Some(port.port))
    }

    /// Whether `flag_name` is on, for `user_id` when the flag is per user.
    pub async fn evaluate_flag(&self, flag_name: &str, user_id: Option<&str>) -> Result<bool, ConfigServiceError> {
        #[derive(Deserialize)]
        struct Evaluation {
            enabled: bool,
        }
        let url = self.url(&["api", "v1", "feature-flags", "evaluate"], &[]);
        let body = serde_json::json!({
            "flag_name": flag_name,
            "environment": self.environment,
            "user_id": user_id,
        });
        let (status, answer) = self.send(Method::POST, url.clone(), Some(body), false).await?;
        let evaluation: Evaluation = self.expect_json(&url, status, &answer)?;
        Ok(evaluation.enabled)
    }

    /// A service's URL from the registry; None when it is not registered
    /// (404) or not healthy.
    pub async fn discover(&self, service_name: &str) -> Result<Option<String>, ConfigServiceError> {
        #[derive(Deserialize)]
        struct Registered {
            service_url: String,
            #[serde(default)]
            status: Option<String>,
        }
        let url = self.url(&["api", "v1", "registry", service_name], &[]);
        let (status, body) = self.send(Method::GET, url.clone(), None, false).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let registered: Registered = self.expect_json(&url, status, &body)?;
        Ok(match registered.status.as_deref() {
            None | Some("healthy") => Some(registered.service_url.trim_end_matches('/').to_owned()),
            Some(_) => None,
        })
    }

    /// Registers the engine (contract: POST /api/v1/registry/register).
    pub async fn register(&self, registration: &Registration) -> Result<(), ConfigServiceError> {
        let url = self.url(&["api", "v1", "registry", "register"], &[]);
        let body = serde_json::json!({
            "service_name": SERVICE_NAME,
            "service_url": registration.service_url,
            "health_check_url": registration.health_check_url,
            "metadata": {"version": registration.version, "region": registration.region},
        });
        let (status, answer) = self.send(Method::POST, url.clone(), Some(body), true).await?;
        self.expect_success(&url, status, &answer)
    }

    /// One heartbeat: the engine's readiness and how long answering it took.
    pub async fn heartbeat(&self, healthy: bool, response_time_ms: u64) -> Result<(), ConfigServiceError> {
        let url = self.url(&["api", "v1", "registry", "health"], &[]);
        let body = serde_json::json!({
            "service_name": SERVICE_NAME,
            "status": if healthy { "healthy" } else { "unhealthy" },
            "response_time": response_time_ms,
        });
        let (status, answer) = self.send(Method::PUT, url.clone(), Some(body), true).await?;
        self.expect_success(&url, status, &answer)
    }

    /// Leaves the registry (contract: DELETE /api/v1/registry/{service_name}).
    pub async fn deregister(&self) -> Result<(), ConfigServiceError> {
        let url = self.url(&["api", "v1", "registry", SERVICE_NAME], &[]);
        let (status, answer) = self.send(Method::DELETE, url.clone(), None, true).await?;
        if status == StatusCode::NOT_FOUND {
            // Already gone (the registry expired it): the outcome asked for.
            return Ok(());
        }
        self.expect_success(&url, status, &answer)
    }

    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            // Each segment is percent-encoded: a key cannot climb out of its route.
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// One request; registry writes also carry `Authorization: ApiKey` (seed 002).
    async fn send(
        &self,
        method: Method,
        url: Url,
        json: Option<serde_json::Value>,
        registry_write: bool,
    ) -> Result<(StatusCode, Vec<u8>), ConfigServiceError> {
        let unreachable = |e: reqwest::Error| ConfigServiceError::Unreachable {
            url: url.to_string(),
            cause: error_chain(&e),
        };
        let mut request = self
            .http
            .request(method, url.clone())
            .header(API_KEY_HEADER, &self.api_key);
        if registry_write {
            request = request.header(reqwest::header::AUTHORIZATION, format!("ApiKey {}", self.api_key));
        }
        if let Some(json) = json {
            request = request.json(&json);
        }
        let mut response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            if body.len() + chunk.len() > RESPONSE_BYTES_MAX {
                return Err(ConfigServiceError::Contract {
                    url: url.to_string(),
                    cause: format!("a body over {RESPONSE_BYTES_MAX} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body))
    }

    fn expect_success(&self, url: &Url, status: StatusCode, body: &[u8]) -> Result<(), ConfigServiceError> {
        if status.is_success() {
            Ok(())
        } else {
            Err(status_error(url, status, body))
        }
    }

    fn expect_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &Url,
        status: StatusCode,
        body: &[u8],
    ) -> Result<T, ConfigServiceError> {
        self.expect_success(url, status, body)?;
        serde_json::from_slice(body).map_err(|e| ConfigServiceError::Contract {
            url: url.to_string(),
            cause: e.to_string(),
        })
    }
}

fn status_error(url: &Url, status: StatusCode, body: &[u8]) -> ConfigServiceError {
    // A short excerpt: enough to read the service's reason, never a whole page.
    let text = String::from_utf8_lossy(body);
    ConfigServiceError::Status {
        url: url.to_string(),
        status: status.as_u16(),
        body: text.chars().take(200).collect(),
    }
}
