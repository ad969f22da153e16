//! Saga tests: given/when/then for each path, and a seeded simulation of the
//! money path with faults, checking conservation after every step.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use uuid::Uuid;

use super::*;
use crate::aggregate::Aggregate;
use crate::order::{
    self, AcceptOrder, CancelOrder, ExecuteOrder, FailOrder, OrderAggregate, OrderCommand, OrderEvent, OrderState,
    OrderStatus, OrderType, Quote, Side, SubmitOrder,
};

const ORDER: Uuid = Uuid::from_u128(42);
const USER: Uuid = Uuid::from_u128(43);

fn t(seconds: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 15, 0, 0).single().unwrap_or_default() + chrono::Duration::seconds(seconds)
}

fn ladder() -> Vec<Duration> {
    [300, 900, 3600, 21600].into_iter().map(Duration::from_secs).collect()
}

fn run(state: SagaState, command: SagaCommand) -> SagaState {
    let events = decide(&state, &command).unwrap();
    SagaAggregate::fold(state, &events)
}

fn started(side: Side, reserve: Decimal) -> SagaState {
    run(
        SagaState::default(),
        SagaCommand::Start {
            order_id: ORDER,
            user_id: USER,
            side,
            reserve_amount: reserve,
            at: t(0),
        },
    )
}

fn fail(step: Step, transient: bool, at: i64) -> SagaCommand {
    SagaCommand::RecordOutcome {
        step,
        outcome: StepOutcome::Failed {
            reason: "503 from balance service".into(),
            transient,
        },
        retry_delays: ladder(),
        at: t(at),
    }
}

fn succeed(step: Step, amount: Decimal) -> SagaCommand {
    SagaCommand::RecordOutcome {
        step,
        outcome: StepOutcome::Succeeded { amount },
        retry_delays: ladder(),
        at: t(1),
    }
}

fn attempt(step: Step, amount: Option<Decimal>, at: i64) -> SagaCommand {
    SagaCommand::Attempt {
        step,
        amount,
        at: t(at),
    }
}

#[test]
fn a_buy_reserves_first_and_is_accepted_after() {
    // Proves the reservation precedes acceptance, with an idempotency key per step.
    let saga = started(Side::Buy, dec!(1502.5));
    assert_eq!(
        next_actions(&saga, t(0)),
        vec![Action::Attempt {
            step: Step::Reserve,
            amount: Some(dec!(1502.5))
        }]
    );
    let saga = run(saga, attempt(Step::Reserve, Some(dec!(1502.5)), 0));
    assert_eq!(
        next_actions(&saga, t(0)),
        vec![Action::Call {
            step: Step::Reserve,
            attempt: 1,
            amount: Some(dec!(1502.5)),
            idempotency_key: format!("{ORDER}:reserve"),
        }]
    );
    let saga = run(saga, succeed(Step::Reserve, dec!(1502.5)));
    assert_eq!(
        next_actions(&saga, t(1)),
        vec![Action::AcceptOrder {
            reserved_amount: dec!(1502.5)
        }]
    );
}

#[test]
fn transient_failures_climb_the_ladder_then_the_order_fails() {
    // Proves seed 004's ladder (5 min, 15 min, 1 h, 6 h, at most 4 retries) and the give-up.
    let mut saga = started(Side::Buy, dec!(100));
    let mut now = 0;
    for (retry, delay) in [300, 900, 3600, 21600].into_iter().enumerate() {
        saga = run(saga, attempt(Step::Reserve, Some(dec!(100)), now));
        saga = run(saga, fail(Step::Reserve, true, now));
        assert_eq!(
            next_actions(&saga, t(now + delay - 1)),
            vec![Action::WaitUntil {
                step: Step::Reserve,
                at: t(now + delay)
            }],
            "after failure {}",
            retry + 1
        );
        now += delay;
        assert!(matches!(next_actions(&saga, t(now))[..], [Action::Attempt { .. }]));
    }
    saga = run(saga, attempt(Step::Reserve, Some(dec!(100)), now));
    saga = run(saga, fail(Step::Reserve, true, now));
    let actions = next_actions(&saga, t(now + 100_000));
    assert!(
        matches!(&actions[..], [Action::FailOrder { reason }] if reason.contains("503")),
        "{actions:?}"
    );
    assert_eq!(saga.saga().map(|s| s.step(Step::Reserve).attempts), Some(5));
}

#[test]
fn insufficient_funds_fails_at_once_and_releases_nothing_it_never_held() {
    // Proves a permanent refusal is not retried; the release still runs, idempotently.
    let saga = run(
        started(Side::Buy, dec!(100)),
        attempt(Step::Reserve, Some(dec!(100)), 0),
    );
    let saga = run(saga, fail(Step::Reserve, false, 0));
    assert!(matches!(&next_actions(&saga, t(0))[..], [Action::FailOrder { .. }]));
    let saga = run(
        saga,
        SagaCommand::Observe {
            event_id: Uuid::from_u128(1),
            order: ObservedOrder::Failed { reason: "funds".into() },
            at: t(1),
        },
    );
    assert_eq!(
        next_actions(&saga, t(1)),
        vec![Action::Attempt {
            step: Step::Release,
            amount: None
        }]
    );
}

#[test]
fn an_executed_buy_deducts_then_releases_the_remainder_then_completes() {
    // Proves the post-trade order of steps.
    let mut saga = run(
        started(Side::Buy, dec!(1600)),
        attempt(Step::Reserve, Some(dec!(1600)), 0),
    );
    saga = run(saga, succeed(Step::Reserve, dec!(1600)));
    saga = run(
        saga,
        SagaCommand::Observe {
            event_id: Uuid::from_u128(2),
            order: ObservedOrder::Executed {
                total_value: dec!(1502.5),
            },
            at: t(2),
        },
    );
    assert_eq!(
        next_actions(&saga, t(2)),
        vec![Action::Attempt {
            step: Step::Deduct,
            amount: Some(dec!(1502.5))
        }]
    );
    saga = run(saga, attempt(Step::Deduct, Some(dec!(1502.5)), 2));
    saga = run(saga, succeed(Step::Deduct, dec!(1502.5)));
    assert!(matches!(
        &next_actions(&saga, t(3))[..],
        [Action::Attempt {
            step: Step::Release,
            ..
        }]
    ));
    saga = run(saga, attempt(Step::Release, None, 3));
    saga = run(saga, succeed(Step::Release, dec!(97.5)));
    assert_eq!(next_actions(&saga, t(4)), vec![Action::Complete]);
    let saga = run(saga, SagaCommand::Complete { at: t(4) });
    assert!(next_actions(&saga, t(5)).is_empty());
}

#[test]
fn post_trade_steps_never_give_up() {
    // Proves a deduction stays on the last rung instead of leaving money reserved.
    let mut saga = run(started(Side::Buy, dec!(10)), attempt(Step::Reserve, Some(dec!(10)), 0));
    saga = run(saga, succeed(Step::Reserve, dec!(10)));
    saga = run(
        saga,
        SagaCommand::Observe {
            event_id: Uuid::from_u128(3),
            order: ObservedOrder::Executed { total_value: dec!(9) },
            at: t(0),
        },
    );
    for _ in 0..10 {
        saga = run(saga, attempt(Step::Deduct, Some(dec!(9)), 0));
        saga = run(saga, fail(Step::Deduct, true, 0));
    }
    assert_eq!(
        next_actions(&saga, t(0)),
        vec![Action::WaitUntil {
            step: Step::Deduct,
            at: t(21600)
        }]
    );
}

#[test]
fn duplicates_and_late_replies_change_nothing() {
    // Proves a replayed order event, a second start, and a late reply are absorbed.
    let saga = started(Side::Sell, dec!(0));
    let start_again = SagaCommand::Start {
        order_id: ORDER,
        user_id: USER,
        side: Side::Sell,
        reserve_amount: dec!(0),
        at: t(9),
    };
    assert_eq!(decide(&saga, &start_again), Ok(vec![]));
    let observe = SagaCommand::Observe {
        event_id: Uuid::from_u128(4),
        order: ObservedOrder::Cancelled { reason: "user".into() },
        at: t(1),
    };
    let saga = run(saga, observe.clone());
    assert_eq!(decide(&saga, &observe), Ok(vec![]));
    assert_eq!(
        decide(&saga, &succeed(Step::Credit, dec!(1))),
        Err(SagaRejection::NothingInFlight(Step::Credit))
    );
    assert_eq!(next_actions(&saga, t(1)), vec![Action::Complete]);
}

/// The balance service's money for one account, as a pure model with idempotency keys.
#[derive(Debug, Default, Clone)]
struct LedgerModel {
    available: Decimal,
    reserved: HashMap<Uuid, Decimal>,
    deducted: Decimal,
    credited: Decimal,
    applied: HashMap<String, Decimal>,
}

impl LedgerModel {
    fn apply(&mut self, step: Step, key: &str, amount: Option<Decimal>) -> Result<Decimal, (String, bool)> {
        if let Some(moved) = self.applied.get(key) {
            return Ok(*moved);
        }
        let held = self.reserved.get(&ORDER).copied().unwrap_or_default();
        let moved = match step {
            Step::Reserve => {
                let amount = amount.unwrap_or_default();
                if amount > self.available {
                    return Err(("insufficient funds".into(), false));
                }
                self.available -= amount;
                self.reserved.insert(ORDER, held + amount);
                amount
            }
            Step::Deduct => {
                let amount = amount.unwrap_or_default();
                if amount > held {
                    return Err(("deduction exceeds reservation".into(), false));
                }
                self.reserved.insert(ORDER, held - amount);
                self.deducted += amount;
                amount
            }
            Step::Release => {
                self.available += held;
                self.reserved.insert(ORDER, Decimal::ZERO);
                held
            }
            Step::Credit => {
                let amount = amount.unwrap_or_default();
                self.available += amount;
                self.credited += amount;
                amount
            }
        };
        self.applied.insert(key.to_owned(), moved);
        Ok(moved)
    }

    fn total(&self) -> Decimal {
        self.available + self.reserved.values().copied().sum::<Decimal>()
    }
}

#[derive(Debug, Clone)]
enum Fault {
    None,
    /// The call never reaches the service.
    Refused,
    /// The service applies the call, then the reply is lost.
    ReplyLost,
}

/// One seeded world: an order, its saga, a ledger, and a fault schedule.
struct World {
    order: OrderState,
    saga_log: Vec<SagaEvent>,
    ledger: LedgerModel,
    initial: Decimal,
    now: i64,
}

impl World {
    fn saga(&self) -> SagaState {
        // Rebuilt from the log every time: a crash can happen between any two steps.
        SagaAggregate::fold(SagaState::default(), &self.saga_log)
    }

    fn record(&mut self, command: SagaCommand) {
        let events = decide(&self.saga(), &command).unwrap_or_default();
        self.saga_log.extend(events);
    }

    fn order_command(&mut self, command: OrderCommand) -> Vec<OrderEvent> {
        match order::decide(&self.order, &command) {
            Ok(events) => {
                self.order = OrderAggregate::fold(self.order.clone(), &events);
                events
            }
            Err(_) => vec![],
        }
    }

    fn observe(&mut self, events: &[OrderEvent]) {
        for event in events {
            let observed = match event {
                OrderEvent::OrderExecuted(e) => ObservedOrder::Executed {
                    total_value: e.total_value,
                },
                OrderEvent::OrderCancelled(e) => ObservedOrder::Cancelled {
                    reason: e.reason.clone(),
                },
                OrderEvent::OrderFailed(e) => ObservedOrder::Failed {
                    reason: e.reason.clone(),
                },
                _ => continue,
            };
            let at = t(self.now);
            self.record(SagaCommand::Observe {
                event_id: Uuid::from_u128(self.saga_log.len() as u128),
                order: observed,
                at,
            });
        }
    }

    /// Performs the saga's next action under `fault`.
    fn drive(&mut self, fault: &Fault) {
        let at = t(self.now);
        for action in next_actions(&self.saga(), at) {
            match action {
                Action::Attempt { step, amount } => self.record(SagaCommand::Attempt { step, amount, at }),
                Action::Call {
                    step,
                    amount,
                    idempotency_key,
                    ..
                } => {
                    let outcome = match fault {
                        Fault::Refused => Err(("connection refused".to_owned(), true)),
                        Fault::ReplyLost => {
                            let _ = self.ledger.apply(step, &idempotency_key, amount);
                            Err(("timeout".to_owned(), true))
                        }
                        Fault::None => self.ledger.apply(step, &idempotency_key, amount),
                    };
                    let outcome = match outcome {
                        Ok(amount) => StepOutcome::Succeeded { amount },
                        Err((reason, transient)) => StepOutcome::Failed { reason, transient },
                    };
                    self.record(SagaCommand::RecordOutcome {
                        step,
                        outcome,
                        retry_delays: vec![Duration::from_secs(5), Duration::from_secs(15)],
                        at,
                    });
                }
                Action::WaitUntil { .. } => {}
                Action::AcceptOrder { reserved_amount } => {
                    self.order_command(OrderCommand::Accept(AcceptOrder {
                        reserved_amount,
                        accepted_at: at,
                    }));
                }
                Action::FailOrder { reason } => {
                    let events = self.order_command(OrderCommand::Fail(FailOrder { reason, failed_at: at }));
                    self.observe(&events);
                }
                Action::Complete => self.record(SagaCommand::Complete { at }),
            }
        }
    }

    fn check_conservation(&self) -> Result<(), TestCaseError> {
        // Money is neither made nor lost: what is held plus what left equals what came in.
        prop_assert_eq!(
            self.ledger.total() + self.ledger.deducted,
            self.initial + self.ledger.credited
        );
        prop_assert!(self.ledger.available >= Decimal::ZERO);
        Ok(())
    }
}

fn submit(side: Side, order_type: OrderType, limit: Option<Decimal>) -> SubmitOrder {
    SubmitOrder {
        order_id: ORDER,
        user_id: USER,
        symbol: "AAPL".into(),
        side,
        order_type,
        quantity: dec!(10),
        limit_price: limit,
        stop_price: None,
        quote: Some(Quote {
            price: dec!(100),
            as_of: t(0),
            market_open: true,
        }),
        submitted_at: t(0),
    }
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![6 => Just(Fault::None), 2 => Just(Fault::Refused), 2 => Just(Fault::ReplyLost)]
}

#[derive(Debug, Clone)]
enum Move {
    Drive(Fault),
    Execute(i64),
    Cancel,
    Wait(i64),
}

fn moves() -> impl Strategy<Value = Vec<Move>> {
    proptest::collection::vec(
        prop_oneof![
            6 => fault().prop_map(Move::Drive),
            2 => (9_000_i64..11_000).prop_map(Move::Execute),
            1 => Just(Move::Cancel),
            2 => (1_i64..30).prop_map(Move::Wait),
        ],
        0..60,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    /// Whatever fails and whenever the engine restarts, money is conserved after
    /// every step; once faults stop, the order ends, the saga completes, nothing
    /// stays reserved, and exactly the executed value moved.
    #[test]
    fn the_money_path_survives_faults_and_crashes(
        buy in any::<bool>(),
        limit in proptest::option::of(9_500_i64..10_500),
        funds in prop_oneof![Just(dec!(500)), Just(dec!(2000))],
        moves in moves(),
    ) {
        let side = if buy { Side::Buy } else { Side::Sell };
        let limit = limit.map(|cents| Decimal::new(cents, 2));
        let order_type = if limit.is_some() { OrderType::Limit } else { OrderType::Market };
        let mut world = World {
            order: OrderState::default(),
            saga_log: vec![],
            ledger: LedgerModel { available: funds, ..LedgerModel::default() },
            initial: funds,
            now: 0,
        };
        world.order_command(OrderCommand::Submit(submit(side, order_type, limit)));
        // The reservation covers a MARKET buy at up to 10 % over the quote.
        let reserve = if buy { dec!(10) * limit.unwrap_or(dec!(110)) } else { Decimal::ZERO };
        world.record(SagaCommand::Start { order_id: ORDER, user_id: USER, side, reserve_amount: reserve, at: t(0) });

        for m in &moves {
            match m {
                Move::Drive(f) => world.drive(f),
                Move::Execute(cents) => {
                    let price = Decimal::new(*cents, 2);
                    let events = world.order_command(OrderCommand::Execute(ExecuteOrder {
                        execution_price: price, market_price: price, executed_at: t(world.now),
                    }));
                    world.observe(&events);
                }
                Move::Cancel => {
                    let events = world.order_command(OrderCommand::Cancel(CancelOrder {
                        reason: "requested by user".into(), cancelled_at: t(world.now),
                    }));
                    world.observe(&events);
                }
                Move::Wait(s) => world.now += s,
            }
            world.check_conservation()?;
        }

        // Faults stop; a resting order is cancelled; the saga runs to its end.
        for _ in 0..20 {
            if world.order.status() == Some(OrderStatus::Processing) || world.order.status() == Some(OrderStatus::Pending) && world.saga().saga().is_some_and(|s| s.step(Step::Reserve).gave_up()) {
                let events = world.order_command(OrderCommand::Cancel(CancelOrder {
                    reason: "end of simulation".into(), cancelled_at: t(world.now),
                }));
                world.observe(&events);
            }
            world.now += 100_000;
            world.drive(&Fault::None);
            world.check_conservation()?;
        }

        let saga = world.saga();
        let saga = saga.saga().unwrap();
        let status = world.order.status().unwrap();
        prop_assert!(status.is_terminal(), "order stuck in {}", status);
        prop_assert!(saga.completed, "saga open: {:?}", saga);
        prop_assert_eq!(world.ledger.reserved.get(&ORDER).copied().unwrap_or_default(), Decimal::ZERO);
        let executed = world.order.order().and_then(|o| o.execution.clone()).map(|e| e.total_value);
        match (side, executed) {
            (Side::Buy, Some(total)) => prop_assert_eq!(world.ledger.deducted, total),
            (Side::Sell, Some(total)) => prop_assert_eq!(world.ledger.credited, total),
            (_, None) => prop_assert_eq!(world.ledger.deducted + world.ledger.credited, Decimal::ZERO),
        }
    }
}
