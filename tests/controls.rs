//! The security layer of issue 16 against the real app on port 0: gateway
//! trust (every negative, over HTTP and gRPC), idempotency fail-closed and
//! fail-open with a read model whose idempotency calls fail, outbound calls
//! signed as `serve` configures them (a stub balance and account service
//! that recomputes each signature), and the breaker and limiter health routes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use common::engine::fast_config;
use common::http::{
    grpc_resting_limit, log_state, resting_limit, settled, spawn_app, spawn_app_custom, token, Custom, TestApp,
};
use common::TestDb;
use hmac::{Hmac, Mac};
use order_engine::app::Application;
use order_engine::config::{GatewayTrust, Settings};
use order_engine::grpc::pb::order_service_client::OrderServiceClient;
use order_engine::grpc::status::api_response_of;
use order_engine::projections::{
    HistoryPage, IdempotencyClaim, IdempotencyRecord, OrderRow, OrderRowChange, ReadModels,
};
use order_engine::store::StoreError;
use rust_decimal_macros::dec;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tonic::{Code, Request};
use uuid::Uuid;
use wiremock::{Mock, MockServer, Respond, ResponseTemplate};

on_every_backend_in_actix!(
    gateway_headers_name_the_user_only_with_the_shared_secret,
    gateway_headers_are_refused_when_trust_is_off,
    an_idempotency_key_that_cannot_be_checked_refuses_the_order,
    fail_open_submits_once_under_the_keys_order_id,
    the_health_routes_report_breakers_and_limits,
);

const GATEWAY_SECRET: &str = "gateway-shared-secret-0123456789abcdef";

fn trusting_gateway() -> Custom {
    Custom {
        settings: Some(Box::new(|settings: &mut Settings| {
            settings.controls.gateway = Some(GatewayTrust {
                secret: GATEWAY_SECRET.into(),
            });
        })),
        ..Custom::default()
    }
}

async fn spawn(db: &TestDb, custom: Custom) -> TestApp {
    let app = spawn_app_custom(db, fast_config(), None, custom).await;
    app.engine.market.set_price("AAPL", dec!(150.25)).unwrap();
    app
}

/// Request headers by name.
type Headers = Vec<(&'static str, String)>;

/// POST /api/v1/orders with these headers and no bearer token unless one is among them.
async fn post_with(app: &TestApp, headers: &[(&str, String)]) -> reqwest::Response {
    let mut request = app
        .client
        .post(format!("{}/api/v1/orders", app.address))
        .json(&resting_limit());
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    request.send().await.unwrap()
}

async fn problem_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (status, body)
}

fn slug(problem: &Value) -> &str {
    problem["type"]
        .as_str()
        .unwrap_or_default()
        .rsplit(':')
        .next()
        .unwrap_or_default()
}

async fn gateway_headers_name_the_user_only_with_the_shared_secret(db: TestDb) {
    // Proves a request proving the gateway secret may name its user in X-User-Id instead of a
    // token, over HTTP and gRPC; and each negative (wrong secret, no secret, no user, a token
    // naming someone else) is a 401 with its slug and leaves the log as it was.
    let app = spawn(&db, trusting_gateway()).await;
    let (user, other) = (Uuid::new_v4(), Uuid::new_v4());
    let before = log_state(&app).await;
    let cases: [(&str, Headers, &str); 4] = [
        (
            "wrong secret",
            vec![
                ("X-Gateway-Secret", "gateway-shared-secret-0123456789abcdeX".into()),
                ("X-User-Id", user.to_string()),
            ],
            "gateway-secret-invalid",
        ),
        (
            "no secret",
            vec![("X-User-Id", user.to_string())],
            "missing-credentials",
        ),
        (
            "no user",
            vec![("X-Gateway-Secret", GATEWAY_SECRET.into())],
            "gateway-user-missing",
        ),
        (
            "token of another user",
            vec![
                ("X-Gateway-Secret", GATEWAY_SECRET.into()),
                ("X-User-Id", user.to_string()),
                ("Authorization", format!("Bearer {}", token(other))),
            ],
            "user-id-mismatch",
        ),
    ];
    for (case, headers, expected) in cases {
        let (status, problem) = problem_of(post_with(&app, &headers).await).await;
        assert_eq!(status, 401, "{case}: {problem}");
        assert_eq!(slug(&problem), expected, "{case}: {problem}");
        assert!(
            !problem.to_string().contains(GATEWAY_SECRET),
            "{case}: the secret is echoed"
        );
    }
    assert_eq!(
        log_state(&app).await,
        before,
        "a refused gateway request changed the log"
    );

    let accepted = post_with(
        &app,
        &[
            ("X-Gateway-Secret", GATEWAY_SECRET.into()),
            ("X-User-Id", user.to_string()),
        ],
    )
    .await;
    assert_eq!(accepted.status().as_u16(), 202);
    let order: Value = accepted.json().await.unwrap();
    let order_id = order["order_id"].as_str().unwrap().to_owned();
    let mine = app
        .get_json(&format!("/api/v1/orders/{order_id}"), Some(&token(user)))
        .await;
    assert_eq!(mine["order"]["user_id"], user.to_string(), "{mine}");

    let mut grpc = OrderServiceClient::connect(app.grpc_address.clone()).await.unwrap();
    let gateway_call = |secret: &str| {
        let mut request = Request::new(grpc_resting_limit(user));
        request
            .metadata_mut()
            .insert("x-gateway-secret", secret.parse().unwrap());
        request
            .metadata_mut()
            .insert("x-user-id", user.to_string().parse().unwrap());
        request
    };
    let refused = grpc
        .submit_order(gateway_call("not-the-gateway-secret-0123456789abcdef"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert_eq!(api_response_of(&refused).unwrap().error_code, "gateway-secret-invalid");
    let submitted = grpc
        .submit_order(gateway_call(GATEWAY_SECRET))
        .await
        .unwrap()
        .into_inner();
    assert!(!submitted.order_id.is_empty());
    settled(&app).await;
}

async fn gateway_headers_are_refused_when_trust_is_off(db: TestDb) {
    // Proves that without ORDER_SERVICE_TRUST_GATEWAY_HEADERS a gateway header is a 401, even
    // with a valid token beside it, and nothing is appended.
    let app = spawn(&db, Custom::default()).await;
    let user = Uuid::new_v4();
    let before = log_state(&app).await;
    for headers in [
        vec![
            ("X-Gateway-Secret", GATEWAY_SECRET.to_owned()),
            ("X-User-Id", user.to_string()),
        ],
        vec![
            ("X-Gateway-Secret", GATEWAY_SECRET.to_owned()),
            ("X-User-Id", user.to_string()),
            ("Authorization", format!("Bearer {}", token(user))),
        ],
    ] {
        let (status, problem) = problem_of(post_with(&app, &headers).await).await;
        assert_eq!((status, slug(&problem)), (401, "gateway-not-trusted"), "{problem}");
    }
    assert_eq!(log_state(&app).await, before);
}

/// The app's read models, with every idempotency call failing as a database that is down would.
struct IdempotencyDown(Arc<dyn ReadModels>);

fn down() -> StoreError {
    StoreError::Unavailable(sqlx::Error::PoolTimedOut)
}

#[async_trait]
impl ReadModels for IdempotencyDown {
    async fn commit(&self, projection: &str, changes: &[OrderRowChange], from: u64, to: u64) -> Result<(), StoreError> {
        self.0.commit(projection, changes, from, to).await
    }

    async fn checkpoint(&self, projection: &str) -> Result<u64, StoreError> {
        self.0.checkpoint(projection).await
    }

    async fn order(&self, order_id: Uuid) -> Result<Option<OrderRow>, StoreError> {
        self.0.order(order_id).await
    }

    async fn history(
        &self,
        user_id: Uuid,
        status: Option<order_engine::order::OrderStatus>,
        limit: u32,
        offset: u64,
    ) -> Result<HistoryPage, StoreError> {
        self.0.history(user_id, status, limit, offset).await
    }

    async fn idempotency(&self, _: Uuid, _: &str, _: DateTime<Utc>) -> Result<Option<IdempotencyRecord>, StoreError> {
        Err(down())
    }

    async fn claim(&self, _: IdempotencyRecord) -> Result<IdempotencyClaim, StoreError> {
        Err(down())
    }

    async fn complete(&self, _: Uuid, _: &str, _: &str, _: &Value) -> Result<(), StoreError> {
        Err(down())
    }

    async fn release(&self, _: Uuid, _: &str, _: DateTime<Utc>) -> Result<bool, StoreError> {
        Err(down())
    }
}

fn idempotency_down(fail_closed: bool) -> Custom {
    Custom {
        settings: Some(Box::new(move |settings: &mut Settings| {
            settings.controls.idempotency_fail_closed = fail_closed;
        })),
        models: Some(Box::new(|models: Arc<dyn ReadModels>| {
            Arc::new(IdempotencyDown(models)) as Arc<dyn ReadModels>
        })),
        ..Custom::default()
    }
}

async fn an_idempotency_key_that_cannot_be_checked_refuses_the_order(db: TestDb) {
    // Proves fail-closed (the default): with the idempotency record unreadable, an order with an
    // Idempotency-Key is a 503 idempotency-unavailable problem with Retry-After over HTTP and
    // UNAVAILABLE with the same slug over gRPC, and nothing is appended; an order without a key
    // does not need the record and is accepted.
    let app = spawn(&db, idempotency_down(true)).await;
    let user = Uuid::new_v4();
    let before = log_state(&app).await;
    let refused = app.submit(&token(user), &resting_limit(), Some("retry-1")).await;
    assert_eq!(refused.status().as_u16(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(
        refused.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(slug(&problem), "idempotency-unavailable", "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("not submitted"),
        "{problem}"
    );

    let mut grpc = OrderServiceClient::connect(app.grpc_address.clone()).await.unwrap();
    let mut request = Request::new(grpc_resting_limit(user));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {}", token(user)).parse().unwrap());
    request
        .metadata_mut()
        .insert("idempotency-key", "retry-1".parse().unwrap());
    let status = grpc.submit_order(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(api_response_of(&status).unwrap().error_code, "idempotency-unavailable");
    assert_eq!(log_state(&app).await, before, "a refused order was appended");

    let unkeyed = app.submit(&token(user), &resting_limit(), None).await;
    assert_eq!(unkeyed.status().as_u16(), 202);
    settled(&app).await;
}

async fn fail_open_submits_once_under_the_keys_order_id(db: TestDb) {
    // Proves ORDER_SERVICE_IDEMPOTENCY_FAIL_CLOSED=false: with the record unreadable the order is
    // accepted, and a retry with the same key gets the same order (its id follows from the key),
    // appended once; another order under the key is still refused.
    let app = spawn(&db, idempotency_down(false)).await;
    let user = Uuid::new_v4();
    let first = app.submit(&token(user), &resting_limit(), Some("retry-2")).await;
    assert_eq!(first.status().as_u16(), 202);
    let first: Value = first.json().await.unwrap();
    settled(&app).await;
    let again = app.submit(&token(user), &resting_limit(), Some("retry-2")).await;
    assert_eq!(again.status().as_u16(), 202);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["order_id"], first["order_id"], "{again}");
    let order_id: Uuid = first["order_id"].as_str().unwrap().parse().unwrap();
    let submitted = app
        .engine
        .store
        .store
        .read_all(0, common::http::LOG_EVENTS_MAX)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event_type == "OrderSubmitted" && e.stream_id.uuid_in("order") == Some(order_id))
        .count();
    assert_eq!(submitted, 1, "the retry appended a second order");
    let mut other = resting_limit();
    other["quantity"] = json!(2);
    let reused = app.submit(&token(user), &other, Some("retry-2")).await;
    assert_eq!(reused.status().as_u16(), 422);
}

async fn the_health_routes_report_breakers_and_limits(db: TestDb) {
    // Proves /health/circuit-breaker answers (no remote client: no breaker) and /health/rate-limiter
    // lists the bounds in force: the fixed ones and the per-user limiter's (the forced-refresh
    // interval; the test settings turn the rate limit off), with nobody held back yet.
    let app = spawn_app(&db).await;
    let breakers = app.get_json("/health/circuit-breaker", None).await;
    assert_eq!(breakers, json!({"status": "ok", "services": {}}));
    let limits = app.get_json("/health/rate-limiter", None).await;
    assert_eq!(limits["per_user_limiter"], true, "{limits}");
    assert_eq!(limits["users_limited"], json!([]), "{limits}");
    let refresh = limits["limits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "hard_refresh_interval")
        .cloned();
    assert_eq!(refresh.map(|l| l["limit"].clone()), Some(json!(60)), "{limits}");
    let names: Vec<&str> = limits["limits"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["name"].as_str())
        .collect();
    assert!(
        names.contains(&"http_body_bytes") && names.contains(&"signed_body_bytes"),
        "{limits}"
    );
}

/// What the stub services hold for the engine: the identity, API key and signing secret
/// `serve` is configured with.
const IDENTITY: &str = "order_service";
const API_KEY: &str = "order-service-internal-api-key";
const SIGNING_SECRET: &str = "order-service-signing-secret-0123456789";

/// Recomputes a request's seed 001 signature from scratch (the canonical string of
/// `clients::signing`, written out here rather than called) and checks every header.
fn signed_by_the_engine(request: &wiremock::Request) -> bool {
    let header = |name: &str| request.headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(identity), Some(key), Some(timestamp), Some(signature)) = (
        header("X-Service-Identity"),
        header("X-Internal-API-Key"),
        header("X-Request-Timestamp"),
        header("X-Request-Signature"),
    ) else {
        return false;
    };
    let Ok(timestamp_secs) = timestamp.parse::<i64>() else {
        return false;
    };
    let path_and_query = match request.url.query() {
        Some(query) => format!("{}?{query}", request.url.path()),
        None => request.url.path().to_owned(),
    };
    let canonical = [
        "OE-HMAC-SHA256-v1".to_owned(),
        timestamp.to_owned(),
        request.method.to_string(),
        path_and_query,
        hex::encode(Sha256::digest(&request.body)),
        identity.to_owned(),
        header("X-User-Id").unwrap_or_default().to_owned(),
    ]
    .join("\n");
    let mut mac = Hmac::<Sha256>::new_from_slice(SIGNING_SECRET.as_bytes()).unwrap();
    mac.update(canonical.as_bytes());
    let expected = hex::encode(mac.finalize().into_bytes());
    identity == IDENTITY
        && key == API_KEY
        && (Utc::now().timestamp() - timestamp_secs).abs() <= 300
        && signature == expected
        && request.headers.values().all(|v| {
            !v.as_bytes()
                .windows(SIGNING_SECRET.len())
                .any(|w| w == SIGNING_SECRET.as_bytes())
        })
}

/// The balance and account services of seed 004, answering only requests the engine signed
/// (anything else is a 401, which the engine would not retry into success).
struct SignedStub;

impl Respond for SignedStub {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        if !signed_by_the_engine(request) {
            return ResponseTemplate::new(401).set_body_json(json!({"error": "bad_signature"}));
        }
        let segments: Vec<&str> = request.url.path().trim_matches('/').split('/').collect();
        match segments[..] {
            ["api", "v1", "accounts", user] => {
                ResponseTemplate::new(200).set_body_json(json!({"user_id": user, "active": true, "can_trade": true}))
            }
            ["api", "v1", "balances", user, ..] => {
                let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
                let balance = json!({"user_id": user, "available": 100000, "reserved": 0});
                if segments.len() == 4 {
                    return ResponseTemplate::new(200).set_body_json(balance);
                }
                ResponseTemplate::new(200).set_body_json(json!({
                    "idempotency_key": body["idempotency_key"],
                    "amount": body.get("amount").cloned().unwrap_or(json!(0)),
                    "balance": balance,
                }))
            }
            _ => ResponseTemplate::new(404).set_body_json(json!({"error": "not_found"})),
        }
    }
}

#[actix_rt::test]
async fn outbound_calls_are_signed_as_serve_configures_them() {
    // Proves `serve`'s own wiring (Settings::from_lookup → Application::build) signs every call to
    // the balance and account services with the configured identity, key and secret: a stub that
    // recomputes each signature answers them all, the order's reservation goes through, and the
    // breakers of both clients show up in /health/circuit-breaker and /metrics.
    let db = TestDb::sqlite();
    let stub = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(SignedStub)
        .mount(&stub)
        .await;
    let (url, stub_url) = (db.url().to_owned(), stub.uri());
    let settings = Settings::from_lookup(|name| match name {
        "DATABASE_URL" => Some(url.clone()),
        "ORDER_ENGINE_HTTP_ADDR" | "ORDER_ENGINE_GRPC_ADDR" => Some("127.0.0.1:0".into()),
        "BALANCE_SERVICE_URL" | "ACCOUNT_SERVICE_URL" => Some(stub_url.clone()),
        "ORDER_ENGINE_SERVICE_IDENTITY" => Some(IDENTITY.into()),
        "INTERNAL_API_KEY" => Some(API_KEY.into()),
        "ORDER_ENGINE_SIGNING_SECRET" => Some(SIGNING_SECRET.into()),
        _ => None,
    })
    .unwrap();
    let opened = db.open_backend(None).await;
    let app = Application::builder(settings)
        .log(Arc::clone(&opened.store), Arc::clone(&opened.models))
        .frozen_market()
        .http_workers(1)
        .build()
        .await
        .unwrap();
    app.market().unwrap().set_price("AAPL", dec!(150.25)).unwrap();
    let address = format!("http://127.0.0.1:{}", app.port());
    actix_rt::spawn(app.run_until(std::future::pending()));
    let client = reqwest::Client::new();
    let user = Uuid::new_v4();
    let accepted = client
        .post(format!("{address}/api/v1/orders"))
        .bearer_auth(token(user))
        .json(&resting_limit())
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status().as_u16(), 202);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let requests = loop {
        let requests = stub.received_requests().await.unwrap_or_default();
        if requests.iter().any(|r| r.url.path().ends_with("/reserve")) {
            break requests;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reservation reached the stub: {requests:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        requests.iter().any(|r| r.url.path().contains("/accounts/")),
        "the account service was not asked"
    );
    for request in &requests {
        assert!(
            signed_by_the_engine(request),
            "unsigned or mis-signed: {} {}",
            request.method,
            request.url
        );
    }

    let breakers: Value = client
        .get(format!("{address}/health/circuit-breaker"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for service in ["balance", "accounts"] {
        assert_eq!(breakers["services"][service]["state"], "closed", "{breakers}");
        assert!(
            breakers["services"][service]["succeeded_total"].as_u64().unwrap() >= 1,
            "{breakers}"
        );
    }
    let metrics = client
        .get(format!("{address}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"service_client_circuit_breaker_state{service="balance"} 0"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"service_client_circuit_breaker_events_total{event="succeeded",service="accounts"}"#),
        "{metrics}"
    );
}
