//! Tamper evidence for the log: every event carries two SHA-256 hashes.
//!
//! - its *stream hash* chains it to the previous event of its stream, over
//!   everything the event says (all fields but its global position);
//! - its *log hash* chains it to the previous event of the whole log, over its
//!   position and its stream hash.
//!
//! An event changed, removed or moved behind the engine's back (with the
//! append-only trigger disabled) breaks a link that [`ChainVerifier`] finds.
//! The chain carries no secret: someone who rewrites every later hash too is
//! caught only by comparing the head hash with one recorded elsewhere, which
//! is why `verify` prints it.
//!
//! Pure: the store computes hashes while planning an append and keeps them in
//! two columns beside the event; nothing here does I/O.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::events::{write_json_string as write_string, EventMetadata, Payload, RecordedEvent, StreamId};

/// Domain separators: a stream hash can never be mistaken for a log hash.
const STREAM_DOMAIN: &[u8] = b"order-engine/stream/v1\0";
const LOG_DOMAIN: &[u8] = b"order-engine/log/v1\0";

/// A SHA-256 digest, shown as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventHash(pub [u8; 32]);

impl EventHash {
    /// What the first event of a stream (or of the log) chains to.
    pub const GENESIS: EventHash = EventHash([0; 32]);

    /// Reads a hash stored as raw bytes; anything but 32 bytes is corrupt.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(Self)
    }
}

impl fmt::Display for EventHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for EventHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventHash({self})")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("an event hash is 64 hex digits, got {0:?}")]
pub struct ParseHashError(String);

impl FromStr for EventHash {
    type Err = ParseHashError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0_u8; 32];
        hex::decode_to_slice(text, &mut bytes).map_err(|_| ParseHashError(text.to_owned()))?;
        Ok(Self(bytes))
    }
}

impl Serialize for EventHash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EventHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// An event with the hashes stored beside it. `None`: written before the
/// chain existed (migration 0004), or the hash column was blanked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainedEvent {
    #[serde(flatten, with = "recorded")]
    pub event: RecordedEvent,
    pub stream_hash: Option<EventHash>,
    pub log_hash: Option<EventHash>,
}

/// One event as a backend writes it, from an append's plan or an import:
/// the fields its stream hash covers, plus its position and hashes.
pub(crate) struct EventRow<'a> {
    pub position: u64,
    pub stream_id: &'a StreamId,
    pub version: u64,
    pub event_id: Uuid,
    pub event_type: &'a str,
    pub schema_version: u32,
    pub payload: &'a Payload,
    pub metadata: &'a EventMetadata,
    pub command_id: Option<Uuid>,
    pub recorded_at: DateTime<Utc>,
    pub stream_hash: Option<EventHash>,
    pub log_hash: Option<EventHash>,
}

impl<'a> EventRow<'a> {
    fn of(event: &'a RecordedEvent, stream_hash: Option<EventHash>, log_hash: Option<EventHash>) -> Self {
        Self {
            position: event.global_position,
            stream_id: &event.stream_id,
            version: event.stream_version,
            event_id: event.event_id,
            event_type: &event.event_type,
            schema_version: event.schema_version,
            payload: &event.payload,
            metadata: &event.metadata,
            command_id: event.command_id,
            recorded_at: event.recorded_at,
            stream_hash,
            log_hash,
        }
    }
}

impl EventRow<'_> {
    /// The stored event this row becomes, hashes included.
    pub(crate) fn to_chained(&self) -> ChainedEvent {
        ChainedEvent {
            event: RecordedEvent {
                global_position: self.position,
                stream_id: self.stream_id.clone(),
                stream_version: self.version,
                event_id: self.event_id,
                event_type: self.event_type.to_owned(),
                schema_version: self.schema_version,
                payload: self.payload.clone(),
                metadata: self.metadata.clone(),
                command_id: self.command_id,
                recorded_at: self.recorded_at,
            },
            stream_hash: self.stream_hash,
            log_hash: self.log_hash,
        }
    }
}

impl<'a> From<&'a ChainedEvent> for EventRow<'a> {
    fn from(chained: &'a ChainedEvent) -> Self {
        Self::of(&chained.event, chained.stream_hash, chained.log_hash)
    }
}

/// The stream hash of `event`, chained to its stream's previous hash.
pub fn stream_link(previous: &EventHash, event: &RecordedEvent) -> EventHash {
    link_fields(previous, &EventRow::of(event, None, None))
}

/// The stream hash of `fields`; its position and stored hashes are not covered.
pub(crate) fn link_fields(previous: &EventHash, fields: &EventRow<'_>) -> EventHash {
    // The canonical form of the array [stream id, version, event id, type,
    // schema version, payload, metadata, command id, time], written straight
    // out: appends hash every event, and a payload the engine made is
    // canonical text already, hashed as it is.
    let mut canonical = String::with_capacity(256);
    canonical.push('[');
    write_string(fields.stream_id.as_str(), &mut canonical);
    canonical.push_str(&format!(",{},", fields.version));
    write_string(&fields.event_id.to_string(), &mut canonical);
    canonical.push(',');
    write_string(fields.event_type, &mut canonical);
    canonical.push_str(&format!(",{},", fields.schema_version));
    fields.payload.write_canonical_to(&mut canonical);
    canonical.push(',');
    write_metadata(fields.metadata, &mut canonical);
    canonical.push(',');
    match fields.command_id {
        Some(command_id) => write_string(&command_id.to_string(), &mut canonical),
        None => canonical.push_str("null"),
    }
    canonical.push(',');
    write_string(&timestamp(fields.recorded_at), &mut canonical);
    canonical.push(']');
    let mut hasher = Sha256::new();
    hasher.update(STREAM_DOMAIN);
    hasher.update(previous.0);
    hasher.update(canonical.as_bytes());
    EventHash(hasher.finalize().into())
}

/// The canonical JSON of `metadata` (keys sorted, `null` for an absent
/// field, `trace` and `tracestate` left out when absent, as its serde form
/// has them), written field by field: it is hashed as the engine reads it
/// (decoded, re-encoded), so a backend's JSON storage format cannot change
/// it, and every append hashes one per event.
fn write_metadata(metadata: &EventMetadata, out: &mut String) {
    fn uuid(id: Option<uuid::Uuid>, out: &mut String) {
        match id {
            Some(id) => write_string(&id.to_string(), out),
            None => out.push_str("null"),
        }
    }
    fn text(value: Option<&str>, out: &mut String) {
        match value {
            Some(value) => write_string(value, out),
            None => out.push_str("null"),
        }
    }
    out.push_str(r#"{"causation_id":"#);
    uuid(metadata.causation_id, out);
    out.push_str(r#","correlation_id":"#);
    uuid(metadata.correlation_id, out);
    out.push_str(r#","source":"#);
    text(metadata.source.as_deref(), out);
    if let Some(trace) = &metadata.trace {
        out.push_str(r#","trace":{"traceparent":"#);
        write_string(&trace.traceparent, out);
        if let Some(tracestate) = &trace.tracestate {
            out.push_str(r#","tracestate":"#);
            write_string(tracestate, out);
        }
        out.push('}');
    }
    out.push_str(r#","who":"#);
    text(metadata.who.as_deref(), out);
    out.push('}');
}

/// The log hash of the event at `global_position`, chained to the previous event's.
pub fn log_link(previous: &EventHash, global_position: u64, stream_hash: &EventHash) -> EventHash {
    let mut hasher = Sha256::new();
    hasher.update(LOG_DOMAIN);
    hasher.update(previous.0);
    hasher.update(global_position.to_be_bytes());
    hasher.update(stream_hash.0);
    EventHash(hasher.finalize().into())
}

/// Microseconds: what every backend stores, so a hash survives a round trip.
fn timestamp(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Drops what a database cannot keep (below a microsecond), so the time
/// hashed at append is the time read back.
pub(crate) fn storable_time(at: DateTime<Utc>) -> DateTime<Utc> {
    let micros = at.timestamp_micros();
    DateTime::from_timestamp_micros(micros).unwrap_or(at)
}

/// What is wrong with the log, found by [`ChainVerifier`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainViolation {
    #[error("position {found} follows position {previous}: events between them are missing or moved")]
    PositionGap { previous: u64, found: u64 },
    #[error("stream {stream} has version {found} at position {position} where version {expected} was due: an event is missing or moved")]
    VersionGap {
        stream: StreamId,
        expected: u64,
        found: u64,
        position: u64,
    },
    #[error("event at position {position} ({stream} version {version}) does not match its stream hash: it was modified after it was appended")]
    StreamHashMismatch {
        position: u64,
        stream: StreamId,
        version: u64,
    },
    #[error("event at position {position} does not match its log hash: an event at or before it was modified, removed or reordered")]
    LogHashMismatch { position: u64 },
    #[error("event at position {position} has no hash although earlier events have: its hashes were removed")]
    Unhashed { position: u64 },
}

/// How far a verification got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainSummary {
    pub events: u64,
    /// Events written before the chain existed (a prefix of the log).
    pub unhashed_prefix: u64,
    pub streams: u64,
    pub head_position: u64,
    /// Record it outside the database: a log truncated or rewritten from
    /// some point on can only be told from the original by this value.
    pub head_log_hash: Option<EventHash>,
}

/// Checks the log's events, fed in position order from position 1.
///
/// Keeps one entry per stream (its version and last hash), so its memory
/// grows with the number of streams, not of events.
#[derive(Debug, Default)]
pub struct ChainVerifier {
    last_position: u64,
    log_hash: Option<EventHash>,
    hashed_seen: bool,
    events: u64,
    unhashed_prefix: u64,
    streams: HashMap<StreamId, (u64, Option<EventHash>)>,
}

impl ChainVerifier {
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks one event against everything before it.
    pub fn check(&mut self, chained: &ChainedEvent) -> Vec<ChainViolation> {
        let mut violations = Vec::new();
        let event = &chained.event;
        let position = event.global_position;
        if position != self.last_position + 1 {
            violations.push(ChainViolation::PositionGap {
                previous: self.last_position,
                found: position,
            });
        }
        self.last_position = position;
        self.events += 1;

        let (previous_version, previous_hash) = self.streams.get(&event.stream_id).copied().unwrap_or((0, None));
        if event.stream_version != previous_version + 1 {
            violations.push(ChainViolation::VersionGap {
                stream: event.stream_id.clone(),
                expected: previous_version + 1,
                found: event.stream_version,
                position,
            });
        }

        match (chained.stream_hash, chained.log_hash) {
            (Some(stream_hash), Some(log_hash)) => {
                self.hashed_seen = true;
                if stream_link(&previous_hash.unwrap_or(EventHash::GENESIS), event) != stream_hash {
                    violations.push(ChainViolation::StreamHashMismatch {
                        position,
                        stream: event.stream_id.clone(),
                        version: event.stream_version,
                    });
                }
                let previous_log = self.log_hash.unwrap_or(EventHash::GENESIS);
                if log_link(&previous_log, position, &stream_hash) != log_hash {
                    violations.push(ChainViolation::LogHashMismatch { position });
                }
                // Carry the stored hashes on: one tampered event is reported
                // once, not again at every later event.
                self.log_hash = Some(log_hash);
                self.streams
                    .insert(event.stream_id.clone(), (event.stream_version, Some(stream_hash)));
            }
            _ => {
                if self.hashed_seen {
                    violations.push(ChainViolation::Unhashed { position });
                } else {
                    self.unhashed_prefix += 1;
                }
                self.log_hash = None;
                self.streams
                    .insert(event.stream_id.clone(), (event.stream_version, None));
            }
        }
        violations
    }

    pub fn finish(self) -> ChainSummary {
        ChainSummary {
            events: self.events,
            unhashed_prefix: self.unhashed_prefix,
            streams: self.streams.len() as u64,
            head_position: self.last_position,
            head_log_hash: self.log_hash,
        }
    }
}

/// The JSON-lines shape of a recorded event: its fields, flat.
mod recorded {
    use super::*;

    #[derive(Serialize, Deserialize)]
    struct Flat {
        global_position: u64,
        stream_id: StreamId,
        stream_version: u64,
        event_id: Uuid,
        event_type: String,
        schema_version: u32,
        payload: Value,
        metadata: EventMetadata,
        command_id: Option<Uuid>,
        recorded_at: DateTime<Utc>,
    }

    pub fn serialize<S: Serializer>(event: &RecordedEvent, serializer: S) -> Result<S::Ok, S::Error> {
        Flat {
            global_position: event.global_position,
            stream_id: event.stream_id.clone(),
            stream_version: event.stream_version,
            event_id: event.event_id,
            event_type: event.event_type.clone(),
            schema_version: event.schema_version,
            payload: event.payload.to_value(),
            metadata: event.metadata.clone(),
            command_id: event.command_id,
            recorded_at: event.recorded_at,
        }
        .serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<RecordedEvent, D::Error> {
        let flat = Flat::deserialize(deserializer)?;
        Ok(RecordedEvent {
            global_position: flat.global_position,
            stream_id: flat.stream_id,
            stream_version: flat.stream_version,
            event_id: flat.event_id,
            event_type: flat.event_type,
            schema_version: flat.schema_version,
            payload: Payload::from_value(&flat.payload),
            metadata: flat.metadata,
            command_id: flat.command_id,
            recorded_at: flat.recorded_at,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::events::{write_canonical, TraceContext};

    fn event(stream: &str, version: u64, position: u64, payload: impl Into<Payload>) -> RecordedEvent {
        RecordedEvent {
            global_position: position,
            stream_id: StreamId::new(stream).unwrap(),
            stream_version: version,
            event_id: Uuid::from_u128(u128::from(position)),
            event_type: "Tested".into(),
            schema_version: 1,
            payload: payload.into(),
            metadata: EventMetadata::default(),
            command_id: None,
            recorded_at: DateTime::from_timestamp(1_700_000_000, 123_456_000).unwrap(),
        }
    }

    /// Chains `events` the way the store does at append.
    fn chain(events: Vec<RecordedEvent>) -> Vec<ChainedEvent> {
        let mut streams: HashMap<StreamId, EventHash> = HashMap::new();
        let mut log = EventHash::GENESIS;
        events
            .into_iter()
            .map(|event| {
                let previous = streams.get(&event.stream_id).copied().unwrap_or(EventHash::GENESIS);
                let stream_hash = stream_link(&previous, &event);
                log = log_link(&log, event.global_position, &stream_hash);
                streams.insert(event.stream_id.clone(), stream_hash);
                ChainedEvent {
                    event,
                    stream_hash: Some(stream_hash),
                    log_hash: Some(log),
                }
            })
            .collect()
    }

    fn healthy_log() -> Vec<ChainedEvent> {
        chain(vec![
            event("a", 1, 1, serde_json::json!({"n": 1})),
            event("b", 1, 2, serde_json::json!({"n": 2})),
            event("a", 2, 3, serde_json::json!({"n": 3})),
            event("b", 2, 4, serde_json::json!({"n": 4})),
        ])
    }

    fn violations(log: &[ChainedEvent]) -> Vec<ChainViolation> {
        let mut verifier = ChainVerifier::new();
        log.iter().flat_map(|e| verifier.check(e)).collect()
    }

    #[test]
    fn the_hash_of_an_event_is_pinned() {
        // Proves the hashed form does not drift between releases: a change here
        // would make every stored log fail verification. The value was checked
        // outside Rust: sha256(b"order-engine/stream/v1\0" + 32 zero bytes +
        // json.dumps(record, sort_keys=True, separators=(",", ":"))) in Python.
        let hash = stream_link(
            &EventHash::GENESIS,
            &event("a", 1, 1, serde_json::json!({"b": "1.50", "a": [1, 2]})),
        );
        assert_eq!(
            hash.to_string(),
            "6aa9946a19a4771352e2f63f653dfcf5539b3d6221faa48986daaaa1a49f4af3"
        );
    }

    #[test]
    fn metadata_is_written_as_its_serde_form_in_canonical_order() {
        let trace = |tracestate: Option<&str>| TraceContext {
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            tracestate: tracestate.map(str::to_owned),
        };
        let cases = [
            EventMetadata::default(),
            EventMetadata {
                correlation_id: Some(Uuid::from_u128(1)),
                causation_id: Some(Uuid::from_u128(2)),
                who: Some("user \"x\"".into()),
                source: Some("http".into()),
                trace: Some(trace(None)),
            },
            EventMetadata {
                trace: Some(trace(Some("vendor=1"))),
                ..EventMetadata::default()
            },
        ];
        for metadata in cases {
            let mut direct = String::new();
            write_metadata(&metadata, &mut direct);
            let mut through_value = String::new();
            write_canonical(&serde_json::to_value(&metadata).unwrap(), &mut through_value);
            assert_eq!(direct, through_value);
        }
    }

    #[test]
    fn key_order_does_not_change_the_hash() {
        // Proves JSONB's key reordering cannot break a chain.
        let one: Value = serde_json::from_str(r#"{"x": 1, "y": {"p": "2", "q": null}}"#).unwrap();
        // As a database may return it: read back, not made canonical by the engine.
        let two = Payload::parse(r#"{"y": {"q": null, "p": "2"}, "x": 1}"#.to_owned()).unwrap();
        assert_eq!(
            stream_link(&EventHash::GENESIS, &event("a", 1, 1, one)),
            stream_link(&EventHash::GENESIS, &event("a", 1, 1, two))
        );
    }

    #[test]
    fn a_healthy_log_verifies_and_names_its_head() {
        let log = healthy_log();
        let mut verifier = ChainVerifier::new();
        for e in &log {
            assert_eq!(verifier.check(e), vec![]);
        }
        let summary = verifier.finish();
        assert_eq!(summary.events, 4);
        assert_eq!(summary.streams, 2);
        assert_eq!(summary.head_log_hash, log[3].log_hash);
    }

    #[test]
    fn a_modified_payload_is_named_once() {
        let mut log = healthy_log();
        log[1].event.payload = serde_json::json!({"n": 20}).into();
        assert_eq!(
            violations(&log),
            vec![ChainViolation::StreamHashMismatch {
                position: 2,
                stream: StreamId::new("b").unwrap(),
                version: 1
            }]
        );
    }

    #[test]
    fn a_removed_event_is_found() {
        let mut log = healthy_log();
        log.remove(2);
        let found = violations(&log);
        assert!(
            found.contains(&ChainViolation::PositionGap { previous: 2, found: 4 }),
            "{found:?}"
        );
        assert!(
            found.contains(&ChainViolation::LogHashMismatch { position: 4 }),
            "{found:?}"
        );
    }

    #[test]
    fn two_events_swapped_in_position_are_found() {
        // Swapping positions of events of different streams keeps every stream
        // contiguous; only the log chain sees it.
        let mut log = healthy_log();
        log[1].event.global_position = 3;
        log[2].event.global_position = 2;
        log.swap(1, 2);
        let found = violations(&log);
        assert!(
            found.contains(&ChainViolation::LogHashMismatch { position: 2 }),
            "{found:?}"
        );
    }

    #[test]
    fn rehashing_one_event_still_breaks_the_log_chain() {
        // Proves a forger who recomputes the stream hash of what they changed is
        // still caught unless they rewrite every later log hash as well.
        let mut log = healthy_log();
        log[0].event.payload = serde_json::json!({"n": 100}).into();
        log[0].stream_hash = Some(stream_link(&EventHash::GENESIS, &log[0].event));
        let found = violations(&log);
        assert!(
            found.contains(&ChainViolation::LogHashMismatch { position: 1 }),
            "{found:?}"
        );
    }

    #[test]
    fn blanked_hashes_after_hashed_events_are_found_but_a_legacy_prefix_is_not() {
        let mut log = healthy_log();
        log[3].stream_hash = None;
        log[3].log_hash = None;
        assert_eq!(violations(&log), vec![ChainViolation::Unhashed { position: 4 }]);

        let mut legacy = healthy_log();
        for e in &mut legacy[..2] {
            e.stream_hash = None;
            e.log_hash = None;
        }
        // The first hashed event of each stream after the prefix chains from genesis.
        let mut verifier = ChainVerifier::new();
        let tail = chain_after_prefix(&legacy);
        for e in &tail {
            assert_eq!(verifier.check(e), vec![]);
        }
        assert_eq!(verifier.finish().unhashed_prefix, 2);
    }

    /// Rehashes the events after an unhashed prefix as the store would.
    fn chain_after_prefix(log: &[ChainedEvent]) -> Vec<ChainedEvent> {
        let mut streams: HashMap<StreamId, EventHash> = HashMap::new();
        let mut log_hash = EventHash::GENESIS;
        log.iter()
            .map(|e| {
                if e.stream_hash.is_none() {
                    return e.clone();
                }
                let previous = streams.get(&e.event.stream_id).copied().unwrap_or(EventHash::GENESIS);
                let stream_hash = stream_link(&previous, &e.event);
                log_hash = log_link(&log_hash, e.event.global_position, &stream_hash);
                streams.insert(e.event.stream_id.clone(), stream_hash);
                ChainedEvent {
                    event: e.event.clone(),
                    stream_hash: Some(stream_hash),
                    log_hash: Some(log_hash),
                }
            })
            .collect()
    }

    #[test]
    fn a_chained_event_round_trips_through_json_lines() {
        let log = healthy_log();
        let line = serde_json::to_string(&log[2]).unwrap();
        assert!(line.contains("\"global_position\":3"), "{line}");
        let back: ChainedEvent = serde_json::from_str(&line).unwrap();
        assert_eq!(back, log[2]);
    }

    #[test]
    fn times_are_kept_to_the_microsecond() {
        let at = DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap();
        assert_eq!(storable_time(at).timestamp_subsec_nanos(), 123_456_000);
    }
}
