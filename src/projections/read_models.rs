//! Where read models live: the `orders` table (and its history queries), the
//! HTTP idempotency keys, and each projection's checkpoint, written in the
//! same transaction as the rows it covers.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::order_rows::{OrderRow, OrderRowChange};
use crate::order::OrderStatus;
use crate::store::StoreError;

/// Most rows one history page returns.
pub const HISTORY_LIMIT_MAX: u32 = 100;

/// The `status` of a record whose first request is still running: it holds
/// the key, and its `response_data` is null until the request completes.
pub const IDEMPOTENCY_IN_FLIGHT: &str = "IN_FLIGHT";

/// A stored answer to an HTTP request with an Idempotency-Key, or the claim of
/// the request still computing it ([`IDEMPOTENCY_IN_FLIGHT`]).
#[derive(Debug, Clone, PartialEq)]
pub struct IdempotencyRecord {
    pub idempotency_key: String,
    pub user_id: Uuid,
    pub order_id: Uuid,
    /// The order's status in the answer, or [`IDEMPOTENCY_IN_FLIGHT`].
    pub status: String,
    /// SHA-256 of the request body: the same key with another body is refused.
    pub request_hash: String,
    pub response_data: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl IdempotencyRecord {
    /// Whether the request that claimed the key has not answered yet.
    pub fn in_flight(&self) -> bool {
        self.status == IDEMPOTENCY_IN_FLIGHT
    }
}

/// What [`ReadModels::claim`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum IdempotencyClaim {
    /// The key is this request's now: it must `complete` or `release` it.
    Won,
    /// A live record holds the key: another request's answer or claim.
    Held(IdempotencyRecord),
    /// The holder released the key between this claim and the look at its
    /// record: claim again.
    Released,
}

/// One page of a user's orders, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryPage {
    pub orders: Vec<OrderRow>,
    pub total_count: u64,
}

#[async_trait]
pub trait ReadModels: Send + Sync + 'static {
    /// Applies `changes` and moves `projection`'s checkpoint from `from` to
    /// `to`, atomically, only if the checkpoint is still at `from`: a second
    /// runner of the same projection (an overlapping leader hand-over) gets
    /// [`StoreError::CheckpointMoved`] and writes nothing, so no page is ever
    /// applied twice.
    async fn commit(&self, projection: &str, changes: &[OrderRowChange], from: u64, to: u64) -> Result<(), StoreError>;

    /// Where `projection` has got to; 0 when it never committed.
    async fn checkpoint(&self, projection: &str) -> Result<u64, StoreError>;

    async fn order(&self, order_id: Uuid) -> Result<Option<OrderRow>, StoreError>;

    /// A user's orders, newest first, optionally of one status.
    async fn history(
        &self,
        user_id: Uuid,
        status: Option<OrderStatus>,
        limit: u32,
        offset: u64,
    ) -> Result<HistoryPage, StoreError>;

    /// The live record for this user's key (expired ones are ignored).
    async fn idempotency(
        &self,
        user_id: Uuid,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<IdempotencyRecord>, StoreError>;

    /// Stores `record` (an in-flight claim) unless a live record holds its key;
    /// an expired record gives way. Atomic: of concurrent claims one wins.
    async fn claim(&self, record: IdempotencyRecord) -> Result<IdempotencyClaim, StoreError>;

    /// Records the answer of the request holding the key.
    async fn complete(
        &self,
        user_id: Uuid,
        key: &str,
        status: &str,
        response: &serde_json::Value,
    ) -> Result<(), StoreError>;

    /// Drops the key's in-flight claim if it was made at or before
    /// `claimed_at_or_before` (its holder failed, or is presumed dead); an
    /// answered record is never dropped. Returns whether a claim was dropped.
    async fn release(&self, user_id: Uuid, key: &str, claimed_at_or_before: DateTime<Utc>) -> Result<bool, StoreError>;
}
