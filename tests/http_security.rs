//! The auth pieces assembled the way a route author will: a real actix-web
//! server on 127.0.0.1:0 with the signed-request middleware, the JSON config
//! and two protected routes, driven over real sockets by reqwest. Every
//! refusal must be the right status with an `application/problem+json` body.

// Helpers outside #[test] fns panic on a broken expectation too; that is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpResponse, HttpServer};
use chrono::Utc;
use order_engine::api::problem::{self, Problem};
use order_engine::auth::{
    self, jwt, requires, AuthenticatedUser, Authenticator, Authorized, Caller, InternalVerifier, JwtAlgorithm,
    JwtConfig, JwtVerifier, Permission, ServiceKeys,
};
use order_engine::clients::signing;
use order_engine::clients::ServiceCredentials;
use order_engine::clock::SystemClock;
use order_engine::telemetry::metrics::{self, Metrics};
use serde_json::{json, Value};
use uuid::Uuid;

const SECRET: &str = "http-security-test-secret-32-bytes-or-more";
const USER: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0007);
const ORDERS: &str = "/api/v1/orders";
/// Small, so the oversize case needs only a small body.
const BODY_BYTES_MAX: usize = 1024;
const ALGO_KEY: &str = "algo-engine-key";
const RISK_KEY: &str = "risk-manager-key";

fn jwt_config() -> JwtConfig {
    JwtConfig {
        algorithm: JwtAlgorithm::Hs256 { secret: SECRET.into() },
        issuer: "issuer-test".into(),
        audience: "order-engine".into(),
        leeway: Duration::from_secs(0),
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PlaceOrder {
    symbol: String,
    quantity: rust_decimal::Decimal,
}

fn describe(user: &AuthenticatedUser) -> Value {
    let via = match &user.via {
        Caller::Token => "token".to_owned(),
        Caller::Service { identity } => identity.clone(),
    };
    json!({"user_id": user.user_id, "via": via})
}

async fn place_order(user: Authorized<requires::PlaceOrder>, body: web::Json<PlaceOrder>) -> HttpResponse {
    let mut answer = describe(&user);
    answer["symbol"] = json!(body.symbol);
    answer["quantity"] = json!(body.quantity.to_string());
    HttpResponse::Ok().json(answer)
}

async fn cancel_order(user: AuthenticatedUser, id: web::Path<Uuid>) -> Result<HttpResponse, Problem> {
    user.require(Permission::CancelOrder)?;
    let mut answer = describe(&user);
    answer["order_id"] = json!(id.into_inner());
    Ok(HttpResponse::Ok().json(answer))
}

struct TestApp {
    base: String,
    client: reqwest::Client,
}

async fn spawn_app() -> TestApp {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let keys = ServiceKeys::new([("algo_engine", ALGO_KEY), ("risk_manager", RISK_KEY)]);
    let authenticator = web::Data::new(
        Authenticator::new(
            JwtVerifier::new(&jwt_config()).unwrap(),
            InternalVerifier::new(keys, Arc::new(SystemClock)),
        )
        .with_signed_body_bytes_max(BODY_BYTES_MAX),
    );
    let metrics = web::Data::new(Metrics::new().unwrap());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(authenticator.clone())
            .app_data(metrics.clone())
            .app_data(problem::json_config(BODY_BYTES_MAX))
            .app_data(problem::path_config())
            .wrap(from_fn(auth::verify_signed_requests))
            .wrap(from_fn(metrics::count_http_requests))
            .route(ORDERS, web::post().to(place_order))
            .route("/api/v1/orders/{id}/cancel", web::put().to(cancel_order))
            .route("/metrics", web::get().to(metrics::metrics_endpoint))
            .default_service(web::to(problem::route_not_found))
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    actix_web::rt::spawn(server);
    TestApp {
        base,
        client: reqwest::Client::new(),
    }
}

fn token(issued_at: chrono::DateTime<Utc>, ttl: Duration) -> String {
    jwt::mint_token(&jwt_config(), USER, issued_at, ttl).unwrap()
}

fn valid_token() -> String {
    token(Utc::now(), Duration::from_secs(600))
}

fn order_body() -> String {
    json!({"symbol": "AAPL", "quantity": 10}).to_string()
}

/// A request signed as `identity` with `key` at `timestamp`, acting for USER.
fn signed(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    identity: &str,
    key: &str,
    timestamp: i64,
    body: &str,
) -> reqwest::RequestBuilder {
    let mut request = app
        .client
        .request(method.clone(), format!("{}{path}", app.base))
        .header("Content-Type", "application/json")
        .header(auth::HEADER_USER_ID, USER.to_string())
        .body(body.to_owned());
    let credentials = ServiceCredentials::new(identity, key);
    for (name, value) in signing::sign(&credentials, timestamp, method.as_str(), path, body.as_bytes()) {
        request = request.header(name, value);
    }
    request
}

fn post_json(app: &TestApp, body: impl Into<String>) -> reqwest::RequestBuilder {
    app.client
        .post(format!("{}{ORDERS}", app.base))
        .header("Content-Type", "application/json")
        .body(body.into())
}

/// Asserts the status and a problem+json body of the given slug; returns the body.
async fn expect_problem(response: reqwest::Response, status: u16, slug: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "expected {slug}");
    assert_eq!(
        response.headers().get("content-type").unwrap(),
        "application/problem+json",
        "{slug}"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], format!("urn:order-engine:problem:{slug}"), "{body}");
    assert_eq!(body["status"], status, "{body}");
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()), "{body}");
    body
}

#[actix_web::test]
async fn no_token_is_401() {
    // Proves an unauthenticated request is refused with a problem naming both ways in.
    let app = spawn_app().await;
    let response = post_json(&app, order_body()).send().await.unwrap();
    assert!(response.headers().contains_key("www-authenticate"));
    let body = expect_problem(response, 401, "missing-credentials").await;
    assert_eq!(body["instance"], ORDERS);
}

#[actix_web::test]
async fn a_bad_token_is_401() {
    // Proves garbage, a wrong scheme and a token signed with another secret are all refused.
    let app = spawn_app().await;
    let response = post_json(&app, order_body())
        .bearer_auth("not.a.jwt")
        .send()
        .await
        .unwrap();
    expect_problem(response, 401, "token-invalid").await;

    let response = post_json(&app, order_body())
        .header("Authorization", format!("Basic {}", valid_token()))
        .send()
        .await
        .unwrap();
    expect_problem(response, 401, "malformed-authorization").await;

    let other = JwtConfig {
        algorithm: JwtAlgorithm::Hs256 {
            secret: "another-secret-that-is-also-32-bytes-long".into(),
        },
        ..jwt_config()
    };
    let forged = jwt::mint_token(&other, USER, Utc::now(), Duration::from_secs(600)).unwrap();
    let response = post_json(&app, order_body()).bearer_auth(forged).send().await.unwrap();
    expect_problem(response, 401, "token-invalid").await;
}

#[actix_web::test]
async fn an_expired_token_is_401() {
    // Proves exp is enforced at the edge, with a problem that says "expired".
    let app = spawn_app().await;
    let expired = token(Utc::now() - chrono::Duration::hours(2), Duration::from_secs(3600));
    let response = post_json(&app, order_body()).bearer_auth(expired).send().await.unwrap();
    expect_problem(response, 401, "token-expired").await;
}

#[actix_web::test]
async fn a_valid_token_is_200_and_names_the_user() {
    // Proves the happy path reaches the handler with the token's user, and the body still parses.
    let app = spawn_app().await;
    let response = post_json(&app, order_body())
        .bearer_auth(valid_token())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"user_id": USER, "via": "token", "symbol": "AAPL", "quantity": "10"})
    );
}

#[actix_web::test]
async fn a_signed_internal_call_is_200_and_acts_for_x_user_id() {
    // Proves a correctly signed service call passes, the handler still reads the buffered body,
    // and the user is the one named in X-User-Id.
    let app = spawn_app().await;
    let response = signed(
        &app,
        reqwest::Method::POST,
        ORDERS,
        "algo_engine",
        ALGO_KEY,
        Utc::now().timestamp(),
        &order_body(),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"user_id": USER, "via": "algo_engine", "symbol": "AAPL", "quantity": "10"})
    );
}

#[actix_web::test]
async fn an_unsigned_internal_call_is_401() {
    // Proves claiming a service identity without the HMAC headers gets nowhere, even with X-User-Id.
    let app = spawn_app().await;
    let response = post_json(&app, order_body())
        .header("X-Service-Identity", "algo_engine")
        .header(auth::HEADER_USER_ID, USER.to_string())
        .send()
        .await
        .unwrap();
    let body = expect_problem(response, 401, "signature-missing").await;
    assert!(
        body["detail"].as_str().unwrap().contains("X-Internal-API-Key"),
        "{body}"
    );
}

#[actix_web::test]
async fn a_tampered_signed_body_is_401() {
    // Proves the signature covers the exact bytes the handler will read.
    let app = spawn_app().await;
    let now = Utc::now().timestamp();
    let credentials = ServiceCredentials::new("algo_engine", ALGO_KEY);
    let mut request = post_json(&app, json!({"symbol": "AAPL", "quantity": 10_000}).to_string())
        .header(auth::HEADER_USER_ID, USER.to_string());
    for (name, value) in signing::sign(&credentials, now, "POST", ORDERS, order_body().as_bytes()) {
        request = request.header(name, value);
    }
    expect_problem(request.send().await.unwrap(), 401, "signature-invalid").await;
}

#[actix_web::test]
async fn a_replayed_internal_call_is_401() {
    // Proves the second sending of the very same signed request is refused.
    let app = spawn_app().await;
    let now = Utc::now().timestamp();
    let first = signed(
        &app,
        reqwest::Method::POST,
        ORDERS,
        "algo_engine",
        ALGO_KEY,
        now,
        &order_body(),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(first.status().as_u16(), 200);
    let replay = signed(
        &app,
        reqwest::Method::POST,
        ORDERS,
        "algo_engine",
        ALGO_KEY,
        now,
        &order_body(),
    )
    .send()
    .await
    .unwrap();
    expect_problem(replay, 401, "request-replayed").await;
}

#[actix_web::test]
async fn a_stale_internal_call_is_401() {
    // Proves a timestamp more than 300 s old is refused, and the message names the limit.
    let app = spawn_app().await;
    let stale = Utc::now().timestamp() - 301;
    let response = signed(
        &app,
        reqwest::Method::POST,
        ORDERS,
        "algo_engine",
        ALGO_KEY,
        stale,
        &order_body(),
    )
    .send()
    .await
    .unwrap();
    let body = expect_problem(response, 401, "signature-stale").await;
    assert!(body["detail"].as_str().unwrap().contains("300 s"), "{body}");
}

#[actix_web::test]
async fn a_service_without_the_permission_is_403() {
    // Proves seed 001's table at the edge: risk_manager may cancel but not place.
    let app = spawn_app().await;
    let now = Utc::now().timestamp();
    let response = signed(
        &app,
        reqwest::Method::POST,
        ORDERS,
        "risk_manager",
        RISK_KEY,
        now,
        &order_body(),
    )
    .send()
    .await
    .unwrap();
    let body = expect_problem(response, 403, "permission-denied").await;
    assert_eq!(body["service"], "risk_manager");
    assert_eq!(body["permission"], "place_order");

    let cancel = format!("{ORDERS}/{}/cancel", Uuid::nil());
    let response = signed(&app, reqwest::Method::PUT, &cancel, "risk_manager", RISK_KEY, now, "")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["via"], "risk_manager");
}

#[actix_web::test]
async fn an_oversize_body_is_413() {
    // Proves the body limit on both paths: the JSON config for token callers, the
    // middleware's buffer for signed callers (before any HMAC work).
    let app = spawn_app().await;
    let huge = json!({"symbol": "A".repeat(BODY_BYTES_MAX * 2), "quantity": 1}).to_string();
    let response = post_json(&app, huge.clone())
        .bearer_auth(valid_token())
        .send()
        .await
        .unwrap();
    let body = expect_problem(response, 413, "body-too-large").await;
    assert_eq!(body["limit_bytes"], BODY_BYTES_MAX);

    let now = Utc::now().timestamp();
    let response = signed(&app, reqwest::Method::POST, ORDERS, "algo_engine", ALGO_KEY, now, &huge)
        .send()
        .await
        .unwrap();
    let body = expect_problem(response, 413, "body-too-large").await;
    assert_eq!(body["limit_bytes"], BODY_BYTES_MAX);
}

#[actix_web::test]
async fn malformed_json_is_400() {
    // Proves a broken body and an unknown field are specific 400 problems, after authentication.
    let app = spawn_app().await;
    let response = post_json(&app, r#"{"symbol": "AAPL", "quantity": "#)
        .bearer_auth(valid_token())
        .send()
        .await
        .unwrap();
    expect_problem(response, 400, "malformed-json").await;

    let response = post_json(&app, r#"{"symbol": "AAPL", "quantity": 1, "qty": 2}"#)
        .bearer_auth(valid_token())
        .send()
        .await
        .unwrap();
    let body = expect_problem(response, 400, "unknown-field").await;
    assert_eq!(body["errors"][0]["field"], "qty");
}

#[actix_web::test]
async fn a_non_uuid_order_id_is_400_and_requests_are_counted_by_pattern() {
    // Proves the path config's choice (400, not 404) and that the metrics middleware, wrapped
    // around the auth middleware, counts refusals under the route pattern.
    let app = spawn_app().await;
    let response = app
        .client
        .put(format!("{}{ORDERS}/not-a-uuid/cancel", app.base))
        .bearer_auth(valid_token())
        .send()
        .await
        .unwrap();
    expect_problem(response, 400, "invalid-path-parameter").await;
    post_json(&app, order_body()).send().await.unwrap();

    let text = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(
            r#"order_service_http_requests_total{method="PUT",route="/api/v1/orders/{id}/cancel",status="400"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"order_service_http_requests_total{method="POST",route="/api/v1/orders",status="401"} 1"#),
        "{text}"
    );
}
