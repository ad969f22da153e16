//! `order-engine replay` on each backend: the rebuilt `orders` table equals
//! the live one row by row, is swapped in under a running projection that
//! keeps working, and `--from` rebuilds only what changed after a position.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::engine::{eventually, saga_completed};
use common::ops::{live_log, ops_db, LiveLog};
use common::{Raw, TestDb};
use indicatif::ProgressBar;
use order_engine::engine::SubmitRequest;
use order_engine::events::{EventMetadata, StreamId};
use order_engine::ops::{self, Projection, ReplayOptions, VerifyOptions};
use order_engine::order::{OrderStatus, OrderType, Side};
use order_engine::projections::{OrderRow, ORDERS_PROJECTION};
use order_engine::store::read_stream_all;
use rust_decimal_macros::dec;
use uuid::Uuid;

on_every_backend_in_actix!(
    the_rebuilt_table_equals_the_live_one_and_the_running_projection_goes_on,
    from_keeps_rows_untouched_since_the_position_and_rebuilds_the_rest,
);

async fn rows(log: &LiveLog) -> Vec<OrderRow> {
    let page = log.t.store.models.history(log.orders.user, None, 100, 0).await.unwrap();
    let mut rows = page.orders;
    rows.sort_by_key(|r| r.id);
    rows
}

async fn set_status(raw: &Raw, id: Uuid, status: &str) {
    let sql = match raw {
        Raw::Postgres(_) => format!("UPDATE orders SET status = '{status}' WHERE id = '{id}'"),
        Raw::Sqlite(_) => format!("UPDATE orders SET status = '{status}' WHERE id = '{id}'"),
    };
    assert_eq!(raw.execute(&sql).await.unwrap(), 1);
}

async fn index_names(raw: &Raw) -> Vec<String> {
    let mut names: Vec<String> = match raw {
        Raw::Postgres(pool) => sqlx::query_scalar(
            "SELECT indexname::text FROM pg_indexes WHERE schemaname = current_schema() AND tablename = 'orders'",
        )
        .fetch_all(pool)
        .await
        .unwrap(),
        Raw::Sqlite(pool) => {
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'orders'")
                .fetch_all(pool)
                .await
                .unwrap()
        }
    };
    names.sort();
    names
}

async fn the_rebuilt_table_equals_the_live_one_and_the_running_projection_goes_on(db: TestDb) {
    // Proves replay rebuilds every row exactly (a row damaged behind the engine's back is
    // repaired), keeps the table's indexes, sets the checkpoint to where the table stands,
    // and a projection running during the swap goes on projecting into the new table.
    let log = live_log(&db).await;
    let before = rows(&log).await;
    assert_eq!(before.len(), 4);
    let indexes = index_names(&log.t.store.raw).await;
    set_status(&log.t.store.raw, log.orders.executed_buy, "FAILED").await;

    let (store, ops_db) = ops_db(&db).await;
    let report = ops::replay(
        store,
        &ops_db,
        Projection::Orders,
        &ReplayOptions::default(),
        &ProgressBar::hidden(),
    )
    .await
    .unwrap();
    let head = log.t.store.store.head_position().await.unwrap();
    assert_eq!(report.position, head);
    assert_eq!(report.events, head);
    assert_eq!(log.t.store.models.checkpoint(ORDERS_PROJECTION).await.unwrap(), head);
    assert_eq!(rows(&log).await, before, "the rebuilt table differs from the live one");
    assert_eq!(index_names(&log.t.store.raw).await, indexes);
    let (count, diffs) = ops_db.diff("orders", "orders", 10).await.unwrap();
    assert_eq!((count, diffs.len()), (0, 0));
    // The swapped-in table serves as the source of the next replay and of verify.
    let again = ops::replay(
        log.store(),
        &ops_db,
        Projection::Orders,
        &ReplayOptions::default(),
        &ProgressBar::hidden(),
    )
    .await
    .unwrap();
    assert_eq!(again.position, head);
    assert_eq!(index_names(&log.t.store.raw).await, indexes);
    let verified = ops::verify(log.store(), &ops_db, &VerifyOptions::default(), &ProgressBar::hidden())
        .await
        .unwrap();
    assert!(verified.is_healthy(), "{:#?}", verified.violations);

    // The projection that ran through the swap keeps projecting, without duplicates.
    let next = log
        .t
        .engine
        .submit(SubmitRequest {
            order_id: None,
            user_id: log.orders.user,
            symbol: "AAPL".into(),
            side: Side::Buy,
            order_type: OrderType::Market,
            quantity: dec!(1),
            limit_price: None,
            stop_price: None,
            metadata: EventMetadata::default(),
        })
        .await
        .unwrap();
    eventually("new order settled", Duration::from_secs(20), || async {
        saga_completed(&log.t.store, next.id).await
    })
    .await;
    log.projection_caught_up().await;
    assert!(
        log.health.snapshot().failed.is_none(),
        "{:?}",
        log.health.snapshot().failed
    );
    let row = log.t.store.models.order(next.id).await.unwrap().unwrap();
    assert_eq!(row.status, OrderStatus::Executed);
    assert_eq!(rows(&log).await.len(), 5);
}

async fn from_keeps_rows_untouched_since_the_position_and_rebuilds_the_rest(db: TestDb) {
    // Proves the documented meaning of --from: rows of orders with no event after the
    // position are kept as they are; every order touched after it is rebuilt whole.
    let log = live_log(&db).await;
    let (executed_buy, cancelled_id) = (log.orders.executed_buy, log.orders.cancelled_buy);
    let t = log.stop_projection().await;
    // The cancel came after the executed BUY had settled: its last event is after every one of that order's.
    let cancelled = read_stream_all(t.store.store.as_ref(), &StreamId::order(cancelled_id), 1)
        .await
        .unwrap();
    let from = cancelled.last().unwrap().global_position - 1;
    set_status(&t.store.raw, executed_buy, "FAILED").await;
    set_status(&t.store.raw, cancelled_id, "PENDING").await;

    let (store, ops_db) = ops_db(&db).await;
    let options = ReplayOptions {
        from: Some(from),
        stall: Duration::from_millis(100),
        ..ReplayOptions::default()
    };
    let report = ops::replay(
        store.clone(),
        &ops_db,
        Projection::Orders,
        &options,
        &ProgressBar::hidden(),
    )
    .await
    .unwrap();
    assert_eq!(report.orders_reread, 1);
    let kept = t.store.models.order(executed_buy).await.unwrap().unwrap();
    assert_eq!(kept.status, OrderStatus::Failed, "a row untouched after --from is kept");
    let rebuilt = t.store.models.order(cancelled_id).await.unwrap().unwrap();
    assert_eq!(
        rebuilt.status,
        OrderStatus::Cancelled,
        "a row touched after --from is rebuilt"
    );

    // Past the head, or past where the live model stands, is refused with the reason.
    let head = store.head_position().await.unwrap();
    let past = ReplayOptions {
        from: Some(head + 1),
        ..ReplayOptions::default()
    };
    let error = ops::replay(store, &ops_db, Projection::Orders, &past, &ProgressBar::hidden())
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("past the log's head"), "{error}");
}

fn cli(url: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_order-engine"))
        .args(args)
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "error")
        .output()
        .unwrap()
}

#[actix_rt::test]
async fn the_replay_command_prints_its_rate_and_names_the_known_projections() {
    // Proves the binary's replay reads DATABASE_URL like serve, prints events per second,
    // and refuses an unknown projection listing the known ones.
    let db = TestDb::sqlite();
    let log = live_log(&db).await;
    let _t = log.stop_projection().await;
    let ok = cli(db.url(), &["replay", "--all"]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let out = String::from_utf8(ok.stdout).unwrap();
    assert!(out.contains("replayed orders: ") && out.contains("events/s"), "{out}");
    let unknown = cli(db.url(), &["replay", "--projection", "positions"]);
    assert!(!unknown.status.success());
    let err = String::from_utf8(unknown.stderr).unwrap();
    assert!(
        err.contains("unknown projection \"positions\"; known projections: orders"),
        "{err}"
    );
}
