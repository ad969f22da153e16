//! Load, decide, append, evolve: one command against one order stream, with
//! a bounded reload-and-retry when another writer got there first.

use std::sync::Arc;

use uuid::Uuid;

use super::error::ActorError;
use super::order_actor::ExecuteCommand;
use crate::aggregate::Aggregate;
use crate::events::{encode, StreamId};
use crate::order::{OrderAggregate, OrderEvent, OrderState};
use crate::store::{append_atomic, fold_stream, AppendRequest, Appended, EventStore, FoldError, StoreError};

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
    /// Where the co-written streams landed, in the order the co-write gave them.
    pub co_written: Vec<Appended>,
    /// The events this call wrote, with their ids; empty when it wrote none.
    pub written: Vec<(Uuid, OrderEvent)>,
}

/// Runs one command to completion. The caller guarantees no other command for
/// this order runs in this process meanwhile (the actor's atomic handler).
///
/// The actor does not read its stream before deciding: the append's expected
/// version finds out whether another writer moved it (a conflict reloads and
/// decides again), and a refusal decided on state that might be behind is
/// decided again after reloading, so no command pays a read it does not need.
pub(crate) async fn run_command(
    store: &Arc<dyn EventStore>,
    core: &mut OrderCore,
    order_id: Uuid,
    message: &ExecuteCommand,
    conflict_retries_max: u32,
) -> Result<Handled, ActorError> {
    let stream = StreamId::order(order_id);
    let command_id = message.command_id;
    let mut attempts = 0;
    let mut reloaded = false;
    loop {
        attempts += 1;
        let events = match OrderAggregate::decide(&core.state, &message.command) {
            Ok(events) => events,
            Err(rejection) if !reloaded => {
                // Maybe decided on a stale or unloaded order: read it, then decide again.
                tracing::trace!(%order_id, %rejection, "refused before reloading; reloading");
                let before = core.version;
                core.catch_up(store.as_ref(), &stream, order_id).await?;
                reloaded = true;
                if core.version == before {
                    return Err(rejection.into());
                }
                continue;
            }
            Err(rejection) => return Err(rejection.into()),
        };
        let event_ids: Vec<Uuid> = (0..events.len())
            // Event ids from the command id: a retried command carries the same events.
            .map(|i| Uuid::new_v5(&command_id, &i.to_le_bytes()))
            .collect();
        let new_events = events
            .iter()
            .zip(&event_ids)
            .map(|(event, event_id)| encode(event, *event_id, message.metadata.clone()))
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
            linked: false,
        };
        let mut requests = vec![request];
        if let Some(co_write) = &message.co_write {
            let decided = Decided {
                order_id,
                events: &events,
                event_ids: &event_ids,
            };
            requests.extend((co_write.0)(&decided).map_err(|reason| ActorError::CoWriteRefused { order_id, reason })?);
        }
        match append_atomic(store.as_ref(), requests).await? {
            Ok(mut appended) => {
                let co_written = appended.split_off(1);
                let Some(own) = appended.pop() else {
                    return Err(ActorError::Store(StoreError::Internal(
                        "an atomic append lost its first result",
                    )));
                };
                let mut written = Vec::new();
                if own.deduplicated {
                    // Applied before (a retry after an unknown outcome): catch up and answer.
                    core.catch_up(store.as_ref(), &stream, order_id).await?;
                } else {
                    core.state = OrderAggregate::fold(std::mem::take(&mut core.state), &events);
                    core.version = own.last_version;
                    written = event_ids.into_iter().zip(events).collect();
                }
                return Ok(Handled {
                    appended: Some(own),
                    co_written,
                    written,
                });
            }
            Err(conflict) if conflict.stream_id != stream => {
                // Another stream of the commit moved: its owner reloads, not the order.
                return Err(ActorError::CoWriteConflict { order_id, conflict });
            }
            Err(conflict) => {
                // Another process appended: reload and decide again on fresh state.
                if attempts > conflict_retries_max {
                    return Err(ActorError::Contended { order_id, attempts });
                }
                tracing::debug!(%order_id, expected = conflict.expected, actual = conflict.actual, "order stream moved; reloading");
                core.catch_up(store.as_ref(), &stream, order_id).await?;
                reloaded = true;
            }
        }
    }
}

/// What a co-write sees: the events the command decided, with their ids.
pub struct Decided<'a> {
    pub order_id: Uuid,
    pub events: &'a [OrderEvent],
    pub event_ids: &'a [Uuid],
}

/// Other streams written in the same commit as an order's events, computed
/// from the events the command decided (a saga's record of them, a ledger
/// entry). Called again after every reload, so it must be pure. The order's
/// events and these commit together or not at all.
#[derive(Clone)]
#[allow(clippy::type_complexity)]
pub struct CoWrite(pub Arc<dyn Fn(&Decided<'_>) -> Result<Vec<AppendRequest>, String> + Send + Sync>);

impl std::fmt::Debug for CoWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CoWrite")
    }
}
