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

/// A stored answer to an HTTP request with an Idempotency-Key.
#[derive(Debug, Clone, PartialEq)]
pub struct IdempotencyRecord {
    pub idempotency_key: String,
    pub user_id: Uuid,
    pub order_id: Uuid,
    pub status: String,
    /// SHA-256 of the request body: the same key with another body is refused.
    pub request_hash: String,
    pub response_data: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// One page of a user's orders, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryPage {
    pub orders: Vec<OrderRow>,
    pub total_count: u64,
}

#[async_trait]
pub trait ReadModels: Send + Sync + 'static {
    /// Applies `changes` and sets `projection`'s checkpoint to `position`, atomically.
    async fn commit(&self, projection: &str, changes: &[OrderRowChange], position: u64) -> Result<(), StoreError>;

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

    /// Stores a record unless one is there; returns the record that is kept.
    async fn remember(&self, record: IdempotencyRecord) -> Result<IdempotencyRecord, StoreError>;
}
