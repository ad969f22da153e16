//! The JSON on the wire, to the field of seed 004 §3.2–3.3: the order
//! submission read from `orders.submit`, the position update, the
//! EventMessage and the status message the engine publishes.
//!
//! Pure: no I/O, no clock, no random ids. Every id and time comes from the
//! message or the event, so a republished message is byte-identical.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::events::TraceContext;
use crate::order::{OrderStatus, OrderType, Side};
use crate::wire::ObjectOnly;

/// Largest submission body read; a bigger one is dead-lettered unread.
pub const SUBMISSION_BYTES_MAX: usize = 64 * 1024;

/// `source` of every message the engine publishes.
pub const SOURCE: &str = "order-engine";

/// Namespace of ids derived from producers' ids that are not UUIDs (the
/// seed's `msg_…` message ids) and of rejection event ids.
pub const WIRE_NAMESPACE: Uuid = Uuid::from_u128(0x6f72_6465_722d_656e_6769_6e65_0000_00a0);

/// Seed 3.2.3's `message_metadata.priority` of a position update.
pub const POSITION_UPDATE_PRIORITY: u8 = 1;
/// Seed 3.1.2: `orders.status` is the high-priority queue.
pub const STATUS_PRIORITY: u8 = 8;
/// Seed 3.1.1: "Normal (5)".
pub const EVENT_PRIORITY: u8 = 5;

/// Why a submission cannot be read; the reason goes to `orders.dlq`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("body of {size} bytes exceeds the {SUBMISSION_BYTES_MAX}-byte limit")]
    TooLarge { size: usize },
    #[error("not an order submission (seed 004 §3.2.1): {0}")]
    Malformed(String),
    #[error("no idempotency key: the message has neither order_id nor message_metadata.message_id")]
    NoIdempotencyKey,
    #[error("a STOP_LOSS order got price {price} and stop_price {stop_price}; send one")]
    ConflictingStopPrice { price: Decimal, stop_price: Decimal },
}

#[derive(Debug, Deserialize)]
struct SubmissionWire {
    #[serde(default)]
    order_id: Option<Uuid>,
    user_id: Uuid,
    symbol: String,
    order_side: Side,
    order_type: OrderType,
    quantity: Decimal,
    #[serde(default)]
    price: Option<Decimal>,
    /// Not in the seed: the stop of a STOP_LIMIT, whose `price` is the limit.
    #[serde(default)]
    stop_price: Option<Decimal>,
    #[serde(default)]
    message_metadata: Option<MetadataWire>,
    // status, created_at, updated_at and any other field: the engine decides those.
}

/// Every field optional and of any JSON type: metadata never makes a valid order unreadable.
#[derive(Debug, Default, Deserialize)]
struct MetadataWire {
    #[serde(default)]
    message_id: Option<Value>,
    #[serde(default)]
    correlation_id: Option<Value>,
}

fn text(value: Option<Value>) -> Option<String> {
    match value? {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s),
        other => Some(other.to_string()),
    }
}

/// A submission as the engine takes it (seed 3.2.1, prices mapped by type).
#[derive(Debug, Clone, PartialEq)]
pub struct Submission {
    /// The idempotency key: the producer's order id (or one derived from its message id).
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub symbol: String,
    pub side: Side,
    pub order_type: OrderType,
    pub quantity: Decimal,
    pub limit_price: Option<Decimal>,
    pub stop_price: Option<Decimal>,
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
}

impl Submission {
    /// Reads a seed 3.2.1 message. Numbers and strings are both accepted for
    /// decimals; unknown fields are ignored. `price` is the limit of LIMIT and
    /// STOP_LIMIT and the stop of STOP_LOSS; STOP_LIMIT takes its stop from
    /// `stop_price`. A price on the wrong type is kept, so the engine refuses
    /// it by name rather than this parser dropping it.
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        if body.len() > SUBMISSION_BYTES_MAX {
            return Err(WireError::TooLarge { size: body.len() });
        }
        let ObjectOnly(wire): ObjectOnly<SubmissionWire> =
            serde_json::from_slice(body).map_err(|e| WireError::Malformed(e.to_string()))?;
        let metadata = wire.message_metadata.unwrap_or_default();
        let message_id = text(metadata.message_id);
        let correlation_id = text(metadata.correlation_id);
        let order_id = match (wire.order_id, &message_id) {
            (Some(id), _) => id,
            // Without an order id, the message id keeps a resend one order.
            (None, Some(message_id)) => Uuid::new_v5(&WIRE_NAMESPACE, format!("order:{message_id}").as_bytes()),
            (None, None) => return Err(WireError::NoIdempotencyKey),
        };
        let (limit_price, stop_price) = match wire.order_type {
            OrderType::StopLoss => match (wire.price, wire.stop_price) {
                (Some(price), Some(stop)) if price != stop => {
                    return Err(WireError::ConflictingStopPrice {
                        price,
                        stop_price: stop,
                    })
                }
                (price, stop) => (None, price.or(stop)),
            },
            OrderType::Market | OrderType::Limit | OrderType::StopLimit => (wire.price, wire.stop_price),
        };
        Ok(Self {
            order_id,
            user_id: wire.user_id,
            symbol: wire.symbol,
            side: wire.order_side,
            order_type: wire.order_type,
            quantity: wire.quantity,
            limit_price,
            stop_price,
            message_id,
            correlation_id,
        })
    }

    /// The message id as the causation id of the order's first event.
    pub fn causation_id(&self) -> Option<Uuid> {
        self.message_id.as_deref().map(wire_uuid)
    }

    /// The producer's correlation id; the order id when it sent none.
    pub fn correlation_id(&self) -> Uuid {
        self.correlation_id.as_deref().map_or(self.order_id, wire_uuid)
    }
}

/// A producer's id as a UUID: itself when it is one, else derived from it.
pub fn wire_uuid(raw: &str) -> Uuid {
    Uuid::parse_str(raw).unwrap_or_else(|_| Uuid::new_v5(&WIRE_NAMESPACE, raw.as_bytes()))
}

/// A W3C `traceparent` (`00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`),
/// or `None` when it is not one (an invalid header starts a new trace).
pub fn parse_traceparent(traceparent: &str, tracestate: Option<&str>) -> Option<TraceContext> {
    let parts: Vec<&str> = traceparent.trim().split('-').collect();
    let hex =
        |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    let zero = |s: &str| s.bytes().all(|b| b == b'0');
    match parts.as_slice() {
        [version, trace_id, span_id, flags]
            if hex(version, 2)
                && *version != "ff"
                && hex(trace_id, 32)
                && !zero(trace_id)
                && hex(span_id, 16)
                && !zero(span_id)
                && hex(flags, 2) =>
        {
            Some(TraceContext {
                traceparent: traceparent.trim().to_owned(),
                tracestate: tracestate.map(str::to_owned).filter(|s| !s.is_empty()),
            })
        }
        _ => None,
    }
}

/// `message_metadata` of the messages the engine publishes (seed 3.2.3).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessageMetadata {
    pub message_id: String,
    pub correlation_id: String,
    pub timestamp: DateTime<Utc>,
    pub retry_attempt: u32,
    pub priority: u8,
    pub source: &'static str,
    pub message_type: &'static str,
    pub processing_stage: &'static str,
}

/// Seed 3.2.3, published on `positions.updates` for every execution.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PositionUpdate {
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub symbol: String,
    pub order_side: Side,
    pub order_type: OrderType,
    #[serde(with = "crate::wire::exact_number")]
    pub quantity: Decimal,
    #[serde(with = "crate::wire::exact_number")]
    pub execution_price: Decimal,
    pub executed_at: DateTime<Utc>,
    #[serde(with = "crate::wire::exact_number")]
    pub total_value: Decimal,
    #[serde(with = "crate::wire::exact_number")]
    pub market_price_at_exec: Decimal,
    pub market_data_timestamp: DateTime<Utc>,
    pub message_metadata: MessageMetadata,
}

/// What a publisher knows of an order from its `OrderSubmitted` event.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderDetails {
    pub user_id: Uuid,
    pub symbol: String,
    pub side: Side,
    pub order_type: OrderType,
}

impl From<&crate::order::OrderSubmitted> for OrderDetails {
    fn from(submitted: &crate::order::OrderSubmitted) -> Self {
        Self {
            user_id: submitted.user_id,
            symbol: submitted.symbol.as_str().to_owned(),
            side: submitted.side,
            order_type: submitted.order_type,
        }
    }
}

/// The execution facts a position update carries.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionFacts {
    pub quantity: Decimal,
    pub execution_price: Decimal,
    pub total_value: Decimal,
    pub market_price_at_exec: Decimal,
    pub executed_at: DateTime<Utc>,
}

impl PositionUpdate {
    /// The update for one `OrderExecuted`. The body's message id follows the
    /// seed's pattern (`position_update_<order>_<executed_at>`) and its
    /// timestamp is the execution's: both are fixed by the event, so a
    /// republish is the same message. The simulator quotes at execution, so
    /// the market data timestamp is the execution time.
    pub fn new(order_id: Uuid, details: &OrderDetails, execution: &ExecutionFacts, correlation_id: Uuid) -> Self {
        Self {
            order_id,
            user_id: details.user_id,
            symbol: details.symbol.clone(),
            order_side: details.side,
            order_type: details.order_type,
            quantity: execution.quantity,
            execution_price: execution.execution_price,
            executed_at: execution.executed_at,
            total_value: execution.total_value,
            market_price_at_exec: execution.market_price_at_exec,
            market_data_timestamp: execution.executed_at,
            message_metadata: MessageMetadata {
                message_id: format!(
                    "position_update_{order_id}_{}",
                    execution.executed_at.timestamp_millis()
                ),
                correlation_id: correlation_id.to_string(),
                timestamp: execution.executed_at,
                retry_attempt: 0,
                priority: POSITION_UPDATE_PRIORITY,
                source: "order_execution",
                message_type: "position_update",
                processing_stage: "initial",
            },
        }
    }
}

/// Seed 3.3's EventMessage, published on `orders.events`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventMessage {
    pub event_id: Uuid,
    pub event_type: String,
    pub aggregate_id: String,
    pub occurred_at: DateTime<Utc>,
    pub event_data: Value,
    pub message_id: String,
    pub correlation_id: String,
    pub timestamp: DateTime<Utc>,
    pub source: &'static str,
}

impl EventMessage {
    /// `recorded_at` is when the event became durable; it is the message's
    /// timestamp so a republish is identical.
    pub fn new(
        event_id: Uuid,
        event_type: &str,
        order_id: Uuid,
        occurred_at: DateTime<Utc>,
        event_data: Value,
        correlation_id: Uuid,
        recorded_at: DateTime<Utc>,
    ) -> Self {
        Self {
            event_id,
            event_type: event_type.to_owned(),
            aggregate_id: order_id.to_string(),
            occurred_at,
            event_data,
            message_id: event_id.to_string(),
            correlation_id: correlation_id.to_string(),
            timestamp: recorded_at,
            source: SOURCE,
        }
    }

    /// The event of a submission the engine refused; it never enters the log
    /// (a refused command emits nothing), so its id derives from the order
    /// id and a redelivered refusal carries the same one.
    pub fn rejected(submission: &Submission, reason: &str, code: &str, at: DateTime<Utc>) -> Self {
        let event_id = Uuid::new_v5(&WIRE_NAMESPACE, format!("{}:rejected", submission.order_id).as_bytes());
        let mut data = Map::new();
        data.insert("order_id".into(), Value::String(submission.order_id.to_string()));
        data.insert("user_id".into(), Value::String(submission.user_id.to_string()));
        data.insert("symbol".into(), Value::String(submission.symbol.clone()));
        data.insert("order_side".into(), Value::String(submission.side.as_str().into()));
        data.insert(
            "order_type".into(),
            Value::String(submission.order_type.as_str().into()),
        );
        data.insert("reason".into(), Value::String(reason.to_owned()));
        data.insert("code".into(), Value::String(code.to_owned()));
        if let Some(message_id) = &submission.message_id {
            data.insert("message_id".into(), Value::String(message_id.clone()));
        }
        Self::new(
            event_id,
            "OrderRejected",
            submission.order_id,
            at,
            Value::Object(data),
            submission.correlation_id(),
            at,
        )
    }
}

/// A status change, published on `orders.status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusMessage {
    pub order_id: Uuid,
    pub status: OrderStatus,
    pub at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use rust_decimal_macros::dec;

    const SEED_SUBMISSION: &str = r#"{
      "order_id": "0b6d3b5e-8a4f-4e0b-9d55-8f3f0f6f6a01",
      "user_id": "5d1c2a8e-7b3f-4c1e-8a0d-2f6e4b9c3d11",
      "symbol": "AAPL",
      "order_side": "BUY",
      "order_type": "MARKET",
      "quantity": 10.0,
      "price": null,
      "status": "PENDING",
      "created_at": "2025-11-04T10:00:00Z",
      "updated_at": "2025-11-04T10:00:00Z",
      "message_metadata": {
        "message_id": "msg_uuid",
        "correlation_id": "order_uuid",
        "timestamp": "2025-11-04T10:00:00Z",
        "retry_attempt": 0,
        "priority": 5,
        "source": "order_submission",
        "message_type": "order_submission",
        "processing_stage": "initial"
      }
    }"#;

    fn with(field: &str, value: Value) -> Vec<u8> {
        let mut json: Value = serde_json::from_str(SEED_SUBMISSION).unwrap();
        json[field] = value;
        serde_json::to_vec(&json).unwrap()
    }

    #[test]
    fn the_seed_submission_parses_with_its_metadata() {
        // Proves the seed's 3.2.1 example is read field by field, non-UUID ids derived stably.
        let s = Submission::parse(SEED_SUBMISSION.as_bytes()).unwrap();
        assert_eq!(s.order_id.to_string(), "0b6d3b5e-8a4f-4e0b-9d55-8f3f0f6f6a01");
        assert_eq!(
            (s.side, s.order_type, s.quantity),
            (Side::Buy, OrderType::Market, dec!(10))
        );
        assert_eq!((s.limit_price, s.stop_price), (None, None));
        assert_eq!(s.message_id.as_deref(), Some("msg_uuid"));
        assert_eq!(s.causation_id(), Some(wire_uuid("msg_uuid")));
        assert_eq!(s.correlation_id(), wire_uuid("order_uuid"));
    }

    #[test]
    fn decimals_may_be_numbers_or_strings_and_keep_every_digit() {
        // Proves numbers and strings are both accepted, without float rounding.
        let a = Submission::parse(&with("quantity", serde_json::json!("0.12345678"))).unwrap();
        assert_eq!(a.quantity, dec!(0.12345678));
        let raw = String::from_utf8(with("quantity", Value::Null))
            .unwrap()
            .replace("\"quantity\":null", "\"quantity\":1234567.00000001");
        let b = Submission::parse(raw.as_bytes()).unwrap();
        assert_eq!(b.quantity, dec!(1234567.00000001));
    }

    #[test]
    fn price_maps_to_limit_or_stop_by_order_type() {
        // Proves the seed's single price goes where each order type needs it.
        let mut json: Value = serde_json::from_str(SEED_SUBMISSION).unwrap();
        json["price"] = serde_json::json!(140.5);
        json["order_type"] = "LIMIT".into();
        let limit = Submission::parse(&serde_json::to_vec(&json).unwrap()).unwrap();
        assert_eq!((limit.limit_price, limit.stop_price), (Some(dec!(140.5)), None));
        json["order_type"] = "STOP_LOSS".into();
        let stop = Submission::parse(&serde_json::to_vec(&json).unwrap()).unwrap();
        assert_eq!((stop.limit_price, stop.stop_price), (None, Some(dec!(140.5))));
        json["order_type"] = "STOP_LIMIT".into();
        json["stop_price"] = "145".into();
        let stop_limit = Submission::parse(&serde_json::to_vec(&json).unwrap()).unwrap();
        assert_eq!(
            (stop_limit.limit_price, stop_limit.stop_price),
            (Some(dec!(140.5)), Some(dec!(145)))
        );
    }

    #[test]
    fn unreadable_submissions_say_why() {
        // Proves malformed, oversized and keyless messages are refused with a named reason.
        assert!(matches!(Submission::parse(b"{not json"), Err(WireError::Malformed(_))));
        // An array of the fields in order is not a submission (serde's derive would read it; the fuzzer found it).
        let array = br#"["0b6d3b5e-8a4f-4e0b-9d55-8f3f0f6f6a01","5d1c2a8e-7b3f-4c1e-8a0d-2f6e4b9c3d11","AAPL","BUY","MARKET",10]"#;
        assert!(
            matches!(Submission::parse(array), Err(WireError::Malformed(m)) if m.contains("expected a JSON object"))
        );
        assert!(matches!(
            Submission::parse(&with("order_side", "HOLD".into())),
            Err(WireError::Malformed(m)) if m.contains("HOLD")
        ));
        assert!(matches!(
            Submission::parse(&with("user_id", "nobody".into())),
            Err(WireError::Malformed(_))
        ));
        let huge = vec![b' '; SUBMISSION_BYTES_MAX + 1];
        assert!(matches!(Submission::parse(&huge), Err(WireError::TooLarge { .. })));
        let mut json: Value = serde_json::from_str(SEED_SUBMISSION).unwrap();
        json.as_object_mut().unwrap().remove("order_id");
        json.as_object_mut().unwrap().remove("message_metadata");
        assert_eq!(
            Submission::parse(&serde_json::to_vec(&json).unwrap()),
            Err(WireError::NoIdempotencyKey)
        );
    }

    #[test]
    fn traceparent_is_validated() {
        // Proves a valid W3C traceparent is kept and a malformed one starts a new trace.
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            parse_traceparent(ok, Some("k=v")).unwrap().tracestate.as_deref(),
            Some("k=v")
        );
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(bad, None), None, "{bad}");
        }
    }

    #[test]
    fn a_position_update_is_the_seeds_json_exactly() {
        // Proves the 3.2.3 snapshot: every field, in order, decimals as JSON numbers (1502.50).
        let order_id = Uuid::parse_str("0b6d3b5e-8a4f-4e0b-9d55-8f3f0f6f6a01").unwrap();
        let at = Utc.with_ymd_and_hms(2025, 11, 4, 10, 0, 10).unwrap();
        let details = OrderDetails {
            user_id: Uuid::parse_str("5d1c2a8e-7b3f-4c1e-8a0d-2f6e4b9c3d11").unwrap(),
            symbol: "AAPL".into(),
            side: Side::Buy,
            order_type: OrderType::Market,
        };
        let execution = ExecutionFacts {
            quantity: dec!(10.0),
            execution_price: dec!(150.25),
            total_value: dec!(10.0) * dec!(150.25),
            market_price_at_exec: dec!(150.25),
            executed_at: at,
        };
        let update = PositionUpdate::new(order_id, &details, &execution, order_id);
        let json = String::from_utf8(serde_json::to_vec(&update).unwrap()).unwrap();
        let expected = concat!(
            r#"{"order_id":"0b6d3b5e-8a4f-4e0b-9d55-8f3f0f6f6a01","#,
            r#""user_id":"5d1c2a8e-7b3f-4c1e-8a0d-2f6e4b9c3d11","#,
            r#""symbol":"AAPL","order_side":"BUY","order_type":"MARKET","#,
            r#""quantity":10.0,"execution_price":150.25,"executed_at":"2025-11-04T10:00:10Z","#,
            r#""total_value":1502.500,"market_price_at_exec":150.25,"#,
            r#""market_data_timestamp":"2025-11-04T10:00:10Z","#,
            r#""message_metadata":{"message_id":"position_update_0b6d3b5e-8a4f-4e0b-9d55-8f3f0f6f6a01_1762250410000","#,
            r#""correlation_id":"0b6d3b5e-8a4f-4e0b-9d55-8f3f0f6f6a01","timestamp":"2025-11-04T10:00:10Z","#,
            r#""retry_attempt":0,"priority":1,"source":"order_execution","#,
            r#""message_type":"position_update","processing_stage":"initial"}}"#
        );
        assert_eq!(json, expected);
        let total: Value = serde_json::from_str(&json).unwrap();
        assert!(total["total_value"].is_number(), "total_value must be a JSON number");
        let quantity_ten = PositionUpdate::new(
            order_id,
            &details,
            &ExecutionFacts {
                quantity: dec!(10),
                total_value: dec!(1502.50),
                ..execution
            },
            order_id,
        );
        let json = serde_json::to_string(&quantity_ten).unwrap();
        assert!(json.contains(r#""total_value":1502.50,"#), "{json}");
    }

    #[test]
    fn a_rejection_is_an_event_message_with_its_reason() {
        // Proves the 3.3 schema of OrderRejected, with a stable id across redeliveries.
        let s = Submission::parse(SEED_SUBMISSION.as_bytes()).unwrap();
        let at = Utc.with_ymd_and_hms(2025, 11, 4, 10, 0, 0).unwrap();
        let a = EventMessage::rejected(&s, "symbol ZZZ is not listed by market data", "UnknownSymbol", at);
        let b = EventMessage::rejected(&s, "symbol ZZZ is not listed by market data", "UnknownSymbol", at);
        assert_eq!(a.event_id, b.event_id);
        let json: Value = serde_json::to_value(&a).unwrap();
        let keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
        let mut expected = vec![
            "event_id",
            "event_type",
            "aggregate_id",
            "occurred_at",
            "event_data",
            "message_id",
            "correlation_id",
            "timestamp",
            "source",
        ];
        expected.sort_unstable();
        let mut keys_sorted = keys.clone();
        keys_sorted.sort_unstable();
        assert_eq!(keys_sorted, expected);
        assert_eq!(json["event_type"], "OrderRejected");
        assert_eq!(json["event_data"]["reason"], "symbol ZZZ is not listed by market data");
        assert_eq!(json["message_id"], json["event_id"]);
    }
}
