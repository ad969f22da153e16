//! AUDIT_EVENT log lines (seed 001): one structured line for every order
//! accepted, refused, cancelled, executed or failed, for the security
//! team's log queries.
//!
//! Where each outcome is seen, once:
//! - **accepted, cancelled, executed, failed** come from the log, through
//!   [`run_audit_log`], a follower of the engine's feed: every order has one
//!   `OrderSubmitted` and at most one terminal event whatever door it came
//!   in by (HTTP, gRPC, RabbitMQ), whoever ended it (the user, an operator,
//!   the saga, the market), and an idempotent retry appends nothing. A front
//!   door would see retries twice and never see an execution.
//! - **refused** comes from the doors, because a refusal appends nothing:
//!   `api::commands::submit` (HTTP and gRPC share it) and the RabbitMQ
//!   consumer (`OrderRejected`, and submissions it cannot read).
//!
//! Must never log a secret: a line holds ids, the order's terms, the door,
//! who acted (`user:<id>`, `service:<identity> for user:<id>`) and a reason
//! written by the engine, never a header, token, key or request body.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use tokio::sync::watch;
use uuid::Uuid;

use crate::order::{OrderEvent, OrderType, Side};
use crate::projections::{pause_or_shutdown, FeedEvent, LogFeed, ReadModels};
use crate::store::{EventStore, StoreError};

/// The message every audit line carries, what log queries search for.
pub const AUDIT_EVENT: &str = "AUDIT_EVENT";
/// The tracing target of audit lines, so they can be routed on their own.
pub const AUDIT_TARGET: &str = "order_engine::audit";
/// The follower's checkpoint name in the log's checkpoint table.
pub const AUDIT_CHECKPOINT: &str = "audit_log";
/// Orders whose owner the follower remembers between their submission and
/// their end (a terminal event of an order it forgot asks the read model).
pub const OWNERS_REMEMBERED_MAX: usize = 100_000;

/// What happened to the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditOutcome {
    /// In the log: it passed every check at the door.
    Accepted,
    /// Refused at the door; nothing was appended.
    Refused,
    Cancelled,
    Executed,
    /// Accepted, then ended by the saga (funds refused, account not allowed, …).
    Failed,
}

impl AuditOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Refused => "refused",
            Self::Cancelled => "cancelled",
            Self::Executed => "executed",
            Self::Failed => "failed",
        }
    }
}

/// One audit line's fields; what is not known is left out of the line.
#[derive(Debug, Clone, Default)]
pub struct AuditRecord<'a> {
    pub order_id: Option<Uuid>,
    pub user_id: Option<Uuid>,
    pub symbol: Option<&'a str>,
    pub side: Option<Side>,
    pub order_type: Option<OrderType>,
    pub quantity: Option<Decimal>,
    /// The limit or execution price, when there is one.
    pub price: Option<Decimal>,
    /// The door: `http`, `grpc`, `amqp`, or the engine's own (`saga`…).
    pub source: Option<&'a str>,
    /// Who acted, as the event metadata says (`user:<id>`, `service:<identity> for user:<id>`).
    pub who: Option<&'a str>,
    /// Why it was refused, cancelled or failed (a slug or the engine's reason).
    pub reason: Option<&'a str>,
    /// When it happened (the event's time; now for a refusal).
    pub at: Option<DateTime<Utc>>,
    /// The log position of the event, for outcomes read from the log.
    pub position: Option<u64>,
}

/// Writes one AUDIT_EVENT line.
pub fn emit(outcome: AuditOutcome, record: &AuditRecord<'_>) {
    tracing::info!(
        target: AUDIT_TARGET,
        audit = outcome.as_str(),
        order_id = shown(record.order_id),
        user_id = shown(record.user_id),
        symbol = record.symbol,
        side = shown(record.side),
        order_type = shown(record.order_type),
        quantity = shown(record.quantity),
        price = shown(record.price),
        source = record.source,
        who = record.who,
        reason = record.reason,
        at = shown(record.at),
        position = record.position,
        "{AUDIT_EVENT}"
    );
}

/// A field shown with `Display` when known, left out of the line when not.
fn shown<T: std::fmt::Display>(value: Option<T>) -> Option<tracing::field::DisplayValue<T>> {
    value.map(tracing::field::display)
}

/// Where the follower starts: its checkpoint, or on a first start (no
/// checkpoint) the head, saved at once so a restart resumes there rather
/// than at a later head. The history before a first start is the log's own
/// audit trail (`order-engine audit`), not a burst of old lines.
pub async fn start_position(store: &dyn EventStore) -> Result<u64, StoreError> {
    match store.load_checkpoint(AUDIT_CHECKPOINT).await? {
        0 => {
            let head = store.head_position().await?;
            if head > 0 {
                store.save_checkpoint(AUDIT_CHECKPOINT, head).await?;
            }
            Ok(head)
        }
        position => Ok(position),
    }
}

/// Follows the log from `start` (from [`start_position`], read by the caller
/// before it serves, so an order accepted as the server opens is not behind
/// the follower's starting point; None: read it here) and writes a line for
/// each order's submission and end, until `shutdown`. Lines are written
/// before the checkpoint moves, so a crash repeats a few, never skips.
pub async fn run_audit_log(
    feed: LogFeed,
    store: Arc<dyn EventStore>,
    models: Arc<dyn ReadModels>,
    mut start: Option<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut owners = Owners::default();
    'restart: loop {
        let from = match start.take() {
            Some(from) => Ok(from),
            None => tokio::select! {
                _ = shutdown.changed() => return,
                from = start_position(store.as_ref()) => from,
            },
        };
        let from = match from {
            Ok(from) => from,
            Err(error) => {
                tracing::warn!(%error, "the audit log cannot read its checkpoint; retrying");
                if pause_or_shutdown(&mut shutdown).await {
                    return;
                }
                continue;
            }
        };
        let mut tail = feed.follow(from);
        loop {
            let batch = tokio::select! {
                _ = shutdown.changed() => return,
                batch = tail.next_batch() => batch,
            };
            let batch = match batch {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::warn!(%error, "the audit log cannot read the log; retrying");
                    if pause_or_shutdown(&mut shutdown).await {
                        return;
                    }
                    continue 'restart;
                }
            };
            for event in &batch {
                audit_event(event, &mut owners, models.as_ref()).await;
            }
            if let Err(error) = store.save_checkpoint(AUDIT_CHECKPOINT, tail.position()).await {
                // The next save covers these too; a restart before it repeats their lines.
                tracing::warn!(%error, "the audit log cannot save its checkpoint");
            }
        }
    }
}

/// The owner and terms of the orders between submission and end, bounded.
#[derive(Default)]
struct Owners {
    orders: HashMap<Uuid, Owner>,
}

#[derive(Clone)]
struct Owner {
    user_id: Uuid,
    symbol: String,
    side: Side,
    order_type: OrderType,
}

impl Owners {
    fn remember(&mut self, order_id: Uuid, owner: Owner) {
        if self.orders.len() >= OWNERS_REMEMBERED_MAX {
            // Any one will do: a forgotten order's end asks the read model.
            if let Some(evicted) = self.orders.keys().next().copied() {
                self.orders.remove(&evicted);
            }
        }
        self.orders.insert(order_id, owner);
    }

    /// The owner of an order that just ended, forgotten from here on.
    async fn take(&mut self, order_id: Uuid, models: &dyn ReadModels) -> Option<Owner> {
        if let Some(owner) = self.orders.remove(&order_id) {
            return Some(owner);
        }
        match models.order(order_id).await {
            Ok(Some(row)) => Some(Owner {
                user_id: row.user_id,
                symbol: row.symbol,
                side: row.order_side,
                order_type: row.order_type,
            }),
            _ => None,
        }
    }
}

async fn audit_event(event: &FeedEvent, owners: &mut Owners, models: &dyn ReadModels) {
    let Some(Ok(order_event)) = event.order_event() else {
        return;
    };
    let recorded = &event.recorded;
    let Some(order_id) = recorded.stream_id.uuid_in("order") else {
        return;
    };
    let metadata = &recorded.metadata;
    let base = AuditRecord {
        order_id: Some(order_id),
        source: metadata.source.as_deref(),
        who: metadata.who.as_deref(),
        at: Some(order_event.at()),
        position: Some(recorded.global_position),
        ..AuditRecord::default()
    };
    let (outcome, price, reason) = match order_event {
        OrderEvent::OrderSubmitted(submitted) => {
            owners.remember(
                order_id,
                Owner {
                    user_id: submitted.user_id,
                    symbol: submitted.symbol.as_str().to_owned(),
                    side: submitted.side,
                    order_type: submitted.order_type,
                },
            );
            emit(
                AuditOutcome::Accepted,
                &AuditRecord {
                    user_id: Some(submitted.user_id),
                    symbol: Some(submitted.symbol.as_str()),
                    side: Some(submitted.side),
                    order_type: Some(submitted.order_type),
                    quantity: Some(submitted.quantity),
                    price: submitted.limit_price.or(submitted.stop_price),
                    ..base
                },
            );
            return;
        }
        OrderEvent::OrderExecuted(executed) => (AuditOutcome::Executed, Some(executed.execution_price), None),
        OrderEvent::OrderCancelled(cancelled) => (AuditOutcome::Cancelled, None, Some(cancelled.reason.as_str())),
        OrderEvent::OrderFailed(failed) => (AuditOutcome::Failed, None, Some(failed.reason.as_str())),
        OrderEvent::OrderAccepted(_) | OrderEvent::OrderTriggered(_) => return,
    };
    let owner = owners.take(order_id, models).await;
    let quantity = match order_event {
        OrderEvent::OrderExecuted(executed) => Some(executed.quantity),
        _ => None,
    };
    emit(
        outcome,
        &AuditRecord {
            user_id: owner.as_ref().map(|o| o.user_id),
            symbol: owner.as_ref().map(|o| o.symbol.as_str()),
            side: owner.as_ref().map(|o| o.side),
            order_type: owner.as_ref().map(|o| o.order_type),
            quantity,
            price,
            reason,
            ..base
        },
    );
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;
    use std::sync::Mutex;

    use super::*;

    /// Collects what a subscriber writes, for tests that read log lines.
    #[derive(Clone, Default)]
    pub(crate) struct Captured(pub Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        pub(crate) fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// Runs `f` with a JSON subscriber writing into the returned buffer.
    pub(crate) fn capture(f: impl FnOnce()) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        captured.text()
    }

    #[test]
    fn an_audit_event_is_one_structured_line_with_only_what_is_known() {
        // Proves the line's shape: one JSON line, AUDIT_EVENT as its message, each known field
        // as a field, unknown ones absent.
        let order = Uuid::from_u128(7);
        let text = capture(|| {
            emit(
                AuditOutcome::Refused,
                &AuditRecord {
                    order_id: Some(order),
                    symbol: Some("AAPL"),
                    side: Some(Side::Buy),
                    quantity: Some(Decimal::new(15, 1)),
                    source: Some("http"),
                    reason: Some("idempotency-unavailable"),
                    ..AuditRecord::default()
                },
            );
        });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let line: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(line["target"], AUDIT_TARGET);
        let fields = &line["fields"];
        assert_eq!(fields["message"], AUDIT_EVENT);
        assert_eq!(fields["audit"], "refused");
        assert_eq!(fields["order_id"], order.to_string());
        assert_eq!(fields["side"], "BUY");
        assert_eq!(fields["quantity"], "1.5");
        assert_eq!(fields["reason"], "idempotency-unavailable");
        assert!(
            fields.get("user_id").is_none() && fields.get("price").is_none(),
            "{fields}"
        );
    }
}
