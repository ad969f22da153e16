//! What the fuzz targets share: a fixed clock and quote, and the properties an
//! order accepted from outside input must have. Must never read the clock,
//! the environment or the network: a crash has to replay from its input alone.

use chrono::{DateTime, TimeZone, Utc};
use rust_decimal::Decimal;
use serde_json::Value;
use uuid::Uuid;

use order_engine::events::{decode, encode, EventFamily, EventMetadata, RecordedEvent, StreamId};
use order_engine::order::{
    check_positive_amount, decide, evolve, OrderCommand, OrderEvent, OrderState, OrderStatus, Quote, Side, SubmitOrder,
    Symbol,
};

/// Basis points the engine adds to a MARKET buy's quote by default (`ORDER_ENGINE_MARKET_BUFFER_BPS`).
pub const MARKET_BUFFER_BPS: u32 = 500;

/// The instant every target pretends it is: inputs replay to the same result.
pub fn fixed_now() -> DateTime<Utc> {
    Utc.timestamp_opt(1_767_225_600, 0)
        .single()
        .unwrap_or(DateTime::UNIX_EPOCH)
}

/// A quote for any symbol, market open: decide then judges the order alone.
pub fn fixed_quote() -> Quote {
    Quote {
        price: Decimal::new(15_025, 2),
        as_of: fixed_now(),
        market_open: true,
    }
}

/// The order fields a parser hands to the engine, whatever the entry point.
#[derive(Debug, Clone)]
pub struct Parsed<'a> {
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub symbol: &'a str,
    pub side: Side,
    pub order_type: order_engine::order::OrderType,
    pub quantity: Decimal,
    pub limit_price: Option<Decimal>,
    pub stop_price: Option<Decimal>,
}

/// Runs the pure `decide` on a parsed submission and, when it accepts,
/// asserts what every accepted order must be: amounts that fit
/// `DECIMAL(18, 8)`, a valid symbol, exactly the prices its type needs, an
/// event that survives the log's encode/decode unchanged, and a state that
/// starts PENDING with the submitted facts.
pub fn check_submission(parsed: &Parsed<'_>) {
    let command = OrderCommand::Submit(SubmitOrder {
        order_id: parsed.order_id,
        user_id: parsed.user_id,
        symbol: parsed.symbol.to_owned(),
        side: parsed.side,
        order_type: parsed.order_type,
        quantity: parsed.quantity,
        limit_price: parsed.limit_price,
        stop_price: parsed.stop_price,
        quote: Some(fixed_quote()),
        submitted_at: fixed_now(),
    });
    let Ok(events) = decide(&OrderState::Empty, &command) else {
        return;
    };
    let [event @ OrderEvent::OrderSubmitted(submitted)] = events.as_slice() else {
        panic!("an accepted submission emits exactly one OrderSubmitted, got {events:?}");
    };
    assert_eq!(
        check_positive_amount(submitted.quantity),
        Ok(()),
        "quantity {}",
        submitted.quantity
    );
    for price in [submitted.limit_price, submitted.stop_price].into_iter().flatten() {
        assert_eq!(check_positive_amount(price), Ok(()), "price {price}");
    }
    assert_eq!(submitted.limit_price.is_some(), parsed.order_type.needs_limit_price());
    assert_eq!(submitted.stop_price.is_some(), parsed.order_type.needs_stop_price());
    assert_eq!(Symbol::parse(submitted.symbol.as_str()).as_ref(), Ok(&submitted.symbol));
    assert_eq!(
        (submitted.quantity, submitted.limit_price, submitted.stop_price),
        (parsed.quantity, parsed.limit_price, parsed.stop_price),
        "decide must keep every digit it was sent"
    );

    assert_eq!(
        round_trip(event).as_ref(),
        Some(event),
        "OrderSubmitted must decode as encoded"
    );
    let reserve = order_engine::saga::reserve_amount(submitted, MARKET_BUFFER_BPS);
    assert!(reserve >= Decimal::ZERO, "reservation {reserve}");
    if parsed.side == Side::Sell {
        assert_eq!(reserve, Decimal::ZERO);
    }
    let state = evolve(OrderState::Empty, event);
    let order = state
        .order()
        .unwrap_or_else(|| panic!("OrderSubmitted must place the order"));
    assert_eq!(
        (order.status, order.quantity),
        (OrderStatus::Pending, submitted.quantity)
    );
}

/// Encodes an event as the store would and decodes it back; `None` when
/// either step refuses (the caller decides whether that is allowed).
pub fn round_trip<E: EventFamily + PartialEq>(event: &E) -> Option<E> {
    let new = encode(event, Uuid::nil(), EventMetadata::default()).ok()?;
    let recorded = RecordedEvent {
        global_position: 1,
        stream_id: StreamId::new("fuzz-1").ok()?,
        stream_version: 1,
        event_id: new.event_id,
        event_type: new.event_type,
        schema_version: new.schema_version,
        payload: new.payload,
        metadata: new.metadata,
        command_id: None,
        recorded_at: fixed_now(),
    };
    decode(&recorded).ok()
}

/// A JSON value's object keys, or `None` when it is not an object.
pub fn object_keys(value: &Value) -> Option<Vec<&str>> {
    value.as_object().map(|map| map.keys().map(String::as_str).collect())
}

/// Whether a JSON text is an object: its first byte past JSON whitespace is
/// `{`. serde's derive also reads a struct from an array of its fields in
/// order, a shape no contract of this engine allows.
pub fn is_object(json: &[u8]) -> bool {
    json.iter().find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r')) == Some(&b'{')
}
