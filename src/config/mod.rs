//! Typed settings for `serve`, read from the environment once at start.
//!
//! Parsing is pure (the lookup is passed in) so every variable and its error
//! message is tested; `from_env` is the only place that reads the process env.

mod duration;

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

use rust_decimal::Decimal;

pub use duration::{parse_duration, parse_duration_list};

/// Where the embedded default keeps its log.
pub const EMBEDDED_DATABASE_URL: &str = "sqlite:data/order-engine.db";
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8080";

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `postgres://…` or `sqlite:path`.
    pub database_url: String,
    pub http_addr: SocketAddr,
    /// What the embedded ledger deposits into each new account.
    pub demo_balance: Decimal,
    /// Added to the quote when reserving for MARKET and STOP_LOSS buys.
    pub market_buffer_bps: u32,
    /// The saga's retry ladder (seed 004 section 3.4 by default).
    pub retry_delays: Vec<Duration>,
    pub passivate_after: Duration,
    pub live_actors_max: usize,
    /// Merge appends that arrive together into one transaction (group commit).
    pub group_commit: bool,
    /// A remote balance service; the embedded ledger when unset.
    pub balance_service_url: Option<String>,
    /// A remote account service; every account active when unset.
    pub account_service_url: Option<String>,
    /// RabbitMQ; none when unset.
    pub amqp_url: Option<String>,
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
    /// Internal callers' API keys (seed 001): `identity=key` pairs.
    pub service_keys: Vec<(String, String)>,
}

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
            demo_balance,
            market_buffer_bps: parse(
                &lookup,
                "ORDER_ENGINE_MARKET_BUFFER_BPS",
                500,
                "basis points as a whole number, such as 500 for 5 %",
            )?,
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
            group_commit: parse(&lookup, "ORDER_ENGINE_GROUP_COMMIT", true, "true or false")?,
            balance_service_url: lookup("BALANCE_SERVICE_URL"),
            account_service_url: lookup("ACCOUNT_SERVICE_URL"),
            amqp_url: lookup("AMQP_URL"),
            simulator_seed: parse(&lookup, "ORDER_ENGINE_SIMULATOR_SEED", 42, "a whole number")?,
            tick_interval: duration("ORDER_ENGINE_TICK_INTERVAL", Duration::from_secs(1))?,
            shutdown_timeout: duration("ORDER_ENGINE_SHUTDOWN_TIMEOUT", Duration::from_secs(30))?,
            jwt_secret: lookup("ORDER_ENGINE_JWT_SECRET"),
            jwt_public_key_file: lookup("ORDER_ENGINE_JWT_PUBLIC_KEY_FILE"),
            jwt_issuer: lookup("ORDER_ENGINE_JWT_ISSUER"),
            jwt_audience: lookup("ORDER_ENGINE_JWT_AUDIENCE"),
            service_keys: match lookup("ORDER_ENGINE_SERVICE_KEYS") {
                None => Vec::new(),
                Some(value) => parse_service_keys(&value).map_err(|expected| ConfigError {
                    variable: "ORDER_ENGINE_SERVICE_KEYS",
                    value: "(hidden: it holds keys)".into(),
                    expected,
                })?,
            },
        })
    }
}

/// `algo_engine=k1,user_interface=k2` → pairs; every pair needs both halves.
fn parse_service_keys(text: &str) -> Result<Vec<(String, String)>, String> {
    text.split(',')
        .map(|pair| match pair.split_once('=') {
            Some((identity, key)) if !identity.trim().is_empty() && !key.trim().is_empty() => {
                Ok((identity.trim().to_owned(), key.trim().to_owned()))
            }
            _ => Err("comma-separated identity=key pairs, such as algo_engine=k1,user_interface=k2".to_owned()),
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
        assert_eq!(
            s.retry_delays.iter().map(Duration::as_secs).collect::<Vec<_>>(),
            [300, 900, 3600, 21600]
        );
        assert_eq!((s.balance_service_url, s.amqp_url), (None, None));
    }

    #[test]
    fn variables_override_defaults() {
        // Proves each documented variable is read.
        let s = settings(&[
            ("DATABASE_URL", "postgres://x@h/db"),
            ("ORDER_ENGINE_HTTP_ADDR", "0.0.0.0:9000"),
            ("ORDER_ENGINE_RETRY_DELAYS", "10ms,20ms"),
            ("ORDER_ENGINE_DEMO_BALANCE", "2500.50"),
            ("ORDER_ENGINE_PASSIVATE_AFTER", "5s"),
            ("BALANCE_SERVICE_URL", "http://balance:8000"),
        ])
        .unwrap();
        assert_eq!(s.database_url, "postgres://x@h/db");
        assert_eq!(s.http_addr.port(), 9000);
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
        let keys = settings(&[("ORDER_ENGINE_SERVICE_KEYS", "algo_engine=k1, risk_manager=k2")]).unwrap();
        assert_eq!(keys.service_keys.len(), 2);
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
