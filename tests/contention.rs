//! One user's burst of concurrent MARKET buys through the real app (HTTP on
//! port 0, and seed-format messages on `orders.submit`), on PostgreSQL with
//! group commit as `serve` runs, with the seed's 5-minute retry ladder: every
//! order executes within seconds and no saga ever records a failed step.
//! Must never shorten the ladder: a lost race parked on it is what this catches.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::amqp::{producer, publish, seed_submission, TestBroker};
use common::engine::{eventually, start_with, TestEngine};
use common::http::{spawn_app_with, token};
use common::TestDb;
use futures_util::future::join_all;
use lapin::types::FieldTable;
use order_engine::amqp::{self, OrderSubmitter};
use order_engine::clock::SystemClock;
use order_engine::engine::EngineConfig;
use order_engine::events::StreamId;
use order_engine::order::OrderStatus;
use order_engine::store::read_stream_all;
use rust_decimal_macros::dec;
use serde_json::{json, Value};
use uuid::Uuid;

/// Orders in one user's burst (the issue saw the stall from 25).
const BURST: usize = 50;
/// Every order of the burst executes within this long of the first submission.
const BURST_DEADLINE: Duration = Duration::from_secs(15);
const PRICE: rust_decimal::Decimal = dec!(150.25);

/// Waits until every order is EXECUTED (or the deadline passes), then checks
/// that none of their sagas recorded a failed step (a lost race on the ladder).
async fn all_executed_without_a_failed_step(t: &TestEngine, orders: &[Uuid], started: Instant, how: &str) {
    let deadline = BURST_DEADLINE.saturating_sub(started.elapsed());
    eventually(&format!("all {BURST} orders EXECUTED ({how})"), deadline, || async {
        for order_id in orders {
            let order = t.engine.get(*order_id).await.unwrap();
            if order.map(|o| o.status) != Some(OrderStatus::Executed) {
                return false;
            }
        }
        true
    })
    .await;
    let took = started.elapsed();
    for order_id in orders {
        let saga = read_stream_all(t.store.store.as_ref(), &StreamId::saga(*order_id), 1)
            .await
            .unwrap();
        let failed: Vec<_> = saga.iter().filter(|e| e.event_type == "StepFailed").collect();
        assert!(failed.is_empty(), "order {order_id} ({how}) recorded {failed:?}");
    }
    eprintln!("CONTENTION {how}: {BURST} MARKET buys of one user all EXECUTED in {took:.2?}");
}

#[actix_rt::test]
async fn a_burst_of_one_users_market_buys_over_http_all_execute_within_seconds() {
    // Proves 50 concurrent MARKET buys of one user over HTTP all execute within seconds, none parked on the retry ladder.
    let test = "a_burst_of_one_users_market_buys_over_http_all_execute_within_seconds";
    let Some(db) = TestDb::postgres(test).await else {
        return;
    };
    // As `serve` builds it: the seed's retry ladder, group commit, metering.
    let app = spawn_app_with(&db, EngineConfig::default(), None).await;
    app.engine.market.set_price("AAPL", PRICE).unwrap();
    let user = Uuid::new_v4();
    let bearer = token(user);
    let started = Instant::now();
    let posts = (0..BURST).map(|_| {
        app.client
            .post(format!("{}/api/v1/orders", app.address))
            .bearer_auth(&bearer)
            .json(&json!({"symbol": "AAPL", "order_type": "MARKET", "order_side": "BUY", "quantity": 1}))
            .send()
    });
    let mut orders = Vec::with_capacity(BURST);
    for response in join_all(posts).await {
        let response = response.unwrap();
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.unwrap();
        orders.push(body["order_id"].as_str().unwrap().parse::<Uuid>().unwrap());
    }
    all_executed_without_a_failed_step(&app.engine, &orders, started, "HTTP").await;
}

#[actix_rt::test]
async fn a_burst_of_one_users_market_buys_over_amqp_all_execute_within_seconds() {
    // Proves 50 seed-format MARKET buys of one user on orders.submit all execute within seconds, none parked on the retry ladder.
    let test = "a_burst_of_one_users_market_buys_over_amqp_all_execute_within_seconds";
    let Some(db) = TestDb::postgres(test).await else {
        return;
    };
    let Some(broker) = TestBroker::new(test).await else {
        return;
    };
    // As `serve` builds it: the seed's retry ladder, group commit, metering.
    let t = start_with(&db, db.open_backend(None).await, EngineConfig::default(), |app| app).await;
    t.market.set_price("AAPL", PRICE).unwrap();
    let handle = amqp::start(
        broker.config(),
        Arc::clone(&t.engine) as Arc<dyn OrderSubmitter>,
        Arc::clone(&t.store.store),
        Arc::new(SystemClock),
        None,
    );
    assert!(
        handle.wait_connected(Duration::from_secs(30)).await,
        "the AMQP layer never connected"
    );
    let connection = broker.connect("producer").await;
    let channel = producer(&connection).await;
    let user = Uuid::new_v4();
    let orders: Vec<Uuid> = (0..BURST).map(|_| Uuid::new_v4()).collect();
    let bodies: Vec<Vec<u8>> = orders
        .iter()
        .map(|order_id| serde_json::to_vec(&seed_submission(*order_id, user, "AAPL", json!(1))).unwrap())
        .collect();
    let started = Instant::now();
    join_all(bodies.iter().map(|body| publish(&channel, body, FieldTable::default()))).await;
    all_executed_without_a_failed_step(&t, &orders, started, "AMQP").await;
    handle.shutdown().await;
    t.engine.shutdown().await;
}
