//! The `orders` read model as a pure function of the log: each order event
//! becomes one row change. No I/O; the read-model stores apply the changes.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::events::{decode, DecodeError, RecordedEvent};
use crate::order::{OrderEvent, OrderStatus, OrderType, Side};

/// One row of `orders` (seed 004 section 4.1, plus stop_price and execution_value).
#[derive(Debug, Clone, PartialEq)]
pub struct OrderRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub symbol: String,
    pub order_type: OrderType,
    pub order_side: Side,
    pub quantity: Decimal,
    /// The seed's `price`: the limit, or for STOP_LOSS the stop.
    pub price: Option<Decimal>,
    pub stop_price: Option<Decimal>,
    pub status: OrderStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub executed_at: Option<DateTime<Utc>>,
    pub execution_price: Option<Decimal>,
    pub execution_value: Option<Decimal>,
    pub market_price_at_submission: Option<Decimal>,
    pub market_data_timestamp: Option<DateTime<Utc>>,
    pub failure_reason: Option<String>,
}

/// How one event changes the `orders` table.
#[derive(Debug, Clone, PartialEq)]
pub enum OrderRowChange {
    Insert(Box<OrderRow>),
    Update {
        id: Uuid,
        status: Option<OrderStatus>,
        updated_at: DateTime<Utc>,
        executed_at: Option<DateTime<Utc>>,
        execution_price: Option<Decimal>,
        execution_value: Option<Decimal>,
        failure_reason: Option<String>,
    },
}

/// The change an event makes, or None for events of other streams.
pub fn order_row_change(recorded: &RecordedEvent) -> Result<Option<OrderRowChange>, DecodeError> {
    if recorded.stream_id.category() != "order" {
        return Ok(None);
    }
    let event: OrderEvent = decode(recorded)?;
    Ok(order_row_change_of(recorded, &event))
}

/// The change an order event makes, decoded already (the log feed decodes once
/// for every follower); None when its stream is not `order-<uuid>`.
pub fn order_row_change_of(recorded: &RecordedEvent, event: &OrderEvent) -> Option<OrderRowChange> {
    let id = recorded.stream_id.uuid_in("order")?;
    let update = |status: Option<OrderStatus>, updated_at: DateTime<Utc>, failure_reason: Option<String>| {
        OrderRowChange::Update {
            id,
            status,
            updated_at,
            executed_at: None,
            execution_price: None,
            execution_value: None,
            failure_reason,
        }
    };
    Some(match event {
        OrderEvent::OrderSubmitted(e) => OrderRowChange::Insert(Box::new(OrderRow {
            id,
            user_id: e.user_id,
            symbol: e.symbol.to_string(),
            order_type: e.order_type,
            order_side: e.side,
            quantity: e.quantity,
            price: match e.order_type {
                OrderType::StopLoss => e.stop_price,
                _ => e.limit_price,
            },
            stop_price: e.stop_price,
            status: OrderStatus::Pending,
            created_at: e.submitted_at,
            updated_at: e.submitted_at,
            executed_at: None,
            execution_price: None,
            execution_value: None,
            market_price_at_submission: e.market_price_at_submission,
            market_data_timestamp: e.market_data_timestamp,
            failure_reason: None,
        })),
        OrderEvent::OrderAccepted(e) => update(Some(OrderStatus::Processing), e.accepted_at, None),
        OrderEvent::OrderTriggered(e) => update(None, e.triggered_at, None),
        OrderEvent::OrderExecuted(e) => OrderRowChange::Update {
            id,
            status: Some(OrderStatus::Executed),
            updated_at: e.executed_at,
            executed_at: Some(e.executed_at),
            execution_price: Some(e.execution_price),
            execution_value: Some(e.total_value),
            failure_reason: None,
        },
        OrderEvent::OrderCancelled(e) => update(Some(OrderStatus::Cancelled), e.cancelled_at, Some(e.reason.clone())),
        OrderEvent::OrderFailed(e) => update(Some(OrderStatus::Failed), e.failed_at, Some(e.reason.clone())),
    })
}
