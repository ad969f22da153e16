//! The `orders` read model on each backend: built from the log, committed with
//! its checkpoint, restartable without duplicates, stopped loudly by a poison event.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::engine::{eventually, saga_completed, start};
use common::TestDb;
use order_engine::engine::SubmitRequest;
use order_engine::events::{EventMetadata, NewEvent, StreamId};
use order_engine::order::{OrderStatus, OrderType, Side};
use order_engine::projections::{run_orders_projection, LogFeed, ProjectionHealth, ReadModels, ORDERS_PROJECTION};
use order_engine::store::{append, AppendRequest, EventStore};
use rust_decimal_macros::dec;
use tokio::sync::watch;
use uuid::Uuid;

on_every_backend_in_actix!(
    the_orders_table_follows_the_log_and_resumes_without_duplicates,
    a_poison_event_stops_only_the_projection_and_names_itself,
);

fn spawn_projection(
    store: &Arc<dyn EventStore>,
    models: &Arc<dyn ReadModels>,
) -> (Arc<ProjectionHealth>, watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let health = Arc::new(ProjectionHealth::default());
    let (stop, stopped) = watch::channel(false);
    let task = actix_rt::spawn(run_orders_projection(
        LogFeed::start(Arc::clone(store)),
        Arc::clone(models),
        Arc::clone(&health),
        None,
        stopped,
    ));
    (health, stop, task)
}

fn order(user: Uuid, side: Side, order_type: OrderType, limit: Option<rust_decimal::Decimal>) -> SubmitRequest {
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

async fn the_orders_table_follows_the_log_and_resumes_without_duplicates(db: TestDb) {
    // Proves every order's row equals its folded state, and a restarted projection
    // resumes from its checkpoint (a duplicate insert would stop it).
    let t = start(&db).await;
    t.market.set_price("AAPL", dec!(150.25)).unwrap();
    let (health, stop, task) = spawn_projection(&t.store.store, &t.store.models);
    let user = Uuid::new_v4();
    let executed = t
        .engine
        .submit(order(user, Side::Buy, OrderType::Market, None))
        .await
        .unwrap();
    let resting = t
        .engine
        .submit(order(user, Side::Sell, OrderType::Limit, Some(dec!(999))))
        .await
        .unwrap();
    eventually("market order settled", Duration::from_secs(20), || async {
        saga_completed(&t.store, executed.id).await
    })
    .await;
    // The log is quiet only once the resting order is accepted too: its saga
    // runs beside the market order's, and may commit after that one settles.
    eventually("resting order working", Duration::from_secs(20), || async {
        t.engine.get(resting.id).await.unwrap().map(|o| o.status) == Some(OrderStatus::Processing)
    })
    .await;
    let head = t.store.store.head_position().await.unwrap();
    eventually("projection caught up", Duration::from_secs(20), || async {
        health.snapshot().position >= head
    })
    .await;
    let _ = stop.send(true);
    task.await.unwrap();

    let row = t.store.models.order(executed.id).await.unwrap().unwrap();
    assert_eq!(row.status, OrderStatus::Executed);
    assert_eq!(row.execution_price, Some(dec!(150.25)));
    assert_eq!(row.execution_value, Some(dec!(300.50)));
    assert_eq!(row.market_price_at_submission, Some(dec!(150.25)));
    assert_eq!(t.store.models.checkpoint(ORDERS_PROJECTION).await.unwrap(), head);

    // More events while the projection is down, then a restart from the checkpoint.
    t.engine.cancel(resting.id, user, "changed my mind").await.unwrap();
    let (health, stop, task) = spawn_projection(&t.store.store, &t.store.models);
    eventually("cancel projected", Duration::from_secs(20), || async {
        t.store.models.order(resting.id).await.unwrap().map(|r| r.status) == Some(OrderStatus::Cancelled)
    })
    .await;
    assert_eq!(health.snapshot().failed, None);
    let page = t.store.models.history(user, None, 10, 0).await.unwrap();
    assert_eq!(page.total_count, 2);
    assert_eq!(page.orders[0].id, resting.id, "newest first");
    assert_eq!(page.orders[0].failure_reason.as_deref(), Some("changed my mind"));
    let executed_only = t
        .store
        .models
        .history(user, Some(OrderStatus::Executed), 10, 0)
        .await
        .unwrap();
    assert_eq!(
        executed_only.orders.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![executed.id]
    );
    let _ = stop.send(true);
    task.await.unwrap();
}

async fn a_poison_event_stops_only_the_projection_and_names_itself(db: TestDb) {
    // Proves an unreadable order event stops the projection with its id and position,
    // while the engine goes on taking and executing orders.
    let t = start(&db).await;
    t.market.set_price("AAPL", dec!(150.25)).unwrap();
    let (health, _stop, _task) = spawn_projection(&t.store.store, &t.store.models);
    let poison_id = Uuid::new_v4();
    let poisoned = append(
        t.store.store.as_ref(),
        AppendRequest {
            stream_id: StreamId::order(Uuid::new_v4()),
            expected_version: 0,
            command_id: None,
            events: vec![NewEvent {
                event_id: poison_id,
                event_type: "OrderSubmitted".into(),
                schema_version: 2,
                payload: serde_json::json!({"this": "is not an order"}).into(),
                metadata: EventMetadata::default(),
            }],
            linked: false,
        },
    )
    .await
    .unwrap()
    .unwrap();
    eventually("projection stopped", Duration::from_secs(20), || async {
        health.snapshot().failed.is_some()
    })
    .await;
    let reason = health.snapshot().failed.unwrap();
    assert!(reason.contains(&poison_id.to_string()), "{reason}");
    assert!(
        reason.contains(&format!("position {}", poisoned.first_position)),
        "{reason}"
    );

    let user = Uuid::new_v4();
    let later = t
        .engine
        .submit(order(user, Side::Buy, OrderType::Market, None))
        .await
        .unwrap();
    eventually("the engine still executes", Duration::from_secs(20), || async {
        t.engine.get(later.id).await.unwrap().map(|o| o.status) == Some(OrderStatus::Executed)
    })
    .await;
    assert!(
        health.snapshot().position < poisoned.first_position,
        "the projection must not pass the poison"
    );
}
