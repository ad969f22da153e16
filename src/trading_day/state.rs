//! What a trading-day stream has recorded, and how each event moves it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use chrono::{DateTime, TimeDelta, Utc};

use super::event::TradingDayEvent;
use super::rules::{AnomalyType, RECENT_KEPT_MAX, SYMBOLS_KEPT_MAX, WINDOW_SECONDS};
use crate::aggregate::{ensure, InvariantViolation};

/// A hold on the user's orders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub anomaly: AnomalyType,
    pub until: DateTime<Utc>,
}

/// The day so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TradingDayState {
    /// Orders counted today.
    pub orders: u32,
    /// When the orders of the last minute (as of the latest one) came, oldest first.
    pub recent_orders: VecDeque<DateTime<Utc>>,
    /// When the cancellations of the last minute came, oldest first.
    pub recent_cancellations: VecDeque<DateTime<Utc>>,
    /// The distinct symbols ordered today (at most [`SYMBOLS_KEPT_MAX`]).
    pub symbols: BTreeSet<String>,
    /// When each rule last fired today.
    pub last_fired: BTreeMap<AnomalyType, DateTime<Utc>>,
    pub hold: Option<Hold>,
}

fn window() -> TimeDelta {
    TimeDelta::seconds(WINDOW_SECONDS)
}

/// How many of `times` fall in the minute up to `at`: (at - 60 s, at].
pub(super) fn in_window(times: &VecDeque<DateTime<Utc>>, at: DateTime<Utc>) -> usize {
    let since = at - window();
    times.iter().filter(|t| **t > since && **t <= at).count()
}

/// Keeps `times` to the last minute before its newest entry, and bounded.
fn remember(times: &mut VecDeque<DateTime<Utc>>, at: DateTime<Utc>) {
    times.push_back(at);
    let newest = times.iter().copied().max().unwrap_or(at);
    let since = newest - window();
    times.retain(|t| *t > since);
    while times.len() > RECENT_KEPT_MAX {
        times.pop_front();
    }
}

impl TradingDayState {
    /// The hold in force at `at`, if any.
    pub fn hold_at(&self, at: DateTime<Utc>) -> Option<&Hold> {
        self.hold.as_ref().filter(|hold| hold.until > at)
    }

    /// Whether `anomaly` fired in the minute up to `at`.
    pub(super) fn fired_within_window(&self, anomaly: AnomalyType, at: DateTime<Utc>) -> bool {
        self.last_fired
            .get(&anomaly)
            .is_some_and(|fired| *fired > at - window() && *fired <= at)
    }
}

/// Orders of the minute up to `at`, as the rate limit and the high-frequency rule count them.
pub fn orders_in_window(state: &TradingDayState, at: DateTime<Utc>) -> usize {
    in_window(&state.recent_orders, at)
}

/// Applies one event, or names the invariant it breaks.
pub fn try_evolve(mut state: TradingDayState, event: &TradingDayEvent) -> Result<TradingDayState, InvariantViolation> {
    match event {
        TradingDayEvent::OrderCounted(counted) => {
            state.orders = state
                .orders
                .checked_add(1)
                .ok_or_else(|| InvariantViolation("more orders in a day than a u32 counts".into()))?;
            remember(&mut state.recent_orders, counted.at);
            if state.symbols.len() < SYMBOLS_KEPT_MAX {
                state.symbols.insert(counted.symbol.clone());
            }
        }
        TradingDayEvent::CancellationCounted(counted) => remember(&mut state.recent_cancellations, counted.at),
        TradingDayEvent::AnomalyDetected(detected) => {
            ensure(detected.severity == detected.anomaly.severity(), || {
                format!(
                    "anomaly {} recorded as {}, its rule says {}",
                    detected.anomaly,
                    detected.severity.as_str(),
                    detected.anomaly.severity().as_str()
                )
            })?;
            state.last_fired.insert(detected.anomaly, detected.at);
        }
        TradingDayEvent::OrdersHeld(held) => {
            ensure(held.until > held.at, || {
                format!("a hold until {} recorded at {}", held.until, held.at)
            })?;
            state.hold = Some(Hold {
                anomaly: held.anomaly,
                until: held.until,
            });
        }
        TradingDayEvent::HoldLifted(lifted) => {
            ensure(state.hold.is_some(), || {
                format!("a hold lifted by {} where none was recorded", lifted.by)
            })?;
            state.hold = None;
        }
    }
    Ok(state)
}
