//! The SQLite backend: the embedded default's event log, in one file.
//!
//! Gap-free ordering: all writes go through a pool of one connection and each
//! append is a `BEGIN IMMEDIATE` transaction, so appends (also from other
//! processes, through SQLite's file lock) commit one at a time in position order.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};
use uuid::Uuid;

use super::chain::ChainedEvent;
use super::error::validate_batch;
use super::head::HeadWatch;
use super::plan::{plan_batch, plan_import, EventRow, Keys, LogSnapshot, StreamHead};
use super::rows::{chained, command_record, hash_of};
use super::{AppendRequest, Appended, BeforeCommitHook, Conflict, EventStore, StoreError, READ_PAGE_MAX};
use crate::clock::{Clock, SystemClock};
use crate::events::{Payload, RecordedEvent, StreamId};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

// The statements of the append and read paths. Each reads the log through its
// rowid or a unique index by one key; tests/append_plan.rs checks the plans.
/// The last event of one stream: a backward step on (stream_id, stream_version).
const STREAM_HEAD: &str = "SELECT stream_version, stream_hash FROM events WHERE stream_id = ? \
     ORDER BY stream_version DESC LIMIT 1";
/// One command record, by its primary key.
const COMMAND_RECORD: &str = "SELECT first_version, last_version, first_position, last_position \
     FROM stream_commands WHERE stream_id = ? AND command_id = ?";
/// The last event of the log, found by its position: `ORDER BY … DESC LIMIT 1`
/// would be as fast, but its plan reads as a scan, and a lookup by key is
/// what the plan test can hold every statement to.
const LOG_HEAD: &str = "SELECT global_position, log_hash FROM events \
     WHERE global_position = (SELECT MAX(global_position) FROM events)";
const INSERT_EVENT: &str = "INSERT INTO events (global_position, stream_id, stream_version, event_id, event_type, \
                         schema_version, payload, metadata, command_id, recorded_at, \
                         stream_hash, log_hash) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
const INSERT_COMMAND: &str = "INSERT INTO stream_commands (stream_id, command_id, first_version, last_version, \
                                  first_position, last_position, recorded_at) \
     VALUES (?, ?, ?, ?, ?, ?, ?)";
const READ_STREAM: &str = "SELECT global_position, stream_id, stream_version, event_id, event_type, schema_version, \
            payload, metadata, command_id, recorded_at \
     FROM events WHERE stream_id = ? AND stream_version >= ? ORDER BY stream_version LIMIT ?";
const READ_ALL: &str = "SELECT global_position, stream_id, stream_version, event_id, event_type, schema_version, \
            payload, metadata, command_id, recorded_at \
     FROM events WHERE global_position > ? ORDER BY global_position LIMIT ?";
const READ_CHAINED: &str = "SELECT global_position, stream_id, stream_version, event_id, event_type, schema_version, \
            payload, metadata, command_id, recorded_at, stream_hash, log_hash \
     FROM events WHERE global_position > ? ORDER BY global_position LIMIT ?";
const STREAM_VERSION: &str = "SELECT COALESCE(MAX(stream_version), 0) FROM events WHERE stream_id = ?";
const HEAD_POSITION: &str = "SELECT COALESCE(MAX(global_position), 0) FROM events";
const LOAD_CHECKPOINT: &str = "SELECT position FROM checkpoints WHERE name = ?";
const SAVE_CHECKPOINT: &str = "INSERT INTO checkpoints (name, position, updated_at) VALUES (?, ?, ?) \
     ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at";

#[derive(Debug, Clone)]
pub struct SqliteConfig {
    /// `sqlite:path/to/file.db`; the file and its folder are created when missing.
    pub url: String,
    pub read_connections: u32,
    /// How long a write waits for another process's write lock.
    pub busy_timeout: Duration,
}

impl SqliteConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            read_connections: 8,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    head: HeadWatch,
    clock: Arc<dyn Clock>,
    before_commit: Option<BeforeCommitHook>,
}

impl SqliteStore {
    pub async fn open(config: SqliteConfig) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(&config.url)
            .map_err(|e| StoreError::Config(format!("invalid SQLite URL {:?}: {e}", config.url)))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: an acknowledged append survives power loss, not only a process crash.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(config.busy_timeout)
            .foreign_keys(true);
        if let Some(folder) = options.get_filename().parent() {
            if !folder.as_os_str().is_empty() {
                tokio::fs::create_dir_all(folder).await.map_err(|e| {
                    StoreError::Config(format!(
                        "cannot create the folder {} for the database: {e}",
                        folder.display()
                    ))
                })?;
            }
        }
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(StoreError::from_sqlx)?;
        MIGRATOR.run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(config.read_connections.max(1))
            .connect_with(options.read_only(true))
            .await
            .map_err(StoreError::from_sqlx)?;
        Ok(Self {
            writer,
            reader,
            head: HeadWatch::new(),
            clock: Arc::new(SystemClock),
            before_commit: None,
        })
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Installs a fault point between an append's writes and its COMMIT.
    pub fn with_before_commit_hook(mut self, hook: BeforeCommitHook) -> Self {
        self.before_commit = Some(hook);
        self
    }

    pub fn reader_pool(&self) -> &SqlitePool {
        &self.reader
    }

    pub fn writer_pool(&self) -> &SqlitePool {
        &self.writer
    }

    /// Every statement of the append and read paths, by name, exactly as the
    /// store sends it; tests/append_plan.rs explains each on a large log.
    #[doc(hidden)]
    pub fn hot_statements() -> &'static [(&'static str, &'static str)] {
        &[
            ("stream_head", STREAM_HEAD),
            ("command_record", COMMAND_RECORD),
            ("log_head", LOG_HEAD),
            ("insert_event", INSERT_EVENT),
            ("insert_command", INSERT_COMMAND),
            ("read_stream", READ_STREAM),
            ("read_all", READ_ALL),
            ("read_chained", READ_CHAINED),
            ("stream_version", STREAM_VERSION),
            ("head_position", HEAD_POSITION),
            ("load_checkpoint", LOAD_CHECKPOINT),
            ("save_checkpoint", SAVE_CHECKPOINT),
        ]
    }

    /// Reads, inside the write transaction, what `plan_batch` or `plan_import`
    /// needs: the head, the named streams' last events and command records.
    async fn snapshot(tx: &mut Transaction<'_, Sqlite>, keys: &Keys<'_>) -> Result<LogSnapshot, StoreError> {
        let mut heads = HashMap::new();
        for stream_id in &keys.streams {
            if heads.contains_key(*stream_id) {
                continue;
            }
            let row = sqlx::query(STREAM_HEAD)
                .bind(stream_id.as_str())
                .fetch_optional(&mut **tx)
                .await?;
            let head = match row {
                Some(row) => StreamHead {
                    version: to_u64(row.try_get("stream_version")?),
                    hash: hash_of(&row, "stream_hash", -1)?,
                },
                None => StreamHead::default(),
            };
            heads.insert((*stream_id).clone(), head);
        }
        let mut commands = HashMap::new();
        for (stream_id, command_id) in &keys.commands {
            let row = sqlx::query(COMMAND_RECORD)
                .bind(stream_id.as_str())
                .bind(command_id.to_string())
                .fetch_optional(&mut **tx)
                .await?;
            if let Some(row) = row {
                let appended = command_record(&row, stream_id)?;
                commands.insert(((*stream_id).clone(), *command_id), appended);
            }
        }
        let head = sqlx::query(LOG_HEAD).fetch_optional(&mut **tx).await?;
        let (head_position, head_hash) = match head {
            Some(row) => {
                let position: i64 = row.try_get("global_position")?;
                (to_u64(position), hash_of(&row, "log_hash", position)?)
            }
            None => (0, None),
        };
        Ok(LogSnapshot {
            head_position,
            head_hash,
            streams: heads,
            commands,
        })
    }

    async fn insert_events(tx: &mut Transaction<'_, Sqlite>, rows: &[EventRow<'_>]) -> Result<(), StoreError> {
        for row in rows {
            let metadata = serde_json::to_string(row.metadata)
                .map_err(|e| StoreError::InvalidAppend(format!("metadata cannot be encoded: {e}")))?;
            sqlx::query(INSERT_EVENT)
                .bind(to_i64(row.position)?)
                .bind(row.stream_id.as_str())
                .bind(to_i64(row.version)?)
                .bind(row.event_id.to_string())
                .bind(row.event_type)
                .bind(i64::from(row.schema_version))
                .bind(row.payload.to_string())
                .bind(metadata)
                .bind(row.command_id.map(|c| c.to_string()))
                .bind(row.recorded_at)
                .bind(row.stream_hash.map(|h| h.0.to_vec()))
                .bind(row.log_hash.map(|h| h.0.to_vec()))
                .execute(&mut **tx)
                .await
                .map_err(classify_insert_error)?;
        }
        Ok(())
    }

    async fn insert_commands(
        tx: &mut Transaction<'_, Sqlite>,
        commands: &[(Uuid, Appended)],
        recorded_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        for (command_id, appended) in commands {
            sqlx::query(INSERT_COMMAND)
                .bind(appended.stream_id.as_str())
                .bind(command_id.to_string())
                .bind(to_i64(appended.first_version)?)
                .bind(to_i64(appended.last_version)?)
                .bind(to_i64(appended.first_position)?)
                .bind(to_i64(appended.last_position)?)
                .bind(recorded_at)
                .execute(&mut **tx)
                .await
                .map_err(classify_insert_error)?;
        }
        Ok(())
    }
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn append_batch(&self, requests: Vec<AppendRequest>) -> Result<Vec<Result<Appended, Conflict>>, StoreError> {
        validate_batch(&requests)?;
        // IMMEDIATE takes the write lock up front, so a reader-turned-writer never deadlocks.
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let snapshot = Self::snapshot(&mut tx, &Keys::of_requests(&requests)).await?;
        let plan = plan_batch(&requests, snapshot, self.clock.now());
        if !plan.rows.is_empty() {
            Self::insert_events(&mut tx, &plan.rows).await?;
            Self::insert_commands(&mut tx, &plan.commands, plan.recorded_at).await?;
        }
        if let Some(hook) = &self.before_commit {
            hook(&plan.written()).await?;
        }
        tx.commit().await?;
        if let Some(last) = plan.last_position() {
            self.head.advance(last);
        }
        Ok(plan.results)
    }

    async fn read_stream(
        &self,
        stream_id: &StreamId,
        from_version: u64,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query(READ_STREAM)
            .bind(stream_id.as_str())
            .bind(to_i64(from_version)?)
            .bind(page_limit(max_count))
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(decode_row).collect()
    }

    async fn read_all(&self, after_position: u64, max_count: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query(READ_ALL)
            .bind(to_i64(after_position)?)
            .bind(page_limit(max_count))
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(decode_row).collect()
    }

    async fn read_chained(&self, after_position: u64, max_count: usize) -> Result<Vec<ChainedEvent>, StoreError> {
        let rows = sqlx::query(READ_CHAINED)
            .bind(to_i64(after_position)?)
            .bind(page_limit(max_count))
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(|row| chained(row, decode_row(row)?)).collect()
    }

    async fn import_chained(&self, events: Vec<ChainedEvent>) -> Result<(), StoreError> {
        let Some(last) = events.last().map(|e| e.event.global_position) else {
            return Ok(());
        };
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let snapshot = Self::snapshot(&mut tx, &Keys::of_events(&events)).await?;
        let commands = plan_import(&events, snapshot)?;
        let rows: Vec<EventRow<'_>> = events.iter().map(EventRow::from).collect();
        Self::insert_events(&mut tx, &rows).await?;
        Self::insert_commands(&mut tx, &commands, self.clock.now()).await?;
        tx.commit().await?;
        self.head.advance(last);
        Ok(())
    }

    async fn command_record(&self, stream_id: &StreamId, command_id: Uuid) -> Result<Option<Appended>, StoreError> {
        let row = sqlx::query(COMMAND_RECORD)
            .bind(stream_id.as_str())
            .bind(command_id.to_string())
            .fetch_optional(&self.reader)
            .await?;
        row.map(|row| command_record(&row, stream_id)).transpose()
    }

    async fn stream_version(&self, stream_id: &StreamId) -> Result<u64, StoreError> {
        let version: i64 = sqlx::query_scalar(STREAM_VERSION)
            .bind(stream_id.as_str())
            .fetch_one(&self.reader)
            .await?;
        Ok(to_u64(version))
    }

    async fn head_position(&self) -> Result<u64, StoreError> {
        let head: i64 = sqlx::query_scalar(HEAD_POSITION).fetch_one(&self.reader).await?;
        Ok(to_u64(head))
    }

    async fn wait_for_append(&self, after_position: u64, timeout: Duration) {
        self.head.wait_past(after_position, timeout).await;
    }

    async fn load_checkpoint(&self, name: &str) -> Result<u64, StoreError> {
        let position: Option<i64> = sqlx::query_scalar(LOAD_CHECKPOINT)
            .bind(name)
            .fetch_optional(&self.reader)
            .await?;
        Ok(position.map_or(0, to_u64))
    }

    async fn save_checkpoint(&self, name: &str, position: u64) -> Result<(), StoreError> {
        sqlx::query(SAVE_CHECKPOINT)
            .bind(name)
            .bind(to_i64(position)?)
            .bind(self.clock.now())
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }
}

fn classify_insert_error(error: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &error {
        // SQLITE_CONSTRAINT_UNIQUE / PRIMARYKEY: a writer outside this pool.
        if matches!(db.code().as_deref(), Some("2067") | Some("1555")) {
            return StoreError::ConcurrentWriter {
                stream_id: db.message().to_owned(),
            };
        }
    }
    StoreError::from_sqlx(error)
}

fn decode_row(row: &SqliteRow) -> Result<RecordedEvent, StoreError> {
    let position: i64 = row.try_get("global_position")?;
    let corrupt = |reason: String| StoreError::Corrupt { position, reason };
    let stream_id: String = row.try_get("stream_id")?;
    let event_id: String = row.try_get("event_id")?;
    let command_id: Option<String> = row.try_get("command_id")?;
    let payload: String = row.try_get("payload")?;
    let metadata: String = row.try_get("metadata")?;
    let schema_version: i64 = row.try_get("schema_version")?;
    let recorded_at: DateTime<Utc> = row.try_get("recorded_at")?;
    Ok(RecordedEvent {
        global_position: to_u64(position),
        stream_id: StreamId::new(stream_id).map_err(|e| corrupt(e.to_string()))?,
        stream_version: to_u64(row.try_get("stream_version")?),
        event_id: Uuid::parse_str(&event_id).map_err(|e| corrupt(format!("event_id: {e}")))?,
        event_type: row.try_get("event_type")?,
        schema_version: u32::try_from(schema_version).map_err(|e| corrupt(e.to_string()))?,
        payload: Payload::parse(payload).map_err(|e| corrupt(format!("payload: {e}")))?,
        metadata: serde_json::from_str(&metadata).map_err(|e| corrupt(format!("metadata: {e}")))?,
        command_id: command_id
            .map(|c| Uuid::parse_str(&c))
            .transpose()
            .map_err(|e| corrupt(format!("command_id: {e}")))?,
        recorded_at,
    })
}

/// Positions and versions are ≥ 1 by CHECK constraint; negative cannot occur.
fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn to_i64(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::InvalidAppend(format!("{value} exceeds the INTEGER range")))
}

fn page_limit(max_count: usize) -> i64 {
    i64::try_from(max_count.clamp(1, READ_PAGE_MAX)).unwrap_or(1)
}
