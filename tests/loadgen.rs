//! The load generator against a real engine in this process: the RabbitMQ
//! layer on a vhost of its own, the HTTP API on port 0, on each backend. A
//! small run over each transport must complete every order, with no errors,
//! and report percentiles and memory that make sense.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::amqp::TestBroker;
use common::engine::start;
use common::http::spawn_app;
use common::TestDb;
use order_engine::amqp::{self, AmqpHandle};
use order_engine::auth::JwtConfig;
use order_engine::clock::SystemClock;
use order_engine::loadgen::{self, LoadConfig, Rate, Report, Transport};

on_every_backend_in_actix!(
    a_fixed_rate_run_over_amqp_completes_every_order,
    a_max_rate_run_over_http_completes_every_order,
);

const ORDERS: u64 = 50;

fn config(broker: &TestBroker, transport: Transport, rate: Rate, http_url: String) -> LoadConfig {
    LoadConfig {
        transport,
        amqp: broker.config(),
        http_url,
        jwt: JwtConfig::development(None),
        rate,
        orders: Some(ORDERS),
        duration: None,
        users: 5,
        symbols: vec!["AAPL".into(), "MSFT".into()],
        quantity: 1,
        in_flight: 16,
        timeout: Duration::from_secs(60),
        engine_pid: Some(std::process::id()),
    }
}

/// The figures every clean run must show.
fn assert_clean(report: &Report) {
    assert_eq!(report.sent, ORDERS, "{report:#?}");
    assert_eq!(report.completed, ORDERS, "{report:#?}");
    assert_eq!(report.errors.total(), 0, "{report:#?}");
    assert_eq!(report.unmatched_updates, 0, "{report:#?}");
    let latency = report.latency.as_ref().expect("latencies of completed orders");
    assert_eq!(latency.count as u64, ORDERS);
    assert!(latency.min_ms > 0.0, "{latency:?}");
    assert!(
        latency.min_ms <= latency.p50_ms
            && latency.p50_ms <= latency.p99_ms
            && latency.p99_ms <= latency.p999_ms
            && latency.p999_ms <= latency.max_ms,
        "percentiles out of order: {latency:?}"
    );
    assert!(latency.max_ms < report.timeout_s * 1_000.0, "{latency:?}");
    assert!(report.throughput_per_s > 0.0 && report.elapsed_s >= report.send_s);
    let memory = report.engine_memory.expect("memory of --engine-pid");
    assert!(memory.samples >= 2 && memory.peak_rss_kib > 0 && memory.hwm_kib >= memory.peak_rss_kib);
    let json = serde_json::to_value(report).unwrap();
    assert_eq!(json["completed"], serde_json::json!(ORDERS));
}

async fn start_amqp(
    broker: &TestBroker,
    engine: &Arc<order_engine::engine::Engine>,
    store: &common::TestStore,
) -> AmqpHandle {
    let handle = amqp::start(
        broker.config(),
        Arc::clone(engine) as Arc<dyn amqp::OrderSubmitter>,
        Arc::clone(&store.store),
        Arc::new(SystemClock),
        None,
    );
    assert!(
        handle.wait_connected(Duration::from_secs(30)).await,
        "the AMQP layer never connected"
    );
    handle
}

async fn a_fixed_rate_run_over_amqp_completes_every_order(db: TestDb) {
    // Proves 50 seed-format submissions at 100/s each come back as their own position update, timed, with no error.
    let Some(broker) = TestBroker::new("a_fixed_rate_run_over_amqp_completes_every_order").await else {
        return;
    };
    let engine = start(&db).await;
    let handle = start_amqp(&broker, &engine.engine, &engine.store).await;
    let report = loadgen::run(config(&broker, Transport::Amqp, Rate::PerSecond(100.0), String::new()))
        .await
        .unwrap();
    assert_clean(&report);
    assert_eq!(report.transport, "amqp");
    assert_eq!(report.offered_rate_per_s, Some(100.0));
    // The schedule held: 50 orders at 100/s are sent within about half a second.
    assert!(report.send_s < 2.0, "{report:#?}");
    handle.shutdown().await;
}

async fn a_max_rate_run_over_http_completes_every_order(db: TestDb) {
    // Proves a closed-loop HTTP run matches each 202's order id to its position update and ends with none missing.
    let Some(broker) = TestBroker::new("a_max_rate_run_over_http_completes_every_order").await else {
        return;
    };
    let app = spawn_app(&db).await;
    let handle = start_amqp(&broker, &app.engine.engine, &app.engine.store).await;
    let report = loadgen::run(config(&broker, Transport::Http, Rate::Max, app.address.clone()))
        .await
        .unwrap();
    assert_clean(&report);
    assert_eq!(report.transport, "http");
    assert_eq!(report.offered_rate_per_s, None);
    handle.shutdown().await;
}

#[actix_rt::test]
async fn a_broker_without_the_engine_is_refused_with_a_hint() {
    // Proves a run against a vhost where no engine declared the topology fails at once, saying to start serve.
    let Some(broker) = TestBroker::new("a_broker_without_the_engine_is_refused_with_a_hint").await else {
        return;
    };
    let error = loadgen::run(config(&broker, Transport::Amqp, Rate::Max, String::new()))
        .await
        .unwrap_err();
    assert!(matches!(error, loadgen::LoadgenError::NoTopology { .. }), "{error}");
    assert!(error.to_string().contains("order-engine serve"), "{error}");
}
