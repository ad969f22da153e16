//! The load: `concurrency` workers, each running whole orders one after the
//! other (Place, Reserve, Fill through `CqrsFramework::execute`), timing each
//! order from its first command to its last. Must never retry or skip a
//! failed command: an order that fails ends the run, since a figure over
//! orders that did not happen would flatter the peer.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_es::AggregateError;
use postgres_es::PostgresCqrs;
use rust_decimal::Decimal;
use tokio::task::JoinSet;

use crate::order::{Order, OrderCommand, OrderError};

/// When a level ends.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    /// After this many orders have been started (and finished).
    Orders(u64),
    /// No order starts after this long; those in flight finish.
    Duration(Duration),
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("order {order_id}: {step} failed")]
    Command {
        order_id: String,
        step: &'static str,
        #[source]
        source: AggregateError<OrderError>,
    },
    #[error("a worker stopped abnormally")]
    Worker(#[source] tokio::task::JoinError),
}

/// What one level measured.
pub struct Measured {
    /// One entry per finished order, start to finish.
    pub latencies: Vec<Duration>,
    /// From the first order's start to the last order's end.
    pub elapsed: Duration,
}

/// Runs one level. `run_tag` keeps order ids unique across levels of one run.
pub async fn run(
    cqrs: Arc<PostgresCqrs<Order>>,
    concurrency: usize,
    stop: Stop,
    run_tag: &str,
) -> Result<Measured, DriverError> {
    let next = Arc::new(AtomicU64::new(0));
    // Set by the first failing worker so the others stop starting orders.
    let failed = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let deadline = match stop {
        Stop::Duration(duration) => Some(started + duration),
        Stop::Orders(_) => None,
    };
    let limit = match stop {
        Stop::Orders(orders) => orders,
        Stop::Duration(_) => u64::MAX,
    };
    let mut workers = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (cqrs, next, failed) = (Arc::clone(&cqrs), Arc::clone(&next), Arc::clone(&failed));
        let run_tag = run_tag.to_string();
        workers.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                if failed.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let number = next.fetch_add(1, Ordering::Relaxed);
                if number >= limit {
                    break;
                }
                let began = Instant::now();
                if let Err(error) = one_order(&cqrs, &format!("{run_tag}-{number}"), number).await {
                    failed.store(true, Ordering::Relaxed);
                    return Err(error);
                }
                latencies.push(began.elapsed());
            }
            Ok(latencies)
        });
    }
    let mut latencies = Vec::new();
    let mut first_error = None;
    while let Some(joined) = workers.join_next().await {
        match joined.map_err(DriverError::Worker).and_then(|result| result) {
            Ok(mut worker_latencies) => latencies.append(&mut worker_latencies),
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    let elapsed = started.elapsed();
    match first_error {
        Some(error) => Err(error),
        None => Ok(Measured { latencies, elapsed }),
    }
}

/// Place, reserve, fill: the three commands and four events of one order.
async fn one_order(cqrs: &PostgresCqrs<Order>, order_id: &str, number: u64) -> Result<(), DriverError> {
    // Amounts vary a little with the order number so payloads are not all alike.
    let quantity = Decimal::from(1 + number % 100);
    let limit_price = Decimal::new(10_000 + i64::try_from(number % 5_000).unwrap_or(0), 2);
    let price = limit_price - Decimal::new(i64::try_from(number % 7).unwrap_or(0), 2);
    let reserve = quantity * limit_price;
    let steps = [
        (
            "Place",
            OrderCommand::Place {
                account_id: format!("account-{}", number % 1_000),
                symbol: "AAPL".to_string(),
                quantity,
                limit_price,
            },
        ),
        ("Reserve", OrderCommand::Reserve { amount: reserve }),
        ("Fill", OrderCommand::Fill { quantity, price }),
    ];
    for (step, command) in steps {
        cqrs.execute(order_id, command)
            .await
            .map_err(|source| DriverError::Command {
                order_id: order_id.to_string(),
                step,
                source,
            })?;
    }
    Ok(())
}
