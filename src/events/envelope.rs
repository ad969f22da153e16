//! The envelope around every event: identity, position, type, schema version,
//! payload and metadata.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::payload::Payload;
use super::stream_id::StreamId;

/// W3C trace context of the request that caused an event.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TraceContext {
    pub traceparent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

/// Who and what caused an event; stored beside the payload, never inside it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EventMetadata {
    /// Ties together everything one request or message set off (the order id by default).
    pub correlation_id: Option<Uuid>,
    /// The message, command or event that directly caused this one.
    pub causation_id: Option<Uuid>,
    /// The user or service identity on whose behalf it happened.
    pub who: Option<String>,
    /// The entry point: `http`, `amqp`, `saga`, `market`, `operator`.
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceContext>,
}

/// An event ready to append: everything but what the store assigns.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: u32,
    pub payload: Payload,
    pub metadata: EventMetadata,
}

/// An event as stored in the log.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    /// Position in the whole log: dense from 1, in commit order.
    pub global_position: u64,
    pub stream_id: StreamId,
    /// Position in its stream: dense from 1.
    pub stream_version: u64,
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: u32,
    pub payload: Payload,
    pub metadata: EventMetadata,
    /// The command whose handling appended this event, for idempotent retries.
    pub command_id: Option<Uuid>,
    pub recorded_at: DateTime<Utc>,
}
