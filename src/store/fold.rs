//! Folding a stream into an aggregate's state: the one way the shell
//! hydrates an order, a saga or an account, from scratch or from where a
//! cached state left off.

use crate::aggregate::Aggregate;
use crate::events::{decode, DecodeError, EventFamily, StreamId};

use super::{read_stream_all, EventStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum FoldError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("stream {stream} jumps from version {after} to {found}: events are missing")]
    Gap { stream: StreamId, after: u64, found: u64 },
}

/// Applies the events of `stream` after `version` to `state`, advancing both
/// as it goes: on an error they stay at the last event applied, consistent.
pub async fn fold_stream<A>(
    store: &dyn EventStore,
    stream: &StreamId,
    state: &mut A::State,
    version: &mut u64,
) -> Result<(), FoldError>
where
    A: Aggregate,
    A::Event: EventFamily,
{
    for recorded in read_stream_all(store, stream, *version + 1).await? {
        if recorded.stream_version != *version + 1 {
            return Err(FoldError::Gap {
                stream: stream.clone(),
                after: *version,
                found: recorded.stream_version,
            });
        }
        let event: A::Event = decode(&recorded)?;
        *state = A::evolve(std::mem::take(state), &event);
        *version = recorded.stream_version;
    }
    Ok(())
}
