//! Typed events to stored rows and back, with upcasting of older schema versions.
//!
//! A family of events is a serde enum tagged `{"type": .., "data": ..}`: the tag
//! is the stored event type, the data the stored payload.

use serde::de::value::MapDeserializer;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::envelope::{EventMetadata, NewEvent, RecordedEvent};
use super::payload::{write_json_string, Payload};

/// A family of events stored in one kind of stream.
pub trait EventFamily: Serialize + DeserializeOwned {
    /// The stored type name of this event.
    fn event_type(&self) -> &'static str;

    /// The schema version new events of this type are written with.
    fn schema_version(event_type: &str) -> u32;

    /// Rewrites a payload stored at `schema_version` into the current shape.
    /// Called only when the stored version is older than the current one.
    fn upcast(event_type: &str, schema_version: u32, payload: Value) -> Result<Value, UpcastError> {
        let _ = (event_type, schema_version);
        Ok(payload)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot upcast {event_type} from schema version {schema_version}: {reason}")]
pub struct UpcastError {
    pub event_type: String,
    pub schema_version: u32,
    pub reason: String,
}

impl UpcastError {
    pub fn new(event_type: &str, schema_version: u32, reason: impl Into<String>) -> Self {
        Self {
            event_type: event_type.to_owned(),
            schema_version,
            reason: reason.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("event at position {position} ({event_type} v{schema_version}) is newer than this binary understands (v{current}); upgrade the engine")]
    FutureSchema {
        position: u64,
        event_type: String,
        schema_version: u32,
        current: u32,
    },
    #[error("event at position {position}: {source}")]
    Upcast { position: u64, source: UpcastError },
    #[error("event at position {position} ({event_type}) does not match its type: {source}")]
    Shape {
        position: u64,
        event_type: String,
        source: serde_json::Error,
    },
    #[error("event cannot be serialized: {0}")]
    Encode(serde_json::Error),
}

/// Turns a typed event into an envelope ready to append.
pub fn encode<E: EventFamily>(event: &E, event_id: Uuid, metadata: EventMetadata) -> Result<NewEvent, DecodeError> {
    let event_type = event.event_type();
    let tagged = serde_json::to_value(event).map_err(DecodeError::Encode)?;
    let payload = match tagged {
        Value::Object(mut map) => map.remove("data").unwrap_or(Value::Null),
        other => other,
    };
    Ok(NewEvent {
        event_id,
        event_type: event_type.to_owned(),
        schema_version: E::schema_version(event_type),
        payload: Payload::from_value(&payload),
        metadata,
    })
}

/// Turns a stored event back into its typed form, upcasting older versions.
pub fn decode<E: EventFamily>(recorded: &RecordedEvent) -> Result<E, DecodeError> {
    let position = recorded.global_position;
    let current = E::schema_version(&recorded.event_type);
    let stored = recorded.schema_version;
    if stored > current {
        return Err(DecodeError::FutureSchema {
            position,
            event_type: recorded.event_type.clone(),
            schema_version: stored,
            current,
        });
    }
    let shape = |source| DecodeError::Shape {
        position,
        event_type: recorded.event_type.clone(),
        source,
    };
    if stored == current {
        // The common case reads the stored text straight into the typed
        // event: every reader of the log decodes every event it reads.
        return from_tagged_text(&recorded.event_type, &recorded.payload).map_err(shape);
    }
    let mut payload = recorded.payload.to_value();
    for version in stored..current {
        payload = E::upcast(&recorded.event_type, version, payload)
            .map_err(|source| DecodeError::Upcast { position, source })?;
    }
    from_tagged(&recorded.event_type, &payload).map_err(shape)
}

/// Deserializes `{"type": event_type, "data": payload}` from the payload's
/// text, with no tree in between.
fn from_tagged_text<E: DeserializeOwned>(event_type: &str, payload: &Payload) -> Result<E, serde_json::Error> {
    let data = payload.as_str();
    let mut text = String::with_capacity(event_type.len() + data.len() + 20);
    text.push_str(r#"{"type":"#);
    write_json_string(event_type, &mut text);
    text.push_str(r#","data":"#);
    text.push_str(data);
    text.push('}');
    serde_json::from_str(&text)
}

/// Deserializes `{"type": event_type, "data": payload}` without building it.
fn from_tagged<E: DeserializeOwned>(event_type: &str, payload: &Value) -> Result<E, serde_json::Error> {
    let tag = Value::String(event_type.to_owned());
    let fields = [("type", &tag), ("data", payload)];
    E::deserialize(MapDeserializer::<_, serde_json::Error>::new(fields.into_iter()))
}
