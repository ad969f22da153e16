//! Append cost stays flat as the log grows, shown by query plan rather than by
//! time: on a log of 200,000 events and command records loaded behind the
//! planner's back (never analysed, or analysed while empty so the statistics
//! say "empty"), every statement the store sends reads `events` and
//! `stream_commands` only through a unique index, one key at a time. Checked
//! for the generic plan a connection keeps after five runs of a statement
//! (made while the log was still empty, as on a fresh install) and for plans
//! made for real values on the large log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::TestDb;
use order_engine::events::{EventMetadata, NewEvent, StreamId};
use order_engine::store::{AppendRequest, EventStore, PostgresConfig, PostgresStore, SqliteConfig, SqliteStore};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection, SqliteConnection};
use uuid::Uuid;

/// Events, and command records, loaded into the log before its plans are read.
const LOG_ROWS: i64 = 200_000;
/// The tables whose every read must go through an index by key.
const LOG_TABLES: [&str; 2] = ["events", "stream_commands"];
/// Events per bulk-loaded stream.
const EVENTS_PER_STREAM: i64 = 4;

/// Stream ids and uuids of the bulk rows rise with the position, so the
/// indexes fill in order and the load takes seconds, not tens of seconds.
fn bulk_events_sql(dialect: Dialect) -> String {
    let (series, stream, event_id, command_id) = dialect.bulk_columns();
    format!(
        "INSERT INTO events (global_position, stream_id, stream_version, event_id, event_type, schema_version, \
                             payload, metadata, command_id, recorded_at) \
         SELECT g, {stream}, (g - 1) % {EVENTS_PER_STREAM} + 1, {event_id}, 'OrderSubmitted', 1, '{{}}', '{{}}', \
                {command_id}, '2026-01-01T00:00:00Z' \
         FROM {series}"
    )
}

fn bulk_commands_sql(dialect: Dialect) -> String {
    let (series, stream, _, command_id) = dialect.bulk_columns();
    format!(
        "INSERT INTO stream_commands (stream_id, command_id, first_version, last_version, first_position, \
                                      last_position, recorded_at) \
         SELECT {stream}, {command_id}, (g - 1) % {EVENTS_PER_STREAM} + 1, (g - 1) % {EVENTS_PER_STREAM} + 1, g, g, \
                '2026-01-01T00:00:00Z' \
         FROM {series}"
    )
}

#[derive(Clone, Copy)]
enum Dialect {
    Postgres,
    Sqlite,
}

impl Dialect {
    /// (row source named g, stream id, event id, command id) as SQL expressions of g.
    fn bulk_columns(self) -> (String, String, String, String) {
        match self {
            Dialect::Postgres => (
                format!("generate_series(1, {LOG_ROWS}) AS g"),
                format!("'order-00000000-0000-4000-8000-' || lpad(to_hex((g - 1) / {EVENTS_PER_STREAM}), 12, '0')"),
                "('00000000-0000-4000-8000-' || lpad(to_hex(g), 12, '0'))::uuid".to_owned(),
                "('00000000-0000-4000-9000-' || lpad(to_hex(g), 12, '0'))::uuid".to_owned(),
            ),
            Dialect::Sqlite => (
                format!(
                    "(WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < {LOG_ROWS}) \
                     SELECT g FROM s)"
                ),
                format!("'order-00000000-0000-4000-8000-' || printf('%012x', (g - 1) / {EVENTS_PER_STREAM})"),
                "'00000000-0000-4000-8000-' || printf('%012x', g)".to_owned(),
                "'00000000-0000-4000-9000-' || printf('%012x', g)".to_owned(),
            ),
        }
    }
}

/// A bulk-loaded stream and one of its command ids, for lookups that hit.
fn bulk_stream(index: i64) -> String {
    format!("order-00000000-0000-4000-8000-{index:012x}")
}

fn bulk_command(position: i64) -> String {
    format!("00000000-0000-4000-9000-{position:012x}")
}

/// Values for the plans made for real values, for the statements whose
/// parameters steer a read: NULLs there would let the planner fold the lookup
/// away and prove nothing. The others (writes, the lock) get NULLs.
fn sample_arguments(name: &str) -> Option<String> {
    let stream = bulk_stream(LOG_ROWS / EVENTS_PER_STREAM / 2);
    let command = bulk_command(LOG_ROWS / 2);
    match name {
        "stream_heads" => Some(format!("ARRAY['{stream}', 'order-{}']", Uuid::nil())),
        "command_records" => Some(format!("ARRAY['{stream}'], ARRAY['{command}'::uuid]")),
        "read_stream" => Some(format!("'{stream}', 1, 1000")),
        "read_all" | "read_chained" => Some(format!("{}, 1000", LOG_ROWS / 2)),
        "stream_version" => Some(format!("'{stream}'")),
        "load_checkpoint" => Some("'projection.orders'".to_owned()),
        _ => None,
    }
}

/// The highest `$n` in a statement: how many parameters EXECUTE must pass.
fn parameter_count(sql: &str) -> usize {
    sql.match_indices('$')
        .filter_map(|(at, _)| {
            let digits: String = sql[at + 1..].chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<usize>().ok()
        })
        .max()
        .unwrap_or(0)
}

/// Why a plan node reads a log table other than by key through a unique index,
/// for every such node in the tree; and how many log-table reads it has.
fn check_plan(node: &Value, parent: Option<&str>, unique: &[String], problems: &mut Vec<String>, reads: &mut usize) {
    let kind = node["Node Type"].as_str().unwrap_or("?");
    if let Some(table) = node["Relation Name"].as_str().filter(|t| LOG_TABLES.contains(t)) {
        if kind != "ModifyTable" {
            *reads += 1;
            let index = node["Index Name"].as_str().unwrap_or("");
            let by_key = node.get("Index Cond").is_some();
            // `ORDER BY position DESC LIMIT 1` has no key to look up, but stops after one entry.
            let one_step = parent == Some("Limit");
            let ok = matches!(kind, "Index Scan" | "Index Only Scan")
                && unique.iter().any(|u| u == index)
                && (by_key || one_step);
            if !ok {
                problems.push(format!(
                    "{kind} on {table} (index {index:?}, index condition: {by_key}, under {parent:?})"
                ));
            }
        }
    }
    if let Some(children) = node["Plans"].as_array() {
        for child in children {
            check_plan(child, Some(kind), unique, problems, reads);
        }
    }
}

/// How PostgreSQL plans each hot statement on `conn` (one of the store's own
/// connections, so its session settings apply), generic and, when `custom`,
/// for sample values. Panics naming every statement that reads a log table
/// other than through a unique index by key.
async fn assert_postgres_plans(conn: &mut PgConnection, state: &str, custom: bool) {
    let unique: Vec<String> = sqlx::query_scalar(
        "SELECT indexrelid::regclass::text FROM pg_index \
         WHERE indisunique AND indrelid IN ('events'::regclass, 'stream_commands'::regclass)",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    let mut problems = Vec::new();
    let mut reads = 0;
    for (name, sql) in PostgresStore::hot_statements() {
        sqlx::raw_sql(&format!("PREPARE plan_{name} AS {sql}"))
            .execute(&mut *conn)
            .await
            .unwrap_or_else(|e| panic!("{state}: PREPARE {name}: {e}"));
        let nulls = vec!["NULL"; parameter_count(sql)].join(", ");
        let mut modes = vec![("generic", "force_generic_plan", nulls.clone())];
        if custom {
            modes.push(("custom", "force_custom_plan", sample_arguments(name).unwrap_or(nulls)));
        }
        for (mode, setting, arguments) in modes {
            sqlx::raw_sql(&format!("SET plan_cache_mode = {setting}"))
                .execute(&mut *conn)
                .await
                .unwrap();
            let execute = if arguments.is_empty() {
                format!("EXECUTE plan_{name}")
            } else {
                format!("EXECUTE plan_{name}({arguments})")
            };
            let plan: Value = sqlx::query_scalar(&format!("EXPLAIN (FORMAT JSON) {execute}"))
                .fetch_one(&mut *conn)
                .await
                .unwrap_or_else(|e| panic!("{state}: EXPLAIN {execute}: {e}"));
            let mut found = Vec::new();
            check_plan(&plan[0]["Plan"], None, &unique, &mut found, &mut reads);
            problems.extend(
                found
                    .into_iter()
                    .map(|p| format!("{name} ({mode} plan): {p}\n    {}", compact(&plan))),
            );
        }
        sqlx::raw_sql(&format!("DEALLOCATE plan_{name}"))
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    sqlx::raw_sql("RESET plan_cache_mode")
        .execute(&mut *conn)
        .await
        .unwrap();
    assert!(
        problems.is_empty(),
        "{state}: statements that read the log other than by key through a unique index:\n{}",
        problems.join("\n")
    );
    // Eight of the statements read the log; a plan check that saw none would prove nothing.
    assert!(
        reads >= 8,
        "{state}: only {reads} reads of the log tables were seen in the plans"
    );
}

fn compact(plan: &Value) -> String {
    let text = plan.to_string();
    text.chars().take(600).collect()
}

/// Loads the log's tables with `LOG_ROWS` rows each, as one transaction, no ANALYZE.
async fn bulk_load_postgres(conn: &mut PgConnection) {
    let mut tx = conn.begin().await.unwrap();
    sqlx::query(&bulk_events_sql(Dialect::Postgres))
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(&bulk_commands_sql(Dialect::Postgres))
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

async fn open_postgres(db: &TestDb) -> PostgresStore {
    let config = PostgresConfig {
        read_connections: 1,
        write_connections: 1,
        ..PostgresConfig::new(db.url())
    };
    PostgresStore::open(config).await.unwrap()
}

/// One event appended to a new stream with a command id, then the same command
/// again: the second answers from the command record the probe finds.
async fn append_and_retry(store: &dyn EventStore) -> u64 {
    let stream_id = StreamId::order(Uuid::new_v4());
    let request = AppendRequest {
        stream_id: stream_id.clone(),
        expected_version: 0,
        command_id: Some(Uuid::new_v4()),
        events: vec![NewEvent {
            event_id: Uuid::new_v4(),
            event_type: "Probe".into(),
            schema_version: 1,
            payload: json!({"n": 1}).into(),
            metadata: EventMetadata::default(),
        }],
        linked: false,
    };
    let first = store
        .append_batch(vec![request.clone()])
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    let again = store.append_batch(vec![request]).await.unwrap().remove(0).unwrap();
    assert!(again.deduplicated, "the retried command must be found by the probe");
    assert_eq!(again.first_position, first.first_position);
    let read = store.read_stream(&stream_id, 1, 10).await.unwrap();
    assert_eq!(read.len(), 1);
    first.last_position
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_reads_the_log_by_key_whatever_the_statistics_say() {
    // Proves every hot statement of the PostgreSQL store plans as a keyed unique-index read
    // on a 200,000-row log: never analysed; and analysed while empty, then loaded.
    let test = "postgres_reads_the_log_by_key_whatever_the_statistics_say";
    let (Some(never), Some(empty)) = (TestDb::postgres(test).await, TestDb::postgres(test).await) else {
        return;
    };
    let never_analysed = async {
        let store = open_postgres(&never).await;
        let mut conn = store.writer_pool().acquire().await.unwrap();
        // The plan a connection would keep from the first appends of a fresh install.
        assert_postgres_plans(&mut conn, "never analysed, empty", false).await;
        bulk_load_postgres(&mut conn).await;
        assert_postgres_plans(&mut conn, "never analysed, 200,000 rows", true).await;
        drop(conn);
        assert_eq!(append_and_retry(&store).await, LOG_ROWS as u64 + 1);
    };
    let analysed_empty = async {
        let store = open_postgres(&empty).await;
        let mut conn = store.writer_pool().acquire().await.unwrap();
        sqlx::raw_sql("ANALYZE events; ANALYZE stream_commands")
            .execute(&mut *conn)
            .await
            .unwrap();
        assert_postgres_plans(&mut conn, "analysed empty", false).await;
        bulk_load_postgres(&mut conn).await;
        let pages: i32 = sqlx::query_scalar("SELECT relpages FROM pg_class WHERE relname = 'events'")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(pages, 0, "the statistics must still say the log is empty");
        assert_postgres_plans(&mut conn, "analysed empty, then 200,000 rows", true).await;
        // The reader pool's connections carry the same settings.
        let mut reader = store.reader_pool().acquire().await.unwrap();
        assert_postgres_plans(&mut reader, "analysed empty, 200,000 rows, reader pool", true).await;
    };
    tokio::join!(never_analysed, analysed_empty);
}

/// SQLite's plan of each hot statement: every line that touches a log table
/// must be a SEARCH (a keyed lookup), never a SCAN.
async fn assert_sqlite_plans(conn: &mut SqliteConnection, state: &str) {
    let mut problems = Vec::new();
    let mut reads = 0;
    for (name, sql) in SqliteStore::hot_statements() {
        let rows: Vec<(i64, i64, i64, String)> = sqlx::query_as(&format!("EXPLAIN QUERY PLAN {sql}"))
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_else(|e| panic!("{state}: EXPLAIN QUERY PLAN {name}: {e}"));
        for (_, _, _, detail) in rows {
            let table = detail.split_whitespace().nth(1).unwrap_or("");
            if LOG_TABLES.contains(&table) {
                reads += 1;
                if !detail.starts_with("SEARCH") {
                    problems.push(format!("{name}: {detail}"));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{state}: statements that scan the log:\n{}",
        problems.join("\n")
    );
    assert!(
        reads >= 9,
        "{state}: only {reads} reads of the log tables were seen in the plans"
    );
}

#[tokio::test]
async fn sqlite_reads_the_log_by_key_whatever_the_statistics_say() {
    // Proves every hot statement of the SQLite store plans as a keyed lookup, analysed
    // while empty and then loaded with 200,000 rows behind the statistics' back.
    let db = TestDb::sqlite();
    let store: Arc<dyn EventStore> = Arc::new(SqliteStore::open(SqliteConfig::new(db.url())).await.unwrap());
    let mut conn = SqliteConnection::connect(db.url()).await.unwrap();
    assert_sqlite_plans(&mut conn, "never analysed, empty").await;
    sqlx::raw_sql("ANALYZE").execute(&mut conn).await.unwrap();
    assert_sqlite_plans(&mut conn, "analysed empty").await;
    let mut tx = conn.begin().await.unwrap();
    sqlx::query(&bulk_events_sql(Dialect::Sqlite))
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(&bulk_commands_sql(Dialect::Sqlite))
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_sqlite_plans(&mut conn, "analysed empty, then 200,000 rows").await;
    conn.close().await.unwrap();
    assert_eq!(append_and_retry(store.as_ref()).await, LOG_ROWS as u64 + 1);
}
