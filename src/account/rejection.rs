//! Why an account command is refused. Each variant is named after the rule it
//! enforces, and its message tells the caller what to change.

use rust_decimal::Decimal;
use uuid::Uuid;

use super::state::Operation;
use crate::order::AmountError;

/// Longest idempotency key accepted; keys are stored in every event payload.
pub const IDEMPOTENCY_KEY_LEN_MAX: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountRejection {
    #[error("the account is not open; open it first")]
    NotOpened,
    #[error("amount {amount} {reason}")]
    InvalidAmount { amount: Decimal, reason: AmountError },
    #[error("idempotency key {key:?} must be 1 to {IDEMPOTENCY_KEY_LEN_MAX} characters, without control characters")]
    InvalidIdempotencyKey { key: String },
    #[error("idempotency key {key:?} was already used for another request ({original}); use a new key")]
    KeyReused { key: String, original: Operation },
    #[error("insufficient funds: {requested} requested, {available} available")]
    InsufficientFunds { available: Decimal, requested: Decimal },
    #[error("no reservation for order {order_id}")]
    NoReservation { order_id: Uuid },
    #[error("deduction of {requested} exceeds the {reserved} reserved for order {order_id}")]
    ExceedsReservation {
        order_id: Uuid,
        reserved: Decimal,
        requested: Decimal,
    },
}
