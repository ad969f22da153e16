//! One load run: connect, listen for position updates on an own queue, send
//! on schedule, wait for the stragglers (or the timeout), report.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::memory::{self, MemoryReport};
use super::message::{http_body, order_id_of, submission, OrderSpec};
use super::pacing::{due_offset, planned_orders, Rate};
use super::report::{Errors, Report};
use super::stats::LatencySummary;
use super::tracker::Tracker;
use super::{LoadConfig, LoadgenError, Transport, MEMORY_SAMPLE_INTERVAL, OWN_QUEUE_LENGTH_MAX};
use crate::amqp::topology::{self, EXCHANGE, POSITIONS, SUBMIT};
use crate::amqp::PERSISTENT;
use crate::auth::mint_dev_token;
use crate::store::redact_url;

/// How often orders past the timeout are given up on, and the end is checked.
const SWEEP_INTERVAL: Duration = Duration::from_millis(50);
/// The first order is due this long after set-up, so it is not late at birth.
const START_DELAY: Duration = Duration::from_millis(100);
/// Tokens outlive any run: a run that outlived its tokens would count 401s.
const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// A bound on one HTTP request, well above any healthy answer.
const HTTP_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How an order gets to the engine.
enum Sender {
    Amqp {
        channel: Channel,
        queue: String,
    },
    Http {
        client: reqwest::Client,
        url: String,
        tokens: Vec<String>,
    },
}

/// Runs the load described by `config` against the engine it names, and
/// returns what was measured.
pub async fn run(config: LoadConfig) -> Result<Report, LoadgenError> {
    config.check()?;
    let memory = match config.engine_pid {
        Some(pid) => Some(start_memory_watch(pid)?),
        None => None,
    };
    let connection = topology::connect(&loadgen_amqp(&config), "positions")
        .await
        .map_err(|source| LoadgenError::Connect {
            url: redact_url(&config.amqp.url),
            source,
        })?;
    let tracker = Arc::new(Tracker::new(config.transport == Transport::Http));
    let listener = listen_for_positions(&connection, &config, Arc::clone(&tracker)).await?;
    let users: Vec<Uuid> = (0..config.users).map(|_| Uuid::new_v4()).collect();
    let sender = Arc::new(match config.transport {
        Transport::Amqp => {
            let channel = connection.create_channel().await?;
            channel.confirm_select(ConfirmSelectOptions::default()).await?;
            Sender::Amqp {
                channel,
                queue: config.amqp.name(SUBMIT),
            }
        }
        Transport::Http => http_sender(&config, &users).await?,
    });

    let started_at = Utc::now();
    let start = Instant::now() + START_DELAY;
    let planned = planned_orders(config.orders, config.duration, config.rate);
    let sends = Arc::new(Semaphore::new(config.in_flight));
    let slots = Arc::new(Semaphore::new(config.in_flight));
    let sweeper = spawn_sweeper(Arc::clone(&tracker), config.timeout);
    let mut sent = 0u64;
    let mut last_send = start;
    loop {
        if planned.is_some_and(|n| sent >= n) {
            break;
        }
        let (due, slot) = match config.rate {
            Rate::PerSecond(rate) => {
                let due = start + due_offset(sent, rate);
                tokio::time::sleep_until(due.into()).await;
                (due, None)
            }
            Rate::Max => {
                // The clock ends the run even while every slot is taken.
                let deadline = config.duration.map_or(far_future(), |d| start + d);
                let slot = tokio::select! {
                    slot = Arc::clone(&slots).acquire_owned() => slot
                        .map_err(|_| LoadgenError::Config("the in-flight limiter closed".into()))?,
                    () = tokio::time::sleep_until(deadline.into()) => break,
                };
                // Nothing leaves before the start, as at a fixed rate: an order
                // sent early but timed from the start could finish "before" it.
                let due = Instant::now().max(start);
                tokio::time::sleep_until(due.into()).await;
                (due, Some(slot))
            }
        };
        if config.duration.is_some_and(|d| due >= start + d) {
            break;
        }
        let send = Arc::clone(&sends)
            .acquire_owned()
            .await
            .map_err(|_| LoadgenError::Config("the send limiter closed".into()))?;
        // Round-robin over users and symbols; the token of user i is tokens[i].
        let user_index = (sent % users.len() as u64) as usize;
        let order = OrderSpec {
            order_id: Uuid::new_v4(),
            user_id: users[user_index],
            symbol: config.symbols[(sent % config.symbols.len() as u64) as usize].clone(),
            quantity: config.quantity,
        };
        let (sender, tracker) = (Arc::clone(&sender), Arc::clone(&tracker));
        tokio::spawn(async move {
            send_one(&sender, &tracker, user_index, order, due, slot).await;
            drop(send);
        });
        sent += 1;
        last_send = Instant::now();
    }
    // Every send has finished once all its permits are back.
    let in_flight = u32::try_from(config.in_flight).unwrap_or(u32::MAX);
    let _all = sends
        .acquire_many(in_flight)
        .await
        .map_err(|_| LoadgenError::Config("the send limiter closed".into()))?;
    while tracker.pending() > 0 {
        tokio::time::sleep(SWEEP_INTERVAL).await;
    }
    let finished = Instant::now();
    sweeper.abort();
    listener.abort();
    let _ = connection.close(200, "loadgen done").await;
    let outcome = tracker.finish();
    let engine_memory = memory.map(|(report, task)| {
        task.abort();
        // One last reading, so the report reflects the state after the run.
        let mut report = *report.lock().unwrap_or_else(PoisonError::into_inner);
        if let Ok(sample) = memory::sample(report.pid) {
            report.record(sample);
        }
        report
    });

    // Throughput counts to the last completion; with none, to the run's end.
    let end = outcome.last_completion.unwrap_or(finished).max(last_send);
    let elapsed_s = end.saturating_duration_since(start).as_secs_f64();
    let send_s = last_send.saturating_duration_since(start).as_secs_f64();
    let completed = outcome.latencies.len() as u64;
    let per_s = |n: u64, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
    let errors = match config.transport {
        Transport::Amqp => Errors {
            publish: outcome.failures,
            http: 0,
            timeouts: outcome.timeouts,
        },
        Transport::Http => Errors {
            publish: 0,
            http: outcome.failures,
            timeouts: outcome.timeouts,
        },
    };
    Ok(Report {
        transport: config.transport.as_str(),
        offered_rate_per_s: config.rate.per_second(),
        in_flight_max: config.in_flight,
        users: config.users,
        symbols: config.symbols.clone(),
        started_at,
        timeout_s: config.timeout.as_secs_f64(),
        sent,
        completed,
        errors,
        unmatched_updates: outcome.unmatched,
        send_s,
        elapsed_s,
        sent_per_s: per_s(sent, send_s),
        throughput_per_s: per_s(completed, elapsed_s),
        latency: LatencySummary::from_latencies(outcome.latencies),
        engine_memory,
    })
}

/// The broker settings with the load generator's own connection name.
fn loadgen_amqp(config: &LoadConfig) -> crate::amqp::AmqpConfig {
    crate::amqp::AmqpConfig {
        connection_name: "order-engine-loadgen".to_owned(),
        ..config.amqp.clone()
    }
}

/// An exclusive, self-deleting queue bound to the exchange with the
/// `positions.updates` key: the broker copies every position update to it,
/// and the engine's own `positions.updates` queue keeps its copy for its
/// real consumers.
async fn listen_for_positions(
    connection: &Connection,
    config: &LoadConfig,
    tracker: Arc<Tracker>,
) -> Result<JoinHandle<()>, LoadgenError> {
    let exchange = config.amqp.name(EXCHANGE);
    // A passive declare fails (and closes its channel) when the exchange is missing.
    let probe = connection.create_channel().await?;
    probe
        .exchange_declare(
            &exchange,
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                passive: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|_| LoadgenError::NoTopology {
            exchange: exchange.clone(),
        })?;
    let _ = probe.close(200, "probe done").await;
    let channel = connection.create_channel().await?;
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongLongInt(OWN_QUEUE_LENGTH_MAX));
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("classic")),
    );
    let queue = channel
        .queue_declare(
            "",
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await?;
    channel
        .queue_bind(
            queue.name().as_str(),
            &exchange,
            POSITIONS,
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut consumer = channel
        .basic_consume(
            queue.name().as_str(),
            "order-engine-loadgen",
            BasicConsumeOptions {
                no_ack: true,
                exclusive: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok(tokio::spawn(async move {
        let _channel = channel;
        while let Some(delivery) = consumer.next().await {
            let at = Instant::now();
            match delivery {
                Ok(delivery) => match order_id_of(&delivery.data) {
                    Some(order_id) => tracker.update(order_id, at),
                    None => tracing::warn!("a position update without a readable order_id; ignored"),
                },
                Err(error) => {
                    tracing::warn!(%error, "the position update consumer ended");
                    return;
                }
            }
        }
    }))
}

/// The HTTP client and one token per user; fails early when the engine does not answer.
async fn http_sender(config: &LoadConfig, users: &[Uuid]) -> Result<Sender, LoadgenError> {
    let base = config.http_url.trim_end_matches('/').to_owned();
    let unreachable = |reason: String| LoadgenError::EngineUnreachable {
        url: base.clone(),
        reason,
    };
    let client = reqwest::Client::builder()
        .timeout(HTTP_REQUEST_TIMEOUT)
        .pool_max_idle_per_host(config.in_flight)
        .build()
        .map_err(|e| unreachable(e.to_string()))?;
    let live = client
        .get(format!("{base}/health/live"))
        .send()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    if !live.status().is_success() {
        return Err(unreachable(format!("/health/live answered {}", live.status())));
    }
    let tokens = users
        .iter()
        .map(|user| mint_dev_token(&config.jwt, *user, TOKEN_TTL))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Sender::Http {
        client,
        url: format!("{base}/api/v1/orders"),
        tokens,
    })
}

/// Sends one order; records its failure, or registers it for its update.
async fn send_one(
    sender: &Sender,
    tracker: &Tracker,
    user_index: usize,
    order: OrderSpec,
    due: Instant,
    slot: Option<tokio::sync::OwnedSemaphorePermit>,
) {
    match sender {
        Sender::Amqp { channel, queue } => {
            // Registered first: the update cannot arrive before the publish.
            tracker.register(order.order_id, due, slot);
            let published = publish(channel, queue, &order).await;
            if let Err(error) = published {
                tracing::debug!(%error, order_id = %order.order_id, "publish failed");
                tracker.fail(Some(order.order_id));
            }
        }
        Sender::Http { client, url, tokens } => {
            let token = &tokens[user_index % tokens.len()];
            let answer = client
                .post(url)
                .bearer_auth(token)
                .json(&http_body(&order))
                .send()
                .await;
            let order_id = match answer {
                Ok(response) if response.status().is_success() => {
                    response.bytes().await.ok().and_then(|body| order_id_of(&body))
                }
                Ok(response) => {
                    tracing::debug!(status = %response.status(), "order refused over HTTP");
                    None
                }
                Err(error) => {
                    tracing::debug!(%error, "HTTP request failed");
                    None
                }
            };
            match order_id {
                Some(order_id) => tracker.register(order_id, due, slot),
                None => tracker.fail(None),
            }
        }
    }
}

async fn publish(channel: &Channel, queue: &str, order: &OrderSpec) -> Result<(), String> {
    let body = serde_json::to_vec(&submission(order, Utc::now())).map_err(|e| e.to_string())?;
    let properties = BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_content_type(ShortString::from("application/json"))
        .with_message_id(ShortString::from(format!("msg_{}", order.order_id)));
    // The default exchange routes to the queue of the same name, as a stock client would.
    let confirm = channel
        .basic_publish("", queue, BasicPublishOptions::default(), &body, properties)
        .await
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    if confirm.is_ack() {
        Ok(())
    } else {
        Err("the broker nacked the publish".to_owned())
    }
}

/// A deadline no run reaches (a year on), for runs without --duration.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(365 * 24 * 3600)
}

fn spawn_sweeper(tracker: Arc<Tracker>, timeout: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(SWEEP_INTERVAL);
        loop {
            every.tick().await;
            let expired = tracker.expire(Instant::now(), timeout);
            if expired > 0 {
                tracing::debug!(expired, "orders timed out without a position update");
            }
        }
    })
}

type MemoryWatch = (Arc<Mutex<MemoryReport>>, JoinHandle<()>);

/// Samples the engine's memory now (failing if the pid is wrong) and then
/// every `MEMORY_SAMPLE_INTERVAL` until aborted.
fn start_memory_watch(pid: u32) -> Result<MemoryWatch, LoadgenError> {
    let first = memory::sample(pid).map_err(|source| LoadgenError::Memory { pid, source })?;
    let mut report = MemoryReport::new(pid);
    report.record(first);
    let report = Arc::new(Mutex::new(report));
    let shared = Arc::clone(&report);
    let task = tokio::spawn(async move {
        let mut every = tokio::time::interval(MEMORY_SAMPLE_INTERVAL);
        let mut warned = false;
        loop {
            every.tick().await;
            match memory::sample(pid) {
                Ok(sample) => shared.lock().unwrap_or_else(PoisonError::into_inner).record(sample),
                Err(error) => {
                    // The engine exited mid-run: say so once, keep the readings so far.
                    if !warned {
                        warned = true;
                        tracing::warn!(pid, %error, "cannot sample the engine's memory any more");
                    }
                }
            }
        }
    });
    Ok((report, task))
}
