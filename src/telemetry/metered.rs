//! Decorators that time the engine's I/O for the metrics: appends to the log,
//! and every balance call (a saga step and a service-client request at once).
//! They change no behaviour: each call is passed through unchanged.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use rust_decimal::Decimal;
use uuid::Uuid;

use super::metrics::Metrics;
use crate::balance::{Balance, BalanceError, BalanceOp, BalanceReceipt, BalanceService, ReleaseOp};
use crate::store::{AppendRequest, Appended, Conflict, EventStore, StoreError};

/// An event store that records each append batch's duration.
pub struct MeteredStore {
    inner: Arc<dyn EventStore>,
    metrics: Arc<Metrics>,
}

impl MeteredStore {
    pub fn new(inner: Arc<dyn EventStore>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }
}

crate::store_wrapper!(MeteredStore {
    async fn append_batch(&self, requests: Vec<AppendRequest>) -> Result<Vec<Result<Appended, Conflict>>, StoreError> {
        let started = Instant::now();
        let result = self.inner.append_batch(requests).await;
        self.metrics
            .append_duration_seconds
            .observe(started.elapsed().as_secs_f64());
        result
    }

    async fn save_checkpoint(&self, name: &str, position: u64) -> Result<(), StoreError> {
        self.inner.save_checkpoint(name, position).await
    }
});

/// A balance service whose calls are timed as saga steps and as requests to
/// the `balance` service (embedded or remote alike).
pub struct MeteredBalance {
    inner: Arc<dyn BalanceService>,
    metrics: Arc<Metrics>,
}

impl MeteredBalance {
    pub fn new(inner: Arc<dyn BalanceService>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    fn observe<T>(&self, operation: &str, started: Instant, result: &Result<T, BalanceError>, saga_step: bool) {
        let seconds = started.elapsed().as_secs_f64();
        let outcome = match result {
            Ok(_) => "ok",
            // Lost races on one account: the service is fine, the account is busy.
            Err(BalanceError::Contended { .. }) => "contended",
            Err(error) if error.is_transient() => "unavailable",
            Err(_) => "error",
        };
        self.metrics
            .service_client_request_duration_seconds
            .with_label_values(&["balance", operation, outcome])
            .observe(seconds);
        if saga_step {
            self.metrics
                .saga_step_duration_seconds
                .with_label_values(&[operation, outcome])
                .observe(seconds);
        }
    }
}

#[async_trait]
impl BalanceService for MeteredBalance {
    async fn get_balance(&self, user_id: Uuid) -> Result<Balance, BalanceError> {
        let started = Instant::now();
        let result = self.inner.get_balance(user_id).await;
        self.observe("get_balance", started, &result, false);
        result
    }

    async fn reserve(&self, op: BalanceOp) -> Result<BalanceReceipt, BalanceError> {
        let started = Instant::now();
        let result = self.inner.reserve(op).await;
        self.observe("reserve", started, &result, true);
        result
    }

    async fn deduct(&self, op: BalanceOp) -> Result<BalanceReceipt, BalanceError> {
        let started = Instant::now();
        let result = self.inner.deduct(op).await;
        self.observe("deduct", started, &result, true);
        result
    }

    async fn credit(&self, op: BalanceOp) -> Result<BalanceReceipt, BalanceError> {
        let started = Instant::now();
        let result = self.inner.credit(op).await;
        self.observe("credit", started, &result, true);
        result
    }

    async fn release(&self, op: ReleaseOp) -> Result<BalanceReceipt, BalanceError> {
        let started = Instant::now();
        let result = self.inner.release(op).await;
        self.observe("release", started, &result, true);
        result
    }

    async fn sufficient_funds(&self, user_id: Uuid, amount: Decimal) -> Result<bool, BalanceError> {
        let started = Instant::now();
        let result = self.inner.sufficient_funds(user_id, amount).await;
        self.observe("sufficient_funds", started, &result, false);
        result
    }

    fn colocated(&self) -> Option<&crate::balance::embedded::EmbeddedLedger> {
        self.inner.colocated()
    }

    fn observe_colocated(&self, operation: &str, started: Instant) {
        self.observe(operation, started, &Ok::<(), BalanceError>(()), true);
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;
    use crate::balance::embedded::{EmbeddedLedger, LedgerConfig};
    use crate::clock::SystemClock;
    use crate::events::{EventMetadata, NewEvent, StreamId};
    use crate::store::{append, SqliteConfig, SqliteStore};

    async fn sqlite(dir: &tempfile::TempDir) -> Arc<dyn EventStore> {
        let url = format!("sqlite:{}", dir.path().join("log.db").display());
        Arc::new(SqliteStore::open(SqliteConfig::new(url)).await.unwrap())
    }

    #[tokio::test]
    async fn appends_and_balance_calls_are_timed() {
        // Proves the engine's own metrics move: append latency, saga steps, service-client requests.
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new().unwrap());
        let store: Arc<dyn EventStore> = Arc::new(MeteredStore::new(sqlite(&dir).await, Arc::clone(&metrics)));
        let request = AppendRequest {
            stream_id: StreamId::new("test-1").unwrap(),
            expected_version: 0,
            command_id: None,
            events: vec![NewEvent {
                event_id: Uuid::new_v4(),
                event_type: "Tested".into(),
                schema_version: 1,
                payload: serde_json::json!({}).into(),
                metadata: EventMetadata::default(),
            }],
            linked: false,
        };
        append(store.as_ref(), request).await.unwrap().unwrap();
        assert_eq!(metrics.append_duration_seconds.get_sample_count(), 1);

        let ledger = Arc::new(EmbeddedLedger::new(
            Arc::clone(&store),
            Arc::new(SystemClock),
            LedgerConfig::default(),
        ));
        let balance = MeteredBalance::new(ledger, Arc::clone(&metrics));
        let user = Uuid::new_v4();
        let order = Uuid::new_v4();
        balance
            .reserve(BalanceOp {
                user_id: user,
                order_id: order,
                amount: dec!(10),
                idempotency_key: format!("{order}:reserve"),
            })
            .await
            .unwrap();
        let step = metrics.saga_step_duration_seconds.with_label_values(&["reserve", "ok"]);
        assert_eq!(step.get_sample_count(), 1);
        let client = metrics
            .service_client_request_duration_seconds
            .with_label_values(&["balance", "reserve", "ok"]);
        assert_eq!(client.get_sample_count(), 1);
        assert!(
            metrics.append_duration_seconds.get_sample_count() > 1,
            "the ledger's append was timed too"
        );
        let text = metrics.render();
        assert!(
            text.contains("order_engine_saga_step_duration_seconds_count{outcome=\"ok\",step=\"reserve\"} 1"),
            "{text}"
        );
    }
}
