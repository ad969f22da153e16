//! Load, decide, append, evolve: one command against one order stream, with
//! a bounded reload-and-retry when another writer got there first.

use std::sync::Arc;

use uuid::Uuid;

use super::error::ActorError;
use crate::aggregate::Aggregate;
use crate::events::{encode, EventMetadata, StreamId};
use crate::order::{OrderAggregate, OrderCommand, OrderState};
use crate::store::{append, fold_stream, AppendRequest, Appended, EventStore, FoldError};

/// The order as the actor holds it between commands.
#[derive(Debug, Clone, Default)]
pub(crate) struct OrderCore {
    pub state: OrderState,
    /// The stream version `state` was folded up to.
    pub version: u64,
}

impl OrderCore {
    /// Folds whatever the stream holds past `version` (a new actor, or a writer elsewhere).
    pub(crate) async fn catch_up(
        &mut self,
        store: &dyn EventStore,
        stream: &StreamId,
        order_id: Uuid,
    ) -> Result<(), ActorError> {
        fold_stream::<OrderAggregate>(store, stream, &mut self.state, &mut self.version)
            .await
            .map_err(|error| match error {
                FoldError::Store(error) => ActorError::Store(error),
                other => ActorError::Unreadable {
                    order_id,
                    reason: other.to_string(),
                },
            })
    }
}

pub(crate) struct Handled {
    pub appended: Option<Appended>,
}

/// Runs one command to completion. The caller guarantees no other command for
/// this order runs in this process meanwhile (the actor's atomic handler).
pub(crate) async fn run_command(
    store: &Arc<dyn EventStore>,
    core: &mut OrderCore,
    order_id: Uuid,
    command: &OrderCommand,
    command_id: Uuid,
    metadata: &EventMetadata,
    conflict_retries_max: u32,
) -> Result<Handled, ActorError> {
    let stream = StreamId::order(order_id);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let events = match OrderAggregate::decide(&core.state, command) {
            Ok(events) => events,
            Err(rejection) => return Err(rejection.into()),
        };
        let new_events = events
            .iter()
            .enumerate()
            .map(|(i, event)| {
                // Event ids from the command id: a retried command carries the same events.
                let event_id = Uuid::new_v5(&command_id, &i.to_le_bytes());
                encode(event, event_id, metadata.clone())
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ActorError::Unreadable {
                order_id,
                reason: e.to_string(),
            })?;
        let request = AppendRequest {
            stream_id: stream.clone(),
            expected_version: core.version,
            command_id: Some(command_id),
            events: new_events,
        };
        match append(store.as_ref(), request).await? {
            Ok(appended) if appended.deduplicated => {
                // Applied before (a retry after an unknown outcome): catch up and answer.
                core.catch_up(store.as_ref(), &stream, order_id).await?;
                return Ok(Handled {
                    appended: Some(appended),
                });
            }
            Ok(appended) => {
                core.state = OrderAggregate::fold(std::mem::take(&mut core.state), &events);
                core.version = appended.last_version;
                return Ok(Handled {
                    appended: Some(appended),
                });
            }
            Err(conflict) => {
                // Another process appended: reload and decide again on fresh state.
                if attempts > conflict_retries_max {
                    return Err(ActorError::Contended { order_id, attempts });
                }
                tracing::debug!(%order_id, expected = conflict.expected, actual = conflict.actual, "order stream moved; reloading");
                core.catch_up(store.as_ref(), &stream, order_id).await?;
            }
        }
    }
}
