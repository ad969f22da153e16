//! Finds or starts the actor of an order, keeps the number of live actors
//! under a cap, forgets actors that passivated, and owns the threads
//! (actix arbiters) the actors are spread over.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix::MailboxError;
use uuid::Uuid;

use super::error::{ActorError, StartError};
use super::order_actor::{CommandReply, ExecuteCommand, GetOrder, OrderActor, Passivate};
use crate::order::Order;
use crate::store::EventStore;

/// How often a send is retried when it reached an actor that was stopping.
const STOPPED_ACTOR_RETRIES_MAX: u32 = 3;

/// Most threads the order actors are spread over, whatever the configuration
/// asks: one per core of any machine this engine is meant for, and a bound
/// on the threads a mistyped setting can start.
pub const ACTOR_THREADS_MAX: usize = 64;

#[derive(Debug, Clone)]
pub struct ActorConfig {
    /// An actor idle this long stops; its order rehydrates on the next command.
    pub passivate_after: Duration,
    /// Most actors alive at once; the least recently used are passivated beyond it.
    pub live_actors_max: usize,
    /// Commands queued per actor before senders wait.
    pub mailbox_capacity: usize,
    /// Reload-and-retry rounds when another writer appended first.
    pub conflict_retries_max: u32,
    /// Threads (actix arbiters) the actors are spread over, by order id. 1 runs
    /// every actor on the arbiter that creates the registry, as the
    /// deterministic tests need; more starts that many arbiters of the
    /// registry's own (at most [`ACTOR_THREADS_MAX`]).
    pub actor_threads: usize,
}

impl Default for ActorConfig {
    fn default() -> Self {
        Self {
            passivate_after: Duration::from_secs(60),
            live_actors_max: 10_000,
            mailbox_capacity: 64,
            conflict_retries_max: 5,
            actor_threads: 1,
        }
    }
}

impl ActorConfig {
    pub(crate) fn passivation_check_interval(&self) -> Duration {
        (self.passivate_after / 4).max(Duration::from_millis(10))
    }
}

struct Entry {
    addr: Addr<OrderActor>,
    generation: u64,
    last_used: Instant,
}

struct Inner {
    live: Mutex<HashMap<Uuid, Entry>>,
    /// Where actors start, picked by order id ([`shard_of`]): the creator's
    /// arbiter alone, or one handle per arbiter in `owned`.
    arbiters: Vec<ArbiterHandle>,
    /// The arbiters this registry started (empty with one actor thread); taken
    /// out, stopped and joined by `stop_all`.
    owned: Mutex<Vec<Arbiter>>,
    store: Arc<dyn EventStore>,
    config: ActorConfig,
    next_generation: AtomicU64,
}

/// Lets an actor remove itself from the registry when it stops, unless a
/// newer actor for the same order has already replaced it.
pub(crate) struct RegistryLink {
    inner: Weak<Inner>,
    generation: u64,
}

impl RegistryLink {
    pub(crate) fn deregister(&self, order_id: Uuid) {
        if let Some(inner) = self.inner.upgrade() {
            let mut live = inner.live.lock().unwrap_or_else(PoisonError::into_inner);
            if live.get(&order_id).is_some_and(|e| e.generation == self.generation) {
                live.remove(&order_id);
            }
        }
    }
}

/// The directory of live order actors. Cheap to clone.
#[derive(Clone)]
pub struct OrderRegistry {
    inner: Arc<Inner>,
}

impl OrderRegistry {
    /// Creates a registry whose actors run on the current actix arbiter
    /// (`config.actor_threads` 1) or on that many arbiters started here.
    pub fn new(store: Arc<dyn EventStore>, config: ActorConfig) -> Result<Self, StartError> {
        let threads = config.actor_threads.clamp(1, ACTOR_THREADS_MAX);
        let (arbiters, owned) = if threads == 1 {
            (vec![Arbiter::try_current().ok_or(StartError::NoArbiter)?], Vec::new())
        } else {
            let owned = start_arbiters(threads)?;
            (owned.iter().map(Arbiter::handle).collect(), owned)
        };
        Ok(Self {
            inner: Arc::new(Inner {
                live: Mutex::new(HashMap::new()),
                arbiters,
                owned: Mutex::new(owned),
                store,
                config,
                next_generation: AtomicU64::new(1),
            }),
        })
    }

    /// The index of the arbiter the order's actor runs on, from 0 to the
    /// number of actor threads.
    pub fn shard_of(&self, order_id: Uuid) -> usize {
        shard_of(order_id, self.inner.arbiters.len())
    }

    /// Sends a command to the order's actor, starting it if needed.
    pub async fn execute(&self, order_id: Uuid, message: ExecuteCommand) -> Result<CommandReply, ActorError> {
        for _ in 0..STOPPED_ACTOR_RETRIES_MAX {
            let addr = self.actor(order_id);
            match addr.send(message.clone()).await {
                Ok(result) => return result,
                // Passivated between lookup and delivery: start a fresh one.
                Err(MailboxError::Closed) => continue,
                Err(MailboxError::Timeout) => return Err(ActorError::Unavailable),
            }
        }
        Err(ActorError::Unavailable)
    }

    /// The order's current state, or None when it was never submitted.
    pub async fn get(&self, order_id: Uuid) -> Result<Option<Order>, ActorError> {
        for _ in 0..STOPPED_ACTOR_RETRIES_MAX {
            match self.actor(order_id).send(GetOrder).await {
                Ok(result) => return result,
                Err(MailboxError::Closed) => continue,
                Err(MailboxError::Timeout) => return Err(ActorError::Unavailable),
            }
        }
        Err(ActorError::Unavailable)
    }

    /// For shutdown: passivates every live actor and returns once each has
    /// handled the commands queued before that, then stops and joins the
    /// arbiters this registry started, if any. A command sent afterwards
    /// meets a stopped arbiter and is answered `ActorError::Unavailable`;
    /// with one actor thread it starts an actor on the creator's arbiter.
    pub async fn stop_all(&self) {
        let addrs: Vec<Addr<OrderActor>> = {
            let mut live = self.inner.live.lock().unwrap_or_else(PoisonError::into_inner);
            live.drain().map(|(_, entry)| entry.addr).collect()
        };
        // `send`, not `do_send`: it waits for room in a full mailbox rather than
        // queueing past its bound, and answers once the commands ahead have run.
        // An actor that stopped meanwhile answers at once (closed).
        futures_util::future::join_all(addrs.iter().map(|addr| addr.send(Passivate))).await;
        let owned = std::mem::take(&mut *self.inner.owned.lock().unwrap_or_else(PoisonError::into_inner));
        if owned.is_empty() {
            return;
        }
        for arbiter in &owned {
            // Ends its event loop; the actors on it have all stopped above.
            arbiter.stop();
        }
        // Joining blocks until each thread has dropped its runtime: off the async workers.
        let joined =
            tokio::task::spawn_blocking(move || owned.into_iter().map(Arbiter::join).filter(Result::is_err).count())
                .await;
        match joined {
            Ok(0) => {}
            Ok(panicked) => tracing::warn!(panicked, "order actor threads ended by panicking"),
            Err(error) => tracing::warn!(%error, "could not wait for the order actor threads to end"),
        }
    }

    /// How many order actors are alive now.
    pub fn live_count(&self) -> usize {
        self.inner.live.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    fn actor(&self, order_id: Uuid) -> Addr<OrderActor> {
        let inner = &self.inner;
        let mut live = inner.live.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = live.get_mut(&order_id) {
            if entry.addr.connected() {
                entry.last_used = Instant::now();
                return entry.addr.clone();
            }
        }
        if live.len() >= inner.config.live_actors_max {
            evict_least_recently_used(&mut live);
        }
        let generation = inner.next_generation.fetch_add(1, Ordering::Relaxed);
        let link = RegistryLink {
            inner: Arc::downgrade(inner),
            generation,
        };
        let actor = OrderActor::new(order_id, Arc::clone(&inner.store), inner.config.clone(), link);
        let arbiter = &inner.arbiters[shard_of(order_id, inner.arbiters.len())];
        let addr = OrderActor::start_in_arbiter(arbiter, move |_ctx| actor);
        live.insert(
            order_id,
            Entry {
                addr: addr.clone(),
                generation,
                last_used: Instant::now(),
            },
        );
        addr
    }
}

impl Drop for Inner {
    /// A registry dropped without `stop_all` (a test that never shuts its
    /// engine down) still ends its threads, so they do not outlive it. Not
    /// joined: the last handle may be dropped on one of those threads.
    fn drop(&mut self) {
        for arbiter in self.owned.get_mut().unwrap_or_else(PoisonError::into_inner).iter() {
            arbiter.stop();
        }
    }
}

/// The arbiter of `order_id` among `threads`: the id's value modulo their count.
///
/// Stable, not round-robin or least-loaded: an order always lands on the same
/// thread, so its successive actors (one still draining its queue after
/// passivation while the next starts for a new command) take turns on one
/// thread instead of writing its stream in parallel, and which thread served
/// an order can be told from its id alone when reading a log or a profile.
/// Order ids are v7 UUIDs, whose low bits are random, so orders spread evenly.
fn shard_of(order_id: Uuid, threads: usize) -> usize {
    let threads = u128::try_from(threads.max(1)).unwrap_or(1);
    // Below `threads`, which came from a usize: always converts.
    usize::try_from(order_id.as_u128() % threads).unwrap_or(0)
}

/// Starts `threads` arbiters, or none: a failure stops those already started.
fn start_arbiters(threads: usize) -> Result<Vec<Arbiter>, StartError> {
    // `Arbiter::try_new` panics without a system; ask first.
    if System::try_current().is_none() {
        return Err(StartError::NoSystem { threads });
    }
    let mut started = Vec::with_capacity(threads);
    for index in 0..threads {
        match Arbiter::try_new() {
            Ok(arbiter) => started.push(arbiter),
            Err(source) => {
                for arbiter in &started {
                    arbiter.stop();
                }
                return Err(StartError::Thread { index, threads, source });
            }
        }
    }
    Ok(started)
}

/// Passivates the oldest tenth (at least one), so the cost of a sort is paid
/// once per many starts rather than on each.
fn evict_least_recently_used(live: &mut HashMap<Uuid, Entry>) {
    let mut by_age: Vec<(Instant, Uuid)> = live.iter().map(|(id, e)| (e.last_used, *id)).collect();
    by_age.sort_unstable();
    let count = (live.len() / 10).max(1);
    for (_, order_id) in by_age.into_iter().take(count) {
        if let Some(entry) = live.remove(&order_id) {
            // Queued commands still run first; a new command starts a new actor.
            entry.addr.do_send(Passivate);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet, HashSet};
    use std::thread::ThreadId;

    use chrono::Utc;
    use futures_util::future::{join, join_all};
    use rust_decimal_macros::dec;

    use super::*;
    use crate::events::{EventMetadata, StreamId};
    use crate::order::{CancelOrder, OrderCommand, OrderStatus, OrderType, Quote, Side, SubmitOrder};
    use crate::store::{Appended, BeforeCommitHook, MemoryStore};

    /// Each append's stream and the thread it ran on.
    type Seen = Arc<Mutex<Vec<(StreamId, ThreadId)>>>;

    /// An in-memory log that remembers which thread wrote each stream: the
    /// append runs inside the actor's handler, so it is the actor's thread.
    fn recording_store() -> (Arc<dyn EventStore>, Seen) {
        let seen: Seen = Arc::default();
        let record = Arc::clone(&seen);
        let hook: BeforeCommitHook = Arc::new(move |written: &[Appended]| {
            let thread = std::thread::current().id();
            record
                .lock()
                .unwrap()
                .extend(written.iter().map(|a| (a.stream_id.clone(), thread)));
            Box::pin(async { Ok(()) })
        });
        (Arc::new(MemoryStore::new().with_before_commit_hook(hook)), seen)
    }

    fn registry(threads: usize) -> (OrderRegistry, Seen) {
        let (store, seen) = recording_store();
        let config = ActorConfig {
            actor_threads: threads,
            ..ActorConfig::default()
        };
        (OrderRegistry::new(store, config).unwrap(), seen)
    }

    fn submit(order_id: Uuid) -> ExecuteCommand {
        let now = Utc::now();
        let command = OrderCommand::Submit(SubmitOrder {
            order_id,
            user_id: Uuid::now_v7(),
            symbol: "AAPL".into(),
            side: Side::Buy,
            order_type: OrderType::Limit,
            quantity: dec!(1),
            limit_price: Some(dec!(100)),
            stop_price: None,
            quote: Some(Quote {
                price: dec!(150),
                as_of: now,
                market_open: true,
            }),
            submitted_at: now,
        });
        ExecuteCommand::new(command, Uuid::now_v7(), EventMetadata::default())
    }

    fn cancel() -> ExecuteCommand {
        let command = OrderCommand::Cancel(CancelOrder {
            reason: "test".into(),
            cancelled_at: Utc::now(),
        });
        ExecuteCommand::new(command, Uuid::now_v7(), EventMetadata::default())
    }

    /// Submits and then cancels each order, all orders at once; each must end CANCELLED.
    async fn submit_and_cancel_all(registry: &OrderRegistry, orders: &[Uuid]) {
        let runs = orders.iter().map(|&order_id| async move {
            registry.execute(order_id, submit(order_id)).await?;
            registry.execute(order_id, cancel()).await
        });
        for (order_id, reply) in orders.iter().zip(join_all(runs).await) {
            let order = reply.unwrap().order.unwrap();
            assert_eq!(order.status, OrderStatus::Cancelled, "{order_id}");
        }
    }

    /// The threads that wrote each order's stream.
    fn threads_by_order(seen: &Seen, orders: &[Uuid]) -> BTreeMap<Uuid, HashSet<ThreadId>> {
        let seen = seen.lock().unwrap();
        orders
            .iter()
            .map(|&order_id| {
                let stream = StreamId::order(order_id);
                let threads = seen.iter().filter(|(s, _)| *s == stream).map(|(_, t)| *t).collect();
                (order_id, threads)
            })
            .collect()
    }

    #[actix_rt::test]
    async fn orders_spread_over_two_threads_and_each_stays_on_its_own() {
        // Proves that with two actor threads the actors of different orders run on both, neither on the caller's, that every command of one order runs on the one thread its id picks, and that all of them execute.
        let (registry, seen) = registry(2);
        let orders: Vec<Uuid> = (0..64).map(|_| Uuid::now_v7()).collect();
        for &order_id in &orders {
            assert_eq!(registry.shard_of(order_id), (order_id.as_u128() % 2) as usize);
            assert_eq!(registry.shard_of(order_id), registry.shard_of(order_id));
        }
        let shards: BTreeSet<usize> = orders.iter().map(|&id| registry.shard_of(id)).collect();
        assert_eq!(shards, BTreeSet::from([0, 1]), "64 random ids land on both");

        submit_and_cancel_all(&registry, &orders).await;

        let by_order = threads_by_order(&seen, &orders);
        let mut thread_of_shard: BTreeMap<usize, ThreadId> = BTreeMap::new();
        for (order_id, threads) in &by_order {
            assert_eq!(threads.len(), 1, "order {order_id} was written from {threads:?}");
            let thread = *threads.iter().next().unwrap();
            assert_ne!(thread, std::thread::current().id(), "ran on the caller's thread");
            let shard = registry.shard_of(*order_id);
            assert_eq!(
                *thread_of_shard.entry(shard).or_insert(thread),
                thread,
                "shard {shard} ran on two threads"
            );
        }
        let threads: HashSet<ThreadId> = thread_of_shard.values().copied().collect();
        assert_eq!(threads.len(), 2, "{thread_of_shard:?}");

        registry.stop_all().await;
        assert_eq!(registry.live_count(), 0);
        // The threads are gone: a late command is refused, not left waiting.
        let late = registry.execute(orders[0], cancel()).await;
        assert!(matches!(late, Err(ActorError::Unavailable)), "{late:?}");
    }

    #[actix_rt::test]
    async fn one_thread_runs_every_actor_on_the_callers_arbiter() {
        // Proves the default (one actor thread) keeps today's behaviour, which the seeded simulation relies on: every actor on the arbiter that created the registry.
        let (registry, seen) = registry(ActorConfig::default().actor_threads);
        let orders: Vec<Uuid> = (0..16).map(|_| Uuid::now_v7()).collect();
        assert!(orders.iter().all(|&id| registry.shard_of(id) == 0));
        submit_and_cancel_all(&registry, &orders).await;
        let here = HashSet::from([std::thread::current().id()]);
        for (order_id, threads) in threads_by_order(&seen, &orders) {
            assert_eq!(threads, here, "{order_id}");
        }
        registry.stop_all().await;
    }

    #[actix_rt::test]
    async fn stopping_runs_the_commands_already_queued_first() {
        // Proves shutdown drains: commands queued to actors on their own threads when `stop_all` starts are all handled before it returns and the threads stop.
        let (registry, _seen) = registry(2);
        let orders: Vec<Uuid> = (0..32).map(|_| Uuid::now_v7()).collect();
        for &order_id in &orders {
            registry.execute(order_id, submit(order_id)).await.unwrap();
        }
        // `join` polls the cancels first: each is in its actor's mailbox before `stop_all` runs.
        let cancels = join_all(orders.iter().map(|&order_id| registry.execute(order_id, cancel())));
        let (replies, ()) = join(cancels, registry.stop_all()).await;
        for (order_id, reply) in orders.iter().zip(replies) {
            let order = reply.unwrap().order.unwrap();
            assert_eq!(order.status, OrderStatus::Cancelled, "{order_id}");
        }
    }

    #[test]
    fn without_an_actix_system_the_registry_refuses_to_start() {
        // Proves a registry started outside actix is a typed error, not a panic, whatever the thread count.
        let config = |threads| ActorConfig {
            actor_threads: threads,
            ..ActorConfig::default()
        };
        let store = || Arc::new(MemoryStore::new()) as Arc<dyn EventStore>;
        assert!(matches!(
            OrderRegistry::new(store(), config(1)),
            Err(StartError::NoArbiter)
        ));
        assert!(matches!(
            OrderRegistry::new(store(), config(2)),
            Err(StartError::NoSystem { threads: 2 })
        ));
    }
}
