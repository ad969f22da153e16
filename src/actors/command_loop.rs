//! One command against one order stream, through the store's `execute`:
//! decide on the order as the actor holds it, append with the expected
//! version (and the command's co-writes, all or nothing), and on a lost race
//! reload and decide again, a bounded number of times.

use std::sync::Arc;

use tracing::Instrument;
use uuid::Uuid;

use super::error::ActorError;
use super::order_actor::ExecuteCommand;
use crate::events::{StreamId, TraceContext};
use crate::order::{OrderAggregate, OrderEvent};
use crate::store::{
    execute, AppendRequest, Appended, EventStore, ExecuteError, Executed, FoldError, Freshness, Hydrated, Policy,
};
use crate::telemetry::traces;

/// The order as the actor holds it between commands.
pub(crate) type OrderCore = Hydrated<OrderAggregate>;

/// Folds whatever the stream holds past the order's version (a new actor, or
/// a writer elsewhere).
pub(crate) async fn catch_up(
    core: &mut OrderCore,
    store: &dyn EventStore,
    stream: &StreamId,
    order_id: Uuid,
) -> Result<(), ActorError> {
    core.catch_up(store, stream)
        .await
        .map_err(|error| fold_error(order_id, error))
}

fn fold_error(order_id: Uuid, error: FoldError) -> ActorError {
    match error {
        FoldError::Store(error) => ActorError::Store(error),
        other => ActorError::Unreadable {
            order_id,
            reason: other.to_string(),
        },
    }
}

pub(crate) struct Handled {
    pub appended: Option<Appended>,
    /// Where the co-written streams landed, in the order the co-write gave them.
    pub co_written: Vec<Appended>,
    /// The events this call wrote, with their ids; empty when it wrote none.
    pub written: Vec<(Uuid, OrderEvent)>,
    /// The trace context the events carry (see `CommandReply::trace`).
    pub trace: Option<TraceContext>,
}

/// The command's co-write, asked for its streams after each decision.
struct CoWriting<'a> {
    order_id: Uuid,
    co_write: Option<&'a CoWrite>,
}

impl crate::store::Around<OrderAggregate> for CoWriting<'_> {
    type Halt = std::convert::Infallible;

    fn co_write(&mut self, events: &[OrderEvent], event_ids: &[Uuid]) -> Result<Vec<AppendRequest>, String> {
        match self.co_write {
            Some(co_write) => (co_write.0)(&Decided {
                order_id: self.order_id,
                events,
                event_ids,
            }),
            None => Ok(Vec::new()),
        }
    }
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
    let policy = Policy {
        freshness: Freshness::Held {
            reload_on_refusal: true,
        },
        conflict_retries_max,
    };
    let mut around = CoWriting {
        order_id,
        co_write: message.co_write.as_ref(),
    };
    // Exported, the events carry the append's span: the saga and the
    // publishers, which meet them on the log, continue the trace from there.
    // Off, the metadata goes as it came, uncopied.
    let span = traces::span(|| tracing::info_span!("order.append", %order_id, stream = %stream));
    let traced;
    let metadata = if traces::enabled() {
        let mut copy = message.metadata.clone();
        copy.trace = span.in_scope(|| traces::current(copy.trace.take()));
        traced = copy;
        &traced
    } else {
        &message.metadata
    };
    let executed = execute(
        store.as_ref(),
        &stream,
        core,
        &message.command,
        message.command_id,
        metadata,
        policy,
        &mut around,
    )
    .instrument(span)
    .await;
    let trace = traces::kept(metadata.trace.as_ref());
    match executed {
        Ok(Executed::Unchanged) => Ok(Handled {
            appended: None,
            co_written: Vec::new(),
            written: Vec::new(),
            trace,
        }),
        Ok(Executed::Written {
            appended,
            co_written,
            events,
        }) => Ok(Handled {
            appended: Some(appended),
            co_written,
            written: events,
            trace,
        }),
        // Applied before (a retry after an unknown outcome): caught up, answered.
        Ok(Executed::Repeated { appended, co_written }) => Ok(Handled {
            appended: Some(appended),
            co_written,
            written: Vec::new(),
            trace,
        }),
        Err(ExecuteError::Rejected(rejection)) => Err(rejection.into()),
        Err(ExecuteError::Fold(error)) => Err(fold_error(order_id, error)),
        Err(ExecuteError::Store(error)) => Err(ActorError::Store(error)),
        Err(ExecuteError::Encode(reason)) => Err(ActorError::Unreadable { order_id, reason }),
        Err(ExecuteError::Contended { attempts, .. }) => Err(ActorError::Contended { order_id, attempts }),
        Err(ExecuteError::CoWriteConflict(conflict)) => Err(ActorError::CoWriteConflict { order_id, conflict }),
        Err(ExecuteError::CoWriteRefused(reason)) => Err(ActorError::CoWriteRefused { order_id, reason }),
        Err(ExecuteError::Halted(never)) => match never {},
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
