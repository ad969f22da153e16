//! The reactor: follows the log from its checkpoint and reacts. Order events
//! start and inform sagas and keep the index of working orders; market ticks
//! fill or trigger those orders.
//!
//! Its checkpoint is a low-water mark: the position before the oldest order
//! whose saga has not completed. After a restart it replays from there, which
//! rebuilds every open saga and working order; replayed reactions are absorbed
//! by idempotency (derived command ids, balance keys).
//!
//! An order event it cannot read stops it for that order, loudly, as a
//! projection stops: skipping one would leave its order PENDING with no saga
//! and nobody told. The event is named in the log, in `/health/ready` (503)
//! and in the metrics; the checkpoint never passes it, so every restart meets
//! it again; nothing later in that order's stream is reacted to. Other orders
//! keep flowing: one bad row must not halt every order's saga and matching.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch};
use uuid::Uuid;

use super::matching::{on_price, MatchAction, WorkingOrder};
use super::saga_runner::{saga_task, SagaContext, SagaInput, ENGINE_NAMESPACE};
use crate::actors::{ActorError, ExecuteCommand};
use crate::cluster::{Ownership, Partition};
use crate::events::{EventMetadata, TraceContext};
use crate::market::{MarketData, Tick};
use crate::order::{ExecuteOrder, FailOrder, OrderCommand, OrderEvent, OrderSubmitted, TriggerOrder};
use crate::projections::{describe_poison, FeedEvent, LogFeed};
use crate::saga::{reserve_amount, ObservedOrder};
use crate::store::StoreError;
use crate::telemetry::traces;

/// The checkpoint name of the reactor.
pub const REACTOR_CHECKPOINT: &str = "engine.reactor";
/// How often the low-water mark is saved.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
/// Submissions handed to the reactor in-process, waiting for it; past this
/// the submitter does not wait, and the reactor meets them on the log instead.
pub(crate) const IN_PROCESS_STARTS_QUEUE_MAX: usize = 4_096;
/// Orders a saga handed back to the matcher, waiting for the reactor.
pub(crate) const REMATCH_QUEUE_MAX: usize = 4_096;
/// Orders started in-process whose submission the tail has not reached yet;
/// past this, new submissions wait for the tail (a stopped tail must not
/// grow memory without bound).
const IN_PROCESS_STARTED_MAX: usize = 100_000;

/// A submission just appended by this process: its saga starts now instead
/// of when the tail reaches it.
#[derive(Debug, Clone)]
pub(crate) struct Submitted {
    pub order_id: Uuid,
    pub event_id: Uuid,
    pub position: u64,
    pub event: OrderSubmitted,
    /// The trace context the submission was written with.
    pub trace: Option<TraceContext>,
}

/// A fill or trigger sent this long ago without an answer may be sent again.
const MATCH_RESEND_AFTER: Duration = Duration::from_secs(5);
/// Wait before reading the log again after the database failed under the
/// reactor. A follower retries transient failures for as long as the engine
/// runs (readiness reports the database meanwhile), always hearing shutdown.
const READ_RETRY_DELAY: Duration = Duration::from_secs(1);

struct SagaSlot {
    inbox: mpsc::Sender<SagaInput>,
    generation: u64,
}

/// Why one run of the reactor over a set of partitions ended.
enum Ended {
    Shutdown,
    /// The partitions this process owns changed: run again over the new set.
    Rebalanced,
}

/// The checkpoint of one partition's reactor work, in a cluster of `count` partitions.
pub fn partition_checkpoint(count: u16, partition: Partition) -> String {
    format!("{REACTOR_CHECKPOINT}.{count}.{partition}")
}

pub(crate) struct Reactor {
    ctx: Arc<SagaContext>,
    market: Arc<dyn MarketData>,
    sagas: HashMap<Uuid, SagaSlot>,
    next_generation: u64,
    saga_done_tx: mpsc::UnboundedSender<(Uuid, u64)>,
    /// Open sagas by the position of their order's submission: the low-water mark.
    open_since: BTreeMap<u64, Uuid>,
    open_position: HashMap<Uuid, u64>,
    /// Submissions of orders not yet final, for building working orders.
    submitted: HashMap<Uuid, OrderSubmitted>,
    working: HashMap<Uuid, WorkingOrder>,
    by_symbol: HashMap<String, HashSet<Uuid>>,
    /// When each fill or trigger was sent, on the runtime's clock (virtual in tests).
    in_flight: HashMap<Uuid, tokio::time::Instant>,
    /// With traces exported, each working order's acceptance trace: the
    /// market's fill or trigger continues it. Empty when traces are off.
    traces: HashMap<Uuid, TraceContext>,
    match_done_tx: mpsc::UnboundedSender<Uuid>,
    /// Orders whose stream holds an event the reactor could not read: it
    /// reacts to nothing more of theirs.
    poisoned: HashSet<Uuid>,
    /// The first such event's position: the checkpoint stays below it.
    first_poison: Option<u64>,
    /// Orders whose saga completes within the page being routed (a saga with
    /// the embedded ledger settles in the commit that fills the order): their
    /// events need no reaction, only bookkeeping.
    settled_in_page: HashSet<Uuid>,
    /// Orders whose saga was started in-process, until the tail reaches their submission.
    started_in_process: HashSet<Uuid>,
    /// The partitions this run reacts to (None: all, standalone).
    owned: Option<std::collections::BTreeSet<Partition>>,
    /// Each open order's partition, for the per-partition checkpoints.
    open_partition: HashMap<Uuid, Partition>,
    /// Every saga task this run started, so a rebalance can stop them: the
    /// new owner resumes them from their streams.
    tasks: Vec<tokio::task::AbortHandle>,
}

/// The orders whose `SagaCompleted` is in `page`.
fn settled_in(page: &[Arc<FeedEvent>]) -> HashSet<Uuid> {
    page.iter()
        .map(|e| &e.recorded)
        .filter(|e| e.event_type == "SagaCompleted")
        .filter_map(|e| e.stream_id.uuid_in("saga"))
        .collect()
}

impl Reactor {
    pub(crate) async fn run(
        ctx: Arc<SagaContext>,
        market: Arc<dyn MarketData>,
        feed: LogFeed,
        mut submissions: mpsc::Receiver<Submitted>,
        mut rematch: mpsc::Receiver<Uuid>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut ownership = ctx.cluster.subscribe();
        loop {
            let owned = ownership.borrow_and_update().clone();
            let ended = Self::run_owning(
                &ctx,
                &market,
                &feed,
                &owned,
                &mut ownership,
                &mut submissions,
                &mut rematch,
                &mut shutdown,
            )
            .await;
            match ended {
                Ended::Shutdown => return,
                Ended::Rebalanced => {
                    tracing::info!("partitions changed hands; the reactor runs again over its new share")
                }
            }
        }
    }

    /// The checkpoints this run keeps: the reactor's own when standalone,
    /// one per owned partition in a cluster.
    fn checkpoints(ctx: &SagaContext, owned: &Ownership) -> Vec<(String, Option<Partition>)> {
        match owned.partitions() {
            None => vec![(REACTOR_CHECKPOINT.to_owned(), None)],
            Some(partitions) => {
                let count = ctx.cluster.partitioning().count();
                partitions
                    .iter()
                    .map(|p| (partition_checkpoint(count, *p), Some(*p)))
                    .collect()
            }
        }
    }

    /// Where this run starts: the lowest of its checkpoints. A partition
    /// never saved on its own starts from the standalone checkpoint, which
    /// was the whole engine's before it became a cluster.
    async fn start_position(ctx: &SagaContext, owned: &Ownership) -> Result<u64, StoreError> {
        let legacy = ctx.store.load_checkpoint(REACTOR_CHECKPOINT).await?;
        let mut start: Option<u64> = None;
        for (name, partition) in Self::checkpoints(ctx, owned) {
            let at = match partition {
                None => legacy,
                Some(_) => match ctx.store.load_checkpoint(&name).await? {
                    0 => legacy,
                    at => at,
                },
            };
            start = Some(start.map_or(at, |s| s.min(at)));
        }
        Ok(start.unwrap_or(legacy))
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_owning(
        ctx: &Arc<SagaContext>,
        market: &Arc<dyn MarketData>,
        feed: &LogFeed,
        owned: &Ownership,
        ownership: &mut watch::Receiver<Ownership>,
        submissions: &mut mpsc::Receiver<Submitted>,
        rematch: &mut mpsc::Receiver<Uuid>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Ended {
        if owned.partitions().is_some_and(|p| p.is_empty()) {
            // Nothing to react to: wait for a share, dropping in-process
            // starts (their owner meets them on the log).
            let mut ownership_open = true;
            loop {
                tokio::select! {
                    _ = shutdown.changed() => return Ended::Shutdown,
                    // A closed watch (the membership stopped) never changes again.
                    changed = ownership.changed(), if ownership_open => match changed {
                        Err(_) => ownership_open = false,
                        Ok(()) if !ownership.borrow().same_work(owned) => return Ended::Rebalanced,
                        Ok(()) => {}
                    },
                    Some(_) = submissions.recv() => {}
                    Some(_) = rematch.recv() => {}
                }
            }
        }
        let start = loop {
            match Self::start_position(ctx, owned).await {
                Ok(position) => break position,
                Err(error) => {
                    tracing::warn!(%error, "reactor cannot read its checkpoint; retrying");
                    tokio::select! {
                        _ = shutdown.changed() => return Ended::Shutdown,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        };
        let checkpoints = Self::checkpoints(ctx, owned);
        tracing::info!(
            from_position = start,
            partitions = owned
                .partitions()
                .map_or(usize::from(ctx.cluster.partitioning().count()), |p| p.len()),
            "reactor resuming"
        );
        let (saga_done_tx, mut saga_done_rx) = mpsc::unbounded_channel();
        let (match_done_tx, mut match_done_rx) = mpsc::unbounded_channel();
        let mut ticks = market.subscribe();
        let mut reactor = Reactor {
            ctx: Arc::clone(ctx),
            market: Arc::clone(market),
            sagas: HashMap::new(),
            next_generation: 0,
            saga_done_tx,
            open_since: BTreeMap::new(),
            open_position: HashMap::new(),
            submitted: HashMap::new(),
            working: HashMap::new(),
            by_symbol: HashMap::new(),
            in_flight: HashMap::new(),
            traces: HashMap::new(),
            match_done_tx,
            poisoned: HashSet::new(),
            first_poison: None,
            settled_in_page: HashSet::new(),
            started_in_process: HashSet::new(),
            owned: owned.partitions().cloned(),
            open_partition: HashMap::new(),
            tasks: Vec::new(),
        };
        let mut tail = feed.follow(start);
        let mut saved: HashMap<String, u64> = HashMap::new();
        let mut save_timer = tokio::time::interval(CHECKPOINT_INTERVAL);
        let mut ownership_open = owned.is_clustered();
        let ended = loop {
            if ctx.crash.as_ref().is_some_and(|c| c.is_halted()) {
                return Ended::Shutdown;
            }
            // Biased, in a fixed order, so one seed of the simulation replays the
            // same interleaving (an unbiased select draws from a random source);
            // the cheap, bounded branches come before the log, which is never
            // empty under load and would otherwise starve them.
            tokio::select! {
                biased;
                _ = shutdown.changed() => break Ended::Shutdown,
                // A closed watch (the membership stopped) never changes again.
                changed = ownership.changed(), if ownership_open => match changed {
                    Err(_) => ownership_open = false,
                    Ok(()) if !ownership.borrow().same_work(owned) => break Ended::Rebalanced,
                    Ok(()) => {}
                },
                Some((order_id, generation)) = saga_done_rx.recv() => {
                    if reactor.sagas.get(&order_id).is_some_and(|s| s.generation == generation) {
                        reactor.sagas.remove(&order_id);
                    }
                }
                Some(order_id) = match_done_rx.recv() => {
                    reactor.in_flight.remove(&order_id);
                }
                _ = save_timer.tick() => {
                    reactor.tasks.retain(|task| !task.is_finished());
                    // Lapsed leases: another process may own these partitions now.
                    if ctx.cluster.is_valid() {
                        reactor.save_checkpoints(&checkpoints, tail.position(), &mut saved).await;
                    }
                }
                tick = ticks.recv() => match tick {
                    Ok(tick) => reactor.on_tick(&tick),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, "reactor lagged behind the tick feed; later ticks carry the latest prices");
                    }
                    Err(broadcast::error::RecvError::Closed) => ticks = reactor.market.subscribe(),
                },
                Some(submitted) = submissions.recv() => reactor.start_in_process(submitted, tail.position()).await,
                Some(order_id) = rematch.recv() => reactor.match_now(order_id).await,
                batch = tail.next_batch(), if reactor.sagas.len() < ctx.config.active_max => match batch {
                    Ok(batch) => {
                        reactor.settled_in_page = settled_in(&batch);
                        for event in &batch {
                            if let Err(reason) = reactor.route(event).await {
                                tracing::error!(
                                    checkpoint = REACTOR_CHECKPOINT,
                                    %reason,
                                    "reactor stopped on a poison event; its order gets no reaction until it is repaired"
                                );
                                reactor.first_poison.get_or_insert(event.recorded.global_position);
                                ctx.health.reactor_stopped(reason);
                            }
                        }
                    }
                    Err(error @ StoreError::Corrupt { .. }) => {
                        // A hole in the log or an unreadable row: no retry reads past it.
                        let reason = format!("the log cannot be read past position {}: {error}", tail.position());
                        tracing::error!(checkpoint = REACTOR_CHECKPOINT, %reason, "reactor stopped");
                        ctx.health.reactor_stopped(reason);
                        return Ended::Shutdown;
                    }
                    Err(error) => {
                        // Anything else may pass (a restart, a timeout under load): retry, hearing shutdown.
                        tracing::error!(%error, "reactor cannot read the log; retrying");
                        tokio::select! {
                            _ = shutdown.changed() => break Ended::Shutdown,
                            () = tokio::time::sleep(READ_RETRY_DELAY) => {}
                        }
                    }
                },
            }
        };
        if ctx.cluster.is_valid() {
            reactor
                .save_checkpoints(&checkpoints, tail.position(), &mut saved)
                .await;
        }
        if matches!(ended, Ended::Rebalanced) {
            // The next run (here or at the new owner) resumes them from their streams.
            reactor.stop_sagas();
        }
        ended
    }

    fn stop_sagas(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        self.sagas.clear();
    }

    /// Saves each checkpoint that moved: the standalone one, or one per partition.
    async fn save_checkpoints(
        &self,
        checkpoints: &[(String, Option<Partition>)],
        tail_position: u64,
        saved: &mut HashMap<String, u64>,
    ) {
        let oldest = self.oldest_open(checkpoints.len());
        for (name, partition) in checkpoints {
            let open = match partition {
                None => self.open_since.keys().next(),
                Some(partition) => oldest.get(partition),
            };
            let mark = self.low_water_mark(open.copied(), tail_position);
            if saved.get(name) == Some(&mark) {
                continue;
            }
            match self.ctx.store.save_checkpoint(name, mark).await {
                Ok(()) => {
                    saved.insert(name.clone(), mark);
                }
                Err(error) => {
                    tracing::warn!(%error, checkpoint = %name, "reactor could not save its checkpoint; it will replay a little more");
                }
            }
        }
    }

    /// The oldest open submission of each partition, in one pass over the
    /// open orders (oldest first), stopping once `partitions` are found.
    fn oldest_open(&self, partitions: usize) -> HashMap<Partition, u64> {
        let mut oldest = HashMap::new();
        if self.owned.is_none() {
            return oldest;
        }
        for (position, order_id) in &self.open_since {
            if let Some(partition) = self.open_partition.get(order_id) {
                oldest.entry(*partition).or_insert(*position);
                if oldest.len() == partitions {
                    break;
                }
            }
        }
        oldest
    }

    /// The position before `oldest_open` (the tail's when nothing is open),
    /// never past a poison event.
    fn low_water_mark(&self, oldest_open: Option<u64>, tail_position: u64) -> u64 {
        let open = match oldest_open {
            Some(oldest) => oldest.saturating_sub(1),
            None => tail_position,
        };
        // Never past a poison event: a restart must meet it, and say so, again.
        self.first_poison
            .map_or(open, |position| open.min(position.saturating_sub(1)))
    }

    /// Whether this run reacts to `user_id`'s orders.
    fn owns_user(&self, user_id: Uuid) -> bool {
        match &self.owned {
            None => true,
            Some(owned) => owned.contains(&self.ctx.cluster.partitioning().of_user(user_id)),
        }
    }

    /// Starts the saga of an order this process just submitted, without
    /// waiting for the tail to bring its submission back.
    async fn start_in_process(&mut self, submitted: Submitted, tail_position: u64) {
        let order_id = submitted.order_id;
        if !self.owns_user(submitted.event.user_id)
            || submitted.position <= tail_position
            || self.poisoned.contains(&order_id)
            || self.sagas.len() >= self.ctx.config.active_max
            || self.started_in_process.len() >= IN_PROCESS_STARTED_MAX
        {
            // The tail has reacted to it already, or will.
            return;
        }
        self.started_in_process.insert(order_id);
        self.on_submitted(
            order_id,
            submitted.event_id,
            submitted.position,
            &submitted.event,
            submitted.trace,
        )
        .await;
    }

    async fn on_submitted(
        &mut self,
        order_id: Uuid,
        event_id: Uuid,
        position: u64,
        submitted: &OrderSubmitted,
        trace: Option<TraceContext>,
    ) {
        self.open_since.insert(position, order_id);
        self.open_position.insert(order_id, position);
        self.open_partition
            .insert(order_id, self.ctx.cluster.partitioning().of_user(submitted.user_id));
        self.submitted.insert(order_id, submitted.clone());
        let input = SagaInput::Start {
            event_id,
            user_id: submitted.user_id,
            side: submitted.side,
            reserve_amount: reserve_amount(submitted, self.ctx.config.market_buffer_bps),
            trace,
        };
        self.tell_saga(order_id, input).await;
    }

    /// Reacts to one event; Err names an order event that cannot be reacted to.
    async fn route(&mut self, event: &FeedEvent) -> Result<(), String> {
        let recorded = &event.recorded;
        match recorded.stream_id.category() {
            "order" => {}
            "saga" => {
                if recorded.event_type == "SagaCompleted" {
                    if let Some(order_id) = recorded.stream_id.uuid_in("saga") {
                        if let Some(position) = self.open_position.remove(&order_id) {
                            self.open_since.remove(&position);
                        }
                        self.open_partition.remove(&order_id);
                    }
                }
                return Ok(());
            }
            _ => return Ok(()),
        }
        let Some(order_id) = recorded.stream_id.uuid_in("order") else {
            return Err(describe_poison(
                recorded,
                "reacted to",
                "its stream is not order-<uuid>",
            ));
        };
        if self.poisoned.contains(&order_id) {
            return Ok(());
        }
        let event = match event.order_event() {
            Some(Ok(event)) => event,
            // Not reachable: an order stream's event always carries its decode.
            None => return Ok(()),
            Some(Err(error)) => {
                self.poisoned.insert(order_id);
                self.forget_working(order_id);
                return Err(describe_poison(recorded, "reacted to", &error.to_string()));
            }
        };
        // In a cluster, another process reacts to other partitions' orders.
        let ours = match event {
            OrderEvent::OrderSubmitted(submitted) => self.owns_user(submitted.user_id),
            _ => {
                self.owned.is_none()
                    || self.open_position.contains_key(&order_id)
                    || self.submitted.contains_key(&order_id)
            }
        };
        if !ours {
            return Ok(());
        }
        if self.settled_in_page.contains(&order_id) {
            if matches!(event, OrderEvent::OrderSubmitted(_)) && !self.started_in_process.remove(&order_id) {
                // Opened and settled in this page: the mark never stops here.
                self.open_since.insert(recorded.global_position, order_id);
                self.open_position.insert(order_id, recorded.global_position);
                if let OrderEvent::OrderSubmitted(submitted) = event {
                    self.open_partition
                        .insert(order_id, self.ctx.cluster.partitioning().of_user(submitted.user_id));
                }
            } else {
                self.forget_working(order_id);
            }
            return Ok(());
        }
        let observed = match event {
            OrderEvent::OrderSubmitted(submitted) => {
                if !self.started_in_process.remove(&order_id) {
                    self.on_submitted(
                        order_id,
                        recorded.event_id,
                        recorded.global_position,
                        submitted,
                        traces::kept(recorded.metadata.trace.as_ref()),
                    )
                    .await;
                }
                return Ok(());
            }
            OrderEvent::OrderAccepted(accepted) => {
                if let Some(submitted) = self.submitted.get(&order_id) {
                    let working = WorkingOrder::accepted(submitted, accepted.reserved_amount);
                    self.by_symbol
                        .entry(working.symbol.to_string())
                        .or_default()
                        .insert(order_id);
                    self.working.insert(order_id, working);
                    if let Some(trace) = traces::kept(recorded.metadata.trace.as_ref()) {
                        self.traces.insert(order_id, trace);
                    }
                    self.match_now(order_id).await;
                }
                return Ok(());
            }
            OrderEvent::OrderTriggered(_) => {
                if let Some(working) = self.working.get_mut(&order_id) {
                    working.triggered = true;
                }
                self.in_flight.remove(&order_id);
                self.match_now(order_id).await;
                return Ok(());
            }
            OrderEvent::OrderExecuted(e) => ObservedOrder::Executed {
                total_value: e.total_value,
            },
            OrderEvent::OrderCancelled(e) => ObservedOrder::Cancelled {
                reason: e.reason.clone(),
            },
            OrderEvent::OrderFailed(e) => ObservedOrder::Failed {
                reason: e.reason.clone(),
            },
        };
        self.forget_working(order_id);
        self.tell_saga(
            order_id,
            SagaInput::Observe {
                event_id: recorded.event_id,
                order: observed,
                trace: traces::kept(recorded.metadata.trace.as_ref()),
            },
        )
        .await;
        Ok(())
    }

    fn forget_working(&mut self, order_id: Uuid) {
        self.submitted.remove(&order_id);
        self.in_flight.remove(&order_id);
        self.traces.remove(&order_id);
        if let Some(working) = self.working.remove(&order_id) {
            if let Some(ids) = self.by_symbol.get_mut(working.symbol.as_str()) {
                ids.remove(&order_id);
            }
        }
    }

    async fn tell_saga(&mut self, order_id: Uuid, input: SagaInput) {
        if let Some(slot) = self.sagas.get(&order_id) {
            match slot.inbox.send(input.clone()).await {
                Ok(()) => return,
                // The task ended: start another, which reloads from the stream.
                Err(_) => {
                    self.sagas.remove(&order_id);
                }
            }
        }
        let (tx, rx) = mpsc::channel(self.ctx.config.inbox_capacity.max(1));
        self.next_generation += 1;
        let generation = self.next_generation;
        // Capacity is at least one and the receiver is alive: this cannot fail.
        let _ = tx.try_send(input);
        let task = tokio::spawn(saga_task(
            Arc::clone(&self.ctx),
            order_id,
            generation,
            rx,
            self.saga_done_tx.clone(),
        ));
        self.tasks.push(task.abort_handle());
        self.sagas.insert(order_id, SagaSlot { inbox: tx, generation });
    }

    /// An order just became able to fill (accepted, or triggered): try the current price.
    async fn match_now(&mut self, order_id: Uuid) {
        let Some(symbol) = self.working.get(&order_id).map(|w| w.symbol.to_string()) else {
            return;
        };
        match self.market.current_price(&symbol).await {
            Ok(quote) => self.try_match(order_id, quote.price),
            Err(error) => tracing::warn!(%order_id, %error, "no price to match against; waiting for the next tick"),
        }
    }

    fn on_tick(&mut self, tick: &Tick) {
        let mut ids: Vec<Uuid> = self
            .by_symbol
            .get(tick.symbol.as_str())
            .map(|ids| ids.iter().copied().collect())
            .unwrap_or_default();
        // A set's order is random per process; fills go out in a fixed order.
        ids.sort_unstable();
        for order_id in ids {
            self.try_match(order_id, tick.price);
        }
    }

    fn try_match(&mut self, order_id: Uuid, price: rust_decimal::Decimal) {
        let Some(working) = self.working.get(&order_id) else {
            return;
        };
        // Lapsed leases: the order may have another owner by now.
        if !self.ctx.cluster.is_valid() {
            return;
        }
        // Its saga is filling it with the settlement in one commit; a fill
        // from here would race it. Should that fail, the next tick fills it.
        if self
            .ctx
            .filling
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&order_id)
        {
            return;
        }
        if self
            .in_flight
            .get(&order_id)
            .is_some_and(|sent| sent.elapsed() < MATCH_RESEND_AFTER)
        {
            return;
        }
        let now = self.ctx.clock.now();
        let (command, what) = match on_price(working, price) {
            None => return,
            Some(MatchAction::Trigger { market_price }) => (
                OrderCommand::Trigger(TriggerOrder {
                    market_price,
                    triggered_at: now,
                }),
                "trigger".to_owned(),
            ),
            Some(MatchAction::Execute { price }) if working.affordable_at(price) => (
                OrderCommand::Execute(ExecuteOrder {
                    execution_price: price,
                    market_price: price,
                    executed_at: now,
                }),
                "execute".to_owned(),
            ),
            Some(MatchAction::Execute { price }) => (
                OrderCommand::Fail(FailOrder {
                    reason: format!(
                        "the market moved to {price}: {} × {price} exceeds the {} reserved for this order",
                        working.quantity, working.reserved_amount
                    ),
                    failed_at: now,
                }),
                "fail:unaffordable".to_owned(),
            ),
        };
        self.in_flight.insert(order_id, tokio::time::Instant::now());
        let registry = self.ctx.registry.clone();
        let done = self.match_done_tx.clone();
        let message = ExecuteCommand {
            command,
            command_id: Uuid::new_v5(&ENGINE_NAMESPACE, format!("{order_id}:{what}").as_bytes()),
            metadata: EventMetadata {
                correlation_id: Some(order_id),
                causation_id: None,
                who: Some("market".into()),
                source: Some("market".into()),
                trace: self.traces.get(&order_id).cloned(),
            },
            co_write: None,
        };
        tokio::spawn(async move {
            match registry.execute(order_id, message).await {
                Ok(_) | Err(ActorError::Rejected(_)) => {}
                Err(error) => tracing::warn!(%order_id, %error, "could not send a fill to the order"),
            }
            let _ = done.send(order_id);
        });
    }
}
