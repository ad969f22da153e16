//! The HTTP API served by the real app on a random port, on each backend:
//! submit and cancel orders, read them back, and get specific problems.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::engine::eventually;
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
    concurrent_retries_with_one_key_get_the_first_answer,
    history_numbers_are_checked_against_their_documented_bounds,
    the_openapi_document_matches_the_routes,
);

/// Identical requests sent at once with one Idempotency-Key.
const CONCURRENT_RETRIES: usize = 20;

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
    let app = spawn_app(&db).await;
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
    // The proto's GetOrderDetailsResponse: `api_response` beside the order.
    assert_eq!(details["api_response"]["success"], true, "{details}");
    assert_eq!(details["api_response"]["status_code"], 200, "{details}");
    let details = &details["order"];
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
    let app = spawn_app(&db).await;
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
    let app = spawn_app(&db).await;
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

    // An array of the fields in order is not an order (serde's derive would read it; the fuzzer found it).
    let array = app
        .client
        .post(format!("{}/api/v1/orders", app.address))
        .bearer_auth(token(user))
        .header("content-type", "application/json")
        .body(r#"["AAPL","LIMIT","BUY",10,150.25]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(array.status(), 400);
    let problem: serde_json::Value = array.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("expected a JSON object"),
        "{problem}"
    );

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
    let app = spawn_app(&db).await;
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
    let app = spawn_app(&db).await;
    let user = Uuid::new_v4();
    let body = json!({"symbol": "AAPL", "order_type": "LIMIT", "order_side": "BUY", "quantity": 1, "price": 10});
    let bearer = token(user);
    let send = |body: Value| {
        let bearer = bearer.clone();
        let app = &app;
        async move { app.submit(&bearer, &body, Some("client-42")).await }
    };
    let first = send(body.clone()).await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    let again =
        send(json!({"symbol": "AAPL", "order_type": "LIMIT", "order_side": "BUY", "quantity": "1.0", "price": 10}))
            .await;
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["order_id"], first["order_id"]);
    let different =
        send(json!({"symbol": "AAPL", "order_type": "LIMIT", "order_side": "BUY", "quantity": 2, "price": 10})).await;
    assert_eq!(different.status(), 422);
    let problem: Value = different.json().await.unwrap();
    assert_eq!(problem["type"], "urn:order-engine:problem:idempotency-key-reused");
    eventually("one order in history", Duration::from_secs(20), || async {
        let page: Value = get(&app, user, "/api/v1/orders/history").await.json().await.unwrap();
        page["total_count"] == 1
    })
    .await;
}

async fn concurrent_retries_with_one_key_get_the_first_answer(db: TestDb) {
    // Proves concurrent identical requests with one key all get the first 202 and make one order.
    let app = spawn_app(&db).await;
    let user = Uuid::new_v4();
    let body = json!({"symbol": "AAPL", "order_type": "LIMIT", "order_side": "BUY", "quantity": 3, "price": 10});
    let bearer = token(user);
    let send = |body: Value| {
        let bearer = bearer.clone();
        let app = &app;
        async move { app.submit(&bearer, &body, Some("burst-7")).await }
    };
    let answers = futures_util::future::join_all((0..CONCURRENT_RETRIES).map(|_| send(body.clone()))).await;
    let mut bodies = Vec::new();
    for answer in answers {
        let status = answer.status();
        let text = answer.text().await.unwrap();
        assert_eq!(status, 202, "{text}");
        bodies.push(serde_json::from_str::<Value>(&text).unwrap());
    }
    assert!(bodies.iter().all(|b| *b == bodies[0]), "answers differ: {bodies:?}");
    let different =
        send(json!({"symbol": "AAPL", "order_type": "LIMIT", "order_side": "BUY", "quantity": 4, "price": 10})).await;
    assert_eq!(different.status(), 422);
    let problem: Value = different.json().await.unwrap();
    assert_eq!(problem["type"], "urn:order-engine:problem:idempotency-key-reused");
    eventually("the order in history", Duration::from_secs(20), || async {
        let page: Value = get(&app, user, "/api/v1/orders/history").await.json().await.unwrap();
        page["total_count"] == 1
    })
    .await;
    let page: Value = get(&app, user, "/api/v1/orders/history").await.json().await.unwrap();
    assert_eq!(page["total_count"], 1, "{page}");
    assert_eq!(page["orders"][0]["order_id"], bodies[0]["order_id"]);
}

/// The document's `minimum` and `maximum` of each history query parameter.
async fn history_bounds(app: &TestApp) -> Vec<(String, u64, u64)> {
    let doc = app.get_json("/api/v1/openapi.json", None).await;
    let parameters = doc["paths"]["/api/v1/orders/history"]["get"]["parameters"]
        .as_array()
        .unwrap();
    parameters
        .iter()
        .filter(|p| p["schema"]["type"] == "integer")
        .map(|p| {
            let name = p["name"].as_str().unwrap().to_owned();
            let bound = |key: &str| {
                p["schema"][key]
                    .as_u64()
                    .unwrap_or_else(|| panic!("{name} has no integer {key}: {p}"))
            };
            (name.clone(), bound("minimum"), bound("maximum"))
        })
        .collect()
}

async fn history_numbers_are_checked_against_their_documented_bounds(db: TestDb) {
    // Proves each history number is accepted exactly within its documented bounds, else a 400 naming it.
    let app = spawn_app(&db).await;
    let user = Uuid::new_v4();
    // The page schemathesis found: (page - 1) × limit overflowed into offset 2^64 - 1.
    let overflow = get(&app, user, "/api/v1/orders/history?page=9223372036854775808").await;
    assert_eq!(overflow.status(), 400, "{}", overflow.text().await.unwrap());
    let bounds = history_bounds(&app).await;
    let names: Vec<&str> = bounds.iter().map(|(name, _, _)| name.as_str()).collect();
    assert_eq!(names, ["limit", "offset", "page"], "{bounds:?}");
    for (name, minimum, maximum) in &bounds {
        let query = |value: &str| format!("/api/v1/orders/history?{name}={value}");
        for value in [*minimum, *maximum] {
            let response = get(&app, user, &query(&value.to_string())).await;
            let status = response.status();
            assert_eq!(status, 200, "{name}={value}: {}", response.text().await.unwrap());
        }
        let mut outside = vec![
            (maximum + 1).to_string(),
            "9223372036854775808".to_owned(),
            "18446744073709551616".to_owned(),
            "-1".to_owned(),
            "1.5".to_owned(),
            "ten".to_owned(),
        ];
        if *minimum > 0 {
            outside.push((minimum - 1).to_string());
        }
        for value in outside {
            let response = get(&app, user, &query(&value)).await;
            assert_eq!(response.status(), 400, "{name}={value}");
            assert_eq!(response.headers()["content-type"], "application/problem+json");
            let problem: Value = response.json().await.unwrap();
            assert_eq!(problem["parameter"], name.as_str(), "{name}={value}: {problem}");
            assert_eq!(problem["minimum"], *minimum, "{problem}");
            assert_eq!(problem["maximum"], *maximum, "{problem}");
            let detail = problem["detail"].as_str().unwrap();
            assert!(
                detail.contains(name.as_str()) && detail.contains(&maximum.to_string()),
                "{detail}"
            );
        }
    }
    // The last page of the largest size is the furthest offset, and it fits.
    let (_, _, page_max) = bounds.iter().find(|(name, _, _)| name == "page").unwrap().clone();
    let (_, _, limit_max) = bounds.iter().find(|(name, _, _)| name == "limit").unwrap().clone();
    let (_, _, offset_max) = bounds.iter().find(|(name, _, _)| name == "offset").unwrap().clone();
    let last: Value = get(
        &app,
        user,
        &format!("/api/v1/orders/history?page={page_max}&limit={limit_max}"),
    )
    .await
    .json()
    .await
    .unwrap();
    let offset = last["offset"].as_u64().unwrap();
    assert_eq!(offset, (page_max - 1) * limit_max, "{last}");
    assert!(offset <= offset_max, "{last}");
}

async fn the_openapi_document_matches_the_routes(db: TestDb) {
    // Proves the generated document lists exactly the served routes, and each is routed.
    let app = spawn_app(&db).await;
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
        ("GET", "/health/circuit-breaker"),
        ("GET", "/health/live"),
        ("GET", "/health/rate-limiter"),
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
    // Every other method on a documented path is 405, with `Allow` naming exactly the documented ones.
    for (path, item) in doc["paths"].as_object().unwrap() {
        let documented: Vec<String> = item.as_object().unwrap().keys().map(|m| m.to_uppercase()).collect();
        let url = format!(
            "{}{}",
            app.address,
            path.replace("{order_id}", &Uuid::new_v4().to_string())
        );
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"] {
            if documented.iter().any(|m| m == method) {
                continue;
            }
            let response = app
                .client
                .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), &url)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 405, "{method} {path}");
            let allow = response.headers()["allow"].to_str().unwrap().to_owned();
            let mut allowed: Vec<String> = allow.split(',').map(|m| m.trim().to_owned()).collect();
            allowed.sort();
            let mut expected = documented.clone();
            expected.sort();
            assert_eq!(allowed, expected, "{method} {path}: Allow: {allow}");
        }
    }
    // Every documented error status of an order route is answered as problem+json.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for (status, response) in operation["responses"].as_object().unwrap() {
                if status.starts_with('4') || status.starts_with('5') {
                    let content = response["content"].as_object();
                    let json = content.and_then(|c| c.get("application/problem+json").or(c.get("application/json")));
                    assert!(json.is_some(), "{method} {path} {status} has no JSON body: {response}");
                }
            }
        }
    }
}
