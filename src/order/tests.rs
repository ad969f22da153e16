//! Given/when/then tests of the order's rules: given past events, when a
//! command arrives, then these events (or this rejection).

use chrono::{DateTime, TimeZone, Utc};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use uuid::Uuid;

use super::*;
use crate::aggregate::Aggregate;

const ORDER: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);
const USER: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0002);

fn at(second: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 2, 15, 0, second)
        .single()
        .unwrap_or_default()
}

fn quote(price: Decimal) -> Option<Quote> {
    Some(Quote {
        price,
        as_of: at(0),
        market_open: true,
    })
}

fn submit(side: Side, order_type: OrderType, limit: Option<Decimal>, stop: Option<Decimal>) -> SubmitOrder {
    SubmitOrder {
        order_id: ORDER,
        user_id: USER,
        symbol: "AAPL".into(),
        side,
        order_type,
        quantity: dec!(10),
        limit_price: limit,
        stop_price: stop,
        quote: quote(dec!(150.25)),
        submitted_at: at(0),
    }
}

fn submitted(side: Side, order_type: OrderType, limit: Option<Decimal>, stop: Option<Decimal>) -> OrderEvent {
    OrderEvent::OrderSubmitted(OrderSubmitted {
        order_id: ORDER,
        user_id: USER,
        symbol: Symbol::parse("AAPL").unwrap(),
        side,
        order_type,
        quantity: dec!(10),
        limit_price: limit,
        stop_price: stop,
        market_price_at_submission: Some(dec!(150.25)),
        market_data_timestamp: Some(at(0)),
        submitted_at: at(0),
    })
}

fn accepted(reserved: Decimal) -> OrderEvent {
    OrderEvent::OrderAccepted(OrderAccepted {
        reserved_amount: reserved,
        accepted_at: at(1),
    })
}

fn triggered(price: Decimal) -> OrderEvent {
    OrderEvent::OrderTriggered(OrderTriggered {
        market_price: price,
        triggered_at: at(2),
    })
}

fn execute(price: Decimal) -> OrderCommand {
    OrderCommand::Execute(ExecuteOrder {
        execution_price: price,
        market_price: price,
        executed_at: at(3),
    })
}

fn executed(price: Decimal) -> OrderEvent {
    OrderEvent::OrderExecuted(OrderExecuted {
        execution_price: price,
        quantity: dec!(10),
        total_value: dec!(10) * price,
        market_price_at_exec: price,
        executed_at: at(3),
    })
}

fn trigger(price: Decimal) -> OrderCommand {
    OrderCommand::Trigger(TriggerOrder {
        market_price: price,
        triggered_at: at(2),
    })
}

struct Given(OrderState);

fn given(events: &[OrderEvent]) -> Given {
    Given(OrderAggregate::fold(OrderState::default(), events))
}

impl Given {
    fn when(&self, command: OrderCommand) -> Result<Vec<OrderEvent>, OrderRejection> {
        decide(&self.0, &command)
    }
}

#[test]
fn a_valid_market_order_is_submitted_with_the_quote() {
    // Proves submission records the order and the market price it saw.
    let then = given(&[]).when(OrderCommand::Submit(submit(Side::Buy, OrderType::Market, None, None)));
    assert_eq!(then, Ok(vec![submitted(Side::Buy, OrderType::Market, None, None)]));
}

#[test]
fn submission_enforces_quantity_and_price_rules() {
    // Proves each submission rule yields its own named rejection.
    type IsExpected = fn(&OrderRejection) -> bool;
    let cases: Vec<(SubmitOrder, IsExpected)> = vec![
        (
            SubmitOrder {
                quantity: dec!(0),
                ..submit(Side::Buy, OrderType::Market, None, None)
            },
            |r| {
                matches!(
                    r,
                    OrderRejection::InvalidQuantity {
                        reason: AmountError::NotPositive,
                        ..
                    }
                )
            },
        ),
        (
            SubmitOrder {
                quantity: dec!(-5),
                ..submit(Side::Buy, OrderType::Market, None, None)
            },
            |r| {
                matches!(
                    r,
                    OrderRejection::InvalidQuantity {
                        reason: AmountError::NotPositive,
                        ..
                    }
                )
            },
        ),
        (
            SubmitOrder {
                quantity: dec!(1.123456789),
                ..submit(Side::Buy, OrderType::Market, None, None)
            },
            |r| {
                matches!(
                    r,
                    OrderRejection::InvalidQuantity {
                        reason: AmountError::TooManyDecimalPlaces(9),
                        ..
                    }
                )
            },
        ),
        (submit(Side::Buy, OrderType::Limit, None, None), |r| {
            matches!(
                r,
                OrderRejection::PriceRequired {
                    field: "limit_price",
                    ..
                }
            )
        }),
        (submit(Side::Sell, OrderType::StopLoss, None, None), |r| {
            matches!(
                r,
                OrderRejection::PriceRequired {
                    field: "stop_price",
                    ..
                }
            )
        }),
        (submit(Side::Sell, OrderType::StopLimit, Some(dec!(100)), None), |r| {
            matches!(
                r,
                OrderRejection::PriceRequired {
                    field: "stop_price",
                    ..
                }
            )
        }),
        (submit(Side::Buy, OrderType::Market, Some(dec!(100)), None), |r| {
            matches!(
                r,
                OrderRejection::PriceNotAllowed {
                    field: "limit_price",
                    ..
                }
            )
        }),
        (
            submit(Side::Buy, OrderType::Limit, Some(dec!(100)), Some(dec!(90))),
            |r| {
                matches!(
                    r,
                    OrderRejection::PriceNotAllowed {
                        field: "stop_price",
                        ..
                    }
                )
            },
        ),
        (submit(Side::Buy, OrderType::Limit, Some(dec!(-1)), None), |r| {
            matches!(
                r,
                OrderRejection::InvalidPrice {
                    field: "limit_price",
                    ..
                }
            )
        }),
        (
            SubmitOrder {
                symbol: "aapl".into(),
                ..submit(Side::Buy, OrderType::Market, None, None)
            },
            |r| matches!(r, OrderRejection::InvalidSymbol(SymbolError::BadCharacters(_))),
        ),
        (
            SubmitOrder {
                quote: None,
                ..submit(Side::Buy, OrderType::Market, None, None)
            },
            |r| matches!(r, OrderRejection::UnknownSymbol { .. }),
        ),
        (
            SubmitOrder {
                quote: Some(Quote {
                    market_open: false,
                    ..quote(dec!(1)).unwrap()
                }),
                ..submit(Side::Buy, OrderType::Market, None, None)
            },
            |r| matches!(r, OrderRejection::MarketClosed { .. }),
        ),
    ];
    for (command, expected) in cases {
        let outcome = given(&[]).when(OrderCommand::Submit(command.clone()));
        match outcome {
            Err(rejection) => assert!(expected(&rejection), "{command:?} gave {rejection:?}"),
            Ok(events) => panic!("{command:?} was accepted: {events:?}"),
        }
    }
}

#[test]
fn a_limit_order_rests_while_the_market_is_closed() {
    // Proves only MARKET orders need an open market.
    let mut command = submit(Side::Buy, OrderType::Limit, Some(dec!(140)), None);
    command.quote = Some(Quote {
        market_open: false,
        ..quote(dec!(150)).unwrap()
    });
    assert!(given(&[]).when(OrderCommand::Submit(command)).is_ok());
}

#[test]
fn a_second_submission_of_the_same_order_is_refused() {
    // Proves an order id is used once.
    let then = given(&[submitted(Side::Buy, OrderType::Market, None, None)]).when(OrderCommand::Submit(submit(
        Side::Buy,
        OrderType::Market,
        None,
        None,
    )));
    assert_eq!(then, Err(OrderRejection::AlreadySubmitted { order_id: ORDER }));
}

#[test]
fn a_buy_is_accepted_only_with_enough_funds_reserved() {
    // Proves acceptance needs a reservation covering quantity × limit for a BUY.
    let history = [submitted(Side::Buy, OrderType::Limit, Some(dec!(140)), None)];
    let accept = |reserved| {
        OrderCommand::Accept(AcceptOrder {
            reserved_amount: reserved,
            accepted_at: at(1),
        })
    };
    assert_eq!(
        given(&history).when(accept(dec!(0))),
        Err(OrderRejection::ReservationRequired)
    );
    assert_eq!(
        given(&history).when(accept(dec!(1399.99))),
        Err(OrderRejection::ReservationTooSmall {
            required: dec!(1400),
            reserved: dec!(1399.99)
        })
    );
    assert_eq!(given(&history).when(accept(dec!(1400))), Ok(vec![accepted(dec!(1400))]));
}

#[test]
fn a_sell_reserves_nothing() {
    // Proves a SELL is accepted without funds and refuses a reservation.
    let history = [submitted(Side::Sell, OrderType::Market, None, None)];
    let accept = |reserved| {
        OrderCommand::Accept(AcceptOrder {
            reserved_amount: reserved,
            accepted_at: at(1),
        })
    };
    assert_eq!(
        given(&history).when(accept(dec!(5))),
        Err(OrderRejection::ReservationNotAllowed { reserved: dec!(5) })
    );
    assert_eq!(given(&history).when(accept(dec!(0))), Ok(vec![accepted(dec!(0))]));
}

#[test]
fn a_pending_order_cannot_execute() {
    // Proves execution needs the funds step first.
    let then = given(&[submitted(Side::Buy, OrderType::Market, None, None)]).when(execute(dec!(150)));
    assert_eq!(
        then,
        Err(OrderRejection::WrongStatus {
            command: "ExecuteOrder",
            expected: OrderStatus::Processing,
            actual: OrderStatus::Pending
        })
    );
}

#[test]
fn a_market_buy_executes_within_its_reservation() {
    // Proves a BUY never executes for more than was reserved.
    let history = [
        submitted(Side::Buy, OrderType::Market, None, None),
        accepted(dec!(1600)),
    ];
    assert_eq!(
        given(&history).when(execute(dec!(150.25))),
        Ok(vec![executed(dec!(150.25))])
    );
    assert_eq!(
        given(&history).when(execute(dec!(160.01))),
        Err(OrderRejection::ExceedsReservation {
            cost: dec!(1600.10),
            reserved: dec!(1600)
        })
    );
}

#[test]
fn a_limit_order_executes_only_at_its_limit_or_better() {
    // Proves the limit binds: a BUY at or below it, a SELL at or above it.
    let buy = [
        submitted(Side::Buy, OrderType::Limit, Some(dec!(140)), None),
        accepted(dec!(1400)),
    ];
    assert!(given(&buy).when(execute(dec!(140))).is_ok());
    assert!(given(&buy).when(execute(dec!(139.5))).is_ok());
    assert!(matches!(
        given(&buy).when(execute(dec!(140.01))),
        Err(OrderRejection::LimitNotMet { .. })
    ));

    let sell = [
        submitted(Side::Sell, OrderType::Limit, Some(dec!(160)), None),
        accepted(dec!(0)),
    ];
    assert!(given(&sell).when(execute(dec!(160))).is_ok());
    assert!(matches!(
        given(&sell).when(execute(dec!(159.99))),
        Err(OrderRejection::LimitNotMet { .. })
    ));
}

#[test]
fn a_stop_loss_triggers_at_its_stop_then_executes_at_market() {
    // Proves a sell stop needs the price at or below the stop, then fills like MARKET.
    let history = [
        submitted(Side::Sell, OrderType::StopLoss, None, Some(dec!(140))),
        accepted(dec!(0)),
    ];
    assert!(matches!(
        given(&history).when(execute(dec!(139))),
        Err(OrderRejection::NotTriggered)
    ));
    assert!(matches!(
        given(&history).when(trigger(dec!(140.01))),
        Err(OrderRejection::StopNotReached { .. })
    ));
    assert_eq!(given(&history).when(trigger(dec!(140))), Ok(vec![triggered(dec!(140))]));

    let fired = [history[0].clone(), history[1].clone(), triggered(dec!(139))];
    assert_eq!(
        given(&fired).when(execute(dec!(138.5))),
        Ok(vec![executed(dec!(138.5))])
    );
    assert_eq!(
        given(&fired).when(trigger(dec!(130))),
        Err(OrderRejection::AlreadyTriggered)
    );
}

#[test]
fn a_buy_stop_triggers_on_a_rise() {
    // Proves a buy stop fires when the price reaches the stop from below.
    let history = [
        submitted(Side::Buy, OrderType::StopLoss, None, Some(dec!(160))),
        accepted(dec!(1700)),
    ];
    assert!(matches!(
        given(&history).when(trigger(dec!(159))),
        Err(OrderRejection::StopNotReached { .. })
    ));
    assert!(given(&history).when(trigger(dec!(160))).is_ok());
}

#[test]
fn a_triggered_stop_limit_respects_its_limit() {
    // Proves a STOP_LIMIT becomes a LIMIT order once triggered.
    let history = [
        submitted(Side::Sell, OrderType::StopLimit, Some(dec!(138)), Some(dec!(140))),
        accepted(dec!(0)),
        triggered(dec!(139)),
    ];
    assert!(matches!(
        given(&history).when(execute(dec!(137.99))),
        Err(OrderRejection::LimitNotMet { .. })
    ));
    assert!(given(&history).when(execute(dec!(138))).is_ok());
}

#[test]
fn only_stop_orders_trigger() {
    // Proves triggering a LIMIT order is refused by name.
    let history = [
        submitted(Side::Buy, OrderType::Limit, Some(dec!(140)), None),
        accepted(dec!(1400)),
    ];
    assert!(matches!(
        given(&history).when(trigger(dec!(1))),
        Err(OrderRejection::NotAStopOrder {
            order_type: OrderType::Limit
        })
    ));
}

#[test]
fn cancellation_is_allowed_until_the_order_is_final() {
    // Proves cancel works while PENDING or PROCESSING and is refused after EXECUTED.
    let cancel = || {
        OrderCommand::Cancel(CancelOrder {
            reason: "requested by user".into(),
            cancelled_at: at(4),
        })
    };
    let pending = [submitted(Side::Buy, OrderType::Limit, Some(dec!(140)), None)];
    assert!(given(&pending).when(cancel()).is_ok());
    let resting = [pending[0].clone(), accepted(dec!(1400))];
    assert!(given(&resting).when(cancel()).is_ok());
    let done = [resting[0].clone(), resting[1].clone(), executed(dec!(140))];
    assert_eq!(
        given(&done).when(cancel()),
        Err(OrderRejection::AlreadyFinal {
            status: OrderStatus::Executed
        })
    );
}

#[test]
fn failure_needs_a_reason_and_is_final() {
    // Proves a failure records its reason and nothing follows it.
    let history = [submitted(Side::Buy, OrderType::Market, None, None)];
    let fail = |reason: &str| {
        OrderCommand::Fail(FailOrder {
            reason: reason.into(),
            failed_at: at(5),
        })
    };
    assert_eq!(given(&history).when(fail("  ")), Err(OrderRejection::ReasonRequired));
    let events = given(&history).when(fail("insufficient funds")).unwrap();
    let state = OrderAggregate::fold(given(&history).0, &events);
    assert_eq!(state.status(), Some(OrderStatus::Failed));
    assert_eq!(
        state.order().and_then(|o| o.reason.clone()).as_deref(),
        Some("insufficient funds")
    );
    assert!(matches!(
        decide(&state, &execute(dec!(1))),
        Err(OrderRejection::AlreadyFinal { .. })
    ));
}

#[test]
fn commands_before_submission_are_refused() {
    // Proves an empty stream accepts only a submission.
    assert_eq!(given(&[]).when(execute(dec!(1))), Err(OrderRejection::NotSubmitted));
}

#[test]
fn rejections_read_as_instructions() {
    // Proves messages name the rule and the values involved.
    let message = OrderRejection::LimitNotMet {
        side: Side::Buy,
        limit_price: dec!(140),
        execution_price: dec!(141),
    }
    .to_string();
    assert_eq!(message, "a BUY limit of 140 forbids execution at 141");
    let message = OrderRejection::PriceRequired {
        order_type: OrderType::StopLimit,
        field: "stop_price",
    }
    .to_string();
    assert_eq!(message, "a STOP_LIMIT order needs a stop_price");
}

#[test]
fn try_evolve_names_an_event_after_the_final_status_in_every_build() {
    // Proves the terminal-status invariant is a typed refusal in release builds too, not a debug-only assertion.
    let state = OrderAggregate::fold(
        OrderState::default(),
        &[
            submitted(Side::Buy, OrderType::Market, None, None),
            accepted(dec!(1600)),
            executed(dec!(150)),
        ],
    );
    let again = OrderAggregate::try_evolve(state.clone(), &executed(dec!(151)));
    assert!(
        matches!(&again, Err(v) if v.0.contains("after its final status EXECUTED")),
        "{again:?}"
    );
    let twice = OrderAggregate::try_evolve(state, &submitted(Side::Buy, OrderType::Market, None, None));
    assert!(twice.is_err(), "{twice:?}");
    let orphan = OrderAggregate::try_evolve(OrderState::default(), &accepted(dec!(1)));
    assert!(
        matches!(&orphan, Err(v) if v.0.contains("never submitted")),
        "{orphan:?}"
    );
}
