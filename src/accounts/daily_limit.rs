//! The daily order limit (seed 000's `ORDER_SERVICE_DAILY_ORDER_LIMIT`): an
//! account that has submitted its limit of orders this trading day may not
//! trade until `ORDER_SERVICE_DAILY_RESET_TIME`. A gate around the account
//! checks, which the engine asks once per submission; behind the per-user
//! feature flag [`DAILY_ORDER_LIMIT_FLAG`] (off by default and on error, so
//! the embedded default behaves as before). The limit and the reset time are
//! read from the run-time values, so a change in the config service applies
//! without a restart.
//!
//! The count is this process's: several engine processes each allow the
//! limit (documented in ARCHITECTURE.md). Never blocks a user on an error of
//! its own: the flag off, the inner check decides.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::NaiveDate;
use tokio::sync::watch;
use uuid::Uuid;

use super::{AccountError, AccountStatus, Accounts};
use crate::clock::Clock;
use crate::config::RuntimeValues;
use crate::configsvc::flags::{FeatureFlags, Flag};

/// The flag that turns the limit on, per user.
pub const DAILY_ORDER_LIMIT_FLAG: Flag = Flag {
    name: "order_service_daily_order_limit",
    per_user: true,
    default_on_error: false,
};
/// Users counted in one trading day at most; past it the counts start over
/// (the limit is lenient rather than the map unbounded).
pub const USERS_COUNTED_MAX: usize = 1_000_000;

/// Counts per user for one trading day.
#[derive(Debug, Default)]
struct Day {
    date: Option<NaiveDate>,
    submitted: HashMap<Uuid, u32>,
}

pub struct DailyOrderLimit {
    inner: Arc<dyn Accounts>,
    runtime: watch::Receiver<RuntimeValues>,
    flags: Arc<FeatureFlags>,
    clock: Arc<dyn Clock>,
    day: Mutex<Day>,
}

impl DailyOrderLimit {
    pub fn new(
        inner: Arc<dyn Accounts>,
        runtime: watch::Receiver<RuntimeValues>,
        flags: Arc<FeatureFlags>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            inner,
            runtime,
            flags,
            clock,
            day: Mutex::new(Day::default()),
        }
    }
}

#[async_trait]
impl Accounts for DailyOrderLimit {
    async fn status(&self, user_id: Uuid) -> Result<AccountStatus, AccountError> {
        let mut status = self.inner.status(user_id).await?;
        let (limit, reset) = {
            let runtime = self.runtime.borrow();
            (runtime.daily_order_limit, runtime.daily_reset_time)
        };
        let Some(limit) = limit else {
            return Ok(status);
        };
        if !status.active || !status.can_trade {
            return Ok(status);
        }
        if !self
            .flags
            .enabled(DAILY_ORDER_LIMIT_FLAG, Some(&user_id.to_string()))
            .await
        {
            return Ok(status);
        }
        // The trading day starts at the reset time: before it, it is still yesterday's day.
        let now = self.clock.now().naive_utc();
        let trading_day = (now - (reset - chrono::NaiveTime::MIN)).date();
        let mut day = self.day.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if day.date != Some(trading_day) || day.submitted.len() >= USERS_COUNTED_MAX {
            day.date = Some(trading_day);
            day.submitted.clear();
        }
        let submitted = day.submitted.entry(user_id).or_insert(0);
        if *submitted >= limit {
            tracing::info!(%user_id, limit, "daily order limit reached; the order is refused");
            status.can_trade = false;
        } else {
            *submitted += 1;
        }
        Ok(status)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::{NaiveTime, TimeZone, Utc};
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::*;
    use crate::accounts::EmbeddedAccounts;
    use crate::clock::ManualClock;
    use crate::configsvc::{ConfigMetrics, ConfigServiceClient};

    fn runtime(limit: Option<u32>) -> RuntimeValues {
        RuntimeValues {
            log_level: None,
            daily_order_limit: limit,
            daily_reset_time: NaiveTime::from_hms_opt(9, 0, 0).unwrap(),
            hard_refresh_rate_limit_seconds: 60,
        }
    }

    #[tokio::test]
    async fn the_limit_follows_the_flag_the_changed_value_and_the_reset_time() {
        // Proves: with the flag on, the limit refuses the next order; a new limit published at run
        // time applies at once; the count starts over at the reset time; with the flag off nothing is limited.
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/api/v1/feature-flags/evaluate"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"enabled": true})))
            .mount(&server)
            .await;
        let client = ConfigServiceClient::new(&server.uri(), "prod", "k").unwrap();
        let flags = Arc::new(FeatureFlags::new(
            Some(client),
            crate::configsvc::flags::FLAG_TTL_DEFAULT,
            ConfigMetrics::new().unwrap(),
        ));
        let clock = Arc::new(ManualClock::new(Utc.with_ymd_and_hms(2026, 3, 2, 10, 0, 0).unwrap()));
        let (publish, values) = watch::channel(runtime(Some(2)));
        let gate = DailyOrderLimit::new(Arc::new(EmbeddedAccounts), values, flags, clock.clone());
        let user = Uuid::new_v4();
        assert!(gate.status(user).await.unwrap().can_trade);
        assert!(gate.status(user).await.unwrap().can_trade);
        assert!(
            !gate.status(user).await.unwrap().can_trade,
            "the third order of the day"
        );
        assert!(
            gate.status(Uuid::new_v4()).await.unwrap().can_trade,
            "another user has their own count"
        );
        publish.send_replace(runtime(Some(3)));
        assert!(
            gate.status(user).await.unwrap().can_trade,
            "the raised limit applies without a restart"
        );
        assert!(!gate.status(user).await.unwrap().can_trade);
        // 08:59 next day is still the same trading day; 09:00 starts a new one.
        clock.advance(chrono::Duration::minutes(22 * 60 + 59));
        assert!(!gate.status(user).await.unwrap().can_trade);
        clock.advance(chrono::Duration::minutes(1));
        assert!(gate.status(user).await.unwrap().can_trade);
        // Without a config service the flag is off: no limit at all.
        let (_, values) = watch::channel(runtime(Some(0)));
        let offline = DailyOrderLimit::new(
            Arc::new(EmbeddedAccounts),
            values,
            Arc::new(FeatureFlags::new(
                None,
                crate::configsvc::flags::FLAG_TTL_DEFAULT,
                ConfigMetrics::new().unwrap(),
            )),
            clock,
        );
        assert!(offline.status(user).await.unwrap().can_trade);
    }
}
