//! The RabbitMQ layer against a real broker (a vhost per test) and a real
//! engine on each backend: seed-format submissions in, seed-format position
//! updates, events and statuses out; duplicates, poison messages, transient
//! failures and a broker that drops the engine's connections mid-publish.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::amqp::{producer, publish, seed_submission, Collector, TestBroker};
use common::engine::{eventually, start, start_on, TestEngine};
use common::TestDb;
use lapin::types::{AMQPValue, FieldTable, LongString};
use order_engine::amqp::wire::wire_uuid;
use order_engine::amqp::{self, AmqpConfig, AmqpHandle, OrderSubmitter};
use order_engine::app::ApplicationBuilder;
use order_engine::clock::SystemClock;
use order_engine::engine::{Engine, EngineError, SubmitRequest};
use order_engine::events::{decode, EventMetadata, StreamId};
use order_engine::order::Order;
use order_engine::store::{read_stream_all, BeforeCommitHook, EventStore, FaultInjected};
use order_engine::submission::{FailedAttempt, NextTry, SubmissionEvent};
use order_engine::telemetry::metrics::Metrics;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde_json::{json, Value};
use uuid::Uuid;

on_every_backend_in_actix!(
    a_seed_submission_comes_out_as_a_seed_position_update,
    a_duplicate_submission_is_one_order_and_one_execution,
    a_malformed_message_is_dead_lettered_once_with_its_reason,
    a_refused_order_is_published_as_order_rejected,
    an_order_without_market_data_is_rejected_at_once_not_laddered,
    a_user_past_the_daily_limit_hears_order_rejected_with_the_reason,
    a_transient_failure_is_retried_then_succeeds,
    a_submission_that_keeps_failing_lands_in_the_dlq_after_the_last_retry,
    closing_the_engines_connections_mid_publish_loses_nothing,
    a_burst_of_orders_flows_through_and_the_rates_are_reported,
    a_duplicate_submission_is_acked_quietly_and_a_conflicting_one_set_aside,
    a_short_retry_does_not_wait_behind_a_long_one,
    a_brief_outage_is_ridden_out_in_seconds_not_on_the_ladder,
    engine_restarts_never_dead_letter_a_valid_order,
    poison_messages_are_set_aside_while_valid_orders_flow,
    each_failed_try_is_recorded_once_on_the_submission_stream,
    a_log_that_is_down_does_not_stop_the_retries,
    a_record_that_never_answers_does_not_hold_up_the_consumer,
    submissions_finished_together_are_acknowledged_in_one_frame,
    a_delivery_in_hand_neither_blocks_the_others_nor_is_acked_with_them,
);

const WAIT: Duration = Duration::from_secs(30);
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn body(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap()
}

/// Publishes a seed MARKET BUY of AAPL for a new user.
async fn publish_order(channel: &lapin::Channel, order_id: Uuid, quantity: Value) {
    publish(
        channel,
        &body(&seed_submission(order_id, Uuid::new_v4(), "AAPL", quantity)),
        FieldTable::default(),
    )
    .await;
}

/// A submitter in front of the engine that answers `Unavailable` whenever
/// `fails(order id, that order's call number from 1, time since the first
/// call)` holds, as a database or service outage would; it counts every call.
struct Faulty {
    engine: Arc<Engine>,
    fails: Box<dyn Fn(Uuid, u32, Duration) -> bool + Send + Sync>,
    began: std::sync::OnceLock<Instant>,
    calls: std::sync::Mutex<HashMap<Uuid, u32>>,
    /// Records of failed tries never answer (a log that hangs), instead of reaching the engine.
    hang_records: bool,
    /// Fail as the engine does when market data is unavailable, not as a database outage.
    market_data_down: bool,
}

impl Faulty {
    fn new(engine: Arc<Engine>, fails: impl Fn(Uuid, u32, Duration) -> bool + Send + Sync + 'static) -> Self {
        Self {
            engine,
            fails: Box::new(fails),
            began: std::sync::OnceLock::new(),
            calls: std::sync::Mutex::default(),
            hang_records: false,
            market_data_down: false,
        }
    }

    fn calls(&self, order_id: Uuid) -> u32 {
        self.calls.lock().unwrap().get(&order_id).copied().unwrap_or(0)
    }

    fn total_calls(&self) -> u32 {
        self.calls.lock().unwrap().values().sum()
    }
}

#[async_trait]
impl OrderSubmitter for Faulty {
    async fn submit(&self, request: SubmitRequest) -> Result<Order, EngineError> {
        let order_id = request.order_id.unwrap();
        let since = self.began.get_or_init(Instant::now).elapsed();
        let call = {
            let mut calls = self.calls.lock().unwrap();
            let call = calls.entry(order_id).or_default();
            *call += 1;
            *call
        };
        if (self.fails)(order_id, call, since) {
            if self.market_data_down {
                return Err(EngineError::MarketDataUnavailable("circuit open (test)".into()));
            }
            return Err(EngineError::Unavailable("database unreachable (test)".into()));
        }
        self.engine.submit(request).await
    }

    async fn order(&self, order_id: Uuid) -> Result<Option<Order>, EngineError> {
        self.engine.get(order_id).await
    }

    async fn record_failed_try(&self, attempt: FailedAttempt) -> Result<(), EngineError> {
        if self.hang_records {
            std::future::pending::<()>().await;
        }
        self.engine.record_submission_attempt(attempt).await
    }
}

/// A submitter in front of the engine that holds the orders in `held` until
/// the test drops it (never answers them), and lets every other order through
/// the engine, then holds its answer until `together` of them have one, so
/// that they all finish at the same moment. It records every call.
struct Gated {
    engine: Arc<Engine>,
    held: Vec<Uuid>,
    together: usize,
    answered: AtomicU32,
    all_answered: tokio::sync::watch::Sender<bool>,
    calls: std::sync::Mutex<Vec<Uuid>>,
}

impl Gated {
    fn new(engine: Arc<Engine>, held: Vec<Uuid>, together: usize) -> Self {
        Self {
            engine,
            held,
            together,
            answered: AtomicU32::new(0),
            all_answered: tokio::sync::watch::Sender::new(false),
            calls: std::sync::Mutex::default(),
        }
    }

    fn calls(&self) -> Vec<Uuid> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait]
impl OrderSubmitter for Gated {
    async fn submit(&self, request: SubmitRequest) -> Result<Order, EngineError> {
        let order_id = request.order_id.unwrap();
        self.calls.lock().unwrap().push(order_id);
        if self.held.contains(&order_id) {
            std::future::pending::<()>().await;
        }
        let answer = self.engine.submit(request).await;
        let answered = self.answered.fetch_add(1, Ordering::SeqCst) + 1;
        if answered as usize >= self.together {
            self.all_answered.send_replace(true);
        }
        let _ = self.all_answered.subscribe().wait_for(|all| *all).await;
        answer
    }

    async fn order(&self, order_id: Uuid) -> Result<Option<Order>, EngineError> {
        self.engine.get(order_id).await
    }
}

struct Harness {
    engine: Arc<Engine>,
    store: Arc<dyn EventStore>,
    amqp: AmqpHandle,
    broker: TestBroker,
    metrics: Arc<Metrics>,
    _keep: common::TestStore,
}

impl Harness {
    /// An engine on `db`, the RabbitMQ layer on a fresh vhost, connected.
    async fn start(
        test: &str,
        db: &TestDb,
        config: impl FnOnce(AmqpConfig) -> AmqpConfig,
        submitter: impl FnOnce(Arc<Engine>) -> Arc<dyn OrderSubmitter>,
    ) -> Option<Self> {
        Self::start_hooked(test, db, None, config, submitter).await
    }

    /// Like `start`, with a hook before every commit of the engine's log.
    async fn start_hooked(
        test: &str,
        db: &TestDb,
        hook: Option<BeforeCommitHook>,
        config: impl FnOnce(AmqpConfig) -> AmqpConfig,
        submitter: impl FnOnce(Arc<Engine>) -> Arc<dyn OrderSubmitter>,
    ) -> Option<Self> {
        Self::start_built(test, db, hook, |app| app, config, submitter).await
    }

    /// Like `start_hooked`, with the application's parts changed by `parts`.
    async fn start_built(
        test: &str,
        db: &TestDb,
        hook: Option<BeforeCommitHook>,
        parts: impl FnOnce(ApplicationBuilder) -> ApplicationBuilder,
        config: impl FnOnce(AmqpConfig) -> AmqpConfig,
        submitter: impl FnOnce(Arc<Engine>) -> Arc<dyn OrderSubmitter>,
    ) -> Option<Self> {
        let broker = TestBroker::new(test).await?;
        let TestEngine {
            engine, market, store, ..
        } = start_on(db, db.open_backend(hook).await, parts).await;
        market.set_price("AAPL", dec!(150.25)).unwrap();
        let metrics = Arc::new(Metrics::new().unwrap());
        let handle = amqp::start(
            config(broker.config()),
            submitter(Arc::clone(&engine)),
            Arc::clone(&store.store),
            Arc::new(SystemClock),
            Some(Arc::clone(&metrics)),
        );
        assert!(handle.wait_connected(WAIT).await, "the AMQP layer never connected");
        Some(Self {
            engine,
            store: Arc::clone(&store.store),
            amqp: handle,
            broker,
            metrics,
            _keep: store,
        })
    }

    /// Like `start`, with the engine behind the test double `wrap` makes,
    /// which the test keeps (to count its calls).
    async fn wrapped<S: OrderSubmitter>(
        test: &str,
        db: &TestDb,
        config: impl FnOnce(AmqpConfig) -> AmqpConfig,
        wrap: impl FnOnce(Arc<Engine>) -> S,
    ) -> Option<(Self, Arc<S>)> {
        let slot = Arc::new(std::sync::OnceLock::<Arc<S>>::new());
        let keep = Arc::clone(&slot);
        let harness = Self::start(test, db, config, move |engine| {
            let submitter = Arc::new(wrap(engine));
            let _ = keep.set(Arc::clone(&submitter));
            submitter
        })
        .await?;
        let submitter = Arc::clone(slot.get().expect("start made the submitter"));
        Some((harness, submitter))
    }

    async fn plain(test: &str, db: &TestDb) -> Option<Self> {
        Self::start(test, db, |c| c, |e| e as Arc<dyn OrderSubmitter>).await
    }

    async fn stop(self) {
        self.amqp.shutdown().await;
        if let Ok(engine) = Arc::try_unwrap(self.engine) {
            engine.shutdown().await;
        }
    }

    async fn order_events(&self, order_id: Uuid) -> Vec<order_engine::events::RecordedEvent> {
        read_stream_all(self.store.as_ref(), &StreamId::order(order_id), 1)
            .await
            .unwrap()
    }
}

async fn wait_count(what: &str, collector: &Collector, count: usize) {
    eventually(what, WAIT, || async { collector.len() >= count }).await;
}

fn decimal(value: &Value) -> Decimal {
    assert!(value.is_number(), "{value} must be a JSON number");
    Decimal::from_str(&value.to_string()).unwrap()
}

async fn a_seed_submission_comes_out_as_a_seed_position_update(db: TestDb) {
    // Proves a 3.2.1 MARKET BUY yields one 3.2.3 position update with the seed's fields and values, plus its statuses in log order, with the trace and ids carried through; and that orders.events carries a cancellation (3.3 schema) but none of the executed order's lifecycle.
    let Some(h) = Harness::plain("a_seed_submission_comes_out_as_a_seed_position_update", &db).await else {
        return;
    };
    let test = h.broker.connect("reader").await;
    let positions = Collector::start(&test, "positions.updates").await;
    let events = Collector::start(&test, "orders.events").await;
    let statuses = Collector::start(&test, "orders.status").await;
    let (order_id, user_id) = (Uuid::new_v4(), Uuid::new_v4());
    let mut headers = FieldTable::default();
    headers.insert(
        "traceparent".into(),
        AMQPValue::LongString(LongString::from(TRACEPARENT)),
    );
    publish(
        &producer(&test).await,
        &body(&seed_submission(order_id, user_id, "AAPL", json!(10.0))),
        headers,
    )
    .await;

    wait_count("one position update", &positions, 1).await;
    wait_count("EXECUTED status", &statuses, 3).await;
    let update = positions.all().remove(0);
    let p = &update.json;
    assert_eq!(p["order_id"], order_id.to_string());
    assert_eq!(p["user_id"], user_id.to_string());
    assert_eq!(p["symbol"], "AAPL");
    assert_eq!(p["order_side"], "BUY");
    assert_eq!(p["order_type"], "MARKET");
    assert_eq!(decimal(&p["quantity"]), dec!(10));
    assert_eq!(decimal(&p["execution_price"]), dec!(150.25));
    assert_eq!(decimal(&p["total_value"]), dec!(1502.50));
    assert_eq!(decimal(&p["market_price_at_exec"]), dec!(150.25));
    assert!(p["executed_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(p["market_data_timestamp"], p["executed_at"]);
    let m = &p["message_metadata"];
    assert_eq!(m["correlation_id"], order_id.to_string());
    assert!(m["message_id"]
        .as_str()
        .unwrap()
        .starts_with(&format!("position_update_{order_id}_")));
    assert_eq!(
        (
            &m["retry_attempt"],
            &m["priority"],
            &m["source"],
            &m["message_type"],
            &m["processing_stage"]
        ),
        (
            &json!(0),
            &json!(1),
            &json!("order_execution"),
            &json!("position_update"),
            &json!("initial")
        )
    );
    let keys: Vec<&String> = p.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 12, "exactly the seed's fields: {keys:?}");

    // AMQP ids: the event id and the order id; the trace continues.
    let log = h.order_events(order_id).await;
    let executed = log.iter().find(|e| e.event_type == "OrderExecuted").unwrap();
    assert_eq!(update.message_id, Some(executed.event_id.to_string()));
    assert_eq!(update.correlation_id, Some(order_id.to_string()));
    let submitted = &log[0];
    assert_eq!(submitted.metadata.trace.as_ref().unwrap().traceparent, TRACEPARENT);
    assert_eq!(
        submitted.metadata.causation_id,
        Some(wire_uuid(&format!("msg_{order_id}")))
    );
    assert_eq!(submitted.metadata.correlation_id, Some(order_id));

    // Every status, in log order; the producer's trace goes on with the
    // messages of the events it caused directly.
    assert_eq!(statuses.all()[0].header("traceparent").as_deref(), Some(TRACEPARENT));
    let seen: Vec<String> = statuses
        .all()
        .iter()
        .map(|s| s.json["status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(seen, ["PENDING", "PROCESSING", "EXECUTED"]);

    // orders.events carries what seed 3.3 lists there (failed, cancelled;
    // plus our OrderRejected), not the executed order's lifecycle: a LIMIT
    // far below the market rests, is cancelled, and is the only EventMessage.
    let (resting, owner) = (Uuid::new_v4(), Uuid::new_v4());
    let mut limit = seed_submission(resting, owner, "AAPL", json!(1));
    limit["order_type"] = json!("LIMIT");
    limit["price"] = json!(100);
    publish(&producer(&test).await, &body(&limit), FieldTable::default()).await;
    eventually("the LIMIT order resting", WAIT, || async {
        h.engine
            .get(resting)
            .await
            .unwrap()
            .is_some_and(|o| o.status == order_engine::order::OrderStatus::Processing)
    })
    .await;
    h.engine.cancel(resting, owner, "changed my mind").await.unwrap();
    wait_count("the cancellation on orders.events", &events, 1).await;
    // Give a wrongly published lifecycle event time to arrive before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(event_types(&events), ["OrderCancelled"], "only what seed 3.3 lists");
    let cancelled_in_log = h.order_events(resting).await;
    let cancelled_in_log = cancelled_in_log
        .iter()
        .find(|e| e.event_type == "OrderCancelled")
        .unwrap();
    let cancelled = &events.all()[0];
    assert_eq!(cancelled.message_id, Some(cancelled_in_log.event_id.to_string()));
    assert_eq!(cancelled.correlation_id, Some(resting.to_string()));
    let event = &cancelled.json;
    for field in [
        "event_id",
        "event_type",
        "aggregate_id",
        "occurred_at",
        "event_data",
        "message_id",
        "correlation_id",
        "timestamp",
        "source",
    ] {
        assert!(!event[field].is_null(), "EventMessage lacks {field}: {event}");
    }
    assert_eq!(event["aggregate_id"], resting.to_string());
    assert_eq!(event["event_data"]["user_id"], owner.to_string());
    assert_eq!(event["event_data"]["symbol"], "AAPL");
    h.stop().await;
}

async fn a_duplicate_submission_is_one_order_and_one_execution(db: TestDb) {
    // Proves the same message published twice gives one order and exactly one positions.updates message (counted, not deduplicated).
    let Some(h) = Harness::plain("a_duplicate_submission_is_one_order_and_one_execution", &db).await else {
        return;
    };
    let test = h.broker.connect("reader").await;
    let positions = Collector::start(&test, "positions.updates").await;
    let statuses = Collector::start(&test, "orders.status").await;
    let order_id = Uuid::new_v4();
    let message = body(&seed_submission(order_id, Uuid::new_v4(), "AAPL", json!("10")));
    let channel = producer(&test).await;
    publish(&channel, &message, FieldTable::default()).await;
    publish(&channel, &message, FieldTable::default()).await;
    eventually("both copies handled", WAIT, || async {
        h.amqp.consumer().processed() >= 2
    })
    .await;
    wait_count("EXECUTED status", &statuses, 3).await;
    // Give a wrongly duplicated execution time to show up before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(positions.len(), 1, "{:?}", positions.all());
    assert_eq!(statuses.len(), 3, "one PENDING, PROCESSING, EXECUTED");
    let log = h.order_events(order_id).await;
    assert_eq!(log.iter().filter(|e| e.event_type == "OrderSubmitted").count(), 1);
    assert_eq!(log.iter().filter(|e| e.event_type == "OrderExecuted").count(), 1);
    h.stop().await;
}

async fn a_malformed_message_is_dead_lettered_once_with_its_reason(db: TestDb) {
    // Proves undecodable messages reach orders.dlq exactly once each, with the reason and the original routing key, and create nothing.
    let Some(h) = Harness::plain("a_malformed_message_is_dead_lettered_once_with_its_reason", &db).await else {
        return;
    };
    let test = h.broker.connect("reader").await;
    let dlq = Collector::start(&test, "orders.dlq").await;
    let channel = producer(&test).await;
    publish(&channel, b"{not json", FieldTable::default()).await;
    let mut bad_side = seed_submission(Uuid::new_v4(), Uuid::new_v4(), "AAPL", json!(1));
    bad_side["order_side"] = json!("HOLD");
    publish(&channel, &body(&bad_side), FieldTable::default()).await;
    eventually("both handled", WAIT, || async { h.amqp.consumer().processed() >= 2 }).await;
    wait_count("two dead letters", &dlq, 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let letters = dlq.all();
    assert_eq!(letters.len(), 2, "each poison message exactly once");
    assert_eq!(letters[0].body, b"{not json");
    for letter in &letters {
        assert_eq!(
            letter.header("x-original-routing-key").as_deref(),
            Some("orders.submit")
        );
        assert!(letter
            .header("x-rejection-reason")
            .unwrap()
            .contains("not an order submission"));
    }
    assert!(letters[1].header("x-rejection-reason").unwrap().contains("HOLD"));
    assert_eq!(h.store.head_position().await.unwrap(), 0, "nothing was recorded");
    h.stop().await;
}

async fn a_refused_order_is_published_as_order_rejected(db: TestDb) {
    // Proves a valid message the engine refuses (unknown symbol, negative quantity) becomes an OrderRejected EventMessage with the reason, and no order.
    let Some(h) = Harness::plain("a_refused_order_is_published_as_order_rejected", &db).await else {
        return;
    };
    let test = h.broker.connect("reader").await;
    let events = Collector::start(&test, "orders.events").await;
    let dlq = Collector::start(&test, "orders.dlq").await;
    let channel = producer(&test).await;
    let unknown = Uuid::new_v4();
    publish(
        &channel,
        &body(&seed_submission(unknown, Uuid::new_v4(), "ZZZZ", json!(1))),
        FieldTable::default(),
    )
    .await;
    let negative = Uuid::new_v4();
    publish(
        &channel,
        &body(&seed_submission(negative, Uuid::new_v4(), "AAPL", json!(-5))),
        FieldTable::default(),
    )
    .await;
    wait_count("two rejections", &events, 2).await;
    let by_order: HashMap<String, Value> = events
        .all()
        .into_iter()
        .map(|e| (e.json["aggregate_id"].as_str().unwrap().to_owned(), e.json))
        .collect();
    let unknown_event = &by_order[&unknown.to_string()];
    assert_eq!(unknown_event["event_type"], "OrderRejected");
    assert_eq!(unknown_event["event_data"]["code"], "UnknownSymbol");
    assert!(unknown_event["event_data"]["reason"].as_str().unwrap().contains("ZZZZ"));
    assert_eq!(by_order[&negative.to_string()]["event_data"]["code"], "InvalidQuantity");
    assert!(h.order_events(unknown).await.is_empty());
    assert_eq!(dlq.len(), 0);
    h.stop().await;
}

async fn a_user_past_the_daily_limit_hears_order_rejected_with_the_reason(db: TestDb) {
    // Proves the daily order limit refuses over RabbitMQ too: with a limit of 2, the third
    // submission of one user becomes one OrderRejected with code daily_order_limit_reached,
    // is not laddered or dead-lettered, and records no order; the first two stand.
    let mut runtime = order_engine::config::Settings::from_lookup(|_| None).unwrap().runtime;
    runtime.daily_order_limit = Some(2);
    let live = order_engine::app::LiveInputs {
        runtime: tokio::sync::watch::channel(runtime).1,
        flags: Arc::new(order_engine::configsvc::flags::FeatureFlags::new(
            None,
            order_engine::configsvc::flags::FLAG_TTL_DEFAULT,
            order_engine::configsvc::ConfigMetrics::new().unwrap(),
        )),
    };
    let Some(h) = Harness::start_built(
        "a_user_past_the_daily_limit_hears_order_rejected_with_the_reason",
        &db,
        None,
        move |app| app.live(live),
        |c| c,
        |e| e as Arc<dyn OrderSubmitter>,
    )
    .await
    else {
        return;
    };
    let test = h.broker.connect("reader").await;
    let events = Collector::start(&test, "orders.events").await;
    let dlq = Collector::start(&test, "orders.dlq").await;
    let channel = producer(&test).await;
    let user = Uuid::new_v4();
    let orders: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    for order in &orders {
        publish(
            &channel,
            &body(&seed_submission(*order, user, "AAPL", json!(1))),
            FieldTable::default(),
        )
        .await;
        // In order: the third is the one past the limit.
        eventually("the submission recorded or refused", WAIT, || async {
            !h.order_events(*order).await.is_empty() || events.len() > 0
        })
        .await;
    }
    wait_count("the rejection", &events, 1).await;
    let rejected = &events.all()[0].json;
    assert_eq!(rejected["event_type"], "OrderRejected");
    assert_eq!(rejected["aggregate_id"], orders[2].to_string());
    assert_eq!(rejected["event_data"]["code"], "daily_order_limit_reached");
    assert!(
        rejected["event_data"]["reason"]
            .as_str()
            .unwrap()
            .contains("limit of 2"),
        "{rejected}"
    );
    assert!(h.order_events(orders[2]).await.is_empty());
    assert!(!h.order_events(orders[0]).await.is_empty() && !h.order_events(orders[1]).await.is_empty());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(dlq.len(), 0);
    h.stop().await;
}

async fn an_order_without_market_data_is_rejected_at_once_not_laddered(db: TestDb) {
    // Proves a submission the engine refuses for want of market data becomes one
    // OrderRejected with code MarketDataUnavailable: not retried in the consumer,
    // not put on the ladder, not dead-lettered, and no order recorded.
    let Some((h, refusing)) = Harness::wrapped(
        "an_order_without_market_data_is_rejected_at_once_not_laddered",
        &db,
        |c| c,
        |engine| Faulty {
            market_data_down: true,
            ..Faulty::new(engine, |_, _, _| true)
        },
    )
    .await
    else {
        return;
    };
    let test = h.broker.connect("reader").await;
    let events = Collector::start(&test, "orders.events").await;
    let dlq = Collector::start(&test, "orders.dlq").await;
    let order_id = Uuid::new_v4();
    publish_order(&producer(&test).await, order_id, json!(2)).await;
    wait_count("the rejection", &events, 1).await;
    let rejected = &events.all()[0].json;
    assert_eq!(rejected["event_type"], "OrderRejected");
    assert_eq!(rejected["aggregate_id"], order_id.to_string());
    assert_eq!(rejected["event_data"]["code"], "MarketDataUnavailable");
    // Give a retry time to show itself before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(refusing.total_calls(), 1, "tried once: the client already retried");
    assert!(h.order_events(order_id).await.is_empty());
    assert_eq!(dlq.len(), 0);
    h.stop().await;
}

async fn a_transient_failure_is_retried_then_succeeds(db: TestDb) {
    // Proves a submission that fails transiently goes round orders.retry (with x-retry-attempt) and is then executed once.
    let Some((h, flaky)) = Harness::wrapped(
        "a_transient_failure_is_retried_then_succeeds",
        &db,
        // No in-consumer retries: this test is about the ladder.
        |c| AmqpConfig { quick_retries: 0, ..c },
        |engine| Faulty::new(engine, |_, call, _| call <= 2),
    )
    .await
    else {
        return;
    };
    let test = h.broker.connect("reader").await;
    let positions = Collector::start(&test, "positions.updates").await;
    let dlq = Collector::start(&test, "orders.dlq").await;
    let order_id = Uuid::new_v4();
    publish_order(&producer(&test).await, order_id, json!(2)).await;
    wait_count("the execution after two retries", &positions, 1).await;
    assert_eq!(flaky.total_calls(), 3);
    assert_eq!(positions.all()[0].json["order_id"], order_id.to_string());
    assert_eq!(dlq.len(), 0);
    h.stop().await;
}

async fn a_submission_that_keeps_failing_lands_in_the_dlq_after_the_last_retry(db: TestDb) {
    // Proves the retry ladder is climbed to its end (1 + 4 attempts, each with its 2 bounded in-consumer retries) and the message then reaches orders.dlq once, with the reason.
    let Some((h, flaky)) = Harness::wrapped(
        "a_submission_that_keeps_failing_lands_in_the_dlq_after_the_last_retry",
        &db,
        |c| AmqpConfig {
            retry_delays: vec![
                Duration::from_millis(20),
                Duration::from_millis(40),
                Duration::from_millis(60),
                Duration::from_millis(80),
            ],
            quick_retries: 2,
            quick_retry_min: Duration::from_millis(1),
            quick_retry_max: Duration::from_millis(5),
            ..c
        },
        |engine| Faulty::new(engine, |_, _, _| true),
    )
    .await
    else {
        return;
    };
    let test = h.broker.connect("reader").await;
    let dlq = Collector::start(&test, "orders.dlq").await;
    publish_order(&producer(&test).await, Uuid::new_v4(), json!(2)).await;
    wait_count("the dead letter", &dlq, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(dlq.len(), 1);
    assert_eq!(flaky.total_calls(), 5 * (1 + 2));
    let letter = &dlq.all()[0];
    assert!(letter
        .header("x-rejection-reason")
        .unwrap()
        .contains("gave up after 4 retries"));
    assert_eq!(letter.header("x-retry-attempt").as_deref(), Some("4"));
    h.stop().await;
}

async fn closing_the_engines_connections_mid_publish_loses_nothing(db: TestDb) {
    // Proves that when the broker closes every engine connection twice under load, every execution still arrives, and any duplicate repeats the same message id and body.
    const ORDERS: usize = 150;
    let Some(h) = Harness::start(
        "closing_the_engines_connections_mid_publish_loses_nothing",
        &db,
        // Small batches keep publishes in flight when the connection drops.
        |c| AmqpConfig {
            publisher_batch_size: 8,
            ..c
        },
        |e| e as Arc<dyn OrderSubmitter>,
    )
    .await
    else {
        return;
    };
    let test = h.broker.connect("reader").await;
    let positions = Collector::start(&test, "positions.updates").await;
    let channel = producer(&test).await;
    let orders: Vec<Uuid> = (0..ORDERS).map(|_| Uuid::new_v4()).collect();
    let to_send = orders.clone();
    let sender = tokio::spawn(async move {
        for order_id in to_send {
            publish(
                &channel,
                &body(&seed_submission(order_id, Uuid::new_v4(), "AAPL", json!(1))),
                FieldTable::default(),
            )
            .await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let mut closed = 0;
    for round in 0..2 {
        eventually("some executions published", WAIT, || async {
            positions.len() >= 10 + round * 40
        })
        .await;
        closed += h.broker.close_engine_connections().await;
    }
    assert!(closed >= 4, "closed only {closed} engine connections");
    sender.await.unwrap();
    eventually(
        "every execution, after reconnecting",
        Duration::from_secs(90),
        || async {
            let seen: std::collections::HashSet<String> = positions
                .all()
                .iter()
                .map(|p| p.json["order_id"].as_str().unwrap().to_owned())
                .collect();
            seen.len() == ORDERS
        },
    )
    .await;
    assert!(h.amqp.wait_connected(WAIT).await, "reconnected");
    let mut by_order: HashMap<String, Vec<common::amqp::Received>> = HashMap::new();
    for p in positions.all() {
        by_order
            .entry(p.json["order_id"].as_str().unwrap().to_owned())
            .or_default()
            .push(p);
    }
    let mut duplicates = 0;
    for (order, copies) in &by_order {
        for copy in &copies[1..] {
            assert_eq!(
                copy.message_id, copies[0].message_id,
                "{order}: a duplicate must repeat the message id"
            );
            assert_eq!(copy.body, copies[0].body, "{order}: a duplicate must repeat the body");
            duplicates += 1;
        }
    }
    for order_id in &orders {
        assert!(by_order.contains_key(&order_id.to_string()), "lost {order_id}");
        let executed = h
            .order_events(*order_id)
            .await
            .iter()
            .filter(|e| e.event_type == "OrderExecuted")
            .count();
        assert_eq!(executed, 1, "{order_id} executed {executed} times");
    }
    let _ = writeln!(
        std::io::stderr(),
        "broker closed {closed} engine connections; {ORDERS} executions arrived with {duplicates} duplicates"
    );
    h.stop().await;
}

async fn a_burst_of_orders_flows_through_and_the_rates_are_reported(db: TestDb) {
    // Proves a burst of submissions (200; ORDER_ENGINE_AMQP_BURST overrides, e.g. 500) all come out as position updates, and reports the consumer's and the publishers' sustained rates.
    let orders: usize = std::env::var("ORDER_ENGINE_AMQP_BURST")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    let Some(h) = Harness::plain("a_burst_of_orders_flows_through_and_the_rates_are_reported", &db).await else {
        return;
    };
    let test = h.broker.connect("reader").await;
    let positions = Collector::start(&test, "positions.updates").await;
    let channel = producer(&test).await;
    let bodies: Vec<Vec<u8>> = (0..orders)
        .map(|_| body(&seed_submission(Uuid::new_v4(), Uuid::new_v4(), "AAPL", json!(1))))
        .collect();
    let started = Instant::now();
    for message in &bodies {
        publish(&channel, message, FieldTable::default()).await;
    }
    let published = started.elapsed();
    eventually("every submission handled", Duration::from_secs(240), || async {
        h.amqp.consumer().processed() >= orders as u64
    })
    .await;
    let consumed = started.elapsed();
    eventually("every position update", Duration::from_secs(240), || async {
        positions.len() >= orders
    })
    .await;
    let end_to_end = started.elapsed();
    let messages: u64 = h.amqp.publishers().iter().map(|p| p.processed()).sum();
    let rate = |n: f64, d: Duration| n / d.as_secs_f64();
    let _ = writeln!(
        std::io::stderr(),
        "RATE backend={} orders={orders}: producer published in {:.2}s; consumer {:.0} submissions/s ({:.2}s) in {} ack frames; end to end {:.0} orders/s ({:.2}s); publishers {messages} messages confirmed, {:.0} messages/s",
        h.store.backend(),
        published.as_secs_f64(),
        rate(orders as f64, consumed),
        consumed.as_secs_f64(),
        h.amqp.consumer().ack_frames(),
        rate(orders as f64, end_to_end),
        end_to_end.as_secs_f64(),
        rate(messages as f64, end_to_end),
    );
    assert_eq!(positions.len(), orders);

    // The publishers alone: rewind their checkpoints and time a full republish of the log.
    let Harness {
        engine,
        store,
        amqp: first,
        broker,
        _keep,
        ..
    } = h;
    first.shutdown().await;
    for route in amqp::Route::ALL {
        store.save_checkpoint(route.checkpoint(), 0).await.unwrap();
    }
    let replay = amqp::start(
        broker.config(),
        Arc::clone(&engine) as Arc<dyn OrderSubmitter>,
        Arc::clone(&store),
        Arc::new(SystemClock),
        None,
    );
    let started = Instant::now();
    eventually("the republish of the whole log", Duration::from_secs(240), || async {
        replay.publishers().iter().map(|p| p.processed()).sum::<u64>() >= messages
    })
    .await;
    let republished = started.elapsed();
    let _ = writeln!(
        std::io::stderr(),
        "RATE backend={} publishers alone (confirmed, from checkpoint 0): {messages} messages in {:.2}s = {:.0} messages/s",
        store.backend(),
        republished.as_secs_f64(),
        rate(messages as f64, republished),
    );
    replay.shutdown().await;
    if let Ok(engine) = Arc::try_unwrap(engine) {
        engine.shutdown().await;
    }
}

/// A submitter that never answers: the engine is "killed" while it holds the delivery.
#[derive(Default)]
struct Stuck {
    calls: AtomicU32,
}

#[async_trait]
impl OrderSubmitter for Stuck {
    async fn submit(&self, _request: SubmitRequest) -> Result<Order, EngineError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::future::pending().await
    }

    async fn order(&self, _order_id: Uuid) -> Result<Option<Order>, EngineError> {
        Ok(None)
    }
}

fn event_types(events: &Collector) -> Vec<String> {
    events
        .all()
        .iter()
        .map(|e| e.json["event_type"].as_str().unwrap_or("").to_owned())
        .collect()
}

async fn a_duplicate_submission_is_acked_quietly_and_a_conflicting_one_set_aside(db: TestDb) {
    // Proves a resend of an existing order is acked with no OrderRejected, and a resend with another body goes to orders.dlq (reason: conflicting) without touching the order.
    let Some(h) = Harness::plain(
        "a_duplicate_submission_is_acked_quietly_and_a_conflicting_one_set_aside",
        &db,
    )
    .await
    else {
        return;
    };
    let test = h.broker.connect("reader").await;
    let events = Collector::start(&test, "orders.events").await;
    let dlq = Collector::start(&test, "orders.dlq").await;
    let channel = producer(&test).await;
    let (order_id, user_id) = (Uuid::new_v4(), Uuid::new_v4());
    let first = body(&seed_submission(order_id, user_id, "AAPL", json!(10)));
    publish(&channel, &first, FieldTable::default()).await;
    eventually("the first copy handled", WAIT, || async {
        h.amqp.consumer().processed() >= 1
    })
    .await;
    // The same order again (a redelivery after a crash, a producer's resend), then another body under its id.
    publish(&channel, &first, FieldTable::default()).await;
    publish(
        &channel,
        &body(&seed_submission(order_id, user_id, "AAPL", json!(99))),
        FieldTable::default(),
    )
    .await;
    eventually("all three handled", WAIT, || async {
        h.amqp.consumer().processed() >= 3
    })
    .await;
    // Give a wrong OrderRejected time to arrive before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let types = event_types(&events);
    assert!(
        !types.iter().any(|t| t == "OrderRejected"),
        "an order that exists was announced as rejected: {types:?}"
    );
    wait_count("the conflicting copy dead-lettered", &dlq, 1).await;
    assert_eq!(dlq.len(), 1, "only the conflicting copy is set aside");
    let reason = dlq.all()[0].header("x-rejection-reason").unwrap();
    assert!(reason.contains("conflicting resubmission"), "{reason}");
    assert!(reason.contains("quantity"), "the reason names what differs: {reason}");
    let log = h.order_events(order_id).await;
    assert_eq!(log.iter().filter(|e| e.event_type == "OrderSubmitted").count(), 1);
    let order = h.engine.get(order_id).await.unwrap().unwrap();
    assert_eq!(order.quantity, dec!(10), "the first submission stands");
    let text = h.metrics.render();
    assert!(
        text.contains(r#"order_engine_duplicate_submissions_total{source="amqp"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"order_engine_conflicting_submissions_total{source="amqp"} 1"#),
        "{text}"
    );
    h.stop().await;
}

async fn a_short_retry_does_not_wait_behind_a_long_one(db: TestDb) {
    // Proves a retry on the first rung comes back on time while another message waits on a much longer rung (no head-of-line blocking).
    const LONG: Duration = Duration::from_secs(20);
    let (long_order, short_order) = (Uuid::new_v4(), Uuid::new_v4());
    let Some((h, flaky)) = Harness::wrapped(
        "a_short_retry_does_not_wait_behind_a_long_one",
        &db,
        |c| AmqpConfig {
            retry_delays: vec![Duration::from_millis(100), LONG],
            // Every failure goes to the ladder: the failure counts are rungs.
            quick_retries: 0,
            ..c
        },
        // The long order climbs to the long rung; the short one needs one short retry.
        move |engine| {
            Faulty::new(engine, move |order, call, _| {
                call <= if order == long_order { 2 } else { 1 }
            })
        },
    )
    .await
    else {
        return;
    };
    let test = h.broker.connect("reader").await;
    let positions = Collector::start(&test, "positions.updates").await;
    let channel = producer(&test).await;
    publish_order(&channel, long_order, json!(1)).await;
    eventually("the long order on its long rung", WAIT, || async {
        flaky.calls(long_order) >= 2
    })
    .await;
    // Let its retry reach the long rung before the short one is queued behind it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    publish_order(&channel, short_order, json!(1)).await;
    eventually(
        "the short order's execution, long before the long rung expires",
        Duration::from_secs(5),
        || async {
            positions
                .all()
                .iter()
                .any(|p| p.json["order_id"] == short_order.to_string())
        },
    )
    .await;
    let waited = started.elapsed();
    assert!(waited < LONG / 4, "waited {waited:?}");
    assert_eq!(flaky.calls(short_order), 2);
    let _ = writeln!(
        std::io::stderr(),
        "short retry executed after {} ms while another waited on a {} s rung",
        waited.as_millis(),
        LONG.as_secs()
    );
    h.stop().await;
}

async fn a_brief_outage_is_ridden_out_in_seconds_not_on_the_ladder(db: TestDb) {
    // Proves a 700 ms outage (a database restart) is retried within the consumer and the order executes in seconds, never reaching the minutes-long first rung.
    const OUTAGE: Duration = Duration::from_millis(700);
    let Some((h, outage)) = Harness::wrapped(
        "a_brief_outage_is_ridden_out_in_seconds_not_on_the_ladder",
        &db,
        |c| AmqpConfig {
            retry_delays: vec![Duration::from_secs(60)],
            // 50+100+200+400+400 ms (plus jitter) outlast the 700 ms outage.
            quick_retries: 5,
            quick_retry_min: Duration::from_millis(50),
            quick_retry_max: Duration::from_millis(400),
            ..c
        },
        |engine| Faulty::new(engine, |_, _, since| since < OUTAGE),
    )
    .await
    else {
        return;
    };
    let test = h.broker.connect("reader").await;
    let positions = Collector::start(&test, "positions.updates").await;
    let dlq = Collector::start(&test, "orders.dlq").await;
    let started = Instant::now();
    publish_order(&producer(&test).await, Uuid::new_v4(), json!(1)).await;
    eventually("the execution after the outage", Duration::from_secs(8), || async {
        positions.len() >= 1
    })
    .await;
    let waited = started.elapsed();
    let calls = outage.total_calls();
    assert!(calls >= 2, "retried within the consumer: {calls} calls");
    assert_eq!(dlq.len(), 0);
    let _ = writeln!(
        std::io::stderr(),
        "a {} ms outage cost {} ms over {calls} attempts",
        OUTAGE.as_millis(),
        waited.as_millis()
    );
    h.stop().await;
}

async fn engine_restarts_never_dead_letter_a_valid_order(db: TestDb) {
    // Proves a submission in flight while the engine goes down more times in a row than the queue's delivery limit is still processed, never dead-lettered.
    let restarts = amqp::DEFAULT_DELIVERY_LIMIT + 2;
    let Some(broker) = TestBroker::new("engine_restarts_never_dead_letter_a_valid_order").await else {
        return;
    };
    let TestEngine {
        engine, market, store, ..
    } = start(&db).await;
    market.set_price("AAPL", dec!(150.25)).unwrap();
    let config = AmqpConfig {
        delivery_limit: amqp::DEFAULT_DELIVERY_LIMIT,
        ..broker.config()
    };
    // Declare the topology (with its delivery limit) before the message arrives.
    let first = amqp::start(
        config.clone(),
        Arc::new(Stuck::default()),
        Arc::clone(&store.store),
        Arc::new(SystemClock),
        None,
    );
    assert!(first.wait_connected(WAIT).await);
    first.shutdown().await;
    let test = broker.connect("reader").await;
    let dlq = Collector::start(&test, "orders.dlq").await;
    let positions = Collector::start(&test, "positions.updates").await;
    let order_id = Uuid::new_v4();
    publish_order(&producer(&test).await, order_id, json!(3)).await;
    for restart in 1..=restarts {
        // The engine takes the delivery, then dies holding it.
        let stuck = Arc::new(Stuck::default());
        let handle = amqp::start(
            config.clone(),
            Arc::clone(&stuck) as Arc<dyn OrderSubmitter>,
            Arc::clone(&store.store),
            Arc::new(SystemClock),
            None,
        );
        eventually("the delivery reached the engine (or the DLQ)", WAIT, || async {
            stuck.calls.load(Ordering::SeqCst) >= 1 || dlq.len() > 0
        })
        .await;
        handle.shutdown().await;
        assert_eq!(
            dlq.len(),
            0,
            "a valid order was dead-lettered after {restart} engine restarts"
        );
    }
    let handle = amqp::start(
        config,
        Arc::clone(&engine) as Arc<dyn OrderSubmitter>,
        Arc::clone(&store.store),
        Arc::new(SystemClock),
        None,
    );
    wait_count("the execution after the restarts", &positions, 1).await;
    assert_eq!(positions.all()[0].json["order_id"], order_id.to_string());
    assert_eq!(dlq.len(), 0);
    let _ = writeln!(
        std::io::stderr(),
        "a submission survived {restarts} engine restarts in a row (delivery limit {})",
        amqp::DEFAULT_DELIVERY_LIMIT
    );
    handle.shutdown().await;
    if let Ok(engine) = Arc::try_unwrap(engine) {
        engine.shutdown().await;
    }
}

async fn poison_messages_are_set_aside_while_valid_orders_flow(db: TestDb) {
    // Proves each poison message (not JSON, wrong shape, 5 MB, bad UUID, duplicate keys) reaches orders.dlq once with its reason, a negative quantity is one OrderRejected, and the valid orders between them all execute.
    let started = Instant::now();
    let Some(h) = Harness::plain("poison_messages_are_set_aside_while_valid_orders_flow", &db).await else {
        return;
    };
    let test = h.broker.connect("reader").await;
    let positions = Collector::start(&test, "positions.updates").await;
    let events = Collector::start(&test, "orders.events").await;
    let dlq = Collector::start(&test, "orders.dlq").await;
    let channel = producer(&test).await;
    let mut wrong_shape = seed_submission(Uuid::new_v4(), Uuid::new_v4(), "AAPL", json!(1));
    wrong_shape["quantity"] = json!({"amount": 1});
    let mut bad_uuid = seed_submission(Uuid::new_v4(), Uuid::new_v4(), "AAPL", json!(1));
    bad_uuid["user_id"] = json!("user-42");
    let duplicate_keys = format!(
        r#"{{"order_id":"{}","user_id":"{}","symbol":"AAPL","order_side":"BUY","order_type":"MARKET","quantity":1,"quantity":1000}}"#,
        Uuid::new_v4(),
        Uuid::new_v4()
    );
    let mut huge = seed_submission(Uuid::new_v4(), Uuid::new_v4(), "AAPL", json!(1));
    huge["padding"] = json!("x".repeat(5 * 1024 * 1024));
    let negative = Uuid::new_v4();
    // (body, the words its dead-letter reason must hold; None: refused as OrderRejected)
    let poison: Vec<(Vec<u8>, Option<&str>)> = vec![
        (b"this is not json".to_vec(), Some("not an order submission")),
        (body(&wrong_shape), Some("not an order submission")),
        (body(&huge), Some("exceeds")),
        (
            body(&seed_submission(negative, Uuid::new_v4(), "AAPL", json!(-3))),
            None,
        ),
        (body(&bad_uuid), Some("UUID")),
        (duplicate_keys.into_bytes(), Some("duplicate field `quantity`")),
    ];
    let mut valid = Vec::new();
    for (message, _) in &poison {
        let order_id = Uuid::new_v4();
        valid.push(order_id);
        publish_order(&channel, order_id, json!(1)).await;
        publish(&channel, message, FieldTable::default()).await;
    }
    let last = Uuid::new_v4();
    valid.push(last);
    publish_order(&channel, last, json!(1)).await;
    let dead = poison.iter().filter(|(_, reason)| reason.is_some()).count();
    wait_count("every valid order executed", &positions, valid.len()).await;
    wait_count("every poison message dead-lettered", &dlq, dead).await;
    eventually("the refusal published", WAIT, || async {
        event_types(&events).iter().any(|t| t == "OrderRejected")
    })
    .await;
    // Give a second copy of anything time to arrive before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let letters = dlq.all();
    assert_eq!(letters.len(), dead, "each poison message exactly once");
    for (message, reason) in &poison {
        let Some(reason) = reason else { continue };
        let copies: Vec<_> = letters.iter().filter(|l| &l.body == message).collect();
        assert_eq!(copies.len(), 1, "expected one dead letter for reason {reason}");
        let given = copies[0].header("x-rejection-reason").unwrap();
        assert!(given.contains(reason), "{given:?} lacks {reason:?}");
        assert_eq!(
            copies[0].header("x-original-routing-key").as_deref(),
            Some("orders.submit")
        );
    }
    let rejected: Vec<_> = events
        .all()
        .into_iter()
        .filter(|e| e.json["event_type"] == "OrderRejected")
        .collect();
    assert_eq!(rejected.len(), 1, "only the negative quantity is a refusal");
    assert_eq!(rejected[0].json["aggregate_id"], negative.to_string());
    assert_eq!(rejected[0].json["event_data"]["code"], "InvalidQuantity");
    let executed: std::collections::HashSet<String> = positions
        .all()
        .iter()
        .map(|p| p.json["order_id"].as_str().unwrap().to_owned())
        .collect();
    for order_id in &valid {
        assert!(
            executed.contains(&order_id.to_string()),
            "valid order {order_id} did not execute"
        );
    }
    assert_eq!(positions.len(), valid.len());
    let _ = writeln!(
        std::io::stderr(),
        "poison: {dead} dead-lettered, 1 refused, {} valid executed in {} ms",
        valid.len(),
        started.elapsed().as_millis()
    );
    h.stop().await;
}

/// The failed tries recorded for `order_id`, as stored and decoded.
async fn failed_tries(
    store: &dyn EventStore,
    order_id: Uuid,
) -> Vec<(order_engine::events::RecordedEvent, SubmissionEvent)> {
    read_stream_all(store, &StreamId::submission(order_id), 1)
        .await
        .unwrap()
        .into_iter()
        .map(|e| {
            let decoded = decode::<SubmissionEvent>(&e).unwrap();
            (e, decoded)
        })
        .collect()
}

/// What the log does with appends to `submission-*` streams (the engine's other appends pass).
const LOG_UP: u8 = 0;
const LOG_REFUSES: u8 = 1;
const LOG_HANGS: u8 = 2;

fn submission_appends(mode: Arc<std::sync::atomic::AtomicU8>) -> BeforeCommitHook {
    use futures_util::FutureExt;
    Arc::new(move |written| {
        let submission = written.iter().any(|a| a.stream_id.category() == "submission");
        let mode = if submission {
            mode.load(Ordering::SeqCst)
        } else {
            LOG_UP
        };
        async move {
            match mode {
                LOG_REFUSES => Err(FaultInjected("the log is down (test)".into())),
                LOG_HANGS => {
                    // Far past the engine's record timeout; the append is dropped before this ends.
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    Ok(())
                }
                _ => Ok(()),
            }
        }
        .boxed()
    })
}

async fn each_failed_try_is_recorded_once_on_the_submission_stream(db: TestDb) {
    // Proves every failed try (quick retries and the last try of each delivery) appears once as SubmissionAttemptFailed on submission-<id>, with what came next, a repeat records nothing, and the order's audit shows the tries.
    let began = chrono::Utc::now();
    let Some((h, flaky)) = Harness::wrapped(
        "each_failed_try_is_recorded_once_on_the_submission_stream",
        &db,
        |c| AmqpConfig {
            retry_delays: vec![Duration::from_millis(20), Duration::from_millis(40)],
            quick_retries: 1,
            quick_retry_min: Duration::from_millis(1),
            quick_retry_max: Duration::from_millis(5),
            ..c
        },
        // Two deliveries of two tries each fail; the third delivery succeeds.
        |engine| Faulty::new(engine, |_, call, _| call <= 4),
    )
    .await
    else {
        return;
    };
    let test = h.broker.connect("reader").await;
    let positions = Collector::start(&test, "positions.updates").await;
    let order_id = Uuid::new_v4();
    publish_order(&producer(&test).await, order_id, json!(2)).await;
    wait_count("the execution after two rungs", &positions, 1).await;
    assert_eq!(flaky.total_calls(), 5);
    // Records run on their own tasks: give the last one a moment.
    eventually("four failed tries in the log", WAIT, || async {
        failed_tries(h.store.as_ref(), order_id).await.len() >= 4
    })
    .await;
    let tries = failed_tries(h.store.as_ref(), order_id).await;
    let mut seen: Vec<(u32, NextTry)> = tries
        .iter()
        .map(|(recorded, SubmissionEvent::SubmissionAttemptFailed(e))| {
            assert_eq!(recorded.event_type, "SubmissionAttemptFailed");
            assert_eq!(e.order_id, order_id);
            assert!(e.error.contains("database unreachable (test)"), "{}", e.error);
            assert!(e.failed_at >= began && e.failed_at <= chrono::Utc::now());
            assert_eq!(recorded.metadata.source.as_deref(), Some("amqp"));
            assert_eq!(recorded.metadata.correlation_id, Some(order_id));
            let next = match e.next {
                // The wait is jittered; the retry's number is what identifies it.
                NextTry::Quick { retry, .. } => NextTry::Quick { retry, wait_ms: 0 },
                other => other,
            };
            (e.retry_attempt, next)
        })
        .collect();
    seen.sort_by_key(|(attempt, next)| (*attempt, matches!(next, NextTry::Rung { .. })));
    assert_eq!(
        seen,
        [
            (0, NextTry::Quick { retry: 1, wait_ms: 0 }),
            (0, NextTry::Rung { rung: 1, delay_ms: 20 }),
            (1, NextTry::Quick { retry: 1, wait_ms: 0 }),
            (1, NextTry::Rung { rung: 2, delay_ms: 40 }),
        ]
    );
    // A redelivered retry reports the same try again: it is recorded once.
    let again = FailedAttempt {
        order_id,
        retry_attempt: 1,
        next: NextTry::Rung { rung: 2, delay_ms: 40 },
        error: "database unreachable (test)".into(),
        metadata: EventMetadata::default(),
    };
    h.engine.record_submission_attempt(again).await.unwrap();
    assert_eq!(failed_tries(h.store.as_ref(), order_id).await.len(), 4);
    // The order's story holds its failed tries, in log order with the rest
    // (a record runs on its own task, so it may land after the order's first event).
    let story = order_engine::audit::order_story(h.store.as_ref(), order_id)
        .await
        .unwrap()
        .unwrap();
    let tried: Vec<&str> = story
        .iter()
        .filter(|e| e.source == "submission")
        .map(|e| e.event_type.as_str())
        .collect();
    assert_eq!(tried, ["SubmissionAttemptFailed"; 4]);
    assert!(story.windows(2).all(|w| w[0].global_position < w[1].global_position));
    assert!(story.iter().any(|e| e.event_type == "OrderExecuted"));
    h.stop().await;
}

async fn a_log_that_is_down_does_not_stop_the_retries(db: TestDb) {
    // Proves that when the log refuses or does not answer the records of failed tries, the consumer's quick retries and rungs go on exactly as before, the order executes once, and the engine gives a hung record up within its timeout.
    let mode = Arc::new(std::sync::atomic::AtomicU8::new(LOG_REFUSES));
    let Some((h, flaky)) = ({
        let hook = submission_appends(Arc::clone(&mode));
        let slot = Arc::new(std::sync::OnceLock::<Arc<Faulty>>::new());
        let keep = Arc::clone(&slot);
        let harness = Harness::start_hooked(
            "a_log_that_is_down_does_not_stop_the_retries",
            &db,
            Some(hook),
            |c| AmqpConfig {
                retry_delays: vec![Duration::from_millis(20), Duration::from_millis(40)],
                quick_retries: 2,
                quick_retry_min: Duration::from_millis(1),
                quick_retry_max: Duration::from_millis(5),
                ..c
            },
            move |engine| {
                let faulty = Arc::new(Faulty::new(engine, |_, call, _| call <= 5));
                let _ = keep.set(Arc::clone(&faulty));
                faulty
            },
        )
        .await;
        harness.map(|h| (h, Arc::clone(slot.get().unwrap())))
    }) else {
        return;
    };
    let test = h.broker.connect("reader").await;
    let positions = Collector::start(&test, "positions.updates").await;
    let dlq = Collector::start(&test, "orders.dlq").await;
    let order_id = Uuid::new_v4();
    publish_order(&producer(&test).await, order_id, json!(2)).await;
    wait_count("the execution after the retries", &positions, 1).await;
    // Delivery 0: three tries, then rung 1; delivery 1: two failures and a success.
    assert_eq!(flaky.total_calls(), 6);
    assert_eq!(dlq.len(), 0);
    assert_eq!(positions.len(), 1);
    assert!(failed_tries(h.store.as_ref(), order_id).await.is_empty());
    // A log that hangs: the record is given up within the engine's timeout, not waited for.
    mode.store(LOG_HANGS, Ordering::SeqCst);
    let attempt = FailedAttempt {
        order_id,
        retry_attempt: 9,
        next: NextTry::DeadLettered,
        error: "database unreachable (test)".into(),
        metadata: EventMetadata::default(),
    };
    let started = Instant::now();
    let result = h.engine.record_submission_attempt(attempt.clone()).await;
    let waited = started.elapsed();
    assert!(matches!(result, Err(EngineError::Unavailable(_))), "{result:?}");
    assert!(
        waited < order_engine::engine::ATTEMPT_RECORD_TIMEOUT * 4,
        "a hung record took {waited:?}"
    );
    // The dropped append wrote nothing and left the log usable.
    mode.store(LOG_UP, Ordering::SeqCst);
    assert!(failed_tries(h.store.as_ref(), order_id).await.is_empty());
    h.engine.record_submission_attempt(attempt).await.unwrap();
    assert_eq!(failed_tries(h.store.as_ref(), order_id).await.len(), 1);
    h.stop().await;
}

async fn a_record_that_never_answers_does_not_hold_up_the_consumer(db: TestDb) {
    // Proves the consumer never waits for a record: with every record hanging for ever, the retries still run and the order executes.
    let Some((h, flaky)) = Harness::wrapped(
        "a_record_that_never_answers_does_not_hold_up_the_consumer",
        &db,
        |c| AmqpConfig {
            retry_delays: vec![Duration::from_millis(20), Duration::from_millis(40)],
            quick_retries: 2,
            quick_retry_min: Duration::from_millis(1),
            quick_retry_max: Duration::from_millis(5),
            ..c
        },
        |engine| Faulty {
            hang_records: true,
            ..Faulty::new(engine, |_, call, _| call <= 5)
        },
    )
    .await
    else {
        return;
    };
    let test = h.broker.connect("reader").await;
    let positions = Collector::start(&test, "positions.updates").await;
    let order_id = Uuid::new_v4();
    publish_order(&producer(&test).await, order_id, json!(2)).await;
    wait_count("the execution after the retries", &positions, 1).await;
    assert_eq!(flaky.total_calls(), 6);
    assert!(failed_tries(h.store.as_ref(), order_id).await.is_empty());
    h.stop().await;
}

async fn submissions_finished_together_are_acknowledged_in_one_frame(db: TestDb) {
    // Proves submissions handled at the same moment are acknowledged with one basic.ack (multiple) rather than one each, and that it covered them all: a new consumer gets none of them again.
    const ORDERS: usize = 32;
    let Some((h, _gated)) = Harness::wrapped(
        "submissions_finished_together_are_acknowledged_in_one_frame",
        &db,
        |c| c,
        |engine| Gated::new(engine, Vec::new(), ORDERS),
    )
    .await
    else {
        return;
    };
    let test = h.broker.connect("reader").await;
    let positions = Collector::start(&test, "positions.updates").await;
    let channel = producer(&test).await;
    for _ in 0..ORDERS {
        publish_order(&channel, Uuid::new_v4(), json!(1)).await;
    }
    eventually("every submission handled and acknowledged", WAIT, || async {
        h.amqp.consumer().processed() >= ORDERS as u64 && h.amqp.consumer().ack_frames() >= 1
    })
    .await;
    wait_count("every execution", &positions, ORDERS).await;
    let frames = h.amqp.consumer().ack_frames();
    let _ = writeln!(
        std::io::stderr(),
        "{ORDERS} submissions finished together were acknowledged in {frames} basic.ack frame(s)"
    );
    assert!(frames <= 2, "{ORDERS} submissions took {frames} ack frames");

    // Nothing is left unacknowledged: a new consumer is handed none of them.
    let Harness {
        engine,
        store,
        amqp: first,
        broker,
        _keep,
        ..
    } = h;
    first.shutdown().await;
    let counting = Arc::new(Gated::new(Arc::clone(&engine), Vec::new(), 1));
    let second = amqp::start(
        broker.config(),
        Arc::clone(&counting) as Arc<dyn OrderSubmitter>,
        Arc::clone(&store),
        Arc::new(SystemClock),
        None,
    );
    assert!(second.wait_connected(WAIT).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(counting.calls(), Vec::<Uuid>::new(), "redelivered after a multiple ack");
    second.shutdown().await;
    if let Ok(engine) = Arc::try_unwrap(engine) {
        engine.shutdown().await;
    }
}

async fn a_delivery_in_hand_neither_blocks_the_others_nor_is_acked_with_them(db: TestDb) {
    // Proves one delivery that never finishes leaves the rest of a small prefetch window flowing (more orders than the window execute behind it), and that no ack of theirs covered it: after a restart it alone comes back and executes.
    const PREFETCH: u16 = 4;
    const OTHERS: usize = 20;
    let slow = Uuid::new_v4();
    let Some((h, gated)) = Harness::wrapped(
        "a_delivery_in_hand_neither_blocks_the_others_nor_is_acked_with_them",
        &db,
        |c| AmqpConfig {
            prefetch: PREFETCH,
            ..c
        },
        move |engine| Gated::new(engine, vec![slow], 1),
    )
    .await
    else {
        return;
    };
    let test = h.broker.connect("reader").await;
    let positions = Collector::start(&test, "positions.updates").await;
    let channel = producer(&test).await;
    publish_order(&channel, slow, json!(1)).await;
    eventually("the slow delivery in hand", WAIT, || async { gated.calls() == [slow] }).await;
    let others: Vec<Uuid> = (0..OTHERS).map(|_| Uuid::new_v4()).collect();
    for order_id in &others {
        publish_order(&channel, *order_id, json!(1)).await;
    }
    wait_count("every other order executed behind the slow one", &positions, OTHERS).await;
    assert!(
        !positions.all().iter().any(|p| p.json["order_id"] == slow.to_string()),
        "the slow order is still in hand"
    );

    // Stop while it is in hand: it must come back (it was never acked); the others must not.
    let Harness {
        engine,
        store,
        amqp: first,
        broker,
        _keep,
        ..
    } = h;
    first.shutdown().await;
    let counting = Arc::new(Gated::new(Arc::clone(&engine), Vec::new(), 1));
    let second = amqp::start(
        AmqpConfig {
            prefetch: PREFETCH,
            ..broker.config()
        },
        Arc::clone(&counting) as Arc<dyn OrderSubmitter>,
        Arc::clone(&store),
        Arc::new(SystemClock),
        None,
    );
    wait_count("the slow order executed after the restart", &positions, OTHERS + 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(counting.calls(), [slow], "only the delivery in hand came back");
    assert_eq!(positions.len(), OTHERS + 1);
    second.shutdown().await;
    if let Ok(engine) = Arc::try_unwrap(engine) {
        engine.shutdown().await;
    }
}
