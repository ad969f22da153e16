//! The newest position this process knows to be committed, for waking tailers
//! without a database round trip.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// A `Notify` rather than a `watch` channel: a watch spreads its waiters over
/// several notifiers picked at random, so tailers woken by one append resumed
/// in a random order, and the seeded simulation (whose injected faults go to
/// whichever read comes next) told a different story on each run. A single
/// `Notify` wakes its waiters in the order they began to wait.
#[derive(Debug)]
pub(crate) struct HeadWatch {
    head: AtomicU64,
    moved: Notify,
}

impl HeadWatch {
    pub(crate) fn new() -> Self {
        Self {
            head: AtomicU64::new(0),
            moved: Notify::new(),
        }
    }

    /// Records that everything up to `position` is committed.
    pub(crate) fn advance(&self, position: u64) {
        if self.head.fetch_max(position, Ordering::AcqRel) < position {
            self.moved.notify_waiters();
        }
    }

    /// Returns once the head is past `after_position`, or after `timeout`.
    pub(crate) async fn wait_past(&self, after_position: u64, timeout: Duration) {
        let passed = async {
            loop {
                let notified = self.moved.notified();
                tokio::pin!(notified);
                // Registered before the head is read, so an advance between the
                // read and the await still wakes this waiter.
                notified.as_mut().enable();
                if self.head.load(Ordering::Acquire) > after_position {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(timeout, passed).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_waiter_wakes_when_the_head_passes_its_position_and_not_before() {
        let head = Arc::new(HeadWatch::new());
        let waiter = tokio::spawn({
            let head = Arc::clone(&head);
            async move {
                let started = tokio::time::Instant::now();
                head.wait_past(2, Duration::from_secs(10)).await;
                started.elapsed()
            }
        });
        tokio::task::yield_now().await;
        head.advance(2);
        tokio::time::sleep(Duration::from_secs(1)).await;
        head.advance(3);
        let waited = waiter.await.unwrap();
        assert_eq!(
            waited,
            Duration::from_secs(1),
            "woken by the advance past 2, not by the one to 2"
        );
        // Already past: no wait at all; not past: the timeout.
        let started = tokio::time::Instant::now();
        head.wait_past(1, Duration::from_secs(10)).await;
        assert_eq!(started.elapsed(), Duration::ZERO);
        head.wait_past(3, Duration::from_millis(250)).await;
        assert_eq!(started.elapsed(), Duration::from_millis(250));
    }
}
