//! The balance service as the saga sees it (seed 004 section 1.4): get balance,
//! reserve, deduct, credit, release, sufficient funds.
//!
//! Implementations: the embedded ledger (`embedded.rs`, over `account-<user
//! id>` streams in the engine's own log) and the HTTP client (`http.rs`).
//! Every mutating call carries an idempotency key: calling twice with the same
//! key has the effect of calling once and returns the same answer.

pub mod embedded;
pub mod http;

use async_trait::async_trait;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One account's money, as the balance service reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    pub user_id: Uuid,
    /// Free to reserve or withdraw.
    pub available: Decimal,
    /// Held for working orders.
    pub reserved: Decimal,
}

/// A money movement tied to one order and one saga step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceOp {
    pub user_id: Uuid,
    pub order_id: Uuid,
    /// Positive; the exact amount to move.
    pub amount: Decimal,
    /// `{order_id}:{step}`: repeated calls with one key move money once.
    pub idempotency_key: String,
}

/// Releases whatever is still reserved for an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseOp {
    pub user_id: Uuid,
    pub order_id: Uuid,
    pub idempotency_key: String,
}

/// The service's answer to a mutating call: what moved and the balance after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceReceipt {
    pub idempotency_key: String,
    /// The amount that moved (for a release: what was still reserved, maybe zero).
    pub amount: Decimal,
    pub balance: Balance,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BalanceError {
    /// Permanent for this request: the account cannot cover it.
    #[error("insufficient funds: {requested} requested, {available} available")]
    InsufficientFunds { available: Decimal, requested: Decimal },
    /// Permanent: there is no reservation for this order to deduct from.
    #[error("no reservation for order {order_id}")]
    NoReservation { order_id: Uuid },
    /// Permanent: a deduction larger than what is reserved for the order.
    #[error("deduction of {requested} exceeds the {reserved} reserved for order {order_id}")]
    ExceedsReservation {
        order_id: Uuid,
        reserved: Decimal,
        requested: Decimal,
    },
    /// Permanent: the request itself is wrong (non-positive amount, unknown account, 4xx).
    #[error("balance service refused the request: {0}")]
    Rejected(String),
    /// Transient: timeout, connection failure, 5xx, or the circuit breaker is open.
    #[error("balance service unavailable: {0}")]
    Unavailable(String),
    /// Transient and local: the embedded ledger kept losing the optimistic
    /// race for the account's stream to other writers (its bounded, backed-off
    /// retries ran out). Nothing is wrong with the service: the caller tries
    /// again within moments with the same key, never on the failure ladder.
    #[error("account {user_id} is contended: {attempts} appends in a row lost the race to other writers")]
    Contended { user_id: Uuid, attempts: u32 },
}

impl BalanceError {
    /// Whether the same call (same key) may succeed later.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Contended { .. })
    }
}

#[async_trait]
pub trait BalanceService: Send + Sync + 'static {
    async fn get_balance(&self, user_id: Uuid) -> Result<Balance, BalanceError>;
    /// Moves `amount` from available to reserved for the order.
    async fn reserve(&self, op: BalanceOp) -> Result<BalanceReceipt, BalanceError>;
    /// Takes `amount` out of the order's reservation (the money leaves the account).
    async fn deduct(&self, op: BalanceOp) -> Result<BalanceReceipt, BalanceError>;
    /// Adds `amount` to available (proceeds of a SELL).
    async fn credit(&self, op: BalanceOp) -> Result<BalanceReceipt, BalanceError>;
    /// Returns everything still reserved for the order to available.
    async fn release(&self, op: ReleaseOp) -> Result<BalanceReceipt, BalanceError>;
    async fn sufficient_funds(&self, user_id: Uuid, amount: Decimal) -> Result<bool, BalanceError>;

    /// The embedded ledger behind this service, when it keeps its accounts in
    /// the engine's own log: a saga step and its ledger entry can then be one
    /// commit with the order command they lead to. None for a remote service
    /// (and for wrappers that must see every call, such as fault injectors).
    fn colocated(&self) -> Option<&embedded::EmbeddedLedger> {
        None
    }

    /// A money movement committed through [`BalanceService::colocated`],
    /// started at `started`, for wrappers that time every call (metrics). A
    /// co-located step that fails is not a call: nothing is committed, and the
    /// step-by-step path makes (and times) the call instead.
    fn observe_colocated(&self, _operation: &str, _started: std::time::Instant) {}
}
