//! Given/when/then tests of the account's rules: given past events, when a
//! command arrives, then these events (or this rejection).

use chrono::{DateTime, TimeZone, Utc};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use uuid::Uuid;

use super::*;
use crate::aggregate::Aggregate;
use crate::events::{encode, EventFamily, EventMetadata};
use crate::order::AmountError;

const USER: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_00a1);
const ORDER: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_00b1);
const OTHER_ORDER: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_00b2);

fn at(second: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 2, 15, 0, second)
        .single()
        .unwrap_or_default()
}

fn opened() -> AccountEvent {
    AccountEvent::AccountOpened(AccountOpened {
        user_id: USER,
        opened_at: at(0),
    })
}

fn deposited(amount: Decimal, key: &str) -> AccountEvent {
    AccountEvent::FundsDeposited(FundsDeposited {
        amount,
        idempotency_key: key.into(),
        at: at(1),
    })
}

fn reserved(order_id: Uuid, amount: Decimal, key: &str) -> AccountEvent {
    AccountEvent::FundsReserved(FundsReserved {
        order_id,
        amount,
        idempotency_key: key.into(),
        at: at(2),
    })
}

fn deducted(order_id: Uuid, amount: Decimal, key: &str) -> AccountEvent {
    AccountEvent::ReservationDeducted(ReservationDeducted {
        order_id,
        amount,
        idempotency_key: key.into(),
        at: at(3),
    })
}

fn released(order_id: Uuid, amount: Decimal, key: &str) -> AccountEvent {
    AccountEvent::ReservationReleased(ReservationReleased {
        order_id,
        amount,
        idempotency_key: key.into(),
        at: at(4),
    })
}

fn credited(order_id: Uuid, amount: Decimal, key: &str) -> AccountEvent {
    AccountEvent::FundsCredited(FundsCredited {
        order_id,
        amount,
        idempotency_key: key.into(),
        at: at(5),
    })
}

fn deposit(amount: Decimal, key: &str) -> AccountCommand {
    AccountCommand::Deposit {
        amount,
        idempotency_key: key.into(),
        at: at(1),
    }
}

fn reserve(order_id: Uuid, amount: Decimal, key: &str) -> AccountCommand {
    AccountCommand::Reserve {
        order_id,
        amount,
        idempotency_key: key.into(),
        at: at(2),
    }
}

fn deduct(order_id: Uuid, amount: Decimal, key: &str) -> AccountCommand {
    AccountCommand::Deduct {
        order_id,
        amount,
        idempotency_key: key.into(),
        at: at(3),
    }
}

fn release(order_id: Uuid, key: &str) -> AccountCommand {
    AccountCommand::Release {
        order_id,
        idempotency_key: key.into(),
        at: at(4),
    }
}

fn credit(order_id: Uuid, amount: Decimal, key: &str) -> AccountCommand {
    AccountCommand::Credit {
        order_id,
        amount,
        idempotency_key: key.into(),
        at: at(5),
    }
}

fn given(events: &[AccountEvent]) -> AccountState {
    AccountAggregate::fold(AccountState::default(), events)
}

/// An open account holding `amount`, deposited under the key "funding".
fn funded(amount: Decimal) -> Vec<AccountEvent> {
    vec![opened(), deposited(amount, "funding")]
}

fn account(state: &AccountState) -> &Account {
    state.account().unwrap()
}

#[test]
fn opening_starts_an_empty_account() {
    // Proves an account opens with nothing in it and nothing reserved.
    let events = decide(
        &AccountState::default(),
        &AccountCommand::Open {
            user_id: USER,
            at: at(0),
        },
    )
    .unwrap();
    assert_eq!(events, vec![opened()]);
    let state = given(&events);
    let account = account(&state);
    assert_eq!((account.user_id, account.opened_at), (USER, at(0)));
    assert_eq!(account.available, Decimal::ZERO);
    assert!(account.reserved.is_empty() && account.receipts.is_empty());
}

#[test]
fn opening_an_open_account_changes_nothing() {
    // Proves a defensive second opening is a no-op, not an error.
    let state = given(&funded(dec!(100)));
    let command = AccountCommand::Open {
        user_id: USER,
        at: at(9),
    };
    assert_eq!(decide(&state, &command), Ok(vec![]));
}

#[test]
fn money_movements_before_opening_are_refused() {
    // Proves an account that was never opened cannot move money.
    let state = AccountState::default();
    for command in [
        deposit(dec!(1), "k"),
        reserve(ORDER, dec!(1), "k"),
        deduct(ORDER, dec!(1), "k"),
        release(ORDER, "k"),
        credit(ORDER, dec!(1), "k"),
    ] {
        assert_eq!(
            decide(&state, &command),
            Err(AccountRejection::NotOpened),
            "{command:?}"
        );
    }
}

#[test]
fn a_deposit_adds_to_available() {
    // Proves a deposit lands in available and in the deposited total.
    let state = given(&funded(dec!(100)));
    let events = decide(&state, &deposit(dec!(0.01), "top-up")).unwrap();
    assert_eq!(events, vec![deposited(dec!(0.01), "top-up")]);
    let state = AccountAggregate::fold(state, &events);
    assert_eq!(account(&state).available, dec!(100.01));
    assert_eq!(account(&state).deposited, dec!(100.01));
}

#[test]
fn amounts_must_be_positive_with_at_most_eight_decimal_places() {
    // Proves every amount-carrying command reuses the DECIMAL(18, 8) rule.
    let state = given(&[
        opened(),
        deposited(dec!(100), "funding"),
        reserved(ORDER, dec!(50), "r"),
    ]);
    let cases = [
        (dec!(0), AmountError::NotPositive),
        (dec!(-1), AmountError::NotPositive),
        (dec!(0.000000001), AmountError::TooManyDecimalPlaces(9)),
        (dec!(10000000000), AmountError::TooLarge),
    ];
    for (amount, reason) in cases {
        for command in [
            deposit(amount, "x"),
            reserve(ORDER, amount, "x"),
            deduct(ORDER, amount, "x"),
            credit(ORDER, amount, "x"),
        ] {
            assert_eq!(
                decide(&state, &command),
                Err(AccountRejection::InvalidAmount { amount, reason }),
                "{command:?}"
            );
        }
    }
    assert!(decide(&state, &reserve(ORDER, dec!(0.00000001), "tiny")).is_ok());
}

#[test]
fn a_reserve_moves_available_to_the_order() {
    // Proves a reservation leaves available and is held for its order only.
    let state = given(&funded(dec!(10000)));
    let events = decide(&state, &reserve(ORDER, dec!(1502.5), "o:reserve")).unwrap();
    assert_eq!(events, vec![reserved(ORDER, dec!(1502.5), "o:reserve")]);
    let state = AccountAggregate::fold(state, &events);
    let account = account(&state);
    assert_eq!(account.available, dec!(8497.5));
    assert_eq!(account.reserved_for(ORDER), dec!(1502.5));
    assert_eq!(account.reserved_for(OTHER_ORDER), Decimal::ZERO);
}

#[test]
fn reserving_more_than_available_is_insufficient_funds() {
    // Proves a reservation never overdraws, and says what was available.
    let state = given(&[
        opened(),
        deposited(dec!(100), "funding"),
        reserved(OTHER_ORDER, dec!(60), "other"),
    ]);
    assert_eq!(
        decide(&state, &reserve(ORDER, dec!(40.01), "o:reserve")),
        Err(AccountRejection::InsufficientFunds {
            available: dec!(40),
            requested: dec!(40.01)
        })
    );
    assert!(decide(&state, &reserve(ORDER, dec!(40), "o:reserve")).is_ok());
}

#[test]
fn a_deduct_takes_from_the_order_reservation() {
    // Proves a deduction leaves the account from the order's reservation, not from available.
    let state = given(&[
        opened(),
        deposited(dec!(100), "funding"),
        reserved(ORDER, dec!(60), "r"),
    ]);
    let events = decide(&state, &deduct(ORDER, dec!(59.99), "d")).unwrap();
    assert_eq!(events, vec![deducted(ORDER, dec!(59.99), "d")]);
    let state = AccountAggregate::fold(state, &events);
    let account = account(&state);
    assert_eq!(account.available, dec!(40));
    assert_eq!(account.reserved_for(ORDER), dec!(0.01));
    assert_eq!(account.deducted, dec!(59.99));
}

#[test]
fn deducting_the_whole_reservation_clears_it() {
    // Proves a reservation spent to zero disappears, so a further deduct finds none.
    let state = given(&[
        opened(),
        deposited(dec!(100), "funding"),
        reserved(ORDER, dec!(60), "r"),
        deducted(ORDER, dec!(60), "d"),
    ]);
    assert!(account(&state).reserved.is_empty());
    assert_eq!(
        decide(&state, &deduct(ORDER, dec!(1), "d2")),
        Err(AccountRejection::NoReservation { order_id: ORDER })
    );
}

#[test]
fn deducting_without_a_reservation_is_refused() {
    // Proves money cannot leave through an order that holds nothing.
    let state = given(&[
        opened(),
        deposited(dec!(100), "funding"),
        reserved(OTHER_ORDER, dec!(60), "r"),
    ]);
    assert_eq!(
        decide(&state, &deduct(ORDER, dec!(1), "d")),
        Err(AccountRejection::NoReservation { order_id: ORDER })
    );
}

#[test]
fn deducting_more_than_reserved_is_refused() {
    // Proves a deduction is bounded by its order's reservation, not by the account.
    let state = given(&[
        opened(),
        deposited(dec!(100), "funding"),
        reserved(ORDER, dec!(10), "r"),
    ]);
    assert_eq!(
        decide(&state, &deduct(ORDER, dec!(10.00000001), "d")),
        Err(AccountRejection::ExceedsReservation {
            order_id: ORDER,
            reserved: dec!(10),
            requested: dec!(10.00000001)
        })
    );
}

#[test]
fn a_release_returns_what_is_still_reserved() {
    // Proves a release after a partial deduct returns exactly the remainder.
    let state = given(&[
        opened(),
        deposited(dec!(100), "funding"),
        reserved(ORDER, dec!(60), "r"),
        deducted(ORDER, dec!(45.25), "d"),
        reserved(OTHER_ORDER, dec!(5), "r2"),
    ]);
    let events = decide(&state, &release(ORDER, "rel")).unwrap();
    assert_eq!(events, vec![released(ORDER, dec!(14.75), "rel")]);
    let state = AccountAggregate::fold(state, &events);
    let account = account(&state);
    assert_eq!(account.available, dec!(49.75));
    assert_eq!(account.reserved_for(ORDER), Decimal::ZERO);
    assert_eq!(account.reserved_for(OTHER_ORDER), dec!(5));
}

#[test]
fn releasing_without_a_reservation_releases_zero() {
    // Proves a defensive release is not an error and still records its key.
    let state = given(&funded(dec!(100)));
    let events = decide(&state, &release(ORDER, "rel")).unwrap();
    assert_eq!(events, vec![released(ORDER, Decimal::ZERO, "rel")]);
    let state = AccountAggregate::fold(state, &events);
    assert_eq!(account(&state).available, dec!(100));
    assert_eq!(account(&state).receipt("rel").map(|r| r.amount), Some(Decimal::ZERO));
}

#[test]
fn a_credit_adds_to_available() {
    // Proves a SELL's proceeds land in available and in the credited total.
    let state = given(&funded(dec!(100)));
    let events = decide(&state, &credit(ORDER, dec!(1502.50), "c")).unwrap();
    assert_eq!(events, vec![credited(ORDER, dec!(1502.50), "c")]);
    let state = AccountAggregate::fold(state, &events);
    assert_eq!(account(&state).available, dec!(1602.50));
    assert_eq!(account(&state).credited, dec!(1502.50));
}

#[test]
fn a_repeated_key_emits_nothing_and_keeps_its_first_receipt() {
    // Proves a retried call moves nothing and its receipt still tells what the first moved.
    let state = given(&[
        opened(),
        deposited(dec!(100), "funding"),
        reserved(ORDER, dec!(60), "o:reserve"),
        reserved(OTHER_ORDER, dec!(30), "p:reserve"),
    ]);
    // Only 10 is available now: a fresh reserve of 60 would be refused, the retry is not.
    assert_eq!(decide(&state, &reserve(ORDER, dec!(60), "o:reserve")), Ok(vec![]));
    assert_eq!(
        account(&state).receipt("o:reserve"),
        Some(&Receipt {
            operation: Operation::Reserve,
            order_id: Some(ORDER),
            amount: dec!(60),
            available_after: dec!(40),
            reserved_after: dec!(60),
        })
    );
    for command in [
        deposit(dec!(100), "funding"),
        reserve(OTHER_ORDER, dec!(30.00), "p:reserve"),
    ] {
        assert_eq!(decide(&state, &command), Ok(vec![]), "{command:?}");
    }
}

#[test]
fn a_repeated_release_answers_the_first_amount() {
    // Proves a release retried after a new reservation does not release that one.
    let state = given(&[
        opened(),
        deposited(dec!(100), "funding"),
        released(ORDER, Decimal::ZERO, "o:release"),
        reserved(ORDER, dec!(20), "o:reserve-late"),
    ]);
    assert_eq!(decide(&state, &release(ORDER, "o:release")), Ok(vec![]));
    assert_eq!(account(&state).reserved_for(ORDER), dec!(20));
}

#[test]
fn a_key_reused_for_another_request_is_refused() {
    // Proves a key names one request: another operation, order or amount under it is a caller bug.
    let state = given(&[
        opened(),
        deposited(dec!(100), "funding"),
        reserved(ORDER, dec!(60), "k"),
    ]);
    for command in [
        deduct(ORDER, dec!(60), "k"),
        reserve(OTHER_ORDER, dec!(60), "k"),
        reserve(ORDER, dec!(61), "k"),
        release(ORDER, "k"),
    ] {
        assert_eq!(
            decide(&state, &command),
            Err(AccountRejection::KeyReused {
                key: "k".into(),
                original: Operation::Reserve
            }),
            "{command:?}"
        );
    }
}

#[test]
fn idempotency_keys_are_checked() {
    // Proves empty, overlong and control-character keys are refused before anything moves.
    let state = given(&funded(dec!(100)));
    let long = "k".repeat(IDEMPOTENCY_KEY_LEN_MAX + 1);
    for key in ["", long.as_str(), "a\nb"] {
        assert_eq!(
            decide(&state, &deposit(dec!(1), key)),
            Err(AccountRejection::InvalidIdempotencyKey { key: key.into() })
        );
    }
    let longest = "k".repeat(IDEMPOTENCY_KEY_LEN_MAX);
    assert!(decide(&state, &deposit(dec!(1), &longest)).is_ok());
}

#[test]
fn money_moves_exactly_to_the_smallest_unit() {
    // Proves decimal arithmetic: ten reservations of 0.1 leave exactly 0.0, with no float drift.
    let mut state = given(&funded(dec!(1)));
    for i in 0..10 {
        let (next, _) = AccountAggregate::handle(&state, &reserve(ORDER, dec!(0.1), &format!("r{i}"))).unwrap();
        state = next;
    }
    assert_eq!(account(&state).available, Decimal::ZERO);
    assert_eq!(account(&state).reserved_for(ORDER), dec!(1));
    assert_eq!(
        decide(&state, &reserve(ORDER, dec!(0.00000001), "one-more")),
        Err(AccountRejection::InsufficientFunds {
            available: Decimal::ZERO,
            requested: dec!(0.00000001)
        })
    );
    assert!(account(&state).invariants_hold());
}

#[test]
fn events_are_stored_under_their_past_tense_names_at_version_one() {
    // Proves the stored vocabulary: type tag, schema version 1, decimals kept exact.
    let event = reserved(ORDER, dec!(1502.50), "o:reserve");
    let stored = encode(&event, Uuid::nil(), EventMetadata::default()).unwrap();
    assert_eq!(stored.event_type, "FundsReserved");
    assert_eq!(stored.schema_version, 1);
    assert_eq!(stored.payload.to_value()["idempotency_key"], "o:reserve");
    // Exact decimal text (the scale kept, no float on the way), whatever its JSON form.
    assert_eq!(
        stored.payload.to_value()["amount"].to_string().trim_matches('"'),
        "1502.50"
    );
    for event in [
        opened(),
        deposited(dec!(1), "a"),
        deducted(ORDER, dec!(1), "b"),
        released(ORDER, dec!(1), "c"),
        credited(ORDER, dec!(1), "d"),
    ] {
        assert_eq!(AccountEvent::schema_version(event.event_type()), 1);
    }
}

#[test]
fn try_evolve_refuses_an_overdraft_in_every_build() {
    // Proves a log that reserves more than is available is refused by name (not folded into a negative balance), whatever the build profile.
    let state = given(&[opened(), deposited(dec!(100), "funding")]);
    let order = Uuid::from_u128(7);
    let overdraft = AccountAggregate::try_evolve(state, &reserved(order, dec!(100.01), "k"));
    assert!(
        matches!(&overdraft, Err(v) if v.0.contains("available -0.01 < 0")),
        "{overdraft:?}"
    );
}

#[test]
fn an_account_holds_the_latest_receipts_only() {
    // Proves the receipts are bounded: after RECEIPTS_MAX later keys the
    // oldest is no longer held (the shell answers its repeat from the log),
    // the newest are, and the books still balance.
    let mut events = funded(dec!(1000));
    events.extend((0..RECEIPTS_MAX).map(|i| deposited(dec!(1), &format!("d{i}"))));
    let state = given(&events);
    let account = account(&state);
    assert_eq!(account.receipts.len(), RECEIPTS_MAX);
    assert!(account.receipt("funding").is_none());
    assert!(account.receipt("d0").is_some());
    assert!(account.receipt(&format!("d{}", RECEIPTS_MAX - 1)).is_some());
    assert_eq!(account.available, dec!(1000) + Decimal::from(RECEIPTS_MAX));
    assert!(account.invariants_hold());
}
