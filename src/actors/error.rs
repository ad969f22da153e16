//! What can go wrong when an order actor handles a command, and when the
//! actors' registry starts.

use crate::order::OrderRejection;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ActorError {
    #[error(transparent)]
    Rejected(#[from] OrderRejection),
    #[error("the event log: {0}")]
    Store(#[from] StoreError),
    #[error("order {order_id}: another writer kept appending; gave up after {attempts} attempts, retry later")]
    Contended { order_id: uuid::Uuid, attempts: u32 },
    #[error("order {order_id} holds an event this engine cannot read: {reason}")]
    Unreadable { order_id: uuid::Uuid, reason: String },
    #[error("the order's actor is overloaded or stopping; retry later")]
    Unavailable,
    /// A stream written in the same commit as the order's events had moved:
    /// nothing was written; whoever owns that stream reloads it and retries.
    #[error("order {order_id}: a stream committed with it moved on: {conflict}")]
    CoWriteConflict {
        order_id: uuid::Uuid,
        conflict: crate::store::Conflict,
    },
    #[error("order {order_id}: the streams to commit with it could not be written: {reason}")]
    CoWriteRefused { order_id: uuid::Uuid, reason: String },
}

impl ActorError {
    /// Whether the same command may succeed if sent again.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Store(e) => e.is_transient(),
            Self::Contended { .. } | Self::Unavailable | Self::CoWriteConflict { .. } => true,
            Self::Rejected(_) | Self::Unreadable { .. } | Self::CoWriteRefused { .. } => false,
        }
    }
}

/// Why the registry could not start where its actors run. Raised once, at
/// start, never per command.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("order actors need an actix arbiter on the thread that starts the engine")]
    NoArbiter,
    #[error("order actors on {threads} threads need an actix system on the thread that starts the engine")]
    NoSystem { threads: usize },
    #[error("starting order actor thread {index} of {threads}")]
    Thread {
        index: usize,
        threads: usize,
        #[source]
        source: std::io::Error,
    },
}
