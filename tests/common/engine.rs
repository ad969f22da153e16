//! An engine on a test database with the embedded ledger and a market
//! simulator whose prices the test sets.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use order_engine::accounts::EmbeddedAccounts;
use order_engine::balance::embedded::{EmbeddedLedger, LedgerConfig};
use order_engine::balance::{Balance, BalanceError, BalanceOp, BalanceReceipt, BalanceService, ReleaseOp};
use order_engine::clock::SystemClock;
use order_engine::engine::{CrashPoint, Engine, EngineConfig, EngineDeps};
use order_engine::events::StreamId;
use order_engine::market::{MarketSimulator, SimulatorConfig};
use order_engine::store::read_stream_all;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use uuid::Uuid;

use super::TestStore;

pub const DEMO_BALANCE: Decimal = dec!(10000);

pub struct TestEngine {
    pub engine: Arc<Engine>,
    pub ledger: Arc<EmbeddedLedger>,
    pub market: Arc<MarketSimulator>,
    pub store: TestStore,
}

/// A fast retry ladder so a test climbs all of it in milliseconds.
pub fn fast_config() -> EngineConfig {
    let mut config = EngineConfig::default();
    config.saga.retry_delays = vec![Duration::from_millis(10); 4];
    config
}

/// The embedded ledger on a test store, funding new accounts with `DEMO_BALANCE`.
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

pub fn start(store: TestStore, balance: Option<Arc<dyn BalanceService>>, crash: Option<Arc<CrashPoint>>) -> TestEngine {
    start_with(fast_config(), store, balance, crash)
}

/// [`start`] with the engine configured by the test (actor limits, ladder).
pub fn start_with(
    config: EngineConfig,
    store: TestStore,
    balance: Option<Arc<dyn BalanceService>>,
    crash: Option<Arc<CrashPoint>>,
) -> TestEngine {
    // Logs go through the test writer (captured); RUST_LOG=order_engine=debug shows them.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let clock = Arc::new(SystemClock);
    let ledger = ledger(&store);
    let market = Arc::new(MarketSimulator::new(SimulatorConfig::default(), clock.clone()));
    let deps = EngineDeps {
        store: Arc::clone(&store.store),
        balance: balance.unwrap_or_else(|| ledger.clone()),
        market: market.clone(),
        accounts: Arc::new(EmbeddedAccounts),
        clock,
    };
    TestEngine {
        engine: Arc::new(Engine::start(config, deps, crash).unwrap()),
        ledger,
        market,
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
