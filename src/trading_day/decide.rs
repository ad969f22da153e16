//! The commands a trading day takes, and what each decides.

use chrono::{DateTime, TimeDelta, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::event::{AnomalyDetected, CancellationCounted, HoldLifted, OrderCounted, OrdersHeld, TradingDayEvent};
use super::rules::{AnomalyType, Limits, Thresholds, WINDOW_SECONDS};
use super::state::{in_window, TradingDayState};

/// Count a new order, or refuse it.
#[derive(Debug, Clone, PartialEq)]
pub struct CountOrder {
    pub order_id: Uuid,
    pub symbol: String,
    pub quantity: Decimal,
    pub value: Option<Decimal>,
    pub at: DateTime<Utc>,
    /// When this trading day ends (what a refused caller is told).
    pub resets_at: DateTime<Utc>,
    /// Whether `at` is inside the exchange's session hours.
    pub in_session: bool,
    /// The session's hours as the caller shows them (`09:00-15:30 Asia/Kolkata`).
    pub session: String,
    pub limits: Limits,
    pub thresholds: Thresholds,
    /// How long a critical anomaly holds the user's orders; None: enforcement
    /// is off for this user (anomalies are recorded, nothing is refused).
    pub hold_for: Option<TimeDelta>,
}

/// Count a cancellation the user asked for (never refused).
#[derive(Debug, Clone, PartialEq)]
pub struct CountCancellation {
    pub order_id: Uuid,
    pub at: DateTime<Utc>,
    pub thresholds: Thresholds,
    pub hold_for: Option<TimeDelta>,
}

/// An operator lifts the hold in force.
#[derive(Debug, Clone, PartialEq)]
pub struct LiftHold {
    pub by: String,
    pub reason: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TradingDayCommand {
    CountOrder(CountOrder),
    CountCancellation(CountCancellation),
    LiftHold(LiftHold),
}

/// Why an order is refused before any money moves.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TradingDayRejection {
    #[error(
        "daily_order_limit_reached: the limit of {limit} orders a trading day is reached; it resets at {resets_at}"
    )]
    DailyOrderLimitReached { limit: u32, resets_at: DateTime<Utc> },
    #[error("rate_limited: at most {limit} orders a minute; retry in {retry_after_secs} s")]
    RateLimited { limit: u32, retry_after_secs: u64 },
    #[error("orders_held: orders are held after a {anomaly} anomaly until {until}, unless an operator lifts the hold")]
    OrdersHeld { anomaly: AnomalyType, until: DateTime<Utc> },
    #[error("no hold is in force at {at}; nothing to lift")]
    NotHeld { at: DateTime<Utc> },
}

impl TradingDayRejection {
    /// The stable reason code a refused caller sees (problem+json `reason`, AMQP `OrderRejected`).
    pub fn code(&self) -> &'static str {
        match self {
            TradingDayRejection::DailyOrderLimitReached { .. } => "daily_order_limit_reached",
            TradingDayRejection::RateLimited { .. } => "rate_limited",
            TradingDayRejection::OrdersHeld { .. } => "orders_held",
            TradingDayRejection::NotHeld { .. } => "not_held",
        }
    }

    /// Whole seconds until trying again can succeed, from `now`; at least 1.
    pub fn retry_after_secs(&self, now: DateTime<Utc>) -> u64 {
        let until = match self {
            TradingDayRejection::RateLimited { retry_after_secs, .. } => return (*retry_after_secs).max(1),
            TradingDayRejection::DailyOrderLimitReached { resets_at, .. } => *resets_at,
            TradingDayRejection::OrdersHeld { until, .. } => *until,
            TradingDayRejection::NotHeld { .. } => return 1,
        };
        ceil_seconds(until - now)
    }
}

/// Whole seconds in `delta`, rounded up, at least 1: what a Retry-After says.
pub fn ceil_seconds(delta: TimeDelta) -> u64 {
    let millis = delta.num_milliseconds().max(0);
    u64::try_from((millis + 999) / 1000).unwrap_or(0).max(1)
}

pub fn decide(
    state: &TradingDayState,
    command: &TradingDayCommand,
) -> Result<Vec<TradingDayEvent>, TradingDayRejection> {
    match command {
        TradingDayCommand::CountOrder(order) => count_order(state, order),
        TradingDayCommand::CountCancellation(cancel) => Ok(count_cancellation(state, cancel)),
        TradingDayCommand::LiftHold(lift) => match state.hold_at(lift.at) {
            Some(_) => Ok(vec![TradingDayEvent::HoldLifted(HoldLifted {
                by: lift.by.clone(),
                reason: lift.reason.clone(),
                at: lift.at,
            })]),
            None => Err(TradingDayRejection::NotHeld { at: lift.at }),
        },
    }
}

fn count_order(state: &TradingDayState, order: &CountOrder) -> Result<Vec<TradingDayEvent>, TradingDayRejection> {
    if let Some(hold) = state.hold_at(order.at) {
        return Err(TradingDayRejection::OrdersHeld {
            anomaly: hold.anomaly,
            until: hold.until,
        });
    }
    if let Some(limit) = order.limits.daily_orders {
        if state.orders >= limit {
            return Err(TradingDayRejection::DailyOrderLimitReached {
                limit,
                resets_at: order.resets_at,
            });
        }
    }
    let last_minute = in_window(&state.recent_orders, order.at);
    if let Some(limit) = order.limits.orders_per_minute {
        if last_minute >= limit as usize {
            // A slot frees when the oldest order still in the window leaves it.
            let since = order.at - TimeDelta::seconds(WINDOW_SECONDS);
            let oldest = state.recent_orders.iter().filter(|t| **t > since).min().copied();
            let frees_at = oldest.map_or(order.at, |t| t + TimeDelta::seconds(WINDOW_SECONDS));
            return Err(TradingDayRejection::RateLimited {
                limit,
                retry_after_secs: ceil_seconds(frees_at - order.at),
            });
        }
    }
    let mut events = vec![TradingDayEvent::OrderCounted(OrderCounted {
        order_id: order.order_id,
        symbol: order.symbol.clone(),
        quantity: order.quantity,
        value: order.value,
        at: order.at,
    })];
    let th = &order.thresholds;
    let mut hit = |anomaly: AnomalyType, observed: String, threshold: String| {
        events.push(TradingDayEvent::AnomalyDetected(AnomalyDetected {
            anomaly,
            severity: anomaly.severity(),
            order_id: order.order_id,
            observed,
            threshold,
            at: order.at,
        }))
    };
    // Per-minute and per-day rules fire once per window, so a burst is one
    // alert rather than one per order; a large order is news every time.
    let orders_in_minute = last_minute + 1;
    if orders_in_minute > th.orders_per_minute as usize
        && !state.fired_within_window(AnomalyType::HighFrequencyOrders, order.at)
    {
        hit(
            AnomalyType::HighFrequencyOrders,
            format!("{orders_in_minute} orders in {WINDOW_SECONDS} s"),
            th.orders_per_minute.to_string(),
        );
    }
    if order.quantity > th.order_quantity {
        hit(
            AnomalyType::LargeOrderSize,
            format!("quantity {}", order.quantity.normalize()),
            format!("quantity {}", th.order_quantity.normalize()),
        );
    } else if let Some(value) = order.value.filter(|value| *value > th.order_value) {
        hit(
            AnomalyType::LargeOrderSize,
            format!("value {}", value.normalize()),
            format!("value {}", th.order_value.normalize()),
        );
    }
    if !state.symbols.contains(&order.symbol) {
        let distinct = state.symbols.len() + 1;
        if distinct > th.symbols_per_day as usize && !state.last_fired.contains_key(&AnomalyType::UnusualSymbols) {
            hit(
                AnomalyType::UnusualSymbols,
                format!("{distinct} symbols today"),
                th.symbols_per_day.to_string(),
            );
        }
    }
    if !order.in_session && !state.fired_within_window(AnomalyType::OffHoursActivity, order.at) {
        hit(
            AnomalyType::OffHoursActivity,
            order.at.format("%H:%M:%S UTC").to_string(),
            order.session.clone(),
        );
    }
    hold_if_enforced(state, &mut events, order.at, order.hold_for);
    Ok(events)
}

fn count_cancellation(state: &TradingDayState, cancel: &CountCancellation) -> Vec<TradingDayEvent> {
    let mut events = vec![TradingDayEvent::CancellationCounted(CancellationCounted {
        order_id: cancel.order_id,
        at: cancel.at,
    })];
    let in_minute = in_window(&state.recent_cancellations, cancel.at) + 1;
    let threshold = cancel.thresholds.cancellations_per_minute;
    if in_minute > threshold as usize && !state.fired_within_window(AnomalyType::RapidCancellations, cancel.at) {
        events.push(TradingDayEvent::AnomalyDetected(AnomalyDetected {
            anomaly: AnomalyType::RapidCancellations,
            severity: AnomalyType::RapidCancellations.severity(),
            order_id: cancel.order_id,
            observed: format!("{in_minute} cancellations in {WINDOW_SECONDS} s"),
            threshold: threshold.to_string(),
            at: cancel.at,
        }));
    }
    hold_if_enforced(state, &mut events, cancel.at, cancel.hold_for);
    events
}

/// With enforcement on, the first critical anomaly of a command holds the
/// user's further orders (a hold already in force is left to run out).
fn hold_if_enforced(
    state: &TradingDayState,
    events: &mut Vec<TradingDayEvent>,
    at: DateTime<Utc>,
    hold_for: Option<TimeDelta>,
) {
    let Some(hold_for) = hold_for.filter(|d| *d > TimeDelta::zero()) else {
        return;
    };
    if state.hold_at(at).is_some() {
        return;
    }
    let critical = events.iter().find_map(|event| match event {
        TradingDayEvent::AnomalyDetected(detected) if detected.severity.is_critical() => Some(detected.anomaly),
        _ => None,
    });
    if let Some(anomaly) = critical {
        events.push(TradingDayEvent::OrdersHeld(OrdersHeld {
            anomaly,
            until: at + hold_for,
            at,
        }));
    }
}
