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
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use super::chain::ChainedEvent;
use super::error::validate_batch;
use super::head::HeadWatch;
use super::plan::{plan_batch, plan_import, EventRow, Keys, LogSnapshot, StreamHead};
use super::rows::{chained, hash_of};
use super::{AppendRequest, Appended, BeforeCommitHook, Conflict, EventStore, StoreError, READ_PAGE_MAX};
use crate::clock::{Clock, SystemClock};
use crate::events::{EventMetadata, RecordedEvent, StreamId};

/// The advisory lock that serialises position assignment ("oe-log" in ASCII).
const LOG_LOCK_KEY: i64 = 0x6f65_2d6c_6f67;
/// NOTIFY channel carrying the last committed position of each append.
const LOG_CHANNEL: &str = "order_engine_log";
/// How long the listener waits before reconnecting after it lost its connection.
const LISTENER_RETRY_DELAY: Duration = Duration::from_secs(1);

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Debug, Clone)]
pub struct PostgresConfig {
    pub url: String,
    /// Connections for reads (streams, the log, the listener).
    pub read_connections: u32,
    /// Connections for appends. Appends serialise on the log lock, so more than
    /// a couple only park connections that reads could use.
    pub write_connections: u32,
    /// How long a caller waits for a pooled connection before failing.
    pub acquire_timeout: Duration,
    /// Server-side bound on any one statement, so nothing hangs on a stuck server.
    pub statement_timeout: Duration,
}

impl PostgresConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            read_connections: 16,
            write_connections: 2,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
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
            .application_name("order-engine")
            .options([(
                "statement_timeout",
                format!("{}ms", config.statement_timeout.as_millis()),
            )]);
        let pool = |connections: u32| {
            PgPoolOptions::new()
                .max_connections(connections.max(1))
                .acquire_timeout(config.acquire_timeout)
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

    /// Reads, under the log lock, what `plan_batch` or `plan_import` needs:
    /// the head, the named streams' last events and the named command records.
    async fn snapshot(tx: &mut Transaction<'_, Postgres>, keys: &Keys<'_>) -> Result<LogSnapshot, StoreError> {
        let mut names: Vec<&str> = keys.streams.iter().map(|s| s.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        // One index probe per stream for its last event, whatever its length.
        let rows = sqlx::query(
            "SELECT s.stream_id, e.stream_version, e.stream_hash \
             FROM UNNEST($1::text[]) AS s(stream_id) \
             CROSS JOIN LATERAL (SELECT stream_version, stream_hash FROM events \
                                 WHERE stream_id = s.stream_id ORDER BY stream_version DESC LIMIT 1) AS e",
        )
        .bind(&names)
        .fetch_all(&mut **tx)
        .await?;
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
            let rows = sqlx::query(
                "SELECT stream_id, command_id, first_version, last_version, first_position, last_position \
                 FROM stream_commands \
                 WHERE (stream_id, command_id) IN (SELECT * FROM UNNEST($1::text[], $2::uuid[]))",
            )
            .bind(&command_streams)
            .bind(&command_ids)
            .fetch_all(&mut **tx)
            .await?;
            for row in rows {
                let stream_id = stream_id_of(&row)?;
                let appended = Appended {
                    stream_id: stream_id.clone(),
                    first_version: to_u64(row.try_get("first_version")?),
                    last_version: to_u64(row.try_get("last_version")?),
                    first_position: to_u64(row.try_get("first_position")?),
                    last_position: to_u64(row.try_get("last_position")?),
                    deduplicated: true,
                };
                commands.insert((stream_id, row.try_get::<Uuid, _>("command_id")?), appended);
            }
        }

        let head = sqlx::query("SELECT global_position, log_hash FROM events ORDER BY global_position DESC LIMIT 1")
            .fetch_optional(&mut **tx)
            .await?;
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
            payloads.push(row.payload.to_string());
            metadata.push(encode_metadata(row.metadata)?);
            command_ids.push(row.command_id);
            recorded_at.push(row.recorded_at);
            stream_hashes.push(row.stream_hash.map(|h| h.0.to_vec()));
            log_hashes.push(row.log_hash.map(|h| h.0.to_vec()));
        }
        sqlx::query(
            "INSERT INTO events (global_position, stream_id, stream_version, event_id, event_type, \
                                 schema_version, payload, metadata, command_id, recorded_at, \
                                 stream_hash, log_hash) \
             SELECT p, s, v, e, t, sv, pl::jsonb, md::jsonb, c, r, sh, lh \
             FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::uuid[], $5::text[], \
                         $6::int[], $7::text[], $8::text[], $9::uuid[], $10::timestamptz[], \
                         $11::bytea[], $12::bytea[]) AS u(p, s, v, e, t, sv, pl, md, c, r, sh, lh)",
        )
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
        sqlx::query(
            "INSERT INTO stream_commands (stream_id, command_id, first_version, last_version, \
                                          first_position, last_position, recorded_at) \
             SELECT s, c, fv, lv, fp, lp, $7 \
             FROM UNNEST($1::text[], $2::uuid[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[]) \
                  AS u(s, c, fv, lv, fp, lp)",
        )
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
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(LOG_CHANNEL)
            .bind(last.to_string())
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    async fn lock_log(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        let mut tx = self.writer.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(LOG_LOCK_KEY)
            .execute(&mut *tx)
            .await?;
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
        let rows = sqlx::query(
            "SELECT global_position, stream_id, stream_version, event_id, event_type, schema_version, \
                    payload, metadata, command_id, recorded_at \
             FROM events WHERE stream_id = $1 AND stream_version >= $2 ORDER BY stream_version LIMIT $3",
        )
        .bind(stream_id.as_str())
        .bind(to_i64(from_version)?)
        .bind(page_limit(max_count))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(decode_row).collect()
    }

    async fn read_all(&self, after_position: u64, max_count: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT global_position, stream_id, stream_version, event_id, event_type, schema_version, \
                    payload, metadata, command_id, recorded_at \
             FROM events WHERE global_position > $1 ORDER BY global_position LIMIT $2",
        )
        .bind(to_i64(after_position)?)
        .bind(page_limit(max_count))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(decode_row).collect()
    }

    async fn read_chained(&self, after_position: u64, max_count: usize) -> Result<Vec<ChainedEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT global_position, stream_id, stream_version, event_id, event_type, schema_version, \
                    payload, metadata, command_id, recorded_at, stream_hash, log_hash \
             FROM events WHERE global_position > $1 ORDER BY global_position LIMIT $2",
        )
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

    async fn stream_version(&self, stream_id: &StreamId) -> Result<u64, StoreError> {
        let version: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(stream_version), 0) FROM events WHERE stream_id = $1")
                .bind(stream_id.as_str())
                .fetch_one(&self.reader)
                .await?;
        Ok(to_u64(version))
    }

    async fn head_position(&self) -> Result<u64, StoreError> {
        let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(global_position), 0) FROM events")
            .fetch_one(&self.reader)
            .await?;
        Ok(to_u64(head))
    }

    async fn wait_for_append(&self, after_position: u64, timeout: Duration) {
        self.head.wait_past(after_position, timeout).await;
    }

    async fn load_checkpoint(&self, name: &str) -> Result<u64, StoreError> {
        let position: Option<i64> = sqlx::query_scalar("SELECT position FROM checkpoints WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.reader)
            .await?;
        Ok(position.map_or(0, to_u64))
    }

    async fn save_checkpoint(&self, name: &str, position: u64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO checkpoints (name, position, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position, updated_at = EXCLUDED.updated_at",
        )
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
    let metadata: serde_json::Value = row.try_get("metadata")?;
    let schema_version: i32 = row.try_get("schema_version")?;
    let recorded_at: DateTime<Utc> = row.try_get("recorded_at")?;
    Ok(RecordedEvent {
        global_position: to_u64(position),
        stream_id: stream_id_of(row)?,
        stream_version: to_u64(row.try_get("stream_version")?),
        event_id: row.try_get("event_id")?,
        event_type: row.try_get("event_type")?,
        schema_version: u32::try_from(schema_version).map_err(|e| corrupt(e.to_string()))?,
        payload: row.try_get("payload")?,
        metadata: serde_json::from_value(metadata).map_err(|e| corrupt(format!("metadata: {e}")))?,
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
