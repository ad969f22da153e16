//! The per-user pre-trade controls of issue 16 against the real app on port
//! 0, on both backends: the daily order limit (exact under fifty concurrent
//! submissions, unchanged for a process that starts cold, rolling over at the
//! reset time of an injected clock), the rate limit's 429 and Retry-After,
//! the anomaly rules as events in the log with their metric and log line,
//! enforcement behind its flag with an operator's lift, and the forced
//! refresh's interval. A test binary of its own: it captures the anomaly
//! lines with the process's one subscriber.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex, OnceLock};

use chrono::{DateTime, NaiveTime, TimeDelta, TimeZone, Utc};
use common::engine::fast_config;
use common::http::{grpc_resting_limit, resting_limit, spawn_app_custom, token, Custom, TestApp};
use common::TestDb;
use order_engine::app::LiveInputs;
use order_engine::clock::{Clock, ManualClock};
use order_engine::config::{RuntimeValues, Settings};
use order_engine::configsvc::flags::{FeatureFlags, FLAG_TTL_DEFAULT};
use order_engine::configsvc::{ConfigMetrics, ConfigServiceClient};
use order_engine::controls::trading_day::{read_day, OrderFacts, UserControls, ANOMALY_TARGET};
use order_engine::events::EventMetadata;
use order_engine::grpc::pb::order_service_client::OrderServiceClient;
use order_engine::grpc::status::api_response_of;
use order_engine::trading_day::{AnomalyType, TradingDayEvent, TradingDayRejection};
use rust_decimal_macros::dec;
use serde_json::{json, Value};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use uuid::Uuid;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

on_every_backend_in_actix!(
    the_daily_limit_is_exact_under_fifty_concurrent_submissions_and_for_a_cold_process,
    the_daily_limit_rolls_over_at_the_reset_time,
    the_rate_limit_answers_429_with_retry_after_and_the_health_route_names_the_user,
    enforcement_holds_a_users_orders_after_rapid_cancellations_until_an_operator_lifts_it,
    a_forced_refresh_is_allowed_once_per_interval_per_caller,
);

#[actix_rt::test]
async fn postgres_anomaly_lines() {
    if let Some(db) = TestDb::postgres("pretrade::postgres_anomaly_lines").await {
        thirty_orders_a_minute_pass_and_the_thirty_first_is_an_anomaly_in_log_metrics_and_lines(db).await;
    }
}

#[actix_rt::test]
async fn sqlite_anomaly_lines() {
    thirty_orders_a_minute_pass_and_the_thirty_first_is_an_anomaly_in_log_metrics_and_lines(TestDb::sqlite()).await;
}

/// The anomaly lines written so far, for the whole process: (level, message).
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<(String, String)>>>);

/// Records every event on the anomaly target. A plain layer with no filter of
/// its own: every callsite stays of interest to it, whichever thread or test
/// meets it first (a per-layer filter here lost the lines of some runs).
struct Capture(Lines);

struct Message(String);

impl tracing::field::Visit for Message {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.0 = value.to_owned();
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() != ANOMALY_TARGET {
            return;
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        let level = event.metadata().level().to_string();
        self.0 .0.lock().unwrap().push((level, message.0));
    }
}

/// Installs the capture as the process's subscriber, once (the apps' own
/// `try_init` then finds one set; their other log lines are not shown here).
fn anomaly_lines() -> Lines {
    static LINES: OnceLock<Lines> = OnceLock::new();
    LINES
        .get_or_init(|| {
            let lines = Lines::default();
            tracing_subscriber::registry()
                .with(Capture(lines.clone()))
                .try_init()
                .expect("the anomaly capture must be the first subscriber of this test binary");
            lines
        })
        .clone()
}

/// The anomaly lines naming `user`, as (level, message).
fn lines_of(lines: &Lines, user: Uuid) -> Vec<(String, String)> {
    let user = user.to_string();
    lines
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, message)| message.contains(&user))
        .cloned()
        .collect()
}

/// 10:30 in Kolkata on a Monday: inside the default session (09:00-15:30).
fn in_session() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 5, 0, 0).unwrap()
}

struct Spawned {
    app: TestApp,
    clock: Arc<ManualClock>,
}

/// The app at `at` on a manual clock, with `edit` applied to its settings.
async fn spawn_at(db: &TestDb, at: DateTime<Utc>, edit: impl FnOnce(&mut Settings) + 'static) -> Spawned {
    spawn_with(db, at, edit, None).await
}

async fn spawn_with(
    db: &TestDb,
    at: DateTime<Utc>,
    edit: impl FnOnce(&mut Settings) + 'static,
    live: Option<LiveInputs>,
) -> Spawned {
    // The capture must be the process's subscriber before any app installs one.
    let _ = anomaly_lines();
    let clock = Arc::new(ManualClock::new(at));
    let custom = Custom {
        settings: Some(Box::new(edit)),
        clock: Some(Arc::clone(&clock) as Arc<dyn Clock>),
        live,
        ..Custom::default()
    };
    let app = spawn_app_custom(db, fast_config(), None, custom).await;
    app.engine.market.set_price("AAPL", dec!(150)).unwrap();
    Spawned { app, clock }
}

async fn problem(response: reqwest::Response) -> (u16, Option<String>, Value) {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, retry_after, response.json().await.unwrap())
}

async fn the_daily_limit_is_exact_under_fifty_concurrent_submissions_and_for_a_cold_process(db: TestDb) {
    // Proves: with a limit of 10, fifty submissions of one user at once give exactly ten orders
    // and forty 429s naming `daily_order_limit_reached`, the limit and the reset; the day's stream
    // holds ten counts; gRPC refuses the next with RESOURCE_EXHAUSTED; and a process starting cold
    // on the same log (a restart) refuses the next order too.
    let Spawned { app, clock } = spawn_at(&db, in_session(), |s| {
        s.runtime.daily_order_limit = Some(10);
        s.pretrade.rate_limit_per_minute = None;
    })
    .await;
    let user = Uuid::new_v4();
    let bearer = token(user);
    let order = resting_limit();
    let answers = futures_util::future::join_all((0..50).map(|_| app.submit(&bearer, &order, None))).await;
    let mut accepted = 0;
    let mut refused = Vec::new();
    for answer in answers {
        match answer.status().as_u16() {
            202 => accepted += 1,
            _ => refused.push(problem(answer).await),
        }
    }
    assert_eq!(accepted, 10, "the limit of 10 let {accepted} through");
    assert_eq!(refused.len(), 40);
    for (status, retry_after, body) in &refused {
        assert_eq!(*status, 429, "{body}");
        assert_eq!(body["reason"], "daily_order_limit_reached", "{body}");
        assert_eq!(body["limit"], 10, "{body}");
        // The day resets at midnight in Kolkata: 18:30 UTC.
        assert_eq!(body["resets_at"], "2026-03-02T18:30:00+00:00", "{body}");
        assert_eq!(retry_after.as_deref(), Some("48600"), "{body}");
    }
    let controls = Arc::clone(&app.engine.engine.deps().controls);
    let day = controls.calendar().trading_day(clock.now());
    let stream = read_day(app.engine.store.store.as_ref(), user, day).await.unwrap();
    assert_eq!(stream.state.orders, 10);

    let mut grpc = OrderServiceClient::connect(app.grpc_address.clone()).await.unwrap();
    let mut call = tonic::Request::new(grpc_resting_limit(user));
    call.metadata_mut()
        .insert("authorization", format!("Bearer {bearer}").parse().unwrap());
    let status = grpc.submit_order(call).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert_eq!(
        api_response_of(&status).unwrap().error_code,
        "daily-order-limit-reached"
    );

    // What a restarted process builds: the same log, nothing cached.
    let cold = UserControls::new(
        app.engine.store.store.clone(),
        order_engine::config::PreTradeSettings {
            rate_limit_per_minute: None,
            ..Default::default()
        },
        tokio::sync::watch::channel(RuntimeValues {
            log_level: None,
            daily_order_limit: Some(10),
            daily_reset_time: NaiveTime::MIN,
            hard_refresh_rate_limit_seconds: 60,
        })
        .1,
        None,
        clock.clone() as Arc<dyn Clock>,
        &prometheus::Registry::new(),
    )
    .unwrap();
    let order_id = Uuid::new_v4();
    let facts = OrderFacts {
        user_id: user,
        order_id,
        symbol: "AAPL",
        quantity: dec!(1),
        value: Some(dec!(100)),
        at: clock.now(),
    };
    match cold.admit_order(&facts, order_id, &EventMetadata::default()).await {
        Err(order_engine::controls::trading_day::ControlError::Refused(
            TradingDayRejection::DailyOrderLimitReached { limit: 10, .. },
        )) => {}
        Err(other) => panic!("a cold process answered {other}"),
        Ok(_) => panic!("a cold process let the 11th order through"),
    }
}

async fn the_daily_limit_rolls_over_at_the_reset_time(db: TestDb) {
    // Proves: with the day resetting at 09:00 Kolkata time (03:30 UTC), an order at 08:59 is the
    // previous day's and is refused once its limit is used; a minute later, at 09:00, a new day
    // accepts it, and each day's count is its own stream.
    let at = Utc.with_ymd_and_hms(2026, 3, 2, 3, 29, 0).unwrap();
    let Spawned { app, clock } = spawn_at(&db, at, |s| {
        s.runtime.daily_order_limit = Some(2);
        s.runtime.daily_reset_time = NaiveTime::from_hms_opt(9, 0, 0).unwrap();
    })
    .await;
    let user = Uuid::new_v4();
    let bearer = token(user);
    for _ in 0..2 {
        assert_eq!(app.submit(&bearer, &resting_limit(), None).await.status(), 202);
    }
    let (status, retry_after, body) = problem(app.submit(&bearer, &resting_limit(), None).await).await;
    assert_eq!(
        (status, body["resets_at"].as_str()),
        (429, Some("2026-03-02T03:30:00+00:00")),
        "{body}"
    );
    assert_eq!(retry_after.as_deref(), Some("60"));
    clock.advance(TimeDelta::minutes(1));
    assert_eq!(app.submit(&bearer, &resting_limit(), None).await.status(), 202);
    let store = app.engine.store.store.as_ref();
    let yesterday = read_day(store, user, chrono::NaiveDate::from_ymd_opt(2026, 3, 1).unwrap())
        .await
        .unwrap();
    let today = read_day(store, user, chrono::NaiveDate::from_ymd_opt(2026, 3, 2).unwrap())
        .await
        .unwrap();
    assert_eq!((yesterday.state.orders, today.state.orders), (2, 1));
}

async fn the_rate_limit_answers_429_with_retry_after_and_the_health_route_names_the_user(db: TestDb) {
    // Proves: at 5 a minute, five orders 5 s apart pass and the sixth (25 s after the first) is
    // refused with 429 `rate_limited` and Retry-After 35; /health/rate-limiter lists the user; once
    // the first order leaves the minute, an order passes again.
    let Spawned { app, clock } = spawn_at(&db, in_session(), |s| s.pretrade.rate_limit_per_minute = Some(5)).await;
    let user = Uuid::new_v4();
    let bearer = token(user);
    for _ in 0..5 {
        assert_eq!(app.submit(&bearer, &resting_limit(), None).await.status(), 202);
        clock.advance(TimeDelta::seconds(5));
    }
    let (status, retry_after, body) = problem(app.submit(&bearer, &resting_limit(), None).await).await;
    assert_eq!((status, body["reason"].as_str()), (429, Some("rate_limited")), "{body}");
    assert_eq!(body["limit_per_minute"], 5);
    assert_eq!(retry_after.as_deref(), Some("35"), "{body}");
    let health = app.get_json("/health/rate-limiter", None).await;
    let held = health["users_limited"].as_array().unwrap();
    assert!(
        held.iter()
            .any(|u| u["user_id"] == user.to_string() && u["limit"] == "rate_limited"),
        "{health}"
    );
    clock.advance(TimeDelta::seconds(35));
    assert_eq!(app.submit(&bearer, &resting_limit(), None).await.status(), 202);
}

async fn thirty_orders_a_minute_pass_and_the_thirty_first_is_an_anomaly_in_log_metrics_and_lines(db: TestDb) {
    // Proves: thirty orders inside a minute raise nothing; the thirty-first raises
    // high_frequency_orders (HIGH) as an event of the user's day caused by that order, counted in
    // order_service_anomalies_total, written as ORDER_ANOMALY_CRITICAL, and shown by the order's
    // events route; an order of 60,000 units raises large_order_size (MEDIUM) as a WARNING line;
    // and nothing is refused while enforcement is off.
    let lines = anomaly_lines();
    let Spawned { app, clock } = spawn_at(&db, in_session(), |_| {}).await;
    let user = Uuid::new_v4();
    let bearer = token(user);
    for _ in 0..30 {
        assert_eq!(app.submit(&bearer, &resting_limit(), None).await.status(), 202);
        clock.advance(TimeDelta::seconds(1));
    }
    let day = app.engine.engine.deps().controls.calendar().trading_day(clock.now());
    let store = app.engine.store.store.as_ref();
    assert!(read_day(store, user, day).await.unwrap().state.last_fired.is_empty());
    assert!(lines_of(&lines, user).is_empty());
    let answer = app.submit(&bearer, &resting_limit(), None).await;
    assert_eq!(answer.status(), 202, "enforcement is off: the order stands");
    let order_id = answer.json::<Value>().await.unwrap()["order_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let recorded =
        order_engine::store::read_stream_all(store, &order_engine::events::StreamId::trading_day(user, day), 1)
            .await
            .unwrap();
    let anomaly = recorded
        .iter()
        .find(|e| e.event_type == "AnomalyDetected")
        .expect("the 31st order's anomaly in the log");
    assert_eq!(
        anomaly.metadata.correlation_id.map(|id| id.to_string()),
        Some(order_id.clone())
    );
    let decoded: TradingDayEvent = order_engine::events::decode(anomaly).unwrap();
    assert!(matches!(decoded, TradingDayEvent::AnomalyDetected(a) if a.anomaly == AnomalyType::HighFrequencyOrders));
    let metrics = app.metrics_text().await;
    let counted = metrics.lines().find(|line| {
        line.starts_with("order_service_anomalies_total{")
            && line.contains(r#"severity="HIGH""#)
            && line.contains(r#"type="high_frequency_orders""#)
    });
    assert_eq!(counted.and_then(|line| line.rsplit(' ').next()), Some("1"), "{metrics}");
    let seen = lines_of(&lines, user);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].0, "ERROR");
    assert!(seen[0].1.starts_with("ORDER_ANOMALY_CRITICAL: "), "{seen:?}");
    let events = app
        .get_json(&format!("/api/v1/orders/{order_id}/events"), Some(&bearer))
        .await;
    assert!(
        events.to_string().contains("AnomalyDetected") && events.to_string().contains("high_frequency_orders"),
        "{events}"
    );

    clock.advance(TimeDelta::minutes(5));
    let large = json!({"symbol": "AAPL", "order_type": "LIMIT", "order_side": "BUY", "quantity": 60000, "price": 1});
    assert_eq!(app.submit(&bearer, &large, None).await.status(), 202);
    let seen = lines_of(&lines, user);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1].0, "WARN");
    assert!(seen[1].1.starts_with("ORDER_ANOMALY_WARNING: ") && seen[1].1.contains("large_order_size"));
}

async fn enforcement_holds_a_users_orders_after_rapid_cancellations_until_an_operator_lifts_it(db: TestDb) {
    // Proves: with the enforcement flag on for the user (the config service's answer), the 21st
    // cancellation in a minute raises rapid_cancellations and holds the user's orders: the next
    // order is refused 403 `orders_held` with Retry-After until the hold's end; an operator's lift
    // (recorded in the log) lets the next order through at once.
    let flags_service = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/feature-flags/evaluate"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"enabled": true})))
        .mount(&flags_service)
        .await;
    let client = ConfigServiceClient::new(&flags_service.uri(), "test", "key").unwrap();
    let flags = Arc::new(FeatureFlags::new(
        Some(client),
        FLAG_TTL_DEFAULT,
        ConfigMetrics::new().unwrap(),
    ));
    let runtime = tokio::sync::watch::channel(Settings::from_lookup(|_| None).unwrap().runtime).1;
    let Spawned { app, clock } = spawn_with(&db, in_session(), |_| {}, Some(LiveInputs { runtime, flags })).await;
    let user = Uuid::new_v4();
    let bearer = token(user);
    let mut orders = Vec::new();
    for _ in 0..21 {
        let answer = app.submit(&bearer, &resting_limit(), None).await;
        assert_eq!(answer.status(), 202);
        orders.push(
            answer.json::<Value>().await.unwrap()["order_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        clock.advance(TimeDelta::seconds(2));
    }
    // The 21 orders took 42 s; the cancellations come within the next minute.
    clock.advance(TimeDelta::minutes(2));
    for order in &orders {
        let cancelled = app
            .client
            .put(format!("{}/api/v1/orders/{order}/cancel", app.address))
            .bearer_auth(&bearer)
            .send()
            .await
            .unwrap();
        assert_eq!(cancelled.status(), 200);
        clock.advance(TimeDelta::seconds(1));
    }
    let (status, retry_after, body) = problem(app.submit(&bearer, &resting_limit(), None).await).await;
    assert_eq!((status, body["reason"].as_str()), (403, Some("orders_held")), "{body}");
    assert_eq!(body["anomaly"], "rapid_cancellations");
    // Held for 15 minutes from the 21st cancellation, which was 1 s ago.
    assert_eq!(retry_after.as_deref(), Some("899"), "{body}");
    let lifted_until = app
        .engine
        .engine
        .deps()
        .controls
        .lift_hold(user, "operator:test", "the client confirmed the cancellations")
        .await
        .unwrap();
    assert!(lifted_until > clock.now());
    assert_eq!(app.submit(&bearer, &resting_limit(), None).await.status(), 202);
}

async fn a_forced_refresh_is_allowed_once_per_interval_per_caller(db: TestDb) {
    // Proves: GET status with Cache-Control: no-cache reads the order from the log; a second one
    // within ORDER_SERVICE_HARD_REFRESH_RATE_LIMIT_SECONDS (60) is 429 with the seconds left; a
    // plain read is never limited; after the interval a forced refresh passes again.
    let Spawned { app, clock } = spawn_at(&db, in_session(), |_| {}).await;
    let user = Uuid::new_v4();
    let bearer = token(user);
    let answer = app.submit(&bearer, &resting_limit(), None).await;
    let order_id = answer.json::<Value>().await.unwrap()["order_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let status = |no_cache: bool| {
        let mut request = app
            .client
            .get(format!("{}/api/v1/orders/{order_id}/status", app.address))
            .bearer_auth(&bearer);
        if no_cache {
            request = request.header("Cache-Control", "no-cache");
        }
        request.send()
    };
    assert_eq!(status(true).await.unwrap().status(), 200);
    clock.advance(TimeDelta::seconds(20));
    let (code, retry_after, body) = problem(status(true).await.unwrap()).await;
    assert_eq!((code, retry_after.as_deref()), (429, Some("40")), "{body}");
    assert_eq!(status(false).await.unwrap().status(), 200);
    clock.advance(TimeDelta::seconds(40));
    assert_eq!(status(true).await.unwrap().status(), 200);
}
