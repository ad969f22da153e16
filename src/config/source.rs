//! Where [`Settings`] come from: the environment (today's variables, the
//! embedded default) or the config service (production: `ENVIRONMENT`,
//! `CONFIG_SERVICE_URL`, `INTERNAL_API_KEY`), combined as the migration mode
//! says (seed 003). Records where each value came from ([`Provenance`]) for
//! `config show`. Never logs a secret's value; never exits the process.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

use super::keys::{contract_key, mask, Origin};
use super::mode::{MigrationMode, MIGRATION_MODE_ENV};
use super::{ConfigError, Settings, INTERNAL_API_KEY_ENV};
use crate::configsvc::cache::{ConfigCache, CACHE_TTL_DEFAULT};
use crate::configsvc::client::{ConfigServiceClient, ConfigServiceError, GRPC_SERVICE_NAME, SERVICE_NAME};
use crate::configsvc::metrics::ConfigMetrics;

pub const ENVIRONMENT_ENV: &str = "ENVIRONMENT";
pub const CONFIG_SERVICE_URL_ENV: &str = "CONFIG_SERVICE_URL";
/// The environment name in which development tokens are refused.
pub const PRODUCTION_ENVIRONMENT: &str = "prod";
/// How long start-up keeps trying the config service before it gives up
/// (contract: exit within 30 s; the rest is left for the message and the exit).
pub const START_BUDGET: Duration = Duration::from_secs(20);
/// The registry names of the services the engine calls *(chosen here; the contract leaves them open)*.
pub const BALANCE_SERVICE_NAME: &str = "balance_service";
pub const ACCOUNT_SERVICE_NAME: &str = "account_service";
pub const MARKET_DATA_SERVICE_NAME: &str = "market_data_service";

/// One key as it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    pub value: Option<String>,
    pub origin: Origin,
}

/// Every key the settings asked for (contract names), with its value and origin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Provenance(pub BTreeMap<String, Read>);

impl Provenance {
    /// `KEY = value (origin)` lines, secrets masked; a default shows the
    /// value it gives in `settings` (or "unset" for an optional one).
    pub fn lines(&self, settings: &Settings) -> Vec<String> {
        let effective = settings.effective();
        self.0
            .iter()
            .map(|(key, read)| {
                let value = read
                    .value
                    .as_deref()
                    .or_else(|| effective.get(key.as_str()).map(String::as_str));
                match value {
                    Some(value) => format!("{key} = {} ({})", mask(key, value), read.origin),
                    None => format!("{key} = (unset) ({})", read.origin),
                }
            })
            .collect()
    }
}

/// How start-up treats the config service; tests shorten the budget.
#[derive(Debug, Clone)]
pub struct StartOptions {
    pub budget: Duration,
    pub cache_ttl: Duration,
}

impl Default for StartOptions {
    fn default() -> Self {
        Self {
            budget: START_BUDGET,
            cache_ttl: CACHE_TTL_DEFAULT,
        }
    }
}

/// The settings and what produced them.
pub struct Loaded {
    pub settings: Settings,
    pub mode: MigrationMode,
    pub environment: Option<String>,
    pub provenance: Provenance,
    /// The config service's cache when the mode reads it (refresh, registry, flags).
    pub service: Option<Arc<ConfigCache>>,
    pub metrics: ConfigMetrics,
}

/// Why the engine refused to start on its configuration. Each names the key
/// or the URL, and the cause.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{variable}={value:?} is not valid: {expected}")]
    Variable {
        variable: &'static str,
        value: String,
        expected: String,
    },
    #[error("configuration key {key} (from {origin}): {source}")]
    Invalid {
        key: String,
        origin: Origin,
        #[source]
        source: ConfigError,
    },
    #[error("could not load the configuration from the config service at {url} within {}s: {source}", .budget.as_secs())]
    Unreachable {
        url: String,
        budget: Duration,
        #[source]
        source: ConfigServiceError,
    },
    #[error("the config service at {url}: {source}")]
    Service {
        url: String,
        #[source]
        source: ConfigServiceError,
    },
    #[error("ORDER_SERVICE_TEST_AUTH_MODE=true is refused when ENVIRONMENT=prod: development tokens must never be accepted in production")]
    TestAuthInProduction,
    #[error("ENVIRONMENT=prod needs ORDER_SERVICE_JWT_SECRET or ORDER_SERVICE_JWT_PUBLIC_KEY: without them user tokens would be checked with the development secret")]
    NoJwtKeyInProduction,
    #[error("registering the configuration metrics")]
    Metrics(#[source] prometheus::Error),
}

/// The three production variables and the mode, read from the environment.
#[derive(Debug, Clone)]
pub struct StartEnv {
    pub environment: Option<String>,
    pub config_service_url: Option<String>,
    pub internal_api_key: Option<String>,
    pub mode: MigrationMode,
}

impl StartEnv {
    pub fn read(env: &dyn Fn(&str) -> Option<String>) -> Result<Self, LoadError> {
        let config_service_url = env(CONFIG_SERVICE_URL_ENV);
        let named = env(MIGRATION_MODE_ENV);
        let mode = MigrationMode::choose(named.as_deref(), config_service_url.is_some()).map_err(|expected| {
            LoadError::Variable {
                variable: MIGRATION_MODE_ENV,
                value: named.clone().unwrap_or_default(),
                expected,
            }
        })?;
        Ok(Self {
            environment: env(ENVIRONMENT_ENV),
            config_service_url,
            internal_api_key: env(INTERNAL_API_KEY_ENV),
            mode,
        })
    }

    /// The client the mode needs, or which variable is missing for it.
    pub fn client(&self) -> Result<ConfigServiceClient, LoadError> {
        let missing = |variable: &'static str| {
            LoadError::Variable {
            variable,
            value: String::new(),
            expected: format!(
                "set: the config service is read here ({MIGRATION_MODE_ENV}={}, or `config validate`), and it needs {CONFIG_SERVICE_URL_ENV}, {ENVIRONMENT_ENV} and {INTERNAL_API_KEY_ENV}",
                self.mode
            ),
        }
        };
        let url = self
            .config_service_url
            .as_deref()
            .ok_or_else(|| missing(CONFIG_SERVICE_URL_ENV))?;
        let environment = self.environment.as_deref().ok_or_else(|| missing(ENVIRONMENT_ENV))?;
        let key = self
            .internal_api_key
            .as_deref()
            .ok_or_else(|| missing(INTERNAL_API_KEY_ENV))?;
        ConfigServiceClient::new(url, environment, key).map_err(|source| LoadError::Service {
            url: url.to_owned(),
            source,
        })
    }
}

/// A variable from the environment under the engine's name, else under the
/// contract's (`ORDER_SERVICE_DAILY_ORDER_LIMIT=10` works in legacy_only too).
pub fn env_value(env: &dyn Fn(&str) -> Option<String>, variable: &str) -> Option<String> {
    env(variable).or_else(|| {
        let key = contract_key(variable);
        (key != variable).then(|| env(&key)).flatten()
    })
}

/// Builds [`Settings`] from `lookup`, recording each key asked, its value
/// and origin; a bad value names the key and where it came from.
pub fn settings_with_provenance(
    lookup: impl Fn(&str) -> Option<(String, Origin)>,
) -> Result<(Settings, Provenance), LoadError> {
    let seen = RefCell::new(Provenance::default());
    let result = Settings::from_lookup(|variable| {
        let found = lookup(variable);
        let read = match &found {
            Some((value, origin)) => Read {
                value: Some(value.clone()),
                origin: *origin,
            },
            None => Read {
                value: None,
                origin: Origin::Default,
            },
        };
        seen.borrow_mut().0.insert(contract_key(variable), read);
        found.map(|(value, _)| value)
    });
    let provenance = seen.into_inner();
    match result {
        Ok(settings) => Ok((settings, provenance)),
        Err(source) => {
            let key = contract_key(source.variable);
            let origin = provenance.0.get(&key).map_or(Origin::Default, |read| read.origin);
            Err(LoadError::Invalid { key, origin, source })
        }
    }
}

/// Today's behaviour: the environment alone (and the contract's key names in it).
pub fn from_environment(env: &dyn Fn(&str) -> Option<String>) -> Result<(Settings, Provenance), LoadError> {
    settings_with_provenance(|variable| env_value(env, variable).map(|value| (value, Origin::Env)))
}

/// Loads the settings as the environment's mode says: the config service
/// with retries within `options.budget` in new_only, one attempt in the
/// modes where the environment stands behind it.
pub async fn load(env: &dyn Fn(&str) -> Option<String>, options: &StartOptions) -> Result<Loaded, LoadError> {
    let start = StartEnv::read(env)?;
    let metrics = ConfigMetrics::new().map_err(LoadError::Metrics)?;
    let (settings, provenance, service) = match start.mode {
        MigrationMode::LegacyOnly => {
            let (settings, provenance) = from_environment(env)?;
            (settings, provenance, None)
        }
        MigrationMode::NewOnly => {
            let client = start.client()?;
            let values = load_with_retries(&client, options.budget).await?;
            let values = with_registry(&client, values).await?;
            let cache = Arc::new(ConfigCache::new(client, options.cache_ttl, metrics.clone()));
            cache.fill(&values);
            let (settings, provenance) = settings_with_provenance(|variable| {
                service_value(env, &values, variable).map(|value| (value, Origin::ConfigService))
            })?;
            (settings, provenance, Some(cache))
        }
        MigrationMode::NewWithFallback => {
            let client = start.client()?;
            let values = match client.load_all().await {
                Ok(values) => with_registry(&client, values).await.unwrap_or_else(|error| {
                    tracing::warn!(%error, "service discovery failed at start; the environment's addresses apply");
                    BTreeMap::new()
                }),
                Err(error) => {
                    tracing::warn!(url = client.base_url(), %error, "config service failed at start; falling back to the environment for every key");
                    BTreeMap::new()
                }
            };
            let cache = Arc::new(ConfigCache::new(client, options.cache_ttl, metrics.clone()));
            cache.fill(&values);
            let (settings, provenance) =
                settings_with_provenance(|variable| fallback_value(env, &values, variable, &metrics))?;
            (settings, provenance, Some(cache))
        }
        MigrationMode::LegacyWithValidation => {
            let client = start.client()?;
            let (settings, provenance) = from_environment(env)?;
            match client.load_all().await {
                Ok(values) => {
                    compare(&provenance, &values, &metrics);
                }
                Err(error) => {
                    tracing::warn!(url = client.base_url(), %error, "config service failed; the environment's values were not validated");
                }
            }
            (settings, provenance, None)
        }
    };
    check_environment(start.environment.as_deref(), &settings)?;
    tracing::info!(
        mode = %start.mode,
        environment = start.environment.as_deref().unwrap_or("(unset)"),
        from_config_service = provenance.0.values().filter(|r| r.origin == Origin::ConfigService).count(),
        from_env = provenance.0.values().filter(|r| r.origin == Origin::Env).count(),
        "configuration loaded"
    );
    Ok(Loaded {
        settings,
        mode: start.mode,
        environment: start.environment,
        provenance,
        service,
        metrics,
    })
}

/// A variable from the config service's values; the production triad's
/// `INTERNAL_API_KEY` from the environment (it is how the engine reached the service).
fn service_value(
    env: &dyn Fn(&str) -> Option<String>,
    values: &BTreeMap<String, String>,
    variable: &str,
) -> Option<String> {
    // How the engine reaches the service, and which environment it is in
    // (the controls' production defaults), are the process's own.
    if variable == INTERNAL_API_KEY_ENV || variable == crate::config::controls::ENVIRONMENT_ENV {
        return env(variable);
    }
    values.get(&contract_key(variable)).cloned()
}

/// new_with_fallback: the service's value, else the environment's (counted).
fn fallback_value(
    env: &dyn Fn(&str) -> Option<String>,
    values: &BTreeMap<String, String>,
    variable: &str,
    metrics: &ConfigMetrics,
) -> Option<(String, Origin)> {
    if let Some(value) = service_value(env, values, variable) {
        return Some((value, Origin::ConfigService));
    }
    let value = env_value(env, variable)?;
    let key = contract_key(variable);
    metrics.fallback_total.with_label_values(&[&key]).inc();
    tracing::warn!(
        key,
        "config service did not supply {key}; using the environment's value"
    );
    Some((value, Origin::Env))
}

/// legacy_with_validation: each key the settings read, compared with the
/// service's value; a difference is logged (masked) and counted.
pub fn compare(provenance: &Provenance, values: &BTreeMap<String, String>, metrics: &ConfigMetrics) -> usize {
    let mut differences = 0;
    for (key, read) in &provenance.0 {
        let legacy = read.value.as_deref().map(str::trim);
        let new = values.get(key).map(|value| value.trim());
        if legacy != new {
            differences += 1;
            metrics.discrepancy_total.with_label_values(&[key]).inc();
            tracing::warn!(
                key,
                legacy = %legacy.map_or_else(|| "(unset)".to_owned(), |v| mask(key, v)),
                config_service = %new.map_or_else(|| "(unset)".to_owned(), |v| mask(key, v)),
                "configuration discrepancy: the environment and the config service differ on {key}"
            );
        }
    }
    differences
}

/// The bulk load, retried with backoff while the failure may pass, within `budget`.
async fn load_with_retries(
    client: &ConfigServiceClient,
    budget: Duration,
) -> Result<BTreeMap<String, String>, LoadError> {
    let last_error = Mutex::new(None);
    let attempts = (|| client.load_all())
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(2))
                .with_jitter()
                .without_max_times(),
        )
        .sleep(tokio::time::sleep)
        .when(ConfigServiceError::is_transient)
        .notify(|error, wait| {
            tracing::warn!(url = client.base_url(), %error, wait_ms = wait.as_millis() as u64, "config service not answering; trying again");
            if let Ok(mut last) = last_error.lock() {
                *last = Some(error.clone());
            }
        });
    let unreachable = |source| LoadError::Unreachable {
        url: client.base_url().to_owned(),
        budget,
        source,
    };
    match tokio::time::timeout(budget, attempts).await {
        Ok(result) => result.map_err(unreachable),
        Err(_) => {
            let last = last_error.lock().ok().and_then(|mut last| last.take());
            Err(unreachable(last.unwrap_or_else(|| ConfigServiceError::Unreachable {
                url: client.base_url().to_owned(),
                cause: format!("no answer within {}s", budget.as_secs()),
            })))
        }
    }
}

/// The engine's ports and the other services' addresses from the registries,
/// for the keys the configuration leaves unset (contract: ports, registry).
async fn with_registry(
    client: &ConfigServiceClient,
    mut values: BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, LoadError> {
    let failed = |source| LoadError::Service {
        url: client.base_url().to_owned(),
        source,
    };
    for (name, key) in [
        (SERVICE_NAME, "ORDER_SERVICE_HTTP_ADDR"),
        (GRPC_SERVICE_NAME, "ORDER_SERVICE_GRPC_ADDR"),
    ] {
        if !values.contains_key(key) {
            if let Some(port) = client.port(name).await.map_err(failed)? {
                // Listening on every interface: the registry's port is how others reach this host.
                values.insert(key.to_owned(), format!("0.0.0.0:{port}"));
            }
        }
    }
    let mut wanted = vec![
        (BALANCE_SERVICE_NAME, "BALANCE_SERVICE_URL"),
        (ACCOUNT_SERVICE_NAME, "ACCOUNT_SERVICE_URL"),
    ];
    if values.get("ORDER_SERVICE_MARKET_DATA").map(|v| v.trim()) == Some("grpc") {
        wanted.push((MARKET_DATA_SERVICE_NAME, "ORDER_SERVICE_MARKET_DATA_URL"));
    }
    for (name, key) in wanted {
        if !values.contains_key(key) {
            if let Some(url) = client.discover(name).await.map_err(failed)? {
                tracing::info!(service = name, url, "found through the service registry");
                values.insert(key.to_owned(), url);
            }
        }
    }
    Ok(values)
}

/// Rules on the combination of the environment and the settings.
pub fn check_environment(environment: Option<&str>, settings: &Settings) -> Result<(), LoadError> {
    if environment.map(str::trim) != Some(PRODUCTION_ENVIRONMENT) {
        return Ok(());
    }
    if settings.controls.test_auth_mode {
        return Err(LoadError::TestAuthInProduction);
    }
    if settings.jwt_secret.is_none() && settings.jwt_public_key_pem.is_none() && settings.jwt_public_key_file.is_none()
    {
        return Err(LoadError::NoJwtKeyInProduction);
    }
    Ok(())
}
