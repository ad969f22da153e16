//! Projection replay in events per second: a log of executed orders (three
//! events each) folded from position 0 into the `orders` read model, the way
//! `run_orders_projection` catches up: `LogTail` pages, `order_row_change`
//! per event, `ReadModels::commit` per page with the checkpoint.
//!
//! Each round starts from an empty read model (emptied untimed) and checks
//! afterwards that every order landed EXECUTED.
//!
//! Run alone: `cargo bench --bench replay` (one backend: `-- replay/sqlite`).

mod support;

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput};
use order_engine::projections::{order_row_change, LogTail, ReadModels, ORDERS_PROJECTION};
use order_engine::store::{EventStore, BATCH_STREAMS_MAX};
use uuid::Uuid;

use support::events::{executed_order, new_order_append};
use support::{time, timed_rounds, Backend, BenchDb, Opened};

/// Orders in the replayed log; three events each.
const ORDERS: usize = 5_000;
const EVENTS_PER_ORDER: usize = 3;

async fn write_log(store: &dyn EventStore) {
    let mut written = 0;
    while written < ORDERS {
        let batch = (ORDERS - written).min(BATCH_STREAMS_MAX);
        let requests = (0..batch)
            .map(|_| {
                let order_id = Uuid::now_v7();
                new_order_append(order_id, &executed_order(order_id))
            })
            .collect();
        match store.append_batch(requests).await {
            Ok(results) if results.iter().all(Result::is_ok) => written += batch,
            other => panic!("writing the replayed log failed: {other:?}"),
        }
    }
}

/// The projection's catch-up loop, to the head of the log.
async fn replay_once(store: Arc<dyn EventStore>, models: &dyn ReadModels) -> u64 {
    let mut tail = LogTail::new(store, 0);
    let mut events = 0;
    let mut committed = 0;
    loop {
        let batch = match tail.try_next_batch().await {
            Ok(Some(batch)) => batch,
            Ok(None) => return events,
            Err(error) => panic!("reading the log at {}: {error}", tail.position()),
        };
        let changes: Vec<_> = batch
            .iter()
            .filter_map(|event| {
                order_row_change(event).unwrap_or_else(|e| panic!("event {} must project: {e}", event.global_position))
            })
            .collect();
        if let Err(error) = models
            .commit(ORDERS_PROJECTION, &changes, committed, tail.position())
            .await
        {
            panic!("committing rows up to {}: {error}", tail.position());
        }
        committed = tail.position();
        events += batch.len() as u64;
    }
}

async fn empty_read_model(opened: &Opened, backend: Backend) {
    let orders = match backend {
        Backend::Postgres => "TRUNCATE orders",
        Backend::Sqlite => "DELETE FROM orders",
    };
    opened.raw.execute(orders).await;
    opened
        .raw
        .execute(&format!("DELETE FROM checkpoints WHERE name = '{ORDERS_PROJECTION}'"))
        .await;
}

fn replay(c: &mut Criterion) {
    let rt = support::runtime();
    let events = (ORDERS * EVENTS_PER_ORDER) as u64;
    let mut group = c.benchmark_group("replay");
    // A round takes seconds: ten rounds of one, not criterion's growing counts.
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(events));
    for backend in Backend::ALL {
        let mut setup: Option<(BenchDb, Opened)> = None;
        group.bench_function(BenchmarkId::new(backend.name(), events), |b| {
            let (_, opened) = setup.get_or_insert_with(|| {
                rt.block_on(async {
                    let db = BenchDb::new(backend, "replay").await;
                    let opened = db.open().await;
                    write_log(opened.store.as_ref()).await;
                    (db, opened)
                })
            });
            let opened = &*opened;
            b.iter_custom(|iters| {
                timed_rounds(&rt, iters, |_| async move {
                    empty_read_model(opened, backend).await;
                    let (elapsed, replayed) =
                        time(replay_once(Arc::clone(&opened.store), opened.models.as_ref())).await;
                    assert_eq!(replayed, events, "the whole log must be replayed");
                    let executed = opened
                        .raw
                        .count("SELECT COUNT(*) FROM orders WHERE status = 'EXECUTED'")
                        .await;
                    assert_eq!(executed, ORDERS as i64, "every order must land EXECUTED");
                    elapsed
                })
            })
        });
        drop(setup);
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = support::criterion();
    targets = replay
}
criterion_main!(benches);
