//! The events of a `submission-<order id>` stream. Past-tense names; the
//! durable schema: never edit a shape that has been stored, add a version and
//! an upcaster instead.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::events::EventFamily;

/// What the consumer does after a failed try.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NextTry {
    /// Tried again inside the consumer after `wait_ms`: the `retry`-th quick
    /// retry of this delivery (from 1).
    Quick { retry: u32, wait_ms: u64 },
    /// Republished to rung `rung` of the ladder (from 1), back on
    /// `orders.submit` after `delay_ms`.
    Rung { rung: u32, delay_ms: u64 },
    /// No rung left: the message went to `orders.dlq`.
    DeadLettered,
}

/// One try of a submission failed with a fault that may pass (the engine
/// answered "unavailable" or an internal error), and the consumer tries again
/// or gives up. A refusal is not a failed try: it is announced as `OrderRejected`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmissionAttemptFailed {
    pub order_id: Uuid,
    /// The message's `x-retry-attempt`: 0 on its first delivery, n after n rungs.
    pub retry_attempt: u32,
    pub next: NextTry,
    /// The failure as the engine reported it, cut at `ERROR_TEXT_CHARS_MAX`.
    pub error: String,
    /// When the try failed, on the engine's clock.
    pub failed_at: DateTime<Utc>,
}

/// Every event of a submission stream. The variant name is the stored event type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum SubmissionEvent {
    SubmissionAttemptFailed(SubmissionAttemptFailed),
}

impl EventFamily for SubmissionEvent {
    fn event_type(&self) -> &'static str {
        match self {
            SubmissionEvent::SubmissionAttemptFailed(_) => "SubmissionAttemptFailed",
        }
    }

    fn schema_version(_event_type: &str) -> u32 {
        1
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;
    use crate::events::{decode, encode, DecodeError, EventMetadata, RecordedEvent, StreamId};

    fn failed(next: NextTry) -> SubmissionEvent {
        SubmissionEvent::SubmissionAttemptFailed(SubmissionAttemptFailed {
            order_id: Uuid::from_u128(7),
            retry_attempt: 1,
            next,
            error: "a service the engine needs is unavailable; retry later: database unreachable".into(),
            failed_at: Utc.with_ymd_and_hms(2026, 11, 29, 13, 0, 0).unwrap(),
        })
    }

    fn recorded(event_type: &str, schema_version: u32, payload: impl Into<crate::events::Payload>) -> RecordedEvent {
        RecordedEvent {
            global_position: 9,
            stream_id: StreamId::submission(Uuid::from_u128(7)),
            stream_version: 1,
            event_id: Uuid::from_u128(1),
            event_type: event_type.into(),
            schema_version,
            payload: payload.into(),
            metadata: EventMetadata::default(),
            command_id: None,
            recorded_at: Utc.with_ymd_and_hms(2026, 11, 29, 13, 0, 1).unwrap(),
        }
    }

    #[test]
    fn every_next_try_decodes_as_encoded() {
        // Proves each shape of the event survives the codec unchanged, under its stored type and version.
        for next in [
            NextTry::Quick { retry: 2, wait_ms: 180 },
            NextTry::Rung {
                rung: 2,
                delay_ms: 900_000,
            },
            NextTry::DeadLettered,
        ] {
            let event = failed(next);
            let new = encode(&event, Uuid::from_u128(1), EventMetadata::default()).unwrap();
            assert_eq!(new.event_type, "SubmissionAttemptFailed");
            assert_eq!(new.schema_version, 1);
            let back: SubmissionEvent = decode(&recorded(&new.event_type, new.schema_version, new.payload)).unwrap();
            assert_eq!(back, event);
        }
    }

    #[test]
    fn the_stored_payload_is_pinned() {
        // Proves the stored JSON shape, which is durable schema, does not drift.
        let new = encode(
            &failed(NextTry::Rung {
                rung: 2,
                delay_ms: 900_000,
            }),
            Uuid::from_u128(1),
            EventMetadata::default(),
        )
        .unwrap();
        assert_eq!(
            new.payload,
            json!({
                "order_id": "00000000-0000-0000-0000-000000000007",
                "retry_attempt": 1,
                "next": {"kind": "rung", "rung": 2, "delay_ms": 900_000},
                "error": "a service the engine needs is unavailable; retry later: database unreachable",
                "failed_at": "2026-11-29T13:00:00Z",
            })
        );
        let quick = encode(
            &failed(NextTry::Quick { retry: 1, wait_ms: 100 }),
            Uuid::from_u128(1),
            EventMetadata::default(),
        )
        .unwrap();
        assert_eq!(
            quick.payload.to_value()["next"],
            json!({"kind": "quick", "retry": 1, "wait_ms": 100})
        );
        let dead = encode(
            &failed(NextTry::DeadLettered),
            Uuid::from_u128(1),
            EventMetadata::default(),
        )
        .unwrap();
        assert_eq!(dead.payload.to_value()["next"], json!({"kind": "dead_lettered"}));
    }

    #[test]
    fn a_wrong_shape_or_a_future_version_is_an_error_not_a_misreading() {
        // Proves a payload that does not match, and a newer schema, are typed decode errors.
        let unknown_field = recorded(
            "SubmissionAttemptFailed",
            1,
            json!({"order_id": Uuid::from_u128(7), "retry_attempt": 0, "next": {"kind": "dead_lettered"},
                   "error": "x", "failed_at": "2026-11-29T13:00:00Z", "extra": true}),
        );
        assert!(matches!(
            decode::<SubmissionEvent>(&unknown_field),
            Err(DecodeError::Shape { .. })
        ));
        let unknown_next = recorded(
            "SubmissionAttemptFailed",
            1,
            json!({"order_id": Uuid::from_u128(7), "retry_attempt": 0, "next": {"kind": "later"},
                   "error": "x", "failed_at": "2026-11-29T13:00:00Z"}),
        );
        assert!(matches!(
            decode::<SubmissionEvent>(&unknown_next),
            Err(DecodeError::Shape { .. })
        ));
        let unknown_type = recorded("SubmissionSucceeded", 1, json!({}));
        assert!(matches!(
            decode::<SubmissionEvent>(&unknown_type),
            Err(DecodeError::Shape { .. })
        ));
        let future = recorded("SubmissionAttemptFailed", 2, json!({}));
        assert!(matches!(
            decode::<SubmissionEvent>(&future),
            Err(DecodeError::FutureSchema { current: 1, .. })
        ));
    }
}
