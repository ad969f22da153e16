//! The settings of the per-user pre-trade controls (issue 16: the rate
//! limit, the five anomaly rules, the hold, the exchange's calendar). The
//! daily order limit and its reset time are run-time values
//! ([`RuntimeValues`](super::RuntimeValues)): they change without a restart.
//! These take effect at start.

use std::time::Duration;

use chrono::NaiveTime;
use chrono_tz::Tz;
use rust_decimal::Decimal;

use super::duration::parse_duration;
use super::ConfigError;
use crate::trading_day::{Thresholds, RECENT_KEPT_MAX};

pub const PRE_TRADE_CONTROLS_ENV: &str = "ORDER_ENGINE_PRE_TRADE_CONTROLS";
pub const RATE_LIMIT_ENV: &str = "ORDER_ENGINE_RATE_LIMIT_PER_MINUTE";
pub const EXCHANGE_TIMEZONE_ENV: &str = "ORDER_ENGINE_EXCHANGE_TIMEZONE";
pub const SESSION_HOURS_ENV: &str = "ORDER_ENGINE_SESSION_HOURS";
pub const ANOMALY_ORDERS_ENV: &str = "ORDER_ENGINE_ANOMALY_ORDERS_PER_MINUTE";
pub const ANOMALY_QUANTITY_ENV: &str = "ORDER_ENGINE_ANOMALY_ORDER_QUANTITY";
pub const ANOMALY_VALUE_ENV: &str = "ORDER_ENGINE_ANOMALY_ORDER_VALUE";
pub const ANOMALY_SYMBOLS_ENV: &str = "ORDER_ENGINE_ANOMALY_SYMBOLS_PER_DAY";
pub const ANOMALY_CANCELLATIONS_ENV: &str = "ORDER_ENGINE_ANOMALY_CANCELLATIONS_PER_MINUTE";
pub const ANOMALY_HOLD_ENV: &str = "ORDER_ENGINE_ANOMALY_HOLD";

/// Seed 001's thresholds are an Indian exchange's (10 lakh, 09:00-15:30).
pub const DEFAULT_EXCHANGE_TIMEZONE: Tz = chrono_tz::Asia::Kolkata;
/// Above seed 001's 30 a minute, so the anomaly fires before the limit refuses.
pub const DEFAULT_RATE_LIMIT_PER_MINUTE: u32 = 120;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreTradeSettings {
    /// Off: no order is counted, limited or watched per user (for a platform
    /// that enforces these upstream). Default on.
    pub enabled: bool,
    /// Orders a user may submit in any minute; None (`0`) is no limit.
    pub rate_limit_per_minute: Option<u32>,
    pub exchange_timezone: Tz,
    pub session_open: NaiveTime,
    pub session_close: NaiveTime,
    pub thresholds: Thresholds,
    /// How long a critical anomaly holds a user's orders, where the
    /// enforcement flag is on for that user.
    pub hold: Duration,
}

impl Default for PreTradeSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            rate_limit_per_minute: Some(DEFAULT_RATE_LIMIT_PER_MINUTE),
            exchange_timezone: DEFAULT_EXCHANGE_TIMEZONE,
            session_open: NaiveTime::from_hms_opt(9, 0, 0).unwrap_or(NaiveTime::MIN),
            session_close: NaiveTime::from_hms_opt(15, 30, 0).unwrap_or(NaiveTime::MIN),
            thresholds: Thresholds::default(),
            hold: Duration::from_secs(15 * 60),
        }
    }
}

impl PreTradeSettings {
    pub fn from_lookup(lookup: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let enabled = match lookup(PRE_TRADE_CONTROLS_ENV) {
            None => true,
            Some(value) => match value.trim().to_ascii_lowercase().as_str() {
                "on" | "true" | "1" => true,
                "off" | "false" | "0" => false,
                _ => {
                    return Err(ConfigError {
                        variable: PRE_TRADE_CONTROLS_ENV,
                        value,
                        expected: "on or off".into(),
                    })
                }
            },
        };
        let per_minute = |variable: &'static str, default: u32| -> Result<u32, ConfigError> {
            let Some(value) = lookup(variable) else {
                return Ok(default);
            };
            match value.trim().parse::<u32>() {
                Ok(n) if n as usize <= RECENT_KEPT_MAX => Ok(n),
                _ => Err(ConfigError {
                    variable,
                    value,
                    expected: format!("a whole number from 0 to {RECENT_KEPT_MAX} a minute"),
                }),
            }
        };
        let amount = |variable: &'static str, default: Decimal| -> Result<Decimal, ConfigError> {
            let Some(value) = lookup(variable) else {
                return Ok(default);
            };
            match value.trim().parse::<Decimal>() {
                Ok(n) if n > Decimal::ZERO => Ok(n),
                _ => Err(ConfigError {
                    variable,
                    value,
                    expected: "a positive decimal number, such as 50000".into(),
                }),
            }
        };
        let rate_limit = per_minute(RATE_LIMIT_ENV, DEFAULT_RATE_LIMIT_PER_MINUTE)?;
        let exchange_timezone = match lookup(EXCHANGE_TIMEZONE_ENV) {
            None => DEFAULT_EXCHANGE_TIMEZONE,
            Some(value) => value.trim().parse::<Tz>().map_err(|_| ConfigError {
                variable: EXCHANGE_TIMEZONE_ENV,
                value,
                expected: "an IANA time zone name, such as Asia/Kolkata or America/New_York".into(),
            })?,
        };
        let (session_open, session_close) = match lookup(SESSION_HOURS_ENV) {
            None => (defaults.session_open, defaults.session_close),
            Some(value) => session_hours(&value).ok_or_else(|| ConfigError {
                variable: SESSION_HOURS_ENV,
                value,
                expected: "HH:MM-HH:MM with the open before the close, such as 09:00-15:30".into(),
            })?,
        };
        let thresholds = Thresholds {
            orders_per_minute: per_minute(ANOMALY_ORDERS_ENV, defaults.thresholds.orders_per_minute)?,
            order_quantity: amount(ANOMALY_QUANTITY_ENV, defaults.thresholds.order_quantity)?,
            order_value: amount(ANOMALY_VALUE_ENV, defaults.thresholds.order_value)?,
            symbols_per_day: match lookup(ANOMALY_SYMBOLS_ENV) {
                None => defaults.thresholds.symbols_per_day,
                Some(value) => value.trim().parse::<u32>().map_err(|_| ConfigError {
                    variable: ANOMALY_SYMBOLS_ENV,
                    value,
                    expected: "a whole number of symbols, such as 15".into(),
                })?,
            },
            cancellations_per_minute: per_minute(
                ANOMALY_CANCELLATIONS_ENV,
                defaults.thresholds.cancellations_per_minute,
            )?,
        };
        let hold = match lookup(ANOMALY_HOLD_ENV) {
            None => defaults.hold,
            Some(value) => parse_duration(&value)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| ConfigError {
                    variable: ANOMALY_HOLD_ENV,
                    value,
                    expected: "a duration above zero, such as 15m or 1h".into(),
                })?,
        };
        Ok(Self {
            enabled,
            rate_limit_per_minute: (rate_limit > 0).then_some(rate_limit),
            exchange_timezone,
            session_open,
            session_close,
            thresholds,
            hold,
        })
    }
}

fn session_hours(value: &str) -> Option<(NaiveTime, NaiveTime)> {
    let (open, close) = value.trim().split_once('-')?;
    let open = NaiveTime::parse_from_str(open.trim(), "%H:%M").ok()?;
    let close = NaiveTime::parse_from_str(close.trim(), "%H:%M").ok()?;
    (open < close).then_some((open, close))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<PreTradeSettings, ConfigError> {
        let vars: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        PreTradeSettings::from_lookup(&|name: &str| vars.get(name).cloned())
    }

    #[test]
    fn defaults_are_seed_001s_and_each_setting_is_read_or_refused_by_name() {
        assert_eq!(read(&[]).unwrap(), PreTradeSettings::default());
        let set = read(&[
            (RATE_LIMIT_ENV, "0"),
            (EXCHANGE_TIMEZONE_ENV, "America/New_York"),
            (SESSION_HOURS_ENV, "09:30-16:00"),
            (ANOMALY_VALUE_ENV, "250000.50"),
            (ANOMALY_HOLD_ENV, "1h"),
            (PRE_TRADE_CONTROLS_ENV, "off"),
        ])
        .unwrap();
        assert_eq!(set.rate_limit_per_minute, None, "0 turns the rate limit off");
        assert_eq!(set.exchange_timezone, chrono_tz::America::New_York);
        assert_eq!(set.session_open, NaiveTime::from_hms_opt(9, 30, 0).unwrap());
        assert_eq!(set.thresholds.order_value.to_string(), "250000.50");
        assert_eq!(set.hold, Duration::from_secs(3600));
        assert!(!set.enabled);
        for (variable, value) in [
            (EXCHANGE_TIMEZONE_ENV, "Mars/Olympus"),
            (SESSION_HOURS_ENV, "15:30-09:00"),
            (RATE_LIMIT_ENV, "100000"),
            (ANOMALY_QUANTITY_ENV, "-1"),
            (ANOMALY_HOLD_ENV, "0s"),
            (PRE_TRADE_CONTROLS_ENV, "maybe"),
        ] {
            assert_eq!(
                read(&[(variable, value)]).unwrap_err().variable,
                variable,
                "{variable}={value}"
            );
        }
    }
}
