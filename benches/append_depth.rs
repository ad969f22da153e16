//! Append latency as the log grows (issue 12, item 5): the same single appends
//! timed on an empty log and again once the log holds D events (10,000,000 by
//! default), to show what `tests/append_plan.rs` shows by plan: an append's
//! cost does not depend on how long the log is.
//!
//! On PostgreSQL only, in a database of its own (`BenchDb`: created from
//! DATABASE_URL, dropped at the end), through the store `serve` opens
//! (`PostgresStore`, its planner settings, two writer connections), without
//! the group-commit and metering decorators: what could grow with the log is
//! the store's SQL. Two shapes, N appends each (2,000 by default), one at a
//! time, each timed on its own:
//! - `submit`: one `OrderSubmitted` on a new order stream (expected version
//!   0) with a command id derived from the order id, as `Engine::submit`
//!   appends (`benches/support/events.rs`);
//! - `existing`: one `OrderAccepted` on each stream the submits just made, at
//!   version 1, with a command id of its own, so the dedup probe runs and
//!   misses: an order's accept follows its submit.
//!
//! Between the two depths the log is bulk-loaded with `generate_series`
//! behind the planner's back, as `tests/append_plan.rs` does, and never
//! analysed: autovacuum is switched off on the log's tables, so statistics
//! say "never analysed" throughout, and the store's connections keep the
//! plans they made on the empty log (unless sqlx's pool closed them during a
//! long load: after 10 minutes idle or 30 minutes old). Event and command ids of the bulk rows are spread over the
//! whole key space, as the engine's derived (v5) ids are, so a new event's
//! id lands among old ones in its index and not after all of them.
//!
//! `APPEND_DEPTH_EVENTS=200000 APPEND_DEPTH_SAMPLES=300 cargo bench --bench append_depth`.
//! Prints the figures, a table (empty vs D) and one JSON line; never asserts a number.
#![allow(clippy::print_stdout)]

mod support;

use std::error::Error;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use order_engine::events::StreamId;
use order_engine::store::{append, AppendRequest, EventStore};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

use support::events::{envelopes, new_order_append, order_history};
use support::{env_or, BenchDb, Raw};

type BoxError = Box<dyn Error + Send + Sync>;

const SAMPLES_DEFAULT: usize = 2_000;
const DEPTH_DEFAULT: u64 = 10_000_000;
/// Bulk rows per transaction: big enough to load fast, small enough to show progress.
const LOAD_CHUNK_ROWS: u64 = 1_000_000;
/// Events per bulk-loaded stream (an order has 3 or 4).
const EVENTS_PER_STREAM: u64 = 4;
/// Untimed appends of each shape before each measurement. PostgreSQL plans a
/// prepared statement afresh for its first five runs on a connection and may
/// then keep a generic plan; the store has two writer connections, so both
/// have settled on their plans before the timed appends.
const WARM_UP_APPENDS: usize = 20;

/// One row per bulk event, position `g` from `$2` to `$3`; `$1` is the first
/// bulk position, `$4` the events per stream. Stream ids rise with the
/// position (as `order-<v7 id>` does with time) and sort before every real
/// one; event and command ids are md5 digests, spread over the key space like
/// the engine's derived ids. Rows are narrow (`{}` payloads, NULL hashes as
/// events from before the hash chain have): an append reads only index paths and
/// the last pages of the heap, so wide rows would cost the load gigabytes of
/// disk and change nothing measured.
const BULK_EVENTS: &str = "INSERT INTO events (global_position, stream_id, stream_version, event_id, event_type, \
                         schema_version, payload, metadata, command_id, recorded_at) \
     SELECT g, 'order-00000000-0000-4000-8000-' || lpad(to_hex((g - $1) / $4), 12, '0'), (g - $1) % $4 + 1, \
            md5('event-' || g)::uuid, 'OrderSubmitted', 1, '{}', '{}', md5('command-' || g)::uuid, now() \
     FROM generate_series($2::bigint, $3::bigint) AS g";
/// One command record per bulk event, as a command of one event writes.
const BULK_COMMANDS: &str = "INSERT INTO stream_commands (stream_id, command_id, first_version, last_version, \
                                  first_position, last_position, recorded_at) \
     SELECT 'order-00000000-0000-4000-8000-' || lpad(to_hex((g - $1) / $4), 12, '0'), md5('command-' || g)::uuid, \
            (g - $1) % $4 + 1, (g - $1) % $4 + 1, g, g, now() \
     FROM generate_series($2::bigint, $3::bigint) AS g";

/// The reads of an append's snapshot, explained after each measurement to
/// show which one a deeper log slows, if any.
const EXPLAINED: [&str; 3] = ["stream_heads", "command_records", "log_head"];

/// The timed appends of one shape at one depth.
struct Timings {
    /// One per append, in the order they ran.
    latencies: Vec<Duration>,
    /// Wall clock of all of them, back to back.
    wall: Duration,
}

impl Timings {
    /// Nearest-rank percentile.
    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted
            .get(rank.clamp(1, sorted.len().max(1)) - 1)
            .copied()
            .unwrap_or_default()
    }

    fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64().max(f64::EPSILON)
    }

    fn json(&self) -> Value {
        let us = |d: Duration| d.as_micros() as u64;
        json!({
            "p50_us": us(self.percentile(50.0)),
            "p90_us": us(self.percentile(90.0)),
            "p99_us": us(self.percentile(99.0)),
            "max_us": us(self.percentile(100.0)),
            "appends_per_s": (self.per_second() * 10.0).round() / 10.0,
        })
    }
}

/// Both shapes measured at one depth.
struct Measured {
    /// Events in the log when the timed appends began.
    events_before: u64,
    submit: Timings,
    existing: Timings,
    explained: Vec<Explained>,
}

/// One snapshot read, explained after the timed appends.
struct Explained {
    statement: &'static str,
    execution_ms: f64,
    /// Shared buffers the plan found in PostgreSQL's cache, and read into it.
    hit: u64,
    read: u64,
}

fn gib(bytes: f64) -> f64 {
    bytes / (1024.0 * 1024.0 * 1024.0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}

/// The second event of an order, on the stream `submit` created: an
/// existing stream at its expected version, with a command id of its own.
fn accept_append(order_id: Uuid) -> AppendRequest {
    let command_id = Uuid::new_v5(&order_id, b"accept");
    let history = order_history(order_id, 2);
    AppendRequest {
        stream_id: StreamId::order(order_id),
        expected_version: 1,
        command_id: Some(command_id),
        events: envelopes(order_id, command_id, &history[1..]),
        linked: false,
    }
}

fn submit_append(order_id: Uuid) -> AppendRequest {
    new_order_append(order_id, &order_history(order_id, 1))
}

/// Appends each request alone, timing each; any conflict or repeat is an error,
/// since every request is a first write at the version the stream is at.
async fn timed(store: &dyn EventStore, requests: Vec<AppendRequest>) -> Result<Timings, BoxError> {
    let mut latencies = Vec::with_capacity(requests.len());
    let started = Instant::now();
    for request in requests {
        let stream = request.stream_id.clone();
        let sent = Instant::now();
        let appended = append(store, request).await?;
        latencies.push(sent.elapsed());
        match appended {
            Ok(appended) if !appended.deduplicated => {}
            other => return Err(format!("append to {stream} was not a first write: {other:?}").into()),
        }
    }
    Ok(Timings {
        latencies,
        wall: started.elapsed(),
    })
}

/// Warms up, then times N submits and N appends to the streams they made.
async fn measure(store: &dyn EventStore, pool: &PgPool, samples: usize) -> Result<Measured, BoxError> {
    let warm: Vec<Uuid> = (0..WARM_UP_APPENDS).map(|_| Uuid::now_v7()).collect();
    timed(store, warm.iter().copied().map(submit_append).collect()).await?;
    timed(store, warm.iter().copied().map(accept_append).collect()).await?;

    let events_before = store.head_position().await?;
    let orders: Vec<Uuid> = (0..samples).map(|_| Uuid::now_v7()).collect();
    let submit = timed(store, orders.iter().copied().map(submit_append).collect()).await?;
    let existing = timed(store, orders.iter().copied().map(accept_append).collect()).await?;
    let last = orders.last().copied().ok_or("no samples")?;
    let explained = explain(pool, &accept_append(last)).await?;
    Ok(Measured {
        events_before,
        submit,
        existing,
        explained,
    })
}

/// EXPLAIN ANALYZE of the snapshot's reads for the keys of `request` (the
/// last timed append, so its stream and command record exist), on one of the
/// store's own connections (its planner settings apply). One-shot plans for
/// these values, not necessarily the cached plan an append used; the buffers
/// say whether the lookup found its pages in PostgreSQL's cache.
async fn explain(pool: &PgPool, request: &AppendRequest) -> Result<Vec<Explained>, BoxError> {
    let stream = request.stream_id.as_str().to_owned();
    let command = request.command_id.ok_or("the request has no command id")?;
    let mut conn = pool.acquire().await?;
    let mut out = Vec::new();
    for (name, sql) in order_engine::store::PostgresStore::hot_statements() {
        if !EXPLAINED.contains(name) {
            continue;
        }
        let explain = format!("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}");
        let query = sqlx::query_scalar::<_, Value>(&explain);
        let query = match *name {
            "stream_heads" => query.bind(vec![stream.clone()]),
            "command_records" => query.bind(vec![stream.clone()]).bind(vec![command]),
            _ => query,
        };
        let plan = query.fetch_one(&mut *conn).await?;
        let top = &plan[0];
        let blocks = |key: &str| top["Plan"][key].as_u64().unwrap_or(0);
        out.push(Explained {
            statement: name,
            execution_ms: top["Execution Time"].as_f64().unwrap_or(f64::NAN),
            hit: blocks("Shared Hit Blocks"),
            read: blocks("Shared Read Blocks"),
        });
    }
    Ok(out)
}

/// Loads positions `head + 1 ..= depth` in chunks, each its own transaction.
async fn load(conn: &mut PgConnection, head: u64, depth: u64) -> Result<(), BoxError> {
    let first = head + 1;
    if depth < first {
        println!("the log already holds {head} events, not fewer than {depth}: nothing to load");
        return Ok(());
    }
    let per_stream = i64::try_from(EVENTS_PER_STREAM)?;
    let total = depth - head;
    println!("loading {total} events and as many command records, {LOAD_CHUNK_ROWS} per transaction");
    let started = Instant::now();
    let mut from = first;
    while from <= depth {
        let to = depth.min(from + LOAD_CHUNK_ROWS - 1);
        let (first_i, from_i, to_i) = (i64::try_from(first)?, i64::try_from(from)?, i64::try_from(to)?);
        let mut tx = conn.begin().await?;
        for sql in [BULK_EVENTS, BULK_COMMANDS] {
            sqlx::query(sql)
                .bind(first_i)
                .bind(from_i)
                .bind(to_i)
                .bind(per_stream)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        let loaded = to - head;
        let seconds = started.elapsed().as_secs_f64();
        // What the whole load will take on disk, from what this much took: a
        // full disk stops the whole server, so say it early.
        let bytes: i64 = sqlx::query_scalar(
            "SELECT (pg_total_relation_size('events') + pg_total_relation_size('stream_commands'))::bigint",
        )
        .fetch_one(&mut *conn)
        .await?;
        println!(
            "loaded {loaded} of {total} ({seconds:.1} s, {:.0} rows/s each); the log's tables {:.2} GiB, ~{:.2} GiB when loaded",
            loaded as f64 / seconds.max(f64::EPSILON),
            gib(bytes as f64),
            gib(bytes as f64 * (depth as f64 / to as f64))
        );
        from = to + 1;
    }
    // The load leaves gigabytes of dirty pages; written out now, they are not
    // written during the timed appends, which on the empty log had none to write.
    match sqlx::raw_sql("CHECKPOINT").execute(&mut *conn).await {
        Ok(_) => println!("checkpoint after the load: {:.1} s", started.elapsed().as_secs_f64()),
        Err(error) => println!("no CHECKPOINT after the load ({error}): the timed appends may share the disk with it"),
    }
    Ok(())
}

/// What the figures were measured on.
async fn server_facts(conn: &mut PgConnection) -> Result<Value, BoxError> {
    let version: String = sqlx::query_scalar("SELECT version()").fetch_one(&mut *conn).await?;
    let mut facts = json!({ "version": version });
    for setting in ["autovacuum", "shared_buffers", "synchronous_commit", "fsync"] {
        let value: String = sqlx::query_scalar(&format!("SHOW {setting}"))
            .fetch_one(&mut *conn)
            .await?;
        facts[setting] = json!(value);
    }
    Ok(facts)
}

/// Rows the statistics claim for each log table (-1: never analysed), and its size on disk.
async fn table_facts(conn: &mut PgConnection) -> Result<Vec<(String, f32, i64)>, BoxError> {
    Ok(sqlx::query_as(
        "SELECT relname::text, reltuples, pg_total_relation_size(oid) FROM pg_class \
         WHERE relname IN ('events', 'stream_commands') ORDER BY relname",
    )
    .fetch_all(&mut *conn)
    .await?)
}

fn print_measured(label: &str, measured: &Measured) {
    println!("{label}: timed appends began at {} events", measured.events_before);
    println!(
        "  {:<10} {:>9} {:>9} {:>9} {:>9} {:>10}",
        "shape", "p50 ms", "p90 ms", "p99 ms", "max ms", "appends/s"
    );
    for (shape, timings) in [("submit", &measured.submit), ("existing", &measured.existing)] {
        println!(
            "  {shape:<10} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>10.1}",
            ms(timings.percentile(50.0)),
            ms(timings.percentile(90.0)),
            ms(timings.percentile(99.0)),
            ms(timings.percentile(100.0)),
            timings.per_second()
        );
    }
    for e in &measured.explained {
        println!(
            "  EXPLAIN ANALYZE {:<16} {:>7.3} ms, shared buffers hit {}, read {}",
            e.statement, e.execution_ms, e.hit, e.read
        );
    }
}

fn print_comparison(empty: &Measured, deep: &Measured, depth: u64) {
    println!("empty vs {depth} events (ratio = deep / empty; appends/s below 1.00 is slower):");
    println!(
        "  {:<10} {:>10} {:>10} {:>6} {:>10} {:>10} {:>6} {:>10} {:>10} {:>6}",
        "shape", "p50 empty", "p50 deep", "ratio", "p99 empty", "p99 deep", "ratio", "/s empty", "/s deep", "ratio"
    );
    let pairs = [
        ("submit", &empty.submit, &deep.submit),
        ("existing", &empty.existing, &deep.existing),
    ];
    for (shape, a, b) in pairs {
        let (p50a, p50b) = (ms(a.percentile(50.0)), ms(b.percentile(50.0)));
        let (p99a, p99b) = (ms(a.percentile(99.0)), ms(b.percentile(99.0)));
        let (ra, rb) = (a.per_second(), b.per_second());
        println!(
            "  {shape:<10} {p50a:>10.3} {p50b:>10.3} {:>6.2} {p99a:>10.3} {p99b:>10.3} {:>6.2} {ra:>10.1} {rb:>10.1} {:>6.2}",
            p50b / p50a,
            p99b / p99a,
            rb / ra
        );
    }
}

fn measured_json(measured: &Measured) -> Value {
    let explained: serde_json::Map<String, Value> = measured
        .explained
        .iter()
        .map(|e| {
            let figures = json!({ "execution_ms": e.execution_ms, "shared_hit": e.hit, "shared_read": e.read });
            (e.statement.to_owned(), figures)
        })
        .collect();
    json!({
        "events_before": measured.events_before,
        "submit": measured.submit.json(),
        "existing": measured.existing.json(),
        "explain": explained,
    })
}

async fn run() -> Result<(), BoxError> {
    let samples: usize = env_or("APPEND_DEPTH_SAMPLES", SAMPLES_DEFAULT)?;
    let depth: u64 = env_or("APPEND_DEPTH_EVENTS", DEPTH_DEFAULT)?;
    if samples == 0 {
        return Err("APPEND_DEPTH_SAMPLES must be above zero".into());
    }
    let db = BenchDb::postgres("append_depth").await;
    let opened = db.open().await;
    let Raw::Postgres(pool) = &opened.raw else {
        return Err("BenchDb::postgres opened a store that is not PostgreSQL".into());
    };
    let store = opened.store.as_ref();
    // A session of its own for the load and the facts: the store's connections
    // carry a 30 s statement timeout, and a chunk may take longer.
    let mut conn = PgConnection::connect(db.url()).await?;
    // Whatever the server's setting, nothing analyses the log behind the bench's
    // back. Done before any append, so no plan is made before it.
    sqlx::raw_sql(
        "ALTER TABLE events SET (autovacuum_enabled = false); \
         ALTER TABLE stream_commands SET (autovacuum_enabled = false)",
    )
    .execute(&mut conn)
    .await?;
    let server = server_facts(&mut conn).await?;
    let load_average = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "append_depth: {samples} appends per shape, empty log then {depth} events; autovacuum {} (off on the log's \
         tables), shared_buffers {}; load average {}",
        server["autovacuum"].as_str().unwrap_or("?"),
        server["shared_buffers"].as_str().unwrap_or("?"),
        load_average.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );

    let empty = measure(store, pool, samples).await?;
    print_measured("empty log", &empty);

    let head = store.head_position().await?;
    load(&mut conn, head, depth).await?;
    let deep = measure(store, pool, samples).await?;
    print_measured(&format!("{depth} events"), &deep);

    let tables = table_facts(&mut conn).await?;
    for (table, reltuples, bytes) in &tables {
        println!(
            "{table}: {:.1} MiB on disk, statistics say {reltuples} rows (-1: never analysed)",
            *bytes as f64 / (1024.0 * 1024.0)
        );
    }
    let head = store.head_position().await?;
    let commands: i64 = sqlx::query_scalar("SELECT count(*) FROM stream_commands")
        .fetch_one(&mut conn)
        .await?;
    println!(
        "measured on {}; at the end: {head} events, {commands} command records",
        server["version"].as_str().unwrap_or("?")
    );
    print_comparison(&empty, &deep, depth);
    let line = json!({
        "bench": "append_depth",
        "samples": samples,
        "depth_events": depth,
        "events_at_end": head,
        "command_records_at_end": commands,
        "server": server,
        "load_average": load_average.trim(),
        "tables": tables.iter().map(|(t, r, b)| json!({ "table": t, "reltuples": r, "bytes": b })).collect::<Vec<_>>(),
        "empty": measured_json(&empty),
        "deep": measured_json(&deep),
    });
    println!("{line}");
    Ok(())
}

fn main() -> ExitCode {
    let runtime = support::runtime();
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("append_depth bench failed: {error}");
            ExitCode::FAILURE
        }
    }
}
