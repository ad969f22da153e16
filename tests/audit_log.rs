//! AUDIT_EVENT lines as the running app writes them (issue 16, item 4),
//! captured in-process: a tracing layer on target `order_engine::audit`
//! records every line, and each test reads back the lines of its own user.
//! A test binary of its own, so the capturing subscriber is the process's
//! global one before any app starts (`spawn_app` only installs one when none is).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::engine::eventually;
use common::http::{spawn_app, token, TestApp};
use common::TestDb;
use order_engine::controls::audit::{AUDIT_EVENT, AUDIT_TARGET};
use rust_decimal_macros::dec;
use serde_json::{json, Value};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;
use uuid::Uuid;

on_every_backend_in_actix!(an_order_is_audited_once_when_accepted_and_once_when_executed,);

/// What the audit layer wrote, one JSON line per audit event, for the whole process.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing subscriber once (audit lines as JSON into the buffer; everything
/// else through the test writer under RUST_LOG, as `spawn_app` would) and returns the buffer.
fn audit_lines() -> Lines {
    static LINES: OnceLock<Lines> = OnceLock::new();
    LINES
        .get_or_init(|| {
            let lines = Lines::default();
            let writer = lines.clone();
            let audit = tracing_subscriber::fmt::layer()
                .json()
                .with_writer(move || writer.clone())
                .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                    meta.target() == AUDIT_TARGET
                }));
            let rest = tracing_subscriber::fmt::layer()
                .with_test_writer()
                .with_filter(tracing_subscriber::EnvFilter::from_default_env());
            tracing_subscriber::registry()
                .with(audit)
                .with(rest)
                .try_init()
                .expect("the audit capture must be the first subscriber of this test binary");
            lines
        })
        .clone()
}

/// The audit lines written so far whose `user_id` is `user`, as their `fields` objects.
fn lines_of(lines: &Lines, user: Uuid) -> Vec<Value> {
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    text.lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .map(|line| line["fields"].clone())
        .filter(|fields| fields["user_id"] == user.to_string())
        .collect()
}

fn count(lines: &[Value], outcome: &str) -> usize {
    lines.iter().filter(|l| l["audit"] == outcome).count()
}

async fn submit(app: &TestApp, user: Uuid, body: &Value, key: &str) -> reqwest::Response {
    app.submit(&token(user), body, Some(key)).await
}

async fn an_order_is_audited_once_when_accepted_and_once_when_executed(db: TestDb) {
    // Proves a market order sent twice with one Idempotency-Key (the retry is answered from the
    // first request) writes exactly one `accepted` and one `executed` AUDIT_EVENT line, carrying
    // its id, user, terms, door and execution price; and a refused order writes one `refused`
    // line with the problem's slug and no order id.
    let lines = audit_lines();
    let app = spawn_app(&db).await;
    app.engine.market.set_price("AAPL", dec!(150.25)).unwrap();
    let user = Uuid::new_v4();
    let order = json!({"symbol": "AAPL", "order_type": "MARKET", "order_side": "BUY", "quantity": 2});

    let first = submit(&app, user, &order, "audit-1").await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    let order_id = first["order_id"].as_str().unwrap().to_owned();
    let retry = submit(&app, user, &order, "audit-1").await;
    assert_eq!(retry.status(), 202);
    let retry: Value = retry.json().await.unwrap();
    assert_eq!(retry["order_id"], first["order_id"], "{retry}");

    let refused = submit(
        &app,
        user,
        &json!({"symbol": "AAPL", "order_type": "MARKET", "order_side": "BUY", "quantity": 0}),
        "audit-2",
    )
    .await;
    assert_eq!(refused.status(), 422);

    eventually("the executed line", Duration::from_secs(20), || async {
        count(&lines_of(&lines, user), "executed") >= 1
    })
    .await;
    // The order's events are all in the log by now; a second line would come from the same
    // batch or an idempotent retry, so a short wait is enough to see one.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mine = lines_of(&lines, user);
    assert_eq!(
        (
            count(&mine, "accepted"),
            count(&mine, "executed"),
            count(&mine, "refused")
        ),
        (1, 1, 1),
        "{mine:#?}"
    );
    assert!(mine.iter().all(|l| l["message"] == AUDIT_EVENT), "{mine:#?}");
    let of = |outcome: &str| mine.iter().find(|l| l["audit"] == outcome).unwrap();
    let accepted = of("accepted");
    assert_eq!(accepted["order_id"], order_id.as_str(), "{accepted}");
    assert_eq!(
        (
            &accepted["symbol"],
            &accepted["side"],
            &accepted["order_type"],
            &accepted["quantity"],
            &accepted["source"]
        ),
        (
            &json!("AAPL"),
            &json!("BUY"),
            &json!("MARKET"),
            &json!("2"),
            &json!("http")
        ),
        "{accepted}"
    );
    let executed = of("executed");
    assert_eq!(executed["order_id"], order_id.as_str(), "{executed}");
    assert_eq!(executed["price"], "150.25", "{executed}");
    assert_eq!(executed["symbol"], "AAPL", "{executed}");
    let refused = of("refused");
    assert!(refused.get("order_id").is_none(), "{refused}");
    assert_eq!(refused["source"], "http", "{refused}");
    assert!(refused["reason"].as_str().is_some_and(|r| !r.is_empty()), "{refused}");
    // Every JWT opens with the base64 of `{"`: none may reach an audit line.
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    assert!(!text.contains("eyJ"), "a token reached an audit line");
}
