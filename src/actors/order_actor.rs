//! The actix actor that owns one order while it is live.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use uuid::Uuid;

use super::command_loop::{catch_up, run_command, CoWrite, OrderCore};
use super::error::ActorError;
use super::registry::{ActorConfig, RegistryLink};
use crate::events::{EventMetadata, StreamId, TraceContext};
use crate::order::{Order, OrderCommand};
use crate::store::{Appended, EventStore};
use crate::telemetry::traces;
use tracing::Instrument;

/// Handle one command for this order.
#[derive(Debug, Clone)]
pub struct ExecuteCommand {
    pub command: OrderCommand,
    /// Idempotency: the same id is applied once, whatever the retries.
    pub command_id: Uuid,
    pub metadata: EventMetadata,
    /// Streams that commit together with this command's events, or not at all.
    pub co_write: Option<CoWrite>,
}

impl ExecuteCommand {
    pub fn new(command: OrderCommand, command_id: Uuid, metadata: EventMetadata) -> Self {
        Self {
            command,
            command_id,
            metadata,
            co_write: None,
        }
    }
}

impl Message for ExecuteCommand {
    type Result = Result<CommandReply, ActorError>;
}

/// The order after the command, and where its events landed.
#[derive(Debug, Clone)]
pub struct CommandReply {
    pub order: Option<Order>,
    pub appended: Option<Appended>,
    /// Where the co-written streams landed, in the order the co-write gave them.
    pub co_written: Vec<Appended>,
    /// The events this command wrote, with their ids; empty when it wrote none
    /// (a repeat of a command applied before).
    pub written: Vec<(Uuid, crate::order::OrderEvent)>,
    /// The trace context the events were written with: with traces
    /// exported, the append's span, which what reacts to them continues.
    pub trace: Option<TraceContext>,
}

/// Read the order's current state (after catching up with the stream).
#[derive(Debug, Clone, Copy)]
pub struct GetOrder;

impl Message for GetOrder {
    type Result = Result<Option<Order>, ActorError>;
}

/// Stop after the messages already queued.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Passivate;

impl Message for Passivate {
    type Result = ();
}

pub struct OrderActor {
    order_id: Uuid,
    /// Taken out while a command runs (the handler is atomic, so nothing else sees it).
    core: OrderCore,
    store: Arc<dyn EventStore>,
    config: ActorConfig,
    last_used: Instant,
    link: RegistryLink,
}

impl OrderActor {
    pub(crate) fn new(order_id: Uuid, store: Arc<dyn EventStore>, config: ActorConfig, link: RegistryLink) -> Self {
        Self {
            order_id,
            core: OrderCore::default(),
            store,
            config,
            last_used: Instant::now(),
            link,
        }
    }
}

impl Actor for OrderActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.config.mailbox_capacity);
        let idle_after = self.config.passivate_after;
        ctx.run_interval(self.config.passivation_check_interval(), move |actor, ctx| {
            if actor.last_used.elapsed() >= idle_after {
                ctx.stop();
            }
        });
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.link.deregister(self.order_id);
    }
}

impl Handler<ExecuteCommand> for OrderActor {
    type Result = AtomicResponse<Self, Result<CommandReply, ActorError>>;

    fn handle(&mut self, message: ExecuteCommand, _ctx: &mut Self::Context) -> Self::Result {
        self.last_used = Instant::now();
        let mut core = std::mem::take(&mut self.core);
        let store = Arc::clone(&self.store);
        let order_id = self.order_id;
        let retries = self.config.conflict_retries_max;
        // Exported, the command continues the trace its sender carried in the metadata.
        let span = traces::span(|| tracing::info_span!("order.command", %order_id, command = message.command.name()));
        traces::continue_trace(&span, message.metadata.trace.as_ref());
        let work = async move {
            let result = run_command(&store, &mut core, order_id, &message, retries)
                .await
                .map(|handled| CommandReply {
                    order: core.state.order().cloned(),
                    appended: handled.appended,
                    co_written: handled.co_written,
                    written: handled.written,
                    trace: handled.trace,
                });
            (core, result)
        }
        .instrument(span);
        AtomicResponse::new(Box::pin(work.into_actor(self).map(|(core, result), actor, _ctx| {
            actor.core = core;
            actor.last_used = Instant::now();
            result
        })))
    }
}

impl Handler<GetOrder> for OrderActor {
    type Result = AtomicResponse<Self, Result<Option<Order>, ActorError>>;

    fn handle(&mut self, _message: GetOrder, _ctx: &mut Self::Context) -> Self::Result {
        self.last_used = Instant::now();
        let mut core = std::mem::take(&mut self.core);
        let store = Arc::clone(&self.store);
        let order_id = self.order_id;
        let work = async move {
            let result = catch_up(&mut core, store.as_ref(), &StreamId::order(order_id), order_id)
                .await
                .map(|()| core.state.order().cloned());
            (core, result)
        };
        AtomicResponse::new(Box::pin(work.into_actor(self).map(|(core, result), actor, _ctx| {
            actor.core = core;
            result
        })))
    }
}

impl Handler<Passivate> for OrderActor {
    type Result = ();

    fn handle(&mut self, _message: Passivate, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
