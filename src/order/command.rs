//! What a caller may ask of an order. Imperative names; everything the rules
//! need (time, the market quote, the reservation made) travels inside.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::types::{OrderType, Side};

/// The market's answer about a symbol at submission, looked up by the shell.
#[derive(Debug, Clone, PartialEq)]
pub struct Quote {
    pub price: Decimal,
    pub as_of: DateTime<Utc>,
    pub market_open: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SubmitOrder {
    pub order_id: Uuid,
    pub user_id: Uuid,
    /// Raw as received; `decide` validates the format.
    pub symbol: String,
    pub side: Side,
    pub order_type: OrderType,
    pub quantity: Decimal,
    pub limit_price: Option<Decimal>,
    pub stop_price: Option<Decimal>,
    /// `None` when market data does not list the symbol.
    pub quote: Option<Quote>,
    pub submitted_at: DateTime<Utc>,
}

/// Funds are in place: reserved for a BUY, nothing needed for a SELL.
#[derive(Debug, Clone, PartialEq)]
pub struct AcceptOrder {
    pub reserved_amount: Decimal,
    pub accepted_at: DateTime<Utc>,
}

/// A stop order's stop price was reached.
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerOrder {
    pub market_price: Decimal,
    pub triggered_at: DateTime<Utc>,
}

/// The order filled at `execution_price`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecuteOrder {
    pub execution_price: Decimal,
    pub market_price: Decimal,
    pub executed_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CancelOrder {
    pub reason: String,
    pub cancelled_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FailOrder {
    pub reason: String,
    pub failed_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum OrderCommand {
    Submit(SubmitOrder),
    Accept(AcceptOrder),
    Trigger(TriggerOrder),
    Execute(ExecuteOrder),
    Cancel(CancelOrder),
    Fail(FailOrder),
}

impl OrderCommand {
    pub fn name(&self) -> &'static str {
        match self {
            OrderCommand::Submit(_) => "SubmitOrder",
            OrderCommand::Accept(_) => "AcceptOrder",
            OrderCommand::Trigger(_) => "TriggerOrder",
            OrderCommand::Execute(_) => "ExecuteOrder",
            OrderCommand::Cancel(_) => "CancelOrder",
            OrderCommand::Fail(_) => "FailOrder",
        }
    }
}
