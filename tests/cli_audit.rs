//! The operator's `order-engine audit` command, run as a process against a
//! log written by a real engine (SQLite here; the store code is shared).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::engine::{eventually, saga_completed, start};
use common::TestDb;
use order_engine::engine::SubmitRequest;
use order_engine::events::EventMetadata;
use order_engine::order::{OrderType, Side};
use rust_decimal_macros::dec;
use uuid::Uuid;

fn audit(url: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_order-engine"))
        .arg("audit")
        .args(args)
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "error")
        .output()
        .unwrap()
}

#[actix_rt::test]
async fn audit_tells_an_orders_story_and_names_an_unknown_one() {
    // Proves the command prints order, saga and ledger entries in log order (table and JSON),
    // and fails with a clear message for an unknown id.
    let db = TestDb::sqlite();
    let t = start(&db).await;
    t.market.set_price("AAPL", dec!(150.25)).unwrap();
    let order = t
        .engine
        .submit(SubmitRequest {
            order_id: None,
            user_id: Uuid::new_v4(),
            symbol: "AAPL".into(),
            side: Side::Buy,
            order_type: OrderType::Market,
            quantity: dec!(10),
            limit_price: None,
            stop_price: None,
            metadata: EventMetadata::default(),
        })
        .await
        .unwrap();
    eventually("saga complete", Duration::from_secs(20), || async {
        saga_completed(&t.store, order.id).await
    })
    .await;

    let table = audit(db.url(), &[&order.id.to_string()]);
    assert!(table.status.success(), "{}", String::from_utf8_lossy(&table.stderr));
    let text = String::from_utf8(table.stdout).unwrap();
    for needle in [
        "OrderSubmitted",
        "FundsReserved",
        "OrderExecuted",
        "ReservationDeducted",
        "SagaCompleted",
    ] {
        assert!(text.contains(needle), "{needle} missing:\n{text}");
    }
    assert!(text.find("OrderSubmitted") < text.find("OrderExecuted"));

    let json = audit(db.url(), &[&order.id.to_string(), "--format", "json"]);
    assert!(json.status.success());
    let entries: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let positions: Vec<u64> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["global_position"].as_u64().unwrap())
        .collect();
    assert!(
        positions.len() >= 15 && positions.windows(2).all(|w| w[0] < w[1]),
        "{positions:?}"
    );

    let unknown = Uuid::new_v4();
    let missing = audit(db.url(), &[&unknown.to_string()]);
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains(&format!("no order {unknown}")), "{stderr}");
}
