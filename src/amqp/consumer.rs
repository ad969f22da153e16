//! The submission consumer: reads seed 3.2.1 messages from `orders.submit`,
//! hands them to the engine, and acknowledges each only once its outcome is
//! safe: the order's first event durable, its refusal published, or the
//! message moved (with a confirm) to a retry rung, `orders.dlq`, or back to
//! the tail of `orders.submit`. Up to `prefetch` deliveries are in hand at
//! once; acks go out in batches (`multiple`) through `AckWindow`.
//!
//! Must never ack a message before that, never create an order itself (the
//! engine decides, and dedups by order id), and never announce an order that
//! exists as refused: a resend of it is acknowledged quietly.

use std::collections::BTreeSet;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use backon::Retryable;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel};
use tokio::sync::watch;
use tracing::Instrument;
use uuid::Uuid;

use super::ack_window::{Ack, AckWindow};
use super::attempts::{ladder_step, millis, record_failed_try};
use super::config::{AmqpConfig, QueueKind};
use super::topology::{
    self, partition_queue, retry_queue, DLQ, EVENTS, EXCHANGE, HEADER_DELIVERY_COUNT, HEADER_ORIGINAL_EXCHANGE,
    HEADER_ORIGINAL_ROUTING_KEY, HEADER_REJECTION_REASON, HEADER_RETRY_ATTEMPT, HEADER_TRACEPARENT, HEADER_TRACESTATE,
    SUBMIT,
};
use super::wire::{parse_traceparent, EventMessage, Submission, EVENT_PRIORITY};
use super::{AmqpError, TaskHealth};
use crate::clock::Clock;
use crate::cluster::{ClusterView, Ownership, Partition, Partitioning};
use crate::controls::audit::{self, AuditOutcome, AuditRecord};
use crate::engine::{Engine, EngineError, SubmitRequest};
use crate::events::{EventMetadata, TraceContext};
use crate::order::{Order, OrderRejection};
use crate::submission::{FailedAttempt, NextTry};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::traces;

/// The `source` label of this consumer's submission metrics.
const METRIC_SOURCE: &str = "amqp";

/// Longest a handled submission's ack waits for an earlier delivery still
/// in hand before it is sent on its own. Short beside an order's latency (the
/// outcome is already safe, only the broker's slot is held), long enough for
/// the deliveries around it to finish so that one `multiple` ack covers them.
const ACK_HOLD_MAX: Duration = Duration::from_millis(50);

/// At most 1/this of the prefetch window may be held by handled deliveries
/// waiting for a `multiple` ack behind a slow one; beyond it they are acked
/// one by one, so the broker keeps the rest of the window full.
const ACK_HELD_SHARE_DIVISOR: usize = 4;

/// AMQP delivery mode of messages that survive a broker restart.
pub const PERSISTENT: u8 = 2;

/// What the consumer submits orders to: the engine, or a test double around it.
#[async_trait]
pub trait OrderSubmitter: Send + Sync + 'static {
    async fn submit(&self, request: SubmitRequest) -> Result<Order, EngineError>;

    /// The order recorded under `order_id`, if any: how the consumer tells a
    /// resend of an existing order from a refusal.
    async fn order(&self, order_id: Uuid) -> Result<Option<Order>, EngineError>;

    /// Records a failed try in the event log, best effort. Doubles that do
    /// not wrap an engine record nothing.
    async fn record_failed_try(&self, attempt: FailedAttempt) -> Result<(), EngineError> {
        let _ = attempt;
        Ok(())
    }
}

#[async_trait]
impl OrderSubmitter for Engine {
    async fn submit(&self, request: SubmitRequest) -> Result<Order, EngineError> {
        Engine::submit(self, request).await
    }

    async fn order(&self, order_id: Uuid) -> Result<Option<Order>, EngineError> {
        Engine::get(self, order_id).await
    }

    async fn record_failed_try(&self, attempt: FailedAttempt) -> Result<(), EngineError> {
        Engine::record_submission_attempt(self, attempt).await
    }
}

/// How the session settles a handled delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settlement {
    /// Its outcome is safe: acknowledge it (possibly with its neighbours).
    Ack,
    /// Its outcome could not be made safe: nack it back to the queue.
    Requeue,
}

/// How one submission ended, for logs and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Submitted,
    Rejected,
    /// A resend of an order that exists with the same fields: acked quietly.
    Duplicate,
    /// A resend under an existing order's id with other fields: dead-lettered.
    Conflicting,
    Retried,
    DeadLettered,
    /// Redelivered after an unsettled delivery: re-enqueued with a fresh delivery count.
    Requeued,
    /// Its user's partition is another process's: moved (confirmed) to that partition's queue.
    Forwarded,
}

pub(crate) struct SubmissionConsumer {
    pub(crate) config: Arc<AmqpConfig>,
    pub(crate) submitter: Arc<dyn OrderSubmitter>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) health: Arc<TaskHealth>,
    pub(crate) metrics: Option<Arc<Metrics>>,
    /// Set on the consumer of `orders.submit` in a cluster that forwards
    /// (`ORDER_ENGINE_SUBMIT_ROUTING=forward`): a submission whose user's
    /// partition this process does not own goes to that partition's queue,
    /// which only its owner consumes (`run_partitions`).
    pub(crate) forward: Option<ClusterView>,
}

/// What a session ends on besides shutdown: the partitions it consumes are
/// no longer the ones held.
struct Holding<'a> {
    partitioning: Partitioning,
    ownership: &'a mut watch::Receiver<Ownership>,
    partitions: &'a BTreeSet<Partition>,
}

impl SubmissionConsumer {
    /// Consumes `orders.submit` until `shutdown` turns true, reconnecting with backoff.
    pub(crate) async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let queues = [self.config.name(SUBMIT)];
        let mut attempt = 0u32;
        loop {
            if *shutdown.borrow() {
                return;
            }
            match self.session(&queues, &mut shutdown, &mut attempt, None).await {
                Ok(()) => {
                    self.health.set_connected(false);
                    return;
                }
                Err(error) => {
                    if !self.wait_to_reconnect(&error, &mut attempt, &mut shutdown).await {
                        return;
                    }
                }
            }
        }
    }

    /// After a session ended on `error`: waits the reconnection delay, false
    /// if shutdown came first.
    async fn wait_to_reconnect(
        &self,
        error: &AmqpError,
        attempt: &mut u32,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        self.health.set_connected(false);
        let delay = self.config.reconnect_delay(*attempt);
        tracing::warn!(%error, consumer = self.health.name(), retry_in_ms = delay.as_millis() as u64, "submission consumer lost the broker; reconnecting");
        *attempt = attempt.saturating_add(1);
        tokio::select! {
            _ = shutdown.changed() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }

    /// Consumes the queues of the partitions `view` holds, each delivery
    /// handled here (never forwarded again), until `shutdown`; when the
    /// partitions held change, the session ends (what was handled is acked,
    /// the rest returns to its queue) and a new one consumes the new set.
    /// A process whose leases lapsed holds nothing and consumes nothing.
    pub(crate) async fn run_partitions(self, view: ClusterView, mut shutdown: watch::Receiver<bool>) {
        let partitioning = view.partitioning();
        let mut ownership = view.subscribe();
        let mut attempt = 0u32;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let held: BTreeSet<Partition> = ownership
                .borrow_and_update()
                .partitions()
                .cloned()
                .unwrap_or_else(|| partitioning.all().collect());
            if held.is_empty() {
                self.health.set_connected(false);
                tokio::select! {
                    _ = shutdown.changed() => return,
                    changed = ownership.changed() => if changed.is_err() { return },
                }
                continue;
            }
            let queues: Vec<String> = held
                .iter()
                .map(|p| self.config.name(&partition_queue(partitioning, *p)))
                .collect();
            let holding = Holding {
                partitioning,
                ownership: &mut ownership,
                partitions: &held,
            };
            let result = self.session(&queues, &mut shutdown, &mut attempt, Some(holding)).await;
            self.health.set_connected(false);
            if let Err(error) = result {
                if !self.wait_to_reconnect(&error, &mut attempt, &mut shutdown).await {
                    return;
                }
            }
        }
    }

    /// One connection's life: declare, consume `queues`, until the connection
    /// breaks (Err), shutdown or the partitions held change (Ok). Unacked
    /// deliveries return to their queue.
    async fn session(
        &self,
        queues: &[String],
        shutdown: &mut watch::Receiver<bool>,
        attempt: &mut u32,
        mut holding: Option<Holding<'_>>,
    ) -> Result<(), AmqpError> {
        let connection = topology::connect(&self.config, "consumer").await?;
        let setup = connection.create_channel().await?;
        topology::declare(&setup, &self.config).await?;
        let partitioning =
            (self.forward.as_ref().map(ClusterView::partitioning)).or_else(|| holding.as_ref().map(|h| h.partitioning));
        if let Some(partitioning) = partitioning {
            topology::declare_partition_queues(&setup, &self.config, partitioning).await?;
        }
        // A separate channel for the retry, DLQ, rejection and forward
        // publishes, in confirm mode: a delivery is acked only after the
        // broker has what it became.
        let publisher = connection.create_channel().await?;
        publisher.confirm_select(ConfirmSelectOptions::default()).await?;
        // The prefetch is shared out among the queues, so the deliveries in
        // hand stay within it (plus one per queue).
        let share = usize::from(self.config.prefetch.max(1)).div_ceil(queues.len().max(1));
        let mut lanes = Vec::with_capacity(queues.len());
        for queue in queues {
            let channel = connection.create_channel().await?;
            channel
                .basic_qos(u16::try_from(share).unwrap_or(u16::MAX), BasicQosOptions::default())
                .await?;
            let consumer = channel
                .basic_consume(
                    queue,
                    &format!("{} consumer {queue}", self.config.connection_name),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            lanes.push((channel, consumer));
        }
        // The probe turns false as soon as the broker drops us, not when the stream ends.
        let _loss = super::watch_loss(&connection, Arc::clone(&self.health));
        self.health.set_connected(true);
        *attempt = 0;
        tracing::info!(queues = %queues.join(","), prefetch = self.config.prefetch, "submission consumer started");
        let (stop, stopped) = watch::channel(false);
        let lanes = futures_util::future::try_join_all(
            lanes
                .into_iter()
                .map(|(channel, consumer)| self.lane(channel, consumer, &publisher, share, stopped.clone())),
        );
        tokio::pin!(lanes);
        let reason = tokio::select! {
            biased;
            _ = shutdown.changed() => "order-engine shutting down",
            // The deliveries of partitions no longer held go back to their
            // queue for the new owner.
            () = held_changed(&mut holding) => "partitions moved",
            ended = &mut lanes => return Err(ended.err().unwrap_or(AmqpError::StreamEnded)),
        };
        // What was handled is acknowledged, so it is not redelivered;
        // submissions still in hand are dropped unacked: the broker
        // redelivers them and the engine's dedup makes the second try harmless.
        let _ = stop.send(true);
        if let Err(error) = lanes.await {
            tracing::warn!(%error, "could not acknowledge every handled submission on stopping; the broker will redeliver them");
        }
        let _ = connection.close(200, reason).await;
        Ok(())
    }

    /// One queue's deliveries on a channel of its own (delivery tags rise per
    /// channel, and the ack window relies on it), up to `in_hand_max` at once,
    /// until `stop` (Ok, with what was handled acknowledged) or a broker error.
    async fn lane(
        &self,
        channel: Channel,
        mut consumer: lapin::Consumer,
        publisher: &Channel,
        in_hand_max: usize,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), AmqpError> {
        // Every delivery the broker hands over starts at once: the prefetch
        // is the bound on work in hand, so a slow delivery (one under quick
        // retries) never keeps the others waiting.
        let mut window = AckWindow::new(in_hand_max / ACK_HELD_SHARE_DIVISOR, ACK_HOLD_MAX);
        let mut in_hand = FuturesUnordered::new();
        loop {
            let deadline = window.deadline();
            tokio::select! {
                biased;
                _ = stop.changed() => {
                    return self.send_acks(&channel, &window.all()).await;
                }
                Some((tag, settlement)) = in_hand.next(), if !in_hand.is_empty() => {
                    self.settle(&channel, &mut window, tag, settlement).await?;
                    // Whatever else has finished meanwhile shares this ack.
                    while let Some(Some((tag, settlement))) = in_hand.next().now_or_never() {
                        self.settle(&channel, &mut window, tag, settlement).await?;
                    }
                    self.send_acks(&channel, &window.due(Instant::now())).await?;
                }
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline.unwrap_or_else(Instant::now))),
                    if deadline.is_some() => {
                    self.send_acks(&channel, &window.due(Instant::now())).await?;
                }
                delivery = consumer.next(), if in_hand.len() < in_hand_max => match delivery {
                    Some(Ok(delivery)) => {
                        window.received(delivery.delivery_tag)?;
                        in_hand.push(self.handle(delivery, publisher));
                    }
                    Some(Err(error)) => tracing::warn!(%error, "consumer stream error"),
                    None => return Err(AmqpError::StreamEnded),
                },
            }
        }
    }

    /// Records how a delivery ended. A nack goes out at once and on its own
    /// (before any later `multiple` ack, which then steps over it); an ack
    /// waits in the window to share a frame with its neighbours.
    async fn settle(
        &self,
        channel: &Channel,
        window: &mut AckWindow,
        tag: u64,
        settlement: Settlement,
    ) -> Result<(), AmqpError> {
        match settlement {
            Settlement::Ack => {
                window.handled(tag, Instant::now());
                Ok(())
            }
            Settlement::Requeue => {
                window.nacked(tag);
                channel
                    .basic_nack(
                        tag,
                        BasicNackOptions {
                            requeue: true,
                            ..BasicNackOptions::default()
                        },
                    )
                    .await?;
                Ok(())
            }
        }
    }

    async fn send_acks(&self, channel: &Channel, acks: &[Ack]) -> Result<(), AmqpError> {
        for ack in acks {
            channel
                .basic_ack(ack.tag, BasicAckOptions { multiple: ack.multiple })
                .await?;
            self.health.add_ack_frames(1);
        }
        Ok(())
    }

    /// Handles one delivery to a safe outcome and says how to settle it;
    /// the session sends the ack or nack.
    async fn handle(&self, delivery: Delivery, publisher: &Channel) -> (u64, Settlement) {
        let tag = delivery.delivery_tag;
        let headers = delivery.properties.headers().clone().unwrap_or_default();
        let trace = header_text(&headers, HEADER_TRACEPARENT)
            .and_then(|tp| parse_traceparent(&tp, header_text(&headers, HEADER_TRACESTATE).as_deref()));
        let attempt = header_u32(&headers, HEADER_RETRY_ATTEMPT).unwrap_or(0);
        let message_id = delivery.properties.message_id().as_ref().map(|m| m.to_string());
        let span = tracing::info_span!(
            "amqp.submission",
            message_id = message_id.as_deref().unwrap_or(""),
            retry_attempt = attempt,
            // The producer's W3C trace continues here and in the events' metadata.
            traceparent = trace.as_ref().map_or("", |t| t.traceparent.as_str()),
            order_id = tracing::field::Empty,
        );
        // Exported, the span is the producer's span's child.
        traces::continue_trace(&span, trace.as_ref());
        let delivery_count = header_u32(&headers, HEADER_DELIVERY_COUNT).unwrap_or(0);
        let settlement = async {
            let result = if self.config.queue_kind == QueueKind::Quorum && delivery_count > 0 {
                self.requeue(publisher, &delivery, delivery_count)
                    .await
                    .map(|()| Outcome::Requeued)
            } else {
                // A panic here is this message's doing (the engine's actors
                // answer errors, not panics): set it aside rather than lose
                // the consumer or loop on it.
                match AssertUnwindSafe(self.decide(&delivery, publisher, attempt, trace))
                    .catch_unwind()
                    .await
                {
                    Ok(result) => result,
                    Err(panic) => {
                        let reason = format!("the consumer panicked on this message: {}", panic_text(&*panic));
                        tracing::error!(%reason, "dead-lettering a submission");
                        self.dead_letter(publisher, &delivery, &reason)
                            .await
                            .map(|()| Outcome::DeadLettered)
                    }
                }
            };
            match result {
                Ok(outcome) => {
                    tracing::debug!(?outcome, "submission handled");
                    self.health.add_processed(1);
                    Settlement::Ack
                }
                Err(error) => {
                    // Its outcome could not be made safe (the broker or the
                    // confirm failed): hand it back for another try. A broker
                    // fault is not the message's, so its redelivery is
                    // re-enqueued fresh rather than counted towards the DLQ.
                    tracing::warn!(%error, "submission not settled; returning it to the queue");
                    Settlement::Requeue
                }
            }
        }
        .instrument(span)
        .await;
        (tag, settlement)
    }

    async fn decide(
        &self,
        delivery: &Delivery,
        publisher: &Channel,
        attempt: u32,
        trace: Option<TraceContext>,
    ) -> Result<Outcome, AmqpError> {
        let submission = match Submission::parse(&delivery.data) {
            Ok(submission) => submission,
            Err(error) => {
                tracing::warn!(%error, "undecodable submission; dead-lettering it");
                // Refused before it had terms to audit: the door and why.
                audit::emit(
                    AuditOutcome::Refused,
                    &AuditRecord {
                        source: Some("amqp"),
                        reason: Some("undecodable-submission"),
                        at: Some(self.clock.now()),
                        ..AuditRecord::default()
                    },
                );
                self.dead_letter(publisher, delivery, &error.to_string()).await?;
                return Ok(Outcome::DeadLettered);
            }
        };
        tracing::Span::current().record("order_id", tracing::field::display(submission.order_id));
        if let Some(view) = &self.forward {
            if !view.owns_user(submission.user_id) {
                let queue = partition_queue(view.partitioning(), view.partitioning().of_user(submission.user_id));
                let headers = delivery.properties.headers().clone().unwrap_or_default();
                publish_confirmed(
                    publisher,
                    &self.config.name(EXCHANGE),
                    &queue,
                    &delivery.data,
                    forwarded(&delivery.properties, headers),
                )
                .await?;
                self.count(|m| &m.forwarded_submissions_total);
                return Ok(Outcome::Forwarded);
            }
        }
        let request = SubmitRequest {
            order_id: Some(submission.order_id),
            user_id: submission.user_id,
            symbol: submission.symbol.clone(),
            side: submission.side,
            order_type: submission.order_type,
            quantity: submission.quantity,
            limit_price: submission.limit_price,
            stop_price: submission.stop_price,
            metadata: EventMetadata {
                correlation_id: Some(submission.correlation_id()),
                causation_id: submission.causation_id(),
                who: Some(format!("user:{}", submission.user_id)),
                source: Some("amqp".to_owned()),
                // With traces exported, the submission span's context: what
                // follows in the engine is its child.
                trace: traces::current(trace),
            },
        };
        // A fault that passes in seconds (a database restart, a dropped
        // connection) is tried again here, a bounded number of times, before
        // the message is put on the first rung, minutes away.
        let mut quick = 0_u32;
        let submitted = (|| self.submitter.submit(request.clone()))
            .retry(self.config.quick_backoff())
            .sleep(tokio::time::sleep)
            .when(|error| matches!(error, EngineError::Unavailable(_)))
            .notify(|error, wait| {
                tracing::info!(%error, wait_ms = wait.as_millis() as u64, "transient failure; trying again shortly");
                quick += 1;
                let next = NextTry::Quick {
                    retry: quick,
                    wait_ms: millis(wait),
                };
                record_failed_try(&self.submitter, &request, attempt, next, error);
            })
            .await;
        match submitted {
            Ok(_) => Ok(Outcome::Submitted),
            Err(EngineError::Rejected(rejection)) => {
                let code = rejection_code(&rejection);
                self.refused(publisher, delivery, &submission, attempt, &rejection.to_string(), code)
                    .await
            }
            // Market data unavailable is refused at once, not laddered: the
            // client already retried within its deadlines, and a MARKET order
            // filled minutes later at another price is not what was asked.
            // The producer hears `MarketDataUnavailable` and may resubmit.
            Err(
                error @ (EngineError::AccountNotAllowed(_)
                | EngineError::NotFound(_)
                | EngineError::MarketDataUnavailable(_)
                | EngineError::Refused { .. }),
            ) => {
                let code = match &error {
                    EngineError::AccountNotAllowed(_) => "AccountNotAllowed",
                    // The control's own reason (`daily_order_limit_reached`, `rate_limited`, `orders_held`).
                    EngineError::Refused { rejection, .. } => rejection.code(),
                    EngineError::MarketDataUnavailable(_) => "MarketDataUnavailable",
                    _ => "NotFound",
                };
                self.refused(publisher, delivery, &submission, attempt, &error.to_string(), code)
                    .await
            }
            // An internal error may be a fault that passes (a bug fixed by a
            // deploy, a store refusing for a while): it climbs the same ladder
            // and lands in the DLQ with its reason rather than being lost.
            Err(error @ (EngineError::Unavailable(_) | EngineError::Internal(_))) => {
                let outcome = self
                    .retry_or_dead_letter(publisher, delivery, attempt, &error.to_string())
                    .await?;
                let next = ladder_step(&self.config.retry_delays, attempt);
                record_failed_try(&self.submitter, &request, attempt, next, &error);
                Ok(outcome)
            }
        }
    }

    /// The engine refused the submission. If the order already exists this
    /// is a resend (a redelivery after a crash, a producer's retry), not a
    /// refusal of that order: the same fields are acked quietly; other fields
    /// under its id are set aside in `orders.dlq`, never announced as
    /// `OrderRejected` of an order that exists and may execute.
    async fn refused(
        &self,
        publisher: &Channel,
        delivery: &Delivery,
        submission: &Submission,
        attempt: u32,
        reason: &str,
        code: &str,
    ) -> Result<Outcome, AmqpError> {
        let existing = match self.submitter.order(submission.order_id).await {
            Ok(existing) => existing,
            Err(error) => {
                let reason = format!("cannot tell whether order {} exists: {error}", submission.order_id);
                return self.retry_or_dead_letter(publisher, delivery, attempt, &reason).await;
            }
        };
        let Some(existing) = existing else {
            self.reject(publisher, submission, reason, code).await?;
            return Ok(Outcome::Rejected);
        };
        let differs = differences(&existing, submission);
        if differs.is_empty() {
            tracing::debug!("a resend of an existing order; acknowledged without a refusal");
            self.count(|m| &m.duplicate_submissions_total);
            return Ok(Outcome::Duplicate);
        }
        let reason = format!(
            "conflicting resubmission: order {} already exists with another {}; the first submission stands",
            submission.order_id,
            differs.join(", ")
        );
        tracing::warn!(%reason, "dead-lettering a resubmission that conflicts with its order");
        self.count(|m| &m.conflicting_submissions_total);
        self.dead_letter(publisher, delivery, &reason).await?;
        Ok(Outcome::Conflicting)
    }

    fn count(&self, metric: impl Fn(&Metrics) -> &prometheus::IntCounterVec) {
        if let Some(metrics) = &self.metrics {
            metric(metrics).with_label_values(&[METRIC_SOURCE]).inc();
        }
    }

    /// Puts a redelivered submission back at the tail of `orders.submit` as a
    /// new message, then acks the delivery. A redelivery means an earlier
    /// delivery was never settled: the engine was stopped or killed holding
    /// it, or its channel broke. That is not the message's fault, but the
    /// quorum queue counts it towards `x-delivery-limit`; a fresh copy starts
    /// from zero, so restarts alone can never dead-letter a valid order.
    /// Poison is set aside explicitly instead (unparseable, or panicking).
    async fn requeue(&self, publisher: &Channel, delivery: &Delivery, delivery_count: u32) -> Result<(), AmqpError> {
        tracing::info!(
            delivery_count,
            "a redelivered submission (an earlier delivery was never settled); re-enqueueing it"
        );
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        // The broker's count of the old message; a copy that kept it would be requeued for ever.
        let mut kept = FieldTable::default();
        for (key, value) in headers.inner() {
            if key.as_str() != HEADER_DELIVERY_COUNT {
                kept.insert(key.clone(), value.clone());
            }
        }
        headers = kept;
        let properties = forwarded(&delivery.properties, headers);
        publish_confirmed(
            publisher,
            &self.config.name(EXCHANGE),
            SUBMIT,
            &delivery.data,
            properties,
        )
        .await
    }

    async fn reject(
        &self,
        publisher: &Channel,
        submission: &Submission,
        reason: &str,
        code: &str,
    ) -> Result<(), AmqpError> {
        tracing::info!(
            reason,
            code,
            "the engine refused the submission; publishing OrderRejected"
        );
        audit::emit(
            AuditOutcome::Refused,
            &AuditRecord {
                order_id: Some(submission.order_id),
                user_id: Some(submission.user_id),
                symbol: Some(submission.symbol.as_str()),
                side: Some(submission.side),
                order_type: Some(submission.order_type),
                quantity: Some(submission.quantity),
                price: submission.limit_price.or(submission.stop_price),
                source: Some("amqp"),
                reason: Some(code),
                at: Some(self.clock.now()),
                ..AuditRecord::default()
            },
        );
        let message = EventMessage::rejected(submission, reason, code, self.clock.now());
        let body = serde_json::to_vec(&message).map_err(|e| AmqpError::Encode(e.to_string()))?;
        let properties = BasicProperties::default()
            .with_delivery_mode(PERSISTENT)
            .with_content_type(ShortString::from("application/json"))
            .with_message_id(ShortString::from(message.message_id.clone()))
            .with_correlation_id(ShortString::from(submission.order_id.to_string()))
            .with_type(ShortString::from("OrderRejected"))
            .with_priority(EVENT_PRIORITY);
        publish_confirmed(publisher, &self.config.name(EXCHANGE), EVENTS, &body, properties).await
    }

    async fn retry_or_dead_letter(
        &self,
        publisher: &Channel,
        delivery: &Delivery,
        attempt: u32,
        reason: &str,
    ) -> Result<Outcome, AmqpError> {
        let Some(delay) = usize::try_from(attempt)
            .ok()
            .and_then(|i| self.config.retry_delays.get(i))
            .copied()
        else {
            let reason = format!("gave up after {attempt} retries: {reason}");
            tracing::warn!(%reason, "dead-lettering a submission");
            self.dead_letter(publisher, delivery, &reason).await?;
            return Ok(Outcome::DeadLettered);
        };
        tracing::info!(
            reason,
            attempt = attempt + 1,
            delay_ms = delay.as_millis() as u64,
            "transient failure; scheduling a retry"
        );
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        headers.insert(
            HEADER_RETRY_ATTEMPT.into(),
            AMQPValue::LongLongInt(i64::from(attempt + 1)),
        );
        headers.insert(HEADER_REJECTION_REASON.into(), long_string(reason));
        // The rung's queue holds it for the rung's delay (a queue-level TTL)
        // and dead-letters it back to orders.submit.
        let properties = forwarded(&delivery.properties, headers);
        publish_confirmed(
            publisher,
            &self.config.name(EXCHANGE),
            &retry_queue(delay),
            &delivery.data,
            properties,
        )
        .await?;
        Ok(Outcome::Retried)
    }

    async fn dead_letter(&self, publisher: &Channel, delivery: &Delivery, reason: &str) -> Result<(), AmqpError> {
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        headers.insert(HEADER_REJECTION_REASON.into(), long_string(reason));
        headers.insert(
            HEADER_ORIGINAL_ROUTING_KEY.into(),
            long_string(delivery.routing_key.as_str()),
        );
        headers.insert(HEADER_ORIGINAL_EXCHANGE.into(), long_string(delivery.exchange.as_str()));
        let properties = forwarded(&delivery.properties, headers);
        publish_confirmed(publisher, &self.config.name(EXCHANGE), DLQ, &delivery.data, properties).await
    }
}

/// The fields in which a resubmission differs from the order recorded under
/// its id (numbers compared by value: `10` and `10.0` are the same quantity).
/// Resolves once the partitions held differ from those the session consumes
/// (a renewal that only moves the deadline is no change); never without a holding.
async fn held_changed(holding: &mut Option<Holding<'_>>) {
    let Some(holding) = holding else {
        return std::future::pending().await;
    };
    loop {
        if holding.ownership.changed().await.is_err() {
            // The membership task is gone (the process is stopping): nothing moves any more.
            return std::future::pending().await;
        }
        let now = holding.ownership.borrow_and_update().partitions().cloned();
        if now.as_ref() != Some(holding.partitions) {
            return;
        }
    }
}

fn differences(order: &Order, submission: &Submission) -> Vec<&'static str> {
    let mut differs = Vec::new();
    if order.user_id != submission.user_id {
        differs.push("user_id");
    }
    if order.symbol.as_str() != submission.symbol {
        differs.push("symbol");
    }
    if order.side != submission.side {
        differs.push("order_side");
    }
    if order.order_type != submission.order_type {
        differs.push("order_type");
    }
    if order.quantity != submission.quantity {
        differs.push("quantity");
    }
    if order.limit_price != submission.limit_price {
        differs.push("price");
    }
    if order.stop_price != submission.stop_price {
        differs.push("stop_price");
    }
    differs
}

/// What a panic said, when it said it as text.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

/// The original message's identity with new headers, persistent, without any
/// expiration it carried.
fn forwarded(original: &BasicProperties, headers: FieldTable) -> BasicProperties {
    let mut properties = BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_headers(headers);
    if let Some(content_type) = original.content_type() {
        properties = properties.with_content_type(content_type.clone());
    }
    if let Some(message_id) = original.message_id() {
        properties = properties.with_message_id(message_id.clone());
    }
    if let Some(correlation_id) = original.correlation_id() {
        properties = properties.with_correlation_id(correlation_id.clone());
    }
    if let Some(timestamp) = original.timestamp() {
        properties = properties.with_timestamp(*timestamp);
    }
    if let Some(app_id) = original.app_id() {
        properties = properties.with_app_id(app_id.clone());
    }
    properties
}

/// Publishes one message and waits for the broker's confirm; a nack is an error.
pub(crate) async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<(), AmqpError> {
    let confirm = channel
        .basic_publish(exchange, routing_key, BasicPublishOptions::default(), body, properties)
        .await?
        .await?;
    if confirm.is_ack() {
        Ok(())
    } else {
        Err(AmqpError::Nacked)
    }
}

fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

/// A header as text, whether sent as a long or short string.
pub(crate) fn header_text(headers: &FieldTable, key: &str) -> Option<String> {
    match headers.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// A header as a non-negative count, whatever integer width or text the producer used.
pub(crate) fn header_u32(headers: &FieldTable, key: &str) -> Option<u32> {
    let value: i64 = match headers.inner().get(key)? {
        AMQPValue::ShortShortInt(v) => i64::from(*v),
        AMQPValue::ShortShortUInt(v) => i64::from(*v),
        AMQPValue::ShortInt(v) => i64::from(*v),
        AMQPValue::ShortUInt(v) => i64::from(*v),
        AMQPValue::LongInt(v) => i64::from(*v),
        AMQPValue::LongUInt(v) => i64::from(*v),
        AMQPValue::LongLongInt(v) => *v,
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).trim().parse().ok()?,
        AMQPValue::ShortString(s) => s.as_str().trim().parse().ok()?,
        _ => return None,
    };
    u32::try_from(value).ok()
}

/// The rule a refusal broke, as a stable machine-readable code (its variant name).
fn rejection_code(rejection: &OrderRejection) -> &'static str {
    match rejection {
        OrderRejection::InvalidQuantity { .. } => "InvalidQuantity",
        OrderRejection::InvalidPrice { .. } => "InvalidPrice",
        OrderRejection::PriceRequired { .. } => "PriceRequired",
        OrderRejection::PriceNotAllowed { .. } => "PriceNotAllowed",
        OrderRejection::InvalidSymbol(_) => "InvalidSymbol",
        OrderRejection::UnknownSymbol { .. } => "UnknownSymbol",
        OrderRejection::MarketClosed { .. } => "MarketClosed",
        OrderRejection::AlreadySubmitted { .. } => "AlreadySubmitted",
        _ => "Refused",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn retry_headers_are_read_in_any_integer_width_or_as_text() {
        // Proves a producer's or a broker's x-retry-attempt is understood whatever its AMQP type.
        let mut headers = FieldTable::default();
        for (value, expected) in [
            (AMQPValue::ShortShortUInt(2), Some(2)),
            (AMQPValue::LongInt(3), Some(3)),
            (AMQPValue::LongLongInt(4), Some(4)),
            (long_string("1"), Some(1)),
            (AMQPValue::LongLongInt(-1), None),
        ] {
            headers.insert(HEADER_RETRY_ATTEMPT.into(), value);
            assert_eq!(header_u32(&headers, HEADER_RETRY_ATTEMPT), expected);
        }
        assert_eq!(header_u32(&FieldTable::default(), HEADER_RETRY_ATTEMPT), None);
    }

    #[test]
    fn a_resend_differs_only_in_the_orders_fields() {
        // Proves the same order is recognised whatever its message metadata or number spelling, and each changed field is named.
        let submission = Submission::parse(
            br#"{"order_id":"0190a0e0-0000-7000-8000-000000000001","user_id":"0190a0e0-0000-7000-8000-000000000002",
                "symbol":"AAPL","order_side":"BUY","order_type":"LIMIT","quantity":10,"price":"150.50",
                "message_metadata":{"message_id":"msg_1"}}"#,
        )
        .unwrap();
        let mut order = crate::order::Order {
            id: submission.order_id,
            user_id: submission.user_id,
            symbol: crate::order::Symbol::parse("AAPL").unwrap(),
            side: submission.side,
            order_type: submission.order_type,
            quantity: rust_decimal::Decimal::new(100, 1),
            limit_price: Some(rust_decimal::Decimal::new(15050, 2)),
            stop_price: None,
            status: crate::order::OrderStatus::Pending,
            reserved_amount: rust_decimal::Decimal::ZERO,
            triggered_at: None,
            market_price_at_submission: None,
            market_data_timestamp: None,
            created_at: chrono::DateTime::UNIX_EPOCH,
            updated_at: chrono::DateTime::UNIX_EPOCH,
            execution: None,
            reason: None,
        };
        assert!(differences(&order, &submission).is_empty());
        order.quantity = rust_decimal::Decimal::new(99, 0);
        order.limit_price = None;
        assert_eq!(differences(&order, &submission), ["quantity", "price"]);
    }

    #[test]
    fn a_panic_message_is_kept_for_the_dead_letter_reason() {
        // Proves the reason names what the panic said, for both kinds of payload.
        assert_eq!(panic_text(&"bad"), "bad");
        assert_eq!(panic_text(&String::from("worse")), "worse");
        assert_eq!(panic_text(&42_u8), "(no message)");
    }

    #[test]
    fn forwarding_keeps_identity_and_drops_expiration() {
        // Proves a dead-lettered or retried message keeps its ids and is persistent, with no old TTL.
        let original = BasicProperties::default()
            .with_message_id("m-1".into())
            .with_correlation_id("c-1".into())
            .with_expiration("5".into());
        let forwarded = forwarded(&original, FieldTable::default());
        assert_eq!(forwarded.message_id().as_ref().unwrap().as_str(), "m-1");
        assert_eq!(forwarded.correlation_id().as_ref().unwrap().as_str(), "c-1");
        assert_eq!(*forwarded.delivery_mode(), Some(PERSISTENT));
        assert_eq!(*forwarded.expiration(), None);
    }
}
