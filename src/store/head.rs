//! The newest position this process knows to be committed, for waking tailers
//! without a database round trip.

use std::time::Duration;

use tokio::sync::watch;

#[derive(Debug)]
pub(crate) struct HeadWatch {
    sender: watch::Sender<u64>,
}

impl HeadWatch {
    pub(crate) fn new() -> Self {
        Self {
            sender: watch::channel(0).0,
        }
    }

    /// Records that everything up to `position` is committed.
    pub(crate) fn advance(&self, position: u64) {
        self.sender.send_if_modified(|head| {
            let moved = position > *head;
            if moved {
                *head = position;
            }
            moved
        });
    }

    pub(crate) async fn wait_past(&self, after_position: u64, timeout: Duration) {
        let mut receiver = self.sender.subscribe();
        // The sender lives as long as `self`, so `wait_for` fails only if we are gone.
        let _ = tokio::time::timeout(timeout, receiver.wait_for(|head| *head > after_position)).await;
    }
}
