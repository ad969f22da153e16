//! Property tests of the order core: random command sequences, driven through
//! the store's own version planning and the event codec, keep the laws below.

use std::collections::HashMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use rust_decimal::Decimal;
use uuid::Uuid;

use super::*;
use crate::aggregate::Aggregate;
use crate::events::{decode, encode, EventMetadata, RecordedEvent, StreamId};
use crate::store::plan::{plan_batch, LogSnapshot, StreamHead};
use crate::store::AppendRequest;

const CASES: u32 = 1_000;
const ORDER: Uuid = Uuid::from_u128(7);

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 5, 14, 30, 0).single().unwrap_or_default()
}

fn price() -> impl Strategy<Value = Decimal> {
    prop_oneof![
        8 => (9_000_i64..=11_000).prop_map(|cents| Decimal::new(cents, 2)),
        1 => Just(Decimal::ZERO),
        1 => Just(Decimal::new(-100, 2)),
        1 => Just(Decimal::new(1, 9)),
    ]
}

fn quantity() -> impl Strategy<Value = Decimal> {
    prop_oneof![
        8 => (1_i64..=1_000).prop_map(|q| Decimal::new(q, 1)),
        1 => Just(Decimal::ZERO),
        1 => Just(Decimal::new(-5, 0)),
        1 => Just(Decimal::new(123_456_789, 9)),
    ]
}

fn side() -> impl Strategy<Value = Side> {
    prop_oneof![Just(Side::Buy), Just(Side::Sell)]
}

fn order_type() -> impl Strategy<Value = OrderType> {
    prop_oneof![
        Just(OrderType::Market),
        Just(OrderType::Limit),
        Just(OrderType::StopLoss),
        Just(OrderType::StopLimit)
    ]
}

/// A command with a time offset in seconds; times only move forward in a sequence.
fn command() -> impl Strategy<Value = OrderCommand> {
    let at = (0_i64..86_400).prop_map(|s| t0() + Duration::seconds(s));
    let reason = prop_oneof![
        Just(String::new()),
        Just("requested by user".to_owned()),
        Just("funds".to_owned())
    ];
    prop_oneof![
        2 => (side(), order_type(), quantity(), proptest::option::of(price()), proptest::option::of(price()),
              proptest::option::of((price(), any::<bool>())), prop_oneof![Just("AAPL"), Just("MSFT"), Just("bad sym")], at.clone())
            .prop_map(|(side, order_type, quantity, limit_price, stop_price, quote, symbol, submitted_at)| {
                OrderCommand::Submit(SubmitOrder {
                    order_id: ORDER,
                    user_id: Uuid::from_u128(9),
                    symbol: symbol.to_owned(),
                    side,
                    order_type,
                    quantity,
                    limit_price,
                    stop_price,
                    quote: quote.map(|(price, market_open)| Quote { price, as_of: submitted_at, market_open }),
                    submitted_at,
                })
            }),
        3 => (prop_oneof![Just(Decimal::ZERO), (0_i64..2_000_000).prop_map(|c| Decimal::new(c, 2))], at.clone())
            .prop_map(|(reserved_amount, accepted_at)| OrderCommand::Accept(AcceptOrder { reserved_amount, accepted_at })),
        2 => (price(), at.clone()).prop_map(|(market_price, triggered_at)| OrderCommand::Trigger(TriggerOrder { market_price, triggered_at })),
        3 => (price(), price(), at.clone()).prop_map(|(execution_price, market_price, executed_at)| {
                OrderCommand::Execute(ExecuteOrder { execution_price, market_price, executed_at })
            }),
        1 => (reason.clone(), at.clone()).prop_map(|(reason, cancelled_at)| OrderCommand::Cancel(CancelOrder { reason, cancelled_at })),
        1 => (reason, at).prop_map(|(reason, failed_at)| OrderCommand::Fail(FailOrder { reason, failed_at })),
    ]
}

/// A submission whose prices usually match its order type, so most runs go deep.
fn plausible_submit() -> impl Strategy<Value = OrderCommand> {
    (
        side(),
        order_type(),
        quantity(),
        price(),
        price(),
        any::<bool>(),
        0_u8..10,
    )
        .prop_map(|(side, order_type, quantity, limit, stop, market_open, noise)| {
            // One time in ten the price fields ignore the type, to exercise the rules.
            let matched = noise != 0;
            let limit_price = (order_type.needs_limit_price() == matched).then_some(limit);
            let stop_price = (order_type.needs_stop_price() == matched).then_some(stop);
            OrderCommand::Submit(SubmitOrder {
                order_id: ORDER,
                user_id: Uuid::from_u128(9),
                symbol: "AAPL".to_owned(),
                side,
                order_type,
                quantity,
                limit_price,
                stop_price,
                quote: Some(Quote {
                    price: Decimal::new(10_000, 2),
                    as_of: t0(),
                    market_open: market_open || noise > 2,
                }),
                submitted_at: t0(),
            })
        })
}

/// A sequence that usually starts with a plausible submission, so most runs go deep.
fn commands() -> impl Strategy<Value = Vec<OrderCommand>> {
    let first = prop_oneof![9 => plausible_submit(), 1 => command()];
    (first, proptest::collection::vec(command(), 0..16)).prop_map(|(first, rest)| {
        let mut all = vec![first];
        all.extend(rest);
        all
    })
}

/// One run of a sequence: the live state, the recorded log, and what happened to each command.
struct Run {
    state: OrderState,
    log: Vec<RecordedEvent>,
    steps: Vec<Step>,
}

struct Step {
    before: OrderState,
    log_len_before: usize,
    outcome: Result<Vec<OrderEvent>, OrderRejection>,
    after: OrderState,
    log_len_after: usize,
}

/// Stores events the way the real stores do: planned by `plan_batch`,
/// serialised to JSON text and parsed back.
fn run(commands: &[OrderCommand]) -> Run {
    let stream = StreamId::order(ORDER);
    let mut state = OrderState::default();
    let mut log: Vec<RecordedEvent> = Vec::new();
    let mut steps = Vec::new();
    for (i, command) in commands.iter().enumerate() {
        let before = state.clone();
        let log_len_before = log.len();
        let outcome = decide(&state, command);
        if let Ok(events) = &outcome {
            let new_events = events
                .iter()
                .enumerate()
                .map(|(j, e)| {
                    encode(
                        e,
                        Uuid::from_u128(((i as u128) << 32) | j as u128),
                        EventMetadata::default(),
                    )
                    .unwrap()
                })
                .collect();
            let version = log.len() as u64;
            let requests = [AppendRequest {
                stream_id: stream.clone(),
                expected_version: version,
                command_id: Some(Uuid::from_u128(1_000 + i as u128)),
                events: new_events,
                linked: false,
            }];
            let snapshot = LogSnapshot {
                head_position: version,
                head_hash: None,
                streams: HashMap::from([(stream.clone(), StreamHead { version, hash: None })]),
                commands: HashMap::new(),
            };
            let plan = plan_batch(&requests, snapshot, t0());
            assert!(
                plan.results[0].is_ok(),
                "planning refused an append at the right version"
            );
            for row in &plan.rows {
                let stored_payload = row.payload.to_string();
                let recorded = RecordedEvent {
                    global_position: row.position,
                    stream_id: row.stream_id.clone(),
                    stream_version: row.version,
                    event_id: row.event_id,
                    event_type: row.event_type.to_owned(),
                    schema_version: row.schema_version,
                    payload: crate::events::Payload::parse(stored_payload).unwrap(),
                    metadata: row.metadata.clone(),
                    command_id: row.command_id,
                    recorded_at: plan.recorded_at,
                };
                let decoded: OrderEvent = decode(&recorded).unwrap();
                state = evolve(state, &decoded);
                log.push(recorded);
            }
        }
        steps.push(Step {
            before,
            log_len_before,
            outcome,
            after: state.clone(),
            log_len_after: log.len(),
        });
    }
    Run { state, log, steps }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Once EXECUTED, CANCELLED or FAILED, every later command is refused and nothing changes.
    #[test]
    fn terminal_states_stay_terminal(commands in commands()) {
        let run = run(&commands);
        for step in &run.steps {
            if step.before.status().is_some_and(OrderStatus::is_terminal) {
                prop_assert!(step.outcome.is_err(), "accepted after a final state: {:?}", step.outcome);
                prop_assert_eq!(&step.after, &step.before);
            }
        }
    }

    /// Versions run 1, 2, 3… with no gap or repeat, and so do positions.
    #[test]
    fn stream_versions_are_contiguous(commands in commands()) {
        let run = run(&commands);
        for (i, event) in run.log.iter().enumerate() {
            prop_assert_eq!(event.stream_version, i as u64 + 1);
            prop_assert_eq!(event.global_position, i as u64 + 1);
        }
    }

    /// Hydrating from the stored log gives exactly the live state.
    #[test]
    fn folding_the_log_reproduces_the_state(commands in commands()) {
        let run = run(&commands);
        let events: Vec<OrderEvent> = run.log.iter().map(|r| decode(r).unwrap()).collect();
        let hydrated = OrderAggregate::fold(OrderState::default(), &events);
        prop_assert_eq!(hydrated, run.state);
    }

    /// A refused command leaves state and log untouched, and is refused the same way again.
    #[test]
    fn a_rejected_command_emits_nothing(commands in commands()) {
        let run = run(&commands);
        for (step, command) in run.steps.iter().zip(&commands) {
            if let Err(rejection) = &step.outcome {
                prop_assert_eq!(step.log_len_after, step.log_len_before);
                prop_assert_eq!(&step.after, &step.before);
                prop_assert_eq!(decide(&step.before, command), Err(rejection.clone()));
            } else {
                prop_assert!(step.log_len_after > step.log_len_before);
            }
        }
    }

    /// Every event comes back equal from its stored JSON, through the codec.
    #[test]
    fn every_event_survives_a_serde_round_trip(commands in commands()) {
        for step in run(&commands).steps {
            for event in step.outcome.iter().flatten() {
                let stored = encode(event, Uuid::nil(), EventMetadata::default()).unwrap();
                let text = stored.payload.to_string();
                let recorded = RecordedEvent {
                    global_position: 1,
                    stream_id: StreamId::order(ORDER),
                    stream_version: 1,
                    event_id: stored.event_id,
                    event_type: stored.event_type,
                    schema_version: stored.schema_version,
                    payload: crate::events::Payload::parse(text).unwrap(),
                    metadata: stored.metadata,
                    command_id: None,
                    recorded_at: t0(),
                };
                prop_assert_eq!(&decode::<OrderEvent>(&recorded).unwrap(), event);
            }
        }
    }

    /// Money rules hold on every path: a BUY never costs more than its
    /// reservation, a SELL reserves nothing, and a limit is never crossed.
    #[test]
    fn executions_respect_reservations_and_limits(commands in commands()) {
        let run = run(&commands);
        if let Some(order) = run.state.order() {
            prop_assert!(order.reserved_amount >= Decimal::ZERO);
            if order.side == Side::Sell {
                prop_assert_eq!(order.reserved_amount, Decimal::ZERO);
            }
            if let Some(execution) = &order.execution {
                prop_assert_eq!(execution.total_value, order.quantity * execution.price);
                if order.side == Side::Buy {
                    prop_assert!(execution.total_value <= order.reserved_amount);
                }
                if let Some(limit) = order.limit_price {
                    match order.side {
                        Side::Buy => prop_assert!(execution.price <= limit),
                        Side::Sell => prop_assert!(execution.price >= limit),
                    }
                }
            }
        }
    }
}

#[test]
fn sequences_reach_every_final_status() {
    // Proves the generator is not vacuous: it drives orders to each final status.
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut seen = std::collections::HashSet::new();
    let mut finished = 0;
    let runs = 5_000;
    for _ in 0..runs {
        let commands = commands().new_tree(&mut runner).unwrap().current();
        if let Some(status) = run(&commands).state.status() {
            seen.insert(status);
            finished += usize::from(status.is_terminal());
        }
    }
    println!("{finished} of {runs} generated sequences ended in a final status");
    assert!(
        finished * 5 >= runs,
        "fewer than 20% of sequences reach a final status: {finished}"
    );
    for status in [
        OrderStatus::Executed,
        OrderStatus::Cancelled,
        OrderStatus::Failed,
        OrderStatus::Processing,
    ] {
        assert!(seen.contains(&status), "no generated sequence reached {status}");
    }
}
