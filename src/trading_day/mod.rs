//! A user's trading day as an aggregate: the pre-trade controls of issue 16
//! (the daily order limit, the per-user rate limit, the five anomaly rules of
//! seed 001 and the hold an anomaly may put on a user), decided from the log.
//!
//! One stream per user and trading day (`tradingday-<user>-<date>`), written
//! in the same commit as the order it counts, with its expected version: two
//! submissions of one user racing, in one process or two, cannot both take
//! the last order of the day. A restart or a replay folds the same stream and
//! answers the same. The stream ends with its day, so no fold reads more than
//! one day's orders.
//!
//! Must never import sqlx, actix, lapin or tokio, read the clock or make ids:
//! the time, the trading day, the limits in force and whether enforcement is
//! on all arrive in the command (`tests/pure_core_boundary.rs`).

mod decide;
mod event;
mod rules;
mod state;

#[cfg(test)]
mod tests;

pub use decide::{
    ceil_seconds, decide, CountCancellation, CountOrder, LiftHold, TradingDayCommand, TradingDayRejection,
};
pub use event::{AnomalyDetected, CancellationCounted, HoldLifted, OrderCounted, OrdersHeld, TradingDayEvent};
pub use rules::{AnomalyType, Limits, Severity, Thresholds, RECENT_KEPT_MAX, SYMBOLS_KEPT_MAX, WINDOW_SECONDS};
pub use state::{orders_in_window, try_evolve, Hold, TradingDayState};

/// The trading day as an [`Aggregate`](crate::aggregate::Aggregate).
#[derive(Debug, Clone, Copy, Default)]
pub struct TradingDayAggregate;

impl crate::aggregate::Aggregate for TradingDayAggregate {
    type State = TradingDayState;
    type Command = TradingDayCommand;
    type Event = TradingDayEvent;
    type Rejection = TradingDayRejection;

    fn decide(
        state: &TradingDayState,
        command: &TradingDayCommand,
    ) -> Result<Vec<TradingDayEvent>, TradingDayRejection> {
        decide(state, command)
    }

    fn try_evolve(
        state: TradingDayState,
        event: &TradingDayEvent,
    ) -> Result<TradingDayState, crate::aggregate::InvariantViolation> {
        try_evolve(state, event)
    }
}
