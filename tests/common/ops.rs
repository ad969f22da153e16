//! A healthy log written by a real engine, with the `orders` projection
//! running, for the operator tools' tests (replay, verify, export/import).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use order_engine::engine::SubmitRequest;
use order_engine::events::EventMetadata;
use order_engine::ops::{self, OpsDb};
use order_engine::order::{OrderType, Side};
use order_engine::projections::{run_orders_projection, ProjectionHealth};
use order_engine::store::EventStore;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tokio::sync::watch;
use uuid::Uuid;

use super::engine::{eventually, saga_completed, start, TestEngine};
use super::TestDb;

/// The orders the engine was given, by how they ended.
pub struct Orders {
    pub user: Uuid,
    pub executed_buy: Uuid,
    pub executed_sell: Uuid,
    pub cancelled_buy: Uuid,
    pub resting_sell: Uuid,
}

/// An engine with its projection running.
pub struct LiveLog {
    pub t: TestEngine,
    pub health: Arc<ProjectionHealth>,
    pub stop: watch::Sender<bool>,
    pub projection: tokio::task::JoinHandle<()>,
    pub orders: Orders,
}

impl LiveLog {
    pub fn store(&self) -> Arc<dyn EventStore> {
        Arc::clone(&self.t.store.store)
    }

    /// Waits until the projection has applied every event in the log.
    pub async fn projection_caught_up(&self) {
        let head = self.t.store.store.head_position().await.unwrap();
        eventually("projection caught up", Duration::from_secs(20), || async {
            self.health.snapshot().position >= head
        })
        .await;
    }

    pub async fn stop_projection(self) -> TestEngine {
        let _ = self.stop.send(true);
        let _ = self.projection.await;
        self.t
    }
}

fn request(user: Uuid, side: Side, order_type: OrderType, limit: Option<Decimal>) -> SubmitRequest {
    SubmitRequest {
        order_id: None,
        user_id: user,
        symbol: "AAPL".into(),
        side,
        order_type,
        quantity: dec!(2),
        limit_price: limit,
        stop_price: None,
        metadata: EventMetadata::default(),
    }
}

/// Runs an engine through every ending an order can have (executed BUY and
/// SELL, cancelled BUY, resting SELL) and waits until each saga settled and
/// the projection caught up. Must run inside an actix system.
pub async fn live_log(db: &TestDb) -> LiveLog {
    let t = start(db).await;
    t.market.set_price("AAPL", dec!(150.25)).unwrap();
    let health = Arc::new(ProjectionHealth::default());
    let (stop, stopped) = watch::channel(false);
    let projection = actix_rt::spawn(run_orders_projection(
        t.engine.feed().clone(),
        Arc::clone(&t.store.models),
        Arc::clone(&health),
        None,
        stopped,
    ));
    let user = Uuid::new_v4();
    let executed_buy = t
        .engine
        .submit(request(user, Side::Buy, OrderType::Market, None))
        .await
        .unwrap()
        .id;
    let executed_sell = t
        .engine
        .submit(request(user, Side::Sell, OrderType::Market, None))
        .await
        .unwrap()
        .id;
    let cancelled_buy = t
        .engine
        .submit(request(user, Side::Buy, OrderType::Limit, Some(dec!(100))))
        .await
        .unwrap()
        .id;
    let resting_sell = t
        .engine
        .submit(request(user, Side::Sell, OrderType::Limit, Some(dec!(999))))
        .await
        .unwrap()
        .id;
    for id in [executed_buy, executed_sell] {
        eventually("market order settled", Duration::from_secs(20), || async {
            saga_completed(&t.store, id).await
        })
        .await;
    }
    eventually("limit BUY accepted", Duration::from_secs(20), || async {
        t.engine
            .get(cancelled_buy)
            .await
            .unwrap()
            .is_some_and(|o| o.status == order_engine::order::OrderStatus::Processing)
    })
    .await;
    t.engine.cancel(cancelled_buy, user, "requested by user").await.unwrap();
    eventually("cancelled order settled", Duration::from_secs(20), || async {
        saga_completed(&t.store, cancelled_buy).await
    })
    .await;
    let log = LiveLog {
        t,
        health,
        stop,
        projection,
        orders: Orders {
            user,
            executed_buy,
            executed_sell,
            cancelled_buy,
            resting_sell,
        },
    };
    log.projection_caught_up().await;
    log
}

/// The operator tools' access to a test database.
pub async fn ops_db(db: &TestDb) -> (Arc<dyn EventStore>, OpsDb) {
    ops::open(&order_engine::store::StoreConfig::from_url(db.url()).unwrap())
        .await
        .unwrap()
}
