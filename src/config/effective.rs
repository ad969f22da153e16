//! The value each setting has once defaults are applied, under its config
//! service key, for `config show`: a default is shown as what it is, not as
//! "unset". Values are raw here; the caller masks them (`keys::mask`).

use std::collections::BTreeMap;
use std::time::Duration;

use super::{MarketDataSource, Settings};

fn durations(list: &[Duration]) -> String {
    list.iter().map(|d| format!("{d:?}")).collect::<Vec<_>>().join(",")
}

impl Settings {
    /// Contract key → effective value, for the settings that have one
    /// (unset optional services and keys are left out).
    pub fn effective(&self) -> BTreeMap<&'static str, String> {
        let mut values = BTreeMap::from([
            ("DATABASE_URL", self.database_url.clone()),
            ("ORDER_SERVICE_HTTP_ADDR", self.http_addr.to_string()),
            ("ORDER_SERVICE_GRPC_ADDR", self.grpc_addr.to_string()),
            ("ORDER_SERVICE_DEMO_BALANCE", self.demo_balance.to_string()),
            ("ORDER_SERVICE_MARKET_BUFFER_BPS", self.market_buffer_bps.to_string()),
            ("ORDER_SERVICE_RETRY_DELAYS", durations(&self.retry_delays)),
            ("ORDER_SERVICE_PASSIVATE_AFTER", format!("{:?}", self.passivate_after)),
            ("ORDER_SERVICE_LIVE_ACTORS_MAX", self.live_actors_max.to_string()),
            ("ORDER_SERVICE_ACTOR_THREADS", self.actor_threads.to_string()),
            ("ORDER_SERVICE_GROUP_COMMIT", self.group_commit.to_string()),
            ("ORDER_SERVICE_AMQP_RETRY_DELAYS", durations(&self.amqp_retry_delays)),
            ("ORDER_SERVICE_AMQP_QUICK_RETRIES", self.amqp_quick_retries.to_string()),
            (
                "ORDER_SERVICE_AMQP_QUICK_RETRY_MIN",
                format!("{:?}", self.amqp_quick_retry_min),
            ),
            (
                "ORDER_SERVICE_AMQP_QUICK_RETRY_MAX",
                format!("{:?}", self.amqp_quick_retry_max),
            ),
            ("ORDER_SERVICE_AMQP_PREFETCH", self.amqp_prefetch.to_string()),
            ("ORDER_SERVICE_SIMULATOR_SEED", self.simulator_seed.to_string()),
            ("ORDER_SERVICE_TICK_INTERVAL", format!("{:?}", self.tick_interval)),
            ("ORDER_SERVICE_SHUTDOWN_TIMEOUT", format!("{:?}", self.shutdown_timeout)),
            ("ORDER_SERVICE_TEST_AUTH_MODE", self.controls.test_auth_mode.to_string()),
            (
                "ORDER_SERVICE_DAILY_RESET_TIME",
                self.runtime.daily_reset_time.format("%H:%M").to_string(),
            ),
            (
                "ORDER_SERVICE_HARD_REFRESH_RATE_LIMIT_SECONDS",
                self.runtime.hard_refresh_rate_limit_seconds.to_string(),
            ),
            ("ORDER_SERVICE_REGION", self.region.clone()),
            (
                "ORDER_SERVICE_MARKET_DATA",
                match self.market_data {
                    MarketDataSource::Simulator => "simulator".to_owned(),
                    MarketDataSource::Grpc { .. } => "grpc".to_owned(),
                },
            ),
        ]);
        let optional = [
            ("BALANCE_SERVICE_URL", &self.balance_service_url),
            ("ACCOUNT_SERVICE_URL", &self.account_service_url),
            ("AMQP_URL", &self.amqp_url),
            ("ORDER_SERVICE_LOG_LEVEL", &self.runtime.log_level),
            ("ORDER_SERVICE_PRODUCTION_HOST_HTTP", &self.public_url),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                values.insert(key, value.clone());
            }
        }
        if let Some(limit) = self.runtime.daily_order_limit {
            values.insert("ORDER_SERVICE_DAILY_ORDER_LIMIT", limit.to_string());
        }
        let pretrade = &self.pretrade;
        let thresholds = &pretrade.thresholds;
        values.extend([
            (
                "ORDER_SERVICE_PRE_TRADE_CONTROLS",
                if pretrade.enabled { "on" } else { "off" }.to_owned(),
            ),
            (
                "ORDER_SERVICE_RATE_LIMIT_PER_MINUTE",
                pretrade.rate_limit_per_minute.unwrap_or(0).to_string(),
            ),
            (
                "ORDER_SERVICE_EXCHANGE_TIMEZONE",
                pretrade.exchange_timezone.name().to_owned(),
            ),
            (
                "ORDER_SERVICE_SESSION_HOURS",
                format!(
                    "{}-{}",
                    pretrade.session_open.format("%H:%M"),
                    pretrade.session_close.format("%H:%M")
                ),
            ),
            (
                "ORDER_SERVICE_ANOMALY_ORDERS_PER_MINUTE",
                thresholds.orders_per_minute.to_string(),
            ),
            (
                "ORDER_SERVICE_ANOMALY_ORDER_QUANTITY",
                thresholds.order_quantity.to_string(),
            ),
            ("ORDER_SERVICE_ANOMALY_ORDER_VALUE", thresholds.order_value.to_string()),
            (
                "ORDER_SERVICE_ANOMALY_SYMBOLS_PER_DAY",
                thresholds.symbols_per_day.to_string(),
            ),
            (
                "ORDER_SERVICE_ANOMALY_CANCELLATIONS_PER_MINUTE",
                thresholds.cancellations_per_minute.to_string(),
            ),
            ("ORDER_SERVICE_ANOMALY_HOLD", format!("{:?}", pretrade.hold)),
        ]);
        values
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_show_their_values() {
        // Proves `config show` can print what a default is (the seed's ladder, the embedded database).
        let values = Settings::from_lookup(|_| None).unwrap().effective();
        assert_eq!(values["DATABASE_URL"], crate::config::EMBEDDED_DATABASE_URL);
        assert_eq!(values["ORDER_SERVICE_RETRY_DELAYS"], "300s,900s,3600s,21600s");
        assert_eq!(values["ORDER_SERVICE_DAILY_RESET_TIME"], "00:00");
        assert_eq!(values["ORDER_SERVICE_RATE_LIMIT_PER_MINUTE"], "120");
        assert_eq!(values["ORDER_SERVICE_EXCHANGE_TIMEZONE"], "Asia/Kolkata");
        assert_eq!(values["ORDER_SERVICE_SESSION_HOURS"], "09:00-15:30");
        assert!(!values.contains_key("BALANCE_SERVICE_URL"));
    }
}
