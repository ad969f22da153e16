//! A crash point for tests: the engine stops acting after a given number of
//! saga effects (an append to a saga stream, a balance call, a command to an
//! order), as kill -9 would stop it between two steps.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use tokio::sync::Notify;

#[derive(Debug)]
pub struct CrashPoint {
    remaining: AtomicI64,
    halted: AtomicBool,
    halted_notify: Notify,
}

/// The engine was stopped by its crash point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("halted by a test crash point")]
pub struct Halted;

impl CrashPoint {
    /// Halts after `effects` effects have completed.
    pub fn after(effects: u32) -> Self {
        Self {
            remaining: AtomicI64::new(i64::from(effects)),
            halted: AtomicBool::new(effects == 0),
            halted_notify: Notify::new(),
        }
    }

    pub fn is_halted(&self) -> bool {
        self.halted.load(Ordering::SeqCst)
    }

    /// Waits until the crash point fired.
    pub async fn halted(&self) {
        loop {
            let notified = self.halted_notify.notified();
            if self.is_halted() {
                return;
            }
            notified.await;
        }
    }

    /// Called before an effect: refuses once halted.
    pub(crate) fn before(&self) -> Result<(), Halted> {
        if self.is_halted() {
            Err(Halted)
        } else {
            Ok(())
        }
    }

    /// Called after an effect completed.
    pub(crate) fn after_effect(&self) {
        if self.remaining.fetch_sub(1, Ordering::SeqCst) <= 1 {
            self.halted.store(true, Ordering::SeqCst);
            self.halted_notify.notify_waiters();
        }
    }
}
