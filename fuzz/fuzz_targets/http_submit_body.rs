//! Fuzz target: `POST /api/v1/orders` bodies read into `SubmitOrderBody` as
//! the handler's `Json<ObjectOnly<SubmitOrderBody>>` reads them
//! (`serde_json::from_slice`), then
//! the pure `decide`. Must never start a server or touch a database.
#![no_main]

use libfuzzer_sys::fuzz_target;
use order_engine::api::dto::SubmitOrderBody;
use order_engine::order::OrderType;
use order_engine::wire::ObjectOnly;
use order_engine_fuzz::{check_submission, is_object, object_keys, Parsed};
use uuid::Uuid;

/// The body's fields (`#[serde(deny_unknown_fields)]`): nothing else may pass.
const FIELDS: [&str; 6] = ["symbol", "order_type", "order_side", "quantity", "price", "stop_price"];

fuzz_target!(|body: &[u8]| {
    let Ok(ObjectOnly(parsed)) = serde_json::from_slice::<ObjectOnly<SubmitOrderBody>>(body) else {
        return;
    };
    // The OpenAPI document promises an object with these fields and no others.
    assert!(
        is_object(body),
        "accepted a body that is not a JSON object: {}",
        String::from_utf8_lossy(body)
    );
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        for key in object_keys(&value).unwrap_or_default() {
            assert!(FIELDS.contains(&key), "accepted the unknown field {key:?}");
        }
        assert_eq!(value["symbol"].as_str(), Some(parsed.symbol.as_str()));
    }

    // An amount no decimal can hold is the handler's 422 (the amount rule), not an order.
    let Ok(parsed) = parsed.exact() else {
        return;
    };

    // The seed's single `price` is the limit of LIMIT and STOP_LIMIT and the
    // stop of STOP_LOSS; the handler's own pre-checks on top of that live
    // privately in api::orders, so decide alone judges the combination here.
    let (limit_price, stop_price) = match parsed.order_type {
        OrderType::StopLoss => (None, parsed.price.or(parsed.stop_price)),
        _ => (parsed.price, parsed.stop_price),
    };
    check_submission(&Parsed {
        order_id: Uuid::nil(),
        user_id: Uuid::nil(),
        symbol: &parsed.symbol,
        side: parsed.order_side,
        order_type: parsed.order_type,
        quantity: parsed.quantity,
        limit_price,
        stop_price,
    });
});
