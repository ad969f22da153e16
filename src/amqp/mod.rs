//! RabbitMQ: the submission consumer (`orders.submit` → the engine) and the
//! publishers that relay the log to `positions.updates`, `orders.events` and
//! `orders.status` (seed 004 §3), each a task with its own connection that
//! reconnects on its own.
//!
//! Must never be a source of truth: nothing is published that the log does
//! not hold (except refusals, which the log never records), and nothing is
//! acknowledged before its outcome is durable.

mod ack_window;
mod attempts;
mod config;
mod consumer;
mod publisher;
pub mod topology;
pub mod wire;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cluster::{ClusterView, Partitioning};
pub use config::{
    AmqpConfig, QueueKind, DEFAULT_AMQP_URL, DEFAULT_CONFIRM_TIMEOUT, DEFAULT_DELIVERY_LIMIT, DEFAULT_ORDER_CACHE_MAX,
    DEFAULT_PREFETCH, DEFAULT_PUBLISHER_BATCH, DEFAULT_QUICK_RETRIES, DEFAULT_QUICK_RETRY_MAX, DEFAULT_QUICK_RETRY_MIN,
    DEFAULT_RECONNECT_MAX, DEFAULT_RECONNECT_MIN, PREFETCH_MAX, QUICK_RETRIES_MAX, RETRY_DELAY_MAX, RETRY_RUNGS_MAX,
    SEED_RETRY_LADDER,
};
pub use consumer::{OrderSubmitter, PERSISTENT};
pub use publisher::{derive, Outbound, Route};

use crate::clock::Clock;
use crate::projections::LogFeed;
use crate::store::{EventStore, StoreError};
use crate::telemetry::metrics::Metrics;
use consumer::SubmissionConsumer;
use publisher::Publisher;

/// Everything that can go wrong between the engine and the broker.
#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    #[error("the broker refused (nacked) a message")]
    Nacked,
    #[error("no publisher confirm within the timeout")]
    ConfirmTimeout,
    #[error("the connection to the broker was lost")]
    ConnectionLost,
    #[error("the broker ended the consumer")]
    StreamEnded,
    #[error("consumer channel: {0}")]
    DeliveryOrder(#[from] ack_window::TagOutOfOrder),
    #[error("event log: {0}")]
    Store(StoreError),
    #[error("cannot encode a message: {0}")]
    Encode(String),
    #[error("event at position {position} cannot be published: {reason}")]
    Poison { position: u64, reason: String },
}

/// The liveness of one task (the consumer or a publisher), for health probes.
#[derive(Debug)]
pub struct TaskHealth {
    name: String,
    connected: AtomicBool,
    /// A publisher whose leader role another process holds: not running,
    /// and not a reason for this process to be unready.
    standby: AtomicBool,
    processed: AtomicU64,
    ack_frames: AtomicU64,
    stopped: Mutex<Option<String>>,
}

impl TaskHealth {
    fn new(name: impl Into<String>) -> Arc<Self> {
        Arc::new(Self {
            name: name.into(),
            connected: AtomicBool::new(false),
            standby: AtomicBool::new(false),
            processed: AtomicU64::new(0),
            ack_frames: AtomicU64::new(0),
            stopped: Mutex::new(None),
        })
    }

    fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::SeqCst);
    }

    fn add_processed(&self, count: u64) {
        self.processed.fetch_add(count, Ordering::Relaxed);
    }

    fn add_ack_frames(&self, count: u64) {
        self.ack_frames.fetch_add(count, Ordering::Relaxed);
    }

    fn stop(&self, reason: String) {
        *self.stopped.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason);
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    /// Whether another process runs this publisher (its leader role is theirs).
    pub fn is_standby(&self) -> bool {
        self.standby.load(Ordering::SeqCst)
    }

    fn set_standby(&self, standby: bool) {
        self.standby.store(standby, Ordering::SeqCst);
    }

    /// Submissions settled (consumer) or messages confirmed (publisher) since start.
    pub fn processed(&self) -> u64 {
        self.processed.load(Ordering::Relaxed)
    }

    /// `basic.ack` frames the consumer sent since start: fewer than
    /// `processed` when one `multiple` ack settled several submissions.
    pub fn ack_frames(&self) -> u64 {
        self.ack_frames.load(Ordering::Relaxed)
    }

    /// Why the task stopped for good (a poison event), if it did.
    pub fn stopped(&self) -> Option<String> {
        self.stopped.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// Watches a connection for its loss: turns the health probe false at once
/// and wakes whoever waits on `lost`. Stops watching when dropped.
pub(crate) struct LossWatch {
    pub(crate) lost: Arc<tokio::sync::Notify>,
    task: JoinHandle<()>,
}

impl Drop for LossWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) fn watch_loss(connection: &lapin::Connection, health: Arc<TaskHealth>) -> LossWatch {
    use futures_util::StreamExt;
    let lost = Arc::new(tokio::sync::Notify::new());
    let signal = Arc::clone(&lost);
    let mut events = connection.events_listener();
    let task = tokio::spawn(async move {
        while let Some(event) = events.next().await {
            if let lapin::Event::Error(error) = event {
                tracing::warn!(%error, task = health.name(), "AMQP connection lost");
                health.set_connected(false);
                // A permit is stored, so a waiter that arrives later still wakes.
                signal.notify_one();
                return;
            }
        }
    });
    LossWatch { lost, task }
}

/// The running RabbitMQ layer.
pub struct AmqpHandle {
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    consumer: Arc<TaskHealth>,
    publishers: Vec<Arc<TaskHealth>>,
}

impl AmqpHandle {
    /// True while the consumer and every publisher this process runs hold a
    /// live connection (in a cluster, the others' publishers are theirs to run).
    pub fn is_connected(&self) -> bool {
        self.consumer.is_connected() && self.publishers.iter().all(|p| p.is_standby() || p.is_connected())
    }

    pub fn consumer(&self) -> &TaskHealth {
        &self.consumer
    }

    pub fn publishers(&self) -> &[Arc<TaskHealth>] {
        &self.publishers
    }

    /// Waits until `is_connected`, or `timeout` passes (false).
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        /// How often the flags are looked at while waiting.
        const POLL: Duration = Duration::from_millis(20);
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.is_connected() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
        true
    }

    /// Stops consuming and publishing and closes the connections. Unacked
    /// submissions return to the queue; unconfirmed messages are republished
    /// by the next start (their checkpoints were not advanced).
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            if let Err(error) = task.await {
                tracing::warn!(%error, "an AMQP task ended abnormally");
            }
        }
    }
}

/// Starts the submission consumer and the three publishers as tasks on the
/// current tokio runtime (inside the engine's actix system), and returns at
/// once: each task connects, declares the topology and reconnects on its own.
/// With `metrics`, the consumer counts duplicate and conflicting submissions.
pub fn start(
    config: AmqpConfig,
    submitter: Arc<dyn OrderSubmitter>,
    store: Arc<dyn EventStore>,
    clock: Arc<dyn Clock>,
    metrics: Option<Arc<Metrics>>,
) -> AmqpHandle {
    let feed = LogFeed::start(store);
    let cluster = ClusterView::standalone(Partitioning::new(1));
    start_following(config, submitter, feed, clock, metrics, cluster)
}

/// [`start`], with the publishers following a log feed the caller shares
/// (the engine's, in `serve`: one reader of the log for the whole process).
/// In a cluster every process consumes `orders.submit` and each publisher
/// runs only where its leader role is held. A submission for a partition
/// another process owns is recorded here and driven by its owner from the
/// log (`SubmitRouting::Log`), or moved to the partition's queue, which only
/// its owner consumes (`config.forward_submissions`).
pub fn start_following(
    config: AmqpConfig,
    submitter: Arc<dyn OrderSubmitter>,
    feed: LogFeed,
    clock: Arc<dyn Clock>,
    metrics: Option<Arc<Metrics>>,
    cluster: ClusterView,
) -> AmqpHandle {
    let config = Arc::new(config);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let consumer_health = TaskHealth::new("consumer orders.submit");
    let mut tasks = Vec::new();
    let forward = (config.forward_submissions && cluster.is_clustered()).then(|| cluster.clone());
    if let Some(view) = &forward {
        // Not part of readiness: a process that holds no partition consumes none of their queues.
        let consumer = SubmissionConsumer {
            config: Arc::clone(&config),
            submitter: Arc::clone(&submitter),
            clock: Arc::clone(&clock),
            health: TaskHealth::new("consumer orders.submit partitions"),
            metrics: metrics.clone(),
            forward: None,
        };
        tasks.push(tokio::spawn(consumer.run_partitions(view.clone(), shutdown_rx.clone())));
    }
    let consumer = SubmissionConsumer {
        config: Arc::clone(&config),
        submitter,
        clock,
        health: Arc::clone(&consumer_health),
        metrics,
        forward,
    };
    tasks.push(tokio::spawn(consumer.run(shutdown_rx.clone())));
    let mut publishers = Vec::new();
    for route in Route::ALL {
        let health = TaskHealth::new(route.checkpoint());
        let cluster_standby = cluster.is_clustered();
        health.set_standby(cluster_standby);
        let (config, feed, task_health) = (Arc::clone(&config), feed.clone(), Arc::clone(&health));
        tasks.push(tokio::spawn(crate::cluster::lead(
            cluster.clone(),
            route.checkpoint(),
            shutdown_rx.clone(),
            move |stop| {
                let publisher = Publisher {
                    route,
                    config: Arc::clone(&config),
                    feed: feed.clone(),
                    health: Arc::clone(&task_health),
                };
                let health = Arc::clone(&task_health);
                health.set_standby(false);
                async move {
                    publisher.run(stop).await;
                    // Stopped because the role moved (or for good, which its health says).
                    health.set_standby(cluster_standby);
                }
            },
        )));
        publishers.push(health);
    }
    AmqpHandle {
        shutdown,
        tasks,
        consumer: consumer_health,
        publishers,
    }
}
