//! The engine end to end on each backend: orders from submission to a final
//! state through actors, the saga, the embedded ledger and the market, with
//! the money right to the cent whatever fails in between.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::engine::{
    eventually, ledger, saga_completed, start, start_on, stream_types, FlakyBalance, TestEngine, DEMO_BALANCE,
};
use common::http::spawn_app;
use common::TestDb;
use order_engine::account::{Account, AccountState};
use order_engine::balance::embedded::EmbeddedLedger;
use order_engine::balance::{Balance, BalanceError, BalanceOp, BalanceReceipt, BalanceService, ReleaseOp};
use order_engine::engine::{CrashPoint, EngineError, SubmitRequest, REACTOR_CHECKPOINT};
use order_engine::events::RecordedEvent;
use order_engine::events::{EventMetadata, NewEvent, StreamId};
use order_engine::order::{OrderRejection, OrderStatus, OrderType, Side};
use order_engine::store::{
    append, read_stream_all, AppendRequest, Appended, ChainedEvent, Conflict, EventStore, StoreError,
};
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
    a_poison_order_event_stops_the_reactor_loudly_and_fails_readiness,
    a_stream_that_breaks_an_invariant_stops_its_order_with_a_typed_error,
    a_contended_account_is_retried_at_once_never_on_the_ladder,
    a_saga_out_of_local_retries_is_reported_stalled_not_dropped,
    a_market_buy_with_the_embedded_ledger_is_three_commits,
    a_lost_race_on_the_account_is_retried_at_once_and_the_order_executes_within_a_second,
    orders_on_two_actor_threads_all_execute_with_the_ledger_right,
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
        AccountState::Open(account) => Arc::unwrap_or_clone(account),
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
    let t = start(&db).await;
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
    let t = start(&db).await;
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
    let t = start(&db).await;
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
    let store = db.open_backend(None).await;
    let flaky = Arc::new(FlakyBalance::new(ledger(&store)));
    flaky.down.store(true, Ordering::SeqCst);
    let t = start_on(&db, store, |app| app.balance(flaky.clone())).await;
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
    let store = db.open_backend(None).await;
    let flaky = Arc::new(FlakyBalance::new(ledger(&store)));
    flaky.lose_replies.store(true, Ordering::SeqCst);
    let t = start_on(&db, store, |app| app.balance(flaky.clone())).await;
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
    // deducted exactly once and nothing left reserved. Both ways a saga runs:
    // with the embedded ledger in the log (a step, its ledger entry and the
    // order command are one commit: 2 effects after the submission) and with
    // a balance service called step by step (every intent and outcome its own
    // effect: more than 10).
    crash_sweep(&db, false, 2).await;
    crash_sweep(&db, true, 11).await;
}

async fn crash_sweep(db: &TestDb, step_by_step: bool, effects_min: u32) {
    let mut k = 1;
    loop {
        let crash = Arc::new(CrashPoint::after(k));
        let store = db.open_backend(None).await;
        let balance: Option<Arc<dyn BalanceService>> =
            step_by_step.then(|| Arc::new(FlakyBalance::new(ledger(&store))) as Arc<dyn BalanceService>);
        let first = start_on(db, store, |app| {
            let app = app.crash(Arc::clone(&crash));
            match balance {
                Some(balance) => app.balance(balance),
                None => app,
            }
        })
        .await;
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
        let second = start(db).await;
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
            assert!(
                k > effects_min,
                "a BUY saga (step by step: {step_by_step}) has at least {effects_min} effects, not {}",
                k - 1
            );
            break;
        }
        k += 1;
    }
}

async fn two_engines_on_one_database_execute_each_order_once(db: TestDb) {
    // Proves two engine processes on one log: no lost or doubled events, one execution per order.
    let a = start(&db).await;
    let b = start(&db).await;
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

/// Appends one raw event, bypassing every aggregate (as a bad migration or a hand edit would).
async fn append_behind_the_engines_back(
    store: &common::TestStore,
    stream_id: StreamId,
    expected_version: u64,
    event: NewEvent,
) -> order_engine::store::Appended {
    let request = AppendRequest {
        stream_id,
        expected_version,
        command_id: None,
        events: vec![event],
        linked: false,
    };
    append(store.store.as_ref(), request).await.unwrap().unwrap()
}

async fn a_poison_order_event_stops_the_reactor_loudly_and_fails_readiness(db: TestDb) {
    // Proves an order event the reactor cannot read stops it for that order (never skipped): /health/ready answers 503 naming the event, the metric says so, the checkpoint stays below it, other orders still execute.
    let app = spawn_app(&db).await;
    let order_id = Uuid::new_v4();
    let poison_id = Uuid::new_v4();
    let appended = append_behind_the_engines_back(
        &app.engine.store,
        StreamId::order(order_id),
        0,
        NewEvent {
            event_id: poison_id,
            event_type: "OrderSubmitted".into(),
            schema_version: 1,
            payload: serde_json::json!({ "not": "an order" }).into(),
            metadata: EventMetadata::default(),
        },
    )
    .await;
    let ready_url = format!("{}/health/ready", app.address);
    eventually("readiness names the poison event", WAIT, || async {
        let response = app.client.get(&ready_url).send().await.unwrap();
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap();
        let failed = body["checks"]["engine.reactor"]["failed"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        status == 503
            && failed.contains(&poison_id.to_string())
            && failed.contains(&format!("position {}", appended.last_position))
            && failed.contains("OrderSubmitted")
    })
    .await;
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("order_engine_projection_failed{projection=\"engine.reactor\"} 1"),
        "{metrics}"
    );
    // Other orders keep flowing, and the checkpoint stays below the poison
    // (it is saved every second): a restart meets it, and says so, again.
    app.engine.market.set_price("AAPL", dec!(150.25)).unwrap();
    let other = app
        .engine
        .engine
        .submit(request(Uuid::new_v4(), Side::Buy, OrderType::Market, None, None))
        .await
        .unwrap();
    assert_eq!(settled(&app.engine, other.id).await.status, OrderStatus::Executed);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let checkpoint = app
        .engine
        .store
        .store
        .load_checkpoint(REACTOR_CHECKPOINT)
        .await
        .unwrap();
    assert!(
        checkpoint < appended.last_position,
        "checkpoint {checkpoint} passed the poison"
    );
}

async fn a_stream_that_breaks_an_invariant_stops_its_order_with_a_typed_error(db: TestDb) {
    // Proves a stream whose events break evolve's invariants (a second OrderSubmitted) is refused by name when folded, in every build, and the engine keeps serving other orders.
    let first = start(&db).await;
    first.market.set_price("AAPL", dec!(150.25)).unwrap();
    let user = Uuid::new_v4();
    let order = first
        .engine
        .submit(request(user, Side::Buy, OrderType::Limit, Some(dec!(100)), None))
        .await
        .unwrap();
    // Resting below the market once accepted: its stream stops growing.
    processing(&first, order.id).await;
    first.engine.shutdown().await;
    // Someone copies the submission onto the end of the stream behind the engine's back.
    let store = db.open_backend(None).await;
    let stream = StreamId::order(order.id);
    let events = read_stream_all(store.store.as_ref(), &stream, 1).await.unwrap();
    let submitted = events.iter().find(|e| e.event_type == "OrderSubmitted").unwrap();
    append_behind_the_engines_back(
        &store,
        stream.clone(),
        events.len() as u64,
        NewEvent {
            event_id: Uuid::new_v4(),
            event_type: submitted.event_type.clone(),
            schema_version: submitted.schema_version,
            payload: submitted.payload.clone(),
            metadata: EventMetadata::default(),
        },
    )
    .await;
    let second = start_on(&db, store, |app| app).await;
    second.market.set_price("AAPL", dec!(150.25)).unwrap();
    for _ in 0..2 {
        // Folding again meets the same event again: it never folds past it.
        let refused = second.engine.get(order.id).await;
        let message = format!("{refused:?}");
        assert!(refused.is_err(), "{message}");
        assert!(message.contains("OrderSubmitted applied twice"), "{message}");
    }
    let other = second
        .engine
        .submit(request(user, Side::Buy, OrderType::Market, None, None))
        .await
        .unwrap();
    assert_eq!(settled(&second, other.id).await.status, OrderStatus::Executed);
    second.engine.shutdown().await;
}

/// How long past `ORDER_ENGINE_SHUTDOWN_TIMEOUT` the process may take to exit
/// (its own start-up is over by then; this covers a loaded CI machine).
const EXIT_MARGIN: Duration = Duration::from_secs(5);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_within_its_timeout_when_the_database_is_gone() {
    // Proves `serve` exits within ORDER_ENGINE_SHUTDOWN_TIMEOUT (plus a margin) after SIGTERM although its database was dropped under it and every retry loop is failing.
    use sqlx::Connection;
    use std::io::{Read, Write};
    let test = "shutdown_ends_within_its_timeout_when_the_database_is_gone";
    // PostgreSQL, because dropping a database fails every connection at once:
    // the followers meet it within moments, not whenever a pooled SQLite
    // connection happens to reopen a deleted file.
    let Some(db) = TestDb::postgres(test).await else {
        return;
    };
    let TestDb::Postgres {
        admin_url, url, name, ..
    } = &db
    else {
        unreachable!("TestDb::postgres is PostgreSQL");
    };
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log_path = dir.path().join("serve.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_order-engine"))
        .arg("serve")
        .env("DATABASE_URL", url)
        .env("ORDER_ENGINE_HTTP_ADDR", format!("127.0.0.1:{port}"))
        // Any free port: tests run in parallel.
        .env("ORDER_ENGINE_GRPC_ADDR", "127.0.0.1:0")
        .env(
            "ORDER_ENGINE_SHUTDOWN_TIMEOUT",
            format!("{}s", SHUTDOWN_TIMEOUT.as_secs()),
        )
        .env("RUST_LOG", "info")
        .env_remove("AMQP_URL")
        .env_remove("BALANCE_SERVICE_URL")
        .env_remove("ACCOUNT_SERVICE_URL")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let logs = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let ready = |port: u16| {
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let request = "GET /health/ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
        let mut answer = String::new();
        stream.write_all(request.as_bytes()).is_ok()
            && stream.read_to_string(&mut answer).is_ok()
            && answer.starts_with("HTTP/1.1 200")
    };
    let started = std::time::Instant::now();
    while !ready(port) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "serve never became ready:\n{}",
            logs()
        );
        assert!(child.try_wait().unwrap().is_none(), "serve exited early:\n{}", logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The database goes away under the running engine (this test's own database).
    let mut admin = sqlx::PgConnection::connect(admin_url).await.unwrap();
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
    // Wait until the orders projection is in its retry loop: the loop that held the process before.
    let dropped = std::time::Instant::now();
    while !logs().contains("orders projection cannot read its checkpoint") {
        assert!(
            dropped.elapsed() < Duration::from_secs(15),
            "the projection never met the missing database:\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let signalled = std::time::Instant::now();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let exited = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if signalled.elapsed() > SHUTDOWN_TIMEOUT + EXIT_MARGIN {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = signalled.elapsed();
    if exited.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(
        exited.is_some(),
        "serve still running {took:?} after SIGTERM with a {SHUTDOWN_TIMEOUT:?} shutdown timeout:\n{}",
        logs()
    );
    eprintln!("SHUTDOWN exited {took:?} after SIGTERM ({exited:?}); timeout {SHUTDOWN_TIMEOUT:?}");
}

/// A balance service in front of the ledger whose account loses every race
/// for its first `contended` mutating calls (as another busy process would make it).
struct ContendedBalance {
    inner: Arc<order_engine::balance::embedded::EmbeddedLedger>,
    contended: std::sync::atomic::AtomicU32,
    calls: std::sync::atomic::AtomicU32,
}

impl ContendedBalance {
    fn new(inner: Arc<order_engine::balance::embedded::EmbeddedLedger>, contended: u32) -> Self {
        Self {
            inner,
            contended: std::sync::atomic::AtomicU32::new(contended),
            calls: std::sync::atomic::AtomicU32::new(0),
        }
    }

    fn gate(&self, user_id: Uuid) -> Result<(), BalanceError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let left = self.contended.load(Ordering::SeqCst);
        if left == 0 {
            return Ok(());
        }
        self.contended.store(left.saturating_sub(1), Ordering::SeqCst);
        Err(BalanceError::Contended { user_id, attempts: 33 })
    }
}

#[async_trait::async_trait]
impl BalanceService for ContendedBalance {
    async fn get_balance(&self, user_id: Uuid) -> Result<Balance, BalanceError> {
        self.inner.get_balance(user_id).await
    }
    async fn reserve(&self, op: BalanceOp) -> Result<BalanceReceipt, BalanceError> {
        self.gate(op.user_id)?;
        self.inner.reserve(op).await
    }
    async fn deduct(&self, op: BalanceOp) -> Result<BalanceReceipt, BalanceError> {
        self.gate(op.user_id)?;
        self.inner.deduct(op).await
    }
    async fn credit(&self, op: BalanceOp) -> Result<BalanceReceipt, BalanceError> {
        self.gate(op.user_id)?;
        self.inner.credit(op).await
    }
    async fn release(&self, op: ReleaseOp) -> Result<BalanceReceipt, BalanceError> {
        self.gate(op.user_id)?;
        self.inner.release(op).await
    }
    async fn sufficient_funds(&self, user_id: Uuid, amount: Decimal) -> Result<bool, BalanceError> {
        self.inner.sufficient_funds(user_id, amount).await
    }
}

async fn saga_failures(t: &TestEngine, order_id: Uuid) -> Vec<String> {
    stream_types(&t.store, &StreamId::saga(order_id))
        .await
        .into_iter()
        .filter(|t| t == "StepFailed")
        .collect()
}

async fn a_contended_account_is_retried_at_once_never_on_the_ladder(db: TestDb) {
    // Proves a balance call that lost its races (Contended) is made again within moments with its key and never recorded as a failed step.
    let store = db.open_backend(None).await;
    let contended = Arc::new(ContendedBalance::new(ledger(&store), 4));
    let t = start_on(&db, store, |app| app.balance(contended.clone())).await;
    t.market.set_price("AAPL", dec!(150.25)).unwrap();
    let started = std::time::Instant::now();
    let order = t
        .engine
        .submit(request(Uuid::new_v4(), Side::Buy, OrderType::Market, None, None))
        .await
        .unwrap();
    let done = settled(&t, order.id).await;
    assert_eq!(done.status, OrderStatus::Executed, "{:?}", done.reason);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(saga_failures(&t, order.id).await, Vec::<String>::new());
    // Reserve four times contended, then reserve, deduct and release.
    assert_eq!(contended.calls.load(Ordering::SeqCst), 7);
    t.engine.shutdown().await;
}

async fn a_saga_out_of_local_retries_is_reported_stalled_not_dropped(db: TestDb) {
    // Proves a saga whose local retries run out (an account contended without end) is named in the engine's health, its order left PENDING and nothing recorded as a balance failure.
    let store = db.open_backend(None).await;
    let contended = Arc::new(ContendedBalance::new(ledger(&store), u32::MAX));
    // The saga's local retries are not a setting of `serve`: the whole engine config is replaced.
    let mut config = common::engine::fast_config();
    config.saga.local_retries_max = 3;
    let TestEngine {
        engine, market, store, ..
    } = start_on(&db, store, |app| app.balance(contended.clone()).engine_config(config)).await;
    market.set_price("AAPL", dec!(150.25)).unwrap();
    let order = engine
        .submit(request(Uuid::new_v4(), Side::Buy, OrderType::Market, None, None))
        .await
        .unwrap();
    eventually("the saga reported stalled", WAIT, || async {
        engine.health().sagas_stalled == 1
    })
    .await;
    let health = engine.health();
    assert_eq!(health.stalled_examples[0].0, order.id);
    assert!(health.stalled_examples[0].1.contains("contended"), "{health:?}");
    assert!(health.reactor_failed.is_none());
    // The first call and one per local retry: bounded, then it stops.
    assert_eq!(contended.calls.load(Ordering::SeqCst), 4);
    assert_eq!(
        engine.get(order.id).await.unwrap().map(|o| o.status),
        Some(OrderStatus::Pending)
    );
    let failures: Vec<_> = read_stream_all(store.store.as_ref(), &StreamId::saga(order.id), 1)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event_type == "StepFailed")
        .collect();
    assert!(failures.is_empty(), "{failures:?}");
    engine.shutdown().await;
}

/// A store that remembers which streams each append wrote, and can have a
/// rival process deposit into an account just before the first commit that
/// writes it together with other streams (a lost race, made certain).
struct Spy {
    inner: Arc<dyn EventStore>,
    appends: std::sync::Mutex<Vec<Vec<StreamId>>>,
    rival: Option<(Arc<EmbeddedLedger>, Uuid)>,
    raced: std::sync::atomic::AtomicBool,
}

impl Spy {
    fn new(inner: Arc<dyn EventStore>, rival: Option<(Arc<EmbeddedLedger>, Uuid)>) -> Self {
        Self {
            inner,
            appends: std::sync::Mutex::default(),
            rival,
            raced: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The appends that wrote any of `streams`.
    fn commits_touching(&self, streams: &[StreamId]) -> Vec<Vec<StreamId>> {
        self.appends
            .lock()
            .unwrap()
            .iter()
            .filter(|written| written.iter().any(|s| streams.contains(s)))
            .cloned()
            .collect()
    }
}

#[async_trait::async_trait]
impl EventStore for Spy {
    async fn append_batch(&self, requests: Vec<AppendRequest>) -> Result<Vec<Result<Appended, Conflict>>, StoreError> {
        if let Some((rival, user)) = &self.rival {
            let account = StreamId::account(*user);
            let linked = requests.len() > 1 && requests.iter().any(|r| r.stream_id == account);
            if linked && !self.raced.swap(true, Ordering::SeqCst) {
                rival.deposit(*user, dec!(1), "rival-deposit").await.unwrap();
            }
        }
        self.appends
            .lock()
            .unwrap()
            .push(requests.iter().map(|r| r.stream_id.clone()).collect());
        self.inner.append_batch(requests).await
    }
    async fn read_stream(&self, s: &StreamId, from: u64, max: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_stream(s, from, max).await
    }
    async fn read_all(&self, after: u64, max: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_all(after, max).await
    }
    async fn read_chained(&self, after: u64, max: usize) -> Result<Vec<ChainedEvent>, StoreError> {
        self.inner.read_chained(after, max).await
    }
    async fn import_chained(&self, events: Vec<ChainedEvent>) -> Result<(), StoreError> {
        self.inner.import_chained(events).await
    }
    async fn stream_version(&self, s: &StreamId) -> Result<u64, StoreError> {
        self.inner.stream_version(s).await
    }
    async fn command_record(&self, s: &StreamId, command_id: Uuid) -> Result<Option<Appended>, StoreError> {
        self.inner.command_record(s, command_id).await
    }
    async fn head_position(&self) -> Result<u64, StoreError> {
        self.inner.head_position().await
    }
    async fn wait_for_append(&self, after: u64, timeout: Duration) {
        self.inner.wait_for_append(after, timeout).await;
    }
    async fn load_checkpoint(&self, name: &str) -> Result<u64, StoreError> {
        self.inner.load_checkpoint(name).await
    }
    async fn save_checkpoint(&self, name: &str, position: u64) -> Result<(), StoreError> {
        self.inner.save_checkpoint(name, position).await
    }
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
}

async fn a_market_buy_with_the_embedded_ledger_is_three_commits(db: TestDb) {
    // Proves the write path's shape: with the embedded ledger, an executed
    // MARKET BUY is three commits (the submission with its count on the user's
    // trading day; reserve and accept; execute, deduct, release and complete),
    // each all or nothing, and its log still shows every money movement.
    // The spy sees what reaches the database: the root puts group commit around it.
    let mut store = db.open_backend(None).await;
    let spy = Arc::new(Spy::new(Arc::clone(&store.store), None));
    store.store = spy.clone();
    let t = start_on(&db, store, |app| app).await;
    t.market.set_price("AAPL", dec!(150.25)).unwrap();
    let user = Uuid::new_v4();
    let order = t
        .engine
        .submit(request(user, Side::Buy, OrderType::Market, None, None))
        .await
        .unwrap();
    let done = settled(&t, order.id).await;
    assert_eq!(done.status, OrderStatus::Executed);
    let streams = [
        StreamId::order(order.id),
        StreamId::saga(order.id),
        StreamId::account(user),
    ];
    let commits = spy.commits_touching(&streams);
    assert_eq!(commits.len(), 3, "{commits:#?}");
    let day = t.engine.deps().controls.calendar().trading_day(order.created_at);
    assert_eq!(
        commits[0],
        vec![StreamId::order(order.id), StreamId::trading_day(user, day)],
        "the submission commits with its count on the user's day"
    );
    for later in &commits[1..] {
        assert_eq!(
            later,
            &streams.to_vec(),
            "one commit writes the order, its saga and the account"
        );
    }
    let account_types = stream_types(&t.store, &StreamId::account(user)).await;
    assert_eq!(
        account_types,
        [
            "AccountOpened",
            "FundsDeposited",
            "FundsReserved",
            "ReservationDeducted",
            "ReservationReleased"
        ]
    );
    let account = account(&t, user).await;
    assert_eq!(account.deducted, dec!(1502.5));
    assert_eq!(account.reserved_total(), Decimal::ZERO);
    t.engine.shutdown().await;
}

async fn a_lost_race_on_the_account_is_retried_at_once_and_the_order_executes_within_a_second(db: TestDb) {
    // Proves a lost optimistic race on the account stream is reloaded and
    // retried at once, never put on the retry ladder (here 5 minutes a rung).
    let user = Uuid::new_v4();
    let mut store = db.open_backend(None).await;
    let rival = ledger(&store);
    let spy = Arc::new(Spy::new(Arc::clone(&store.store), Some((rival, user))));
    store.store = spy.clone();
    let mut config = common::engine::fast_config();
    config.saga.retry_delays = vec![Duration::from_secs(300); 4];
    let t = common::engine::start_with(&db, store, config, |app| app).await;
    t.market.set_price("AAPL", dec!(150.25)).unwrap();
    // The account exists first, so the rival's deposit moves its version.
    t.ledger.deposit(user, dec!(1), "opening").await.unwrap();
    let started = std::time::Instant::now();
    let order = t
        .engine
        .submit(request(user, Side::Buy, OrderType::Market, None, None))
        .await
        .unwrap();
    eventually("order executed", Duration::from_secs(1), || async {
        t.engine.get(order.id).await.unwrap().map(|o| o.status) == Some(OrderStatus::Executed)
    })
    .await;
    let elapsed = started.elapsed();
    assert!(spy.raced.load(Ordering::SeqCst), "the rival deposited mid-commit");
    let saga = stream_types(&t.store, &StreamId::saga(order.id)).await;
    assert!(!saga.iter().any(|t| t == "StepFailed"), "{saga:?}");
    settled(&t, order.id).await;
    let account = account(&t, user).await;
    assert_eq!(
        account.available,
        DEMO_BALANCE + dec!(2) - dec!(1502.5),
        "after {elapsed:?}"
    );
    t.engine.shutdown().await;
}

async fn orders_on_two_actor_threads_all_execute_with_the_ledger_right(db: TestDb) {
    // Proves the engine with its order actors on two threads of their own (as `serve` runs on two cores) executes concurrent orders of many users, each once, with every account right to the cent, and then stops.
    let mut config = common::engine::fast_config();
    config.actors.actor_threads = 2;
    let t = common::engine::start_with(&db, db.open_backend(None).await, config, |app| app).await;
    t.market.set_price("AAPL", dec!(150.25)).unwrap();
    // Two orders a user: both reservations fit the demo balance at once.
    let users: Vec<Uuid> = (0..16).map(|_| Uuid::new_v4()).collect();
    let submissions = (0..32).map(|i| {
        t.engine.submit(request(
            users[i % users.len()],
            Side::Buy,
            OrderType::Market,
            None,
            None,
        ))
    });
    let orders: Vec<_> = futures_util::future::join_all(submissions)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let shards: std::collections::BTreeSet<usize> = orders.iter().map(|o| t.engine.registry().shard_of(o.id)).collect();
    assert_eq!(shards.len(), 2, "32 orders land on both threads");
    for order in &orders {
        let done = settled(&t, order.id).await;
        assert_eq!(done.status, OrderStatus::Executed, "{}: {:?}", order.id, done.reason);
        assert_eq!(done.execution.unwrap().price, dec!(150.25));
    }
    for user in &users {
        let account = account(&t, *user).await;
        assert_eq!(account.available, DEMO_BALANCE - dec!(2) * dec!(1502.5), "{user}");
        assert_eq!(account.reserved_total(), Decimal::ZERO, "{user}");
        assert!(account.invariants_hold(), "{account:?}");
    }
    t.engine.shutdown().await;
}
