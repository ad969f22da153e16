//! The event log: one append-only table behind the [`EventStore`] trait, with a
//! PostgreSQL backend for production, a SQLite backend for the embedded default,
//! and an in-memory backend for simulation and tests.
//!
//! Never updates or deletes an event; the database refuses it too (triggers).

pub mod chain;
mod error;
mod execute;
mod fault;
mod fold;
mod group_commit;
mod head;
mod memory;
pub(crate) mod plan;
mod postgres;
mod rows;
mod sqlite;
mod types;
mod wrapper;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

pub use chain::{ChainSummary, ChainVerifier, ChainViolation, ChainedEvent, EventHash};
pub use error::StoreError;
pub use execute::{event_id, execute, Around, ExecuteError, Executed, Freshness, Hydrated, Plain, Policy};
pub use fault::{BeforeCommitHook, FaultInjected};
pub use fold::{fold_stream, fold_stream_until, FoldError};
pub use group_commit::{GroupCommitStore, GROUP_COMMIT_QUEUE_MAX};
pub use memory::{AppendFault, FaultPlan, MemoryStore};
pub use postgres::{PostgresConfig, PostgresStore};
pub use sqlite::{SqliteConfig, SqliteStore};
pub use types::{AppendRequest, Appended, Conflict, APPEND_EVENTS_MAX, BATCH_STREAMS_MAX, READ_PAGE_MAX};

use crate::events::{RecordedEvent, StreamId};

/// An append-only, totally ordered log of events grouped in streams.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends to several streams in one transaction. Each request is checked
    /// against its own expected version: a stale one yields a [`Conflict`] for
    /// that stream alone and writes nothing for it; the others commit. A request
    /// whose command id this stream already applied returns the original
    /// [`Appended`] (with `deduplicated` set) and writes nothing.
    async fn append_batch(&self, requests: Vec<AppendRequest>) -> Result<Vec<Result<Appended, Conflict>>, StoreError>;

    /// Events of one stream with version ≥ `from_version`, at most `max_count`.
    async fn read_stream(
        &self,
        stream_id: &StreamId,
        from_version: u64,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Events of the whole log with position > `after_position`, in position
    /// order, at most `max_count`. Never skips: every event with a position
    /// below the last one returned is committed and was returned (or was
    /// before `after_position`).
    async fn read_all(&self, after_position: u64, max_count: usize) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Like [`EventStore::read_all`], with the hashes stored beside each event.
    async fn read_chained(&self, after_position: u64, max_count: usize) -> Result<Vec<ChainedEvent>, StoreError>;

    /// Writes events exactly as given (ids, versions, positions, times, hashes),
    /// to move a log between stores. The first must sit at the head + 1, the
    /// rest follow densely, each stream's versions continue, and a command's
    /// events arrive in one call; otherwise nothing is written.
    async fn import_chained(&self, events: Vec<ChainedEvent>) -> Result<(), StoreError>;

    /// The current version of a stream; 0 when it has no events.
    async fn stream_version(&self, stream_id: &StreamId) -> Result<u64, StoreError>;

    /// Where the append named `command_id` landed on `stream_id`, if one did:
    /// the record a retry of it is deduplicated against, kept for good. For a
    /// shell that answers a repeated request from the log rather than from
    /// memory (the embedded ledger's older idempotency keys).
    async fn command_record(&self, stream_id: &StreamId, command_id: Uuid) -> Result<Option<Appended>, StoreError>;

    /// The position of the last committed event; 0 for an empty log.
    async fn head_position(&self) -> Result<u64, StoreError>;

    /// Waits until an append past `after_position` may have committed, or
    /// `timeout` passes. Appends by other processes may go unnoticed until the
    /// timeout (SQLite), so callers treat the timeout as "poll now".
    async fn wait_for_append(&self, after_position: u64, timeout: Duration);

    /// Where the reader `name` has got to; 0 when it never saved one.
    async fn load_checkpoint(&self, name: &str) -> Result<u64, StoreError>;

    /// Records that the reader `name` has handled everything up to `position`.
    async fn save_checkpoint(&self, name: &str, position: u64) -> Result<(), StoreError>;

    /// Which backend this is, for logs and health output.
    fn backend(&self) -> &'static str;
}

/// Convenience over [`EventStore::append_batch`] for one stream.
pub async fn append(store: &dyn EventStore, request: AppendRequest) -> Result<Result<Appended, Conflict>, StoreError> {
    let mut results = store.append_batch(vec![request]).await?;
    results
        .pop()
        .ok_or(StoreError::Internal("append_batch returned no result for one request"))
}

/// Appends to several streams all or nothing: one transaction, each stream
/// checked against its own expected version, and a conflict on any of them
/// writes none. The first conflict is returned; a request whose command was
/// applied before comes back `deduplicated` and writes nothing.
pub async fn append_atomic(
    store: &dyn EventStore,
    mut requests: Vec<AppendRequest>,
) -> Result<Result<Vec<Appended>, Conflict>, StoreError> {
    for (index, request) in requests.iter_mut().enumerate() {
        request.linked = index > 0;
    }
    let count = requests.len();
    let results = store.append_batch(requests).await?;
    if results.len() != count {
        return Err(StoreError::Internal(
            "append_batch returned the wrong number of results",
        ));
    }
    Ok(results.into_iter().collect())
}

/// Reads a whole stream from `from_version`, page by page.
pub async fn read_stream_all(
    store: &dyn EventStore,
    stream_id: &StreamId,
    from_version: u64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let mut events = Vec::new();
    let mut next = from_version.max(1);
    loop {
        let page = store.read_stream(stream_id, next, READ_PAGE_MAX).await?;
        let len = page.len();
        if let Some(last) = page.last() {
            next = last.stream_version + 1;
        }
        events.extend(page);
        if len < READ_PAGE_MAX {
            return Ok(events);
        }
    }
}

/// Where the log lives, parsed from a database URL.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    Postgres(PostgresConfig),
    Sqlite(SqliteConfig),
}

impl StoreConfig {
    /// `postgres://…` or `postgresql://…` selects PostgreSQL, `sqlite:…` SQLite.
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres(PostgresConfig::new(url)))
        } else if url.starts_with("sqlite:") {
            Ok(Self::Sqlite(SqliteConfig::new(url)))
        } else {
            Err(StoreError::Config(format!(
                "database URL must start with postgres://, postgresql:// or sqlite:, got {:?}",
                redact_url(url)
            )))
        }
    }

    /// Opens the store and applies its migrations.
    pub async fn open(&self) -> Result<Arc<dyn EventStore>, StoreError> {
        Ok(match self {
            Self::Postgres(config) => Arc::new(PostgresStore::open(config.clone()).await?),
            Self::Sqlite(config) => Arc::new(SqliteStore::open(config.clone()).await?),
        })
    }
}

/// A URL with its password replaced, safe to log.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}://{user}:***{}", &url[..scheme_end], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted_before_logging() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite:data/x.db"), "sqlite:data/x.db");
    }

    #[test]
    fn unknown_url_schemes_are_refused_with_the_accepted_ones_named() {
        let err = StoreConfig::from_url("mysql://x")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("postgres://"), "{err}");
    }
}
