//! What happened to an order. Past-tense names; the durable schema: never
//! edit a shape that has been stored, add a version and an upcaster instead.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::types::{OrderType, Side, Symbol};
use crate::events::{EventFamily, UpcastError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderSubmitted {
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub symbol: Symbol,
    pub side: Side,
    pub order_type: OrderType,
    pub quantity: Decimal,
    pub limit_price: Option<Decimal>,
    pub stop_price: Option<Decimal>,
    pub market_price_at_submission: Option<Decimal>,
    pub market_data_timestamp: Option<DateTime<Utc>>,
    pub submitted_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderAccepted {
    /// Funds held for a BUY; zero for a SELL.
    pub reserved_amount: Decimal,
    pub accepted_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderTriggered {
    pub market_price: Decimal,
    pub triggered_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderExecuted {
    pub execution_price: Decimal,
    pub quantity: Decimal,
    /// quantity × execution_price, exact (no rounding: the ledger moves this amount).
    pub total_value: Decimal,
    pub market_price_at_exec: Decimal,
    pub executed_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderCancelled {
    pub reason: String,
    pub cancelled_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderFailed {
    pub reason: String,
    pub failed_at: DateTime<Utc>,
}

/// Every event of an order stream. The variant name is the stored event type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum OrderEvent {
    OrderSubmitted(OrderSubmitted),
    OrderAccepted(OrderAccepted),
    OrderTriggered(OrderTriggered),
    OrderExecuted(OrderExecuted),
    OrderCancelled(OrderCancelled),
    OrderFailed(OrderFailed),
}

impl OrderEvent {
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            OrderEvent::OrderSubmitted(e) => e.submitted_at,
            OrderEvent::OrderAccepted(e) => e.accepted_at,
            OrderEvent::OrderTriggered(e) => e.triggered_at,
            OrderEvent::OrderExecuted(e) => e.executed_at,
            OrderEvent::OrderCancelled(e) => e.cancelled_at,
            OrderEvent::OrderFailed(e) => e.failed_at,
        }
    }
}

impl EventFamily for OrderEvent {
    fn event_type(&self) -> &'static str {
        match self {
            OrderEvent::OrderSubmitted(_) => "OrderSubmitted",
            OrderEvent::OrderAccepted(_) => "OrderAccepted",
            OrderEvent::OrderTriggered(_) => "OrderTriggered",
            OrderEvent::OrderExecuted(_) => "OrderExecuted",
            OrderEvent::OrderCancelled(_) => "OrderCancelled",
            OrderEvent::OrderFailed(_) => "OrderFailed",
        }
    }

    fn schema_version(event_type: &str) -> u32 {
        match event_type {
            // v2 split the seed's single `price` into `limit_price` and `stop_price`.
            "OrderSubmitted" => 2,
            _ => 1,
        }
    }

    fn upcast(event_type: &str, schema_version: u32, payload: Value) -> Result<Value, UpcastError> {
        match (event_type, schema_version) {
            ("OrderSubmitted", 1) => upcast_submitted_v1(payload),
            _ => Ok(payload),
        }
    }
}

/// Version 1 stored the seed's single `price`: the limit price for LIMIT and
/// STOP_LIMIT, the stop price for STOP_LOSS. STOP_LIMIT also carried `stop_price`.
fn upcast_submitted_v1(mut payload: Value) -> Result<Value, UpcastError> {
    let object = payload
        .as_object_mut()
        .ok_or_else(|| UpcastError::new("OrderSubmitted", 1, "payload is not a JSON object"))?;
    let price = object.remove("price").unwrap_or(Value::Null);
    let order_type = object
        .get("order_type")
        .and_then(Value::as_str)
        .ok_or_else(|| UpcastError::new("OrderSubmitted", 1, "order_type is missing"))?
        .to_owned();
    let (limit_price, stop_price) = match order_type.as_str() {
        "LIMIT" => (price, Value::Null),
        "STOP_LOSS" => (Value::Null, price),
        "STOP_LIMIT" => (price, object.remove("stop_price").unwrap_or(Value::Null)),
        "MARKET" => (Value::Null, Value::Null),
        other => {
            return Err(UpcastError::new(
                "OrderSubmitted",
                1,
                format!("unknown order_type {other:?}"),
            ))
        }
    };
    object.insert("limit_price".into(), limit_price);
    object.insert("stop_price".into(), stop_price);
    Ok(payload)
}
