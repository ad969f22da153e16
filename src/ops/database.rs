//! The SQL the operator tools run beside the log: scratch copies of a
//! read-model table, bulk writes of coalesced rows, the swap, and a row diff.
//! One type, two backends; each statement is written once per backend.
//!
//! Table names here are this module's own constants and suffixes, never input.

use std::time::Duration;

use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;
use sqlx::{PgConnection, Row, SqliteConnection};

use super::{check_dense, OpsError};
use crate::events::RecordedEvent;
use crate::projections::coalesce::RowBatch;
use crate::projections::order_row_change;
use crate::projections::{write_batch_postgres, write_batch_sqlite};
use crate::store::{EventStore, PostgresConfig, READ_PAGE_MAX};

/// How long the swap waits for readers and the live projection to let go of
/// the table before giving up (PostgreSQL; SQLite waits its busy timeout).
const SWAP_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// Raw access to the database the log lives in (the store's writer pool).
#[derive(Clone)]
pub enum OpsDb {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// One row that differs between a live table and a fresh fold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowDiff {
    /// The row's id (the order id for `orders`).
    pub id: String,
    pub kind: RowDiffKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowDiffKind {
    /// In the live table, not in the fold of the log.
    OnlyLive,
    /// In the fold of the log, missing from the live table.
    OnlyFresh,
    /// In both, with these columns different: (column, live, fresh).
    Columns(Vec<(String, Option<String>, Option<String>)>),
}

/// What the swap did, or why it has not yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwapOutcome {
    /// Swapped in; the table and its checkpoint are at this position.
    Swapped { position: u64, applied_in_swap: u64 },
    /// The live projection's checkpoint is behind the rebuild: swapping now
    /// would make it apply events the new table already holds. Wait for it.
    LiveBehind { live: u64 },
}

impl OpsDb {
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgres",
            Self::Sqlite(_) => "sqlite",
        }
    }

    /// An empty table shaped like `live` (columns, types, primary key), after
    /// dropping any leftover of an interrupted run.
    pub async fn create_scratch(&self, live: &str, scratch: &str) -> Result<(), OpsError> {
        match self {
            Self::Postgres(pool) => {
                let mut conn = pool.acquire().await?;
                sqlx::query(&format!("DROP TABLE IF EXISTS {scratch}"))
                    .execute(&mut *conn)
                    .await?;
                // The unique indexes come along (the fold upserts by them); the
                // others are dropped here and built once after the load
                // (`index_scratch`) instead of maintained row by row.
                sqlx::query(&format!("CREATE TABLE {scratch} (LIKE {live} INCLUDING ALL)"))
                    .execute(&mut *conn)
                    .await?;
                for index in secondary_indexes(&mut conn, scratch).await? {
                    sqlx::query(&format!("DROP INDEX {}", index.0))
                        .execute(&mut *conn)
                        .await?;
                }
            }
            Self::Sqlite(pool) => {
                let mut conn = pool.acquire().await?;
                let ddl = sqlite_table_sql(&mut conn, live).await?;
                sqlx::query(&format!("DROP TABLE IF EXISTS {scratch}"))
                    .execute(&mut *conn)
                    .await?;
                // SQLite has no CREATE TABLE … LIKE: the live table's own DDL under the
                // scratch name. The name is everything before the column list; after a
                // swap's rename SQLite stores it quoted (`CREATE TABLE "orders"`).
                let columns = ddl
                    .find('(')
                    .map(|at| &ddl[at..])
                    .ok_or_else(|| OpsError::MissingTable { table: live.into() })?;
                sqlx::query(&format!("CREATE TABLE {scratch} {columns}"))
                    .execute(&mut *conn)
                    .await?;
            }
        }
        Ok(())
    }

    /// Builds on `scratch` the indexes of `live` that `create_scratch` left
    /// out (PostgreSQL), with generated names that the swap renames. SQLite's
    /// scratch table has none until the swap makes them.
    pub async fn index_scratch(&self, live: &str, scratch: &str) -> Result<(), OpsError> {
        let Self::Postgres(pool) = self else {
            return Ok(());
        };
        let mut conn = pool.acquire().await?;
        let built: Vec<String> = secondary_indexes(&mut conn, scratch)
            .await?
            .into_iter()
            .map(|(name, def)| index_shape(&name, &def))
            .collect();
        for (name, def) in secondary_indexes(&mut conn, live).await? {
            let shape = index_shape(&name, &def);
            // An index already there (a previous run's build) is not made twice.
            if built.contains(&shape) {
                continue;
            }
            let ddl = on_table(&shape, scratch).ok_or_else(|| OpsError::MissingTable { table: live.into() })?;
            sqlx::query(&ddl).execute(&mut *conn).await?;
        }
        Ok(())
    }

    pub async fn drop_table(&self, table: &str) -> Result<(), OpsError> {
        let sql = format!("DROP TABLE IF EXISTS {table}");
        match self {
            Self::Postgres(pool) => {
                sqlx::query(&sql).execute(pool).await?;
            }
            Self::Sqlite(pool) => {
                sqlx::query(&sql).execute(pool).await?;
            }
        }
        Ok(())
    }

    /// Writes one batch into `table` in its own transaction.
    pub async fn write(&self, table: &str, batch: &RowBatch) -> Result<(), OpsError> {
        if batch.is_empty() {
            return Ok(());
        }
        match self {
            Self::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                write_batch_postgres(&mut tx, table, batch).await?;
                tx.commit().await?;
            }
            Self::Sqlite(pool) => {
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                write_batch_sqlite(&mut tx, table, batch).await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Copies every row of `live` into `scratch` as of one snapshot; returns
    /// the live projection's checkpoint in that snapshot (where the rows stand).
    pub async fn copy_rows(&self, live: &str, scratch: &str, checkpoint: &str) -> Result<u64, OpsError> {
        let copy = format!("INSERT INTO {scratch} SELECT * FROM {live}");
        let at: Option<i64> = match self {
            Self::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    .execute(&mut *tx)
                    .await?;
                let at = sqlx::query_scalar("SELECT position FROM checkpoints WHERE name = $1")
                    .bind(checkpoint)
                    .fetch_optional(&mut *tx)
                    .await?;
                sqlx::query(&copy).execute(&mut *tx).await?;
                tx.commit().await?;
                at
            }
            Self::Sqlite(pool) => {
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let at = sqlx::query_scalar("SELECT position FROM checkpoints WHERE name = ?")
                    .bind(checkpoint)
                    .fetch_optional(&mut *tx)
                    .await?;
                sqlx::query(&copy).execute(&mut *tx).await?;
                tx.commit().await?;
                at
            }
        };
        Ok(at.and_then(|p| u64::try_from(p).ok()).unwrap_or(0))
    }

    /// Removes the rows of these ids from `table`.
    pub async fn delete_rows(&self, table: &str, ids: &[uuid::Uuid]) -> Result<(), OpsError> {
        match self {
            Self::Postgres(pool) => {
                sqlx::query(&format!("DELETE FROM {table} WHERE id = ANY($1)"))
                    .bind(ids.to_vec())
                    .execute(pool)
                    .await?;
            }
            Self::Sqlite(pool) => {
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let sql = format!("DELETE FROM {table} WHERE id = ?");
                for id in ids {
                    sqlx::query(&sql).bind(id.to_string()).execute(&mut *tx).await?;
                }
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Where the reader `name` has got to (0 when it never saved one).
    pub async fn checkpoint(&self, name: &str) -> Result<u64, OpsError> {
        let position: Option<i64> = match self {
            Self::Postgres(pool) => {
                sqlx::query_scalar("SELECT position FROM checkpoints WHERE name = $1")
                    .bind(name)
                    .fetch_optional(pool)
                    .await?
            }
            Self::Sqlite(pool) => {
                sqlx::query_scalar("SELECT position FROM checkpoints WHERE name = ?")
                    .bind(name)
                    .fetch_optional(pool)
                    .await?
            }
        };
        Ok(position.and_then(|p| u64::try_from(p).ok()).unwrap_or(0))
    }

    /// Replaces `live` by `scratch` in one transaction, for the projection
    /// whose checkpoint is `checkpoint`:
    ///
    /// 1. lock `live` against readers and writers (the running projection's
    ///    next commit waits here) and the checkpoint row;
    /// 2. read the live checkpoint C. When C ≥ `rebuilt_to`, apply the events
    ///    (rebuilt_to, C] to the scratch table, so the new table is exactly at
    ///    C, where a running projection will continue from. When C is behind,
    ///    a running projection would apply again events the new table holds,
    ///    so return [`SwapOutcome::LiveBehind`], unless no projection is
    ///    running: the caller has seen C stand still (`live_stalled ==
    ///    Some(C)`), or (PostgreSQL) no engine session is connected to the
    ///    database at all; then the checkpoint moves up to `rebuilt_to`;
    /// 3. drop `live`, rename `scratch` to it, give the indexes the live
    ///    names, set the checkpoint, commit.
    pub async fn swap(
        &self,
        store: &dyn EventStore,
        live: &str,
        scratch: &str,
        checkpoint: &str,
        rebuilt_to: u64,
        live_stalled: Option<u64>,
    ) -> Result<SwapOutcome, OpsError> {
        match self {
            Self::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query(&format!(
                    "SET LOCAL lock_timeout = '{}ms'",
                    SWAP_LOCK_TIMEOUT.as_millis()
                ))
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO checkpoints (name, position, updated_at) VALUES ($1, 0, now()) \
                     ON CONFLICT (name) DO NOTHING",
                )
                .bind(checkpoint)
                .execute(&mut *tx)
                .await?;
                sqlx::query(&format!("LOCK TABLE {live} IN ACCESS EXCLUSIVE MODE"))
                    .execute(&mut *tx)
                    .await?;
                let current: i64 = sqlx::query_scalar("SELECT position FROM checkpoints WHERE name = $1 FOR UPDATE")
                    .bind(checkpoint)
                    .fetch_one(&mut *tx)
                    .await?;
                let current = u64::try_from(current).unwrap_or(0);
                // A projection runs only inside an engine; with none connected to the
                // database, a checkpoint behind the rebuild has nobody to wait for.
                let live_stalled = if current < rebuilt_to && live_stalled != Some(current) {
                    if engine_connected(&mut tx).await? {
                        live_stalled
                    } else {
                        Some(current)
                    }
                } else {
                    live_stalled
                };
                let Some(target) = swap_target(current, rebuilt_to, live_stalled) else {
                    return Ok(SwapOutcome::LiveBehind { live: current });
                };
                let mut range = RangeBatches::new(rebuilt_to, target);
                while let Some(batches) = range.next(store).await? {
                    for batch in batches {
                        write_batch_postgres(&mut tx, scratch, &batch).await?;
                    }
                }
                let applied = target - rebuilt_to;
                let old_indexes: Vec<(String, String)> = sqlx::query_as(
                    "SELECT indexname::text, indexdef FROM pg_indexes \
                     WHERE schemaname = current_schema() AND tablename = $1",
                )
                .bind(live)
                .fetch_all(&mut *tx)
                .await?;
                sqlx::query(&format!("DROP TABLE {live}")).execute(&mut *tx).await?;
                sqlx::query(&format!("ALTER TABLE {scratch} RENAME TO {live}"))
                    .execute(&mut *tx)
                    .await?;
                let new_indexes: Vec<(String, String)> = sqlx::query_as(
                    "SELECT indexname::text, indexdef FROM pg_indexes \
                     WHERE schemaname = current_schema() AND tablename = $1",
                )
                .bind(live)
                .fetch_all(&mut *tx)
                .await?;
                for (new_name, old_name) in match_indexes(&old_indexes, &new_indexes) {
                    // Renaming a primary key's index renames its constraint too.
                    sqlx::query(&format!("ALTER INDEX {new_name} RENAME TO {old_name}"))
                        .execute(&mut *tx)
                        .await?;
                }
                sqlx::query("UPDATE checkpoints SET position = $2, updated_at = now() WHERE name = $1")
                    .bind(checkpoint)
                    .bind(to_i64(target))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(SwapOutcome::Swapped {
                    position: target,
                    applied_in_swap: applied,
                })
            }
            Self::Sqlite(pool) => {
                // BEGIN IMMEDIATE takes the database's single write lock: the running
                // projection and appenders wait (busy timeout); readers keep their snapshot.
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let current: Option<i64> = sqlx::query_scalar("SELECT position FROM checkpoints WHERE name = ?")
                    .bind(checkpoint)
                    .fetch_optional(&mut *tx)
                    .await?;
                let current = current.and_then(|p| u64::try_from(p).ok()).unwrap_or(0);
                let Some(target) = swap_target(current, rebuilt_to, live_stalled) else {
                    return Ok(SwapOutcome::LiveBehind { live: current });
                };
                let mut range = RangeBatches::new(rebuilt_to, target);
                while let Some(batches) = range.next(store).await? {
                    for batch in batches {
                        write_batch_sqlite(&mut tx, scratch, &batch).await?;
                    }
                }
                let applied = target - rebuilt_to;
                let indexes: Vec<String> = sqlx::query_scalar(
                    "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL",
                )
                .bind(live)
                .fetch_all(&mut *tx)
                .await?;
                sqlx::query(&format!("DROP TABLE {live}")).execute(&mut *tx).await?;
                sqlx::query(&format!("ALTER TABLE {scratch} RENAME TO {live}"))
                    .execute(&mut *tx)
                    .await?;
                // SQLite cannot rename an index; the dropped table's indexes are made again.
                for ddl in indexes {
                    sqlx::query(&ddl).execute(&mut *tx).await?;
                }
                sqlx::query(
                    "INSERT INTO checkpoints (name, position, updated_at) VALUES (?, ?, ?) \
                     ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at",
                )
                .bind(checkpoint)
                .bind(to_i64(target))
                .bind(chrono::Utc::now())
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(SwapOutcome::Swapped {
                    position: target,
                    applied_in_swap: applied,
                })
            }
        }
    }

    /// Brings `scratch` (folded up to `folded_to`) to the live projection's
    /// checkpoint and compares it with `live`, all in one snapshot of the
    /// database, so a projection committing meanwhile cannot make rows differ.
    /// Returns the checkpoint compared at, how many rows differ, and up to
    /// `limit` of them.
    pub async fn catch_up_and_diff(
        &self,
        store: &dyn EventStore,
        live: &str,
        scratch: &str,
        checkpoint: &str,
        folded_to: u64,
        limit: usize,
    ) -> Result<(u64, u64, Vec<RowDiff>), OpsError> {
        match self {
            Self::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    .execute(&mut *tx)
                    .await?;
                let at: Option<i64> = sqlx::query_scalar("SELECT position FROM checkpoints WHERE name = $1")
                    .bind(checkpoint)
                    .fetch_optional(&mut *tx)
                    .await?;
                let at = at.and_then(|p| u64::try_from(p).ok()).unwrap_or(0);
                let mut range = RangeBatches::new(folded_to, at.max(folded_to));
                while let Some(batches) = range.next(store).await? {
                    for batch in batches {
                        write_batch_postgres(&mut tx, scratch, &batch).await?;
                    }
                }
                let columns = pg_columns(&mut tx, live).await?;
                let (count, diffs) = diff_rows(&mut tx, live, scratch, &columns, limit).await?;
                tx.rollback().await?;
                Ok((at, count, diffs))
            }
            Self::Sqlite(pool) => {
                // One writer at a time: holding it keeps the live projection still while comparing.
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let at: Option<i64> = sqlx::query_scalar("SELECT position FROM checkpoints WHERE name = ?")
                    .bind(checkpoint)
                    .fetch_optional(&mut *tx)
                    .await?;
                let at = at.and_then(|p| u64::try_from(p).ok()).unwrap_or(0);
                let mut range = RangeBatches::new(folded_to, at.max(folded_to));
                while let Some(batches) = range.next(store).await? {
                    for batch in batches {
                        write_batch_sqlite(&mut tx, scratch, &batch).await?;
                    }
                }
                let columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info(?) ORDER BY cid")
                    .bind(live)
                    .fetch_all(&mut *tx)
                    .await?;
                let (count, diffs) = diff_rows_lite(&mut tx, live, scratch, &columns, limit).await?;
                tx.rollback().await?;
                Ok((at, count, diffs))
            }
        }
    }

    /// Rows that differ between two tables of the same shape (all of them
    /// counted, up to `limit` returned), ordered by id.
    pub async fn diff(&self, live: &str, fresh: &str, limit: usize) -> Result<(u64, Vec<RowDiff>), OpsError> {
        match self {
            Self::Postgres(pool) => {
                let mut conn = pool.acquire().await?;
                let columns = pg_columns(&mut conn, live).await?;
                diff_rows(&mut conn, live, fresh, &columns, limit).await
            }
            Self::Sqlite(pool) => {
                let mut conn = pool.acquire().await?;
                let columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info(?) ORDER BY cid")
                    .bind(live)
                    .fetch_all(&mut *conn)
                    .await?;
                diff_rows_lite(&mut conn, live, fresh, &columns, limit).await
            }
        }
    }
}

/// Where the swap may put the table, or None while a running projection is
/// behind the rebuild.
fn swap_target(live: u64, rebuilt_to: u64, live_stalled: Option<u64>) -> Option<u64> {
    if live >= rebuilt_to {
        Some(live)
    } else if live_stalled == Some(live) {
        Some(rebuilt_to)
    } else {
        None
    }
}

/// The non-unique indexes of `table` (name, definition), in a stable order.
async fn secondary_indexes(conn: &mut sqlx::PgConnection, table: &str) -> Result<Vec<(String, String)>, OpsError> {
    Ok(sqlx::query_as(
        "SELECT indexname::text, indexdef FROM pg_indexes \
         WHERE schemaname = current_schema() AND tablename = $1 \
         AND indexdef NOT LIKE 'CREATE UNIQUE INDEX %' ORDER BY indexname",
    )
    .bind(table)
    .fetch_all(conn)
    .await?)
}

/// An index definition without its name: `CREATE INDEX ON public.t USING …`.
fn index_shape(name: &str, def: &str) -> String {
    def.replacen(&format!(" {name} ON "), " ON ", 1)
}

/// A nameless index definition moved onto `table`: the table between ` ON `
/// and ` USING ` replaced. None when the definition is not of that form.
fn on_table(shape: &str, table: &str) -> Option<String> {
    let on = shape.find(" ON ")? + " ON ".len();
    let using = on + shape[on..].find(" USING ")?;
    Some(format!("{}{table}{}", &shape[..on], &shape[using..]))
}

/// Pairs each new index with the old one of the same definition (names aside).
fn match_indexes(old: &[(String, String)], new: &[(String, String)]) -> Vec<(String, String)> {
    let shape = index_shape;
    let mut taken = vec![false; old.len()];
    let mut pairs = Vec::new();
    for (new_name, new_def) in new {
        let wanted = shape(new_name, new_def);
        if let Some(at) = old
            .iter()
            .enumerate()
            .position(|(i, (name, def))| !taken[i] && shape(name, def) == wanted)
        {
            taken[at] = true;
            if old[at].0 != *new_name {
                pairs.push((new_name.clone(), old[at].0.clone()));
            }
        }
    }
    pairs
}

/// The log's events (after, to] as batches of row changes, a page at a time,
/// so a long range never sits in memory at once.
pub(crate) struct RangeBatches {
    position: u64,
    to: u64,
}

impl RangeBatches {
    pub(crate) fn new(after: u64, to: u64) -> Self {
        Self { position: after, to }
    }

    /// The next page's batches, in the order they must be written; None at the end.
    pub(crate) async fn next(&mut self, store: &dyn EventStore) -> Result<Option<Vec<RowBatch>>, OpsError> {
        if self.position >= self.to {
            return Ok(None);
        }
        let want = usize::try_from(self.to - self.position)
            .unwrap_or(READ_PAGE_MAX)
            .min(READ_PAGE_MAX);
        let page = store.read_all(self.position, want).await?;
        if page.is_empty() {
            return Err(OpsError::InvalidRange(format!(
                "the log ends at position {}, before {}",
                self.position, self.to
            )));
        }
        check_dense(self.position, &page)?;
        self.position = page.last().map_or(self.position, |e| e.global_position);
        let mut batch = RowBatch::default();
        let mut batches = fold_page(&page, &mut batch)?;
        batches.push(batch);
        Ok(Some(batches))
    }
}

/// Folds a page of events into `batch`, returning the batches that filled up
/// before it (to be written first, in order).
pub(crate) fn fold_page(events: &[RecordedEvent], batch: &mut RowBatch) -> Result<Vec<RowBatch>, OpsError> {
    let mut full = Vec::new();
    for event in events {
        let change = order_row_change(event).map_err(|source| OpsError::Poison {
            event: format!(
                "event {} at position {} ({} v{} on {})",
                event.event_id, event.global_position, event.event_type, event.schema_version, event.stream_id
            ),
            source: Box::new(source),
        })?;
        if let Some(change) = change {
            if let Err(crate::projections::coalesce::FlushFirst) = batch.push(change.clone()) {
                full.push(std::mem::take(batch));
                // An empty batch takes any change.
                let _ = batch.push(change);
            }
        }
    }
    Ok(full)
}

fn to_i64(position: u64) -> i64 {
    i64::try_from(position).unwrap_or(i64::MAX)
}

/// Whether any engine process (`serve`, or anything else that runs
/// projections) has a session on this database. Its event-log listener holds
/// one for as long as it runs, so an engine that is up is always seen.
async fn engine_connected(conn: &mut PgConnection) -> Result<bool, OpsError> {
    let connected: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity \
                        WHERE datname = current_database() \
                          AND (application_name = $1 OR application_name LIKE $1 || '@%') \
                          AND pid <> pg_backend_pid())",
    )
    .bind(PostgresConfig::ENGINE_APPLICATION_NAME)
    .fetch_one(&mut *conn)
    .await?;
    Ok(connected)
}

async fn sqlite_table_sql(conn: &mut SqliteConnection, table: &str) -> Result<String, OpsError> {
    let ddl: Option<String> = sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?")
        .bind(table)
        .fetch_optional(&mut *conn)
        .await?;
    ddl.ok_or_else(|| OpsError::MissingTable { table: table.into() })
}

async fn pg_columns(conn: &mut PgConnection, table: &str) -> Result<Vec<String>, OpsError> {
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await?;
    if columns.is_empty() {
        return Err(OpsError::MissingTable { table: table.into() });
    }
    Ok(columns)
}

/// The diff query, the same text on both backends (FULL OUTER JOIN and
/// IS DISTINCT FROM exist in PostgreSQL and SQLite ≥ 3.39): every column cast
/// to text, live first then fresh, for rows missing on a side or different.
fn diff_sql(live: &str, fresh: &str, columns: &[String], limit: Option<usize>) -> String {
    let picks: Vec<String> = columns
        .iter()
        .map(|c| format!("CAST(l.\"{c}\" AS TEXT), CAST(f.\"{c}\" AS TEXT)"))
        .collect();
    let differs: Vec<String> = columns
        .iter()
        .map(|c| format!("l.\"{c}\" IS DISTINCT FROM f.\"{c}\""))
        .collect();
    let from = format!(
        "FROM {live} AS l FULL OUTER JOIN {fresh} AS f ON l.id = f.id WHERE {}",
        differs.join(" OR ")
    );
    match limit {
        Some(limit) => format!(
            "SELECT {} {from} ORDER BY COALESCE(CAST(l.id AS TEXT), CAST(f.id AS TEXT)) LIMIT {limit}",
            picks.join(", ")
        ),
        None => format!("SELECT COUNT(*) {from}"),
    }
}

fn to_diff(columns: &[String], values: Vec<Option<String>>) -> RowDiff {
    let id_at = columns.iter().position(|c| c == "id").unwrap_or(0);
    let (live_id, fresh_id) = (
        values.get(2 * id_at).cloned().flatten(),
        values.get(2 * id_at + 1).cloned().flatten(),
    );
    let kind = match (&live_id, &fresh_id) {
        (Some(_), None) => RowDiffKind::OnlyLive,
        (None, Some(_)) => RowDiffKind::OnlyFresh,
        _ => RowDiffKind::Columns(
            columns
                .iter()
                .enumerate()
                .filter_map(|(i, c)| {
                    let (l, f) = (
                        values.get(2 * i).cloned().flatten(),
                        values.get(2 * i + 1).cloned().flatten(),
                    );
                    (l != f).then(|| (c.clone(), l, f))
                })
                .collect(),
        ),
    };
    RowDiff {
        id: live_id.or(fresh_id).unwrap_or_default(),
        kind,
    }
}

async fn diff_rows(
    conn: &mut PgConnection,
    live: &str,
    fresh: &str,
    columns: &[String],
    limit: usize,
) -> Result<(u64, Vec<RowDiff>), OpsError> {
    let count: i64 = sqlx::query_scalar(&diff_sql(live, fresh, columns, None))
        .fetch_one(&mut *conn)
        .await?;
    let rows = sqlx::query(&diff_sql(live, fresh, columns, Some(limit)))
        .fetch_all(&mut *conn)
        .await?;
    Ok((u64::try_from(count).unwrap_or(0), to_diffs(columns, &rows)?))
}

async fn diff_rows_lite(
    conn: &mut SqliteConnection,
    live: &str,
    fresh: &str,
    columns: &[String],
    limit: usize,
) -> Result<(u64, Vec<RowDiff>), OpsError> {
    let count: i64 = sqlx::query_scalar(&diff_sql(live, fresh, columns, None))
        .fetch_one(&mut *conn)
        .await?;
    let rows = sqlx::query(&diff_sql(live, fresh, columns, Some(limit)))
        .fetch_all(&mut *conn)
        .await?;
    Ok((u64::try_from(count).unwrap_or(0), to_diffs(columns, &rows)?))
}

/// The diff query's rows (each column as text, live then fresh) as diffs.
fn to_diffs<R: Row>(columns: &[String], rows: &[R]) -> Result<Vec<RowDiff>, OpsError>
where
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    rows.iter()
        .map(|row| {
            let values = (0..columns.len() * 2)
                .map(|i| row.try_get::<Option<String>, _>(i))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(to_diff(columns, values))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_swap_waits_only_for_a_running_projection_that_is_behind() {
        assert_eq!(swap_target(10, 8, None), Some(10));
        assert_eq!(swap_target(8, 8, None), Some(8));
        assert_eq!(swap_target(5, 8, None), None);
        assert_eq!(swap_target(5, 8, Some(5)), Some(8));
        assert_eq!(swap_target(6, 8, Some(5)), None);
    }

    #[test]
    fn an_index_definition_moves_onto_the_scratch_table() {
        let shape = index_shape(
            "idx_orders_user_history",
            "CREATE INDEX idx_orders_user_history ON public.orders USING btree (user_id, created_at DESC, id)",
        );
        assert_eq!(
            on_table(&shape, "orders_rebuild").as_deref(),
            Some("CREATE INDEX ON orders_rebuild USING btree (user_id, created_at DESC, id)")
        );
        assert_eq!(on_table("CREATE INDEX x", "t"), None);
    }

    #[test]
    fn indexes_are_paired_by_definition_whatever_their_names() {
        let old = vec![
            (
                "orders_pkey".to_owned(),
                "CREATE UNIQUE INDEX orders_pkey ON public.orders USING btree (id)".to_owned(),
            ),
            (
                "idx_orders_status".to_owned(),
                "CREATE INDEX idx_orders_status ON public.orders USING btree (status)".to_owned(),
            ),
        ];
        let new = vec![
            (
                "orders_rebuild_status_idx".to_owned(),
                "CREATE INDEX orders_rebuild_status_idx ON public.orders USING btree (status)".to_owned(),
            ),
            (
                "orders_rebuild_pkey".to_owned(),
                "CREATE UNIQUE INDEX orders_rebuild_pkey ON public.orders USING btree (id)".to_owned(),
            ),
        ];
        assert_eq!(
            match_indexes(&old, &new),
            vec![
                ("orders_rebuild_status_idx".to_owned(), "idx_orders_status".to_owned()),
                ("orders_rebuild_pkey".to_owned(), "orders_pkey".to_owned()),
            ]
        );
    }
}
