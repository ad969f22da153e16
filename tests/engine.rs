//! The engine end to end on each backend: orders from submission to a final
//! state through actors, the saga, the embedded ledger and the market, with
//! the money right to the cent whatever fails in between.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::engine::{eventually, ledger, saga_completed, start, stream_types, FlakyBalance, TestEngine, DEMO_BALANCE};
use common::TestDb;
use order_engine::balance::BalanceService;
use order_engine::engine::{CrashPoint, EngineError, SubmitRequest};
use order_engine::events::{EventMetadata, StreamId};
use order_engine::ledger::account::{Account, AccountState};
use order_engine::order::{OrderRejection, OrderStatus, OrderType, Side};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use uuid::Uuid;

on_every_backend_in_actix!(
    every_order_type_on_both_sides_ends_with_the_ledger_right,
    cancelling_a_resting_limit_releases_its_reservation,
    insufficient_funds_fails_the_order_and_reserves_nothing,
    a_balance_service_down_through_every_retry_fails_the_order_and_releases,
    lost_replies_never_move_money_twice,
    a_crash_between_any_two_saga_steps_is_finished_by_a_fresh_engine,
    two_engines_on_one_database_execute_each_order_once,
);

const WAIT: Duration = Duration::from_secs(20);

fn request(
    user: Uuid,
    side: Side,
    order_type: OrderType,
    limit: Option<Decimal>,
    stop: Option<Decimal>,
) -> SubmitRequest {
    SubmitRequest {
        order_id: None,
        user_id: user,
        symbol: "AAPL".into(),
        side,
        order_type,
        quantity: dec!(10),
        limit_price: limit,
        stop_price: stop,
        metadata: EventMetadata::default(),
    }
}

async fn account(t: &TestEngine, user: Uuid) -> Account {
    match t.ledger.account_state(user).await.unwrap() {
        AccountState::Open(account) => *account,
        AccountState::NotOpened => panic!("account {user} was never opened"),
    }
}

/// Waits until the order is final and its saga has completed.
async fn settled(t: &TestEngine, order_id: Uuid) -> order_engine::order::Order {
    eventually("order final and saga complete", WAIT, || async {
        let order = t.engine.get(order_id).await.unwrap();
        order.is_some_and(|o| o.status.is_terminal()) && saga_completed(&t.store, order_id).await
    })
    .await;
    t.engine.get(order_id).await.unwrap().unwrap()
}

async fn processing(t: &TestEngine, order_id: Uuid) {
    eventually("order working", WAIT, || async {
        t.engine.get(order_id).await.unwrap().map(|o| o.status) == Some(OrderStatus::Processing)
    })
    .await;
}

async fn every_order_type_on_both_sides_ends_with_the_ledger_right(db: TestDb) {
    // Proves each type and side reaches EXECUTED at the right price and moves exactly its value.
    let t = start(db.open(None).await, None, None);
    t.market.set_price("AAPL", dec!(150.25)).unwrap();
    // (side, type, limit, stop, price that fills or triggers, expected execution price)
    let cases = [
        (Side::Buy, OrderType::Market, None, None, None, dec!(150.25)),
        (Side::Sell, OrderType::Market, None, None, None, dec!(150.25)),
        (
            Side::Buy,
            OrderType::Limit,
            Some(dec!(140)),
            None,
            Some(dec!(139)),
            dec!(139),
        ),
        (
            Side::Sell,
            OrderType::Limit,
            Some(dec!(160)),
            None,
            Some(dec!(161)),
            dec!(161),
        ),
        (
            Side::Sell,
            OrderType::StopLoss,
            None,
            Some(dec!(140)),
            Some(dec!(139.5)),
            dec!(139.5),
        ),
        (
            Side::Buy,
            OrderType::StopLoss,
            None,
            Some(dec!(160)),
            Some(dec!(160.5)),
            dec!(160.5),
        ),
        (
            Side::Buy,
            OrderType::StopLimit,
            Some(dec!(158)),
            Some(dec!(155)),
            Some(dec!(156)),
            dec!(156),
        ),
        (
            Side::Sell,
            OrderType::StopLimit,
            Some(dec!(143)),
            Some(dec!(145)),
            Some(dec!(144)),
            dec!(144),
        ),
    ];
    for (side, order_type, limit, stop, move_to, fill) in cases {
        t.market.set_price("AAPL", dec!(150.25)).unwrap();
        let user = Uuid::new_v4();
        let order = t
            .engine
            .submit(request(user, side, order_type, limit, stop))
            .await
            .unwrap();
        assert_eq!(order.status, OrderStatus::Pending);
        if let Some(price) = move_to {
            processing(&t, order.id).await;
            t.market.set_price("AAPL", price).unwrap();
        }
        let done = settled(&t, order.id).await;
        let case = format!("{side} {order_type}");
        assert_eq!(done.status, OrderStatus::Executed, "{case}: {:?}", done.reason);
        let execution = done.execution.clone().unwrap();
        assert_eq!(execution.price, fill, "{case}");
        let value = dec!(10) * fill;
        let account = account(&t, user).await;
        assert_eq!(
            account.reserved_for(order.id),
            Decimal::ZERO,
            "{case}: money left reserved"
        );
        match side {
            Side::Buy => assert_eq!(account.available, DEMO_BALANCE - value, "{case}"),
            Side::Sell => assert_eq!(account.available, DEMO_BALANCE + value, "{case}"),
        }
        assert!(account.invariants_hold(), "{case}: {account:?}");
    }
}

async fn cancelling_a_resting_limit_releases_its_reservation(db: TestDb) {
    // Proves a cancel of a working BUY returns every cent it held.
    let t = start(db.open(None).await, None, None);
    t.market.set_price("AAPL", dec!(150.25)).unwrap();
    let user = Uuid::new_v4();
    let order = t
        .engine
        .submit(request(user, Side::Buy, OrderType::Limit, Some(dec!(120)), None))
        .await
        .unwrap();
    processing(&t, order.id).await;
    assert_eq!(account(&t, user).await.reserved_for(order.id), dec!(1200));
    let cancelled = t.engine.cancel(order.id, user, "requested by user").await.unwrap();
    assert_eq!(cancelled.status, OrderStatus::Cancelled);
    settled(&t, order.id).await;
    let account = account(&t, user).await;
    assert_eq!(account.reserved_total(), Decimal::ZERO);
    assert_eq!(account.available, DEMO_BALANCE);
    // A second cancel is refused by name, and another user cannot see the order.
    let again = t.engine.cancel(order.id, user, "again").await;
    assert!(
        matches!(again, Err(EngineError::Rejected(OrderRejection::AlreadyFinal { .. }))),
        "{again:?}"
    );
    let stranger = t.engine.cancel(order.id, Uuid::new_v4(), "not mine").await;
    assert!(matches!(stranger, Err(EngineError::NotFound(_))), "{stranger:?}");
}

async fn insufficient_funds_fails_the_order_and_reserves_nothing(db: TestDb) {
    // Proves a BUY the account cannot cover ends FAILED with the reason and holds nothing.
    let t = start(db.open(None).await, None, None);
    let user = Uuid::new_v4();
    let mut big = request(user, Side::Buy, OrderType::Limit, Some(dec!(200)), None);
    big.quantity = dec!(100);
    let order = t.engine.submit(big).await.unwrap();
    let done = settled(&t, order.id).await;
    assert_eq!(done.status, OrderStatus::Failed);
    let reason = done.reason.unwrap_or_default();
    assert!(reason.contains("insufficient funds"), "{reason}");
    let account = account(&t, user).await;
    assert_eq!(
        (account.available, account.reserved_total()),
        (DEMO_BALANCE, Decimal::ZERO)
    );
}

async fn a_balance_service_down_through_every_retry_fails_the_order_and_releases(db: TestDb) {
    // Proves the ladder: 5 attempts, then FAILED with the reason, and the release
    // runs once the service is back, so nothing stays reserved.
    let store = db.open(None).await;
    let flaky = Arc::new(FlakyBalance::new(ledger(&store)));
    flaky.down.store(true, Ordering::SeqCst);
    let t = start(store, Some(flaky.clone() as Arc<dyn BalanceService>), None);
    let user = Uuid::new_v4();
    let order = t
        .engine
        .submit(request(user, Side::Buy, OrderType::Market, None, None))
        .await
        .unwrap();
    eventually("order failed", WAIT, || async {
        t.engine.get(order.id).await.unwrap().map(|o| o.status) == Some(OrderStatus::Failed)
    })
    .await;
    let failed = t.engine.get(order.id).await.unwrap().unwrap();
    assert!(
        failed.reason.clone().unwrap_or_default().contains("503"),
        "{:?}",
        failed.reason
    );
    let saga = stream_types(&t.store, &StreamId::saga(order.id)).await;
    let attempts = saga.iter().filter(|e| *e == "StepAttempted").count();
    assert!(attempts >= 5, "expected 5 reserve attempts, saw {saga:?}");
    flaky.down.store(false, Ordering::SeqCst);
    settled(&t, order.id).await;
    let account = account(&t, user).await;
    assert_eq!(
        (account.available, account.reserved_total()),
        (DEMO_BALANCE, Decimal::ZERO)
    );
}

async fn lost_replies_never_move_money_twice(db: TestDb) {
    // Proves idempotent calls: every reply lost after the money moved, through the
    // whole ladder, still ends with the order failed and every cent back.
    let store = db.open(None).await;
    let flaky = Arc::new(FlakyBalance::new(ledger(&store)));
    flaky.lose_replies.store(true, Ordering::SeqCst);
    let t = start(store, Some(flaky.clone() as Arc<dyn BalanceService>), None);
    let user = Uuid::new_v4();
    let order = t
        .engine
        .submit(request(user, Side::Buy, OrderType::Market, None, None))
        .await
        .unwrap();
    eventually("order failed", WAIT, || async {
        t.engine.get(order.id).await.unwrap().map(|o| o.status) == Some(OrderStatus::Failed)
    })
    .await;
    flaky.lose_replies.store(false, Ordering::SeqCst);
    settled(&t, order.id).await;
    let account = account(&t, user).await;
    assert_eq!(
        (account.available, account.reserved_total()),
        (DEMO_BALANCE, Decimal::ZERO)
    );
    // Five reserve calls and at least one release call reached the ledger; each moved money once.
    let ledger_events = stream_types(&t.store, &StreamId::account(user)).await;
    let count = |kind: &str| ledger_events.iter().filter(|e| *e == kind).count();
    assert_eq!(
        (count("FundsReserved"), count("ReservationReleased")),
        (1, 1),
        "{ledger_events:?}"
    );
    assert!(flaky.calls.load(Ordering::SeqCst) >= 6);
}

async fn a_crash_between_any_two_saga_steps_is_finished_by_a_fresh_engine(db: TestDb) {
    // Proves recovery: for every k, an engine stopped after its k-th saga effect
    // leaves work a fresh engine on the same store finishes, with the BUY's value
    // deducted exactly once and nothing left reserved.
    let mut k = 1;
    loop {
        let crash = Arc::new(CrashPoint::after(k));
        let first = start(db.open(None).await, None, Some(Arc::clone(&crash)));
        first.market.set_price("AAPL", dec!(150.25)).unwrap();
        let user = Uuid::new_v4();
        let order = first
            .engine
            .submit(request(user, Side::Buy, OrderType::Market, None, None))
            .await
            .unwrap();
        let crashed = tokio::time::timeout(Duration::from_secs(5), crash.halted())
            .await
            .is_ok();
        first.engine.shutdown().await;
        let second = start(db.open(None).await, None, None);
        second.market.set_price("AAPL", dec!(150.25)).unwrap();
        let done = settled(&second, order.id).await;
        assert_eq!(done.status, OrderStatus::Executed, "k={k}: {:?}", done.reason);
        let account = account(&second, user).await;
        assert_eq!(account.deducted, dec!(1502.5), "k={k}: deducted {}", account.deducted);
        assert_eq!(account.reserved_total(), Decimal::ZERO, "k={k}: money left reserved");
        assert_eq!(account.available, DEMO_BALANCE - dec!(1502.5), "k={k}");
        second.engine.shutdown().await;
        if !crashed {
            // The saga finished in fewer than k effects: every gap was covered.
            assert!(k > 10, "a BUY saga has more than {k} effects");
            break;
        }
        k += 1;
    }
}

async fn two_engines_on_one_database_execute_each_order_once(db: TestDb) {
    // Proves two engine processes on one log: no lost or doubled events, one execution per order.
    let a = start(db.open(None).await, None, None);
    let b = start(db.open(None).await, None, None);
    for t in [&a, &b] {
        t.market.set_price("AAPL", dec!(150.25)).unwrap();
    }
    let user = Uuid::new_v4();
    let mut orders = Vec::new();
    for i in 0..12 {
        let (submitter, other) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let order_type = if i % 3 == 0 {
            OrderType::Limit
        } else {
            OrderType::Market
        };
        let limit = (order_type == OrderType::Limit).then_some(dec!(100));
        let mut one_share = request(user, Side::Buy, order_type, limit, None);
        one_share.quantity = dec!(1);
        let order = submitter.engine.submit(one_share).await.unwrap();
        if order_type == OrderType::Limit {
            processing(other, order.id).await;
            other
                .engine
                .cancel(order.id, user, "by the other engine")
                .await
                .unwrap();
        }
        orders.push(order.id);
    }
    let mut executed_value = Decimal::ZERO;
    for order_id in &orders {
        let done = settled(&a, *order_id).await;
        let types = stream_types(&a.store, &StreamId::order(*order_id)).await;
        let finals = types
            .iter()
            .filter(|t| ["OrderExecuted", "OrderCancelled", "OrderFailed"].contains(&t.as_str()))
            .count();
        assert_eq!(finals, 1, "{order_id}: {types:?}");
        if let Some(execution) = done.execution {
            executed_value += execution.total_value;
        }
    }
    let account = account(&a, user).await;
    assert_eq!(account.deducted, executed_value);
    assert_eq!(account.reserved_total(), Decimal::ZERO);
    assert_eq!(account.available, DEMO_BALANCE - executed_value);
    assert!(account.invariants_hold());
}
