//! An in-memory event log behind [`EventStore`], for the deterministic
//! simulation and the conformance suite: the same rules as the SQL backends
//! (planned by `plan.rs`, hashed by `chain.rs`), kept in a `Vec`, with
//! optional fault injection.
//!
//! Must never hold data that has to outlive the process: nothing reaches a disk.
//!
//! Gap-free ordering: appends are serialised by one async lock, held from the
//! snapshot to the commit (across the before-commit hook, as a database holds
//! its locks), and an append becomes visible to readers all at once.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Mutex;
use uuid::Uuid;

use super::chain::{ChainedEvent, EventHash};
use super::error::validate_batch;
use super::head::HeadWatch;
use super::plan::{plan_batch, plan_import, Keys, LogSnapshot, StreamHead};
use super::{
    AppendRequest, Appended, BeforeCommitHook, Conflict, EventStore, FaultInjected, StoreError, READ_PAGE_MAX,
};
use crate::clock::{Clock, SystemClock};
use crate::events::{RecordedEvent, StreamId};

/// Where an injected fault strikes a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendFault {
    /// Rolled back: nothing is written and the caller gets a transient error.
    BeforeCommit,
    /// Written, and yet the caller gets a transient error, as when the
    /// connection drops during COMMIT: only command-id dedup makes a retry safe.
    AfterCommit,
}

/// Decides which operations of a [`MemoryStore`] fail. Consulted once per call,
/// in call order, so a seeded plan fails the same calls on every run.
pub trait FaultPlan: Send + Sync + 'static {
    /// For each append batch, import and checkpoint save.
    fn write(&self) -> Option<AppendFault>;
    /// For each read (of a stream, the log, a version, the head, a checkpoint): true fails it.
    fn read(&self) -> bool;
}

/// One stream: where its events sit in the log, and its last event.
#[derive(Default)]
struct StreamEntry {
    /// Indexes into `LogState::events`, in version order (version v at v - 1).
    indexes: Vec<usize>,
    head: StreamHead,
}

#[derive(Default)]
struct LogState {
    /// Event at position p at index p - 1: positions are dense by construction.
    events: Vec<ChainedEvent>,
    streams: HashMap<StreamId, StreamEntry>,
    commands: HashMap<(StreamId, Uuid), Appended>,
    /// Unique across the log, as the SQL backends' unique index makes them.
    event_ids: HashSet<Uuid>,
    checkpoints: HashMap<String, u64>,
}

impl LogState {
    fn snapshot(&self, keys: &Keys<'_>) -> LogSnapshot {
        let streams = keys
            .streams
            .iter()
            .map(|id| ((*id).clone(), self.streams.get(*id).map(|s| s.head).unwrap_or_default()))
            .collect();
        let commands = keys
            .commands
            .iter()
            .filter_map(|(id, command)| {
                let key = ((*id).clone(), *command);
                self.commands.get(&key).cloned().map(|appended| (key, appended))
            })
            .collect();
        LogSnapshot {
            head_position: self.events.len() as u64,
            head_hash: self.events.last().and_then(|e| e.log_hash),
            streams,
            commands,
        }
    }

    /// Refuses rows whose event ids the log already holds, as a unique index would.
    fn check_event_ids<'a>(&self, ids: impl IntoIterator<Item = &'a Uuid>) -> Result<(), StoreError> {
        let mut seen = HashSet::new();
        for id in ids {
            if self.event_ids.contains(id) || !seen.insert(*id) {
                return Err(StoreError::ConcurrentWriter {
                    stream_id: format!("event id {id} is already in the log"),
                });
            }
        }
        Ok(())
    }

    fn push(&mut self, chained: ChainedEvent) {
        let index = self.events.len();
        let event = &chained.event;
        let stream = self.streams.entry(event.stream_id.clone()).or_default();
        stream.indexes.push(index);
        stream.head = StreamHead {
            version: event.stream_version,
            hash: chained.stream_hash,
        };
        self.event_ids.insert(event.event_id);
        self.events.push(chained);
    }

    fn record_commands(&mut self, commands: Vec<(Uuid, Appended)>) {
        for (command_id, appended) in commands {
            self.commands.insert((appended.stream_id.clone(), command_id), appended);
        }
    }
}

/// The log itself, shared by every handle opened on it.
struct SharedLog {
    /// Serialises writers from snapshot to commit.
    writer: Mutex<()>,
    state: RwLock<LogState>,
    head: HeadWatch,
}

/// A handle on an in-memory log. [`MemoryStore::connect`] opens another
/// handle on the same log (another "process"), with its own hook and faults.
pub struct MemoryStore {
    log: Arc<SharedLog>,
    clock: Arc<dyn Clock>,
    before_commit: Option<BeforeCommitHook>,
    faults: Option<Arc<dyn FaultPlan>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty log, timed by the wall clock.
    pub fn new() -> Self {
        Self {
            log: Arc::new(SharedLog {
                writer: Mutex::new(()),
                state: RwLock::new(LogState::default()),
                head: HeadWatch::new(),
            }),
            clock: Arc::new(SystemClock),
            before_commit: None,
            faults: None,
        }
    }

    /// Another handle on the same log, with the same clock and no hook or faults.
    pub fn connect(&self) -> Self {
        Self {
            log: Arc::clone(&self.log),
            clock: Arc::clone(&self.clock),
            before_commit: None,
            faults: None,
        }
    }

    /// Times appends and checkpoints by `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Installs a fault point between an append's planning and its commit.
    pub fn with_before_commit_hook(mut self, hook: BeforeCommitHook) -> Self {
        self.before_commit = Some(hook);
        self
    }

    /// Fails the calls `faults` picks.
    pub fn with_faults(mut self, faults: Arc<dyn FaultPlan>) -> Self {
        self.faults = Some(faults);
        self
    }

    fn state(&self) -> RwLockReadGuard<'_, LogState> {
        // Nothing panics while holding the lock; a poisoned one still holds a whole log.
        self.log.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn state_mut(&self) -> RwLockWriteGuard<'_, LogState> {
        self.log.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_fault(&self) -> Option<AppendFault> {
        self.faults.as_ref().and_then(|f| f.write())
    }

    fn check_read(&self) -> Result<(), StoreError> {
        match &self.faults {
            Some(faults) if faults.read() => Err(injected("the read failed")),
            _ => Ok(()),
        }
    }
}

fn injected(what: &str) -> StoreError {
    StoreError::Fault(FaultInjected(format!("injected fault: {what}")))
}

fn before_commit_error() -> StoreError {
    injected("the write was rolled back before COMMIT")
}

fn after_commit_error() -> StoreError {
    injected("the connection dropped during COMMIT; the write landed")
}

fn page_limit(max_count: usize) -> usize {
    max_count.clamp(1, READ_PAGE_MAX)
}

#[async_trait]
impl EventStore for MemoryStore {
    async fn append_batch(&self, requests: Vec<AppendRequest>) -> Result<Vec<Result<Appended, Conflict>>, StoreError> {
        validate_batch(&requests)?;
        let fault = self.write_fault();
        let _writer = self.log.writer.lock().await;
        let snapshot = self.state().snapshot(&Keys::of_requests(&requests));
        let plan = plan_batch(&requests, snapshot, self.clock.now());
        self.state().check_event_ids(plan.rows.iter().map(|r| &r.event_id))?;
        if fault == Some(AppendFault::BeforeCommit) {
            return Err(before_commit_error());
        }
        if let Some(hook) = &self.before_commit {
            hook(&plan.written()).await?;
        }
        {
            let mut state = self.state_mut();
            for row in &plan.rows {
                state.push(row.to_chained());
            }
            state.record_commands(plan.commands.clone());
        }
        if let Some(last) = plan.last_position() {
            self.log.head.advance(last);
        }
        if fault == Some(AppendFault::AfterCommit) {
            return Err(after_commit_error());
        }
        Ok(plan.results)
    }

    async fn read_stream(
        &self,
        stream_id: &StreamId,
        from_version: u64,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.check_read()?;
        let state = self.state();
        let Some(stream) = state.streams.get(stream_id) else {
            return Ok(Vec::new());
        };
        let skip = usize::try_from(from_version.saturating_sub(1)).unwrap_or(usize::MAX);
        Ok(stream
            .indexes
            .iter()
            .skip(skip)
            .take(page_limit(max_count))
            .filter_map(|&i| state.events.get(i).map(|c| c.event.clone()))
            .collect())
    }

    async fn read_all(&self, after_position: u64, max_count: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        Ok(self
            .read_chained(after_position, max_count)
            .await?
            .into_iter()
            .map(|c| c.event)
            .collect())
    }

    async fn read_chained(&self, after_position: u64, max_count: usize) -> Result<Vec<ChainedEvent>, StoreError> {
        self.check_read()?;
        let state = self.state();
        let skip = usize::try_from(after_position).unwrap_or(usize::MAX);
        Ok(state
            .events
            .iter()
            .skip(skip)
            .take(page_limit(max_count))
            .cloned()
            .collect())
    }

    async fn import_chained(&self, events: Vec<ChainedEvent>) -> Result<(), StoreError> {
        let Some(last) = events.last().map(|e| e.event.global_position) else {
            return Ok(());
        };
        let fault = self.write_fault();
        let _writer = self.log.writer.lock().await;
        let snapshot = self.state().snapshot(&Keys::of_events(&events));
        let commands = plan_import(&events, snapshot)?;
        self.state().check_event_ids(events.iter().map(|e| &e.event.event_id))?;
        if fault == Some(AppendFault::BeforeCommit) {
            return Err(before_commit_error());
        }
        {
            let mut state = self.state_mut();
            for event in events {
                state.push(event);
            }
            state.record_commands(commands);
        }
        self.log.head.advance(last);
        if fault == Some(AppendFault::AfterCommit) {
            return Err(after_commit_error());
        }
        Ok(())
    }

    async fn stream_version(&self, stream_id: &StreamId) -> Result<u64, StoreError> {
        self.check_read()?;
        Ok(self.state().streams.get(stream_id).map_or(0, |s| s.head.version))
    }

    async fn command_record(&self, stream_id: &StreamId, command_id: Uuid) -> Result<Option<Appended>, StoreError> {
        self.check_read()?;
        Ok(self
            .state()
            .commands
            .get(&(stream_id.clone(), command_id))
            .cloned()
            .map(|appended| Appended {
                deduplicated: true,
                ..appended
            }))
    }

    async fn head_position(&self) -> Result<u64, StoreError> {
        self.check_read()?;
        Ok(self.state().events.len() as u64)
    }

    async fn wait_for_append(&self, after_position: u64, timeout: Duration) {
        self.log.head.wait_past(after_position, timeout).await;
    }

    async fn load_checkpoint(&self, name: &str) -> Result<u64, StoreError> {
        self.check_read()?;
        Ok(self.state().checkpoints.get(name).copied().unwrap_or(0))
    }

    async fn save_checkpoint(&self, name: &str, position: u64) -> Result<(), StoreError> {
        let fault = self.write_fault();
        if fault == Some(AppendFault::BeforeCommit) {
            return Err(before_commit_error());
        }
        self.state_mut().checkpoints.insert(name.to_owned(), position);
        if fault == Some(AppendFault::AfterCommit) {
            return Err(after_commit_error());
        }
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}

impl MemoryStore {
    /// The log hash of the last event: equal for two logs only if every event
    /// and its position are equal (the chain covers them all). None when empty.
    pub fn head_hash(&self) -> Option<EventHash> {
        self.state().events.last().and_then(|e| e.log_hash)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::events::{EventMetadata, NewEvent};
    use crate::store::append;

    fn request(stream: &str, expected: u64, command: Option<Uuid>) -> AppendRequest {
        AppendRequest {
            stream_id: StreamId::new(stream).unwrap(),
            expected_version: expected,
            command_id: command,
            events: vec![NewEvent {
                event_id: Uuid::new_v4(),
                event_type: "Tested".into(),
                schema_version: 1,
                payload: serde_json::json!({}).into(),
                metadata: EventMetadata::default(),
            }],
            linked: false,
        }
    }

    /// Fails the first write with `fault`, passes the rest.
    struct FirstWrite {
        fault: AppendFault,
        writes: AtomicU32,
    }

    impl FaultPlan for FirstWrite {
        fn write(&self) -> Option<AppendFault> {
            (self.writes.fetch_add(1, Ordering::SeqCst) == 0).then_some(self.fault)
        }
        fn read(&self) -> bool {
            false
        }
    }

    fn faulty(fault: AppendFault) -> MemoryStore {
        MemoryStore::new().with_faults(Arc::new(FirstWrite {
            fault,
            writes: AtomicU32::new(0),
        }))
    }

    #[tokio::test]
    async fn a_fault_before_commit_writes_nothing() {
        // Proves a write failed before COMMIT leaves the log as it was and says it is transient.
        let store = faulty(AppendFault::BeforeCommit);
        let error = append(&store, request("a", 0, None)).await.unwrap_err();
        assert!(error.is_transient(), "{error}");
        assert_eq!(store.head_position().await.unwrap(), 0);
        append(&store, request("a", 0, None)).await.unwrap().unwrap();
        assert_eq!(store.head_position().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn a_fault_after_commit_writes_and_the_retry_is_deduplicated() {
        // Proves the unknown-COMMIT case: the caller sees an error, the events
        // landed, and the same command retried is answered from the log, once.
        let store = faulty(AppendFault::AfterCommit);
        let command = Uuid::new_v4();
        let error = append(&store, request("a", 0, Some(command))).await.unwrap_err();
        assert!(error.is_transient(), "{error}");
        assert_eq!(store.head_position().await.unwrap(), 1);
        let retried = append(&store, request("a", 0, Some(command))).await.unwrap().unwrap();
        assert!(retried.deduplicated);
        assert_eq!(store.head_position().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn connected_handles_share_one_log() {
        // Proves a second handle sees the first one's appends and conflicts with them.
        let first = MemoryStore::new();
        let second = first.connect();
        append(&first, request("a", 0, None)).await.unwrap().unwrap();
        assert_eq!(second.stream_version(&StreamId::new("a").unwrap()).await.unwrap(), 1);
        let conflict = append(&second, request("a", 0, None)).await.unwrap().unwrap_err();
        assert_eq!((conflict.expected, conflict.actual), (0, 1));
        assert_eq!(first.head_hash(), second.head_hash());
    }
}
