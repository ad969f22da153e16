//! The shell around the saga core: loads a saga from its stream, records
//! what happened, performs what `next_actions` asks (balance calls, commands
//! to the order), and waits for the ladder's next rung.
//!
//! Two kinds of retry, never mixed: the balance service failing climbs the
//! seed's ladder (recorded in the saga's stream); the engine's own trouble
//! (the log, the order's actor, a ledger account contended by lost races)
//! is retried here within seconds, a bounded number of times in a row, and
//! past the bound the saga is reported stalled, loudly, never dropped.

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::crash::{CrashPoint, Halted};
use super::health::EngineHealth;
use crate::actors::{ActorError, ExecuteCommand, OrderRegistry};
use crate::aggregate::Aggregate;
use crate::balance::{BalanceError, BalanceOp, BalanceReceipt, BalanceService, ReleaseOp};
use crate::clock::Clock;
use crate::events::{encode, EventMetadata, StreamId};
use crate::order::{AcceptOrder, FailOrder, OrderCommand};
use crate::saga::{
    next_actions, Action, ObservedOrder, SagaAggregate, SagaCommand, SagaRejection, SagaState, Step, StepOutcome,
};
use crate::store::{append, fold_stream, AppendRequest, EventStore, FoldError, StoreError};

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
    },
    Observe {
        event_id: Uuid,
        order: ObservedOrder,
    },
}

pub(crate) struct SagaContext {
    pub store: Arc<dyn EventStore>,
    pub registry: OrderRegistry,
    pub balance: Arc<dyn BalanceService>,
    pub clock: Arc<dyn Clock>,
    pub config: SagaConfig,
    pub crash: Option<Arc<CrashPoint>>,
    pub health: Arc<EngineHealth>,
}

impl SagaContext {
    fn before_effect(&self) -> Result<(), RunError> {
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
    state: SagaState,
    version: u64,
    /// Order commands sent by this task; re-sent by a task after a restart (they are idempotent).
    accept_sent: bool,
    fail_sent: bool,
}

/// A command id derived from a name, so a retry after a crash is the same command.
fn derived_id(order_id: Uuid, what: &str) -> Uuid {
    Uuid::new_v5(&ENGINE_NAMESPACE, format!("{order_id}:{what}").as_bytes())
}

impl SagaRun {
    async fn load(ctx: &SagaContext, order_id: Uuid) -> Result<Self, RunError> {
        let mut run = Self {
            order_id,
            stream: StreamId::saga(order_id),
            state: SagaState::default(),
            version: 0,
            accept_sent: false,
            fail_sent: false,
        };
        run.catch_up(ctx).await?;
        Ok(run)
    }

    async fn catch_up(&mut self, ctx: &SagaContext) -> Result<(), RunError> {
        fold_stream::<SagaAggregate>(ctx.store.as_ref(), &self.stream, &mut self.state, &mut self.version)
            .await
            .map_err(|error| match error {
                FoldError::Store(error) => RunError::Store(error),
                other => RunError::Unreadable {
                    order_id: self.order_id,
                    reason: other.to_string(),
                },
            })
    }

    /// Decides and appends; Ok(false) when the command changes nothing.
    async fn record(&mut self, ctx: &SagaContext, command: SagaCommand, command_id: Uuid) -> Result<bool, RunError> {
        for _ in 0..=ctx.config.conflict_retries_max {
            let events = match SagaAggregate::decide(&self.state, &command) {
                Ok(events) if events.is_empty() => return Ok(false),
                Ok(events) => events,
                // A late or duplicate outcome, or work another process finished: nothing to record.
                Err(SagaRejection::NothingInFlight(_) | SagaRejection::StepNotDue { .. }) => return Ok(false),
                Err(rejection) => {
                    tracing::debug!(order_id = %self.order_id, %rejection, "saga command not applicable");
                    return Ok(false);
                }
            };
            let metadata = EventMetadata {
                correlation_id: Some(self.order_id),
                causation_id: Some(command_id),
                who: Some("saga".into()),
                source: Some("saga".into()),
                trace: None,
            };
            let new_events = events
                .iter()
                .enumerate()
                .map(|(i, e)| encode(e, Uuid::new_v5(&command_id, &i.to_le_bytes()), metadata.clone()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| RunError::Unreadable {
                    order_id: self.order_id,
                    reason: e.to_string(),
                })?;
            ctx.before_effect()?;
            let request = AppendRequest {
                stream_id: self.stream.clone(),
                expected_version: self.version,
                command_id: Some(command_id),
                events: new_events,
            };
            match append(ctx.store.as_ref(), request).await? {
                Ok(appended) if appended.deduplicated => {
                    ctx.after_effect();
                    self.catch_up(ctx).await?;
                    return Ok(true);
                }
                Ok(appended) => {
                    ctx.after_effect();
                    self.state = SagaAggregate::fold(std::mem::take(&mut self.state), &events);
                    self.version = appended.last_version;
                    return Ok(true);
                }
                // Another engine process drives this saga too: catch up and decide again.
                Err(_conflict) => self.catch_up(ctx).await?,
            }
        }
        Err(RunError::Contended(self.order_id))
    }

    async fn apply(&mut self, ctx: &SagaContext, input: SagaInput) -> Result<(), RunError> {
        let at = ctx.clock.now();
        let (command, command_id) = match input {
            SagaInput::Start {
                event_id,
                user_id,
                side,
                reserve_amount,
            } => (
                SagaCommand::Start {
                    order_id: self.order_id,
                    user_id,
                    side,
                    reserve_amount,
                    at,
                },
                event_id,
            ),
            SagaInput::Observe { event_id, order } => (SagaCommand::Observe { event_id, order, at }, event_id),
        };
        // The order event's id is the command id: observing it twice records it once.
        self.record(ctx, command, Uuid::new_v5(&ENGINE_NAMESPACE, command_id.as_bytes()))
            .await?;
        Ok(())
    }

    /// Performs actions until the saga must wait.
    async fn drive(&mut self, ctx: &SagaContext) -> Result<Idle, RunError> {
        loop {
            let now = ctx.clock.now();
            let mut progressed = false;
            let mut wake: Option<chrono::DateTime<chrono::Utc>> = None;
            for action in next_actions(&self.state, now) {
                match action {
                    Action::Attempt { step, amount } => {
                        let attempt = self.state.saga().map_or(0, |s| s.step(step).attempts) + 1;
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
            if self.state.saga().is_some_and(|s| s.completed) {
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
        let Some(saga) = self.state.saga() else {
            return Err(BalanceError::Rejected("saga not started".into()));
        };
        let op = |amount: rust_decimal::Decimal| BalanceOp {
            user_id: saga.user_id,
            order_id: self.order_id,
            amount,
            idempotency_key: idempotency_key.clone(),
        };
        let started = std::time::Instant::now();
        let result = match (step, amount) {
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
        };
        tracing::debug!(order_id = %self.order_id, %step, elapsed_ms = started.elapsed().as_millis() as u64, ok = result.is_ok(), "balance call");
        result
    }

    /// Sends a command to the order; Ok when it was handled (or refused for
    /// good: the order moved on), an error when it must be sent again later.
    async fn send_order(&self, ctx: &SagaContext, command: OrderCommand, what: &str) -> Result<(), RunError> {
        ctx.before_effect()?;
        let message = ExecuteCommand {
            command,
            command_id: derived_id(self.order_id, what),
            metadata: EventMetadata {
                correlation_id: Some(self.order_id),
                causation_id: None,
                who: Some("saga".into()),
                source: Some("saga".into()),
                trace: None,
            },
        };
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
    let mut run = loop {
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
        let wake = match run.drive(&ctx).await {
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
async fn apply_with_retry(
    ctx: &SagaContext,
    run: &mut SagaRun,
    input: SagaInput,
    retry: &mut LocalRetry,
) -> Result<(), RunError> {
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
