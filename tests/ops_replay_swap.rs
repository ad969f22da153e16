//! Replay's swap on PostgreSQL waits for a live projection that is behind the
//! rebuild only while an engine (which runs projections) is connected; with
//! none connected it swaps at once, with no stall to sit out.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::engine::eventually;
use common::ops::ops_db;
use common::TestDb;
use order_engine::ops::{OpsDb, SwapOutcome};
use order_engine::projections::ORDERS_PROJECTION;
use order_engine::store::{PostgresConfig, PostgresStore};

/// Where the (pretend) rebuild stands, ahead of the live checkpoint at 0.
const REBUILT_TO: u64 = 5;

async fn engine_sessions(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1",
    )
    .bind(PostgresConfig::ENGINE_APPLICATION_NAME)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_swap_waits_for_a_lagging_checkpoint_only_while_an_engine_is_connected() {
    // Proves the guarantee the stall wait gave, kept without waiting: an engine connected
    // with its projection's checkpoint behind the rebuild makes the swap hold off; once no
    // engine is connected, the same swap goes ahead at once and sets the checkpoint.
    let test = "the_swap_waits_for_a_lagging_checkpoint_only_while_an_engine_is_connected";
    let Some(db) = TestDb::postgres(test).await else {
        return;
    };
    let (store, ops) = ops_db(&db).await;
    let OpsDb::Postgres(pool) = &ops else {
        panic!("a PostgreSQL test database opens PostgreSQL operator access");
    };
    assert_eq!(engine_sessions(pool).await, 0, "the operator tools use their own name");
    sqlx::query("INSERT INTO checkpoints (name, position, updated_at) VALUES ($1, 0, now())")
        .bind(ORDERS_PROJECTION)
        .execute(pool)
        .await
        .unwrap();

    let engine = PostgresStore::open(PostgresConfig::new(db.url())).await.unwrap();
    eventually("the engine's listener connected", Duration::from_secs(10), || async {
        engine_sessions(pool).await > 0
    })
    .await;
    ops.create_scratch("orders", "orders_rebuild").await.unwrap();
    let outcome = ops
        .swap(
            store.as_ref(),
            "orders",
            "orders_rebuild",
            ORDERS_PROJECTION,
            REBUILT_TO,
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        outcome,
        SwapOutcome::LiveBehind { live: 0 },
        "with an engine connected, a lagging checkpoint may be a running projection"
    );

    drop(engine);
    eventually("the engine's sessions ended", Duration::from_secs(10), || async {
        engine_sessions(pool).await == 0
    })
    .await;
    let outcome = ops
        .swap(
            store.as_ref(),
            "orders",
            "orders_rebuild",
            ORDERS_PROJECTION,
            REBUILT_TO,
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        outcome,
        SwapOutcome::Swapped {
            position: REBUILT_TO,
            applied_in_swap: 0
        }
    );
    assert_eq!(ops.checkpoint(ORDERS_PROJECTION).await.unwrap(), REBUILT_TO);
}
