//! The shell around the saga core: loads a saga from its stream, records
//! what happened, performs what `next_actions` asks (balance calls, commands
//! to the order), and waits for the ladder's next rung.
//!
//! Two kinds of retry, never mixed: the balance service failing climbs the
//! seed's ladder (recorded in the saga's stream); the engine's own trouble
//! (the log, the order's actor, a ledger account contended by lost races)
//! is retried here within seconds, a bounded number of times in a row, and
//! past the bound the saga is reported stalled, loudly, never dropped.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::colocated::{requests, stage, Staged, Stop};
use super::crash::{CrashPoint, Halted};
use super::health::EngineHealth;
use super::matching::{on_price, MatchAction, WorkingOrder};
use crate::actors::{ActorError, CoWrite, Decided, ExecuteCommand, OrderRegistry};
use crate::balance::embedded::{AccountTurn, EmbeddedLedger};
use crate::balance::{BalanceError, BalanceOp, BalanceReceipt, BalanceService, ReleaseOp};
use crate::clock::Clock;
use crate::cluster::ClusterView;
use crate::events::{EventMetadata, StreamId, TraceContext};
use crate::market::MarketData;
use crate::order::{AcceptOrder, ExecuteOrder, FailOrder, Order, OrderCommand, OrderEvent, OrderStatus};
use crate::saga::{
    next_actions, Action, ObservedOrder, SagaAggregate, SagaCommand, SagaEvent, SagaRejection, Step, StepOutcome,
};
use crate::store::{
    append_atomic, execute, Around, Conflict, EventStore, ExecuteError, Executed, FoldError, Freshness, Hydrated,
    Policy, StoreError,
};
use crate::telemetry::traces;
use tracing::Instrument;

/// Namespace of every id the engine derives from a name (command ids, event ids).
pub const ENGINE_NAMESPACE: Uuid = Uuid::from_u128(0x6f72_6465_722d_656e_6769_6e65_0000_0001);

/// The first pause before retrying a failure of the engine's own (the log or
/// the order's actor unavailable, the ledger's account contended), as opposed
/// to the balance ladder; it doubles, jittered, up to the maximum.
const LOCAL_RETRY_DELAY_MIN: Duration = Duration::from_millis(50);
const LOCAL_RETRY_DELAY_MAX: Duration = Duration::from_secs(30);
/// Local retries in a row before a saga task gives up and reports the saga
/// stalled: with the pauses above, about six minutes, longer than a database
/// restart and short enough that an operator hears of a real outage.
pub const LOCAL_RETRIES_MAX: u32 = 20;

#[derive(Debug, Clone)]
pub struct SagaConfig {
    /// Seed 004 section 3.4: 5 min, 15 min, 1 h, 6 h (at most 4 retries).
    pub retry_delays: Vec<Duration>,
    /// Added to the quote when reserving for MARKET and STOP_LOSS buys.
    pub market_buffer_bps: u32,
    /// Inputs queued per saga before the reactor waits.
    pub inbox_capacity: usize,
    /// Sagas with a task at once; past it the reactor stops reading the log.
    pub active_max: usize,
    /// Lost races on the saga's own stream (another process drives it too)
    /// before one record gives up; it is then a local retry like any other.
    pub conflict_retries_max: u32,
    /// Local failures in a row before a saga is reported stalled.
    pub local_retries_max: u32,
}

impl Default for SagaConfig {
    fn default() -> Self {
        Self {
            retry_delays: [300, 900, 3_600, 21_600].into_iter().map(Duration::from_secs).collect(),
            market_buffer_bps: 500,
            inbox_capacity: 16,
            active_max: 10_000,
            conflict_retries_max: 10,
            local_retries_max: LOCAL_RETRIES_MAX,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum SagaInput {
    Start {
        event_id: Uuid,
        user_id: Uuid,
        side: crate::order::Side,
        reserve_amount: rust_decimal::Decimal,
        /// The trace context the submission was written with.
        trace: Option<TraceContext>,
    },
    Observe {
        event_id: Uuid,
        order: ObservedOrder,
        /// The trace context the observed order event was written with.
        trace: Option<TraceContext>,
    },
}

impl SagaInput {
    /// The trace the saga's work on this input continues.
    fn trace(&self) -> Option<&TraceContext> {
        match self {
            SagaInput::Start { trace, .. } | SagaInput::Observe { trace, .. } => trace.as_ref(),
        }
    }

    /// The span's name for the saga's work on this input.
    fn step_name(&self) -> &'static str {
        match self {
            SagaInput::Start { .. } => "start",
            SagaInput::Observe { .. } => "observe",
        }
    }
}

pub(crate) struct SagaContext {
    pub store: Arc<dyn EventStore>,
    pub registry: OrderRegistry,
    pub balance: Arc<dyn BalanceService>,
    pub market: Arc<dyn MarketData>,
    /// Orders whose saga is filling them itself, right after accepting them
    /// (with the embedded ledger): the reactor's matcher leaves these alone,
    /// so the fill and its settlement stay one commit.
    pub filling: Mutex<HashSet<Uuid>>,
    /// Orders the reactor skipped while their saga was filling them, and
    /// should match now (bounded; when full, the next tick matches them).
    pub rematch: mpsc::Sender<Uuid>,
    pub clock: Arc<dyn Clock>,
    pub config: SagaConfig,
    pub crash: Option<Arc<CrashPoint>>,
    pub health: Arc<EngineHealth>,
    /// What this process owns; a saga acts only while the leases are held.
    pub cluster: ClusterView,
}

impl SagaContext {
    fn before_effect(&self) -> Result<(), RunError> {
        // Stopped or cut off past the lease time (SIGSTOP, a long pause): the
        // partition may have a new owner resuming this saga. Stop as a crash
        // would; the owner's reactor resumes it from its stream.
        if !self.cluster.is_valid() {
            return Err(RunError::Halted(Halted));
        }
        match &self.crash {
            Some(crash) => crash.before().map_err(RunError::Halted),
            None => Ok(()),
        }
    }

    fn after_effect(&self) {
        if let Some(crash) = &self.crash {
            crash.after_effect();
        }
    }
}

/// The test crash points around each append of the saga's own stream.
struct Effects<'a>(&'a SagaContext);

impl Around<SagaAggregate> for Effects<'_> {
    type Halt = RunError;

    fn before_append(&mut self) -> Result<(), RunError> {
        self.0.before_effect()
    }

    fn after_append(&mut self) {
        self.0.after_effect();
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum RunError {
    #[error(transparent)]
    Halted(Halted),
    #[error("saga log: {0}")]
    Store(#[from] StoreError),
    #[error("saga stream of order {order_id} is unreadable: {reason}")]
    Unreadable { order_id: Uuid, reason: String },
    #[error("saga of order {0}: other writers kept appending")]
    Contended(Uuid),
    /// The ledger lost its bounded races for the account: called again soon
    /// with the same key, never recorded as a failure of the balance service.
    #[error("saga of order {order_id}, step {step}: {error}")]
    BalanceContended {
        order_id: Uuid,
        step: Step,
        error: BalanceError,
    },
    #[error("saga of order {order_id}: the order could not take its {what}: {error}")]
    Order {
        order_id: Uuid,
        what: String,
        error: ActorError,
    },
}

enum Idle {
    Completed,
    /// Waiting for an order event, or until `wake`.
    Waiting {
        wake: Option<chrono::DateTime<chrono::Utc>>,
    },
}

struct SagaRun {
    order_id: Uuid,
    stream: StreamId,
    /// The saga as folded from its stream, or as this task's appends left it.
    saga: Hydrated<SagaAggregate>,
    /// Order commands sent by this task; re-sent by a task after a restart (they are idempotent).
    accept_sent: bool,
    fail_sent: bool,
    /// Whether `saga` was folded from the stream (a fresh start with the
    /// embedded ledger skips the read: its commit expects an empty stream).
    loaded: bool,
    /// The trace of the last input: the saga's later steps (retries, timers) continue it.
    trace: Option<TraceContext>,
}

/// A command id derived from a name, so a retry after a crash is the same command.
fn derived_id(order_id: Uuid, what: &str) -> Uuid {
    Uuid::new_v5(&ENGINE_NAMESPACE, format!("{order_id}:{what}").as_bytes())
}

impl SagaRun {
    fn unloaded(order_id: Uuid) -> Self {
        Self {
            order_id,
            stream: StreamId::saga(order_id),
            saga: Hydrated::default(),
            accept_sent: false,
            fail_sent: false,
            loaded: false,
            trace: None,
        }
    }

    async fn load(ctx: &SagaContext, order_id: Uuid) -> Result<Self, RunError> {
        let mut run = Self::unloaded(order_id);
        run.catch_up(ctx).await?;
        Ok(run)
    }

    async fn catch_up(&mut self, ctx: &SagaContext) -> Result<(), RunError> {
        self.saga
            .catch_up(ctx.store.as_ref(), &self.stream)
            .await
            .map_err(|error| match error {
                FoldError::Store(error) => RunError::Store(error),
                other => RunError::Unreadable {
                    order_id: self.order_id,
                    reason: other.to_string(),
                },
            })?;
        self.loaded = true;
        Ok(())
    }

    async fn ensure_loaded(&mut self, ctx: &SagaContext) -> Result<(), RunError> {
        if self.loaded {
            Ok(())
        } else {
            self.catch_up(ctx).await
        }
    }

    /// Decides and appends; Ok(false) when the command changes nothing.
    async fn record(&mut self, ctx: &SagaContext, command: SagaCommand, command_id: Uuid) -> Result<bool, RunError> {
        let metadata = EventMetadata {
            correlation_id: Some(self.order_id),
            causation_id: Some(command_id),
            who: Some("saga".into()),
            source: Some("saga".into()),
            trace: traces::current(None),
        };
        // A refusal is not reloaded for: a late or duplicate outcome, or work
        // another process finished, has nothing to record either way.
        let policy = Policy {
            freshness: Freshness::Held {
                reload_on_refusal: false,
            },
            conflict_retries_max: ctx.config.conflict_retries_max,
        };
        let executed = execute(
            ctx.store.as_ref(),
            &self.stream,
            &mut self.saga,
            &command,
            command_id,
            &metadata,
            policy,
            &mut Effects(ctx),
        )
        .await;
        match executed {
            Ok(Executed::Unchanged) => Ok(false),
            Ok(Executed::Written { .. } | Executed::Repeated { .. }) => Ok(true),
            Err(ExecuteError::Rejected(rejection)) => {
                if !matches!(
                    rejection,
                    SagaRejection::NothingInFlight(_) | SagaRejection::StepNotDue { .. }
                ) {
                    tracing::debug!(order_id = %self.order_id, %rejection, "saga command not applicable");
                }
                Ok(false)
            }
            Err(ExecuteError::Halted(error)) => Err(error),
            Err(ExecuteError::Store(error) | ExecuteError::Fold(FoldError::Store(error))) => {
                Err(RunError::Store(error))
            }
            Err(ExecuteError::Contended { .. }) => Err(RunError::Contended(self.order_id)),
            Err(
                error @ (ExecuteError::Fold(_)
                | ExecuteError::Encode(_)
                | ExecuteError::CoWriteConflict(_)
                | ExecuteError::CoWriteRefused(_)),
            ) => Err(RunError::Unreadable {
                order_id: self.order_id,
                reason: error.to_string(),
            }),
        }
    }

    async fn apply(&mut self, ctx: &SagaContext, input: SagaInput) -> Result<(), RunError> {
        self.ensure_loaded(ctx).await?;
        // The order event's id names the command: observing it twice records it once.
        let (command, command_id) = self.command_of(&input, ctx.clock.now());
        self.record(ctx, command, command_id).await?;
        Ok(())
    }

    /// Performs actions until the saga must wait.
    async fn drive(&mut self, ctx: &SagaContext) -> Result<Idle, RunError> {
        self.ensure_loaded(ctx).await?;
        loop {
            let now = ctx.clock.now();
            let mut progressed = false;
            let mut wake: Option<chrono::DateTime<chrono::Utc>> = None;
            for action in next_actions(&self.saga.state, now) {
                match action {
                    Action::Attempt { step, amount } => {
                        let attempt = self.saga.state.saga().map_or(0, |s| s.step(step).attempts) + 1;
                        let id = derived_id(self.order_id, &format!("{step}:attempt:{attempt}"));
                        progressed |= self
                            .record(ctx, SagaCommand::Attempt { step, amount, at: now }, id)
                            .await?;
                    }
                    Action::Call {
                        step,
                        attempt,
                        amount,
                        idempotency_key,
                    } => {
                        ctx.before_effect()?;
                        let result = self.call_balance(ctx, step, amount, idempotency_key).await;
                        ctx.after_effect();
                        let outcome = match result {
                            Ok(receipt) => StepOutcome::Succeeded { amount: receipt.amount },
                            // Not an outcome: the call did nothing, and the attempt
                            // stays in flight to be made again with its key.
                            Err(error @ BalanceError::Contended { .. }) => {
                                return Err(RunError::BalanceContended {
                                    order_id: self.order_id,
                                    step,
                                    error,
                                });
                            }
                            Err(error) => {
                                tracing::warn!(order_id = %self.order_id, %step, attempt, %error, "balance call failed");
                                StepOutcome::Failed {
                                    reason: error.to_string(),
                                    transient: error.is_transient(),
                                }
                            }
                        };
                        let command = SagaCommand::RecordOutcome {
                            step,
                            outcome,
                            retry_delays: ctx.config.retry_delays.clone(),
                            at: ctx.clock.now(),
                        };
                        let id = derived_id(self.order_id, &format!("{step}:outcome:{attempt}"));
                        progressed |= self.record(ctx, command, id).await?;
                    }
                    Action::WaitUntil { at, .. } => wake = Some(wake.map_or(at, |w| w.min(at))),
                    Action::AcceptOrder { reserved_amount } if !self.accept_sent => {
                        let command = OrderCommand::Accept(AcceptOrder {
                            reserved_amount,
                            accepted_at: now,
                        });
                        self.send_order(ctx, command, "accept").await?;
                        self.accept_sent = true;
                    }
                    Action::FailOrder { reason } if !self.fail_sent => {
                        let command = OrderCommand::Fail(FailOrder { reason, failed_at: now });
                        self.send_order(ctx, command, "fail").await?;
                        self.fail_sent = true;
                    }
                    Action::AcceptOrder { .. } | Action::FailOrder { .. } => {}
                    Action::Complete => {
                        let id = derived_id(self.order_id, "complete");
                        self.record(ctx, SagaCommand::Complete { at: now }, id).await?;
                        return Ok(Idle::Completed);
                    }
                }
            }
            if self.saga.state.saga().is_some_and(|s| s.completed) {
                return Ok(Idle::Completed);
            }
            if !progressed {
                return Ok(Idle::Waiting { wake });
            }
        }
    }

    async fn call_balance(
        &self,
        ctx: &SagaContext,
        step: Step,
        amount: Option<rust_decimal::Decimal>,
        idempotency_key: String,
    ) -> Result<BalanceReceipt, BalanceError> {
        let Some(saga) = self.saga.state.saga() else {
            return Err(BalanceError::Rejected("saga not started".into()));
        };
        let op = |amount: rust_decimal::Decimal| BalanceOp {
            user_id: saga.user_id,
            order_id: self.order_id,
            amount,
            idempotency_key: idempotency_key.clone(),
        };
        let started = std::time::Instant::now();
        // Exported, the call is the step's child, and a remote client carries its traceparent on.
        let span = traces::span(|| tracing::info_span!("balance.call", order_id = %self.order_id, %step));
        let call = async {
            match (step, amount) {
                (Step::Reserve, Some(amount)) => ctx.balance.reserve(op(amount)).await,
                (Step::Deduct, Some(amount)) => ctx.balance.deduct(op(amount)).await,
                (Step::Credit, Some(amount)) => ctx.balance.credit(op(amount)).await,
                (Step::Release, _) => {
                    ctx.balance
                        .release(ReleaseOp {
                            user_id: saga.user_id,
                            order_id: self.order_id,
                            idempotency_key: idempotency_key.clone(),
                        })
                        .await
                }
                (step, None) => Err(BalanceError::Rejected(format!("step {step} needs an amount"))),
            }
        };
        let result = call.instrument(span).await;
        tracing::debug!(order_id = %self.order_id, %step, elapsed_ms = started.elapsed().as_millis() as u64, ok = result.is_ok(), "balance call");
        result
    }

    /// Sends a command to the order; Ok when it was handled (or refused for
    /// good: the order moved on), an error when it must be sent again later.
    async fn send_order(&self, ctx: &SagaContext, command: OrderCommand, what: &str) -> Result<(), RunError> {
        ctx.before_effect()?;
        let message = self.order_message(command, what, None);
        let result = ctx.registry.execute(self.order_id, message).await;
        ctx.after_effect();
        match result {
            Ok(_) => Ok(()),
            Err(ActorError::Rejected(rejection)) => {
                tracing::debug!(order_id = %self.order_id, %rejection, "order refused the saga's {what}");
                Ok(())
            }
            Err(error) => Err(RunError::Order {
                order_id: self.order_id,
                what: what.to_owned(),
                error,
            }),
        }
    }
}

/// An order in `SagaContext::filling` for as long as this lives. Unless the
/// saga settled it, the reactor is then asked to match it: it skipped the
/// order meanwhile, and a MARKET order gets no tick of its own.
struct Filling<'a> {
    ctx: &'a SagaContext,
    order_id: Uuid,
    settled: bool,
}

impl<'a> Filling<'a> {
    fn mark(ctx: &'a SagaContext, order_id: Uuid) -> Self {
        ctx.filling
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(order_id);
        Self {
            ctx,
            order_id,
            settled: false,
        }
    }
}

impl Drop for Filling<'_> {
    fn drop(&mut self) {
        self.ctx
            .filling
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.order_id);
        if !self.settled {
            // Full: the order's next tick matches it.
            let _ = self.ctx.rematch.try_send(self.order_id);
        }
    }
}

/// What a co-located commit came to.
enum Colocated {
    /// Committed as staged; `Some` when the order was accepted and may be filled now.
    Done(Option<Box<Order>>),
    /// Nothing committed: the one-step-at-a-time path takes the input.
    Declined,
}

/// A co-located commit: what is planned in memory and committed as one.
#[derive(Clone, Copy)]
enum Commit<'a> {
    /// The saga's steps that `input` leads to, with the order's accept or fail.
    Staged(&'a SagaInput),
    /// The order's fill at this price, with the settlement it leads to.
    Fill(rust_decimal::Decimal),
}

/// One try of a co-located commit.
enum Tried {
    /// Committed, or found to have nothing to commit.
    Done(Colocated),
    /// A stream of the commit had moved: nothing was written.
    Lost(Conflict),
}

impl SagaRun {
    /// The input as commands for the saga's core, with the command id `apply` records it under.
    fn command_of(&self, input: &SagaInput, at: chrono::DateTime<chrono::Utc>) -> (SagaCommand, Uuid) {
        match input {
            SagaInput::Start {
                event_id,
                user_id,
                side,
                reserve_amount,
                ..
            } => (
                SagaCommand::Start {
                    order_id: self.order_id,
                    user_id: *user_id,
                    side: *side,
                    reserve_amount: *reserve_amount,
                    at,
                },
                Uuid::new_v5(&ENGINE_NAMESPACE, event_id.as_bytes()),
            ),
            SagaInput::Observe { event_id, order, .. } => (
                SagaCommand::Observe {
                    event_id: *event_id,
                    order: order.clone(),
                    at,
                },
                Uuid::new_v5(&ENGINE_NAMESPACE, event_id.as_bytes()),
            ),
        }
    }

    /// Applies `input` and every step it leads to as one commit with the
    /// embedded ledger (and with the order's accept or fail when the run
    /// ends there); a lost race on any stream of it reloads and plans again
    /// at once, a bounded number of times. Then, for an order the market can
    /// fill now, the fill and its settlement as a second commit.
    async fn apply_colocated(
        &mut self,
        ctx: &SagaContext,
        ledger: &EmbeddedLedger,
        input: &SagaInput,
    ) -> Result<bool, RunError> {
        let user_id = match (input, self.saga.state.saga()) {
            (SagaInput::Start { user_id, .. }, None) => *user_id,
            (SagaInput::Observe { .. }, Some(saga)) if !saga.completed => saga.user_id,
            _ => return Ok(false),
        };
        // From before the accept: the reactor must not fill the order between
        // the accept and this task's fill, or the fill and settlement part.
        let mut filling = Filling::mark(ctx, self.order_id);
        let mut turn = ledger.turn(user_id).await.map_err(|error| self.ledger_error(error))?;
        let accepted = match self.commit(ctx, &mut turn, Commit::Staged(input)).await? {
            Colocated::Declined => return Ok(false),
            Colocated::Done(accepted) => accepted,
        };
        if let Some(order) = accepted {
            self.fill_now(ctx, &mut turn, &order).await?;
        }
        filling.settled = self.saga.state.saga().is_some_and(|s| s.completed);
        Ok(true)
    }

    fn ledger_error(&self, error: BalanceError) -> RunError {
        match error {
            error @ BalanceError::Contended { .. } => RunError::BalanceContended {
                order_id: self.order_id,
                step: Step::Reserve,
                error,
            },
            other => RunError::Unreadable {
                order_id: self.order_id,
                reason: format!("the embedded ledger: {other}"),
            },
        }
    }

    /// Plans `what` and commits it as one append; a lost race on any stream
    /// of it reloads that stream and plans again at once, a bounded number of
    /// times (never the retry ladder: nothing failed, another writer was first).
    async fn commit(
        &mut self,
        ctx: &SagaContext,
        turn: &mut AccountTurn<'_>,
        what: Commit<'_>,
    ) -> Result<Colocated, RunError> {
        for _ in 0..=ctx.config.conflict_retries_max {
            let tried = match what {
                Commit::Staged(input) => self.try_staged(ctx, turn, input).await?,
                Commit::Fill(price) => self.try_fill(ctx, turn, price).await?,
            };
            match tried {
                Tried::Done(done) => return Ok(done),
                Tried::Lost(conflict) => self.reload_after(ctx, turn, &conflict).await?,
            }
        }
        Err(RunError::Contended(self.order_id))
    }

    async fn try_staged(
        &mut self,
        ctx: &SagaContext,
        turn: &mut AccountTurn<'_>,
        input: &SagaInput,
    ) -> Result<Tried, RunError> {
        let now = ctx.clock.now();
        let (command, command_id) = self.command_of(input, now);
        let staged = stage(
            self.saga.state.clone(),
            vec![command],
            &turn.planner,
            &ctx.config.retry_delays,
            now,
        )
        .map_err(|reason| RunError::Unreadable {
            order_id: self.order_id,
            reason,
        })?;
        if staged.events.is_empty() {
            return Ok(Tried::Done(Colocated::Declined));
        }
        let requests = requests(
            &staged,
            self.order_id,
            self.saga.version,
            command_id,
            &turn.planner,
            traces::current(None),
        )
        .map_err(|reason| RunError::Unreadable {
            order_id: self.order_id,
            reason,
        })?;
        let order_command = match &staged.stop {
            Stop::Accept { reserved_amount } if !self.accept_sent => Some((
                OrderCommand::Accept(AcceptOrder {
                    reserved_amount: *reserved_amount,
                    accepted_at: now,
                }),
                "accept",
            )),
            Stop::Fail { reason } if !self.fail_sent => Some((
                OrderCommand::Fail(FailOrder {
                    reason: reason.clone(),
                    failed_at: now,
                }),
                "fail",
            )),
            _ => None,
        };
        let started = Instant::now();
        ctx.before_effect()?;
        let outcome = match order_command {
            Some((command, what)) => {
                let co_written = requests.clone();
                let co_write = CoWrite(Arc::new(move |_: &Decided<'_>| Ok(co_written.clone())));
                let result = ctx
                    .registry
                    .execute(self.order_id, self.order_message(command, what, Some(co_write)))
                    .await;
                match result {
                    Ok(reply) => {
                        if what == "accept" {
                            self.accept_sent = true;
                        } else {
                            self.fail_sent = true;
                        }
                        let accepted = reply
                            .order
                            .filter(|order| what == "accept" && order.status == OrderStatus::Processing);
                        Ok((reply.co_written, accepted))
                    }
                    // The order moved on (cancelled, say): nothing was written.
                    Err(ActorError::Rejected(_) | ActorError::CoWriteRefused { .. }) => {
                        ctx.after_effect();
                        return Ok(Tried::Done(Colocated::Declined));
                    }
                    Err(ActorError::CoWriteConflict { conflict, .. }) => Err(conflict),
                    Err(error) => {
                        ctx.after_effect();
                        return Err(RunError::Order {
                            order_id: self.order_id,
                            what: what.to_owned(),
                            error,
                        });
                    }
                }
            }
            None => match append_atomic(ctx.store.as_ref(), requests).await {
                Ok(Ok(appended)) => Ok((appended, None)),
                Ok(Err(conflict)) => Err(conflict),
                Err(error) => {
                    ctx.after_effect();
                    return Err(RunError::Store(error));
                }
            },
        };
        ctx.after_effect();
        match outcome {
            Ok((appended, accepted)) => {
                self.committed(ctx, turn, staged, &appended, started);
                Ok(Tried::Done(Colocated::Done(accepted.map(Box::new))))
            }
            Err(conflict) => Ok(Tried::Lost(conflict)),
        }
    }

    /// Takes in what a co-located commit wrote: the saga's state and version,
    /// the account's, and the money steps' timings.
    fn committed(
        &mut self,
        ctx: &SagaContext,
        turn: &mut AccountTurn<'_>,
        staged: Staged,
        appended: &[crate::store::Appended],
        started: Instant,
    ) {
        let saga_stream = StreamId::saga(self.order_id);
        let account_stream = StreamId::account(turn.planner.user_id);
        for step in staged.events.iter().filter_map(|e| match e {
            SagaEvent::StepSucceeded(s) => Some(s.step),
            _ => None,
        }) {
            ctx.balance.observe_colocated(step.as_str(), started);
        }
        // A deduplicated saga append was written before (a retry after an
        // unknown outcome): the state held stays a true prefix, and the next
        // append conflicts, reloads and finds it.
        if let Some(saga) = appended.iter().find(|a| a.stream_id == saga_stream && !a.deduplicated) {
            self.saga.state = staged.state;
            self.saga.version = saga.last_version;
        }
        if let Some(account) = appended
            .iter()
            .find(|a| a.stream_id == account_stream && !a.deduplicated)
        {
            turn.committed(staged.account, account.last_version);
        }
    }

    async fn reload_after(
        &mut self,
        ctx: &SagaContext,
        turn: &mut AccountTurn<'_>,
        conflict: &Conflict,
    ) -> Result<(), RunError> {
        tracing::debug!(order_id = %self.order_id, %conflict, "a co-located commit lost a race; reloading");
        if conflict.stream_id == StreamId::account(turn.planner.user_id) {
            turn.reload().await.map_err(|error| self.ledger_error(error))
        } else {
            self.catch_up(ctx).await
        }
    }

    /// A command to the order under an id derived from `what`, so a resend
    /// after a crash is the same command. A fill is the market's doing; the
    /// rest the saga's.
    fn order_message(&self, command: OrderCommand, what: &str, co_write: Option<CoWrite>) -> ExecuteCommand {
        let actor = if what == "execute" { "market" } else { "saga" };
        ExecuteCommand {
            command,
            command_id: derived_id(self.order_id, what),
            metadata: EventMetadata {
                correlation_id: Some(self.order_id),
                causation_id: None,
                who: Some(actor.into()),
                source: Some(actor.into()),
                // The order continues the saga step's trace.
                trace: traces::current(None),
            },
            co_write,
        }
    }

    /// An order just accepted that the market fills at once (MARKET, or a
    /// limit already crossed): the fill, the saga's record of it and the
    /// settlement it leads to, as one commit. Anything else (a resting order,
    /// no price, a price the reservation cannot cover, a lost race with the
    /// matcher) is left to the reactor, which fills it the ordinary way.
    async fn fill_now(&mut self, ctx: &SagaContext, turn: &mut AccountTurn<'_>, order: &Order) -> Result<(), RunError> {
        let working = WorkingOrder::from_order(order);
        let Ok(quote) = ctx.market.current_price(order.symbol.as_str()).await else {
            return Ok(());
        };
        let price = match on_price(&working, quote.price) {
            Some(MatchAction::Execute { price }) if working.affordable_at(price) => price,
            _ => return Ok(()),
        };
        self.commit(ctx, turn, Commit::Fill(price)).await.map(|_| ())
    }

    async fn try_fill(
        &mut self,
        ctx: &SagaContext,
        turn: &mut AccountTurn<'_>,
        price: rust_decimal::Decimal,
    ) -> Result<Tried, RunError> {
        let now = ctx.clock.now();
        let slot: Arc<Mutex<Option<Staged>>> = Arc::new(Mutex::new(None));
        let co_write = {
            let (state, version, planner) = (self.saga.state.clone(), self.saga.version, turn.planner.clone());
            let (order_id, delays, slot) = (self.order_id, ctx.config.retry_delays.clone(), Arc::clone(&slot));
            let trace = traces::current(None);
            CoWrite(Arc::new(move |decided: &Decided<'_>| {
                let (event_id, total_value) = decided
                    .events
                    .iter()
                    .zip(decided.event_ids)
                    .find_map(|(event, id)| match event {
                        OrderEvent::OrderExecuted(e) => Some((*id, e.total_value)),
                        _ => None,
                    })
                    .ok_or("the order did not execute")?;
                let observe = SagaCommand::Observe {
                    event_id,
                    order: ObservedOrder::Executed { total_value },
                    at: now,
                };
                let staged = stage(state.clone(), vec![observe], &planner, &delays, now)?;
                if staged.stop != Stop::Completed {
                    return Err(format!("the settlement would stop at {:?}", staged.stop));
                }
                let command_id = Uuid::new_v5(&ENGINE_NAMESPACE, event_id.as_bytes());
                let requests = requests(&staged, order_id, version, command_id, &planner, trace.clone())?;
                *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(staged);
                Ok(requests)
            }))
        };
        let command = OrderCommand::Execute(ExecuteOrder {
            execution_price: price,
            market_price: price,
            executed_at: now,
        });
        let started = Instant::now();
        ctx.before_effect()?;
        let result = ctx
            .registry
            .execute(self.order_id, self.order_message(command, "execute", Some(co_write)))
            .await;
        ctx.after_effect();
        let conflict = match result {
            Ok(reply) => {
                let staged = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
                match staged {
                    Some(staged) if reply.appended.as_ref().is_some_and(|a| !a.deduplicated) => {
                        self.committed(ctx, turn, staged, &reply.co_written, started);
                    }
                    // Executed before this call: the saga reads what it holds.
                    _ => self.catch_up(ctx).await?,
                }
                return Ok(Tried::Done(Colocated::Done(None)));
            }
            // The matcher or a cancel got there first: the reactor carries on.
            Err(ActorError::Rejected(_) | ActorError::CoWriteRefused { .. }) => {
                return Ok(Tried::Done(Colocated::Declined))
            }
            Err(ActorError::CoWriteConflict { conflict, .. }) => conflict,
            Err(error) => {
                return Err(RunError::Order {
                    order_id: self.order_id,
                    what: "execute".into(),
                    error,
                })
            }
        };
        Ok(Tried::Lost(conflict))
    }
}

/// The budget of local retries in a row, and the pause before each.
struct LocalRetry {
    pauses: ExponentialBackoff,
    used: u32,
    max: u32,
    /// Whose pauses these are: the jitter is seeded from it.
    order_id: Uuid,
}

impl LocalRetry {
    fn new(config: &SagaConfig, order_id: Uuid) -> Self {
        Self {
            pauses: Self::pauses(order_id),
            used: 0,
            max: config.local_retries_max,
            order_id,
        }
    }

    fn pauses(order_id: Uuid) -> ExponentialBackoff {
        ExponentialBuilder::new()
            .with_min_delay(LOCAL_RETRY_DELAY_MIN)
            .with_max_delay(LOCAL_RETRY_DELAY_MAX)
            .with_factor(2.0)
            .with_jitter()
            .with_jitter_seed(crate::clock::jitter_seed(order_id))
            .without_max_times()
            .build()
    }

    /// The pause before the next try, or None when the budget is spent.
    fn pause(&mut self) -> Option<Duration> {
        if self.used >= self.max {
            return None;
        }
        self.used += 1;
        Some(self.pauses.next().unwrap_or(LOCAL_RETRY_DELAY_MAX))
    }

    /// A step went through: the next failure starts a fresh budget.
    fn reset(&mut self) {
        if self.used > 0 {
            self.used = 0;
            self.pauses = Self::pauses(self.order_id);
        }
    }
}

/// Reports a saga whose local retries ran out: loud in the log, visible in
/// health and metrics. Its order stays open in the reactor's low-water mark,
/// so a restarted engine resumes it, and so does the order's next event.
fn stall(ctx: &SagaContext, order_id: Uuid, error: &RunError) {
    tracing::error!(
        %order_id,
        %error,
        retries = ctx.config.local_retries_max,
        "saga stalled: its local retries ran out; it resumes when the engine restarts or its order moves"
    );
    ctx.health.saga_stalled(order_id, error.to_string());
}

/// One saga's task: applies inputs and drives the saga until it completes or
/// has nothing to do but wait for its order (then it ends; a later input
/// starts a new task that reloads from the stream). Local failures are
/// retried with growing pauses; past `local_retries_max` in a row the task
/// reports the saga stalled and ends.
pub(crate) async fn saga_task(
    ctx: Arc<SagaContext>,
    order_id: Uuid,
    generation: u64,
    mut inbox: mpsc::Receiver<SagaInput>,
    done: mpsc::UnboundedSender<(Uuid, u64)>,
) {
    let mut retry = LocalRetry::new(&ctx.config, order_id);
    // The reactor frees this task's slot on every way out but a halt.
    let give_up = |error: &RunError| {
        stall(&ctx, order_id, error);
        let _ = done.send((order_id, generation));
    };
    let first = inbox.try_recv().ok();
    // A saga this process starts with the embedded ledger needs no read: its
    // first commit expects an empty stream, and a conflict loads it.
    let fresh = matches!(first, Some(SagaInput::Start { .. })) && ctx.balance.colocated().is_some();
    let mut run = loop {
        if fresh {
            break SagaRun::unloaded(order_id);
        }
        match SagaRun::load(&ctx, order_id).await {
            Ok(run) => break run,
            Err(RunError::Halted(_)) => return,
            Err(error) => match retry.pause() {
                Some(pause) => {
                    tracing::warn!(%order_id, %error, pause_ms = pause.as_millis() as u64, "cannot load saga; retrying");
                    tokio::time::sleep(pause).await;
                }
                None => return give_up(&error),
            },
        }
    };
    retry.reset();
    if let Some(input) = first {
        if let Err(error) = apply_with_retry(&ctx, &mut run, input, &mut retry).await {
            if !matches!(error, RunError::Halted(_)) {
                give_up(&error);
            }
            return;
        }
    }
    let mut announced_idle = false;
    // Closed once the reactor forgot this task; pending timers still run out.
    let mut inbox_open = true;
    loop {
        while inbox_open {
            match inbox.try_recv() {
                Ok(input) => {
                    if let Err(error) = apply_with_retry(&ctx, &mut run, input, &mut retry).await {
                        if !matches!(error, RunError::Halted(_)) {
                            give_up(&error);
                        }
                        return;
                    }
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => inbox_open = false,
            }
        }
        // Exported, the steps driven here continue the trace of the saga's last input.
        let span = traces::span(|| tracing::info_span!("saga.drive", %order_id));
        traces::continue_trace(&span, run.trace.as_ref());
        let wake = match run.drive(&ctx).instrument(span).await {
            Ok(Idle::Completed) => {
                ctx.health.saga_moving(order_id);
                let _ = done.send((order_id, generation));
                return;
            }
            Ok(Idle::Waiting { wake }) => {
                retry.reset();
                ctx.health.saga_moving(order_id);
                wake
            }
            Err(RunError::Halted(_)) => return,
            Err(error) => match retry.pause() {
                Some(pause) => {
                    tracing::warn!(%order_id, %error, pause_ms = pause.as_millis() as u64, "saga step failed; retrying");
                    Some(
                        ctx.clock.now()
                            + chrono::Duration::from_std(pause).unwrap_or_else(|_| chrono::Duration::seconds(30)),
                    )
                }
                None => return give_up(&error),
            },
        };
        let input = match (wake, inbox_open) {
            (Some(at), open) => {
                let delay = (at - ctx.clock.now()).to_std().unwrap_or(Duration::ZERO);
                if !open {
                    tokio::time::sleep(delay).await;
                    continue;
                }
                // Biased: an input ready at the wake time is taken first, the
                // same way on every run (an unbiased select draws at random).
                tokio::select! {
                    biased;
                    input = inbox.recv() => input,
                    () = tokio::time::sleep(delay) => continue,
                }
            }
            // Nothing to wait for and nobody to hear from: a new input starts a new task.
            (None, false) => return,
            (None, true) => {
                // Nothing to do until the order moves: let the reactor forget this
                // task; inputs already queued are still delivered before `None`.
                if !announced_idle {
                    announced_idle = true;
                    let _ = done.send((order_id, generation));
                }
                inbox.recv().await
            }
        };
        match input {
            Some(input) => {
                if let Err(error) = apply_with_retry(&ctx, &mut run, input, &mut retry).await {
                    if !matches!(error, RunError::Halted(_)) {
                        give_up(&error);
                    }
                    return;
                }
            }
            None => inbox_open = false,
        }
    }
}

/// Records one input, retrying local failures within the task's budget.
/// Exported, the work is a span continuing the trace of the event the input
/// came from, and what it writes carries that span's context.
async fn apply_with_retry(
    ctx: &SagaContext,
    run: &mut SagaRun,
    input: SagaInput,
    retry: &mut LocalRetry,
) -> Result<(), RunError> {
    if !traces::enabled() {
        return apply_input(ctx, run, input, retry).await;
    }
    let span = tracing::info_span!("saga.step", order_id = %run.order_id, input = input.step_name());
    traces::continue_trace(&span, input.trace());
    if let Some(trace) = input.trace() {
        run.trace = Some(trace.clone());
    }
    apply_input(ctx, run, input, retry).instrument(span).await
}

async fn apply_input(
    ctx: &SagaContext,
    run: &mut SagaRun,
    input: SagaInput,
    retry: &mut LocalRetry,
) -> Result<(), RunError> {
    if let Some(ledger) = ctx.balance.colocated() {
        match run.apply_colocated(ctx, ledger, &input).await {
            Ok(true) => {
                retry.reset();
                return Ok(());
            }
            Ok(false) => {}
            Err(RunError::Halted(h)) => return Err(RunError::Halted(h)),
            Err(error) => {
                // The state held is still a true prefix of the stream: if the
                // commit landed after all, the one-step path's first append
                // conflicts, reloads and finds it.
                tracing::debug!(order_id = %run.order_id, %error, "co-located commit failed; going step by step");
            }
        }
    }
    loop {
        match run.apply(ctx, input.clone()).await {
            Ok(()) => {
                retry.reset();
                return Ok(());
            }
            Err(RunError::Halted(h)) => return Err(RunError::Halted(h)),
            Err(error) => match retry.pause() {
                Some(pause) => {
                    tracing::warn!(order_id = %run.order_id, %error, pause_ms = pause.as_millis() as u64, "cannot record saga input; retrying");
                    tokio::time::sleep(pause).await;
                }
                None => return Err(error),
            },
        }
    }
}
