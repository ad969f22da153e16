//! The PostgreSQL backend: production's event log.
//!
//! Gap-free ordering: every append takes one transaction-scoped advisory lock
//! before it reads versions and assigns positions, and holds it through COMMIT.
//! Positions are therefore dense and become visible in order, so a reader that
//! sees position n has already been able to see every position below it.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use super::chain::ChainedEvent;
use super::error::validate_batch;
use super::head::HeadWatch;
use super::plan::{plan_batch, plan_import, EventRow, Keys, LogSnapshot, StreamHead};
use super::rows::{chained, command_record, hash_of};
use super::{AppendRequest, Appended, BeforeCommitHook, Conflict, EventStore, StoreError, READ_PAGE_MAX};
use crate::clock::{Clock, SystemClock};
use crate::events::{EventMetadata, Payload, RecordedEvent, StreamId};

/// The advisory lock that serialises position assignment ("oe-log" in ASCII).
const LOG_LOCK_KEY: i64 = 0x6f65_2d6c_6f67;
/// NOTIFY channel carrying the last committed position of each append.
const LOG_CHANNEL: &str = "order_engine_log";
/// How long the listener waits before reconnecting after it lost its connection.
const LISTENER_RETRY_DELAY: Duration = Duration::from_secs(1);

/// Planner settings of every connection the store opens (reads, appends, and
/// the read models and operator tools that share its pools).
///
/// PostgreSQL plans a prepared statement afresh for its first five runs on a
/// connection, then may switch to one generic plan that it keeps for the
/// connection's life; only an ANALYZE (or DDL) invalidates it. A generic plan
/// made while the log was empty or small reads it with a sequential scan (the
/// cheapest way to read nothing), and with autovacuum off, or behind, nobody
/// runs that ANALYZE: every append then scans the whole log. With these two
/// off, every plan, generic or custom and whatever the statistics say, reads
/// a table through an index whenever one applies; the statements below are
/// written so that the only index path is a lookup of one key (a bare
/// `enable_seqscan = off` still allows a join to read a whole index).
/// tests/append_plan.rs checks every statement's plan.
const PLANNER_SETTINGS: [(&str, &str); 2] = [("enable_seqscan", "off"), ("enable_bitmapscan", "off")];

/// Takes the log lock for the rest of the transaction.
const LOCK_LOG: &str = "SELECT pg_advisory_xact_lock($1)";
/// The last event of each named stream: one backward probe of (stream_id,
/// stream_version) per stream, whatever its length.
const STREAM_HEADS: &str = "SELECT s.stream_id, e.stream_version, e.stream_hash \
     FROM UNNEST($1::text[]) AS s(stream_id) \
     CROSS JOIN LATERAL (SELECT stream_version, stream_hash FROM events \
                         WHERE stream_id = s.stream_id ORDER BY stream_version DESC LIMIT 1) AS e";
/// The command records of the named (stream, command) pairs: one primary-key
/// lookup per pair. The LATERAL … LIMIT 1 keeps the planner from turning it
/// into a join, which could read the whole table or its whole index.
const COMMAND_RECORDS: &str = "SELECT k.stream_id, k.command_id, c.first_version, c.last_version, \
            c.first_position, c.last_position \
     FROM UNNEST($1::text[], $2::uuid[]) AS k(stream_id, command_id) \
     CROSS JOIN LATERAL (SELECT first_version, last_version, first_position, last_position \
                         FROM stream_commands \
                         WHERE stream_id = k.stream_id AND command_id = k.command_id LIMIT 1) AS c";
/// The last event of the log: one backward step on the primary key.
const LOG_HEAD: &str = "SELECT global_position, log_hash FROM events ORDER BY global_position DESC LIMIT 1";
const INSERT_EVENTS: &str = "INSERT INTO events (global_position, stream_id, stream_version, event_id, event_type, \
                         schema_version, payload, metadata, command_id, recorded_at, \
                         stream_hash, log_hash) \
     SELECT p, s, v, e, t, sv, pl::jsonb, md::jsonb, c, r, sh, lh \
     FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::uuid[], $5::text[], \
                 $6::int[], $7::text[], $8::text[], $9::uuid[], $10::timestamptz[], \
                 $11::bytea[], $12::bytea[]) AS u(p, s, v, e, t, sv, pl, md, c, r, sh, lh)";
const INSERT_COMMANDS: &str = "INSERT INTO stream_commands (stream_id, command_id, first_version, last_version, \
                                  first_position, last_position, recorded_at) \
     SELECT s, c, fv, lv, fp, lp, $7 \
     FROM UNNEST($1::text[], $2::uuid[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[]) \
          AS u(s, c, fv, lv, fp, lp)";
const NOTIFY: &str = "SELECT pg_notify($1, $2)";
const READ_STREAM: &str = "SELECT global_position, stream_id, stream_version, event_id, event_type, schema_version, \
            payload, metadata, command_id, recorded_at \
     FROM events WHERE stream_id = $1 AND stream_version >= $2 ORDER BY stream_version LIMIT $3";
const READ_ALL: &str = "SELECT global_position, stream_id, stream_version, event_id, event_type, schema_version, \
            payload, metadata, command_id, recorded_at \
     FROM events WHERE global_position > $1 ORDER BY global_position LIMIT $2";
const READ_CHAINED: &str = "SELECT global_position, stream_id, stream_version, event_id, event_type, schema_version, \
            payload, metadata, command_id, recorded_at, stream_hash, log_hash \
     FROM events WHERE global_position > $1 ORDER BY global_position LIMIT $2";
// The last version and position as one backward index step each: a plan for
// MAX() made while the log was empty aggregates over the whole index instead.
const STREAM_VERSION: &str =
    "SELECT stream_version FROM events WHERE stream_id = $1 ORDER BY stream_version DESC LIMIT 1";
const HEAD_POSITION: &str = "SELECT global_position FROM events ORDER BY global_position DESC LIMIT 1";
const LOAD_CHECKPOINT: &str = "SELECT position FROM checkpoints WHERE name = $1";
const SAVE_CHECKPOINT: &str = "INSERT INTO checkpoints (name, position, updated_at) VALUES ($1, $2, $3) \
     ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position, updated_at = EXCLUDED.updated_at";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Debug, Clone)]
pub struct PostgresConfig {
    pub url: String,
    /// What the server shows for this store's sessions (`pg_stat_activity`):
    /// the engine's own name by default, another for the operator tools, so a
    /// replay can tell whether an engine (and its projections) is connected.
    pub application_name: String,
    /// Connections for reads (streams, the log, the listener).
    pub read_connections: u32,
    /// Connections for appends. Appends serialise on the log lock, so more than
    /// a couple only park connections that reads could use.
    pub write_connections: u32,
    /// How long a caller waits for a pooled connection before failing.
    pub acquire_timeout: Duration,
    /// Server-side bound on any one statement, so nothing hangs on a stuck server.
    pub statement_timeout: Duration,
    /// The server ends a session left idle inside a transaction this long: a
    /// process stopped mid-append (SIGSTOP, a VM pause) must neither hold the
    /// log's lock for everyone nor commit after its cluster leases have run
    /// out, so in a cluster this stays below the lease time.
    pub idle_in_transaction_timeout: Duration,
}

impl PostgresConfig {
    /// The application name of an engine's sessions (`serve`, tests, benches).
    pub const ENGINE_APPLICATION_NAME: &'static str = "order-engine";
    /// The application name of the operator tools' sessions (replay, verify, export).
    pub const OPS_APPLICATION_NAME: &'static str = "order-engine-ops";

    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            application_name: Self::ENGINE_APPLICATION_NAME.to_owned(),
            read_connections: 16,
            write_connections: 2,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            idle_in_transaction_timeout: Duration::from_secs(5),
        }
    }
}

pub struct PostgresStore {
    writer: PgPool,
    reader: PgPool,
    head: Arc<HeadWatch>,
    clock: Arc<dyn Clock>,
    before_commit: Option<BeforeCommitHook>,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl PostgresStore {
    /// Connects, applies migrations, and starts listening for appends.
    pub async fn open(config: PostgresConfig) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(&config.url)
            .map_err(|e| StoreError::Config(format!("invalid PostgreSQL URL: {e}")))?
            .application_name(&config.application_name)
            .options(
                [
                    (
                        "statement_timeout",
                        format!("{}ms", config.statement_timeout.as_millis()),
                    ),
                    (
                        "idle_in_transaction_session_timeout",
                        format!("{}ms", config.idle_in_transaction_timeout.as_millis().max(1)),
                    ),
                ]
                .into_iter()
                .chain(PLANNER_SETTINGS.map(|(name, value)| (name, value.to_owned()))),
            );
        let pool = |connections: u32| {
            PgPoolOptions::new()
                .max_connections(connections.max(1))
                .acquire_timeout(config.acquire_timeout)
                // Not pinging an idle connection before handing it out saves a round
                // trip per statement, and makes taking one from the idle queue
                // synchronous: a caller cancelled while the ping is in flight (a
                // `select!` that took another branch) makes sqlx drop that connection,
                // and the pool opens a new one. A connection the server has closed
                // fails its next statement instead (a transient error, retried like
                // any other), and is not returned to the pool.
                .test_before_acquire(false)
                .connect_with(options.clone())
        };
        let writer = pool(config.write_connections).await.map_err(StoreError::from_sqlx)?;
        MIGRATOR.run(&writer).await?;
        // One reader connection is the listener's for good; the rest serve reads.
        let reader = pool(config.read_connections + 1).await.map_err(StoreError::from_sqlx)?;
        let head = Arc::new(HeadWatch::new());
        let listener = tokio::spawn(listen_for_appends(reader.clone(), Arc::clone(&head)));
        Ok(Self {
            writer,
            reader,
            head,
            clock: Arc::new(SystemClock),
            before_commit: None,
            listener,
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

    /// The pool reads use; read models share it.
    pub fn reader_pool(&self) -> &PgPool {
        &self.reader
    }

    /// The pool appends use; for tools that must write beside the store (tests, import).
    pub fn writer_pool(&self) -> &PgPool {
        &self.writer
    }

    /// Every statement of the append and read paths, by name, exactly as the
    /// store sends it; tests/append_plan.rs explains each on a large log.
    #[doc(hidden)]
    pub fn hot_statements() -> &'static [(&'static str, &'static str)] {
        &[
            ("lock_log", LOCK_LOG),
            ("stream_heads", STREAM_HEADS),
            ("command_records", COMMAND_RECORDS),
            ("log_head", LOG_HEAD),
            ("insert_events", INSERT_EVENTS),
            ("insert_commands", INSERT_COMMANDS),
            ("notify", NOTIFY),
            ("read_stream", READ_STREAM),
            ("read_all", READ_ALL),
            ("read_chained", READ_CHAINED),
            ("stream_version", STREAM_VERSION),
            ("head_position", HEAD_POSITION),
            ("load_checkpoint", LOAD_CHECKPOINT),
            ("save_checkpoint", SAVE_CHECKPOINT),
        ]
    }

    /// Reads, under the log lock, what `plan_batch` or `plan_import` needs:
    /// the head, the named streams' last events and the named command records.
    async fn snapshot(tx: &mut Transaction<'_, Postgres>, keys: &Keys<'_>) -> Result<LogSnapshot, StoreError> {
        let mut names: Vec<&str> = keys.streams.iter().map(|s| s.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        let rows = sqlx::query(STREAM_HEADS).bind(&names).fetch_all(&mut **tx).await?;
        let mut heads = HashMap::with_capacity(rows.len());
        for row in rows {
            let stream_id = stream_id_of(&row)?;
            let version: i64 = row.try_get("stream_version")?;
            let hash = hash_of(&row, "stream_hash", -1)?;
            heads.insert(
                stream_id,
                StreamHead {
                    version: to_u64(version),
                    hash,
                },
            );
        }

        let (command_streams, command_ids): (Vec<&str>, Vec<Uuid>) =
            keys.commands.iter().map(|(s, c)| (s.as_str(), *c)).unzip();
        let mut commands = HashMap::new();
        if !command_ids.is_empty() {
            let rows = sqlx::query(COMMAND_RECORDS)
                .bind(&command_streams)
                .bind(&command_ids)
                .fetch_all(&mut **tx)
                .await?;
            for row in rows {
                let stream_id = stream_id_of(&row)?;
                let appended = command_record(&row, &stream_id)?;
                commands.insert((stream_id, row.try_get::<Uuid, _>("command_id")?), appended);
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

    async fn insert_events(tx: &mut Transaction<'_, Postgres>, rows: &[EventRow<'_>]) -> Result<(), StoreError> {
        let n = rows.len();
        let mut positions = Vec::with_capacity(n);
        let mut streams = Vec::with_capacity(n);
        let mut versions = Vec::with_capacity(n);
        let mut event_ids = Vec::with_capacity(n);
        let mut types = Vec::with_capacity(n);
        let mut schema_versions = Vec::with_capacity(n);
        let mut payloads = Vec::with_capacity(n);
        let mut metadata = Vec::with_capacity(n);
        let mut command_ids: Vec<Option<Uuid>> = Vec::with_capacity(n);
        let mut recorded_at = Vec::with_capacity(n);
        let mut stream_hashes: Vec<Option<Vec<u8>>> = Vec::with_capacity(n);
        let mut log_hashes: Vec<Option<Vec<u8>>> = Vec::with_capacity(n);
        for row in rows {
            positions.push(to_i64(row.position)?);
            streams.push(row.stream_id.as_str());
            versions.push(to_i64(row.version)?);
            event_ids.push(row.event_id);
            types.push(row.event_type);
            schema_versions.push(i32::try_from(row.schema_version).map_err(|_| {
                StoreError::InvalidAppend(format!("schema version {} is too large", row.schema_version))
            })?);
            payloads.push(row.payload.as_str());
            metadata.push(encode_metadata(row.metadata)?);
            command_ids.push(row.command_id);
            recorded_at.push(row.recorded_at);
            stream_hashes.push(row.stream_hash.map(|h| h.0.to_vec()));
            log_hashes.push(row.log_hash.map(|h| h.0.to_vec()));
        }
        sqlx::query(INSERT_EVENTS)
            .bind(&positions)
            .bind(&streams)
            .bind(&versions)
            .bind(&event_ids)
            .bind(&types)
            .bind(&schema_versions)
            .bind(&payloads)
            .bind(&metadata)
            .bind(&command_ids)
            .bind(&recorded_at)
            .bind(&stream_hashes)
            .bind(&log_hashes)
            .execute(&mut **tx)
            .await
            .map_err(classify_insert_error)?;
        Ok(())
    }

    async fn insert_commands(
        tx: &mut Transaction<'_, Postgres>,
        commands: &[(Uuid, Appended)],
        recorded_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if commands.is_empty() {
            return Ok(());
        }
        let mut c_streams = Vec::new();
        let mut c_ids = Vec::new();
        let mut c_first_version = Vec::new();
        let mut c_last_version = Vec::new();
        let mut c_first_position = Vec::new();
        let mut c_last_position = Vec::new();
        for (command_id, appended) in commands {
            c_streams.push(appended.stream_id.as_str());
            c_ids.push(*command_id);
            c_first_version.push(to_i64(appended.first_version)?);
            c_last_version.push(to_i64(appended.last_version)?);
            c_first_position.push(to_i64(appended.first_position)?);
            c_last_position.push(to_i64(appended.last_position)?);
        }
        sqlx::query(INSERT_COMMANDS)
            .bind(&c_streams)
            .bind(&c_ids)
            .bind(&c_first_version)
            .bind(&c_last_version)
            .bind(&c_first_position)
            .bind(&c_last_position)
            .bind(recorded_at)
            .execute(&mut **tx)
            .await
            .map_err(classify_insert_error)?;
        Ok(())
    }

    /// Delivered at COMMIT, never for a rolled-back append.
    async fn notify(tx: &mut Transaction<'_, Postgres>, last: u64) -> Result<(), StoreError> {
        sqlx::query(NOTIFY)
            .bind(LOG_CHANNEL)
            .bind(last.to_string())
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    async fn lock_log(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        let mut tx = self.writer.begin().await?;
        sqlx::query(LOCK_LOG).bind(LOG_LOCK_KEY).execute(&mut *tx).await?;
        Ok(tx)
    }
}

#[async_trait]
impl EventStore for PostgresStore {
    async fn append_batch(&self, requests: Vec<AppendRequest>) -> Result<Vec<Result<Appended, Conflict>>, StoreError> {
        validate_batch(&requests)?;
        let mut tx = self.lock_log().await?;
        let snapshot = Self::snapshot(&mut tx, &Keys::of_requests(&requests)).await?;
        let plan = plan_batch(&requests, snapshot, self.clock.now());
        if let Some(last) = plan.last_position() {
            Self::insert_events(&mut tx, &plan.rows).await?;
            Self::insert_commands(&mut tx, &plan.commands, plan.recorded_at).await?;
            Self::notify(&mut tx, last).await?;
        }
        if let Some(hook) = &self.before_commit {
            // Dropping `tx` on error rolls back, exactly as a crash before COMMIT would.
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
        let mut tx = self.lock_log().await?;
        let snapshot = Self::snapshot(&mut tx, &Keys::of_events(&events)).await?;
        let commands = plan_import(&events, snapshot)?;
        let rows: Vec<EventRow<'_>> = events.iter().map(EventRow::from).collect();
        Self::insert_events(&mut tx, &rows).await?;
        let imported_at = self.clock.now();
        Self::insert_commands(&mut tx, &commands, imported_at).await?;
        Self::notify(&mut tx, last).await?;
        tx.commit().await?;
        self.head.advance(last);
        Ok(())
    }

    async fn command_record(&self, stream_id: &StreamId, command_id: Uuid) -> Result<Option<Appended>, StoreError> {
        // The append path's own statement, for one pair: a primary-key lookup.
        let row = sqlx::query(COMMAND_RECORDS)
            .bind([stream_id.as_str()].as_slice())
            .bind([command_id].as_slice())
            .fetch_optional(&self.reader)
            .await?;
        row.map(|row| command_record(&row, stream_id)).transpose()
    }

    async fn stream_version(&self, stream_id: &StreamId) -> Result<u64, StoreError> {
        let version: Option<i64> = sqlx::query_scalar(STREAM_VERSION)
            .bind(stream_id.as_str())
            .fetch_optional(&self.reader)
            .await?;
        Ok(version.map_or(0, to_u64))
    }

    async fn head_position(&self) -> Result<u64, StoreError> {
        let head: Option<i64> = sqlx::query_scalar(HEAD_POSITION).fetch_optional(&self.reader).await?;
        Ok(head.map_or(0, to_u64))
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
        "postgres"
    }
}

/// Keeps `head` current with appends from every process sharing the database.
/// Notifications missed while reconnecting are covered by readers' poll timeout.
async fn listen_for_appends(pool: PgPool, head: Arc<HeadWatch>) {
    loop {
        match PgListener::connect_with(&pool).await {
            Ok(mut listener) => match listener.listen(LOG_CHANNEL).await {
                Ok(()) => loop {
                    match listener.recv().await {
                        Ok(notification) => {
                            if let Ok(position) = notification.payload().parse::<u64>() {
                                head.advance(position);
                            }
                        }
                        Err(error) => {
                            tracing::warn!(%error, "event log listener lost its connection; reconnecting");
                            break;
                        }
                    }
                },
                Err(error) => tracing::warn!(%error, "event log listener could not LISTEN; retrying"),
            },
            Err(error) => tracing::warn!(%error, "event log listener could not connect; retrying"),
        }
        tokio::time::sleep(LISTENER_RETRY_DELAY).await;
    }
}

fn classify_insert_error(error: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &error {
        if db.code().as_deref() == Some("23505") {
            // Only a writer that bypasses the log lock can get here.
            return StoreError::ConcurrentWriter {
                stream_id: db.constraint().unwrap_or("unknown").to_owned(),
            };
        }
    }
    StoreError::from_sqlx(error)
}

fn encode_metadata(metadata: &EventMetadata) -> Result<String, StoreError> {
    serde_json::to_string(metadata).map_err(|e| StoreError::InvalidAppend(format!("metadata cannot be encoded: {e}")))
}

fn stream_id_of(row: &PgRow) -> Result<StreamId, StoreError> {
    let raw: String = row.try_get("stream_id")?;
    StreamId::new(raw).map_err(|e| StoreError::Corrupt {
        position: row.try_get("global_position").unwrap_or(-1),
        reason: e.to_string(),
    })
}

fn decode_row(row: &PgRow) -> Result<RecordedEvent, StoreError> {
    let position: i64 = row.try_get("global_position")?;
    let corrupt = |reason: String| StoreError::Corrupt { position, reason };
    // Read as JSON text into the typed metadata and the raw payload: no
    // `serde_json::Value` tree per event (every reader of the log reads here).
    let metadata: sqlx::types::Json<EventMetadata> =
        row.try_get("metadata").map_err(|e| corrupt(format!("metadata: {e}")))?;
    let payload: sqlx::types::Json<Box<RawValue>> =
        row.try_get("payload").map_err(|e| corrupt(format!("payload: {e}")))?;
    let schema_version: i32 = row.try_get("schema_version")?;
    let recorded_at: DateTime<Utc> = row.try_get("recorded_at")?;
    Ok(RecordedEvent {
        global_position: to_u64(position),
        stream_id: stream_id_of(row)?,
        stream_version: to_u64(row.try_get("stream_version")?),
        event_id: row.try_get("event_id")?,
        event_type: row.try_get("event_type")?,
        schema_version: u32::try_from(schema_version).map_err(|e| corrupt(e.to_string()))?,
        payload: Payload::stored(payload.0),
        metadata: metadata.0,
        command_id: row.try_get("command_id")?,
        recorded_at,
    })
}

/// Positions and versions are BIGINT ≥ 1 by CHECK constraint; negative cannot occur.
fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn to_i64(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::InvalidAppend(format!("{value} exceeds the BIGINT range")))
}

fn page_limit(max_count: usize) -> i64 {
    i64::try_from(max_count.clamp(1, READ_PAGE_MAX)).unwrap_or(1)
}
