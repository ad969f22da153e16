//! An order's whole story from the log: the failed tries of its submission,
//! its events, its saga's steps, the ledger entries it caused and what the
//! pre-trade controls recorded of it (its count, anomalies, a hold), in log order. Read-only; used by the HTTP audit
//! route and the operator's `audit` command.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::events::{decode, RecordedEvent, StreamId};
use crate::order::OrderEvent;
use crate::store::{read_stream_all, EventStore, StoreError};

/// One line of an order's story.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    pub global_position: u64,
    /// `submission`, `order`, `saga`, `ledger` or `controls` (the user's trading day).
    pub source: &'static str,
    pub stream_id: String,
    pub stream_version: u64,
    pub event_id: Uuid,
    pub event_type: String,
    pub recorded_at: DateTime<Utc>,
    pub correlation_id: Option<Uuid>,
    pub causation_id: Option<Uuid>,
    pub who: Option<String>,
    pub data: serde_json::Value,
}

fn entry(source: &'static str, event: RecordedEvent) -> AuditEntry {
    AuditEntry {
        global_position: event.global_position,
        source,
        stream_id: event.stream_id.to_string(),
        stream_version: event.stream_version,
        event_id: event.event_id,
        event_type: event.event_type,
        recorded_at: event.recorded_at,
        correlation_id: event.metadata.correlation_id,
        causation_id: event.metadata.causation_id,
        who: event.metadata.who,
        data: event.payload.to_value(),
    }
}

/// The story of `order_id`, or None when the log holds nothing of it. An
/// order whose submission failed every try (and was dead-lettered) has a story
/// of failed tries alone.
pub async fn order_story(store: &dyn EventStore, order_id: Uuid) -> Result<Option<Vec<AuditEntry>>, StoreError> {
    let tries: Vec<AuditEntry> = read_stream_all(store, &StreamId::submission(order_id), 1)
        .await?
        .into_iter()
        .map(|e| entry("submission", e))
        .collect();
    let order_events = read_stream_all(store, &StreamId::order(order_id), 1).await?;
    let Some(first) = order_events.first() else {
        return Ok((!tries.is_empty()).then_some(tries));
    };
    let submitted = match decode::<OrderEvent>(first) {
        Ok(OrderEvent::OrderSubmitted(submitted)) => Some((submitted.user_id, submitted.submitted_at)),
        _ => None,
    };
    let user_id = submitted.map(|(user_id, _)| user_id);
    let mut story = tries;
    story.extend(order_events.into_iter().map(|e| entry("order", e)));
    story.extend(
        read_stream_all(store, &StreamId::saga(order_id), 1)
            .await?
            .into_iter()
            .map(|e| entry("saga", e)),
    );
    if let Some(user_id) = user_id {
        // Ledger entries name the order they are for; the account's other entries are not this story.
        let order = serde_json::Value::String(order_id.to_string());
        story.extend(
            read_stream_all(store, &StreamId::account(user_id), 1)
                .await?
                .into_iter()
                .filter(|e| e.payload.to_value().get("order_id") == Some(&order))
                .map(|e| entry("ledger", e)),
        );
    }
    if let Some((user_id, submitted_at)) = submitted {
        // The pre-trade controls' count, anomalies and hold for this order, on
        // its user's trading day: whatever the exchange's zone and reset time,
        // that day is within two days before and one after the UTC date.
        let order = serde_json::Value::String(order_id.to_string());
        let date = submitted_at.date_naive();
        for offset in -2..=1 {
            let day = date + chrono::TimeDelta::days(offset);
            story.extend(
                read_stream_all(store, &StreamId::trading_day(user_id, day), 1)
                    .await?
                    .into_iter()
                    .filter(|e| e.payload.to_value().get("order_id") == Some(&order))
                    .map(|e| entry("controls", e)),
            );
        }
    }
    story.sort_by_key(|e| e.global_position);
    Ok(Some(story))
}

/// The story as a fixed-width table for a terminal, one event a line.
pub fn render_table(order_id: Uuid, story: &[AuditEntry]) -> String {
    let mut out = format!("order {order_id}: {} events\n", story.len());
    out.push_str(&format!(
        "{:>8}  {:<30}  {:<10}  {:<23}  {:>3}  {:<36}  {}\n",
        "POSITION", "RECORDED AT (UTC)", "SOURCE", "EVENT", "VER", "CAUSATION", "DATA"
    ));
    for entry in story {
        out.push_str(&format!(
            "{:>8}  {:<30}  {:<10}  {:<23}  {:>3}  {:<36}  {}\n",
            entry.global_position,
            entry.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            entry.source,
            entry.event_type,
            entry.stream_version,
            entry
                .causation_id
                .map(|id| id.to_string())
                .unwrap_or_else(|| "-".into()),
            entry.data
        ));
    }
    out
}
