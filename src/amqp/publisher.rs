//! Publishers: readers of the log that turn order events into messages
//! (`positions.updates`, `orders.events`, `orders.status`), each from its own
//! checkpoint, with publisher confirms.
//!
//! Must never publish an event that is not durable (they read the log, the
//! outbox), never advance a checkpoint past a message the broker has not
//! confirmed, and never skip an event: a poison event stops this publisher,
//! loudly, and no other.

use std::collections::HashMap;
use std::sync::Arc;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;
use tokio::sync::watch;
use tracing::Instrument;
use uuid::Uuid;

use super::config::AmqpConfig;
use super::consumer::PERSISTENT;
use super::topology::{self, EVENTS, EXCHANGE, HEADER_TRACEPARENT, HEADER_TRACESTATE, POSITIONS, STATUS};
use super::wire::{
    EventMessage, ExecutionFacts, OrderDetails, PositionUpdate, StatusMessage, EVENT_PRIORITY,
    POSITION_UPDATE_PRIORITY, STATUS_PRIORITY,
};
use super::{AmqpError, TaskHealth};
use crate::events::{decode, RecordedEvent, TraceContext};
use crate::order::{OrderEvent, OrderStatus};
use crate::projections::{FeedEvent, LogFeed};
use crate::store::StoreError;
use crate::telemetry::traces;

/// Which messages a publisher derives from the log; one checkpoint each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `OrderExecuted` → seed 3.2.3 on `positions.updates`.
    Positions,
    /// `OrderFailed` and `OrderCancelled` → seed 3.3 EventMessage on
    /// `orders.events` (the events §3.3 lists there; refusals, never in the
    /// log, are published by the consumer as `OrderRejected`).
    Events,
    /// Every status change → `StatusMessage` on `orders.status`.
    Status,
}

impl Route {
    pub const ALL: [Route; 3] = [Route::Positions, Route::Events, Route::Status];

    /// The checkpoint name, stable across releases (renaming it republishes everything).
    pub fn checkpoint(self) -> &'static str {
        match self {
            Route::Positions => "amqp.positions.updates",
            Route::Events => "amqp.orders.events",
            Route::Status => "amqp.orders.status",
        }
    }

    fn routing_key(self) -> &'static str {
        match self {
            Route::Positions => POSITIONS,
            Route::Events => EVENTS,
            Route::Status => STATUS,
        }
    }

    fn needs_details(self) -> bool {
        matches!(self, Route::Positions | Route::Events)
    }

    /// Whether `event` yields a message on this route: the others cost no
    /// read, no encoding and no publish.
    pub fn publishes(self, event: &OrderEvent) -> bool {
        match self {
            Route::Positions => matches!(event, OrderEvent::OrderExecuted(_)),
            Route::Events => matches!(event, OrderEvent::OrderFailed(_) | OrderEvent::OrderCancelled(_)),
            // A trigger changes how the order works, not its status.
            Route::Status => !matches!(event, OrderEvent::OrderTriggered(_)),
        }
    }
}

/// One message to publish, derived from one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Outbound {
    pub routing_key: &'static str,
    pub body: Vec<u8>,
    /// The event id: consumers deduplicate by it.
    pub message_id: Uuid,
    /// The order id.
    pub correlation_id: Uuid,
    pub kind: String,
    pub priority: u8,
    pub timestamp: u64,
    pub traceparent: Option<(String, Option<String>)>,
}

/// Submission details by order, so most executions are formatted without a read.
struct DetailsCache {
    orders: HashMap<Uuid, OrderDetails>,
    max: usize,
}

impl DetailsCache {
    fn insert(&mut self, order_id: Uuid, details: OrderDetails) {
        if self.orders.len() >= self.max {
            // Cheaper than LRU bookkeeping; a miss costs one short stream read.
            self.orders.clear();
        }
        self.orders.insert(order_id, details);
    }
}

pub(crate) struct Publisher {
    pub(crate) route: Route,
    pub(crate) config: Arc<AmqpConfig>,
    /// The log's one reader in this process; its store holds the checkpoints.
    pub(crate) feed: LogFeed,
    pub(crate) health: Arc<TaskHealth>,
}

impl Publisher {
    /// Publishes until shutdown, reconnecting with backoff and resuming from
    /// the checkpoint; stops for good on a poison event.
    pub(crate) async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut cache = DetailsCache {
            orders: HashMap::new(),
            max: self.config.order_cache_max.max(1),
        };
        let mut attempt = 0u32;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let result = self.session(&mut shutdown, &mut attempt, &mut cache).await;
            self.health.set_connected(false);
            match result {
                Ok(()) => return,
                Err(AmqpError::Poison { position, reason }) => {
                    tracing::error!(
                        publisher = self.route.checkpoint(),
                        position,
                        %reason,
                        "poison event: this publisher stops here until an operator repairs the log or the code"
                    );
                    self.health
                        .stop(format!("poison event at position {position}: {reason}"));
                    return;
                }
                Err(error) => {
                    let delay = self.config.reconnect_delay(attempt);
                    tracing::warn!(publisher = self.route.checkpoint(), %error, retry_in_ms = delay.as_millis() as u64, "publisher interrupted; resuming from its checkpoint");
                    attempt = attempt.saturating_add(1);
                    tokio::select! {
                        _ = shutdown.changed() => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    async fn session(
        &self,
        shutdown: &mut watch::Receiver<bool>,
        attempt: &mut u32,
        cache: &mut DetailsCache,
    ) -> Result<(), AmqpError> {
        let connection = topology::connect(&self.config, &format!("publisher {}", self.route.checkpoint())).await?;
        let channel = connection.create_channel().await?;
        topology::declare(&channel, &self.config).await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        // Everything after the checkpoint is republished: what was sent but
        // not confirmed before a break goes again, with the same message id.
        let from = self.feed.store().load_checkpoint(self.route.checkpoint()).await?;
        let mut tail = self.feed.follow(from);
        // Wakes an idle publisher, so it reconnects before the next event rather than at it.
        let loss = super::watch_loss(&connection, Arc::clone(&self.health));
        self.health.set_connected(true);
        *attempt = 0;
        tracing::info!(publisher = self.route.checkpoint(), from, "publisher started");
        let exchange = self.config.name(EXCHANGE);
        let batch_size = self.config.publisher_batch_size.max(1);
        loop {
            let page = tokio::select! {
                _ = shutdown.changed() => {
                    let _ = connection.close(200, "order-engine shutting down").await;
                    return Ok(());
                }
                () = loss.lost.notified() => return Err(AmqpError::ConnectionLost),
                page = tail.next_batch() => page?,
            };
            for chunk in page.chunks(batch_size) {
                let mut confirms = Vec::new();
                for event in chunk {
                    for mut message in self.messages(event, cache).await? {
                        let span = publish_span(&mut message);
                        let confirm = channel
                            .basic_publish(
                                &exchange,
                                message.routing_key,
                                BasicPublishOptions::default(),
                                &message.body,
                                properties(&message),
                            )
                            .instrument(span.clone())
                            .await?;
                        // The span ends once the broker confirmed the message.
                        confirms.push((confirm, span));
                    }
                }
                let sent = confirms.len() as u64;
                for (confirm, _span) in confirms {
                    let confirmation = tokio::time::timeout(self.config.confirm_timeout, confirm)
                        .await
                        .map_err(|_| AmqpError::ConfirmTimeout)??;
                    if !confirmation.is_ack() {
                        return Err(AmqpError::Nacked);
                    }
                }
                if let Some(last) = chunk.last() {
                    // Saved only now: every message up to `last` is confirmed.
                    self.feed
                        .store()
                        .save_checkpoint(self.route.checkpoint(), last.recorded.global_position)
                        .await?;
                }
                self.health.add_processed(sent);
            }
        }
    }

    /// The messages of one event for this route; none for other streams.
    async fn messages(&self, fed: &FeedEvent, cache: &mut DetailsCache) -> Result<Vec<Outbound>, AmqpError> {
        let Some(order_event) = fed.order_event() else {
            return Ok(Vec::new());
        };
        let event = &fed.recorded;
        let poison = |reason: String| AmqpError::Poison {
            position: event.global_position,
            reason,
        };
        let order_id = event
            .stream_id
            .uuid_in("order")
            .ok_or_else(|| poison(format!("stream {} is not order-<uuid>", event.stream_id)))?;
        let order_event = order_event.map_err(|e| poison(e.to_string()))?;
        if let OrderEvent::OrderSubmitted(submitted) = order_event {
            if self.route.needs_details() {
                cache.insert(order_id, OrderDetails::from(submitted));
            }
        }
        let messages = if self.route.publishes(order_event) {
            let details = if self.route.needs_details() {
                Some(self.details(order_id, event, cache).await?)
            } else {
                None
            };
            derive(self.route, event, order_id, order_event, details.as_ref())
                .map_err(|e| poison(format!("cannot encode its message: {e}")))?
        } else {
            Vec::new()
        };
        if matches!(
            order_event,
            OrderEvent::OrderExecuted(_) | OrderEvent::OrderCancelled(_) | OrderEvent::OrderFailed(_)
        ) {
            cache.orders.remove(&order_id);
        }
        Ok(messages)
    }

    /// The order's submission details: cached, or read from its first event.
    async fn details(
        &self,
        order_id: Uuid,
        event: &RecordedEvent,
        cache: &mut DetailsCache,
    ) -> Result<OrderDetails, AmqpError> {
        if let Some(details) = cache.orders.get(&order_id) {
            return Ok(details.clone());
        }
        let first = self.feed.store().read_stream(&event.stream_id, 1, 1).await?;
        let poison = |reason: String| AmqpError::Poison {
            position: event.global_position,
            reason,
        };
        let first = first
            .first()
            .ok_or_else(|| poison(format!("order {order_id} has no first event")))?;
        match decode::<OrderEvent>(first).map_err(|e| poison(e.to_string()))? {
            OrderEvent::OrderSubmitted(submitted) => {
                let details = OrderDetails::from(&submitted);
                cache.insert(order_id, details.clone());
                Ok(details)
            }
            other => Err(poison(format!(
                "order {order_id} starts with {}, not OrderSubmitted",
                crate::events::EventFamily::event_type(&other)
            ))),
        }
    }
}

/// The messages one order event yields on one route. Pure: the same event
/// always gives the same bytes, so a republish is a true duplicate.
pub fn derive(
    route: Route,
    event: &RecordedEvent,
    order_id: Uuid,
    order_event: &OrderEvent,
    details: Option<&OrderDetails>,
) -> Result<Vec<Outbound>, serde_json::Error> {
    let correlation_id = event.metadata.correlation_id.unwrap_or(order_id);
    let timestamp = u64::try_from(event.recorded_at.timestamp()).unwrap_or(0);
    let outbound = |body: Vec<u8>, kind: String, priority: u8| Outbound {
        routing_key: route.routing_key(),
        body,
        message_id: event.event_id,
        correlation_id: order_id,
        kind,
        priority,
        timestamp,
        traceparent: event
            .metadata
            .trace
            .as_ref()
            .map(|t| (t.traceparent.clone(), t.tracestate.clone())),
    };
    let event_type = crate::events::EventFamily::event_type(order_event);
    match route {
        Route::Positions => match (order_event, details) {
            (OrderEvent::OrderExecuted(executed), Some(details)) => {
                let update = PositionUpdate::new(
                    order_id,
                    details,
                    &ExecutionFacts {
                        quantity: executed.quantity,
                        execution_price: executed.execution_price,
                        total_value: executed.total_value,
                        market_price_at_exec: executed.market_price_at_exec,
                        executed_at: executed.executed_at,
                    },
                    correlation_id,
                );
                Ok(vec![outbound(
                    serde_json::to_vec(&update)?,
                    "position_update".to_owned(),
                    POSITION_UPDATE_PRIORITY,
                )])
            }
            _ => Ok(Vec::new()),
        },
        Route::Events if !route.publishes(order_event) => Ok(Vec::new()),
        Route::Events => {
            let mut data = match event.payload.to_value() {
                serde_json::Value::Object(map) => map,
                other => {
                    let mut map = serde_json::Map::new();
                    map.insert("payload".into(), other);
                    map
                }
            };
            // Notification consumers need to know whose order and what it was.
            data.entry("order_id").or_insert_with(|| order_id.to_string().into());
            if let Some(details) = details {
                data.entry("user_id")
                    .or_insert_with(|| details.user_id.to_string().into());
                data.entry("symbol").or_insert_with(|| details.symbol.clone().into());
            }
            let message = EventMessage::new(
                event.event_id,
                event_type,
                order_id,
                order_event.at(),
                serde_json::Value::Object(data),
                correlation_id,
                event.recorded_at,
            );
            Ok(vec![outbound(
                serde_json::to_vec(&message)?,
                event_type.to_owned(),
                EVENT_PRIORITY,
            )])
        }
        Route::Status => {
            let (status, reason) = match order_event {
                OrderEvent::OrderSubmitted(_) => (OrderStatus::Pending, None),
                OrderEvent::OrderAccepted(_) => (OrderStatus::Processing, None),
                OrderEvent::OrderExecuted(_) => (OrderStatus::Executed, None),
                OrderEvent::OrderCancelled(e) => (OrderStatus::Cancelled, Some(e.reason.clone())),
                OrderEvent::OrderFailed(e) => (OrderStatus::Failed, Some(e.reason.clone())),
                // A trigger changes how the order works, not its status.
                OrderEvent::OrderTriggered(_) => return Ok(Vec::new()),
            };
            let message = StatusMessage {
                order_id,
                status,
                at: order_event.at(),
                reason,
            };
            Ok(vec![outbound(
                serde_json::to_vec(&message)?,
                "order_status".to_owned(),
                STATUS_PRIORITY,
            )])
        }
    }
}

/// With traces exported, a span for one message's publish and confirm that
/// continues the trace its event was written with (this is how a trace
/// crosses the log); the message then carries the span's own traceparent.
/// Off, the disabled span and the event's stored context, as it came.
fn publish_span(message: &mut Outbound) -> tracing::Span {
    if !traces::enabled() {
        return tracing::Span::none();
    }
    let stored = message
        .traceparent
        .as_ref()
        .map(|(traceparent, tracestate)| TraceContext {
            traceparent: traceparent.clone(),
            tracestate: tracestate.clone(),
        });
    let span = tracing::info_span!(
        "amqp.publish",
        routing_key = message.routing_key,
        message_id = %message.message_id,
        order_id = %message.correlation_id,
    );
    traces::continue_trace(&span, stored.as_ref());
    if let Some(own) = span.in_scope(|| traces::current(stored)) {
        message.traceparent = Some((own.traceparent, own.tracestate));
    }
    span
}

fn properties(message: &Outbound) -> BasicProperties {
    let mut properties = BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_content_type(ShortString::from("application/json"))
        .with_message_id(ShortString::from(message.message_id.to_string()))
        .with_correlation_id(ShortString::from(message.correlation_id.to_string()))
        .with_type(ShortString::from(message.kind.clone()))
        .with_priority(message.priority)
        .with_timestamp(message.timestamp)
        .with_app_id(ShortString::from(super::wire::SOURCE));
    if let Some((traceparent, tracestate)) = &message.traceparent {
        let mut headers = FieldTable::default();
        headers.insert(
            HEADER_TRACEPARENT.into(),
            AMQPValue::LongString(LongString::from(traceparent.as_str())),
        );
        if let Some(state) = tracestate {
            headers.insert(
                HEADER_TRACESTATE.into(),
                AMQPValue::LongString(LongString::from(state.as_str())),
            );
        }
        properties = properties.with_headers(headers);
    }
    properties
}

impl From<StoreError> for AmqpError {
    fn from(error: StoreError) -> Self {
        AmqpError::Store(error)
    }
}
