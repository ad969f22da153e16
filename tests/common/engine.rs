//! An engine on a test database, built through the composition root
//! (`Application::builder(..).build_stack()`) as `serve` builds it: group
//! commit and metering on the log, the embedded ledger, accounts; with a fast
//! retry ladder and a market whose prices the test sets.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use order_engine::app::{Application, ApplicationBuilder};
use order_engine::balance::embedded::{EmbeddedLedger, LedgerConfig};
use order_engine::balance::{Balance, BalanceError, BalanceOp, BalanceReceipt, BalanceService, ReleaseOp};
use order_engine::clock::SystemClock;
use order_engine::config::{ClusterMode, Settings};
use order_engine::engine::{Engine, EngineConfig};
use order_engine::events::StreamId;
use order_engine::market::MarketSimulator;
use order_engine::store::read_stream_all;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use uuid::Uuid;

use super::http::test_service;
use super::{TestDb, TestStore};

pub const DEMO_BALANCE: Decimal = dec!(10000);

pub struct TestEngine {
    pub engine: Arc<Engine>,
    /// The embedded ledger the engine uses; a ledger of the test's own on the
    /// same log when the test replaced the balance service.
    pub ledger: Arc<EmbeddedLedger>,
    pub market: Arc<MarketSimulator>,
    /// The log as the engine sees it (group commit and metering included),
    /// with raw SQL access beside it.
    pub store: TestStore,
}

/// A fast retry ladder so a test climbs all of it in milliseconds.
pub fn fast_config() -> EngineConfig {
    let mut config = EngineConfig::default();
    config.saga.retry_delays = vec![Duration::from_millis(10); 4];
    config
}

/// The settings `serve` reads from an empty environment, on the database at
/// `url`, funding new accounts with `DEMO_BALANCE`, trusting the test
/// service, with the engine bounds of `config` that `serve` reads from its
/// environment (retry ladder, market buffer, actor limits).
pub fn test_settings(url: &str, config: &EngineConfig) -> Settings {
    let mut settings = Settings::from_lookup(|_| None).unwrap();
    settings.database_url = url.to_owned();
    // Tests run in parallel: a fixed gRPC port would be taken by the first.
    settings.grpc_addr = "127.0.0.1:0".parse().unwrap();
    settings.demo_balance = DEMO_BALANCE;
    settings.service_keys = vec![test_service()];
    settings.retry_delays = config.saga.retry_delays.clone();
    settings.market_buffer_bps = config.saga.market_buffer_bps;
    settings.passivate_after = config.actors.passivate_after;
    settings.live_actors_max = config.actors.live_actors_max;
    // One engine per test database is the whole engine; a test that starts a
    // second "process" on the same database means a rival, not a member
    // taking half the work. tests/cluster.rs turns clustering on.
    settings.cluster.mode = ClusterMode::Off;
    // Tests send bursts from one user far past the per-user rate limit, at
    // any hour of the day: no rate limit, and a session that never closes so
    // the off-hours rule does not depend on when CI runs. The controls still
    // count every order; tests/pretrade.rs sets its own limits and clock.
    settings.pretrade.rate_limit_per_minute = None;
    settings.pretrade.session_open = chrono::NaiveTime::MIN;
    settings.pretrade.session_close = chrono::NaiveTime::from_hms_nano_opt(23, 59, 59, 999_999_999).unwrap();
    settings
}

/// An embedded ledger of the test's own on `store`, funding new accounts with
/// `DEMO_BALANCE`: another process's ledger, or the one behind a test double
/// that stands in for a remote balance service (its writes are not the
/// engine's, so they do not go through the engine's group commit).
pub fn ledger(store: &TestStore) -> Arc<EmbeddedLedger> {
    Arc::new(EmbeddedLedger::new(
        Arc::clone(&store.store),
        Arc::new(SystemClock),
        LedgerConfig {
            demo_balance: DEMO_BALANCE,
            ..LedgerConfig::default()
        },
    ))
}

/// The engine `serve` runs, on `db`, with the fast retry ladder.
pub async fn start(db: &TestDb) -> TestEngine {
    start_on(db, db.open_backend(None).await, |app| app).await
}

/// [`start`] on `store`, a bare backend of `db` the test opened itself (with
/// a commit hook, behind a spy, or after writing to it), with the overrides
/// `parts` sets on the root (`.balance`, `.crash`, `.engine_config`).
pub async fn start_on(
    db: &TestDb,
    store: TestStore,
    parts: impl FnOnce(ApplicationBuilder) -> ApplicationBuilder,
) -> TestEngine {
    start_with(db, store, fast_config(), parts).await
}

/// [`start_on`] with the engine bounds `serve` reads from its settings taken
/// from `config` instead of the fast ladder.
pub async fn start_with(
    db: &TestDb,
    store: TestStore,
    config: EngineConfig,
    parts: impl FnOnce(ApplicationBuilder) -> ApplicationBuilder,
) -> TestEngine {
    // Logs go through the test writer (captured); RUST_LOG=order_engine=debug shows them.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut settings = test_settings(db.url(), &config);
    // The engine tests choose their actor threads (one unless a test asks for
    // more); the HTTP tests keep `serve`'s one per core.
    settings.actor_threads = config.actors.actor_threads;
    let builder = Application::builder(settings)
        // The bare backend: the root adds group commit and metering itself.
        .log(Arc::clone(&store.store), Arc::clone(&store.models))
        // Tests set prices and assert fills at them: no feed moves the market.
        .frozen_market();
    let stack = parts(builder).build_stack().await.unwrap();
    let store = TestStore {
        store: Arc::clone(&stack.store),
        ..store
    };
    TestEngine {
        engine: stack.engine,
        ledger: stack.ledger.unwrap_or_else(|| ledger(&store)),
        market: stack.market.expect("the simulator is the market data"),
        store,
    }
}

/// Polls `check` until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether the order's saga recorded its end.
pub async fn saga_completed(store: &TestStore, order_id: Uuid) -> bool {
    read_stream_all(store.store.as_ref(), &StreamId::saga(order_id), 1)
        .await
        .unwrap()
        .iter()
        .any(|e| e.event_type == "SagaCompleted")
}

/// Event types of a stream, in order.
pub async fn stream_types(store: &TestStore, stream: &StreamId) -> Vec<String> {
    read_stream_all(store.store.as_ref(), stream, 1)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect()
}

/// A balance service in front of the ledger that can be down, or lose replies.
pub struct FlakyBalance {
    pub inner: Arc<EmbeddedLedger>,
    /// Calls fail with Unavailable without reaching the ledger.
    pub down: AtomicBool,
    /// Calls reach the ledger, then the reply is lost (Unavailable).
    pub lose_replies: AtomicBool,
    pub calls: AtomicU32,
}

impl FlakyBalance {
    pub fn new(inner: Arc<EmbeddedLedger>) -> Self {
        Self {
            inner,
            down: AtomicBool::new(false),
            lose_replies: AtomicBool::new(false),
            calls: AtomicU32::new(0),
        }
    }

    async fn gate<T>(&self, call: impl Future<Output = Result<T, BalanceError>>) -> Result<T, BalanceError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            return Err(BalanceError::Unavailable("503 Service Unavailable (test)".into()));
        }
        let result = call.await;
        if self.lose_replies.load(Ordering::SeqCst) {
            return Err(BalanceError::Unavailable(
                "timed out waiting for the reply (test)".into(),
            ));
        }
        result
    }
}

#[async_trait]
impl BalanceService for FlakyBalance {
    async fn get_balance(&self, user_id: Uuid) -> Result<Balance, BalanceError> {
        self.inner.get_balance(user_id).await
    }
    async fn reserve(&self, op: BalanceOp) -> Result<BalanceReceipt, BalanceError> {
        self.gate(self.inner.reserve(op)).await
    }
    async fn deduct(&self, op: BalanceOp) -> Result<BalanceReceipt, BalanceError> {
        self.gate(self.inner.deduct(op)).await
    }
    async fn credit(&self, op: BalanceOp) -> Result<BalanceReceipt, BalanceError> {
        self.gate(self.inner.credit(op)).await
    }
    async fn release(&self, op: ReleaseOp) -> Result<BalanceReceipt, BalanceError> {
        self.gate(self.inner.release(op)).await
    }
    async fn sufficient_funds(&self, user_id: Uuid, amount: Decimal) -> Result<bool, BalanceError> {
        self.inner.sufficient_funds(user_id, amount).await
    }
}
