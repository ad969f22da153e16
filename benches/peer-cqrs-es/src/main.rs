//! The cqrs-es + postgres-es peer of order-engine (issue 12): the same order
//! (place, reserve, fill) on the simplest event-sourced stack, store only, so
//! the engine's figures can be read as a ratio measured in the same run.
//!
//! ```text
//! peer-cqrs-es [--concurrency 4,64] [--seconds S | --orders N] [--pool-size P]
//! ```
//!
//! Creates `peer_cqrs_es_<pid>` next to DATABASE_URL's database, runs each
//! concurrency level on emptied tables, prints one JSON line per level on
//! stdout, and drops the database, also when a level fails.

mod database;
mod driver;
mod order;
mod report;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use postgres_es::{postgres_cqrs, PostgresCqrs};
use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::database::RunDatabase;
use crate::driver::Stop;
use crate::order::Order;
use crate::report::{percentile_ms, Report, Versions};

/// Seconds per level when neither `--seconds` nor `--orders` is given.
const DEFAULT_SECONDS: f64 = 15.0;
/// The most connections the default pool opens. More than this on a 2-core
/// machine only adds backends competing for the same cores, and PostgreSQL's
/// default `max_connections` (100) is shared with whatever else runs.
const POOL_SIZE_DEFAULT_MAX: u32 = 32;
/// How long a command may wait for a pooled connection before the run fails.
const ACQUIRE_TIMEOUT_SECS: u64 = 30;

#[derive(Debug, Parser)]
#[command(about = "cqrs-es 0.5 + postgres-es 0.5 order aggregate, benchmarked beside order-engine")]
struct Args {
    /// Concurrency levels to run, in order (orders in flight at once).
    #[arg(long, env = "PEER_CONCURRENCY", value_delimiter = ',', default_value = "4,64")]
    concurrency: Vec<usize>,
    /// Run each level for this many seconds (the default, 15).
    #[arg(long, env = "PEER_SECONDS", conflicts_with = "orders")]
    seconds: Option<f64>,
    /// Run each level for this many orders instead of a duration.
    #[arg(long, env = "PEER_ORDERS")]
    orders: Option<u64>,
    /// Pool connections; by default the concurrency, at most 32.
    #[arg(long, env = "PEER_POOL_SIZE")]
    pool_size: Option<u32>,
    /// The server to run on; the run's own database is created beside this one.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let stop = match (args.orders, args.seconds) {
        (Some(0), _) => bail!("--orders must be at least 1"),
        (Some(orders), _) => Stop::Orders(orders),
        (None, seconds) => {
            let seconds = seconds.unwrap_or(DEFAULT_SECONDS);
            if !(seconds.is_finite() && seconds > 0.0) {
                bail!("--seconds must be a positive number, got {seconds}");
            }
            Stop::Duration(Duration::from_secs_f64(seconds))
        }
    };
    if args.concurrency.contains(&0) {
        bail!("--concurrency levels must be at least 1");
    }
    let database = RunDatabase::create(&args.database_url, format!("peer_cqrs_es_{}", std::process::id())).await?;
    eprintln!("peer-cqrs-es: database {}", database.name());
    let outcome = run_levels(&args, stop, &database).await;
    // Dropped whatever happened: a failed run must not leave its database behind.
    let dropped = database.drop_database().await;
    outcome?;
    dropped?;
    Ok(())
}

async fn run_levels(args: &Args, stop: Stop, database: &RunDatabase) -> anyhow::Result<()> {
    for &concurrency in &args.concurrency {
        let pool_size = args
            .pool_size
            .unwrap_or_else(|| {
                u32::try_from(concurrency)
                    .unwrap_or(u32::MAX)
                    .min(POOL_SIZE_DEFAULT_MAX)
            })
            .max(1);
        let pool = PgPoolOptions::new()
            .max_connections(pool_size)
            .acquire_timeout(Duration::from_secs(ACQUIRE_TIMEOUT_SECS))
            .connect_with(database.options())
            .await
            .with_context(|| format!("connecting a pool of {pool_size} to {}", database.name()))?;
        let report = run_level(concurrency, pool_size, stop, database, &pool).await;
        pool.close().await;
        let report = report?;
        let line = serde_json::to_string(&report).context("encoding the report")?;
        // The report is the program's output: one JSON line per level on stdout.
        #[allow(clippy::print_stdout)]
        {
            println!("{line}");
        }
    }
    Ok(())
}

async fn run_level(
    concurrency: usize,
    pool_size: u32,
    stop: Stop,
    database: &RunDatabase,
    pool: &PgPool,
) -> anyhow::Result<Report> {
    database.reset(pool).await?;
    warm(pool, pool_size).await?;
    // The plain event store, no queries: store only, as issue 12 asks. Each
    // command loads the order's events and appends its own in one transaction.
    let cqrs: Arc<PostgresCqrs<Order>> = Arc::new(postgres_cqrs(pool.clone(), vec![], ()));
    let measured = driver::run(cqrs, concurrency, stop, &format!("c{concurrency}")).await?;
    let events = database.event_count(pool).await?;
    let orders = measured.latencies.len() as u64;
    if events != orders * 4 {
        bail!("{orders} orders stored {events} events, not four each");
    }
    let mut latencies = measured.latencies;
    latencies.sort_unstable();
    let seconds = measured.elapsed.as_secs_f64();
    Ok(Report {
        bench: "peer-cqrs-es",
        concurrency,
        pool_size,
        orders,
        events,
        seconds,
        orders_per_sec: orders as f64 / seconds,
        events_per_sec: events as f64 / seconds,
        p50_ms: percentile_ms(&latencies, 0.50),
        p99_ms: percentile_ms(&latencies, 0.99),
        p999_ms: percentile_ms(&latencies, 0.999),
        max_ms: latencies.last().map_or(0.0, |max| max.as_secs_f64() * 1_000.0),
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        runtime_threads: tokio::runtime::Handle::current().metrics().num_workers(),
        versions: Versions::new(database.server_version(pool).await?),
    })
}

/// Opens every pooled connection before the clock starts, so the first
/// orders do not pay for connection setup that later ones do not.
async fn warm(pool: &PgPool, pool_size: u32) -> anyhow::Result<()> {
    let mut held = Vec::new();
    for _ in 0..pool_size {
        held.push(pool.acquire().await.context("opening the pool's connections")?);
    }
    Ok(())
}
