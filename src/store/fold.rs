//! Folding a stream into an aggregate's state: the one way the shell
//! hydrates an order, a saga or an account, from scratch or from where a
//! cached state left off.

use crate::aggregate::{Aggregate, InvariantViolation};
use crate::events::{decode, DecodeError, EventFamily, StreamId};

use super::{EventStore, StoreError, READ_PAGE_MAX};

#[derive(Debug, thiserror::Error)]
pub enum FoldError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("stream {stream} jumps from version {after} to {found}: events are missing")]
    Gap { stream: StreamId, after: u64, found: u64 },
    /// The event at `version` breaks an invariant of the aggregate: the
    /// stream is corrupt (or the core has a bug) and cannot be folded past it.
    #[error("stream {stream} at version {version} (position {position}): {violation}")]
    Invariant {
        stream: StreamId,
        version: u64,
        position: u64,
        violation: InvariantViolation,
    },
}

/// Applies the events of `stream` after `version` to `state`, advancing both
/// as it goes: on a read or decode error they stay at the last event applied,
/// consistent. On a broken invariant they are reset to the empty stream
/// (version 0): the state the event was applied to is gone, and a caller
/// that folds again meets the same event and stops again, so nothing is ever
/// decided on top of a state the log cannot justify (an append at version 0
/// conflicts with the stream, so nothing is written either).
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
    fold_stream_until::<A>(store, stream, state, version, u64::MAX).await
}

/// [`fold_stream`] that stops after version `until`: the state as it was
/// right after an earlier append (to answer a repeated request as it was
/// answered then).
pub async fn fold_stream_until<A>(
    store: &dyn EventStore,
    stream: &StreamId,
    state: &mut A::State,
    version: &mut u64,
    until: u64,
) -> Result<(), FoldError>
where
    A: Aggregate,
    A::Event: EventFamily,
{
    while *version < until {
        let page = store.read_stream(stream, *version + 1, READ_PAGE_MAX).await?;
        let last_page = page.len() < READ_PAGE_MAX;
        for recorded in page.iter().take_while(|r| r.stream_version <= until) {
            if recorded.stream_version != *version + 1 {
                return Err(FoldError::Gap {
                    stream: stream.clone(),
                    after: *version,
                    found: recorded.stream_version,
                });
            }
            let event: A::Event = decode(recorded)?;
            match A::try_evolve(std::mem::take(state), &event) {
                Ok(next) => *state = next,
                Err(violation) => {
                    *version = 0;
                    return Err(FoldError::Invariant {
                        stream: stream.clone(),
                        version: recorded.stream_version,
                        position: recorded.global_position,
                        violation,
                    });
                }
            }
            *version = recorded.stream_version;
        }
        if last_page {
            break;
        }
    }
    Ok(())
}
