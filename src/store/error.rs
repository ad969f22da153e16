//! The store's errors, each saying whether a retry can help.

use crate::events::StreamId;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the database could not be reached or the connection broke; retry later: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("the database refused the operation: {0}")]
    Database(#[source] sqlx::Error),
    #[error("applying migrations failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("invalid append: {0}")]
    InvalidAppend(String),
    #[error("another writer appended to {stream_id} outside the log lock; retry the command")]
    ConcurrentWriter { stream_id: String },
    /// A follower's commit found its checkpoint moved since it read it:
    /// another process runs the same follower (a leader hand-over overlapped).
    /// Nothing was written; the follower resumes from the checkpoint.
    #[error("checkpoint {name} moved past {expected} under another runner; resuming from it")]
    CheckpointMoved { name: String, expected: u64 },
    /// In a cluster, this process's leases ran out before it could renew
    /// them (it was stopped, or cut off from the database, past the lease
    /// time): another process may own its work now, so it writes nothing
    /// until its next heartbeat claims work again.
    #[error("this process's cluster leases lapsed (stopped or cut off past ORDER_ENGINE_LEASE_TTL); it writes nothing until it rejoins; retry")]
    Fenced,
    #[error("stored event at position {position} is unreadable: {reason}")]
    Corrupt { position: i64, reason: String },
    #[error("store configuration: {0}")]
    Config(String),
    #[error("append aborted by an injected fault: {0}")]
    Fault(#[from] super::FaultInjected),
    #[error("internal error in the store: {0}")]
    Internal(&'static str),
}

impl StoreError {
    /// Whether the same call may succeed if tried again unchanged.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Unavailable(_)
                | Self::ConcurrentWriter { .. }
                | Self::CheckpointMoved { .. }
                | Self::Fenced
                | Self::Fault(_)
        )
    }

    /// Classifies a sqlx error as transient (connection, pool, I/O) or permanent.
    pub(crate) fn from_sqlx(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_)
            | sqlx::Error::Tls(_) => Self::Unavailable(error),
            sqlx::Error::Database(db) => match db.code().as_deref() {
                // Connection failures, admin shutdown, serialization failures, deadlocks
                // and SQLite's busy/locked: another try may succeed.
                Some(code)
                    if code.starts_with("08")
                        || code.starts_with("57P")
                        || code == "40001"
                        || code == "40P01"
                        || code == "5"
                        || code == "6"
                        || code == "517" =>
                {
                    Self::Unavailable(error)
                }
                _ => Self::Database(error),
            },
            _ => Self::Database(error),
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        Self::from_sqlx(error)
    }
}

/// Checks an append batch against the store's limits before any I/O.
pub(crate) fn validate_batch(requests: &[super::AppendRequest]) -> Result<(), StoreError> {
    if requests.len() > super::BATCH_STREAMS_MAX {
        return Err(StoreError::InvalidAppend(format!(
            "{} streams in one batch; at most {} are allowed",
            requests.len(),
            super::BATCH_STREAMS_MAX
        )));
    }
    if requests.first().is_some_and(|r| r.linked) {
        return Err(StoreError::InvalidAppend(
            "the first request of a batch cannot be linked to one before it".into(),
        ));
    }
    let mut run: Vec<&StreamId> = Vec::new();
    for request in requests {
        check_events(&request.stream_id, request.events.len())?;
        if !request.linked {
            run.clear();
        }
        if run.contains(&&request.stream_id) {
            return Err(StoreError::InvalidAppend(format!(
                "{} appears twice in one linked run; put its events in one request",
                request.stream_id
            )));
        }
        run.push(&request.stream_id);
    }
    Ok(())
}

fn check_events(stream_id: &StreamId, count: usize) -> Result<(), StoreError> {
    if count == 0 {
        return Err(StoreError::InvalidAppend(format!("no events to append to {stream_id}")));
    }
    if count > super::APPEND_EVENTS_MAX {
        return Err(StoreError::InvalidAppend(format!(
            "{count} events for {stream_id}; at most {} are allowed in one append",
            super::APPEND_EVENTS_MAX
        )));
    }
    Ok(())
}
