//! The order aggregate: a pure core of commands, events, `decide` and `evolve`.
//!
//! Must never import sqlx, actix, lapin or tokio, read the clock or make ids:
//! `tests/pure_core_boundary.rs` fails the build's tests if it does.

mod command;
mod decide;
mod event;
mod rejection;
mod state;
mod types;

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;

pub use command::{AcceptOrder, CancelOrder, ExecuteOrder, FailOrder, OrderCommand, Quote, SubmitOrder, TriggerOrder};
pub use decide::decide;
pub use event::{
    OrderAccepted, OrderCancelled, OrderEvent, OrderExecuted, OrderFailed, OrderSubmitted, OrderTriggered,
};
pub use rejection::OrderRejection;
pub use state::{evolve, try_evolve, Execution, Order, OrderState};
pub use types::{
    check_positive_amount, AmountError, OrderStatus, OrderType, Side, Symbol, SymbolError, DECIMAL_INTEGER_DIGITS_MAX,
    DECIMAL_SCALE_MAX, SYMBOL_LEN_MAX,
};

/// The order as an [`Aggregate`](crate::aggregate::Aggregate).
#[derive(Debug, Clone, Copy, Default)]
pub struct OrderAggregate;

impl crate::aggregate::Aggregate for OrderAggregate {
    type State = OrderState;
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Rejection = OrderRejection;

    fn decide(state: &OrderState, command: &OrderCommand) -> Result<Vec<OrderEvent>, OrderRejection> {
        decide(state, command)
    }

    fn try_evolve(state: OrderState, event: &OrderEvent) -> Result<OrderState, crate::aggregate::InvariantViolation> {
        try_evolve(state, event)
    }
}
