//! The order as folded from its events, and `evolve`.
//!
//! Pure: no I/O, no clock. `try_evolve` checks what must hold in every build
//! (an event only after a submission, nothing after a final status, no
//! negative reservation) and names the broken rule instead of folding past it.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::event::OrderEvent;
use super::types::{OrderStatus, OrderType, Side, Symbol};
use crate::aggregate::{ensure, InvariantViolation};
use crate::events::EventFamily;

#[derive(Debug, Clone, PartialEq)]
pub struct Execution {
    pub price: Decimal,
    pub total_value: Decimal,
    pub market_price: Decimal,
    pub executed_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    pub id: Uuid,
    pub user_id: Uuid,
    pub symbol: Symbol,
    pub side: Side,
    pub order_type: OrderType,
    pub quantity: Decimal,
    pub limit_price: Option<Decimal>,
    pub stop_price: Option<Decimal>,
    pub status: OrderStatus,
    /// Funds held for this order by the balance service (BUY only).
    pub reserved_amount: Decimal,
    /// Set once a stop order's stop price was reached; it then works as MARKET or LIMIT.
    pub triggered_at: Option<DateTime<Utc>>,
    pub market_price_at_submission: Option<Decimal>,
    pub market_data_timestamp: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub execution: Option<Execution>,
    /// Why the order failed or was cancelled.
    pub reason: Option<String>,
}

impl Order {
    /// The limit that binds execution now: a LIMIT order's, or a triggered STOP_LIMIT's.
    pub fn binding_limit(&self) -> Option<Decimal> {
        match self.order_type {
            OrderType::Limit => self.limit_price,
            OrderType::StopLimit if self.triggered_at.is_some() => self.limit_price,
            _ => None,
        }
    }
}

/// The state of an order stream: nothing yet, or an order.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum OrderState {
    #[default]
    Empty,
    Placed(Box<Order>),
}

impl OrderState {
    pub fn order(&self) -> Option<&Order> {
        match self {
            OrderState::Empty => None,
            OrderState::Placed(order) => Some(order),
        }
    }

    pub fn status(&self) -> Option<OrderStatus> {
        self.order().map(|o| o.status)
    }
}

/// Applies an event `decide` produced; panics on a broken invariant (a bug in this core).
pub fn evolve(state: OrderState, event: &OrderEvent) -> OrderState {
    <super::OrderAggregate as crate::aggregate::Aggregate>::evolve(state, event)
}

/// Applies one event, or names the invariant it breaks.
pub fn try_evolve(state: OrderState, event: &OrderEvent) -> Result<OrderState, InvariantViolation> {
    let mut order = match (state, event) {
        (OrderState::Empty, OrderEvent::OrderSubmitted(e)) => {
            return Ok(OrderState::Placed(Box::new(Order {
                id: e.order_id,
                user_id: e.user_id,
                symbol: e.symbol.clone(),
                side: e.side,
                order_type: e.order_type,
                quantity: e.quantity,
                limit_price: e.limit_price,
                stop_price: e.stop_price,
                status: OrderStatus::Pending,
                reserved_amount: Decimal::ZERO,
                triggered_at: None,
                market_price_at_submission: e.market_price_at_submission,
                market_data_timestamp: e.market_data_timestamp,
                created_at: e.submitted_at,
                updated_at: e.submitted_at,
                execution: None,
                reason: None,
            })))
        }
        (OrderState::Placed(order), _) => order,
        (OrderState::Empty, other) => {
            return Err(InvariantViolation(format!(
                "{} applied to an order that was never submitted",
                other.event_type()
            )));
        }
    };
    ensure(!order.status.is_terminal(), || {
        format!(
            "{} applied to order {} after its final status {}",
            event.event_type(),
            order.id,
            order.status
        )
    })?;
    match event {
        OrderEvent::OrderSubmitted(_) => {
            return Err(InvariantViolation(format!(
                "OrderSubmitted applied twice to order {}",
                order.id
            )));
        }
        OrderEvent::OrderAccepted(e) => {
            order.status = OrderStatus::Processing;
            order.reserved_amount = e.reserved_amount;
        }
        OrderEvent::OrderTriggered(e) => {
            order.triggered_at = Some(e.triggered_at);
        }
        OrderEvent::OrderExecuted(e) => {
            order.status = OrderStatus::Executed;
            order.execution = Some(Execution {
                price: e.execution_price,
                total_value: e.total_value,
                market_price: e.market_price_at_exec,
                executed_at: e.executed_at,
            });
        }
        OrderEvent::OrderCancelled(e) => {
            order.status = OrderStatus::Cancelled;
            order.reason = Some(e.reason.clone());
        }
        OrderEvent::OrderFailed(e) => {
            order.status = OrderStatus::Failed;
            order.reason = Some(e.reason.clone());
        }
    }
    order.updated_at = event.at();
    ensure(order.reserved_amount >= Decimal::ZERO, || {
        format!("negative reservation {} on order {}", order.reserved_amount, order.id)
    })?;
    Ok(OrderState::Placed(order))
}
