//! What a caller may ask of an account. Imperative names; time and keys travel
//! inside, because the core reads no clock and makes no ids.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq)]
pub enum AccountCommand {
    /// Start the account's stream. Opening an open account changes nothing.
    Open { user_id: Uuid, at: DateTime<Utc> },
    /// Add money from outside (the embedded default's demo funding, an operator).
    Deposit {
        amount: Decimal,
        idempotency_key: String,
        at: DateTime<Utc>,
    },
    /// Move `amount` from available to the order's reservation.
    Reserve {
        order_id: Uuid,
        amount: Decimal,
        idempotency_key: String,
        at: DateTime<Utc>,
    },
    /// Take `amount` out of the order's reservation; the money leaves the account.
    Deduct {
        order_id: Uuid,
        amount: Decimal,
        idempotency_key: String,
        at: DateTime<Utc>,
    },
    /// Return whatever is still reserved for the order to available (maybe nothing).
    Release {
        order_id: Uuid,
        idempotency_key: String,
        at: DateTime<Utc>,
    },
    /// Add a SELL's proceeds to available.
    Credit {
        order_id: Uuid,
        amount: Decimal,
        idempotency_key: String,
        at: DateTime<Utc>,
    },
}

impl AccountCommand {
    /// When the command was made (the shell's clock, carried in).
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            AccountCommand::Open { at, .. }
            | AccountCommand::Deposit { at, .. }
            | AccountCommand::Reserve { at, .. }
            | AccountCommand::Deduct { at, .. }
            | AccountCommand::Release { at, .. }
            | AccountCommand::Credit { at, .. } => *at,
        }
    }

    /// The key that makes this command idempotent; `Open` needs none (it is
    /// idempotent by itself).
    pub fn idempotency_key(&self) -> Option<&str> {
        match self {
            AccountCommand::Open { .. } => None,
            AccountCommand::Deposit { idempotency_key, .. }
            | AccountCommand::Reserve { idempotency_key, .. }
            | AccountCommand::Deduct { idempotency_key, .. }
            | AccountCommand::Release { idempotency_key, .. }
            | AccountCommand::Credit { idempotency_key, .. } => Some(idempotency_key),
        }
    }
}
