//! The embedded ledger against real event logs: every body runs on PostgreSQL
//! and SQLite, with two `EmbeddedLedger`s over two store instances standing in
//! for two engine processes sharing one database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use common::TestDb;
use futures_util::future::join_all;
use order_engine::account::{Account, AccountAggregate, AccountEvent, AccountState, RECEIPTS_MAX};
use order_engine::aggregate::Aggregate;
use order_engine::balance::embedded::{EmbeddedLedger, LedgerConfig};
use order_engine::balance::{Balance, BalanceError, BalanceOp, BalanceReceipt, BalanceService, ReleaseOp};
use order_engine::clock::ManualClock;
use order_engine::events::{decode, StreamId};
use order_engine::store::{read_stream_all, EventStore};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use uuid::Uuid;

on_every_backend!(
    a_new_account_is_funded_once_under_concurrent_first_use,
    money_moves_to_the_cent,
    a_repeated_key_moves_money_once_and_returns_the_same_receipt,
    a_repeat_after_many_later_orders_gets_the_first_answer,
    concurrent_reserves_never_overdraw,
    insufficient_funds_is_typed_and_writes_nothing,
    reading_an_unknown_account_writes_nothing,
    conservation_holds_after_a_concurrent_mixed_workload,
    a_burst_on_one_account_from_two_processes_is_served_with_the_default_bounds,
);

const DEMO: Decimal = dec!(10000.00);

fn config() -> LedgerConfig {
    LedgerConfig {
        demo_balance: DEMO,
        // Tests pile many writers on one account; each lost race costs a reload.
        conflict_retries_max: 200,
    }
}

fn ledger(store: Arc<dyn EventStore>) -> Arc<EmbeddedLedger> {
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 3, 2, 15, 0, 0).single().unwrap(),
    ));
    Arc::new(EmbeddedLedger::new(store, clock, config()))
}

/// Two ledgers on one database through two store instances: two processes.
async fn two_processes(db: &TestDb) -> (Arc<EmbeddedLedger>, Arc<EmbeddedLedger>, Arc<dyn EventStore>) {
    let first = db.open(None).await.store;
    let second = db.open(None).await.store;
    (ledger(first.clone()), ledger(second), first)
}

fn op(user_id: Uuid, order_id: Uuid, amount: Decimal, step: &str) -> BalanceOp {
    BalanceOp {
        user_id,
        order_id,
        amount,
        idempotency_key: format!("{order_id}:{step}"),
    }
}

fn release_op(user_id: Uuid, order_id: Uuid) -> ReleaseOp {
    ReleaseOp {
        user_id,
        order_id,
        idempotency_key: format!("{order_id}:release"),
    }
}

async fn account_events(store: &dyn EventStore, user_id: Uuid) -> Vec<AccountEvent> {
    read_stream_all(store, &StreamId::account(user_id), 1)
        .await
        .unwrap()
        .iter()
        .map(|e| decode(e).unwrap())
        .collect()
}

async fn open_account(ledger: &EmbeddedLedger, user_id: Uuid) -> Account {
    match ledger.account_state(user_id).await.unwrap() {
        AccountState::Open(account) => Arc::unwrap_or_clone(account),
        AccountState::NotOpened => panic!("account {user_id} is not open"),
    }
}

/// The account's invariants hold, and the live answer matches a replay of its log.
async fn assert_conserved(ledger: &EmbeddedLedger, store: &dyn EventStore, user_id: Uuid) -> Account {
    let account = open_account(ledger, user_id).await;
    assert!(account.available >= Decimal::ZERO, "{account:?}");
    assert_eq!(
        account.available + account.reserved_total(),
        account.deposited + account.credited - account.deducted,
        "money not conserved: {account:?}"
    );
    let replayed = AccountAggregate::fold(AccountState::default(), &account_events(store, user_id).await);
    assert_eq!(replayed.account(), Some(&account));
    let balance = ledger.get_balance(user_id).await.unwrap();
    assert_eq!(
        balance,
        Balance {
            user_id,
            available: account.available,
            reserved: account.reserved_total()
        }
    );
    account
}

async fn a_new_account_is_funded_once_under_concurrent_first_use(db: TestDb) {
    // Proves two processes racing to open one account fund it with the demo balance exactly once.
    let (a, b, store) = two_processes(&db).await;
    let user = Uuid::new_v4();
    let tasks = (0..10).map(|i| {
        let ledger = if i % 2 == 0 { a.clone() } else { b.clone() };
        tokio::spawn(async move { ledger.reserve(op(user, Uuid::new_v4(), dec!(1.01), "reserve")).await })
    });
    for outcome in join_all(tasks).await {
        outcome.unwrap().unwrap();
    }
    let events = account_events(store.as_ref(), user).await;
    let opened = events
        .iter()
        .filter(|e| matches!(e, AccountEvent::AccountOpened(_)))
        .count();
    let deposits = events
        .iter()
        .filter(|e| matches!(e, AccountEvent::FundsDeposited(_)))
        .count();
    assert_eq!((opened, deposits), (1, 1), "{events:?}");
    let account = assert_conserved(&a, store.as_ref(), user).await;
    assert_eq!(account.deposited, DEMO);
    assert_eq!(account.reserved_total(), dec!(10.10));
    assert_eq!(account.available, dec!(9989.90));
    assert_eq!(account.reserved.len(), 10);
}

async fn money_moves_to_the_cent(db: TestDb) {
    // Proves reserve, deduct, release and credit move exactly the amounts asked, and report them.
    let (ledger, _, store) = two_processes(&db).await;
    let user = Uuid::new_v4();
    let (buy, sell) = (Uuid::new_v4(), Uuid::new_v4());

    let reserved = ledger.reserve(op(user, buy, dec!(1502.50), "reserve")).await.unwrap();
    assert_eq!(reserved.amount, dec!(1502.50));
    assert_eq!(
        (reserved.balance.available, reserved.balance.reserved),
        (dec!(8497.50), dec!(1502.50))
    );

    let deducted = ledger.deduct(op(user, buy, dec!(1500.25), "deduct")).await.unwrap();
    assert_eq!(deducted.amount, dec!(1500.25));
    assert_eq!(
        (deducted.balance.available, deducted.balance.reserved),
        (dec!(8497.50), dec!(2.25))
    );

    let released = ledger.release(release_op(user, buy)).await.unwrap();
    assert_eq!(released.amount, dec!(2.25));
    assert_eq!(
        (released.balance.available, released.balance.reserved),
        (dec!(8499.75), Decimal::ZERO)
    );

    let credited = ledger.credit(op(user, sell, dec!(300.10), "credit")).await.unwrap();
    assert_eq!(credited.amount, dec!(300.10));
    assert_eq!(credited.balance.available, dec!(8799.85));

    let deposited = ledger.deposit(user, dec!(0.15), "operator-top-up-1").await.unwrap();
    assert_eq!(deposited.balance.available, dec!(8800.00));

    // A release for an order that never reserved anything moves zero, without error.
    let nothing = ledger.release(release_op(user, Uuid::new_v4())).await.unwrap();
    assert_eq!(nothing.amount, Decimal::ZERO);

    assert!(ledger.sufficient_funds(user, dec!(8800.00)).await.unwrap());
    assert!(!ledger.sufficient_funds(user, dec!(8800.01)).await.unwrap());

    let account = assert_conserved(&ledger, store.as_ref(), user).await;
    assert_eq!(
        (account.deposited, account.credited, account.deducted),
        (dec!(10000.15), dec!(300.10), dec!(1500.25))
    );
}

async fn a_repeated_key_moves_money_once_and_returns_the_same_receipt(db: TestDb) {
    // Proves every call repeated with its key, from either process, changes nothing and answers the same.
    let (a, b, store) = two_processes(&db).await;
    let user = Uuid::new_v4();
    let (buy, sell) = (Uuid::new_v4(), Uuid::new_v4());

    let mut receipts: Vec<(BalanceReceipt, u64)> = Vec::new();
    let stream = StreamId::account(user);
    let reserve = a.reserve(op(user, buy, dec!(100), "reserve")).await.unwrap();
    receipts.push((reserve, store.stream_version(&stream).await.unwrap()));
    let deduct = a.deduct(op(user, buy, dec!(60), "deduct")).await.unwrap();
    receipts.push((deduct, store.stream_version(&stream).await.unwrap()));
    let release = a.release(release_op(user, buy)).await.unwrap();
    receipts.push((release, store.stream_version(&stream).await.unwrap()));
    let credit = a.credit(op(user, sell, dec!(25.5), "credit")).await.unwrap();
    receipts.push((credit, store.stream_version(&stream).await.unwrap()));
    let deposit = a.deposit(user, dec!(7), "top-up").await.unwrap();
    receipts.push((deposit, store.stream_version(&stream).await.unwrap()));
    let version = store.stream_version(&stream).await.unwrap();
    let before = open_account(&a, user).await;

    for ledger in [&a, &b] {
        let again = [
            ledger.reserve(op(user, buy, dec!(100), "reserve")).await.unwrap(),
            ledger.deduct(op(user, buy, dec!(60), "deduct")).await.unwrap(),
            ledger.release(release_op(user, buy)).await.unwrap(),
            ledger.credit(op(user, sell, dec!(25.5), "credit")).await.unwrap(),
            ledger.deposit(user, dec!(7), "top-up").await.unwrap(),
        ];
        for ((first, _), again) in receipts.iter().zip(&again) {
            assert_eq!(again, first);
        }
    }
    assert_eq!(
        store.stream_version(&stream).await.unwrap(),
        version,
        "a repeat wrote events"
    );
    assert_eq!(open_account(&b, user).await, before);

    // The receipts tell each call's own balance, not the latest one.
    assert_eq!(receipts[0].0.balance.available, dec!(9900));
    assert_eq!(receipts[2].0.amount, dec!(40));
    assert_eq!(receipts[4].0.balance.available, dec!(9972.5));

    // Concurrent retries of one new request, across both processes, land once.
    let order = Uuid::new_v4();
    let tasks = (0..8).map(|i| {
        let ledger = if i % 2 == 0 { a.clone() } else { b.clone() };
        tokio::spawn(async move { ledger.reserve(op(user, order, dec!(33.33), "reserve")).await })
    });
    let answers: Vec<BalanceReceipt> = join_all(tasks).await.into_iter().map(|r| r.unwrap().unwrap()).collect();
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
    let account = assert_conserved(&a, store.as_ref(), user).await;
    assert_eq!(account.reserved_for(order), dec!(33.33));
    assert_eq!(store.stream_version(&stream).await.unwrap(), version + 1);

    // The same key for another request is refused, not answered with the first receipt.
    let reused = a.reserve(op(user, buy, dec!(101), "reserve")).await;
    assert!(
        matches!(reused, Err(BalanceError::Rejected(ref m)) if m.contains("already used")),
        "{reused:?}"
    );
}

async fn concurrent_reserves_never_overdraw(db: TestDb) {
    // Proves many racing reservations from two processes never hold more than the account has.
    let (a, b, store) = two_processes(&db).await;
    let user = Uuid::new_v4();
    let amount = dec!(700.07);
    let tasks = (0..24).map(|i| {
        let ledger = if i % 2 == 0 { a.clone() } else { b.clone() };
        tokio::spawn(async move { ledger.reserve(op(user, Uuid::new_v4(), amount, "reserve")).await })
    });
    let mut granted = 0;
    for outcome in join_all(tasks).await {
        match outcome.unwrap() {
            Ok(receipt) => {
                assert_eq!(receipt.amount, amount);
                granted += 1;
            }
            Err(BalanceError::InsufficientFunds { available, requested }) => {
                assert_eq!(requested, amount);
                assert!(available < amount, "refused with {available} available");
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    // 10_000.00 / 700.07 = 14.28…: exactly 14 fit.
    assert_eq!(granted, 14);
    let account = assert_conserved(&a, store.as_ref(), user).await;
    assert!(account.reserved_total() <= DEMO);
    assert_eq!(account.reserved_total(), amount * Decimal::from(14));
    assert_eq!(account.available, DEMO - amount * Decimal::from(14));
}

async fn insufficient_funds_is_typed_and_writes_nothing(db: TestDb) {
    // Proves an uncoverable reservation is a typed refusal that leaves the log untouched, even unopened.
    let (ledger, _, store) = two_processes(&db).await;
    let user = Uuid::new_v4();
    let stream = StreamId::account(user);

    let refused = ledger
        .reserve(op(user, Uuid::new_v4(), dec!(10000.01), "reserve"))
        .await;
    assert_eq!(
        refused,
        Err(BalanceError::InsufficientFunds {
            available: DEMO,
            requested: dec!(10000.01)
        })
    );
    assert_eq!(
        store.stream_version(&stream).await.unwrap(),
        0,
        "a refused first call opened the account"
    );
    assert_eq!(store.head_position().await.unwrap(), 0);

    let order = Uuid::new_v4();
    ledger.reserve(op(user, order, dec!(9000), "reserve")).await.unwrap();
    let version = store.stream_version(&stream).await.unwrap();
    let refused = ledger.reserve(op(user, Uuid::new_v4(), dec!(1000.01), "reserve")).await;
    assert_eq!(
        refused,
        Err(BalanceError::InsufficientFunds {
            available: dec!(1000),
            requested: dec!(1000.01)
        })
    );
    let over = ledger.deduct(op(user, order, dec!(9000.01), "deduct")).await;
    assert_eq!(
        over,
        Err(BalanceError::ExceedsReservation {
            order_id: order,
            reserved: dec!(9000),
            requested: dec!(9000.01)
        })
    );
    let stranger = Uuid::new_v4();
    let none = ledger.deduct(op(user, stranger, dec!(1), "deduct")).await;
    assert_eq!(none, Err(BalanceError::NoReservation { order_id: stranger }));
    let invalid = ledger.credit(op(user, order, dec!(0.000000001), "credit")).await;
    assert!(matches!(invalid, Err(BalanceError::Rejected(_))), "{invalid:?}");
    assert!(!refused.unwrap_err().is_transient());
    assert_eq!(store.stream_version(&stream).await.unwrap(), version);
    assert_conserved(&ledger, store.as_ref(), user).await;
}

async fn reading_an_unknown_account_writes_nothing(db: TestDb) {
    // Proves balance reads of a never-used account answer the demo balance and open nothing.
    let (ledger, _, store) = two_processes(&db).await;
    let user = Uuid::new_v4();
    assert_eq!(
        ledger.get_balance(user).await.unwrap(),
        Balance {
            user_id: user,
            available: DEMO,
            reserved: Decimal::ZERO
        }
    );
    assert!(ledger.sufficient_funds(user, DEMO).await.unwrap());
    assert!(!ledger.sufficient_funds(user, DEMO + dec!(0.01)).await.unwrap());
    assert_eq!(ledger.account_state(user).await.unwrap(), AccountState::NotOpened);
    assert_eq!(store.head_position().await.unwrap(), 0);
}

async fn conservation_holds_after_a_concurrent_mixed_workload(db: TestDb) {
    // Proves whole order lifecycles run concurrently on shared accounts from two processes keep every account whole.
    let (a, b, store) = two_processes(&db).await;
    let users = [Uuid::new_v4(), Uuid::new_v4()];
    let tasks = (0..16_u32).map(|i| {
        // Each user gets every lifecycle, through both processes.
        let ledger = if i < 8 { a.clone() } else { b.clone() };
        let user = users[(i % 2) as usize];
        tokio::spawn(async move {
            let order = Uuid::new_v4();
            let cost = Decimal::new(i64::from(i) * 12_345 + 101, 2);
            match (i / 2) % 4 {
                // A BUY filled below its reservation: reserve, deduct, release the rest.
                0 | 1 => {
                    ledger.reserve(op(user, order, cost, "reserve")).await?;
                    ledger.deduct(op(user, order, cost - dec!(0.01), "deduct")).await?;
                    ledger.release(release_op(user, order)).await?;
                }
                // A BUY cancelled: reserve, release all.
                2 => {
                    ledger.reserve(op(user, order, cost, "reserve")).await?;
                    ledger.release(release_op(user, order)).await?;
                }
                // A SELL: credit the proceeds.
                _ => {
                    ledger.credit(op(user, order, cost, "credit")).await?;
                }
            }
            Ok::<_, BalanceError>(())
        })
    });
    for outcome in join_all(tasks).await {
        outcome.unwrap().unwrap();
    }
    for user in users {
        let account = assert_conserved(&b, store.as_ref(), user).await;
        assert!(account.reserved.is_empty(), "{account:?}");
        assert_eq!(account.deposited, DEMO);
    }
}

async fn a_burst_on_one_account_from_two_processes_is_served_with_the_default_bounds(db: TestDb) {
    // Proves 50 concurrent reservations on one account, from two processes, with the ledger's default bounds, all succeed: lost races are retried (after a jittered pause), never reported as a failure.
    let a = Arc::new(EmbeddedLedger::new(
        db.open(None).await.store,
        Arc::new(order_engine::clock::SystemClock),
        LedgerConfig {
            demo_balance: DEMO,
            ..LedgerConfig::default()
        },
    ));
    let store = db.open(None).await.store;
    let b = Arc::new(EmbeddedLedger::new(
        Arc::clone(&store),
        Arc::new(order_engine::clock::SystemClock),
        LedgerConfig {
            demo_balance: DEMO,
            ..LedgerConfig::default()
        },
    ));
    let user = Uuid::new_v4();
    let amount = dec!(157.76);
    let started = std::time::Instant::now();
    let tasks = (0..50).map(|i| {
        let ledger = if i % 2 == 0 { a.clone() } else { b.clone() };
        tokio::spawn(async move { ledger.reserve(op(user, Uuid::new_v4(), amount, "reserve")).await })
    });
    for outcome in join_all(tasks).await {
        let receipt = outcome.unwrap();
        assert!(receipt.is_ok(), "{receipt:?}");
    }
    let took = started.elapsed();
    let account = assert_conserved(&a, store.as_ref(), user).await;
    assert_eq!(account.reserved_total(), amount * Decimal::from(50));
    eprintln!("LEDGER 50 reservations on one account from two processes in {took:.2?}");
}

async fn a_repeat_after_many_later_orders_gets_the_first_answer(db: TestDb) {
    // Proves idempotency outlives the receipts an account keeps in memory:
    // after more later orders than RECEIPTS_MAX, every repeated call (one that
    // would now be refused included) answers as the first did and writes
    // nothing, from either process, and a reused key is still refused.
    let (a, b, store) = two_processes(&db).await;
    let user = Uuid::new_v4();
    let stream = StreamId::account(user);
    let old = Uuid::new_v4();
    let reserve = a.reserve(op(user, old, dec!(100), "reserve")).await.unwrap();
    let deduct = a.deduct(op(user, old, dec!(100), "deduct")).await.unwrap();
    let release = a.release(release_op(user, old)).await.unwrap();
    for _ in 0..RECEIPTS_MAX {
        let order = Uuid::new_v4();
        a.reserve(op(user, order, dec!(1), "reserve")).await.unwrap();
        a.deduct(op(user, order, dec!(1), "deduct")).await.unwrap();
    }
    let held = open_account(&a, user).await;
    assert!(
        held.receipt(&format!("{old}:reserve")).is_none(),
        "the old keys should have left the receipts"
    );
    let version = store.stream_version(&stream).await.unwrap();
    for ledger in [&a, &b] {
        // Decided as new, then recognised by the store's record of the command.
        assert_eq!(
            ledger.reserve(op(user, old, dec!(100), "reserve")).await.unwrap(),
            reserve
        );
        // Refused now (the reservation is gone), yet answered as the first time.
        assert_eq!(ledger.deduct(op(user, old, dec!(100), "deduct")).await.unwrap(), deduct);
        assert_eq!(ledger.release(release_op(user, old)).await.unwrap(), release);
        // The same key for another request is refused, as while it was held.
        let reused = ledger.reserve(op(user, old, dec!(5), "reserve")).await;
        assert!(matches!(reused, Err(BalanceError::Rejected(_))), "{reused:?}");
    }
    assert_eq!(
        store.stream_version(&stream).await.unwrap(),
        version,
        "a repeat wrote events"
    );
    assert_conserved(&a, store.as_ref(), user).await;
}
