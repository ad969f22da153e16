//! What goes into an append and what comes out.

use uuid::Uuid;

use crate::events::{NewEvent, StreamId};

/// Most events one append may carry to one stream.
pub const APPEND_EVENTS_MAX: usize = 1_000;
/// Most streams one batch may carry.
pub const BATCH_STREAMS_MAX: usize = 1_000;
/// Most events one read returns.
pub const READ_PAGE_MAX: usize = 1_000;

/// Events to append to one stream.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    pub stream_id: StreamId,
    /// The version the caller decided on; 0 for a new stream.
    pub expected_version: u64,
    /// The command these events answer. A second append with the same id to
    /// the same stream returns the first one's result instead of writing again.
    pub command_id: Option<Uuid>,
    pub events: Vec<NewEvent>,
    /// Commits only together with the request before it in the same batch
    /// (and so with its whole linked run): if any request of a run conflicts,
    /// none of the run is written. A saga step, its ledger entry and the order
    /// command they cause are one such run (see [`super::append_atomic`]).
    /// The first request of a batch is never linked.
    pub linked: bool,
}

/// Where an append landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub stream_id: StreamId,
    pub first_version: u64,
    pub last_version: u64,
    pub first_position: u64,
    pub last_position: u64,
    /// True when the command id had been applied before and nothing was written now.
    pub deduplicated: bool,
}

/// The stream moved on since the caller read it: reload and decide again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stream {stream_id} is at version {actual}, not the expected {expected}; reload it and retry")]
pub struct Conflict {
    pub stream_id: StreamId,
    pub expected: u64,
    pub actual: u64,
}
