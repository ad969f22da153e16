//! Orders in flight and what became of them: each registered with the time it
//! was due, completed by the position update carrying its id, failed by its
//! sender, or expired after the timeout. Time is passed in, so the rules are
//! tested without waiting.
//!
//! Holds no socket; bounded by the in-flight limit (pending) and
//! `EARLY_UPDATES_MAX` (updates seen before their order was known).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;
use uuid::Uuid;

/// Position updates kept for orders not registered yet (over HTTP the id is
/// known only from the answer, which may come after the execution).
pub const EARLY_UPDATES_MAX: usize = 100_000;

struct Pending {
    due: Instant,
    /// A `--rate max` slot, freed when the order ends however it ends.
    _slot: Option<OwnedSemaphorePermit>,
}

#[derive(Default)]
struct State {
    pending: HashMap<Uuid, Pending>,
    early: HashMap<Uuid, Instant>,
    latencies: Vec<Duration>,
    timeouts: u64,
    failures: u64,
    /// Updates for ids this run never sent or already gave up on.
    unmatched: u64,
    last_completion: Option<Instant>,
}

/// What the run ended with.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub latencies: Vec<Duration>,
    pub timeouts: u64,
    pub failures: u64,
    pub unmatched: u64,
    pub still_pending: usize,
    pub last_completion: Option<Instant>,
}

pub struct Tracker {
    state: Mutex<State>,
    /// Over HTTP an update can precede its order's registration; over AMQP
    /// the order is registered before it is published, so an unknown id is
    /// someone else's order.
    keep_early: bool,
}

impl Tracker {
    pub fn new(keep_early: bool) -> Self {
        Self {
            state: Mutex::new(State::default()),
            keep_early,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An order was sent (or is about to be), due at `due`. If its update
    /// already arrived, it completes now.
    pub fn register(&self, order_id: Uuid, due: Instant, slot: Option<OwnedSemaphorePermit>) {
        let mut state = self.lock();
        if let Some(at) = state.early.remove(&order_id) {
            complete(&mut state, due, at);
            return;
        }
        state.pending.insert(order_id, Pending { due, _slot: slot });
    }

    /// A position update for `order_id` arrived at `at`.
    pub fn update(&self, order_id: Uuid, at: Instant) {
        let mut state = self.lock();
        match state.pending.remove(&order_id) {
            Some(pending) => complete(&mut state, pending.due, at),
            None if self.keep_early && state.early.len() < EARLY_UPDATES_MAX => {
                state.early.insert(order_id, at);
            }
            None => state.unmatched += 1,
        }
    }

    /// The order could not be sent (publish refused, HTTP error); it will
    /// never complete. Over HTTP there is no id yet: pass `None`.
    pub fn fail(&self, order_id: Option<Uuid>) {
        let mut state = self.lock();
        if let Some(order_id) = order_id {
            state.pending.remove(&order_id);
        }
        state.failures += 1;
    }

    /// Gives up on every order due more than `timeout` before `now`.
    pub fn expire(&self, now: Instant, timeout: Duration) -> u64 {
        let mut state = self.lock();
        let before = state.pending.len();
        state
            .pending
            .retain(|_, p| now.saturating_duration_since(p.due) <= timeout);
        let expired = (before - state.pending.len()) as u64;
        state.timeouts += expired;
        expired
    }

    pub fn pending(&self) -> usize {
        self.lock().pending.len()
    }

    pub fn completed(&self) -> usize {
        self.lock().latencies.len()
    }

    pub fn finish(&self) -> Outcome {
        let mut state = self.lock();
        Outcome {
            latencies: std::mem::take(&mut state.latencies),
            timeouts: state.timeouts,
            failures: state.failures,
            unmatched: state.unmatched,
            still_pending: state.pending.len(),
            last_completion: state.last_completion,
        }
    }
}

fn complete(state: &mut State, due: Instant, at: Instant) {
    state.latencies.push(at.saturating_duration_since(due));
    state.last_completion = Some(state.last_completion.map_or(at, |last| last.max(at)));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn latency_runs_from_the_due_time_to_the_update() {
        // Proves latency counts from when the order was due (open loop), not from when it was registered.
        let t0 = Instant::now();
        let tracker = Tracker::new(false);
        tracker.register(id(1), t0, None);
        tracker.update(id(1), t0 + Duration::from_millis(7));
        tracker.update(id(1), t0 + Duration::from_millis(9));
        tracker.update(id(2), t0);
        let outcome = tracker.finish();
        assert_eq!(outcome.latencies, vec![Duration::from_millis(7)]);
        assert_eq!(outcome.unmatched, 2, "a repeat and a stranger are not completions");
        assert_eq!(outcome.last_completion, Some(t0 + Duration::from_millis(7)));
    }

    #[test]
    fn an_update_before_registration_completes_it_when_keeping_early_ones() {
        // Proves the HTTP race (execution before the 202 arrives) still yields the latency.
        let t0 = Instant::now();
        let tracker = Tracker::new(true);
        tracker.update(id(1), t0 + Duration::from_millis(4));
        assert_eq!(tracker.completed(), 0);
        tracker.register(id(1), t0, None);
        assert_eq!((tracker.completed(), tracker.pending()), (1, 0));
        assert_eq!(tracker.finish().latencies, vec![Duration::from_millis(4)]);
    }

    #[test]
    fn orders_without_an_update_time_out_and_free_their_slot() {
        // Proves expiry counts only orders past the timeout and releases their --rate max slot.
        let t0 = Instant::now();
        let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(2));
        let tracker = Tracker::new(false);
        tracker.register(id(1), t0, Some(slots.clone().try_acquire_owned().unwrap()));
        tracker.register(
            id(2),
            t0 + Duration::from_secs(5),
            Some(slots.clone().try_acquire_owned().unwrap()),
        );
        assert_eq!(slots.available_permits(), 0);
        assert_eq!(tracker.expire(t0 + Duration::from_secs(6), Duration::from_secs(3)), 1);
        assert_eq!(slots.available_permits(), 1);
        tracker.fail(Some(id(2)));
        assert_eq!(slots.available_permits(), 2);
        let outcome = tracker.finish();
        assert_eq!((outcome.timeouts, outcome.failures, outcome.still_pending), (1, 1, 0));
    }
}
