//! The engine without a broker: orders submitted in-process through
//! `Engine::submit`, as the HTTP and AMQP front ends do, and followed on the
//! log until each is executed and its saga completed. Measures what the
//! engine core (actors, reactor, saga, embedded ledger, store) sustains, so
//! the broker's share of the end-to-end figure can be told apart.
//!
//! ```text
//! cargo bench --bench engine_throughput -- [--orders N] [--users K] [--in-flight C] [--sqlite] [--no-group-commit]
//! ```
//!
//! PostgreSQL from DATABASE_URL (a fresh database, dropped afterwards), or a
//! temporary SQLite file with `--sqlite`. The engine is built by
//! `Application::builder(..).build_stack()`, the wiring `serve` runs (append
//! metering included). Prints one JSON object.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use order_engine::app::{Application, EngineStack};
use order_engine::config::Settings;
use order_engine::engine::SubmitRequest;
use order_engine::events::EventMetadata;
use order_engine::loadgen::LatencySummary;
use order_engine::order::{OrderType, Side};
use rust_decimal::Decimal;
use sqlx::{Connection, PgConnection};
use tokio::sync::Semaphore;
use uuid::Uuid;

struct Options {
    orders: usize,
    users: usize,
    in_flight: usize,
    sqlite: bool,
    group_commit: bool,
}

fn options() -> anyhow::Result<Options> {
    let mut options = Options {
        orders: 5_000,
        users: 200,
        in_flight: 512,
        sqlite: false,
        group_commit: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> anyhow::Result<usize> {
            args.next()
                .with_context(|| format!("{name} needs a number"))?
                .parse()
                .with_context(|| format!("{name} needs a whole number"))
        };
        match arg.as_str() {
            "--orders" => options.orders = number("--orders")?,
            "--users" => options.users = number("--users")?.max(1),
            "--in-flight" => options.in_flight = number("--in-flight")?.max(1),
            "--sqlite" => options.sqlite = true,
            "--no-group-commit" => options.group_commit = false,
            // cargo bench passes --bench to every bench binary.
            "--bench" => {}
            other => bail!("unknown argument {other:?}"),
        }
    }
    Ok(options)
}

fn main() -> anyhow::Result<()> {
    let options = options()?;
    actix_rt::System::new().block_on(run(options))
}

async fn run(options: Options) -> anyhow::Result<()> {
    let admin_url =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let db_name = format!("oe_bench_engine_{}", Uuid::new_v4().simple());
    let dir = tempfile::tempdir()?;
    let database_url = if options.sqlite {
        format!("sqlite:{}", dir.path().join("log.db").display())
    } else {
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .with_context(|| format!("PostgreSQL is required at {admin_url}"))?;
        sqlx::query(&format!("CREATE DATABASE {db_name}"))
            .execute(&mut admin)
            .await?;
        let (base, _) = admin_url
            .rsplit_once('/')
            .context("DATABASE_URL has no database part")?;
        format!("{base}/{db_name}")
    };
    // The engine as `serve` wires it (group commit, metering, embedded
    // ledger), without the HTTP API, the broker or the projection.
    let mut settings = Settings::from_lookup(|_| None)?;
    settings.database_url = database_url;
    settings.group_commit = options.group_commit;
    settings.demo_balance = Decimal::from(1_000_000_000);
    settings.live_actors_max = options.orders.max(1_000);
    let stack = Application::builder(settings).frozen_market().build_stack().await?;
    let result = measure(&options, stack).await;
    if !options.sqlite {
        let mut admin = PgConnection::connect(&admin_url).await?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))
            .execute(&mut admin)
            .await?;
    }
    result
}

async fn measure(options: &Options, stack: EngineStack) -> anyhow::Result<()> {
    let EngineStack { engine, store, .. } = stack;
    let users: Vec<Uuid> = (0..options.users).map(|_| Uuid::new_v4()).collect();
    let gate = Arc::new(Semaphore::new(options.in_flight));
    let started = Instant::now();
    let mut sent_at: HashMap<Uuid, Instant> = HashMap::with_capacity(options.orders);
    let mut submissions = Vec::with_capacity(options.orders);
    for i in 0..options.orders {
        let order_id = Uuid::new_v4();
        let permit = Arc::clone(&gate).acquire_owned().await?;
        sent_at.insert(order_id, Instant::now());
        let engine = Arc::clone(&engine);
        let request = SubmitRequest {
            order_id: Some(order_id),
            user_id: users[i % users.len()],
            symbol: "AAPL".into(),
            side: Side::Buy,
            order_type: OrderType::Market,
            quantity: Decimal::ONE,
            limit_price: None,
            stop_price: None,
            metadata: EventMetadata::default(),
        };
        submissions.push(tokio::spawn(async move {
            let result = engine.submit(request).await;
            drop(permit);
            result
        }));
    }
    let mut rejected = 0;
    for submission in submissions {
        if submission.await?.is_err() {
            rejected += 1;
        }
    }
    let submitted_in = started.elapsed();

    // Follow the log until every order has executed and its saga completed.
    let mut after = 0;
    let mut executed: Vec<Duration> = Vec::with_capacity(options.orders);
    let mut completed = 0;
    let deadline = Instant::now() + Duration::from_secs(600);
    while completed < options.orders - rejected && Instant::now() < deadline {
        let page = store.read_all(after, 1_000).await?;
        if page.is_empty() {
            store.wait_for_append(after, Duration::from_millis(50)).await;
            continue;
        }
        for event in &page {
            after = event.global_position;
            match event.event_type.as_str() {
                "OrderExecuted" => {
                    if let Some(sent) = event.stream_id.uuid_in("order").and_then(|id| sent_at.get(&id)) {
                        executed.push(sent.elapsed());
                    }
                }
                "SagaCompleted" => completed += 1,
                _ => {}
            }
        }
    }
    let elapsed = started.elapsed();
    engine.shutdown().await;
    let executed_count = executed.len();
    let events = after;
    println!(
        "{}",
        serde_json::json!({
            "backend": store.backend(),
            "group_commit": options.group_commit,
            "orders": options.orders,
            "users": options.users,
            "in_flight": options.in_flight,
            "rejected": rejected,
            "executed": executed_count,
            "sagas_completed": completed,
            "submit_seconds": submitted_in.as_secs_f64(),
            "seconds": elapsed.as_secs_f64(),
            "orders_per_second": completed as f64 / elapsed.as_secs_f64(),
            "events": events,
            "events_per_order": events as f64 / options.orders.max(1) as f64,
            // The load generator's summary, so both report percentiles alike.
            "execution_latency": LatencySummary::from_latencies(executed),
        })
    );
    Ok(())
}
