//! Property tests of the account core: random sequences of money movements,
//! with idempotency keys drawn from a small pool so keys repeat (the same
//! request again, or another request under a used key), keep the laws below.
//! Events go through the codec and JSON text, as the stores keep them.

use std::collections::HashSet;

use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use rust_decimal::Decimal;
use uuid::Uuid;

use super::*;
use crate::aggregate::Aggregate;
use crate::events::{decode, encode, EventMetadata, RecordedEvent, StreamId};

const CASES: u32 = 1_000;
const USER: Uuid = Uuid::from_u128(11);
const ORDERS: [Uuid; 3] = [Uuid::from_u128(21), Uuid::from_u128(22), Uuid::from_u128(23)];
const KEYS: usize = 32;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 5, 14, 30, 0).single().unwrap_or_default()
}

/// Mostly valid cents, sometimes an amount the rules refuse.
fn amount() -> impl Strategy<Value = Decimal> {
    prop_oneof![
        12 => (1_i64..=40_000).prop_map(|cents| Decimal::new(cents, 2)),
        1 => (1_i64..=99).prop_map(|units| Decimal::new(units, 8)),
        1 => Just(Decimal::ZERO),
        1 => Just(Decimal::new(-500, 2)),
        1 => Just(Decimal::new(1, 9)),
    ]
}

/// What one generated step does: a fresh command, or a verbatim repeat of an
/// earlier one (a retry).
#[derive(Debug, Clone)]
enum Draw {
    Fresh(AccountCommand),
    Repeat(usize),
}

fn command() -> impl Strategy<Value = AccountCommand> {
    let key = (0..KEYS).prop_map(|k| format!("key-{k}"));
    let order = (0..ORDERS.len()).prop_map(|i| ORDERS[i]);
    let at = (0_i64..86_400).prop_map(|s| t0() + Duration::seconds(s));
    prop_oneof![
        1 => (amount(), key.clone(), at.clone()).prop_map(|(amount, idempotency_key, at)| {
            AccountCommand::Deposit { amount, idempotency_key, at }
        }),
        4 => (order.clone(), amount(), key.clone(), at.clone()).prop_map(|(order_id, amount, idempotency_key, at)| {
            AccountCommand::Reserve { order_id, amount, idempotency_key, at }
        }),
        3 => (order.clone(), amount(), key.clone(), at.clone()).prop_map(|(order_id, amount, idempotency_key, at)| {
            AccountCommand::Deduct { order_id, amount, idempotency_key, at }
        }),
        2 => (order.clone(), key.clone(), at.clone()).prop_map(|(order_id, idempotency_key, at)| {
            AccountCommand::Release { order_id, idempotency_key, at }
        }),
        2 => (order, amount(), key, at.clone()).prop_map(|(order_id, amount, idempotency_key, at)| {
            AccountCommand::Credit { order_id, amount, idempotency_key, at }
        }),
        1 => at.prop_map(|at| AccountCommand::Open { user_id: USER, at }),
    ]
}

fn draw() -> impl Strategy<Value = Draw> {
    prop_oneof![
        4 => command().prop_map(Draw::Fresh),
        1 => any::<usize>().prop_map(Draw::Repeat),
    ]
}

/// A sequence that usually opens and funds the account first, so most runs go deep.
fn commands() -> impl Strategy<Value = Vec<AccountCommand>> {
    let funding = (1_i64..=500_000).prop_map(|cents| AccountCommand::Deposit {
        amount: Decimal::new(cents, 2),
        idempotency_key: "funding".into(),
        at: t0(),
    });
    let opening = Just(AccountCommand::Open {
        user_id: USER,
        at: t0(),
    });
    let start = prop_oneof![
        9 => (opening, funding).prop_map(|(open, fund)| vec![open, fund]),
        1 => Just(vec![]),
    ];
    (start, proptest::collection::vec(draw(), 0..40)).prop_map(|(start, draws)| {
        let mut all = start;
        for draw in draws {
            let command = match draw {
                Draw::Fresh(command) => command,
                Draw::Repeat(_) if all.is_empty() => continue,
                Draw::Repeat(i) => all[i % all.len()].clone(),
            };
            all.push(command);
        }
        all
    })
}

/// Stores an event the way the stores do: encoded, written as JSON text, read back.
fn store(event: &AccountEvent, position: u64) -> RecordedEvent {
    let stored = encode(event, Uuid::from_u128(u128::from(position)), EventMetadata::default()).unwrap();
    let text = stored.payload.to_string();
    RecordedEvent {
        global_position: position,
        stream_id: StreamId::account(USER),
        stream_version: position,
        event_id: stored.event_id,
        event_type: stored.event_type,
        schema_version: stored.schema_version,
        payload: crate::events::Payload::parse(text).unwrap(),
        metadata: stored.metadata,
        command_id: None,
        recorded_at: t0(),
    }
}

struct Step {
    before: AccountState,
    outcome: Result<Vec<AccountEvent>, AccountRejection>,
    after: AccountState,
}

struct Run {
    state: AccountState,
    log: Vec<RecordedEvent>,
    steps: Vec<Step>,
}

/// Drives the commands, folding each step's events back from the stored log.
fn run(commands: &[AccountCommand]) -> Run {
    let mut state = AccountState::default();
    let mut log = Vec::new();
    let mut steps = Vec::new();
    for command in commands {
        let before = state.clone();
        let outcome = decide(&state, command);
        for event in outcome.iter().flatten() {
            let recorded = store(event, log.len() as u64 + 1);
            state = evolve(state, &decode::<AccountEvent>(&recorded).unwrap());
            log.push(recorded);
        }
        steps.push(Step {
            before,
            outcome,
            after: state.clone(),
        });
    }
    Run { state, log, steps }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Available and every reservation stay non-negative after every step.
    #[test]
    fn available_never_goes_negative(commands in commands()) {
        for step in run(&commands).steps {
            if let Some(account) = step.after.account() {
                prop_assert!(account.available >= Decimal::ZERO, "available {}", account.available);
                prop_assert!(account.reserved.values().all(|r| *r > Decimal::ZERO), "{:?}", account.reserved);
            }
        }
    }

    /// available + Σreserved = deposited + credited − deducted after every step.
    #[test]
    fn money_is_conserved(commands in commands()) {
        for step in run(&commands).steps {
            if let Some(account) = step.after.account() {
                prop_assert_eq!(
                    account.available + account.reserved_total(),
                    account.deposited + account.credited - account.deducted
                );
            }
        }
    }

    /// Applying a command twice with its key equals applying it once: the
    /// second emits nothing, the state is unchanged, and the key's receipt
    /// (the caller's answer) stays what the first call made it, to the end.
    #[test]
    fn a_repeated_key_moves_money_once(commands in commands()) {
        let run = run(&commands);
        for (step, command) in run.steps.iter().zip(&commands) {
            match &step.outcome {
                Ok(_) => {
                    let (twice, again) = AccountAggregate::handle(&step.after, command).unwrap();
                    prop_assert!(again.is_empty(), "a repeat emitted {:?}", again);
                    prop_assert_eq!(&twice, &step.after);
                    if let (Some(key), Some(account)) = (command.idempotency_key(), step.after.account()) {
                        let first = account.receipt(key);
                        let last = run.state.account().and_then(|a| a.receipt(key));
                        prop_assert!(first.is_some());
                        prop_assert_eq!(first, last);
                    }
                }
                // A refusal changes nothing and is refused the same way again.
                Err(rejection) => {
                    prop_assert_eq!(&step.after, &step.before);
                    prop_assert_eq!(decide(&step.before, command), Err(rejection.clone()));
                }
            }
        }
    }

    /// Hydrating from the stored log gives exactly the live state.
    #[test]
    fn folding_the_log_reproduces_the_state(commands in commands()) {
        let run = run(&commands);
        let events: Vec<AccountEvent> = run.log.iter().map(|r| decode(r).unwrap()).collect();
        prop_assert_eq!(AccountAggregate::fold(AccountState::default(), &events), run.state);
    }

    /// Every emitted event comes back equal from its stored JSON, through the codec.
    #[test]
    fn every_event_survives_a_serde_round_trip(commands in commands()) {
        for (position, step) in (1_u64..).zip(run(&commands).steps) {
            for event in step.outcome.iter().flatten() {
                prop_assert_eq!(&decode::<AccountEvent>(&store(event, position)).unwrap(), event);
            }
        }
    }
}

#[test]
fn sequences_exercise_every_rule() {
    // Proves the generator is not vacuous: every event, every refusal and plain repeats occur.
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut events = HashSet::new();
    let mut rejections = HashSet::new();
    let mut repeats = 0;
    for _ in 0..2_000 {
        let commands = commands().new_tree(&mut runner).unwrap().current();
        for step in run(&commands).steps {
            match step.outcome {
                Ok(emitted) if emitted.is_empty() => repeats += 1,
                Ok(emitted) => events.extend(emitted.iter().map(crate::events::EventFamily::event_type)),
                Err(rejection) => {
                    rejections.insert(std::mem::discriminant(&rejection));
                }
            }
        }
    }
    assert_eq!(events.len(), 6, "event types seen: {events:?}");
    assert!(repeats > 1_000, "only {repeats} repeated calls");
    let nonzero = Decimal::ONE;
    for expected in [
        AccountRejection::NotOpened,
        AccountRejection::InvalidAmount {
            amount: nonzero,
            reason: crate::order::AmountError::NotPositive,
        },
        AccountRejection::KeyReused {
            key: String::new(),
            original: Operation::Deposit,
        },
        AccountRejection::InsufficientFunds {
            available: nonzero,
            requested: nonzero,
        },
        AccountRejection::NoReservation { order_id: USER },
        AccountRejection::ExceedsReservation {
            order_id: USER,
            reserved: nonzero,
            requested: nonzero,
        },
    ] {
        assert!(
            rejections.contains(&std::mem::discriminant(&expected)),
            "no generated step was refused with {expected:?}"
        );
    }
}
