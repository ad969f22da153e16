//! Appends through `EventStore::append_batch`, in events per second, against
//! the raw baseline: the same rows written to a plain table on the same
//! PostgreSQL with nothing but a primary key (`raw_unnest`: one
//! INSERT … SELECT FROM UNNEST per batch, as the store writes; `raw_copy`: COPY).
//!
//! Per backend (`append_postgres`, `append_sqlite`):
//! - `one_stream/N`: one new order stream of N events per append;
//! - `many_streams/N`: N new order streams of one event each, one append_batch;
//! - `concurrent_64_tasks/1`: 64 tasks each appending one event at a time, so
//!   every commit competes with 63 others (what group commit is for).
//!
//! Run alone: `cargo bench --bench append` (one group: `-- append_sqlite`).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use order_engine::events::NewEvent;
use order_engine::store::{AppendRequest, EventStore, GroupCommitStore};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use support::events::{one_stream, submissions};
use support::{time, timed_rounds, Backend, BenchDb, Opened};

const BATCHES: [usize; 3] = [1, 100, 1_000];
const MANY_STREAMS: [usize; 2] = [100, 1_000];
const CONCURRENT_TASKS: usize = 64;

async fn append_all(store: &dyn EventStore, requests: Vec<AppendRequest>, events: usize) {
    match store.append_batch(requests).await {
        Ok(results) if results.iter().all(Result::is_ok) => {}
        Ok(results) => panic!("a fresh stream conflicted: {results:?}"),
        Err(error) => panic!("appending {events} events failed: {error}"),
    }
}

fn bench_store(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    backend: Backend,
    name: &str,
    sizes: &[usize],
    make: fn(usize) -> Vec<AppendRequest>,
) {
    let mut group = c.benchmark_group(format!("append_{}", backend.name()));
    for &n in sizes {
        let mut setup: Option<(BenchDb, Opened)> = None;
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::new(name, n), |b| {
            let (_, opened) = setup.get_or_insert_with(|| {
                rt.block_on(async {
                    let db = BenchDb::new(backend, "append").await;
                    let opened = db.open().await;
                    (db, opened)
                })
            });
            let store = opened.store.as_ref();
            b.iter_custom(|iters| {
                timed_rounds(rt, iters, |_| {
                    let requests = make(n);
                    async move { time(append_all(store, requests, n)).await.0 }
                })
            })
        });
    }
    group.finish();
}

/// 64 tasks, each appending single-event submissions one after another; one
/// iteration is 64 appends, the time is the wall clock until all tasks finish.
/// With `group_commit`, through the decorator `serve` uses, which merges the
/// appends queued while one commits.
fn bench_concurrent(c: &mut Criterion, rt: &tokio::runtime::Runtime, backend: Backend, group_commit: bool) {
    let mut group = c.benchmark_group(format!("append_{}", backend.name()));
    let mut setup: Option<(BenchDb, Opened, Arc<dyn EventStore>)> = None;
    group.throughput(Throughput::Elements(CONCURRENT_TASKS as u64));
    let name = if group_commit {
        format!("concurrent_{CONCURRENT_TASKS}_tasks_group_commit")
    } else {
        format!("concurrent_{CONCURRENT_TASKS}_tasks")
    };
    group.bench_function(BenchmarkId::new(name, 1), |b| {
        let (_, _, store) = setup.get_or_insert_with(|| {
            rt.block_on(async {
                let db = BenchDb::new(backend, "append_concurrent").await;
                let opened = db.open().await;
                let store: Arc<dyn EventStore> = if group_commit {
                    Arc::new(GroupCommitStore::new(Arc::clone(&opened.store)))
                } else {
                    Arc::clone(&opened.store)
                };
                (db, opened, store)
            })
        });
        b.iter_custom(|iters| {
            rt.block_on(async {
                // Requests are made before the clock starts, so only appends are timed.
                let work: Vec<Vec<AppendRequest>> = (0..CONCURRENT_TASKS)
                    .map(|_| (0..iters).map(|_| submissions(1).remove(0)).collect())
                    .collect();
                let started = Instant::now();
                let tasks: Vec<_> = work
                    .into_iter()
                    .map(|requests| {
                        let store: Arc<dyn EventStore> = Arc::clone(store);
                        tokio::spawn(async move {
                            for request in requests {
                                append_all(store.as_ref(), vec![request], 1).await;
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.unwrap_or_else(|e| panic!("an appending task failed: {e}"));
                }
                started.elapsed()
            })
        })
    });
    group.finish();
}

/// The plain table of the baseline: the event log's columns, a primary key, nothing else.
const RAW_TABLE: &str = "CREATE TABLE raw_events (global_position BIGINT PRIMARY KEY, stream_id TEXT, \
     stream_version BIGINT, event_id UUID, event_type TEXT, schema_version INTEGER, payload JSONB, \
     metadata JSONB, command_id UUID, recorded_at TIMESTAMPTZ)";

/// The rows of one batch, positioned from `first_position`.
struct RawRow<'a> {
    position: i64,
    stream_id: &'a str,
    version: i64,
    event: &'a NewEvent,
    command_id: Option<Uuid>,
}

fn raw_rows(requests: &[AppendRequest], first_position: i64) -> Vec<RawRow<'_>> {
    let mut rows = Vec::new();
    for request in requests {
        for (i, event) in request.events.iter().enumerate() {
            rows.push(RawRow {
                position: first_position + rows.len() as i64,
                stream_id: request.stream_id.as_str(),
                version: request.expected_version as i64 + i as i64 + 1,
                event,
                command_id: request.command_id,
            });
        }
    }
    rows
}

fn metadata_json(event: &NewEvent) -> String {
    serde_json::to_string(&event.metadata).unwrap_or_else(|e| panic!("metadata must encode: {e}"))
}

/// The store's INSERT without the store: same UNNEST, same text-to-JSONB casts.
async fn raw_unnest(connection: &mut PgConnection, rows: &[RawRow<'_>]) {
    let positions: Vec<i64> = rows.iter().map(|r| r.position).collect();
    let streams: Vec<&str> = rows.iter().map(|r| r.stream_id).collect();
    let versions: Vec<i64> = rows.iter().map(|r| r.version).collect();
    let event_ids: Vec<Uuid> = rows.iter().map(|r| r.event.event_id).collect();
    let types: Vec<&str> = rows.iter().map(|r| r.event.event_type.as_str()).collect();
    let schema_versions: Vec<i32> = rows.iter().map(|r| r.event.schema_version as i32).collect();
    let payloads: Vec<String> = rows.iter().map(|r| r.event.payload.to_string()).collect();
    let metadata: Vec<String> = rows.iter().map(|r| metadata_json(r.event)).collect();
    let command_ids: Vec<Option<Uuid>> = rows.iter().map(|r| r.command_id).collect();
    sqlx::query(
        "INSERT INTO raw_events (global_position, stream_id, stream_version, event_id, event_type, \
                                 schema_version, payload, metadata, command_id, recorded_at) \
         SELECT p, s, v, e, t, sv, pl::jsonb, md::jsonb, c, $10 \
         FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::uuid[], $5::text[], \
                     $6::int[], $7::text[], $8::text[], $9::uuid[]) AS u(p, s, v, e, t, sv, pl, md, c)",
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
    .bind(chrono::Utc::now())
    .execute(connection)
    .await
    .unwrap_or_else(|e| panic!("raw INSERT of {} rows: {e}", rows.len()));
}

/// A CSV field: quoted, inner quotes doubled (JSON has many).
fn csv_quoted(out: &mut String, text: &str) {
    out.push('"');
    out.push_str(&text.replace('"', "\"\""));
    out.push('"');
}

/// The same rows through COPY … FROM STDIN (CSV), one COPY per batch.
async fn raw_copy(connection: &mut PgConnection, rows: &[RawRow<'_>]) {
    use std::fmt::Write as _;
    let recorded_at = chrono::Utc::now().to_rfc3339();
    let mut csv = String::with_capacity(rows.len() * 700);
    for row in rows {
        let _ = write!(
            csv,
            "{},{},{},{},{},{},",
            row.position,
            row.stream_id,
            row.version,
            row.event.event_id,
            row.event.event_type,
            row.event.schema_version
        );
        csv_quoted(&mut csv, &row.event.payload.to_string());
        csv.push(',');
        csv_quoted(&mut csv, &metadata_json(row.event));
        let command_id = row.command_id.map(|c| c.to_string()).unwrap_or_default();
        let _ = writeln!(csv, ",{command_id},{recorded_at}");
    }
    let copied = async {
        let mut copy = connection
            .copy_in_raw(
                "COPY raw_events (global_position, stream_id, stream_version, event_id, event_type, \
                 schema_version, payload, metadata, command_id, recorded_at) FROM STDIN (FORMAT csv)",
            )
            .await?;
        copy.send(csv.as_bytes()).await?;
        copy.finish().await
    };
    match copied.await {
        Ok(n) if n == rows.len() as u64 => {}
        other => panic!("raw COPY of {} rows: {other:?}", rows.len()),
    }
}

#[derive(Clone, Copy)]
enum RawWay {
    Unnest,
    Copy,
}

/// The baseline's own database and connection, and the next free position
/// (kept across criterion's calls, so keys never collide).
struct RawTarget {
    _db: BenchDb,
    connection: PgConnection,
    next_position: i64,
}

/// The baseline: the same requests the store benches append, written raw.
fn bench_raw(c: &mut Criterion, rt: &tokio::runtime::Runtime, way: RawWay, name: &str) {
    let mut group = c.benchmark_group("append_postgres");
    for (shape, sizes, make) in [
        (
            "one_stream",
            &BATCHES[..],
            one_stream as fn(usize) -> Vec<AppendRequest>,
        ),
        ("many_streams", &MANY_STREAMS[..], submissions),
    ] {
        for &n in sizes {
            let mut setup: Option<RawTarget> = None;
            group.throughput(Throughput::Elements(n as u64));
            group.bench_function(BenchmarkId::new(format!("{name}_{shape}"), n), |b| {
                let target = setup.get_or_insert_with(|| {
                    rt.block_on(async {
                        let db = BenchDb::postgres("append_raw").await;
                        let mut connection = PgConnection::connect(db.url())
                            .await
                            .unwrap_or_else(|e| panic!("connecting to the raw baseline's database: {e}"));
                        sqlx::query(RAW_TABLE)
                            .execute(&mut connection)
                            .await
                            .unwrap_or_else(|e| panic!("creating raw_events: {e}"));
                        RawTarget {
                            _db: db,
                            connection,
                            next_position: 1,
                        }
                    })
                });
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let requests = make(n);
                        let rows = raw_rows(&requests, target.next_position);
                        target.next_position += rows.len() as i64;
                        let connection = &mut target.connection;
                        total += rt.block_on(async {
                            match way {
                                RawWay::Unnest => time(raw_unnest(connection, &rows)).await.0,
                                RawWay::Copy => time(raw_copy(connection, &rows)).await.0,
                            }
                        });
                    }
                    total
                })
            });
        }
    }
    group.finish();
}

fn append(c: &mut Criterion) {
    let rt = support::runtime();
    for backend in Backend::ALL {
        bench_store(c, &rt, backend, "one_stream", &BATCHES, one_stream);
        bench_store(c, &rt, backend, "many_streams", &MANY_STREAMS, submissions);
        bench_concurrent(c, &rt, backend, false);
        bench_concurrent(c, &rt, backend, true);
    }
    bench_raw(c, &rt, RawWay::Unnest, "raw_unnest");
    bench_raw(c, &rt, RawWay::Copy, "raw_copy");
}

criterion_group! {
    name = benches;
    config = support::criterion();
    targets = append
}
criterion_main!(benches);
