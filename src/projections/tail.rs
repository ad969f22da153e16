//! A cursor over the whole log that hands out every event exactly once, in
//! position order, and waits for more when it has caught up.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::events::RecordedEvent;
use crate::store::{EventStore, StoreError, READ_PAGE_MAX};

/// Upper bound on how stale a tail can be when no wake-up reaches it (another
/// process appending to SQLite, or a PostgreSQL notification lost in a reconnect).
pub const TAIL_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// A read of the page after the tail's position, owned by the tail.
type PageRead = BoxFuture<'static, Result<Vec<RecordedEvent>, StoreError>>;

pub struct LogTail {
    store: Arc<dyn EventStore>,
    /// The last position handed out; the next batch starts after it.
    position: u64,
    page_size: usize,
    poll_interval: Duration,
    /// The read a dropped `next_batch` left unfinished (a `select!` took
    /// another branch); the next call resumes it. Dropping the read instead
    /// cancels its acquire or its query mid-flight: sqlx closes a connection
    /// whose acquire was cancelled while opening or pinging it, and hands one
    /// whose query was cancelled to a background task to drain first.
    in_flight: Option<PageRead>,
}

impl LogTail {
    pub fn new(store: Arc<dyn EventStore>, after_position: u64) -> Self {
        Self {
            store,
            position: after_position,
            page_size: READ_PAGE_MAX,
            poll_interval: TAIL_POLL_INTERVAL,
            in_flight: None,
        }
    }

    pub fn with_page_size(mut self, page_size: usize) -> Self {
        self.page_size = page_size.clamp(1, READ_PAGE_MAX);
        self
    }

    pub fn with_poll_interval(mut self, poll_interval: Duration) -> Self {
        self.poll_interval = poll_interval;
        self
    }

    pub fn position(&self) -> u64 {
        self.position
    }

    /// The next events after the current position, waiting until there are some.
    /// Cancel-safe: dropped before it returns, it loses no event and leaves its
    /// read to the next call.
    pub async fn next_batch(&mut self) -> Result<Vec<RecordedEvent>, StoreError> {
        loop {
            if let Some(page) = self.try_next_batch().await? {
                return Ok(page);
            }
            self.store.wait_for_append(self.position, self.poll_interval).await;
        }
    }

    /// The next events after the current position, or `None` when caught up.
    pub async fn try_next_batch(&mut self) -> Result<Option<Vec<RecordedEvent>>, StoreError> {
        let read = self.in_flight.get_or_insert_with(|| {
            let store = Arc::clone(&self.store);
            let (after, max_count) = (self.position, self.page_size);
            Box::pin(async move { store.read_all(after, max_count).await })
        });
        let page = read.await;
        self.in_flight = None;
        let page = page?;
        if page.is_empty() {
            return Ok(None);
        }
        // Positions are dense by construction; a hole means rows were removed
        // behind the engine's back, and handing out the rest would hide it.
        let mut expected = self.position + 1;
        for event in &page {
            if event.global_position != expected {
                return Err(StoreError::Corrupt {
                    position: i64::try_from(expected).unwrap_or(i64::MAX),
                    reason: format!(
                        "the log jumps from position {} to {}: events are missing",
                        expected - 1,
                        event.global_position
                    ),
                });
            }
            expected += 1;
        }
        self.position = expected - 1;
        Ok(Some(page))
    }
}
