//! Finds or starts the actor of an order, keeps the number of live actors
//! under a cap, and forgets actors that passivated.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix::MailboxError;
use uuid::Uuid;

use super::error::ActorError;
use super::order_actor::{CommandReply, ExecuteCommand, GetOrder, OrderActor, Passivate};
use crate::order::Order;
use crate::store::EventStore;

/// How often a send is retried when it reached an actor that was stopping.
const STOPPED_ACTOR_RETRIES_MAX: u32 = 3;

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
}

impl Default for ActorConfig {
    fn default() -> Self {
        Self {
            passivate_after: Duration::from_secs(60),
            live_actors_max: 10_000,
            mailbox_capacity: 64,
            conflict_retries_max: 5,
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
    arbiter: ArbiterHandle,
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
    /// Creates a registry whose actors run on the current actix arbiter.
    pub fn new(store: Arc<dyn EventStore>, config: ActorConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                live: Mutex::new(HashMap::new()),
                arbiter: Arbiter::current(),
                store,
                config,
                next_generation: AtomicU64::new(1),
            }),
        }
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

    /// Passivates every live actor (their queued commands still run); for shutdown.
    pub fn stop_all(&self) {
        let mut live = self.inner.live.lock().unwrap_or_else(PoisonError::into_inner);
        for (_, entry) in live.drain() {
            entry.addr.do_send(Passivate);
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
        let addr = OrderActor::start_in_arbiter(&inner.arbiter, move |_ctx| actor);
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
