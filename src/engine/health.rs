//! What the engine reports about itself for operators: a reactor stopped on
//! an event it cannot read, and sagas that gave up retrying locally. Read by
//! `/health/ready` and `/metrics`; it must never decide or change anything.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use uuid::Uuid;

/// Stalled sagas named in a snapshot; the count covers all of them.
pub const STALLED_SAGAS_LISTED_MAX: usize = 10;

/// Shared, cheap-to-read health of one engine.
#[derive(Debug, Default)]
pub struct EngineHealth {
    /// Why the reactor stopped (for one order, or for good on a hole in the
    /// log), when it did: the event and the reason.
    reactor_failed: Mutex<Option<String>>,
    /// Sagas whose task gave up its local retries, with the last error. One
    /// entry per open order at most, and the reactor already holds every open
    /// order in memory, so this grows no further than that does.
    stalled: Mutex<BTreeMap<Uuid, String>>,
    /// `stalled.len()`, readable without the lock on every saga step.
    stalled_count: AtomicUsize,
}

/// A copy of the engine's health at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineHealthSnapshot {
    pub reactor_failed: Option<String>,
    pub sagas_stalled: usize,
    /// Up to [`STALLED_SAGAS_LISTED_MAX`] stalled sagas: order id and last error.
    pub stalled_examples: Vec<(Uuid, String)>,
}

impl EngineHealth {
    pub fn snapshot(&self) -> EngineHealthSnapshot {
        let reactor_failed = self
            .reactor_failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let stalled = self.stalled.lock().unwrap_or_else(PoisonError::into_inner);
        EngineHealthSnapshot {
            reactor_failed,
            sagas_stalled: stalled.len(),
            stalled_examples: stalled
                .iter()
                .take(STALLED_SAGAS_LISTED_MAX)
                .map(|(id, why)| (*id, why.clone()))
                .collect(),
        }
    }

    /// Keeps the first reason: the event an operator must repair first (the
    /// checkpoint is held below it); later ones are in the log.
    pub(crate) fn reactor_stopped(&self, reason: String) {
        self.reactor_failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(reason);
    }

    pub(crate) fn saga_stalled(&self, order_id: Uuid, reason: String) {
        let mut stalled = self.stalled.lock().unwrap_or_else(PoisonError::into_inner);
        stalled.insert(order_id, reason);
        self.stalled_count.store(stalled.len(), Ordering::Relaxed);
    }

    /// The saga moved again (a later task, after a restart or an order event).
    pub(crate) fn saga_moving(&self, order_id: Uuid) {
        if self.stalled_count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut stalled = self.stalled.lock().unwrap_or_else(PoisonError::into_inner);
        stalled.remove(&order_id);
        self.stalled_count.store(stalled.len(), Ordering::Relaxed);
    }
}
