//! Hydrating one order from 10, 100 and 1,000 events, in time per event:
//! `memory` decodes and folds stored events already in memory (the codec and
//! `evolve`); `postgres` and `sqlite` run `store::fold_stream`, reading included,
//! exactly as an order actor catches up; `<backend>_read_only` reads the same
//! stream without decoding, so the two differ by what folding costs.
//!
//! Run alone: `cargo bench --bench hydrate` (one backend: `-- hydrate/sqlite`).

mod support;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use order_engine::aggregate::Aggregate;
use order_engine::events::{decode, RecordedEvent, StreamId};
use order_engine::order::{OrderAggregate, OrderEvent, OrderState};
use order_engine::store::{fold_stream, read_stream_all, EventStore};
use uuid::Uuid;

use support::events::{new_order_append, order_history};
use support::{time, timed_rounds, Backend, BenchDb, Opened};

const SIZES: [usize; 3] = [10, 100, 1_000];

/// One stream of `n` events, written through the store.
async fn write_order(store: &dyn EventStore, n: usize) -> StreamId {
    let order_id = Uuid::now_v7();
    let request = new_order_append(order_id, &order_history(order_id, n));
    let stream = request.stream_id.clone();
    match order_engine::store::append(store, request).await {
        Ok(Ok(_)) => stream,
        other => panic!("writing the {n}-event order failed: {other:?}"),
    }
}

/// What `fold_stream` does per event, minus the read: decode, evolve.
fn fold_recorded(events: &[RecordedEvent]) -> OrderState {
    events.iter().fold(OrderState::Empty, |state, recorded| {
        let event: OrderEvent = decode(recorded).unwrap_or_else(|e| panic!("a stored event must decode: {e}"));
        OrderAggregate::evolve(state, &event)
    })
}

type Orders = (BenchDb, Opened, Vec<StreamId>);

/// One database per backend holding one order of each size, made on first use
/// (so a filtered run creates only what it measures).
fn orders_of_each_size<'a>(
    setup: &'a mut Option<Orders>,
    rt: &tokio::runtime::Runtime,
    backend: Backend,
) -> &'a Orders {
    setup.get_or_insert_with(|| {
        rt.block_on(async {
            let db = BenchDb::new(backend, "hydrate").await;
            let opened = db.open().await;
            let mut streams = Vec::new();
            for n in SIZES {
                streams.push(write_order(opened.store.as_ref(), n).await);
            }
            (db, opened, streams)
        })
    })
}

fn hydrate(c: &mut Criterion) {
    let rt = support::runtime();
    let mut group = c.benchmark_group("hydrate");

    // In memory: the stored events of a SQLite log, read once, then folded.
    let mut recorded = None;
    for n in SIZES {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::new("memory", n), |b| {
            let events: &Vec<RecordedEvent> = recorded.get_or_insert_with(|| {
                rt.block_on(async {
                    let db = BenchDb::sqlite();
                    let opened = db.open().await;
                    let stream = write_order(opened.store.as_ref(), SIZES[SIZES.len() - 1]).await;
                    read_stream_all(opened.store.as_ref(), &stream, 1)
                        .await
                        .unwrap_or_else(|e| panic!("reading the order back: {e}"))
                })
            });
            let events = &events[..n];
            assert!(fold_recorded(events).order().is_some());
            b.iter(|| fold_recorded(black_box(events)))
        });
    }

    for backend in Backend::ALL {
        let mut setup: Option<Orders> = None;
        for (i, n) in SIZES.into_iter().enumerate() {
            group.throughput(Throughput::Elements(n as u64));
            group.bench_function(BenchmarkId::new(backend.name(), n), |b| {
                let (_, opened, streams) = orders_of_each_size(&mut setup, &rt, backend);
                let store = opened.store.as_ref();
                let stream = &streams[i];
                b.iter_custom(|iters| {
                    timed_rounds(&rt, iters, |_| async move {
                        let mut state = OrderState::Empty;
                        let mut version = 0;
                        let (elapsed, folded) =
                            time(fold_stream::<OrderAggregate>(store, stream, &mut state, &mut version)).await;
                        if let Err(error) = folded {
                            panic!("hydrating {stream}: {error}");
                        }
                        assert_eq!(version, n as u64, "every event of {stream} must be folded");
                        black_box(state);
                        elapsed
                    })
                })
            });
            group.bench_function(BenchmarkId::new(format!("{}_read_only", backend.name()), n), |b| {
                let (_, opened, streams) = orders_of_each_size(&mut setup, &rt, backend);
                let (store, stream) = (opened.store.as_ref(), &streams[i]);
                b.iter_custom(|iters| {
                    timed_rounds(&rt, iters, |_| async move {
                        let (elapsed, read) = time(read_stream_all(store, stream, 1)).await;
                        let read = read.unwrap_or_else(|e| panic!("reading {stream}: {e}"));
                        assert_eq!(read.len(), n, "every event of {stream} must be read");
                        black_box(read);
                        elapsed
                    })
                })
            });
        }
        drop(setup);
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = support::criterion();
    targets = hydrate
}
criterion_main!(benches);
