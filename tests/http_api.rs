//! The HTTP API served by the real app on a random port, on each backend:
//! submit and cancel orders, read them back, and get specific problems.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::engine::{eventually, start};
use common::http::{spawn_app, token, TestApp};
use common::TestDb;
use rust_decimal_macros::dec;
use serde_json::{json, Value};
use uuid::Uuid;

on_every_backend_in_actix!(
    an_order_is_submitted_executed_and_read_back,
    a_resting_order_is_cancelled_over_http,
    bad_requests_get_specific_problems,
    history_pages_and_filters_a_users_orders,
    an_idempotency_key_replays_the_first_answer,
    the_openapi_document_matches_the_routes,
);

async fn post(app: &TestApp, user: Uuid, body: &Value) -> reqwest::Response {
    app.client
        .post(format!("{}/api/v1/orders", app.address))
        .bearer_auth(token(user))
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn get(app: &TestApp, user: Uuid, path: &str) -> reqwest::Response {
    app.client
        .get(format!("{}{path}", app.address))
        .bearer_auth(token(user))
        .send()
        .await
        .unwrap()
}

async fn an_order_is_submitted_executed_and_read_back(db: TestDb) {
    // Proves POST answers 202 with the seed's fields and the order can be read at once and after it fills.
    let app = spawn_app(start(db.open(None).await, None, None));
    app.engine.market.set_price("AAPL", dec!(150.25)).unwrap();
    let ready = app
        .client
        .get(format!("{}/health/ready", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["checks"]["database"]["status"], "ok", "{ready}");
    let user = Uuid::new_v4();
    let response = post(
        &app,
        user,
        &json!({"symbol": "AAPL", "order_type": "MARKET", "order_side": "BUY", "quantity": 10}),
    )
    .await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "PENDING");
    assert_eq!(body["market_price"], json!(150.25));
    let order_id = body["order_id"].as_str().unwrap().to_owned();

    // Read-your-writes: the order is there right after the 202.
    let details = get(&app, user, &format!("/api/v1/orders/{order_id}")).await;
    assert_eq!(details.status(), 200);

    let path = format!("/api/v1/orders/{order_id}/status");
    eventually("order executed", Duration::from_secs(20), || async {
        let status: Value = get(&app, user, &path).await.json().await.unwrap();
        status["status"] == "EXECUTED"
    })
    .await;
    let details: Value = get(&app, user, &format!("/api/v1/orders/{order_id}"))
        .await
        .json()
        .await
        .unwrap();
    let decimal = |v: &Value| v.to_string().parse::<rust_decimal::Decimal>().unwrap();
    assert_eq!(decimal(&details["execution_price"]), dec!(150.25));
    assert_eq!(decimal(&details["execution_value"]), dec!(1502.5));
    // Amounts go out as JSON numbers with their scale, as the seed shows.
    assert_eq!(details["execution_value"].to_string(), "1502.50");
    assert_eq!(details["order_side"], "BUY");
    // Another user cannot see it.
    assert_eq!(get(&app, Uuid::new_v4(), &path).await.status(), 404);

    // Its audit trail: the order's events, the saga's steps and the ledger entries, in log order.
    eventually("saga complete", Duration::from_secs(20), || async {
        let story: Value = get(&app, user, &format!("/api/v1/orders/{order_id}/events"))
            .await
            .json()
            .await
            .unwrap();
        story["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["event_type"] == "SagaCompleted"))
    })
    .await;
    let story: Value = get(&app, user, &format!("/api/v1/orders/{order_id}/events"))
        .await
        .json()
        .await
        .unwrap();
    let events = story["events"].as_array().unwrap();
    let kinds: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e["source"].as_str().unwrap(), e["event_type"].as_str().unwrap()))
        .collect();
    for expected in [
        ("order", "OrderSubmitted"),
        ("saga", "StepAttempted"),
        ("ledger", "FundsReserved"),
        ("order", "OrderExecuted"),
        ("ledger", "ReservationDeducted"),
        ("ledger", "ReservationReleased"),
        ("saga", "SagaCompleted"),
    ] {
        assert!(kinds.contains(&expected), "{expected:?} missing from {kinds:?}");
    }
    let positions: Vec<u64> = events.iter().map(|e| e["global_position"].as_u64().unwrap()).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "not in log order: {positions:?}"
    );
    assert_eq!(
        get(&app, Uuid::new_v4(), &format!("/api/v1/orders/{order_id}/events"))
            .await
            .status(),
        404
    );
}

async fn a_resting_order_is_cancelled_over_http(db: TestDb) {
    // Proves PUT cancel answers 200 CANCELLED, and a second cancel is 409.
    let app = spawn_app(start(db.open(None).await, None, None));
    let user = Uuid::new_v4();
    let body: Value = post(
        &app,
        user,
        &json!({"symbol": "AAPL", "order_type": "LIMIT", "order_side": "BUY", "quantity": "5", "price": "100.5"}),
    )
    .await
    .json()
    .await
    .unwrap();
    let order_id = body["order_id"].as_str().unwrap().to_owned();
    let cancel = |app: &TestApp| {
        app.client
            .put(format!("{}/api/v1/orders/{order_id}/cancel", app.address))
            .bearer_auth(token(user))
            .send()
    };
    let response = cancel(&app).await.unwrap();
    assert_eq!(response.status(), 200);
    let cancelled: Value = response.json().await.unwrap();
    assert_eq!(cancelled["status"], "CANCELLED");
    let again = cancel(&app).await.unwrap();
    assert_eq!(again.status(), 409);
    assert_eq!(again.headers()["content-type"], "application/problem+json");
}

async fn bad_requests_get_specific_problems(db: TestDb) {
    // Proves each bad input is named: the problem says what to change.
    let app = spawn_app(start(db.open(None).await, None, None));
    let user = Uuid::new_v4();
    let cases = [
        (
            json!({"symbol": "AAPL", "order_type": "MARKET", "order_side": "BUY", "quantity": 0}),
            422,
            "greater than zero",
        ),
        (
            json!({"symbol": "AAPL", "order_type": "MARKET", "order_side": "BUY", "quantity": -3}),
            422,
            "greater than zero",
        ),
        (
            json!({"symbol": "AAPL", "order_type": "LIMIT", "order_side": "BUY", "quantity": 1}),
            422,
            "needs a price",
        ),
        (
            json!({"symbol": "NOPE", "order_type": "MARKET", "order_side": "BUY", "quantity": 1}),
            422,
            "not listed",
        ),
        (
            json!({"symbol": "AAPL", "order_type": "MARKET", "order_side": "BUY", "quantity": 1, "colour": "red"}),
            400,
            "unknown field",
        ),
        (
            json!({"symbol": "AAPL", "order_type": "MARKET", "order_side": "UP", "quantity": 1}),
            400,
            "unknown variant",
        ),
    ];
    for (body, status, needle) in cases {
        let response = post(&app, user, &body).await;
        assert_eq!(response.status().as_u16(), status, "{body}");
        assert_eq!(response.headers()["content-type"], "application/problem+json", "{body}");
        let problem: Value = response.json().await.unwrap();
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(needle), "{body}: {detail}");
    }
    let unauthenticated = app
        .client
        .post(format!("{}/api/v1/orders", app.address))
        .json(&json!({"symbol": "AAPL", "order_type": "MARKET", "order_side": "BUY", "quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
    let huge = json!({"symbol": "A".repeat(40_000), "order_type": "MARKET", "order_side": "BUY", "quantity": 1});
    assert_eq!(post(&app, user, &huge).await.status(), 413);

    let malformed = app
        .client
        .post(format!("{}/api/v1/orders", app.address))
        .bearer_auth(token(user))
        .header("content-type", "application/json")
        .body("{\"symbol\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    assert_eq!(malformed.headers()["content-type"], "application/problem+json");

    let orders = format!("{}/api/v1/orders/{}", app.address, Uuid::new_v4());
    let forged = app.client.get(&orders).bearer_auth("not.a.token").send().await.unwrap();
    assert_eq!(forged.status(), 401);
    let expired = order_engine::auth::mint_token(
        &order_engine::auth::JwtConfig::development(None),
        user,
        chrono::Utc::now() - chrono::Duration::hours(2),
        Duration::from_secs(60),
    )
    .unwrap();
    let expired = app.client.get(&orders).bearer_auth(expired).send().await.unwrap();
    assert_eq!(expired.status(), 401);
    let missing = app.client.get(&orders).bearer_auth(token(user)).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.headers()["content-type"], "application/problem+json");
}

async fn history_pages_and_filters_a_users_orders(db: TestDb) {
    // Proves history is per user, newest first, paged by limit/offset or page, filtered by status.
    let app = spawn_app(start(db.open(None).await, None, None));
    let user = Uuid::new_v4();
    let mut ids = Vec::new();
    for price in ["10", "11", "12"] {
        let body: Value = post(
            &app,
            user,
            &json!({"symbol": "MSFT", "order_type": "LIMIT", "order_side": "BUY", "quantity": 1, "price": price}),
        )
        .await
        .json()
        .await
        .unwrap();
        ids.push(body["order_id"].as_str().unwrap().to_owned());
    }
    let cancel = app
        .client
        .put(format!("{}/api/v1/orders/{}/cancel", app.address, ids[0]))
        .bearer_auth(token(user))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 200);
    post(
        &app,
        Uuid::new_v4(),
        &json!({"symbol": "MSFT", "order_type": "LIMIT", "order_side": "BUY", "quantity": 1, "price": 9}),
    )
    .await;
    eventually("history projected", Duration::from_secs(20), || async {
        let page: Value = get(&app, user, "/api/v1/orders/history?status=CANCELLED")
            .await
            .json()
            .await
            .unwrap();
        page["total_count"] == 1
    })
    .await;
    let page: Value = get(&app, user, "/api/v1/orders/history?limit=2&page=1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["total_count"], 3, "{page}");
    assert_eq!(page["orders"].as_array().unwrap().len(), 2);
    assert_eq!(page["orders"][0]["order_id"], ids[2].as_str(), "newest first");
    let second: Value = get(&app, user, "/api/v1/orders/history?limit=2&offset=2")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(second["orders"][0]["order_id"], ids[0].as_str());
    assert_eq!(second["orders"][0]["status"], "CANCELLED");
    let bad = get(&app, user, "/api/v1/orders/history?limit=1000").await;
    assert_eq!(bad.status(), 400);
    let bad_status = get(&app, user, "/api/v1/orders/history?status=LOST").await;
    assert_eq!(bad_status.status(), 400);
}

async fn an_idempotency_key_replays_the_first_answer(db: TestDb) {
    // Proves a repeated Idempotency-Key returns the original 202 (one order), and
    // the same key with another body is 422.
    let app = spawn_app(start(db.open(None).await, None, None));
    let user = Uuid::new_v4();
    let body = json!({"symbol": "AAPL", "order_type": "LIMIT", "order_side": "BUY", "quantity": 1, "price": 10});
    let send = |body: Value| {
        app.client
            .post(format!("{}/api/v1/orders", app.address))
            .bearer_auth(token(user))
            .header("Idempotency-Key", "client-42")
            .json(&body)
            .send()
    };
    let first = send(body.clone()).await.unwrap();
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    let again =
        send(json!({"symbol": "AAPL", "order_type": "LIMIT", "order_side": "BUY", "quantity": "1.0", "price": 10}))
            .await
            .unwrap();
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["order_id"], first["order_id"]);
    let different =
        send(json!({"symbol": "AAPL", "order_type": "LIMIT", "order_side": "BUY", "quantity": 2, "price": 10}))
            .await
            .unwrap();
    assert_eq!(different.status(), 422);
    let problem: Value = different.json().await.unwrap();
    assert_eq!(problem["type"], "urn:order-engine:problem:idempotency-key-reused");
    eventually("one order in history", Duration::from_secs(20), || async {
        let page: Value = get(&app, user, "/api/v1/orders/history").await.json().await.unwrap();
        page["total_count"] == 1
    })
    .await;
}

async fn the_openapi_document_matches_the_routes(db: TestDb) {
    // Proves the generated document lists exactly the served routes, and each is routed.
    let app = spawn_app(start(db.open(None).await, None, None));
    let doc: Value = app
        .client
        .get(format!("{}/api/v1/openapi.json", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut operations: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            operations.push((method.to_uppercase(), path.clone()));
        }
    }
    operations.sort();
    let expected = [
        ("GET", "/api/v1/orders/history"),
        ("GET", "/api/v1/orders/{order_id}"),
        ("GET", "/api/v1/orders/{order_id}/events"),
        ("GET", "/api/v1/orders/{order_id}/status"),
        ("GET", "/health/live"),
        ("GET", "/health/ready"),
        ("GET", "/metrics"),
        ("POST", "/api/v1/orders"),
        ("PUT", "/api/v1/orders/{order_id}/cancel"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(operations, expected);
    for (method, path) in &operations {
        let url = format!(
            "{}{}",
            app.address,
            path.replace("{order_id}", &Uuid::new_v4().to_string())
        );
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = app.client.request(method.clone(), &url).send().await.unwrap();
        let body = response.text().await.unwrap();
        assert!(
            !body.contains("route-not-found"),
            "{method} {path} is documented but not routed: {body}"
        );
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}
