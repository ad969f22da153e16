//! What the load generator sends and reads: a seed 004 §3.2.1 submission for
//! `orders.submit`, the HTTP body of `POST /api/v1/orders`, and the order id
//! of a §3.2.3 position update. Pure.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

/// One order the run offers: a MARKET BUY, which fills at once at the
/// current price (no tick needed), so latency is the engine's, not the market's.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderSpec {
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub symbol: String,
    pub quantity: u32,
}

/// The seed 004 §3.2.1 message, field for field (the engine ignores the
/// status and times it is sent; it decides those).
pub fn submission(order: &OrderSpec, now: DateTime<Utc>) -> Value {
    let now = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    json!({
        "order_id": order.order_id,
        "user_id": order.user_id,
        "symbol": order.symbol,
        "order_side": "BUY",
        "order_type": "MARKET",
        "quantity": order.quantity,
        "price": null,
        "status": "PENDING",
        "created_at": now,
        "updated_at": now,
        "message_metadata": {
            "message_id": format!("msg_{}", order.order_id),
            "correlation_id": order.order_id,
            "timestamp": now,
            "retry_attempt": 0,
            "priority": 5,
            "source": "order_submission",
            "message_type": "order_submission",
            "processing_stage": "initial"
        }
    })
}

/// The body of `POST /api/v1/orders`; the engine picks the order id and the
/// token names the user.
pub fn http_body(order: &OrderSpec) -> Value {
    json!({
        "symbol": order.symbol,
        "order_type": "MARKET",
        "order_side": "BUY",
        "quantity": order.quantity,
    })
}

#[derive(Deserialize)]
struct HasOrderId {
    order_id: Uuid,
}

/// The order a position update (or a 202 answer) is about; `None` when the
/// body has no readable `order_id`.
pub fn order_id_of(body: &[u8]) -> Option<Uuid> {
    serde_json::from_slice::<HasOrderId>(body).ok().map(|m| m.order_id)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use rust_decimal::Decimal;

    use super::*;
    use crate::amqp::wire::Submission;
    use crate::order::{OrderType, Side};

    fn order() -> OrderSpec {
        OrderSpec {
            order_id: Uuid::from_u128(1),
            user_id: Uuid::from_u128(2),
            symbol: "MSFT".into(),
            quantity: 3,
        }
    }

    #[test]
    fn the_submission_is_one_the_engine_accepts() {
        // Proves the engine's own parser reads the generated message as the intended MARKET BUY, keyed by our order id.
        let at = Utc.with_ymd_and_hms(2026, 11, 21, 23, 0, 0).unwrap();
        let body = serde_json::to_vec(&submission(&order(), at)).unwrap();
        let parsed = Submission::parse(&body).unwrap();
        assert_eq!(parsed.order_id, Uuid::from_u128(1));
        assert_eq!(parsed.user_id, Uuid::from_u128(2));
        assert_eq!((parsed.side, parsed.order_type), (Side::Buy, OrderType::Market));
        assert_eq!(parsed.quantity, Decimal::from(3));
        assert_eq!((parsed.limit_price, parsed.stop_price), (None, None));
        assert_eq!(
            parsed.message_id.as_deref(),
            Some("msg_00000000-0000-0000-0000-000000000001")
        );
        assert_eq!(parsed.correlation_id(), Uuid::from_u128(1));
    }

    #[test]
    fn the_http_body_names_no_user_and_no_id() {
        // Proves the HTTP body carries only the order's terms (the token names the user).
        assert_eq!(
            http_body(&order()),
            json!({"symbol": "MSFT", "order_type": "MARKET", "order_side": "BUY", "quantity": 3})
        );
    }

    #[test]
    fn a_position_update_is_matched_by_its_order_id() {
        // Proves the order id is read from a seed 3.2.3 body and anything else is not mistaken for one.
        let update = br#"{"order_id":"00000000-0000-0000-0000-000000000001","user_id":"00000000-0000-0000-0000-000000000002","quantity":1.0,"message_metadata":{}}"#;
        assert_eq!(order_id_of(update), Some(Uuid::from_u128(1)));
        assert_eq!(order_id_of(b"{\"order_id\":\"nope\"}"), None);
        assert_eq!(order_id_of(b"not json"), None);
    }
}
