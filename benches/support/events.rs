//! Order commands and events as the engine makes them: the same codec, the
//! same metadata fields, event ids derived from the command id.

use chrono::{DateTime, Duration as ChronoDuration, TimeZone, Utc};
use order_engine::events::{encode, EventMetadata, NewEvent, StreamId};
use order_engine::order::{
    OrderAccepted, OrderEvent, OrderExecuted, OrderSubmitted, OrderTriggered, OrderType, Quote, Side, SubmitOrder,
    Symbol,
};
use order_engine::store::AppendRequest;
use rust_decimal_macros::dec;
use uuid::Uuid;

/// A fixed instant, so every run encodes the same bytes.
pub fn at(millis: i64) -> DateTime<Utc> {
    let base = Utc
        .with_ymd_and_hms(2026, 11, 21, 15, 0, 0)
        .single()
        .unwrap_or_default();
    base + ChronoDuration::milliseconds(millis)
}

pub fn user_of(order_id: Uuid) -> Uuid {
    Uuid::new_v5(&order_id, b"user")
}

/// A MARKET BUY of 10 AAPL with an open market at 150.25.
pub fn submit_market_buy(order_id: Uuid) -> SubmitOrder {
    submit(order_id, Side::Buy, OrderType::Market, None)
}

/// A STOP_LOSS SELL of 10 AAPL stopping at 140.
pub fn submit_stop_loss_sell(order_id: Uuid) -> SubmitOrder {
    submit(order_id, Side::Sell, OrderType::StopLoss, Some(dec!(140)))
}

fn submit(order_id: Uuid, side: Side, order_type: OrderType, stop_price: Option<rust_decimal::Decimal>) -> SubmitOrder {
    SubmitOrder {
        order_id,
        user_id: user_of(order_id),
        symbol: "AAPL".into(),
        side,
        order_type,
        quantity: dec!(10),
        limit_price: None,
        stop_price,
        quote: Some(Quote {
            price: dec!(150.25),
            as_of: at(0),
            market_open: true,
        }),
        submitted_at: at(0),
    }
}

fn submitted(order_id: Uuid) -> OrderEvent {
    OrderEvent::OrderSubmitted(OrderSubmitted {
        order_id,
        user_id: user_of(order_id),
        symbol: Symbol::parse("AAPL").unwrap_or_else(|e| panic!("AAPL is a valid symbol: {e}")),
        side: Side::Sell,
        order_type: OrderType::StopLoss,
        quantity: dec!(10),
        limit_price: None,
        stop_price: Some(dec!(140)),
        market_price_at_submission: Some(dec!(150.25)),
        market_data_timestamp: Some(at(0)),
        submitted_at: at(0),
    })
}

/// `n` events of one order: submitted, accepted, executed, with (n − 3)
/// triggers between. Real orders have 3 or 4 events; the long histories the
/// hydration benches ask for are this order re-triggered, which `evolve` folds
/// like any other event (a trigger only moves `triggered_at`).
pub fn order_history(order_id: Uuid, n: usize) -> Vec<OrderEvent> {
    let mut events = Vec::with_capacity(n);
    events.push(submitted(order_id));
    if n >= 2 {
        events.push(OrderEvent::OrderAccepted(OrderAccepted {
            reserved_amount: dec!(0),
            accepted_at: at(1),
        }));
    }
    for i in 2..n.saturating_sub(1) {
        events.push(OrderEvent::OrderTriggered(OrderTriggered {
            market_price: dec!(139.5),
            triggered_at: at(i as i64),
        }));
    }
    if n >= 3 {
        events.push(executed(n as i64));
    }
    events
}

/// The three events of an executed order: what a replayed log is made of.
pub fn executed_order(order_id: Uuid) -> Vec<OrderEvent> {
    order_history(order_id, 3)
}

fn executed(millis: i64) -> OrderEvent {
    OrderEvent::OrderExecuted(OrderExecuted {
        execution_price: dec!(139.5),
        quantity: dec!(10),
        total_value: dec!(1395.0),
        market_price_at_exec: dec!(139.5),
        executed_at: at(millis),
    })
}

/// Envelopes as the order actor writes them: ids derived from the command id,
/// correlation by order, the caller and entry point named.
pub fn envelopes(order_id: Uuid, command_id: Uuid, events: &[OrderEvent]) -> Vec<NewEvent> {
    let metadata = EventMetadata {
        correlation_id: Some(order_id),
        causation_id: Some(command_id),
        who: Some(format!("user:{}", user_of(order_id))),
        source: Some("http".to_owned()),
        trace: None,
    };
    events
        .iter()
        .enumerate()
        .map(|(i, event)| {
            encode(event, Uuid::new_v5(&command_id, &i.to_le_bytes()), metadata.clone())
                .unwrap_or_else(|e| panic!("an order event must encode: {e}"))
        })
        .collect()
}

/// One append of `events` to a new order stream, with a command id as the engine sends.
pub fn new_order_append(order_id: Uuid, events: &[OrderEvent]) -> AppendRequest {
    let command_id = Uuid::new_v5(&order_id, b"bench");
    AppendRequest {
        stream_id: StreamId::order(order_id),
        expected_version: 0,
        command_id: Some(command_id),
        events: envelopes(order_id, command_id, events),
        linked: false,
    }
}

/// `streams` new orders, each submitted: the batch a group commit would form.
pub fn submissions(streams: usize) -> Vec<AppendRequest> {
    (0..streams)
        .map(|_| {
            let order_id = Uuid::now_v7();
            new_order_append(order_id, &order_history(order_id, 1))
        })
        .collect()
}

/// One new order stream carrying `n` events.
pub fn one_stream(n: usize) -> Vec<AppendRequest> {
    let order_id = Uuid::now_v7();
    vec![new_order_append(order_id, &order_history(order_id, n))]
}
