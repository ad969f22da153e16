//! The memory bound of live order actors (issue 7, item 5): creates N orders
//! (200,000 by default) by bulk-appending their events straight to the log,
//! then touches each through `Engine::get`, which starts and hydrates its
//! actor, and reads this process's VmRSS every 10,000 orders. Once the
//! live-actor cap is reached the registry passivates the least recently used
//! tenth, so resident memory should flatten. The engine is built by
//! `Application::builder(..).build_stack()`, the wiring `serve` runs (group
//! commit and metering on the log), on the log the orders were written to.
//!
//! `cargo bench --bench memory`. DATABASE_URL=postgres://… runs on a fresh
//! database of its own (created, then dropped); sqlite:path on that file;
//! unset, on a temporary SQLite file. ORDER_ENGINE_MEMORY_ORDERS,
//! ORDER_ENGINE_LIVE_ACTORS_MAX and ORDER_ENGINE_MEMORY_SAMPLE_EVERY change
//! the counts. Prints a table and the figures; never asserts a number.
#![allow(clippy::print_stdout)]

mod support;

use std::error::Error;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::StreamExt;
use order_engine::aggregate::Aggregate;
use order_engine::app::{Application, EngineStack};
use order_engine::config::Settings;
use order_engine::engine::REACTOR_CHECKPOINT;
use order_engine::events::{encode, EventMetadata, NewEvent, StreamId};
use order_engine::loadgen::sample_memory;
use order_engine::order::{
    AcceptOrder, ExecuteOrder, OrderAggregate, OrderCommand, OrderState, OrderType, Quote, Side, SubmitOrder,
};
use order_engine::store::{AppendRequest, EventStore, StoreConfig, BATCH_STREAMS_MAX};
use rust_decimal::Decimal;
use sqlx::Connection;
use support::env_or;
use uuid::Uuid;

type BoxError = Box<dyn Error + Send + Sync>;

/// Orders whose `get` is in flight at once: enough to keep the store busy.
const TOUCH_CONCURRENCY: usize = 32;
/// The target of issue 7.
const RSS_TARGET_MIB: f64 = 300.0;

fn rss_kib() -> Result<u64, BoxError> {
    Ok(sample_memory(std::process::id())?.rss_kib)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Where the bench's log lives, and how to clean it up.
enum Database {
    Postgres {
        admin_url: String,
        name: String,
        url: String,
    },
    Sqlite {
        _dir: Option<tempfile::TempDir>,
        url: String,
    },
}

impl Database {
    async fn create() -> Result<Self, BoxError> {
        match std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()) {
            Some(admin_url) if admin_url.starts_with("postgres") => {
                let name = format!("oe_bench_memory_{}", Uuid::new_v4().simple());
                let mut admin = sqlx::PgConnection::connect(&admin_url).await?;
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .await?;
                let base = admin_url.split('?').next().unwrap_or(&admin_url);
                let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
                let url = format!("{server}/{name}");
                Ok(Self::Postgres { admin_url, name, url })
            }
            Some(url) => Ok(Self::Sqlite { _dir: None, url }),
            None => {
                let dir = tempfile::tempdir()?;
                let url = format!("sqlite:{}", dir.path().join("memory.db").display());
                Ok(Self::Sqlite { _dir: Some(dir), url })
            }
        }
    }

    fn url(&self) -> &str {
        match self {
            Self::Postgres { url, .. } | Self::Sqlite { url, .. } => url,
        }
    }

    fn backend(&self) -> &'static str {
        match self {
            Self::Postgres { .. } => "postgres",
            Self::Sqlite { .. } => "sqlite",
        }
    }

    async fn drop_database(&self) -> Result<(), BoxError> {
        if let Self::Postgres { admin_url, name, .. } = self {
            let mut admin = sqlx::PgConnection::connect(admin_url).await?;
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut admin)
                .await?;
        }
        Ok(())
    }
}

/// An executed MARKET BUY's three order events, made by the order's own
/// `decide`, so they are exactly what the engine would have written.
fn executed_order(order_id: Uuid, user_id: Uuid) -> Result<Vec<NewEvent>, BoxError> {
    let now = Utc::now();
    let price = Decimal::new(15_025, 2);
    let commands = [
        OrderCommand::Submit(SubmitOrder {
            order_id,
            user_id,
            symbol: "AAPL".into(),
            side: Side::Buy,
            order_type: OrderType::Market,
            quantity: Decimal::ONE,
            limit_price: None,
            stop_price: None,
            quote: Some(Quote {
                price,
                as_of: now,
                market_open: true,
            }),
            submitted_at: now,
        }),
        OrderCommand::Accept(AcceptOrder {
            reserved_amount: Decimal::new(15_777, 2),
            accepted_at: now,
        }),
        OrderCommand::Execute(ExecuteOrder {
            execution_price: price,
            market_price: price,
            executed_at: now,
        }),
    ];
    let mut state = OrderState::default();
    let mut events = Vec::new();
    for command in &commands {
        let (next, emitted) = OrderAggregate::handle(&state, command)?;
        state = next;
        for event in emitted {
            let metadata = EventMetadata {
                correlation_id: Some(order_id),
                source: Some("bench:memory".into()),
                ..EventMetadata::default()
            };
            events.push(encode(&event, Uuid::now_v7(), metadata)?);
        }
    }
    Ok(events)
}

/// Appends `count` executed orders, `BATCH_STREAMS_MAX` streams per transaction.
async fn create_orders(store: &dyn EventStore, count: usize) -> Result<Vec<Uuid>, BoxError> {
    let user_id = Uuid::new_v4();
    let mut ids = Vec::with_capacity(count);
    while ids.len() < count {
        let batch = BATCH_STREAMS_MAX.min(count - ids.len());
        let mut requests = Vec::with_capacity(batch);
        for _ in 0..batch {
            let order_id = Uuid::now_v7();
            requests.push(AppendRequest {
                stream_id: StreamId::order(order_id),
                expected_version: 0,
                command_id: None,
                events: executed_order(order_id, user_id)?,
                linked: false,
            });
            ids.push(order_id);
        }
        for result in store.append_batch(requests).await? {
            result?;
        }
    }
    Ok(ids)
}

struct Sample {
    touched: usize,
    rss_kib: u64,
    live: usize,
    at: Duration,
}

async fn run() -> Result<(), BoxError> {
    let orders: usize = env_or("ORDER_ENGINE_MEMORY_ORDERS", 200_000)?;
    let cap: usize = env_or("ORDER_ENGINE_LIVE_ACTORS_MAX", 10_000)?;
    let every: usize = env_or("ORDER_ENGINE_MEMORY_SAMPLE_EVERY", 10_000)?;
    if orders == 0 || cap == 0 || every == 0 {
        return Err("the order count, the cap and the sampling step must be above zero".into());
    }
    let rss_at_start = rss_kib()?;
    let database = Database::create().await?;
    let result = measure(&database, orders, cap, every, rss_at_start).await;
    database.drop_database().await?;
    result
}

async fn measure(
    database: &Database,
    orders: usize,
    cap: usize,
    every: usize,
    rss_at_start: u64,
) -> Result<(), BoxError> {
    let (store, models) = order_engine::projections::open(&StoreConfig::from_url(database.url())?).await?;
    let created = Instant::now();
    let ids = create_orders(store.as_ref(), orders).await?;
    let create_s = created.elapsed().as_secs_f64();
    println!(
        "memory bench on {}: {orders} orders (3 events each) appended in {create_s:.1}s ({:.0} events/s), live-actor cap {cap}",
        database.backend(),
        (orders * 3) as f64 / create_s
    );
    // The reactor starts from the head: the bulk orders are final and need no saga.
    let head = store.head_position().await?;
    store.save_checkpoint(REACTOR_CHECKPOINT, head).await?;

    let mut settings = Settings::from_lookup(|_| None)?;
    settings.database_url = database.url().to_owned();
    settings.live_actors_max = cap;
    // Only the cap passivates here, not idleness: the run is what it measures.
    settings.passivate_after = Duration::from_secs(3_600);
    let EngineStack { engine, .. } = Application::builder(settings)
        // The log the orders were written to: one pool, as before the engine started.
        .log(store, models)
        .frozen_market()
        .build_stack()
        .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_kib()?;
    let started = Instant::now();
    let mut samples = vec![Sample {
        touched: 0,
        rss_kib: before,
        live: engine.registry().live_count(),
        at: Duration::ZERO,
    }];
    println!(
        "{:>9} {:>10} {:>11} {:>9}",
        "touched", "VmRSS MiB", "live actors", "seconds"
    );
    let print = |s: &Sample| {
        println!(
            "{:>9} {:>10.1} {:>11} {:>9.1}",
            s.touched,
            mib(s.rss_kib),
            s.live,
            s.at.as_secs_f64()
        )
    };
    print(&samples[0]);
    let mut touched = 0usize;
    for chunk in ids.chunks(every) {
        let mut gets = futures_util::stream::iter(chunk.iter().copied())
            .map(|id| {
                let engine = Arc::clone(&engine);
                async move { (id, engine.get(id).await) }
            })
            .buffer_unordered(TOUCH_CONCURRENCY);
        while let Some((id, got)) = gets.next().await {
            match got? {
                Some(order) if order.id == id => touched += 1,
                other => return Err(format!("order {id} did not hydrate: {other:?}").into()),
            }
        }
        let sample = Sample {
            touched,
            rss_kib: rss_kib()?,
            live: engine.registry().live_count(),
            at: started.elapsed(),
        };
        print(&sample);
        samples.push(sample);
    }
    let touch_s = started.elapsed().as_secs_f64();
    engine.shutdown().await;

    let at = |n: usize| samples.iter().find(|s| s.touched >= n);
    let after_cap = at(cap).ok_or("no sample at the cap")?;
    let last = samples.last().ok_or("no samples")?;
    let peak = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let per_order = (after_cap.rss_kib.saturating_sub(before) * 1024) as f64 / cap as f64;
    println!(
        "process start VmRSS {:.1} MiB; after creating the orders (0 touched) {:.1} MiB",
        mib(rss_at_start),
        mib(before)
    );
    println!(
        "at the cap ({} touched) {:.1} MiB; {} {:.1} MiB; peak {:.1} MiB",
        after_cap.touched,
        mib(after_cap.rss_kib),
        last.touched,
        mib(last.rss_kib),
        mib(peak)
    );
    if let Some(mid) = at(orders / 2) {
        println!("at {} touched {:.1} MiB", mid.touched, mib(mid.rss_kib));
    }
    println!(
        "bytes per live order: ({:.1} MiB − {:.1} MiB) / {cap} = {per_order:.0} B; hydration {:.0} orders/s",
        mib(after_cap.rss_kib),
        mib(before),
        orders as f64 / touch_s
    );
    println!(
        "target ≤ {RSS_TARGET_MIB} MB after {orders} orders: {} ({:.1} MiB)",
        if mib(last.rss_kib) <= RSS_TARGET_MIB {
            "met"
        } else {
            "missed"
        },
        mib(last.rss_kib)
    );
    Ok(())
}

fn main() -> ExitCode {
    let system = actix_rt::System::new();
    match system.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("memory bench failed: {error}");
            ExitCode::FAILURE
        }
    }
}
