//! `order-engine verify` on each backend: passes on a healthy log written by a
//! real engine, and fails naming the invariant for each kind of corruption
//! made directly in the database (the append-only triggers disabled first).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::sync::Arc;

use common::ops::{live_log, ops_db};
use common::{Raw, TestDb};
use indicatif::ProgressBar;
use order_engine::amqp::Route;
use order_engine::events::{RecordedEvent, StreamId};
use order_engine::ops::{self, VerifyOptions, VerifyReport};
use order_engine::store::read_stream_all;
use uuid::Uuid;

on_every_backend_in_actix!(
    a_healthy_log_verifies,
    a_removed_event_is_a_position_gap,
    reordered_events_break_the_stream_versions,
    a_changed_read_model_row_is_named_with_its_column,
    a_changed_ledger_amount_is_a_ledger_violation,
    money_left_reserved_for_a_finished_order_is_named,
    a_modified_payload_breaks_the_chain,
    reordered_events_of_different_streams_break_the_chain,
    an_execution_not_behind_a_publishers_checkpoint_is_named,
);

async fn run_verify(db: &TestDb) -> VerifyReport {
    let (store, ops_db) = ops_db(db).await;
    ops::verify(store, &ops_db, &VerifyOptions::default(), &ProgressBar::hidden())
        .await
        .unwrap()
}

/// The violations of one kind, as printed.
fn named(report: &VerifyReport, kind: &str) -> Vec<String> {
    report
        .violations
        .iter()
        .filter(|v| v.kind() == kind)
        .map(|v| v.to_string())
        .collect()
}

async fn unlock_log(raw: &Raw) {
    match raw {
        Raw::Postgres(_) => {
            raw.execute("ALTER TABLE events DISABLE TRIGGER events_append_only")
                .await
        }
        Raw::Sqlite(_) => {
            raw.execute("DROP TRIGGER events_no_update").await.unwrap();
            raw.execute("DROP TRIGGER events_no_delete").await
        }
    }
    .unwrap();
}

/// Sets a payload field (a decimal, stored as a JSON string) of the event at `position`.
async fn set_payload_text(raw: &Raw, position: u64, field: &str, value: &str) {
    let sql = match raw {
        Raw::Postgres(_) => format!(
            "UPDATE events SET payload = jsonb_set(payload, '{{{field}}}', '\"{value}\"') WHERE global_position = {position}"
        ),
        Raw::Sqlite(_) => format!(
            "UPDATE events SET payload = json_set(payload, '$.{field}', '{value}') WHERE global_position = {position}"
        ),
    };
    assert_eq!(raw.execute(&sql).await.unwrap(), 1, "{sql}");
}

/// Gives two events each other's position.
async fn swap_positions(raw: &Raw, a: u64, b: u64) {
    let parking = 1_000_000_000;
    for sql in [
        format!("UPDATE events SET global_position = {parking} WHERE global_position = {a}"),
        format!("UPDATE events SET global_position = {a} WHERE global_position = {b}"),
        format!("UPDATE events SET global_position = {b} WHERE global_position = {parking}"),
    ] {
        assert_eq!(raw.execute(&sql).await.unwrap(), 1, "{sql}");
    }
}

async fn event(db: &common::TestStore, stream: &StreamId, event_type: &str) -> RecordedEvent {
    read_stream_all(db.store.as_ref(), stream, 1)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.event_type == event_type)
        .unwrap_or_else(|| panic!("no {event_type} on {stream}"))
}

async fn account_event(db: &common::TestStore, user: Uuid, event_type: &str, order_id: Uuid) -> RecordedEvent {
    read_stream_all(db.store.as_ref(), &StreamId::account(user), 1)
        .await
        .unwrap()
        .into_iter()
        .find(|e| {
            e.event_type == event_type && e.payload.to_value()["order_id"].as_str() == Some(&order_id.to_string())
        })
        .unwrap_or_else(|| panic!("no {event_type} for {order_id}"))
}

async fn a_healthy_log_verifies(db: TestDb) {
    // Proves verify passes on what a real engine wrote (every kind of ending, the
    // projection running), and has read every event and compared the read model.
    let log = live_log(&db).await;
    let report = run_verify(&db).await;
    assert!(report.is_healthy(), "{:#?}", report.violations);
    let head = log.t.store.store.head_position().await.unwrap();
    assert_eq!(report.events, head);
    assert_eq!(report.models_compared, vec![("orders", head)]);
}

async fn a_removed_event_is_a_position_gap(db: TestDb) {
    // Proves an event deleted behind the engine's back is named by its position.
    let log = live_log(&db).await;
    let t = log.stop_projection().await;
    unlock_log(&t.store.raw).await;
    assert_eq!(
        t.store
            .raw
            .execute("DELETE FROM events WHERE global_position = 5")
            .await
            .unwrap(),
        1
    );
    let report = run_verify(&db).await;
    let gaps = named(&report, "positions");
    assert_eq!(
        gaps,
        vec!["positions: position 6 follows position 4: events between them are missing or moved".to_owned()]
    );
    // The log hash of the next event no longer chains to its predecessor.
    assert!(
        named(&report, "chain").iter().any(|v| v.contains("position 6")),
        "{:#?}",
        report.violations
    );
}

async fn reordered_events_break_the_stream_versions(db: TestDb) {
    // Proves two events of one stream swapped in the log are named by stream and position.
    let log = live_log(&db).await;
    let order = log.orders.executed_buy;
    let t = log.stop_projection().await;
    let stream = StreamId::order(order);
    let (first, second) = (
        event(&t.store, &stream, "OrderSubmitted").await,
        event(&t.store, &stream, "OrderAccepted").await,
    );
    unlock_log(&t.store.raw).await;
    swap_positions(&t.store.raw, first.global_position, second.global_position).await;
    let report = run_verify(&db).await;
    let broken = named(&report, "stream-versions");
    assert!(
        broken
            .iter()
            .any(|v| v.contains(&stream.to_string()) && v.contains(&format!("position {}", first.global_position))),
        "{:#?}",
        report.violations
    );
}

async fn a_changed_read_model_row_is_named_with_its_column(db: TestDb) {
    // Proves the shadow replay finds a read-model row changed behind the projection's
    // back and names the order and the column with both values.
    let log = live_log(&db).await;
    let order = log.orders.executed_buy;
    let t = log.stop_projection().await;
    t.store
        .raw
        .execute(&format!("UPDATE orders SET status = 'CANCELLED' WHERE id = '{order}'"))
        .await
        .unwrap();
    let report = run_verify(&db).await;
    assert_eq!(
        named(&report, "read-model"),
        vec![format!(
            "read-model: orders: row {order}: status is CANCELLED where the log gives EXECUTED"
        )],
        "{:#?}",
        report.violations
    );
}

async fn a_changed_ledger_amount_is_a_ledger_violation(db: TestDb) {
    // Proves a deduction changed in the log (more taken than reserved) is named by account.
    let log = live_log(&db).await;
    let (user, order) = (log.orders.user, log.orders.executed_buy);
    let t = log.stop_projection().await;
    let deducted = account_event(&t.store, user, "ReservationDeducted", order).await;
    unlock_log(&t.store.raw).await;
    set_payload_text(&t.store.raw, deducted.global_position, "amount", "9999").await;
    let report = run_verify(&db).await;
    let ledger = named(&report, "ledger");
    assert!(
        ledger
            .iter()
            .any(|v| v.contains(&format!("account {user}")) && v.contains("takes more than was reserved")),
        "{:#?}",
        report.violations
    );
    assert!(
        ledger
            .iter()
            .any(|v| v.contains(&format!("order {order}")) && v.contains("deducted 9999")),
        "{ledger:#?}"
    );
}

async fn money_left_reserved_for_a_finished_order_is_named(db: TestDb) {
    // Proves a cancelled order whose release moved nothing (money stranded) is named.
    let log = live_log(&db).await;
    let (user, order) = (log.orders.user, log.orders.cancelled_buy);
    let t = log.stop_projection().await;
    let released = account_event(&t.store, user, "ReservationReleased", order).await;
    unlock_log(&t.store.raw).await;
    set_payload_text(&t.store.raw, released.global_position, "amount", "0").await;
    let report = run_verify(&db).await;
    let stranded = named(&report, "reservation");
    assert_eq!(stranded.len(), 1, "{:#?}", report.violations);
    assert!(
        stranded[0].starts_with(&format!("reservation: order {order} is CANCELLED but ")),
        "{stranded:?}"
    );
}

async fn a_modified_payload_breaks_the_chain(db: TestDb) {
    // Proves an edit the other checks cannot see (a saga's timestamp) is caught by the hash chain.
    let log = live_log(&db).await;
    let order = log.orders.resting_sell;
    let t = log.stop_projection().await;
    let started = event(&t.store, &StreamId::saga(order), "SagaStarted").await;
    unlock_log(&t.store.raw).await;
    set_payload_text(
        &t.store.raw,
        started.global_position,
        "started_at",
        "2020-01-01T00:00:00Z",
    )
    .await;
    let report = run_verify(&db).await;
    let chain = named(&report, "chain");
    assert!(
        chain.iter().any(|v| v.contains(&started.global_position.to_string())),
        "{:#?}",
        report.violations
    );
    assert_eq!(report.violations.len(), chain.len(), "{:#?}", report.violations);
}

async fn reordered_events_of_different_streams_break_the_chain(db: TestDb) {
    // Proves two events of different streams swapped in the log (versions stay
    // contiguous per stream) are caught by the log hash.
    let log = live_log(&db).await;
    let order = log.orders.resting_sell;
    let t = log.stop_projection().await;
    let submitted = event(&t.store, &StreamId::order(order), "OrderSubmitted").await;
    let saga = event(&t.store, &StreamId::saga(order), "SagaStarted").await;
    unlock_log(&t.store.raw).await;
    swap_positions(&t.store.raw, submitted.global_position, saga.global_position).await;
    let report = run_verify(&db).await;
    assert!(!named(&report, "chain").is_empty(), "{:#?}", report.violations);
}

async fn an_execution_not_behind_a_publishers_checkpoint_is_named(db: TestDb) {
    // Proves that with a broker configured, an executed order past a publisher's
    // checkpoint is named with the publisher, and that checkpoints past it satisfy verify.
    let log = live_log(&db).await;
    let order = log.orders.executed_buy;
    let t = log.stop_projection().await;
    let executed = event(&t.store, &StreamId::order(order), "OrderExecuted").await;
    let (store, ops_db) = ops_db(&db).await;
    let with_broker = VerifyOptions { publication: true };
    for route in Route::ALL {
        store
            .save_checkpoint(route.checkpoint(), executed.global_position)
            .await
            .unwrap();
    }
    store
        .save_checkpoint("amqp.positions.updates", executed.global_position - 1)
        .await
        .unwrap();
    let report = ops::verify(Arc::clone(&store), &ops_db, &with_broker, &ProgressBar::hidden())
        .await
        .unwrap();
    let unpublished = named(&report, "publication");
    assert!(
        unpublished.contains(&format!(
            "publication: order {order} executed at position {}, but publisher amqp.positions.updates is at {}",
            executed.global_position,
            executed.global_position - 1
        )),
        "{unpublished:#?}"
    );
    let head = store.head_position().await.unwrap();
    for route in Route::ALL {
        store.save_checkpoint(route.checkpoint(), head).await.unwrap();
    }
    let report = ops::verify(store, &ops_db, &with_broker, &ProgressBar::hidden())
        .await
        .unwrap();
    assert!(report.is_healthy(), "{:#?}", report.violations);
}

#[actix_rt::test]
async fn the_verify_command_exits_0_when_healthy_and_1_naming_violations() {
    // Proves the binary's exit codes and output: 0 and a summary, then 1 with each violation.
    let db = TestDb::sqlite();
    let log = live_log(&db).await;
    let order = log.orders.executed_buy;
    let t = log.stop_projection().await;
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_order-engine"))
            .arg("verify")
            .env("DATABASE_URL", db.url())
            .env_remove("AMQP_URL")
            .env("RUST_LOG", "error")
            .output()
            .unwrap()
    };
    let healthy = run();
    let out = String::from_utf8_lossy(&healthy.stdout).into_owned();
    assert_eq!(
        healthy.status.code(),
        Some(0),
        "{out}{}",
        String::from_utf8_lossy(&healthy.stderr)
    );
    assert!(out.contains("no violations"), "{out}");
    t.store
        .raw
        .execute(&format!("UPDATE orders SET status = 'FAILED' WHERE id = '{order}'"))
        .await
        .unwrap();
    let broken = run();
    let out = String::from_utf8_lossy(&broken.stdout).into_owned();
    assert_eq!(broken.status.code(), Some(1), "{out}");
    assert!(
        out.contains(&format!("read-model: orders: row {order}: status is FAILED")),
        "{out}"
    );
    assert!(out.contains("1 violations"), "{out}");
}
