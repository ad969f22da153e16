//! The gRPC order service against the real app (engine, store, projection)
//! built through the composition root with HTTP and gRPC both on port 0, on
//! each backend, called through a tonic client generated from the same proto:
//! every RPC, the same order seen identically over HTTP and gRPC, every
//! refusal with its code, its `api_response` (the HTTP problem's slug and
//! status) and an unchanged log, the Idempotency-Key, health and reflection.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::engine::eventually;
use common::http::{log_state, settled, spawn_app_with_auth, test_service, token, TestApp, SETTLE_TIMEOUT};
use common::TestDb;
use order_engine::auth::{Authenticator, InternalVerifier, JwtConfig, JwtVerifier, ServiceKeys};
use order_engine::clients::signing::{self, SignedRequest};
use order_engine::clients::ServiceCredentials;
use order_engine::clock::SystemClock;
use order_engine::grpc::pb::order_service_client::OrderServiceClient;
use order_engine::grpc::pb::{
    ApiResponse, CancelOrderRequest, GetOrderDetailsRequest, GetOrderHistoryRequest, GetOrderStatusRequest,
    SubmitOrderRequest,
};
use order_engine::grpc::status::api_response_of;
use prost::Message;
use rust_decimal_macros::dec;
use serde_json::{json, Value};
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic::transport::Channel;
use tonic::{Code, Request};
use uuid::Uuid;

on_every_backend_in_actix!(
    every_rpc_answers_and_http_says_the_same,
    refusals_carry_the_http_slug_and_leave_the_log_unchanged,
    a_signed_service_call_acts_for_its_user,
    an_idempotency_key_replays_the_first_answer_and_refuses_another_request,
    health_is_serving_when_ready_and_reflection_answers,
);

const SUBMIT_PATH: &str = "/monolith.OrderService/SubmitOrder";

fn risk_manager() -> ServiceCredentials {
    ServiceCredentials::new(
        "risk_manager",
        "risk-manager-key",
        "risk-manager-signing-secret-0123456789",
    )
}

/// The app trusting development tokens, algo_engine (place, modify, cancel)
/// and risk_manager (cancel, positions), as seed 001's table has them.
async fn spawn(db: &TestDb) -> TestApp {
    let auth = Authenticator::new(
        JwtVerifier::new(&JwtConfig::development(None)).unwrap(),
        InternalVerifier::new(
            ServiceKeys::new([test_service(), risk_manager()]),
            Arc::new(SystemClock),
        ),
    );
    let app = spawn_app_with_auth(db, auth).await;
    app.engine.market.set_price("AAPL", dec!(150.25)).unwrap();
    app
}

async fn client(app: &TestApp) -> OrderServiceClient<Channel> {
    OrderServiceClient::connect(app.grpc_address.clone()).await.unwrap()
}

/// `message` with `authorization: Bearer <token>`.
fn as_user<T>(user: Uuid, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {}", token(user)).parse().unwrap());
    request
}

/// `message` signed by `credentials` for `user` over `path` and its encoded bytes, as seed 001's headers in metadata.
fn signed<T: Message>(credentials: &ServiceCredentials, path: &str, user: Uuid, message: T) -> Request<T> {
    let bytes = message.encode_to_vec();
    let user_text = user.to_string();
    let headers = signing::sign(
        credentials,
        Utc::now().timestamp(),
        &SignedRequest {
            method: "POST",
            path_and_query: path,
            body: &bytes,
            user_id: Some(&user_text),
        },
    );
    let mut request = Request::new(message);
    for (name, value) in headers {
        let key = MetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes()).unwrap();
        request
            .metadata_mut()
            .insert(key, MetadataValue::try_from(value).unwrap());
    }
    request.metadata_mut().insert("x-user-id", user_text.parse().unwrap());
    request
}

fn market_buy(user: Uuid, quantity: f64) -> SubmitOrderRequest {
    SubmitOrderRequest {
        user_id: user.to_string(),
        symbol: "AAPL".into(),
        order_type: "MARKET".into(),
        order_side: "BUY".into(),
        quantity,
        price: None,
        stop_price: None,
    }
}

/// A LIMIT buy far below the market: it rests, so it can be cancelled.
fn resting_limit(user: Uuid) -> SubmitOrderRequest {
    SubmitOrderRequest {
        order_type: "LIMIT".into(),
        price: Some(100.0),
        ..market_buy(user, 1.0)
    }
}

/// Asserts a refusal's code and its `api_response` (failed, the HTTP status, the slug, a sentence).
fn assert_refused(case: &str, status: &tonic::Status, code: Code, http_status: i32, slug: &str) -> ApiResponse {
    assert_eq!(status.code(), code, "{case}: {status:?}");
    let api = api_response_of(status).unwrap_or_else(|| panic!("{case}: no APIResponse in the details: {status:?}"));
    assert!(!api.success, "{case}");
    assert_eq!(api.status_code, http_status, "{case}: {api:?}");
    assert_eq!(api.error_code, slug, "{case}: {api:?}");
    assert!(!api.message.is_empty() && !api.request_id.is_empty(), "{case}: {api:?}");
    api
}

async fn http_get(app: &TestApp, user: Uuid, path: &str) -> reqwest::Response {
    app.client
        .get(format!("{}{path}", app.address))
        .bearer_auth(token(user))
        .send()
        .await
        .unwrap()
}

/// The problem slug HTTP answers `body` with.
async fn http_slug(app: &TestApp, user: Uuid, body: &Value) -> String {
    let response = app.submit(&token(user), body, None).await;
    let problem: Value = response.json().await.unwrap();
    problem["type"]
        .as_str()
        .unwrap()
        .trim_start_matches("urn:order-engine:problem:")
        .to_owned()
}

fn number(value: &Value) -> f64 {
    value.to_string().parse().unwrap()
}

async fn every_rpc_answers_and_http_says_the_same(db: TestDb) {
    // Proves each RPC answers with api_response success, that an order submitted over gRPC reads
    // identically over HTTP (details, status, history), that a cancel over gRPC shows over HTTP,
    // and that the calls are counted in the shared /metrics.
    let app = spawn(&db).await;
    let mut grpc = client(&app).await;
    let user = Uuid::new_v4();

    let submitted = grpc
        .submit_order(as_user(user, market_buy(user, 10.0)))
        .await
        .unwrap()
        .into_inner();
    let api = submitted.api_response.clone().unwrap();
    assert!(
        api.success && api.status_code == 202 && api.error_code.is_empty(),
        "{api:?}"
    );
    assert_eq!(submitted.status, "PENDING");
    assert_eq!(submitted.market_price, Some(150.25));
    let order_id = submitted.order_id.clone();
    let status_path = format!("/api/v1/orders/{order_id}/status");
    eventually("executed", SETTLE_TIMEOUT, || async {
        let status: Value = http_get(&app, user, &status_path).await.json().await.unwrap();
        status["status"] == "EXECUTED"
    })
    .await;

    let details = grpc
        .get_order_details(as_user(
            user,
            GetOrderDetailsRequest {
                order_id: order_id.clone(),
                user_id: user.to_string(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(details.api_response.as_ref().unwrap().status_code, 200);
    let order = details.order.unwrap();
    let http: Value = http_get(&app, user, &format!("/api/v1/orders/{order_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(http["api_response"]["success"], true, "{http}");
    assert_eq!(http["api_response"]["status_code"], 200, "{http}");
    let same = &http["order"];
    for (field, grpc_text) in [
        ("order_id", &order.order_id),
        ("user_id", &order.user_id),
        ("symbol", &order.symbol),
        ("order_type", &order.order_type),
        ("order_side", &order.order_side),
        ("status", &order.status),
        ("created_at", &order.created_at),
        ("updated_at", &order.updated_at),
    ] {
        assert_eq!(same[field].as_str(), Some(grpc_text.as_str()), "{field}: {same}");
    }
    assert_eq!(same["executed_at"].as_str(), order.executed_at.as_deref(), "{same}");
    assert_eq!(number(&same["quantity"]), order.quantity);
    assert_eq!(Some(number(&same["execution_price"])), order.execution_price);
    assert_eq!(Some(number(&same["execution_value"])), order.execution_value);
    assert_eq!(order.execution_value, Some(1502.5));
    assert_eq!(number(&same["estimated_value"]), order.estimated_value);
    assert_eq!(
        Some(number(&same["market_price_at_submission"])),
        order.market_price_at_submission
    );

    let status = grpc
        .get_order_status(as_user(
            user,
            GetOrderStatusRequest {
                order_id: order_id.clone(),
                user_id: user.to_string(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let http: Value = http_get(&app, user, &status_path).await.json().await.unwrap();
    assert_eq!(http["api_response"]["success"], true, "{http}");
    assert_eq!(
        (
            status.order_id.as_str(),
            status.status.as_str(),
            status.status_message.as_str(),
            status.updated_at.as_str()
        ),
        (
            http["order_id"].as_str().unwrap(),
            http["status"].as_str().unwrap(),
            http["status_message"].as_str().unwrap(),
            http["updated_at"].as_str().unwrap()
        )
    );

    // A resting order, cancelled over gRPC, is cancelled over HTTP too.
    let resting = grpc
        .submit_order(as_user(user, resting_limit(user)))
        .await
        .unwrap()
        .into_inner();
    let resting_status = format!("/api/v1/orders/{}/status", resting.order_id);
    eventually("resting", SETTLE_TIMEOUT, || async {
        let status: Value = http_get(&app, user, &resting_status).await.json().await.unwrap();
        status["status"] == "PROCESSING"
    })
    .await;
    let cancelled = grpc
        .cancel_order(as_user(
            user,
            CancelOrderRequest {
                order_id: resting.order_id.clone(),
                user_id: user.to_string(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.status, "CANCELLED");
    assert!(cancelled.api_response.unwrap().success);
    let http: Value = http_get(&app, user, &resting_status).await.json().await.unwrap();
    assert_eq!(http["status"], "CANCELLED");

    eventually("both in the history, one cancelled", SETTLE_TIMEOUT, || async {
        let page: Value = http_get(&app, user, "/api/v1/orders/history")
            .await
            .json()
            .await
            .unwrap();
        let cancelled: Value = http_get(&app, user, "/api/v1/orders/history?status=CANCELLED")
            .await
            .json()
            .await
            .unwrap();
        page["total_count"] == 2 && cancelled["total_count"] == 1
    })
    .await;
    let history = grpc
        .get_order_history(as_user(
            user,
            GetOrderHistoryRequest {
                user_id: user.to_string(),
                limit: Some(10),
                offset: None,
                status: None,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let http: Value = http_get(&app, user, "/api/v1/orders/history?limit=10")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(http["api_response"]["success"], true, "{http}");
    assert_eq!((history.total_count, history.limit, history.offset), (2, 10, 0));
    let grpc_ids: Vec<&str> = history.orders.iter().map(|o| o.order_id.as_str()).collect();
    let http_ids: Vec<&str> = http["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["order_id"].as_str().unwrap())
        .collect();
    assert_eq!(grpc_ids, http_ids);
    let cancelled_only = grpc
        .get_order_history(as_user(
            user,
            GetOrderHistoryRequest {
                user_id: user.to_string(),
                limit: None,
                offset: None,
                status: Some("CANCELLED".into()),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled_only.total_count, 1);
    assert_eq!(cancelled_only.limit, 20, "the HTTP default page size");

    let metrics = app.metrics.render();
    let calls = metric(
        &metrics,
        "order_service_grpc_requests_total",
        &[r#"method="SubmitOrder""#, r#"code="OK""#],
    );
    assert_eq!(calls, Some(2.0), "{metrics}");
    let timed = metric(
        &metrics,
        "order_service_grpc_request_duration_seconds_count",
        &[r#"method="GetOrderHistory""#],
    );
    assert_eq!(timed, Some(2.0), "{metrics}");
}

/// The value of the series of `name` whose labels include each of `labels`, from Prometheus text.
fn metric(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .find(|line| labels.iter().all(|label| line.contains(label)))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

async fn refusals_carry_the_http_slug_and_leave_the_log_unchanged(db: TestDb) {
    // Proves every refusal the issue lists answers with its gRPC code and the HTTP problem's
    // status and slug in api_response, the same slug HTTP gives the same order, and that none
    // of them changes the log.
    let app = spawn(&db).await;
    let mut grpc = client(&app).await;
    let (user, other) = (Uuid::new_v4(), Uuid::new_v4());
    // Another user's resting order, and a log at rest.
    let theirs = grpc
        .submit_order(as_user(other, resting_limit(other)))
        .await
        .unwrap()
        .into_inner();
    let before = settled(&app).await;

    let details = |user: Uuid, order_id: &str| GetOrderDetailsRequest {
        order_id: order_id.to_owned(),
        user_id: user.to_string(),
    };
    let refused = grpc
        .get_order_details(as_user(user, details(user, &Uuid::new_v4().to_string())))
        .await
        .unwrap_err();
    assert_refused("unknown order", &refused, Code::NotFound, 404, "order-not-found");
    let refused = grpc
        .get_order_details(as_user(user, details(user, &theirs.order_id)))
        .await
        .unwrap_err();
    assert_refused("another user's order", &refused, Code::NotFound, 404, "order-not-found");
    let refused = grpc
        .cancel_order(as_user(
            user,
            CancelOrderRequest {
                order_id: theirs.order_id.clone(),
                user_id: user.to_string(),
            },
        ))
        .await
        .unwrap_err();
    assert_refused(
        "cancelling another user's order",
        &refused,
        Code::NotFound,
        404,
        "order-not-found",
    );

    let mut bad_token = Request::new(market_buy(user, 1.0));
    bad_token
        .metadata_mut()
        .insert("authorization", "Bearer not.a.token".parse().unwrap());
    let refused = grpc.submit_order(bad_token).await.unwrap_err();
    assert_refused("bad token", &refused, Code::Unauthenticated, 401, "token-invalid");
    let refused = grpc
        .submit_order(Request::new(market_buy(user, 1.0)))
        .await
        .unwrap_err();
    assert_refused(
        "no credentials",
        &refused,
        Code::Unauthenticated,
        401,
        "missing-credentials",
    );

    // Signed over one quantity, sent with another: the bytes are what is signed.
    let mut tampered = signed(&test_service(), SUBMIT_PATH, user, market_buy(user, 1.0));
    tampered.get_mut().quantity = 2.0;
    let refused = grpc.submit_order(tampered).await.unwrap_err();
    assert_refused(
        "bad signature",
        &refused,
        Code::Unauthenticated,
        401,
        "signature-invalid",
    );
    // Signed for another method's path.
    let elsewhere = signed(
        &test_service(),
        "/monolith.OrderService/CancelOrder",
        user,
        market_buy(user, 1.0),
    );
    let refused = grpc.submit_order(elsewhere).await.unwrap_err();
    assert_refused(
        "signature for another method",
        &refused,
        Code::Unauthenticated,
        401,
        "signature-invalid",
    );
    // risk_manager may cancel but not place (seed 001's table).
    let forbidden = signed(&risk_manager(), SUBMIT_PATH, user, market_buy(user, 1.0));
    let refused = grpc.submit_order(forbidden).await.unwrap_err();
    assert_refused(
        "forbidden service",
        &refused,
        Code::PermissionDenied,
        403,
        "permission-denied",
    );

    let no_price = SubmitOrderRequest {
        order_type: "LIMIT".into(),
        ..market_buy(user, 1.0)
    };
    let refused = grpc.submit_order(as_user(user, no_price)).await.unwrap_err();
    let api = assert_refused(
        "LIMIT without price",
        &refused,
        Code::InvalidArgument,
        422,
        "order-rejected",
    );
    let http = json!({"symbol": "AAPL", "order_type": "LIMIT", "order_side": "BUY", "quantity": 1});
    assert_eq!(
        http_slug(&app, user, &http).await,
        api.error_code,
        "HTTP and gRPC disagree"
    );

    let refused = grpc
        .submit_order(as_user(user, market_buy(user, 1.123456789)))
        .await
        .unwrap_err();
    let api = assert_refused(
        "9 decimal places",
        &refused,
        Code::InvalidArgument,
        422,
        "invalid-quantity",
    );
    let http = json!({"symbol": "AAPL", "order_type": "MARKET", "order_side": "BUY", "quantity": 1.123456789});
    assert_eq!(
        http_slug(&app, user, &http).await,
        api.error_code,
        "HTTP and gRPC disagree"
    );
    for not_finite in [f64::NAN, f64::INFINITY] {
        let refused = grpc
            .submit_order(as_user(user, market_buy(user, not_finite)))
            .await
            .unwrap_err();
        assert_refused("not finite", &refused, Code::InvalidArgument, 422, "invalid-quantity");
    }

    // The token is the user's, the message names someone else.
    let refused = grpc
        .submit_order(as_user(user, market_buy(other, 1.0)))
        .await
        .unwrap_err();
    assert_refused(
        "user_id mismatch",
        &refused,
        Code::PermissionDenied,
        403,
        "user-id-not-caller",
    );
    let refused = grpc
        .cancel_order(as_user(
            user,
            CancelOrderRequest {
                order_id: theirs.order_id.clone(),
                user_id: other.to_string(),
            },
        ))
        .await
        .unwrap_err();
    assert_refused(
        "user_id mismatch on cancel",
        &refused,
        Code::PermissionDenied,
        403,
        "user-id-not-caller",
    );
    // A signed service acting for `user` cannot name another user in the message either.
    let redirected = signed(&test_service(), SUBMIT_PATH, user, market_buy(other, 1.0));
    let refused = grpc.submit_order(redirected).await.unwrap_err();
    assert_refused(
        "service user_id mismatch",
        &refused,
        Code::PermissionDenied,
        403,
        "user-id-not-caller",
    );

    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(log_state(&app).await, before, "a refused call changed the log");
    let status: Value = http_get(&app, other, &format!("/api/v1/orders/{}/status", theirs.order_id))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["status"], "PROCESSING", "the other user's order was touched");
    let metrics = app.metrics.render();
    let denied = metric(
        &metrics,
        "order_service_grpc_requests_total",
        &[r#"method="SubmitOrder""#, r#"code="PERMISSION_DENIED""#],
    );
    assert_eq!(denied, Some(3.0), "{metrics}");
}

async fn a_signed_service_call_acts_for_its_user(db: TestDb) {
    // Proves the positive control of the signature matrix: algo_engine's signed SubmitOrder,
    // acting for a user, is accepted and the order is that user's.
    let app = spawn(&db).await;
    let mut grpc = client(&app).await;
    let user = Uuid::new_v4();
    let before = log_state(&app).await;
    let submitted = grpc
        .submit_order(signed(&test_service(), SUBMIT_PATH, user, market_buy(user, 2.0)))
        .await
        .unwrap()
        .into_inner();
    assert!(submitted.api_response.unwrap().success);
    assert_ne!(log_state(&app).await, before, "the accepted call changed nothing");
    let details: Value = http_get(&app, user, &format!("/api/v1/orders/{}", submitted.order_id))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(details["order"]["user_id"], user.to_string(), "{details}");
}

async fn an_idempotency_key_replays_the_first_answer_and_refuses_another_request(db: TestDb) {
    // Proves the `idempotency-key` metadata has the HTTP header's semantics: the same key and
    // request get the first answer (one order), another request with the key is ALREADY_EXISTS
    // with HTTP's 422 slug, and the key is the same key over HTTP.
    let app = spawn(&db).await;
    let mut grpc = client(&app).await;
    let user = Uuid::new_v4();
    let with_key = |message: SubmitOrderRequest| {
        let mut request = as_user(user, message);
        request
            .metadata_mut()
            .insert("idempotency-key", "client-7".parse().unwrap());
        request
    };
    let first = grpc
        .submit_order(with_key(resting_limit(user)))
        .await
        .unwrap()
        .into_inner();
    let again = grpc
        .submit_order(with_key(resting_limit(user)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, first, "a replay is the first answer, field for field");

    let other = SubmitOrderRequest {
        quantity: 2.0,
        ..resting_limit(user)
    };
    let refused = grpc.submit_order(with_key(other)).await.unwrap_err();
    assert_refused(
        "key reused",
        &refused,
        Code::AlreadyExists,
        422,
        "idempotency-key-reused",
    );

    let http = app
        .submit(
            &token(user),
            &json!({"symbol": "AAPL", "order_type": "LIMIT", "order_side": "BUY", "quantity": 1, "price": 100}),
            Some("client-7"),
        )
        .await;
    assert_eq!(http.status(), 202);
    assert_eq!(http.headers()["idempotent-replayed"], "true");
    let http: Value = http.json().await.unwrap();
    assert_eq!(http["order_id"], first.order_id.as_str());

    let mut bad_key = as_user(user, resting_limit(user));
    bad_key
        .metadata_mut()
        .insert("idempotency-key", "has space".parse().unwrap());
    let refused = grpc.submit_order(bad_key).await.unwrap_err();
    assert_refused(
        "bad key",
        &refused,
        Code::InvalidArgument,
        400,
        "invalid-idempotency-key",
    );

    eventually("one order", SETTLE_TIMEOUT, || async {
        let page: Value = http_get(&app, user, "/api/v1/orders/history")
            .await
            .json()
            .await
            .unwrap();
        page["total_count"] == 1
    })
    .await;
}

async fn health_is_serving_when_ready_and_reflection_answers(db: TestDb) {
    // Proves grpc.health.v1 reports SERVING for the server and the order service once ready,
    // and that reflection lists the service and serves its proto.
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{health_check_response::ServingStatus, HealthCheckRequest};
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let app = spawn(&db).await;
    let channel = Channel::from_shared(app.grpc_address.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "monolith.OrderService"] {
        eventually("SERVING", SETTLE_TIMEOUT, || {
            let mut health = health.clone();
            async move {
                let answer = health
                    .check(HealthCheckRequest {
                        service: service.into(),
                    })
                    .await
                    .unwrap()
                    .into_inner();
                answer.status == ServingStatus::Serving as i32
            }
        })
        .await;
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "monolith.Nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    let mut reflection = ServerReflectionClient::new(channel);
    let ask = |request: MessageRequest| {
        tokio_stream_once(ServerReflectionRequest {
            host: String::new(),
            message_request: Some(request),
        })
    };
    let mut answers = reflection
        .server_reflection_info(ask(MessageRequest::ListServices(String::new())))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) = answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("not a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"monolith.OrderService".to_owned()), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health".to_owned()), "{names:?}");
    let mut answers = reflection
        .server_reflection_info(ask(MessageRequest::FileContainingSymbol(
            "monolith.OrderService".into(),
        )))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::FileDescriptorResponse(files)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("not a file descriptor");
    };
    let file = prost_types::FileDescriptorProto::decode(files.file_descriptor_proto[0].as_slice()).unwrap();
    assert_eq!(file.package.as_deref(), Some("monolith"));
    let methods: Vec<&str> = file.service[0].method.iter().map(|m| m.name()).collect();
    assert_eq!(
        methods,
        [
            "SubmitOrder",
            "GetOrderDetails",
            "GetOrderStatus",
            "CancelOrder",
            "GetOrderHistory"
        ]
    );
}

/// A stream of one message (a client-streaming call's request).
fn tokio_stream_once<T: Send + 'static>(item: T) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::iter([item])
}
