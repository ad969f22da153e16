//! Typed settings for `serve`, read from the environment once at start.
//!
//! Parsing is pure (the lookup is passed in) so every variable and its error
//! message is tested; `from_env` is the only place that reads the process env.

mod cluster;
pub mod controls;
mod duration;
mod effective;
pub mod keys;
pub mod mode;
pub mod pretrade;
pub mod source;
pub mod validate;

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

use chrono::NaiveTime;
use rust_decimal::Decimal;

use crate::actors::ACTOR_THREADS_MAX;
use crate::amqp::{
    AmqpConfig, DEFAULT_PREFETCH, DEFAULT_QUICK_RETRIES, DEFAULT_QUICK_RETRY_MAX, DEFAULT_QUICK_RETRY_MIN,
    PREFETCH_MAX, QUICK_RETRIES_MAX, RETRY_DELAY_MAX, RETRY_RUNGS_MAX, SEED_RETRY_LADDER,
};
use crate::clients::{BreakerConfig, RetryPolicy, ServiceCredentials};
use crate::market::{ConfiguredAddress, GrpcMarketDataConfig};
pub use cluster::{
    ClusterMode, ClusterSettings, SubmitRouting, DEFAULT_HEARTBEAT, DEFAULT_LEASE_TTL, DEFAULT_PARTITIONS,
};
pub use controls::{ControlSettings, GatewayTrust};
pub use duration::{parse_duration, parse_duration_list};
pub use keys::{contract_key, mask, Origin};
pub use mode::MigrationMode;
pub use pretrade::PreTradeSettings;

/// Where the embedded default keeps its log.
pub const EMBEDDED_DATABASE_URL: &str = "sqlite:data/order-engine.db";
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8080";
/// Where the gRPC order service listens unless `ORDER_ENGINE_GRPC_ADDR` says otherwise.
pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:50051";
/// Who the engine is to the services it calls, unless configured.
pub const DEFAULT_SERVICE_IDENTITY: &str = "order_engine";

/// Inbound: each internal caller's API key, `identity=key,…`.
pub const SERVICE_KEYS_ENV: &str = "ORDER_ENGINE_SERVICE_KEYS";
/// Inbound: each internal caller's signing secret, `identity=secret,…`.
pub const SERVICE_SECRETS_ENV: &str = "ORDER_ENGINE_SERVICE_SECRETS";
/// Outbound: the identity the engine signs as.
pub const SERVICE_IDENTITY_ENV: &str = "ORDER_ENGINE_SERVICE_IDENTITY";
/// Outbound: the API key the engine presents (seed 000's common parameter).
pub const INTERNAL_API_KEY_ENV: &str = "INTERNAL_API_KEY";
/// Outbound: the secret the engine signs its calls with; never sent.
pub const SIGNING_SECRET_ENV: &str = "ORDER_ENGINE_SIGNING_SECRET";
/// Which market data the engine quotes from: `simulator` (default) or `grpc`.
pub const MARKET_DATA_ENV: &str = "ORDER_ENGINE_MARKET_DATA";
/// The market data service's address, with `ORDER_ENGINE_MARKET_DATA=grpc`.
pub const MARKET_DATA_URL_ENV: &str = "ORDER_ENGINE_MARKET_DATA_URL";

/// Where prices, symbols and market hours come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarketDataSource {
    /// The embedded simulator (`ORDER_ENGINE_SIMULATOR_SEED`, `ORDER_ENGINE_TICK_INTERVAL`).
    Simulator,
    /// The market data service over gRPC.
    Grpc {
        /// From `ORDER_ENGINE_MARKET_DATA_URL` until the configuration
        /// service's registry replaces it (`market::MarketDataDiscovery`).
        address: ConfiguredAddress,
        config: GrpcMarketDataConfig,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `postgres://…` or `sqlite:path`.
    pub database_url: String,
    pub http_addr: SocketAddr,
    /// The gRPC order service's listen address (port 0: the OS picks, as tests do).
    pub grpc_addr: SocketAddr,
    /// What the embedded ledger deposits into each new account.
    pub demo_balance: Decimal,
    /// Added to the quote when reserving for MARKET and STOP_LOSS buys.
    pub market_buffer_bps: u32,
    /// The saga's retry ladder (seed 004 section 3.4 by default).
    pub retry_delays: Vec<Duration>,
    pub passivate_after: Duration,
    pub live_actors_max: usize,
    /// Threads the order actors are spread over (one actix arbiter each).
    pub actor_threads: usize,
    /// Merge appends that arrive together into one transaction (group commit).
    pub group_commit: bool,
    /// A remote balance service; the embedded ledger when unset.
    pub balance_service_url: Option<String>,
    /// A remote account service; every account active when unset.
    pub account_service_url: Option<String>,
    /// The simulator unless `ORDER_ENGINE_MARKET_DATA=grpc`.
    pub market_data: MarketDataSource,
    /// RabbitMQ; none when unset.
    pub amqp_url: Option<String>,
    /// The AMQP consumer's retry ladder, one queue per rung (seed 004 section 3.4 by default).
    pub amqp_retry_delays: Vec<Duration>,
    /// In-consumer retries of a transient failure before the first rung (0: none).
    pub amqp_quick_retries: u32,
    /// First and longest wait between those retries (doubling, with jitter).
    pub amqp_quick_retry_min: Duration,
    pub amqp_quick_retry_max: Duration,
    /// Submissions the AMQP consumer has in hand at once (the channel's prefetch).
    pub amqp_prefetch: u16,
    pub simulator_seed: u64,
    /// How often the simulated market moves.
    pub tick_interval: Duration,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_timeout: Duration,
    /// HS256 secret for user tokens; the development secret when unset.
    pub jwt_secret: Option<String>,
    /// RS256 public key (PEM file) for user tokens; takes precedence over the secret.
    pub jwt_public_key_file: Option<String>,
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
    /// Internal callers (seed 001): each identity's API key and signing secret.
    pub service_keys: Vec<ServiceCredentials>,
    /// How the engine signs its calls to the balance and account services;
    /// unsigned when None.
    pub outbound_credentials: Option<ServiceCredentials>,
    /// How this process shares the work with others on one database (issue 13).
    pub cluster: ClusterSettings,
    /// Pre-trade controls and the security layer (`config::controls`).
    pub controls: ControlSettings,
    /// The per-user pre-trade controls (rate limit, anomaly rules, calendar).
    pub pretrade: PreTradeSettings,
    /// RS256 public key (PEM text, `ORDER_SERVICE_JWT_PUBLIC_KEY` in the config
    /// service); takes precedence over the key file and the secret.
    pub jwt_public_key_pem: Option<String>,
    /// The values that may change while the engine runs (log level, limits),
    /// refreshed from the config service without a restart.
    pub runtime: RuntimeValues,
    /// The address other services reach this engine at, for self-registration
    /// (`ORDER_SERVICE_PRODUCTION_HOST_HTTP`); `http://` + the listen address when unset.
    pub public_url: Option<String>,
    /// Registration metadata: where this instance runs.
    pub region: String,
}

/// The settings a running engine may take a new value of without a restart
/// (contract: limits, thresholds, flags, log level). Published through a
/// `tokio::sync::watch` by `configsvc::refresh`; everything else on
/// [`Settings`] needs a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeValues {
    /// A tracing filter such as `info` or `order_engine=debug`; RUST_LOG's when None.
    pub log_level: Option<String>,
    /// Orders one user may submit per trading day; unlimited when None.
    pub daily_order_limit: Option<u32>,
    /// When the trading day rolls over (`HH:MM`, the exchange's time zone).
    pub daily_reset_time: NaiveTime,
    /// Least seconds between two forced refreshes by one caller.
    pub hard_refresh_rate_limit_seconds: u32,
}

/// The keys (contract names) whose new value [`RuntimeValues`] takes without a restart.
pub const RUNTIME_KEYS: &[&str] = &[
    "ORDER_SERVICE_LOG_LEVEL",
    "ORDER_SERVICE_DAILY_ORDER_LIMIT",
    "ORDER_SERVICE_DAILY_RESET_TIME",
    "ORDER_SERVICE_HARD_REFRESH_RATE_LIMIT_SECONDS",
];

/// Where registration metadata says the engine runs unless `ORDER_SERVICE_REGION` says otherwise.
pub const DEFAULT_REGION: &str = "unknown";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}={value:?} is not valid: {expected}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub value: String,
    pub expected: String,
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    /// Builds settings from `lookup(name)`; unset variables take their defaults.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        fn parse<T: std::str::FromStr>(
            lookup: &impl Fn(&str) -> Option<String>,
            variable: &'static str,
            default: T,
            expected: &str,
        ) -> Result<T, ConfigError> {
            match lookup(variable) {
                None => Ok(default),
                Some(value) => value.trim().parse().map_err(|_| ConfigError {
                    variable,
                    value,
                    expected: expected.to_owned(),
                }),
            }
        }
        let duration = |variable: &'static str, default: Duration| -> Result<Duration, ConfigError> {
            match lookup(variable) {
                None => Ok(default),
                Some(value) => parse_duration(&value).map_err(|expected| ConfigError {
                    variable,
                    value,
                    expected,
                }),
            }
        };
        let retry_delays = match lookup("ORDER_ENGINE_RETRY_DELAYS") {
            None => [300, 900, 3_600, 21_600].into_iter().map(Duration::from_secs).collect(),
            Some(value) => parse_duration_list(&value).map_err(|expected| ConfigError {
                variable: "ORDER_ENGINE_RETRY_DELAYS",
                value,
                expected,
            })?,
        };
        let amqp_retry_delays = match lookup("ORDER_ENGINE_AMQP_RETRY_DELAYS") {
            None => SEED_RETRY_LADDER.to_vec(),
            Some(value) => match parse_duration_list(&value).and_then(check_amqp_ladder) {
                Ok(ladder) => ladder,
                Err(expected) => {
                    return Err(ConfigError {
                        variable: "ORDER_ENGINE_AMQP_RETRY_DELAYS",
                        value,
                        expected,
                    })
                }
            },
        };
        let amqp_quick_retries: u32 = parse(
            &lookup,
            "ORDER_ENGINE_AMQP_QUICK_RETRIES",
            DEFAULT_QUICK_RETRIES,
            &format!("a whole number from 0 to {QUICK_RETRIES_MAX}"),
        )?;
        if amqp_quick_retries > QUICK_RETRIES_MAX {
            return Err(ConfigError {
                variable: "ORDER_ENGINE_AMQP_QUICK_RETRIES",
                value: amqp_quick_retries.to_string(),
                expected: format!("a whole number from 0 to {QUICK_RETRIES_MAX}"),
            });
        }
        let amqp_quick_retry_min = duration("ORDER_ENGINE_AMQP_QUICK_RETRY_MIN", DEFAULT_QUICK_RETRY_MIN)?;
        if amqp_quick_retry_min.is_zero() {
            return Err(ConfigError {
                variable: "ORDER_ENGINE_AMQP_QUICK_RETRY_MIN",
                value: "0".into(),
                expected: "a wait above zero, such as 100ms".into(),
            });
        }
        let amqp_quick_retry_max = duration("ORDER_ENGINE_AMQP_QUICK_RETRY_MAX", DEFAULT_QUICK_RETRY_MAX)?;
        if amqp_quick_retry_max < amqp_quick_retry_min {
            return Err(ConfigError {
                variable: "ORDER_ENGINE_AMQP_QUICK_RETRY_MAX",
                value: format!("{amqp_quick_retry_max:?}"),
                expected: format!(
                    "a wait no shorter than ORDER_ENGINE_AMQP_QUICK_RETRY_MIN ({amqp_quick_retry_min:?})"
                ),
            });
        }
        let prefetch_expected = format!("a whole number from 1 to {PREFETCH_MAX}");
        let amqp_prefetch: u16 = parse(
            &lookup,
            "ORDER_ENGINE_AMQP_PREFETCH",
            DEFAULT_PREFETCH,
            &prefetch_expected,
        )?;
        // 0 would mean "no limit" to the broker: a flood would land in memory.
        if amqp_prefetch == 0 || amqp_prefetch > PREFETCH_MAX {
            return Err(ConfigError {
                variable: "ORDER_ENGINE_AMQP_PREFETCH",
                value: amqp_prefetch.to_string(),
                expected: prefetch_expected,
            });
        }
        let demo_balance: Decimal = parse(
            &lookup,
            "ORDER_ENGINE_DEMO_BALANCE",
            Decimal::new(100_000, 0),
            "a decimal amount such as 100000 or 2500.50",
        )?;
        if demo_balance < Decimal::ZERO {
            return Err(ConfigError {
                variable: "ORDER_ENGINE_DEMO_BALANCE",
                value: demo_balance.to_string(),
                expected: "an amount of zero or more".into(),
            });
        }
        let actor_threads_expected = format!("a whole number from 1 to {ACTOR_THREADS_MAX}");
        let actor_threads: usize = parse(
            &lookup,
            "ORDER_ENGINE_ACTOR_THREADS",
            default_actor_threads(),
            &actor_threads_expected,
        )?;
        if !(1..=ACTOR_THREADS_MAX).contains(&actor_threads) {
            return Err(ConfigError {
                variable: "ORDER_ENGINE_ACTOR_THREADS",
                value: actor_threads.to_string(),
                expected: actor_threads_expected,
            });
        }
        let market_buffer_bps = parse(
            &lookup,
            "ORDER_ENGINE_MARKET_BUFFER_BPS",
            500,
            "basis points as a whole number, such as 500 for 5 %",
        )?;
        let runtime = RuntimeValues {
            log_level: lookup("ORDER_ENGINE_LOG_LEVEL"),
            daily_order_limit: match lookup("ORDER_ENGINE_DAILY_ORDER_LIMIT") {
                None => None,
                Some(value) => Some(value.trim().parse::<u32>().map_err(|_| ConfigError {
                    variable: "ORDER_ENGINE_DAILY_ORDER_LIMIT",
                    value,
                    expected: "a whole number of orders, such as 100".into(),
                })?),
            },
            daily_reset_time: match lookup("ORDER_ENGINE_DAILY_RESET_TIME") {
                None => NaiveTime::MIN,
                Some(value) => NaiveTime::parse_from_str(value.trim(), "%H:%M").map_err(|_| ConfigError {
                    variable: "ORDER_ENGINE_DAILY_RESET_TIME",
                    value,
                    expected: "a time of day as HH:MM, such as 09:15".into(),
                })?,
            },
            hard_refresh_rate_limit_seconds: parse(
                &lookup,
                "ORDER_ENGINE_HARD_REFRESH_RATE_LIMIT_SECONDS",
                60,
                "a whole number of seconds, such as 60",
            )?,
        };
        Ok(Self {
            database_url: lookup("DATABASE_URL").unwrap_or_else(|| EMBEDDED_DATABASE_URL.to_owned()),
            http_addr: parse(
                &lookup,
                "ORDER_ENGINE_HTTP_ADDR",
                DEFAULT_HTTP_ADDR.parse().map_err(|_| ConfigError {
                    variable: "ORDER_ENGINE_HTTP_ADDR",
                    value: DEFAULT_HTTP_ADDR.into(),
                    expected: "host:port".into(),
                })?,
                "an address and port such as 127.0.0.1:8080 or 0.0.0.0:8080",
            )?,
            grpc_addr: parse(
                &lookup,
                "ORDER_ENGINE_GRPC_ADDR",
                DEFAULT_GRPC_ADDR.parse().map_err(|_| ConfigError {
                    variable: "ORDER_ENGINE_GRPC_ADDR",
                    value: DEFAULT_GRPC_ADDR.into(),
                    expected: "host:port".into(),
                })?,
                "an address and port such as 127.0.0.1:50051 or 0.0.0.0:50051",
            )?,
            demo_balance,
            market_buffer_bps,
            retry_delays,
            passivate_after: duration("ORDER_ENGINE_PASSIVATE_AFTER", Duration::from_secs(60))?,
            // Non-zero: with 0, every order actor started would evict another at once.
            live_actors_max: parse(
                &lookup,
                "ORDER_ENGINE_LIVE_ACTORS_MAX",
                NonZeroUsize::new(10_000).unwrap_or(NonZeroUsize::MIN),
                "a whole number above zero",
            )?
            .get(),
            actor_threads,
            group_commit: parse(&lookup, "ORDER_ENGINE_GROUP_COMMIT", true, "true or false")?,
            balance_service_url: lookup("BALANCE_SERVICE_URL"),
            account_service_url: lookup("ACCOUNT_SERVICE_URL"),
            market_data: market_data(&lookup)?,
            amqp_url: lookup("AMQP_URL"),
            amqp_retry_delays,
            amqp_quick_retries,
            amqp_quick_retry_min,
            amqp_quick_retry_max,
            amqp_prefetch,
            simulator_seed: parse(&lookup, "ORDER_ENGINE_SIMULATOR_SEED", 42, "a whole number")?,
            tick_interval: duration("ORDER_ENGINE_TICK_INTERVAL", Duration::from_secs(1))?,
            shutdown_timeout: duration("ORDER_ENGINE_SHUTDOWN_TIMEOUT", Duration::from_secs(30))?,
            jwt_secret: lookup("ORDER_ENGINE_JWT_SECRET"),
            jwt_public_key_file: lookup("ORDER_ENGINE_JWT_PUBLIC_KEY_FILE"),
            jwt_issuer: lookup("ORDER_ENGINE_JWT_ISSUER"),
            jwt_audience: lookup("ORDER_ENGINE_JWT_AUDIENCE"),
            service_keys: service_keys(&lookup)?,
            outbound_credentials: outbound_credentials(&lookup)?,
            cluster: cluster::cluster(&lookup)?,
            controls: ControlSettings::from_lookup(&lookup)?,
            pretrade: PreTradeSettings::from_lookup(&lookup)?,
            jwt_public_key_pem: lookup("ORDER_ENGINE_JWT_PUBLIC_KEY"),
            runtime,
            public_url: lookup("ORDER_ENGINE_PRODUCTION_HOST_HTTP"),
            region: lookup("ORDER_ENGINE_REGION").unwrap_or_else(|| DEFAULT_REGION.to_owned()),
        })
    }
}

/// `ORDER_ENGINE_MARKET_DATA` and, for `grpc`, its address and patience.
fn market_data(lookup: &impl Fn(&str) -> Option<String>) -> Result<MarketDataSource, ConfigError> {
    let choice = lookup(MARKET_DATA_ENV);
    match choice.as_deref().map(str::trim) {
        None | Some("simulator") => return Ok(MarketDataSource::Simulator),
        Some("grpc") => {}
        Some(_) => {
            return Err(ConfigError {
                variable: MARKET_DATA_ENV,
                value: choice.unwrap_or_default(),
                expected: "simulator or grpc".into(),
            })
        }
    }
    let url = lookup(MARKET_DATA_URL_ENV).ok_or_else(|| ConfigError {
        variable: MARKET_DATA_URL_ENV,
        value: String::new(),
        expected: format!("http://host:port of the market data service (required with {MARKET_DATA_ENV}=grpc)"),
    })?;
    let address = url.trim().parse().map_err(|_| ConfigError {
        variable: MARKET_DATA_URL_ENV,
        value: url.clone(),
        expected: "http://host:port".into(),
    })?;
    let duration = |variable: &'static str, default: Duration| -> Result<Duration, ConfigError> {
        match lookup(variable) {
            None => Ok(default),
            Some(value) => match parse_duration(&value) {
                Ok(duration) if !duration.is_zero() => Ok(duration),
                Ok(_) => Err("a duration above zero".to_owned()),
                Err(expected) => Err(expected),
            }
            .map_err(|expected| ConfigError {
                variable,
                value,
                expected,
            }),
        }
    };
    // At least one: zero attempts never calls, and a zero threshold never opens.
    let at_least_one = |variable: &'static str, default: u32| -> Result<u32, ConfigError> {
        match lookup(variable) {
            None => Ok(default),
            Some(value) => value
                .trim()
                .parse::<std::num::NonZeroU32>()
                .map(std::num::NonZeroU32::get)
                .map_err(|_| ConfigError {
                    variable,
                    value,
                    expected: "a whole number above zero".into(),
                }),
        }
    };
    let defaults = GrpcMarketDataConfig::default();
    Ok(MarketDataSource::Grpc {
        address,
        config: GrpcMarketDataConfig {
            deadline: duration("ORDER_ENGINE_MARKET_DATA_DEADLINE", defaults.deadline)?,
            retry: RetryPolicy {
                attempts_max: at_least_one("ORDER_ENGINE_MARKET_DATA_ATTEMPTS", defaults.retry.attempts_max)?,
                ..defaults.retry
            },
            breaker: BreakerConfig {
                failure_threshold: at_least_one(
                    "ORDER_ENGINE_MARKET_DATA_BREAKER_FAILURES",
                    defaults.breaker.failure_threshold,
                )?,
                open_for: duration("ORDER_ENGINE_MARKET_DATA_BREAKER_OPEN_FOR", defaults.breaker.open_for)?,
            },
            poll_interval: duration("ORDER_ENGINE_MARKET_DATA_POLL_INTERVAL", defaults.poll_interval)?,
        },
    })
}

/// One actor thread per core the process may use (at least one, at most
/// [`ACTOR_THREADS_MAX`]); one when the machine cannot say.
fn default_actor_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, NonZeroUsize::get)
        .clamp(1, ACTOR_THREADS_MAX)
}

/// What an error shows instead of a variable that holds keys or secrets.
pub const HIDDEN: &str = "(hidden: it holds keys or secrets)";

fn hidden_error(variable: &'static str, expected: impl Into<String>) -> ConfigError {
    ConfigError {
        variable,
        value: HIDDEN.into(),
        expected: expected.into(),
    }
}

/// The inbound registry: [`SERVICE_KEYS_ENV`] and [`SERVICE_SECRETS_ENV`] must
/// list the same identities, each once, and every pair must pass
/// `ServiceCredentials::validate`.
fn service_keys(lookup: &impl Fn(&str) -> Option<String>) -> Result<Vec<ServiceCredentials>, ConfigError> {
    let pairs = |variable: &'static str| -> Result<Vec<(String, String)>, ConfigError> {
        let Some(text) = lookup(variable) else {
            return Ok(Vec::new());
        };
        let pairs = parse_pairs(&text).map_err(|expected| hidden_error(variable, expected))?;
        for (i, (identity, _)) in pairs.iter().enumerate() {
            if pairs[..i].iter().any(|(earlier, _)| earlier == identity) {
                return Err(hidden_error(variable, format!("service {identity:?} is listed twice")));
            }
        }
        Ok(pairs)
    };
    let keys = pairs(SERVICE_KEYS_ENV)?;
    let secrets = pairs(SERVICE_SECRETS_ENV)?;
    if let Some((identity, _)) = secrets.iter().find(|(id, _)| !keys.iter().any(|(k, _)| k == id)) {
        return Err(hidden_error(
            SERVICE_SECRETS_ENV,
            format!("service {identity:?} has a signing secret but no API key in {SERVICE_KEYS_ENV}"),
        ));
    }
    keys.into_iter()
        .map(|(identity, api_key)| {
            let secret = secrets.iter().find(|(id, _)| *id == identity).map(|(_, s)| s.clone());
            let Some(signing_secret) = secret else {
                return Err(hidden_error(
                    SERVICE_SECRETS_ENV,
                    format!(
                        "service {identity:?} (in {SERVICE_KEYS_ENV}) has no signing secret; add {identity}=<a secret of 32 bytes or more, not its API key>"
                    ),
                ));
            };
            let credentials = ServiceCredentials::new(identity, api_key, signing_secret);
            credentials
                .validate()
                .map_err(|e| hidden_error(SERVICE_SECRETS_ENV, e.to_string()))?;
            Ok(credentials)
        })
        .collect()
}

/// The engine's own credentials: signed outbound calls need both
/// [`INTERNAL_API_KEY_ENV`] and [`SIGNING_SECRET_ENV`]; a secret without a
/// key is refused rather than ignored.
fn outbound_credentials(lookup: &impl Fn(&str) -> Option<String>) -> Result<Option<ServiceCredentials>, ConfigError> {
    let Some(signing_secret) = lookup(SIGNING_SECRET_ENV) else {
        return Ok(None);
    };
    let api_key = lookup(INTERNAL_API_KEY_ENV).ok_or_else(|| {
        hidden_error(
            SIGNING_SECRET_ENV,
            format!("signed outbound calls also need {INTERNAL_API_KEY_ENV}, the API key sent beside the signature"),
        )
    })?;
    let identity = lookup(SERVICE_IDENTITY_ENV).unwrap_or_else(|| DEFAULT_SERVICE_IDENTITY.to_owned());
    let credentials = ServiceCredentials::new(identity.trim(), api_key.trim(), signing_secret.trim());
    credentials
        .validate()
        .map_err(|e| hidden_error(SIGNING_SECRET_ENV, e.to_string()))?;
    Ok(Some(credentials))
}

impl Settings {
    /// The RabbitMQ layer's settings for the broker at `url`.
    pub fn amqp_config(&self, url: &str) -> AmqpConfig {
        AmqpConfig {
            retry_delays: self.amqp_retry_delays.clone(),
            quick_retries: self.amqp_quick_retries,
            quick_retry_min: self.amqp_quick_retry_min,
            quick_retry_max: self.amqp_quick_retry_max,
            prefetch: self.amqp_prefetch,
            forward_submissions: self.cluster.submit_routing == SubmitRouting::Forward,
            ..AmqpConfig::new(url)
        }
    }
}

/// Every rung becomes a queue with a 32-bit millisecond TTL: bounded in
/// count, each from 1 ms to RabbitMQ's largest TTL.
fn check_amqp_ladder(ladder: Vec<Duration>) -> Result<Vec<Duration>, String> {
    if ladder.len() > RETRY_RUNGS_MAX {
        return Err(format!("at most {RETRY_RUNGS_MAX} delays (each is a queue)"));
    }
    if ladder.iter().any(|d| d.as_millis() == 0 || *d > RETRY_DELAY_MAX) {
        return Err(format!(
            "delays from 1ms to {}h (RabbitMQ's longest message TTL)",
            RETRY_DELAY_MAX.as_secs() / 3_600
        ));
    }
    Ok(ladder)
}

/// `algo_engine=k1,user_interface=k2` → pairs; every pair needs both halves.
/// A value may hold `=` (base64) but not `,`.
fn parse_pairs(text: &str) -> Result<Vec<(String, String)>, String> {
    text.split(',')
        .map(|pair| match pair.split_once('=') {
            Some((identity, value)) if !identity.trim().is_empty() && !value.trim().is_empty() => {
                Ok((identity.trim().to_owned(), value.trim().to_owned()))
            }
            _ => Err("comma-separated identity=value pairs, such as algo_engine=k1,user_interface=k2".to_owned()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Settings::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn no_configuration_is_the_embedded_default() {
        // Proves `serve` with nothing set runs on SQLite at 127.0.0.1:8080 with the seed's ladder.
        let s = settings(&[]).unwrap();
        assert_eq!(s.database_url, EMBEDDED_DATABASE_URL);
        assert_eq!(s.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(s.grpc_addr.to_string(), "127.0.0.1:50051");
        assert_eq!(
            s.retry_delays.iter().map(Duration::as_secs).collect::<Vec<_>>(),
            [300, 900, 3600, 21600]
        );
        assert_eq!((s.balance_service_url, s.amqp_url), (None, None));
        assert_eq!(s.amqp_retry_delays, SEED_RETRY_LADDER);
        assert_eq!(s.amqp_quick_retries, DEFAULT_QUICK_RETRIES);
    }

    #[test]
    fn the_amqp_ladder_and_quick_retries_are_settings() {
        // Proves the consumer's ladder (issue 11: it was hard-wired) and its in-consumer retries are read, validated and reach AmqpConfig.
        let s = settings(&[
            ("ORDER_ENGINE_AMQP_RETRY_DELAYS", "200ms,1s"),
            ("ORDER_ENGINE_AMQP_QUICK_RETRIES", "2"),
            ("ORDER_ENGINE_AMQP_QUICK_RETRY_MIN", "10ms"),
            ("ORDER_ENGINE_AMQP_QUICK_RETRY_MAX", "50ms"),
            ("ORDER_ENGINE_AMQP_PREFETCH", "256"),
        ])
        .unwrap();
        let config = s.amqp_config("amqp://h/v");
        assert_eq!(
            config.retry_delays,
            vec![Duration::from_millis(200), Duration::from_secs(1)]
        );
        assert_eq!(
            (config.quick_retries, config.quick_retry_min, config.quick_retry_max),
            (2, Duration::from_millis(10), Duration::from_millis(50))
        );
        assert_eq!(config.url, "amqp://h/v");
        assert_eq!(config.prefetch, 256);
        assert_eq!(
            settings(&[]).unwrap().amqp_config("amqp://h/v").prefetch,
            DEFAULT_PREFETCH
        );
        assert_eq!(s.retry_delays.len(), 4, "the saga's ladder is a separate setting");
        for (variable, value) in [
            ("ORDER_ENGINE_AMQP_RETRY_DELAYS", "5 minutes"),
            ("ORDER_ENGINE_AMQP_RETRY_DELAYS", "0ms"),
            ("ORDER_ENGINE_AMQP_RETRY_DELAYS", "2000h"),
            (
                "ORDER_ENGINE_AMQP_RETRY_DELAYS",
                "1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s",
            ),
            ("ORDER_ENGINE_AMQP_QUICK_RETRIES", "21"),
            ("ORDER_ENGINE_AMQP_QUICK_RETRIES", "-1"),
            ("ORDER_ENGINE_AMQP_QUICK_RETRY_MIN", "0ms"),
            ("ORDER_ENGINE_AMQP_QUICK_RETRY_MAX", "50ms"),
            ("ORDER_ENGINE_AMQP_PREFETCH", "0"),
            ("ORDER_ENGINE_AMQP_PREFETCH", "1025"),
            ("ORDER_ENGINE_AMQP_PREFETCH", "many"),
        ] {
            let error = settings(&[(variable, value)]).unwrap_err();
            assert_eq!(error.variable, variable, "{value}: {error}");
        }
    }

    #[test]
    fn variables_override_defaults() {
        // Proves each documented variable is read.
        let s = settings(&[
            ("DATABASE_URL", "postgres://x@h/db"),
            ("ORDER_ENGINE_HTTP_ADDR", "0.0.0.0:9000"),
            ("ORDER_ENGINE_GRPC_ADDR", "0.0.0.0:9001"),
            ("ORDER_ENGINE_RETRY_DELAYS", "10ms,20ms"),
            ("ORDER_ENGINE_DEMO_BALANCE", "2500.50"),
            ("ORDER_ENGINE_PASSIVATE_AFTER", "5s"),
            ("BALANCE_SERVICE_URL", "http://balance:8000"),
        ])
        .unwrap();
        assert_eq!(s.database_url, "postgres://x@h/db");
        assert_eq!(s.http_addr.port(), 9000);
        assert_eq!(s.grpc_addr.port(), 9001);
        assert_eq!(
            s.retry_delays,
            vec![Duration::from_millis(10), Duration::from_millis(20)]
        );
        assert_eq!(s.demo_balance, Decimal::new(250_050, 2));
        assert_eq!(s.passivate_after, Duration::from_secs(5));
        assert_eq!(s.balance_service_url.as_deref(), Some("http://balance:8000"));
    }

    #[test]
    fn a_bad_value_names_the_variable_and_the_expected_form() {
        // Proves errors are actionable.
        let error = settings(&[("ORDER_ENGINE_HTTP_ADDR", "localhost")]).unwrap_err();
        assert_eq!(error.variable, "ORDER_ENGINE_HTTP_ADDR");
        assert!(error.to_string().contains("127.0.0.1:8080"), "{error}");
        let error = settings(&[("ORDER_ENGINE_RETRY_DELAYS", "5 minutes")]).unwrap_err();
        assert_eq!(error.variable, "ORDER_ENGINE_RETRY_DELAYS");
        let error = settings(&[("ORDER_ENGINE_DEMO_BALANCE", "-1")]).unwrap_err();
        assert_eq!(error.variable, "ORDER_ENGINE_DEMO_BALANCE");
        let error = settings(&[("ORDER_ENGINE_SERVICE_KEYS", "oms_gateway:s3cr3t")]).unwrap_err();
        assert_eq!(error.variable, "ORDER_ENGINE_SERVICE_KEYS");
        assert!(
            !error.to_string().contains("s3cr3t"),
            "keys must not be echoed: {error}"
        );
    }

    /// Environment variables of one case, as `(name, value)` pairs.
    type Vars<'a> = &'a [(&'a str, &'a str)];

    const ALGO_SECRET: &str = "algo-engine-signing-secret-0123456789";
    const RISK_SECRET: &str = "risk-manager-signing-secret=0123456789";

    #[test]
    fn service_keys_pair_with_signing_secrets() {
        // Proves each inbound identity gets its API key and its own secret, and the engine's outbound
        // credentials are read when a signing secret is configured.
        let s = settings(&[
            (SERVICE_KEYS_ENV, "algo_engine=k1, risk_manager=k2"),
            (
                SERVICE_SECRETS_ENV,
                &format!("risk_manager={RISK_SECRET},algo_engine={ALGO_SECRET}"),
            ),
            (INTERNAL_API_KEY_ENV, "engine-key"),
            (SIGNING_SECRET_ENV, "order-engine-signing-secret-0123456789"),
        ])
        .unwrap();
        assert_eq!(
            s.service_keys,
            vec![
                ServiceCredentials::new("algo_engine", "k1", ALGO_SECRET),
                ServiceCredentials::new("risk_manager", "k2", RISK_SECRET),
            ]
        );
        assert_eq!(
            s.outbound_credentials,
            Some(ServiceCredentials::new(
                "order_engine",
                "engine-key",
                "order-engine-signing-secret-0123456789"
            ))
        );
        assert_eq!(settings(&[]).unwrap().outbound_credentials, None);
    }

    #[test]
    fn unusable_signing_secrets_are_refused_at_start_naming_the_identity() {
        // Proves start-up refuses a missing, short, key-equal, orphan or repeated secret with the
        // variable and the identity named, and never echoes a key or secret.
        let short = "algo-short-secret";
        // (variables set, the variable the error names, what its message says)
        let cases: [(Vars<'_>, &str, &str); 7] = [
            (
                &[(SERVICE_KEYS_ENV, "algo_engine=k1")],
                SERVICE_SECRETS_ENV,
                "\"algo_engine\" (in ORDER_ENGINE_SERVICE_KEYS) has no signing secret",
            ),
            (
                &[
                    (SERVICE_KEYS_ENV, "algo_engine=k1"),
                    (SERVICE_SECRETS_ENV, "algo_engine=algo-short-secret"),
                ],
                SERVICE_SECRETS_ENV,
                "\"algo_engine\" is 17 bytes; at least 32",
            ),
            (
                &[
                    (SERVICE_KEYS_ENV, &format!("algo_engine={ALGO_SECRET}")),
                    (SERVICE_SECRETS_ENV, &format!("algo_engine={ALGO_SECRET}")),
                ],
                SERVICE_SECRETS_ENV,
                "\"algo_engine\" equals its API key",
            ),
            (
                &[
                    (SERVICE_KEYS_ENV, "algo_engine=k1"),
                    (
                        SERVICE_SECRETS_ENV,
                        &format!("algo_engine={ALGO_SECRET},stranger={RISK_SECRET}"),
                    ),
                ],
                SERVICE_SECRETS_ENV,
                "\"stranger\" has a signing secret but no API key",
            ),
            (
                &[(SERVICE_KEYS_ENV, "algo_engine=k1,algo_engine=k2")],
                SERVICE_KEYS_ENV,
                "\"algo_engine\" is listed twice",
            ),
            (
                &[(SIGNING_SECRET_ENV, ALGO_SECRET)],
                SIGNING_SECRET_ENV,
                "also need INTERNAL_API_KEY",
            ),
            (
                &[(SIGNING_SECRET_ENV, short), (INTERNAL_API_KEY_ENV, "engine-key")],
                SIGNING_SECRET_ENV,
                "\"order_engine\" is 17 bytes",
            ),
        ];
        for (vars, variable, expected) in cases {
            let error = settings(vars).unwrap_err();
            let text = error.to_string();
            assert_eq!(error.variable, variable, "{text}");
            assert!(text.contains(expected), "{text}");
            for secret in [ALGO_SECRET, RISK_SECRET, short, "k1"] {
                assert!(
                    !text.contains(&format!("={secret}")) && !error.value.contains(secret),
                    "{text}"
                );
            }
        }
    }

    #[test]
    fn actor_threads_default_to_the_cores_and_are_bounded() {
        // Proves `serve` spreads order actors over one thread per core unless ORDER_ENGINE_ACTOR_THREADS says otherwise, and refuses 0 or more than ACTOR_THREADS_MAX.
        let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        assert_eq!(settings(&[]).unwrap().actor_threads, cores.clamp(1, ACTOR_THREADS_MAX));
        let s = settings(&[("ORDER_ENGINE_ACTOR_THREADS", " 3 ")]).unwrap();
        assert_eq!(s.actor_threads, 3);
        assert_eq!(crate::app::engine_config(&s).actors.actor_threads, 3);
        for value in ["0", "65", "-1", "many"] {
            let error = settings(&[("ORDER_ENGINE_ACTOR_THREADS", value)]).unwrap_err();
            assert_eq!(error.variable, "ORDER_ENGINE_ACTOR_THREADS", "{value}: {error}");
            assert!(error.to_string().contains("from 1 to 64"), "{error}");
        }
    }

    #[test]
    fn market_data_is_the_simulator_unless_grpc_is_chosen_with_an_address() {
        // Proves the setting that selects the market data client: simulator by
        // default, grpc with its address and patience, grpc without an address refused.
        assert_eq!(settings(&[]).unwrap().market_data, MarketDataSource::Simulator);
        let grpc = settings(&[
            (MARKET_DATA_ENV, "grpc"),
            (MARKET_DATA_URL_ENV, "http://market-data:50054"),
            ("ORDER_ENGINE_MARKET_DATA_DEADLINE", "250ms"),
            ("ORDER_ENGINE_MARKET_DATA_ATTEMPTS", "2"),
            ("ORDER_ENGINE_MARKET_DATA_BREAKER_FAILURES", "4"),
            ("ORDER_ENGINE_MARKET_DATA_BREAKER_OPEN_FOR", "10s"),
        ])
        .unwrap();
        let MarketDataSource::Grpc { address, config } = grpc.market_data else {
            panic!("grpc was chosen");
        };
        assert_eq!(address, ConfiguredAddress("http://market-data:50054".into()));
        assert_eq!(config.deadline, Duration::from_millis(250));
        assert_eq!(config.retry.attempts_max, 2);
        assert_eq!(config.breaker.failure_threshold, 4);
        assert_eq!(config.breaker.open_for, Duration::from_secs(10));
        let error = settings(&[(MARKET_DATA_ENV, "grpc")]).unwrap_err();
        assert_eq!(error.variable, MARKET_DATA_URL_ENV);
        let error = settings(&[(MARKET_DATA_ENV, "bloomberg")]).unwrap_err();
        assert_eq!(error.variable, MARKET_DATA_ENV);
        let error = settings(&[(MARKET_DATA_ENV, "grpc"), (MARKET_DATA_URL_ENV, "market-data:50054")]).unwrap_err();
        assert_eq!(error.variable, MARKET_DATA_URL_ENV);
        let error = settings(&[
            (MARKET_DATA_ENV, "grpc"),
            (MARKET_DATA_URL_ENV, "http://md:1"),
            ("ORDER_ENGINE_MARKET_DATA_ATTEMPTS", "0"),
        ])
        .unwrap_err();
        assert_eq!(error.variable, "ORDER_ENGINE_MARKET_DATA_ATTEMPTS");
    }

    #[test]
    fn zero_live_actors_is_refused() {
        // Proves ORDER_ENGINE_LIVE_ACTORS_MAX=0 is refused, as its message promises (found by fuzz/settings).
        let error = settings(&[("ORDER_ENGINE_LIVE_ACTORS_MAX", "0")]).unwrap_err();
        assert_eq!(error.variable, "ORDER_ENGINE_LIVE_ACTORS_MAX");
        assert!(error.to_string().contains("above zero"), "{error}");
        let one = settings(&[("ORDER_ENGINE_LIVE_ACTORS_MAX", " 1 ")]).unwrap();
        assert_eq!(one.live_actors_max, 1);
    }
}
