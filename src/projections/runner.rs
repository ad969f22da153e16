//! Runs a read-model projection: catch up from its checkpoint, then follow the
//! live tail, committing each batch's rows and the new checkpoint together.
//!
//! A poison event (one the projection cannot apply) stops this projection
//! only, loudly: the error names the event and the reason, and the health
//! record (read by /health/ready and the metrics) carries it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use super::feed::LogFeed;
use super::order_rows::{order_row_change_of, OrderRowChange};
use super::read_models::ReadModels;
use crate::events::RecordedEvent;
use crate::telemetry::metrics::Metrics;

/// The `orders` read model's projection name (and checkpoint name).
pub const ORDERS_PROJECTION: &str = "projection.orders";
/// Wait before retrying after the database failed under a projection.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// What a projection reports about itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProjectionState {
    /// The last position applied.
    pub position: u64,
    /// The log's head when last looked at.
    pub head: u64,
    /// How far behind the newest event applied is, when behind at all.
    pub lag_seconds: f64,
    /// Why the projection stopped, when it did.
    pub failed: Option<String>,
}

impl ProjectionState {
    pub fn lag_events(&self) -> u64 {
        self.head.saturating_sub(self.position)
    }
}

/// Shared, cheap-to-read health of one projection.
#[derive(Debug, Default)]
pub struct ProjectionHealth {
    state: Mutex<ProjectionState>,
}

impl ProjectionHealth {
    pub fn snapshot(&self) -> ProjectionState {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn update(&self, f: impl FnOnce(&mut ProjectionState)) {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner));
    }
}

/// Names an event a follower of the log stops on: its id, position, type,
/// schema version and stream, what could not be done with it, and why.
pub fn describe_poison(event: &RecordedEvent, what: &str, reason: &str) -> String {
    format!(
        "event {} at position {} ({} v{} on {}) cannot be {what}: {reason}",
        event.event_id, event.global_position, event.event_type, event.schema_version, event.stream_id
    )
}

/// Waits `RETRY_DELAY` before a follower of the log retries; true when
/// shutdown came first. Shared with the audit follower (`controls::audit`).
pub async fn pause_or_shutdown(shutdown: &mut watch::Receiver<bool>) -> bool {
    if *shutdown.borrow() {
        return true;
    }
    tokio::select! {
        _ = shutdown.changed() => true,
        () = tokio::time::sleep(RETRY_DELAY) => false,
    }
}

/// Runs the `orders` projection until `shutdown` or a poison event.
pub async fn run_orders_projection(
    feed: LogFeed,
    models: Arc<dyn ReadModels>,
    health: Arc<ProjectionHealth>,
    metrics: Option<Arc<Metrics>>,
    mut shutdown: watch::Receiver<bool>,
) {
    'restart: loop {
        let checkpoint = tokio::select! {
            _ = shutdown.changed() => return,
            checkpoint = models.checkpoint(ORDERS_PROJECTION) => checkpoint,
        };
        let from = match checkpoint {
            Ok(position) => position,
            Err(error) => {
                tracing::warn!(%error, "orders projection cannot read its checkpoint; retrying");
                // Every retry hears shutdown: a database gone for good must not hold the process.
                if pause_or_shutdown(&mut shutdown).await {
                    return;
                }
                continue;
            }
        };
        health.update(|s| s.position = from);
        let mut tail = feed.follow(from);
        let mut committed = from;
        loop {
            let batch = tokio::select! {
                _ = shutdown.changed() => return,
                batch = tail.next_batch() => batch,
            };
            let batch = match batch {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::warn!(%error, "orders projection cannot read the log; retrying");
                    if pause_or_shutdown(&mut shutdown).await {
                        return;
                    }
                    continue 'restart;
                }
            };
            let mut changes = Vec::with_capacity(batch.len());
            for event in &batch {
                match event.order_event() {
                    Some(Ok(order_event)) => changes.extend(order_row_change_of(&event.recorded, order_event)),
                    None => {}
                    Some(Err(error)) => {
                        let reason = describe_poison(&event.recorded, "projected", &error.to_string());
                        tracing::error!(projection = ORDERS_PROJECTION, %reason, "projection stopped");
                        health.update(|s| s.failed = Some(reason));
                        return;
                    }
                }
            }
            if let Err(error) = models
                .commit(ORDERS_PROJECTION, &changes, committed, tail.position())
                .await
            {
                if error.is_transient() {
                    tracing::warn!(%error, "orders projection could not commit; retrying from its checkpoint");
                    if pause_or_shutdown(&mut shutdown).await {
                        return;
                    }
                    continue 'restart;
                }
                // The batch holds the culprit; name the batch's range so an operator can look.
                let (first, last) = (batch.first(), batch.last());
                let reason = format!(
                    "rows for positions {}..={} were refused by the database: {error}",
                    first.map_or(0, |e| e.recorded.global_position),
                    last.map_or(0, |e| e.recorded.global_position)
                );
                tracing::error!(projection = ORDERS_PROJECTION, %reason, "projection stopped");
                health.update(|s| s.failed = Some(reason));
                return;
            }
            committed = tail.position();
            if let Some(metrics) = &metrics {
                // Counted after the commit, once per status an order reaches.
                for change in &changes {
                    let status = match change {
                        OrderRowChange::Insert(row) => Some(row.status),
                        OrderRowChange::Update { status, .. } => *status,
                    };
                    if let Some(status) = status {
                        metrics.count_order(status.as_str());
                    }
                }
            }
            // The feed's position is the head as of its last page: no query
            // per batch. Only when the feed is not reading is the log asked.
            let head = match feed.read_up_to() {
                Some(at) => at,
                None => feed.store().head_position().await.unwrap_or(tail.position()),
            };
            let newest: Option<DateTime<Utc>> = batch.last().map(|e| e.recorded.recorded_at);
            health.update(|s| {
                s.position = tail.position();
                s.head = head.max(tail.position());
                s.lag_seconds = match newest {
                    Some(at) if head > tail.position() => (Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0,
                    _ => 0.0,
                };
            });
        }
    }
}
