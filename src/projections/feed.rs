//! One reader of the log for every follower in the process.
//!
//! The reactor, the `orders` projection and the three publishers each used to
//! tail and decode the whole log on their own: five reads of every page and
//! five decodes of every event. [`LogFeed`] reads each page once, decodes each
//! order event once, and broadcasts the page; each follower takes it through
//! its own [`FeedTail`], keeps its own position and checkpoint, and works at
//! its own pace.
//!
//! A follower never holds the others back: the broadcast is a bounded ring,
//! and a follower that falls more than the ring behind (or meets a hole, or a
//! feed that failed or stopped) reads what it missed from the store itself,
//! exactly as a lone tail would, then rejoins the feed once it has caught up.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, watch};

use super::tail::{LogTail, TAIL_POLL_INTERVAL};
use crate::events::{decode, DecodeError, RecordedEvent};
use crate::order::OrderEvent;
use crate::store::{EventStore, StoreError};

/// Events per page the feed reads. Small pages keep the ring's memory bounded
/// (`FEED_PAGES_MAX` × this many events at most); under load the followers
/// merge consecutive pages into their own batches.
pub const FEED_PAGE_MAX: usize = 256;
/// Pages the ring holds; a follower further behind than this reads the store itself.
pub const FEED_PAGES_MAX: usize = 256;
/// Most events a follower takes in one batch (its own reads use the same bound).
const BATCH_MAX: usize = 1_000;
/// Wait before the feed reads again after the store failed under it.
const RETRY_DELAY: Duration = Duration::from_secs(1);
/// The feed's position while it is not reading (before its first read of the
/// head, and after it stopped): followers then poll the store themselves.
const NOT_READING: u64 = u64::MAX;

/// An event as the followers see it: the stored record, and its typed form
/// when it belongs to an order stream, decoded once for all of them.
#[derive(Debug)]
pub struct FeedEvent {
    pub recorded: RecordedEvent,
    order: Option<Result<OrderEvent, DecodeError>>,
}

impl FeedEvent {
    pub fn new(recorded: RecordedEvent) -> Self {
        let order = (recorded.stream_id.category() == "order").then(|| decode::<OrderEvent>(&recorded));
        Self { recorded, order }
    }

    /// The order event, for events of an order stream; Err when it cannot be
    /// decoded (a poison event: each follower decides what that stops).
    pub fn order_event(&self) -> Option<Result<&OrderEvent, &DecodeError>> {
        self.order.as_ref().map(Result::as_ref)
    }
}

/// A run of consecutive events, in position order.
pub type FeedBatch = Vec<Arc<FeedEvent>>;

#[derive(Clone)]
enum FeedItem {
    Page(Arc<[Arc<FeedEvent>]>),
    /// The feed could not read the log: followers read it themselves, and
    /// so meet (and report) the failure on their own terms.
    Failed,
}

/// The shared reader. Cheap to clone; the reading task stops when the last
/// clone is dropped.
#[derive(Clone)]
pub struct LogFeed {
    inner: Arc<FeedInner>,
}

struct FeedInner {
    store: Arc<dyn EventStore>,
    pages: broadcast::Sender<FeedItem>,
    /// The last position the feed has read (and broadcast, or is about to).
    position: Arc<AtomicU64>,
    /// Dropped with the last clone; the reading task hears it and ends.
    _alive: watch::Sender<()>,
}

impl LogFeed {
    /// Starts reading the log from its head (followers behind it catch up on
    /// their own). Needs a tokio runtime.
    pub fn start(store: Arc<dyn EventStore>) -> Self {
        Self::start_with(store, FEED_PAGES_MAX, FEED_PAGE_MAX)
    }

    fn start_with(store: Arc<dyn EventStore>, pages_max: usize, page_max: usize) -> Self {
        let (pages, _) = broadcast::channel(pages_max);
        let (alive, stopped) = watch::channel(());
        let position = Arc::new(AtomicU64::new(NOT_READING));
        tokio::spawn(read_pages(
            Arc::clone(&store),
            pages.clone(),
            Arc::clone(&position),
            stopped,
            page_max,
        ));
        Self {
            inner: Arc::new(FeedInner {
                store,
                pages,
                position,
                _alive: alive,
            }),
        }
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.inner.store
    }

    /// The last position the feed has read, when it is reading: the log's
    /// head as of its last page, known without asking the database.
    pub fn read_up_to(&self) -> Option<u64> {
        Some(self.inner.position.load(Ordering::Acquire)).filter(|&at| at != NOT_READING)
    }

    /// A follower that hands out every event after `after_position` once, in order.
    pub fn follow(&self, after_position: u64) -> FeedTail {
        FeedTail {
            // Subscribed before anything is read, so nothing can fall between
            // the follower's own reads and the feed's pages unnoticed.
            pages: self.inner.pages.subscribe(),
            feed_position: Arc::clone(&self.inner.position),
            store: Arc::clone(&self.inner.store),
            position: after_position,
            // Every follower starts by reading for itself: it may be far behind the head.
            own: Some(LogTail::new(Arc::clone(&self.inner.store), after_position)),
            feed_gone: false,
        }
    }
}

async fn read_pages(
    store: Arc<dyn EventStore>,
    pages: broadcast::Sender<FeedItem>,
    position: Arc<AtomicU64>,
    stopped: watch::Receiver<()>,
    page_max: usize,
) {
    read_pages_until_stopped(store, &pages, &position, stopped, page_max).await;
    position.store(NOT_READING, Ordering::Release);
}

async fn read_pages_until_stopped(
    store: Arc<dyn EventStore>,
    pages: &broadcast::Sender<FeedItem>,
    position: &AtomicU64,
    mut stopped: watch::Receiver<()>,
    page_max: usize,
) {
    let head = loop {
        tokio::select! {
            // Biased: an unbiased select draws from the runtime's random
            // source, which would make the seeded simulation's runs differ.
            biased;
            _ = stopped.changed() => return,
            head = store.head_position() => match head {
                Ok(head) => break head,
                Err(error) => {
                    tracing::warn!(%error, "log feed cannot read the log's head; retrying");
                    let _ = pages.send(FeedItem::Failed);
                    tokio::select! {
                        biased;
                        _ = stopped.changed() => return,
                        () = tokio::time::sleep(RETRY_DELAY) => {}
                    }
                }
            },
        }
    };
    position.store(head, Ordering::Release);
    let mut tail = LogTail::new(store, head).with_page_size(page_max);
    loop {
        let page = tokio::select! {
            biased;
            _ = stopped.changed() => return,
            page = tail.next_batch() => page,
        };
        match page {
            Ok(page) => {
                let page: Arc<[Arc<FeedEvent>]> = page.into_iter().map(|e| Arc::new(FeedEvent::new(e))).collect();
                // Stored before the send: a follower that finds its queue empty
                // and the feed past it reads the store, never waits for nothing.
                position.store(tail.position(), Ordering::Release);
                // No follower listening is fine: each reads for itself until it joins.
                let _ = pages.send(FeedItem::Page(page));
            }
            Err(error) => {
                tracing::warn!(%error, position = tail.position(), "log feed cannot read the log; followers read it themselves meanwhile");
                let _ = pages.send(FeedItem::Failed);
                tokio::select! {
                    biased;
                    _ = stopped.changed() => return,
                    () = tokio::time::sleep(RETRY_DELAY) => {}
                }
            }
        }
    }
}

/// One follower's cursor: every event after its position exactly once, in
/// order, from the shared feed when it keeps up and from the store when not.
pub struct FeedTail {
    pages: broadcast::Receiver<FeedItem>,
    /// Where the feed has read to (`NOT_READING` when it is not reading).
    feed_position: Arc<AtomicU64>,
    store: Arc<dyn EventStore>,
    /// The last position handed out.
    position: u64,
    /// The follower's own reader while it is behind the feed.
    own: Option<LogTail>,
    /// The feed has stopped: the follower reads (and waits) on its own for good.
    feed_gone: bool,
}

impl FeedTail {
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The next events after the current position, waiting until there are
    /// some. Cancel-safe, like [`LogTail::next_batch`]: dropped before it
    /// returns, it loses no event.
    pub async fn next_batch(&mut self) -> Result<FeedBatch, StoreError> {
        loop {
            if let Some(own) = &mut self.own {
                let page = if self.feed_gone {
                    Some(own.next_batch().await?)
                } else {
                    own.try_next_batch().await?
                };
                match page {
                    Some(page) => {
                        self.position = own.position();
                        return Ok(page.into_iter().map(|e| Arc::new(FeedEvent::new(e))).collect());
                    }
                    // Caught up: what comes next arrives through the feed.
                    None => self.own = None,
                }
                continue;
            }
            let feed_at = self.feed_position.load(Ordering::Acquire);
            if self.pages.is_empty() && feed_at != NOT_READING && feed_at > self.position {
                // The feed is past this follower with nothing queued for it:
                // it started (or restarted) further on. What lies between is
                // in the store.
                self.read_own();
                continue;
            }
            // Bounded: when the feed is not reading, the follower polls the
            // store at the tail's interval, as a lone tail would.
            let Ok(received) = tokio::time::timeout(TAIL_POLL_INTERVAL, self.pages.recv()).await else {
                if self.feed_position.load(Ordering::Acquire) == NOT_READING {
                    self.read_own();
                }
                continue;
            };
            let first = match received {
                Ok(item) => item,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(
                        missed,
                        position = self.position,
                        "a follower fell behind the log feed; reading the store"
                    );
                    self.read_own();
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => {
                    self.feed_gone = true;
                    self.read_own();
                    continue;
                }
            };
            let mut batch = Vec::new();
            let mut next = Some(first);
            while let Some(item) = next.take() {
                if !self.take(item, &mut batch) || batch.len() >= BATCH_MAX {
                    break;
                }
                next = match self.pages.try_recv() {
                    Ok(item) => Some(item),
                    Err(broadcast::error::TryRecvError::Lagged(_)) => {
                        self.read_own();
                        None
                    }
                    Err(_) => None,
                };
            }
            if !batch.is_empty() {
                return Ok(batch);
            }
        }
    }

    /// Appends the page's events after the position to `batch`; false when
    /// the page does not follow on (a hole, or a failed feed), after which
    /// the follower reads the store until it has caught up.
    fn take(&mut self, item: FeedItem, batch: &mut FeedBatch) -> bool {
        let FeedItem::Page(page) = item else {
            self.read_own();
            return false;
        };
        for event in page.iter() {
            let position = event.recorded.global_position;
            if position <= self.position {
                continue;
            }
            if position != self.position + 1 {
                self.read_own();
                return false;
            }
            batch.push(Arc::clone(event));
            self.position = position;
        }
        true
    }

    fn read_own(&mut self) {
        if self.own.is_none() {
            self.own = Some(LogTail::new(Arc::clone(&self.store), self.position));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::events::{EventMetadata, NewEvent, StreamId};
    use crate::store::{append, AppendRequest, MemoryStore};

    fn event(stream: StreamId, event_type: &str) -> AppendRequest {
        AppendRequest {
            stream_id: stream,
            expected_version: 0,
            command_id: None,
            events: vec![NewEvent {
                event_id: Uuid::new_v4(),
                event_type: event_type.to_owned(),
                schema_version: 1,
                payload: json!({"note": event_type}).into(),
                metadata: EventMetadata::default(),
            }],
            linked: false,
        }
    }

    async fn append_notes(store: &Arc<dyn EventStore>, count: usize) {
        for _ in 0..count {
            let stream = StreamId::new(format!("note-{}", Uuid::new_v4())).unwrap();
            append(store.as_ref(), event(stream, "Noted")).await.unwrap().unwrap();
        }
    }

    async fn take_all(tail: &mut FeedTail, until: u64) -> Vec<u64> {
        let mut seen = Vec::new();
        while tail.position() < until {
            let batch = tokio::time::timeout(Duration::from_secs(5), tail.next_batch())
                .await
                .expect("the follower stalled")
                .unwrap();
            seen.extend(batch.iter().map(|e| e.recorded.global_position));
        }
        seen
    }

    #[tokio::test]
    async fn followers_get_every_event_once_in_order_whether_they_keep_up_or_not() {
        let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
        // A ring of two one-event pages: any follower that does not read at
        // once falls behind it and must read the store itself.
        let feed = LogFeed::start_with(Arc::clone(&store), 2, 1);
        let mut keeping_up = feed.follow(0);
        let mut behind = feed.follow(0);
        let mut late = feed.follow(3);
        let mut expected = Vec::new();
        for round in 0..5u64 {
            append_notes(&store, 10).await;
            expected.extend(round * 10 + 1..=round * 10 + 10);
            let got = take_all(&mut keeping_up, (round + 1) * 10).await;
            assert_eq!(got, (round * 10 + 1..=round * 10 + 10).collect::<Vec<_>>());
        }
        assert_eq!(take_all(&mut behind, 50).await, expected);
        assert_eq!(take_all(&mut late, 50).await, expected[3..]);
        // And live again afterwards, through the feed or the store.
        append_notes(&store, 3).await;
        assert_eq!(take_all(&mut behind, 53).await, vec![51, 52, 53]);
        assert_eq!(take_all(&mut keeping_up, 53).await, vec![51, 52, 53]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_the_feed_started_past_still_gets_what_lies_between() {
        let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
        append_notes(&store, 1).await;
        // The feed's task has not run yet (one thread, no yield so far): the
        // follower reads 1 itself, then 2..=5 land before the feed reads the
        // head, so the feed starts at 5 and will never carry 2..=5.
        let feed = LogFeed::start(Arc::clone(&store));
        let mut tail = feed.follow(0);
        assert_eq!(tail.next_batch().await.unwrap().len(), 1);
        append_notes(&store, 4).await;
        assert_eq!(take_all(&mut tail, 5).await, vec![2, 3, 4, 5]);
        append_notes(&store, 1).await;
        assert_eq!(take_all(&mut tail, 6).await, vec![6]);
    }

    #[tokio::test]
    async fn a_follower_outlives_its_feed_by_reading_the_store() {
        let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
        let feed = LogFeed::start(Arc::clone(&store));
        let mut tail = feed.follow(0);
        append_notes(&store, 2).await;
        assert_eq!(take_all(&mut tail, 2).await, vec![1, 2]);
        drop(feed);
        append_notes(&store, 2).await;
        assert_eq!(take_all(&mut tail, 4).await, vec![3, 4]);
    }

    #[tokio::test]
    async fn order_events_are_decoded_once_for_every_follower_and_a_poison_one_is_named() {
        let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
        let feed = LogFeed::start(Arc::clone(&store));
        let mut first = feed.follow(0);
        let mut second = feed.follow(0);
        // Both find the log empty and start waiting on the feed (a dropped
        // wait loses nothing).
        for tail in [&mut first, &mut second] {
            let waited = tokio::time::timeout(Duration::from_millis(20), tail.next_batch()).await;
            assert!(waited.is_err(), "nothing to read yet");
        }
        // An OrderSubmitted without its fields: it cannot be decoded.
        append(store.as_ref(), event(StreamId::order(Uuid::new_v4()), "OrderSubmitted"))
            .await
            .unwrap()
            .unwrap();
        append_notes(&store, 1).await;
        let a = first.next_batch().await.unwrap();
        let b = second.next_batch().await.unwrap();
        assert_eq!(a[0].recorded.global_position, 1);
        assert!(Arc::ptr_eq(&a[0], &b[0]), "one decode, shared by both followers");
        assert!(
            matches!(a[0].order_event(), Some(Err(_))),
            "the order event fails to decode"
        );
        let rest = if a.len() > 1 {
            a[1].clone()
        } else {
            first.next_batch().await.unwrap()[0].clone()
        };
        assert!(rest.order_event().is_none(), "other streams are not decoded as orders");
    }
}
