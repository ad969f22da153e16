//! Why an order command is refused. Each variant is named after the rule it
//! enforces, and its message tells the caller what to change.

use rust_decimal::Decimal;
use uuid::Uuid;

use super::types::{AmountError, OrderStatus, OrderType, Side, SymbolError};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OrderRejection {
    #[error("quantity {quantity} {reason}")]
    InvalidQuantity { quantity: Decimal, reason: AmountError },
    #[error("{field} {value} {reason}")]
    InvalidPrice {
        field: &'static str,
        value: Decimal,
        reason: AmountError,
    },
    #[error("a {order_type} order needs a {field}")]
    PriceRequired { order_type: OrderType, field: &'static str },
    #[error("a {order_type} order takes no {field}; remove it or choose another order type")]
    PriceNotAllowed { order_type: OrderType, field: &'static str },
    #[error("invalid symbol: {0}")]
    InvalidSymbol(SymbolError),
    #[error("symbol {symbol} is not listed by market data")]
    UnknownSymbol { symbol: String },
    #[error("the market for {symbol} is closed; MARKET orders are taken only while it is open (use a LIMIT order to rest until it opens)")]
    MarketClosed { symbol: String },
    #[error("order {order_id} was already submitted")]
    AlreadySubmitted { order_id: Uuid },
    #[error("order does not exist; submit it first")]
    NotSubmitted,
    #[error("order is {status}, a final state; it can no longer change")]
    AlreadyFinal { status: OrderStatus },
    #[error("{command} needs the order to be {expected}, but it is {actual}")]
    WrongStatus {
        command: &'static str,
        expected: OrderStatus,
        actual: OrderStatus,
    },
    #[error("a BUY order must reserve funds before it is accepted")]
    ReservationRequired,
    #[error("a SELL order reserves no funds, but {reserved} was reserved")]
    ReservationNotAllowed { reserved: Decimal },
    #[error("reservation of {reserved} does not cover {required} (quantity × limit price)")]
    ReservationTooSmall { required: Decimal, reserved: Decimal },
    #[error("reserved amount {reserved} must not be negative")]
    NegativeReservation { reserved: Decimal },
    #[error("a {order_type} order has no stop price to trigger")]
    NotAStopOrder { order_type: OrderType },
    #[error("the order was already triggered")]
    AlreadyTriggered,
    #[error("a {side} stop at {stop_price} is not reached at market price {market_price}")]
    StopNotReached {
        side: Side,
        stop_price: Decimal,
        market_price: Decimal,
    },
    #[error("a stop order executes only after its stop price is reached")]
    NotTriggered,
    #[error("a {side} limit of {limit_price} forbids execution at {execution_price}")]
    LimitNotMet {
        side: Side,
        limit_price: Decimal,
        execution_price: Decimal,
    },
    #[error("executing costs {cost}, more than the {reserved} reserved for it")]
    ExceedsReservation { cost: Decimal, reserved: Decimal },
    #[error("a reason is required")]
    ReasonRequired,
}
