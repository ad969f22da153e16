//! The shell around the trading-day aggregate: which stream an order counts
//! on, the state each user's day was folded to (cached, and checked by the
//! append's expected version), the co-write that commits the count with the
//! order, the anomaly log lines and metrics, and what `/health/rate-limiter`
//! shows of the users held back.
//!
//! Submissions of one user in this process take turns on one lock stripe, so
//! they do not race each other for the day's version; processes race through
//! the expected version, and the loser decides again on what the winner
//! wrote. A refusal is never decided on a cached state alone: the day is read
//! again first (an operator may have lifted a hold from another process).

use std::collections::HashMap;
use std::sync::{Arc, Mutex as SyncMutex};

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use prometheus::{IntCounterVec, Opts, Registry};
use rust_decimal::Decimal;
use tokio::sync::{watch, Mutex, OwnedMutexGuard};
use uuid::Uuid;

use super::calendar::Calendar;
use super::rate_limits::{LimitInForce, LimitedUser, UserRateLimiter};
use crate::actors::{CoWrite, Decided};
use crate::aggregate::Aggregate;
use crate::clock::Clock;
use crate::config::{PreTradeSettings, RuntimeValues};
use crate::configsvc::flags::{FeatureFlags, Flag};
use crate::events::{encode, EventMetadata, StreamId};
use crate::store::{
    event_id, execute, fold_stream, AppendRequest, Appended, EventStore, ExecuteError, Executed, FoldError, Freshness,
    Hydrated, Plain, Policy,
};
use crate::trading_day::{
    ceil_seconds, AnomalyDetected, CountCancellation, CountOrder, LiftHold, Limits, TradingDayAggregate,
    TradingDayCommand, TradingDayEvent, TradingDayRejection, TradingDayState,
};

/// Per user: on, a critical anomaly holds the user's further orders for
/// `ORDER_ENGINE_ANOMALY_HOLD`; off (the default, and on any error of the
/// config service), anomalies are recorded and alerted, nothing is refused.
pub const ANOMALY_ENFORCEMENT_FLAG: Flag = Flag {
    name: "order_service_anomaly_enforcement",
    per_user: true,
    default_on_error: false,
};
/// The tracing target of anomaly lines, so they can be routed on their own.
pub const ANOMALY_TARGET: &str = "order_engine::anomaly";
/// Lock stripes: users hash onto one; a stripe serialises its users' counts.
const STRIPES: usize = 256;
/// Trading days cached per stripe (so ~130,000 in all); past it the oldest
/// days go first, then everything (a miss costs one read of one day).
const DAYS_CACHED_PER_STRIPE: usize = 512;
/// Users `/health/rate-limiter` lists as held back, at most.
pub const LIMITED_USERS_LISTED_MAX: usize = 1_000;

/// Why a count could not be decided.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Refused(#[from] TradingDayRejection),
    #[error("the user's trading day could not be read: {0}")]
    Read(#[source] FoldError),
    #[error("the user's trading day could not be written: {0}")]
    Write(String),
}

impl ControlError {
    /// A failure to read or write the day is the store's, and passes.
    pub fn is_transient(&self) -> bool {
        match self {
            ControlError::Refused(_) => false,
            ControlError::Read(FoldError::Store(error)) => error.is_transient(),
            ControlError::Read(_) => false,
            ControlError::Write(_) => true,
        }
    }
}

/// What the controls need of a new order.
#[derive(Debug, Clone)]
pub struct OrderFacts<'a> {
    pub user_id: Uuid,
    pub order_id: Uuid,
    pub symbol: &'a str,
    pub quantity: Decimal,
    /// quantity × the limit price or the quote; None when neither is known.
    pub value: Option<Decimal>,
    pub at: DateTime<Utc>,
}

type DayKey = (Uuid, NaiveDate);

#[derive(Default)]
struct Stripe {
    days: HashMap<DayKey, Hydrated<TradingDayAggregate>>,
}

impl Stripe {
    fn make_room(&mut self, today: NaiveDate) {
        if self.days.len() < DAYS_CACHED_PER_STRIPE {
            return;
        }
        self.days.retain(|(_, day), _| *day >= today);
        if self.days.len() >= DAYS_CACHED_PER_STRIPE {
            self.days.clear();
        }
    }
}

/// The per-user controls of one engine process.
pub struct UserControls {
    store: Arc<dyn EventStore>,
    settings: PreTradeSettings,
    runtime: watch::Receiver<RuntimeValues>,
    flags: Option<Arc<FeatureFlags>>,
    clock: Arc<dyn Clock>,
    stripes: Vec<Arc<Mutex<Stripe>>>,
    anomalies_total: IntCounterVec,
    refused_total: IntCounterVec,
    /// Users refused lately, with the limit and until when (for the health route).
    limited: SyncMutex<HashMap<Uuid, (&'static str, DateTime<Utc>)>>,
    /// Each caller's last forced refresh (`Cache-Control: no-cache`).
    refreshed: SyncMutex<HashMap<Uuid, DateTime<Utc>>>,
}

/// Callers whose last forced refresh is remembered, at most; past it the
/// entries older than the interval go, then all (a forgotten caller may
/// refresh once more, never less).
pub const REFRESH_CALLERS_MAX: usize = 100_000;

impl UserControls {
    /// `runtime` carries the daily limit and reset time, which change
    /// without a restart; `flags` decides enforcement per user (off without).
    pub fn new(
        store: Arc<dyn EventStore>,
        settings: PreTradeSettings,
        runtime: watch::Receiver<RuntimeValues>,
        flags: Option<Arc<FeatureFlags>>,
        clock: Arc<dyn Clock>,
        registry: &Registry,
    ) -> Result<Self, prometheus::Error> {
        let anomalies_total = IntCounterVec::new(
            Opts::new(
                "order_service_anomalies_total",
                "Anomalies recorded in the log, by rule (type) and severity.",
            ),
            &["type", "severity"],
        )?;
        let refused_total = IntCounterVec::new(
            Opts::new(
                "order_service_orders_refused_total",
                "Orders refused by a per-user pre-trade control, by reason.",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(anomalies_total.clone()))?;
        registry.register(Box::new(refused_total.clone()))?;
        Ok(Self {
            store,
            settings,
            runtime,
            flags,
            clock,
            stripes: (0..STRIPES).map(|_| Arc::new(Mutex::new(Stripe::default()))).collect(),
            anomalies_total,
            refused_total,
            limited: SyncMutex::new(HashMap::new()),
            refreshed: SyncMutex::new(HashMap::new()),
        })
    }

    /// The calendar under the reset time in force now.
    pub fn calendar(&self) -> Calendar {
        Calendar {
            timezone: self.settings.exchange_timezone,
            reset: self.runtime.borrow().daily_reset_time,
            open: self.settings.session_open,
            close: self.settings.session_close,
        }
    }

    /// Counts a new order on its user's day, or refuses it. None when the
    /// controls are off. The admission holds the user's turn until it is
    /// settled or dropped.
    pub async fn admit_order(
        &self,
        order: &OrderFacts<'_>,
        command_id: Uuid,
        metadata: &EventMetadata,
    ) -> Result<Option<Admission>, ControlError> {
        if !self.settings.enabled {
            return Ok(None);
        }
        let calendar = self.calendar();
        let daily_orders = self.runtime.borrow().daily_order_limit;
        let command = TradingDayCommand::CountOrder(CountOrder {
            order_id: order.order_id,
            symbol: order.symbol.to_owned(),
            quantity: order.quantity,
            value: order.value,
            at: order.at,
            resets_at: calendar.day_ends(order.at),
            in_session: calendar.in_session(order.at),
            session: calendar.session(),
            limits: Limits {
                daily_orders,
                orders_per_minute: self.settings.rate_limit_per_minute,
            },
            thresholds: self.settings.thresholds.clone(),
            hold_for: self.hold_for(order.user_id).await,
        });
        let day = calendar.trading_day(order.at);
        self.admit(order.user_id, day, &command, command_id, metadata, order.at)
            .await
            .map(Some)
    }

    /// Counts a cancellation the user asked for (never refused). None when the controls are off.
    pub async fn admit_cancellation(
        &self,
        user_id: Uuid,
        order_id: Uuid,
        at: DateTime<Utc>,
        command_id: Uuid,
        metadata: &EventMetadata,
    ) -> Result<Option<Admission>, ControlError> {
        if !self.settings.enabled {
            return Ok(None);
        }
        let command = TradingDayCommand::CountCancellation(CountCancellation {
            order_id,
            at,
            thresholds: self.settings.thresholds.clone(),
            hold_for: self.hold_for(user_id).await,
        });
        let day = self.calendar().trading_day(at);
        self.admit(user_id, day, &command, command_id, metadata, at)
            .await
            .map(Some)
    }

    /// An operator lifts the hold on `user_id`'s orders for today. Returns
    /// the hold's end it cut short.
    pub async fn lift_hold(&self, user_id: Uuid, by: &str, reason: &str) -> Result<DateTime<Utc>, ControlError> {
        let at = self.clock.now();
        let day = self.calendar().trading_day(at);
        let stream = StreamId::trading_day(user_id, day);
        let mut hydrated = Hydrated::<TradingDayAggregate>::default();
        let command = TradingDayCommand::LiftHold(LiftHold {
            by: by.to_owned(),
            reason: reason.to_owned(),
            at,
        });
        let metadata = EventMetadata {
            who: Some(by.to_owned()),
            source: Some("operator".into()),
            ..EventMetadata::default()
        };
        // Read once here (to name the hold cut short); `execute` decides on
        // that and reads again only if another writer moved the day.
        let policy = Policy {
            freshness: Freshness::Held {
                reload_on_refusal: false,
            },
            conflict_retries_max: 8,
        };
        hydrated
            .catch_up(self.store.as_ref(), &stream)
            .await
            .map_err(ControlError::Read)?;
        let until = hydrated.state.hold_at(at).map(|hold| hold.until);
        let executed = execute(
            self.store.as_ref(),
            &stream,
            &mut hydrated,
            &command,
            Uuid::now_v7(),
            &metadata,
            policy,
            &mut Plain,
        )
        .await;
        match executed {
            Ok(Executed::Written { .. } | Executed::Repeated { .. } | Executed::Unchanged) => {
                let mut stripe = self.stripe(user_id).lock().await;
                stripe.days.remove(&(user_id, day));
                self.lock_limited().remove(&user_id);
                tracing::warn!(%user_id, by, reason, "the hold on the user's orders was lifted");
                Ok(until.unwrap_or(at))
            }
            Err(ExecuteError::Rejected(rejection)) => Err(rejection.into()),
            Err(ExecuteError::Fold(error)) => Err(ControlError::Read(error)),
            Err(other) => Err(ControlError::Write(other.to_string())),
        }
    }

    /// Whether `caller` may force a refresh now (seed 000's
    /// `ORDER_SERVICE_HARD_REFRESH_RATE_LIMIT_SECONDS`, the least time between
    /// two, live); Err with the seconds to wait. Per process: a refresh costs
    /// a read of one order's stream, not a decision about money.
    pub fn hard_refresh(&self, caller: Uuid) -> Result<(), u64> {
        let interval = i64::from(self.runtime.borrow().hard_refresh_rate_limit_seconds);
        if interval == 0 {
            return Ok(());
        }
        let now = self.clock.now();
        let interval = TimeDelta::seconds(interval);
        let mut refreshed = self.refreshed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(last) = refreshed.get(&caller) {
            let next = *last + interval;
            if next > now {
                return Err(ceil_seconds(next - now));
            }
        }
        if refreshed.len() >= REFRESH_CALLERS_MAX {
            refreshed.retain(|_, last| *last + interval > now);
            if refreshed.len() >= REFRESH_CALLERS_MAX {
                refreshed.clear();
            }
        }
        refreshed.insert(caller, now);
        Ok(())
    }

    async fn hold_for(&self, user_id: Uuid) -> Option<TimeDelta> {
        let flags = self.flags.as_ref()?;
        if !flags
            .enabled(ANOMALY_ENFORCEMENT_FLAG, Some(&user_id.to_string()))
            .await
        {
            return None;
        }
        TimeDelta::from_std(self.settings.hold).ok()
    }

    fn stripe(&self, user_id: Uuid) -> &Arc<Mutex<Stripe>> {
        let index = (user_id.as_u64_pair().1 % STRIPES as u64) as usize;
        &self.stripes[index]
    }

    fn lock_limited(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, (&'static str, DateTime<Utc>)>> {
        self.limited.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn admit(
        &self,
        user_id: Uuid,
        day: NaiveDate,
        command: &TradingDayCommand,
        command_id: Uuid,
        metadata: &EventMetadata,
        at: DateTime<Utc>,
    ) -> Result<Admission, ControlError> {
        let key = (user_id, day);
        let stream = StreamId::trading_day(user_id, day);
        let mut stripe = Arc::clone(self.stripe(user_id)).lock_owned().await;
        // A day not cached here (a first order, a restart, a lost race) is
        // read before deciding, so the append's expected version is right the
        // first time; a cached day is only as stale as another process made it.
        let mut reloaded = false;
        if !stripe.days.contains_key(&key) {
            stripe.make_room(day);
            let mut fresh = Hydrated::<TradingDayAggregate>::default();
            fresh
                .catch_up(self.store.as_ref(), &stream)
                .await
                .map_err(ControlError::Read)?;
            stripe.days.insert(key, fresh);
            reloaded = true;
        }
        let hydrated = stripe.days.entry(key).or_default();
        let events = loop {
            match TradingDayAggregate::decide(&hydrated.state, command) {
                Ok(events) => break events,
                Err(rejection) if !reloaded => {
                    // Decided on a cached state: read the day again before refusing.
                    let before = hydrated.version;
                    hydrated
                        .catch_up(self.store.as_ref(), &stream)
                        .await
                        .map_err(ControlError::Read)?;
                    reloaded = true;
                    if hydrated.version == before {
                        return Err(self.refused(user_id, rejection, at));
                    }
                }
                Err(rejection) => return Err(self.refused(user_id, rejection, at)),
            }
        };
        let metadata = EventMetadata {
            correlation_id: metadata.correlation_id,
            causation_id: None,
            who: metadata.who.clone(),
            source: metadata.source.clone(),
            trace: None,
        };
        let encoded = events
            .iter()
            .enumerate()
            .map(|(i, event)| encode(event, event_id(command_id, &stream, i), metadata.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| ControlError::Write(error.to_string()))?;
        let request = AppendRequest {
            stream_id: stream,
            expected_version: hydrated.version,
            command_id: Some(command_id),
            events: encoded,
            linked: true,
        };
        Ok(Admission {
            stripe,
            key,
            request,
            events,
        })
    }

    fn refused(&self, user_id: Uuid, rejection: TradingDayRejection, at: DateTime<Utc>) -> ControlError {
        self.refused_total.with_label_values(&[rejection.code()]).inc();
        // Listed for a day at most: a refusal ending later is listed again when it recurs.
        let secs = rejection.retry_after_secs(at).min(86_400);
        let until = at + TimeDelta::seconds(i64::try_from(secs).unwrap_or(86_400));
        let mut limited = self.lock_limited();
        if limited.len() >= LIMITED_USERS_LISTED_MAX {
            limited.retain(|_, (_, until)| *until > at);
        }
        if limited.len() < LIMITED_USERS_LISTED_MAX || limited.contains_key(&user_id) {
            limited.insert(user_id, (rejection.code(), until));
        }
        tracing::info!(%user_id, reason = rejection.code(), %rejection, "order refused by a pre-trade control");
        ControlError::Refused(rejection)
    }

    fn recorded(&self, user_id: Uuid, anomaly: &AnomalyDetected) {
        self.anomalies_total
            .with_label_values(&[anomaly.anomaly.as_str(), anomaly.severity.as_str()])
            .inc();
        let line = serde_json::json!({
            "type": anomaly.anomaly.as_str(),
            "severity": anomaly.severity.as_str(),
            "user_id": user_id,
            "order_id": anomaly.order_id,
            "observed": anomaly.observed,
            "threshold": anomaly.threshold,
            "at": anomaly.at,
        });
        if anomaly.severity.is_critical() {
            tracing::error!(target: ANOMALY_TARGET, "ORDER_ANOMALY_CRITICAL: {line}");
        } else {
            tracing::warn!(target: ANOMALY_TARGET, "ORDER_ANOMALY_WARNING: {line}");
        }
    }
}

/// A count decided and waiting for its commit: holds the user's turn.
pub struct Admission {
    stripe: OwnedMutexGuard<Stripe>,
    key: DayKey,
    request: AppendRequest,
    events: Vec<TradingDayEvent>,
}

impl Admission {
    /// The count, to commit with the order's events; each event's causation
    /// is the order event the command wrote first.
    pub fn co_write(&self) -> CoWrite {
        let request = self.request.clone();
        CoWrite(Arc::new(move |decided: &Decided<'_>| {
            let mut request = request.clone();
            if let Some(cause) = decided.event_ids.first() {
                for event in &mut request.events {
                    event.metadata.causation_id = Some(*cause);
                }
            }
            Ok(vec![request])
        }))
    }

    /// The day moved under the count (another process): forget the cached
    /// day, so the next admission reads it again.
    pub fn conflicted(mut self) {
        self.stripe.days.remove(&self.key);
    }

    /// The command's outcome: `co_written` is where the count landed when the
    /// command wrote it now; None (the order was refused, or its submission
    /// was found recorded before) leaves the day unchanged here and reads it
    /// again next time.
    pub fn settle(mut self, controls: &UserControls, co_written: Option<&Appended>) {
        let Some(appended) = co_written.filter(|a| !a.deduplicated && a.stream_id == self.request.stream_id) else {
            self.stripe.days.remove(&self.key);
            return;
        };
        let events = std::mem::take(&mut self.events);
        if let Some(hydrated) = self.stripe.days.get_mut(&self.key) {
            hydrated.state = TradingDayAggregate::fold(std::mem::take(&mut hydrated.state), &events);
            hydrated.version = appended.last_version;
        }
        for event in &events {
            if let TradingDayEvent::AnomalyDetected(anomaly) = event {
                controls.recorded(self.key.0, anomaly);
            }
            if let TradingDayEvent::OrdersHeld(held) = event {
                tracing::error!(
                    target: ANOMALY_TARGET,
                    user_id = %self.key.0,
                    anomaly = held.anomaly.as_str(),
                    until = %held.until,
                    "the user's orders are held after a critical anomaly; `order-engine controls lift` ends the hold"
                );
            }
        }
    }
}

impl UserRateLimiter for UserControls {
    fn limits(&self) -> Vec<LimitInForce> {
        let mut limits = Vec::new();
        let refresh = self.runtime.borrow().hard_refresh_rate_limit_seconds;
        if refresh > 0 {
            limits.push(LimitInForce {
                name: "hard_refresh_interval",
                scope: "user",
                limit: u64::from(refresh),
                unit: "seconds_between_forced_refreshes",
                answer: "429 problem+json hard-refresh-rate-limited with Retry-After",
                source: "ORDER_SERVICE_HARD_REFRESH_RATE_LIMIT_SECONDS",
            });
        }
        if !self.settings.enabled {
            return limits;
        }
        if let Some(limit) = self.settings.rate_limit_per_minute {
            limits.push(LimitInForce {
                name: "orders_per_minute",
                scope: "user",
                limit: u64::from(limit),
                unit: "orders_per_minute",
                answer: "429 problem+json rate-limited with Retry-After",
                source: "ORDER_ENGINE_RATE_LIMIT_PER_MINUTE",
            });
        }
        if let Some(limit) = self.runtime.borrow().daily_order_limit {
            limits.push(LimitInForce {
                name: "orders_per_trading_day",
                scope: "user",
                limit: u64::from(limit),
                unit: "orders_per_day",
                answer: "429 problem+json daily-order-limit-reached with Retry-After until the reset",
                source: "ORDER_SERVICE_DAILY_ORDER_LIMIT",
            });
        }
        limits
    }

    fn limited_users(&self) -> Vec<LimitedUser> {
        let now = self.clock.now();
        let mut limited = self.lock_limited();
        limited.retain(|_, (_, until)| *until > now);
        let mut users: Vec<LimitedUser> = limited
            .iter()
            .map(|(user_id, (limit, until))| LimitedUser {
                user_id: *user_id,
                limit,
                retry_after_secs: ceil_seconds(*until - now),
            })
            .collect();
        users.sort_by_key(|user| user.user_id);
        users
    }
}

/// Folds a user's day from the log (the operator's view, and tests).
pub async fn read_day(
    store: &dyn EventStore,
    user_id: Uuid,
    day: NaiveDate,
) -> Result<Hydrated<TradingDayAggregate>, FoldError> {
    let mut hydrated = Hydrated::<TradingDayAggregate>::default();
    fold_stream::<TradingDayAggregate>(
        store,
        &StreamId::trading_day(user_id, day),
        &mut hydrated.state,
        &mut hydrated.version,
    )
    .await?;
    Ok(hydrated)
}

/// A user's day for a terminal (`order-engine controls show`).
pub fn render_day(user_id: Uuid, day: NaiveDate, state: &TradingDayState, now: DateTime<Utc>) -> String {
    let mut out = format!("user {user_id}, trading day {day}\n");
    out.push_str(&format!("  orders counted: {}\n", state.orders));
    out.push_str(&format!(
        "  orders in the minute before {}: {}\n",
        now.format("%H:%M:%S UTC"),
        crate::trading_day::orders_in_window(state, now)
    ));
    out.push_str(&format!("  distinct symbols: {}\n", state.symbols.len()));
    if state.last_fired.is_empty() {
        out.push_str("  anomalies: none\n");
    }
    for (anomaly, at) in &state.last_fired {
        out.push_str(&format!(
            "  anomaly {anomaly} ({}), last at {at}\n",
            anomaly.severity().as_str()
        ));
    }
    match state.hold_at(now) {
        Some(hold) => out.push_str(&format!(
            "  HELD after {} until {} (lift: order-engine controls lift --user {user_id} --by NAME --reason TEXT)\n",
            hold.anomaly, hold.until
        )),
        None => out.push_str("  hold: none\n"),
    }
    out
}
