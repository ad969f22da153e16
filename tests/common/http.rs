//! The real app on a random port (zero2prod's spawn_app), built through
//! `Application::builder` as `serve` builds it: group commit and metering on
//! the log, the embedded ledger, the orders projection, the HTTP API. The test
//! keeps raw SQL access to the same database and a market it prices itself.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use std::time::Duration;

use actix_web::web;
use order_engine::app::Application;
use order_engine::auth::{mint_dev_token, Authenticator, JwtConfig};
use order_engine::clients::ServiceCredentials;
use order_engine::config::Settings;
use order_engine::engine::EngineConfig;
use order_engine::projections::ProjectionHealth;
use order_engine::projections::ReadModels;
use order_engine::telemetry::metrics::Metrics;
use uuid::Uuid;

use super::engine::{fast_config, test_settings, TestEngine};
use super::{TestDb, TestStore};

pub struct TestApp {
    pub address: String,
    /// `http://127.0.0.1:<port>` of the gRPC order service (its own port 0 pick).
    pub grpc_address: String,
    /// The app's engine, ledger and market, and its log (raw SQL beside it).
    pub engine: Arc<TestEngine>,
    pub client: reqwest::Client,
    pub orders_projection: Arc<ProjectionHealth>,
    pub metrics: web::Data<Metrics>,
}

/// Serves the app on `db` at 127.0.0.1 with a port the OS picks, with the
/// fast retry ladder, trusting development tokens and [`test_service`].
pub async fn spawn_app(db: &TestDb) -> TestApp {
    spawn_app_with(db, fast_config(), None).await
}

/// As [`spawn_app`], with another token verifier or other service keys.
pub async fn spawn_app_with_auth(db: &TestDb, auth: Authenticator) -> TestApp {
    spawn_app_with(db, fast_config(), Some(auth)).await
}

/// As [`spawn_app`], with the engine's bounds and ladder from `config` (the
/// parts `serve` reads from its settings: retry ladder, market buffer, actor
/// limits) and, when given, `auth` instead of the verifiers the settings describe.
/// The actor threads stay `serve`'s default, one per core, so the HTTP tests
/// run the order actors spread over threads as production does.
pub async fn spawn_app_with(db: &TestDb, config: EngineConfig, auth: Option<Authenticator>) -> TestApp {
    spawn_app_custom(db, config, auth, Custom::default()).await
}

/// Edits the settings before the app is built (a control's setting).
pub type EditSettings = Box<dyn FnOnce(&mut Settings)>;
/// Wraps the read models the app serves from (a fault-injecting double).
pub type WrapModels = Box<dyn FnOnce(Arc<dyn ReadModels>) -> Arc<dyn ReadModels>>;

/// What a test changes in what `serve` would build, beyond the engine's bounds.
#[derive(Default)]
pub struct Custom {
    pub settings: Option<EditSettings>,
    pub models: Option<WrapModels>,
    /// The engine's clock in place of the system's (a trading day's roll-over).
    pub clock: Option<Arc<dyn order_engine::clock::Clock>>,
    /// Run-time values and feature flags, as `serve` takes them from the config service.
    pub live: Option<order_engine::app::LiveInputs>,
}

/// As [`spawn_app_with`], with the settings and read models changed by `custom`.
pub async fn spawn_app_custom(
    db: &TestDb,
    config: EngineConfig,
    auth: Option<Authenticator>,
    custom: Custom,
) -> TestApp {
    // Logs go through the test writer (captured); RUST_LOG=order_engine=debug shows them.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut settings = test_settings(db.url(), &config);
    settings.http_addr = "127.0.0.1:0".parse().unwrap();
    settings.grpc_addr = "127.0.0.1:0".parse().unwrap();
    if let Some(edit) = custom.settings {
        edit(&mut settings);
    }
    // The bare backend: the application adds group commit and metering itself.
    let opened = db.open_backend(None).await;
    let models = match custom.models {
        Some(wrap) => wrap(Arc::clone(&opened.models)),
        None => Arc::clone(&opened.models),
    };
    let mut builder = Application::builder(settings)
        .log(Arc::clone(&opened.store), models)
        // Tests set prices and assert fills at them: no feed moves the market.
        .frozen_market()
        .http_workers(1);
    if let Some(auth) = auth {
        builder = builder.authenticator(auth);
    }
    if let Some(clock) = custom.clock {
        builder = builder.clock(clock);
    }
    if let Some(live) = custom.live {
        builder = builder.live(live);
    }
    let app = builder.build().await.unwrap();
    let engine = Arc::new(TestEngine {
        engine: app.engine(),
        ledger: app.ledger().expect("the embedded ledger is the balance service"),
        market: app.market().expect("the simulator is the market data"),
        store: TestStore {
            store: app.store(),
            ..opened
        },
    });
    let address = format!("http://127.0.0.1:{}", app.port());
    let grpc_address = format!("http://127.0.0.1:{}", app.grpc_port());
    let orders_projection = app.orders_projection();
    let metrics = app.metrics();
    // Serves as long as the test's runtime: nothing asks it to stop.
    actix_rt::spawn(app.run_until(std::future::pending()));
    TestApp {
        address,
        grpc_address,
        engine,
        client: reqwest::Client::new(),
        orders_projection,
        metrics,
    }
}

impl TestApp {
    /// POST /api/v1/orders with `body` as `bearer`, with an Idempotency-Key if given.
    pub async fn submit(&self, bearer: &str, body: &serde_json::Value, key: Option<&str>) -> reqwest::Response {
        let mut request = self
            .client
            .post(format!("{}/api/v1/orders", self.address))
            .bearer_auth(bearer)
            .json(body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        request.send().await.unwrap()
    }

    /// GET /metrics as text.
    pub async fn metrics_text(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.address))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// GET `path`'s JSON body, as `bearer` if given.
    pub async fn get_json(&self, path: &str, bearer: Option<&str>) -> serde_json::Value {
        let mut request = self.client.get(format!("{}{path}", self.address));
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        request.send().await.unwrap().json().await.unwrap()
    }
}

/// The internal service the test app trusts, its API key and its signing secret.
pub const TEST_SERVICE: &str = "algo_engine";
pub const TEST_SERVICE_KEY: &str = "test-algo-engine-key";
pub const TEST_SERVICE_SECRET: &str = "test-algo-engine-signing-secret-0123456789";

pub fn test_service() -> ServiceCredentials {
    ServiceCredentials::new(TEST_SERVICE, TEST_SERVICE_KEY, TEST_SERVICE_SECRET)
}

/// A development token for `user`, as `order-engine token --user` prints.
pub fn token(user: Uuid) -> String {
    mint_dev_token(&JwtConfig::development(None), user, Duration::from_secs(600)).unwrap()
}

/// Most events a test's log holds; far above what the HTTP and gRPC tests append.
pub const LOG_EVENTS_MAX: usize = 10_000;
/// How long a positive control may take to settle (its saga reserves, then the order rests).
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(20);

/// What must not move when a request is refused.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct LogState {
    pub events: usize,
    pub head: u64,
}

pub async fn log_state(app: &TestApp) -> LogState {
    let store = &app.engine.store.store;
    LogState {
        events: store.read_all(0, LOG_EVENTS_MAX).await.unwrap().len(),
        head: store.head_position().await.unwrap(),
    }
}

/// Waits until the log stops growing (a positive control's saga has reserved
/// and the order rests), and returns its state.
pub async fn settled(app: &TestApp) -> LogState {
    let mut last = log_state(app).await;
    let mut quiet_reads = 0;
    let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
    // Three identical reads 50 ms apart: the reservation is one saga step of a few ms.
    while quiet_reads < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the log never settled: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = log_state(app).await;
        quiet_reads = if now == last { quiet_reads + 1 } else { 0 };
        last = now;
    }
    last
}

/// A LIMIT buy far below the market: it rests, its funds reserved.
pub fn resting_limit() -> serde_json::Value {
    serde_json::json!({"symbol": "AAPL", "order_type": "LIMIT", "order_side": "BUY", "quantity": 1, "price": 100})
}

/// [`resting_limit`] as a gRPC message.
pub fn grpc_resting_limit(user: Uuid) -> order_engine::grpc::pb::SubmitOrderRequest {
    order_engine::grpc::pb::SubmitOrderRequest {
        user_id: user.to_string(),
        symbol: "AAPL".into(),
        order_type: "LIMIT".into(),
        order_side: "BUY".into(),
        quantity: 1.0,
        price: Some(100.0),
        stop_price: None,
    }
}
