//! The HTTP clients for the balance and account services against real sockets
//! (a wiremock server per test on 127.0.0.1): timeouts, retries, the circuit
//! breaker, error mapping, idempotency keys and request signing.
//!
//! Timeouts are tens of milliseconds so the file runs in a few seconds.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use order_engine::accounts::http::HttpAccountsClient;
use order_engine::accounts::{AccountError, Accounts};
use order_engine::balance::http::HttpBalanceClient;
use order_engine::balance::{BalanceError, BalanceOp, BalanceService, ReleaseOp};
use order_engine::clients::signing::{self, SignatureHeaders, SignedRequest};
use order_engine::clients::{BreakerConfig, BreakerState, RemoteServiceConfig, RetryPolicy, ServiceCredentials};
use order_engine::clock::ManualClock;
use rust_decimal_macros::dec;
use serde_json::json;
use uuid::Uuid;
use wiremock::matchers::{body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const USER: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0007);
const ORDER: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0042);
/// The engine's signing secret in the signing test: it must never be sent.
const SIGNING_SECRET: &str = "order-engine-signing-secret-0123456789";
/// Per-attempt timeout where the timeout is under test; the slow server waits far longer.
const TIMEOUT_SHORT: Duration = Duration::from_millis(60);
/// Per-attempt timeout elsewhere: the mock answers at once, so this costs no time,
/// and a loaded CI machine cannot turn a slow answer into an extra attempt.
const TIMEOUT_GENEROUS: Duration = Duration::from_secs(2);

fn config(base_url: &str, attempts_max: u32, failure_threshold: u32, open_for: Duration) -> RemoteServiceConfig {
    RemoteServiceConfig {
        timeout: TIMEOUT_GENEROUS,
        retry: RetryPolicy {
            attempts_max,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
        },
        breaker: BreakerConfig {
            failure_threshold,
            open_for,
        },
        ..RemoteServiceConfig::new(base_url)
    }
}

/// Three attempts, a breaker that will not open during the test.
fn patient(base_url: &str) -> RemoteServiceConfig {
    config(base_url, 3, 100, Duration::from_secs(30))
}

fn balance_path(suffix: &str) -> String {
    format!("/api/v1/balances/{USER}{suffix}")
}

fn reserve_op(amount: rust_decimal::Decimal) -> BalanceOp {
    BalanceOp {
        user_id: USER,
        order_id: ORDER,
        amount,
        idempotency_key: format!("{ORDER}:reserve"),
    }
}

fn balance_json() -> serde_json::Value {
    json!({"user_id": USER, "available": 90.25, "reserved": 10.5})
}

fn receipt_json(key: &str, amount: f64) -> serde_json::Value {
    json!({"idempotency_key": key, "amount": amount, "balance": balance_json()})
}

async fn received(server: &MockServer) -> Vec<Request> {
    server.received_requests().await.unwrap_or_default()
}

fn header_value<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
    request.headers.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn a_slow_server_is_retried_then_unavailable() {
    // Proves each attempt is cut at the timeout, every attempt is made, and the result is transient.
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(balance_path("")))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(balance_json())
                .set_delay(Duration::from_secs(2)),
        )
        .mount(&server)
        .await;
    let client = HttpBalanceClient::new(&RemoteServiceConfig {
        timeout: TIMEOUT_SHORT,
        ..patient(&server.uri())
    })
    .unwrap();

    let started = std::time::Instant::now();
    let error = client.get_balance(USER).await.unwrap_err();

    assert!(matches!(error, BalanceError::Unavailable(_)), "{error}");
    assert!(error.is_transient());
    assert!(error.to_string().contains("no answer within 60 ms"), "{error}");
    assert_eq!(received(&server).await.len(), 3);
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_server_that_is_down_is_unavailable() {
    // Proves a refused connection is a transient Unavailable, for both clients.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);

    let balance = HttpBalanceClient::new(&patient(&dead)).unwrap();
    let error = balance.reserve(reserve_op(dec!(10.5))).await.unwrap_err();
    assert!(matches!(error, BalanceError::Unavailable(_)), "{error}");

    let accounts = HttpAccountsClient::new(&patient(&dead)).unwrap();
    let error = accounts.status(USER).await.unwrap_err();
    assert!(matches!(error, AccountError::Unavailable(_)), "{error}");
    assert!(error.is_transient());
}

#[tokio::test]
async fn server_errors_are_retried_until_the_service_recovers() {
    // Proves 5xx answers are retried with the same idempotency key and the later receipt is returned.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(balance_path("/reserve")))
        .respond_with(ResponseTemplate::new(500).set_body_string("database is restarting"))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    let op = reserve_op(dec!(10.5));
    Mock::given(method("POST"))
        .and(path(balance_path("/reserve")))
        .respond_with(ResponseTemplate::new(200).set_body_json(receipt_json(&op.idempotency_key, 10.5)))
        .mount(&server)
        .await;
    let client = HttpBalanceClient::new(&patient(&server.uri())).unwrap();

    let receipt = client.reserve(op.clone()).await.unwrap();

    assert_eq!(receipt.amount, dec!(10.5));
    assert_eq!(receipt.balance.available, dec!(90.25));
    let requests = received(&server).await;
    assert_eq!(requests.len(), 3);
    for request in &requests {
        assert_eq!(
            header_value(request, "Idempotency-Key"),
            Some(op.idempotency_key.as_str())
        );
        assert_eq!(request.body, requests[0].body, "a retry must send the same body");
    }
    assert_eq!(client.breaker_state(), BreakerState::Closed);
}

#[tokio::test]
async fn persistent_server_errors_open_the_breaker_until_a_probe_succeeds() {
    // Proves the breaker opens, refuses calls without sending them, and a probe after open_for closes it.
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let open_for = Duration::from_millis(300);
    let client = HttpBalanceClient::new(&config(&server.uri(), 2, 4, open_for)).unwrap();

    for _ in 0..2 {
        let error = client.get_balance(USER).await.unwrap_err();
        assert!(matches!(error, BalanceError::Unavailable(_)), "{error}");
    }
    assert_eq!(received(&server).await.len(), 4);
    assert_eq!(client.breaker_state(), BreakerState::Open);

    for _ in 0..3 {
        let error = client.get_balance(USER).await.unwrap_err();
        assert!(error.to_string().contains("circuit open"), "{error}");
        assert!(error.is_transient());
    }
    assert_eq!(received(&server).await.len(), 4, "an open breaker must not send");

    tokio::time::sleep(open_for + Duration::from_millis(50)).await;
    assert_eq!(client.breaker_state(), BreakerState::HalfOpen);
    server.reset().await;
    Mock::given(method("GET"))
        .and(path(balance_path("")))
        .respond_with(ResponseTemplate::new(200).set_body_json(balance_json()))
        .mount(&server)
        .await;

    let balance = client.get_balance(USER).await.unwrap();

    assert_eq!(balance.reserved, dec!(10.5));
    assert_eq!(client.breaker_state(), BreakerState::Closed);
    assert_eq!(received(&server).await.len(), 1);
}

#[tokio::test]
async fn insufficient_funds_is_answered_once_and_not_retried() {
    // Proves a 422 refusal is permanent: one request, the typed error, the breaker untouched.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(balance_path("/reserve")))
        .respond_with(ResponseTemplate::new(422).set_body_json(json!({
            "error": "insufficient_funds", "available": "3.5", "requested": 10.5
        })))
        .mount(&server)
        .await;
    let client = HttpBalanceClient::new(&config(&server.uri(), 3, 1, Duration::from_secs(30))).unwrap();

    let error = client.reserve(reserve_op(dec!(10.5))).await.unwrap_err();

    assert_eq!(
        error,
        BalanceError::InsufficientFunds {
            available: dec!(3.5),
            requested: dec!(10.5)
        }
    );
    assert!(!error.is_transient());
    assert_eq!(received(&server).await.len(), 1);
    assert_eq!(client.breaker_state(), BreakerState::Closed);
}

#[tokio::test]
async fn deduct_refusals_name_the_reservation_problem() {
    // Proves no_reservation and exceeds_reservation reach the caller as their variants, unretried.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(balance_path("/deduct")))
        .respond_with(ResponseTemplate::new(409).set_body_json(json!({
            "error": "exceeds_reservation", "reserved": 5, "requested": 10.5
        })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(balance_path("/credit")))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": "invalid_amount"})))
        .mount(&server)
        .await;
    let client = HttpBalanceClient::new(&patient(&server.uri())).unwrap();

    let error = client.deduct(reserve_op(dec!(10.5))).await.unwrap_err();
    assert_eq!(
        error,
        BalanceError::ExceedsReservation {
            order_id: ORDER,
            reserved: dec!(5),
            requested: dec!(10.5)
        }
    );
    let error = client.credit(reserve_op(dec!(-1))).await.unwrap_err();
    assert_eq!(error, BalanceError::Rejected("HTTP 400: invalid_amount".into()));
    assert_eq!(received(&server).await.len(), 2);
}

/// A balance client signing as `order_engine` on a clock that stands still; its
/// credentials and the time, to verify what it sent.
// Outside a #[test] fn the unwrap lint applies; a broken set-up failing the test is the intent.
#[allow(clippy::unwrap_used)]
fn signed_client(server: &MockServer) -> (HttpBalanceClient, ServiceCredentials, chrono::DateTime<Utc>) {
    let now = Utc.with_ymd_and_hms(2026, 3, 2, 15, 0, 0).single().unwrap();
    let credentials = ServiceCredentials::new("order_engine", "test-key", SIGNING_SECRET);
    let client = HttpBalanceClient::new(&patient(&server.uri()).with_credentials(credentials.clone()))
        .unwrap()
        .with_clock(Arc::new(ManualClock::new(now)));
    (client, credentials, now)
}

#[tokio::test]
async fn requests_carry_the_idempotency_key_and_a_signature_verify_accepts() {
    // Proves the wire format of a signed POST and GET: body, Idempotency-Key, the four signing headers
    // (the query string covered), and that the signing secret itself never goes on the wire.
    let server = MockServer::start().await;
    let op = reserve_op(dec!(10.5));
    Mock::given(method("POST"))
        .and(path(balance_path("/release")))
        .and(header("Idempotency-Key", format!("{ORDER}:release").as_str()))
        .and(body_json(
            json!({"order_id": ORDER, "idempotency_key": format!("{ORDER}:release")}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(receipt_json(&format!("{ORDER}:release"), 0.0)))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(balance_path("/reserve")))
        .and(body_json(
            json!({"order_id": ORDER, "amount": 10.5, "idempotency_key": op.idempotency_key}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(receipt_json(&op.idempotency_key, 10.5)))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(balance_path("/sufficient-funds")))
        .and(query_param("amount", "10.50000001"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"sufficient": true})))
        .mount(&server)
        .await;
    let (client, credentials, now) = signed_client(&server);

    client.reserve(op.clone()).await.unwrap();
    let release = ReleaseOp {
        user_id: USER,
        order_id: ORDER,
        idempotency_key: format!("{ORDER}:release"),
    };
    assert_eq!(client.release(release).await.unwrap().amount, dec!(0));
    assert!(client.sufficient_funds(USER, dec!(10.50000001)).await.unwrap());

    let requests = received(&server).await;
    assert_eq!(requests.len(), 3);
    let registered = |identity: &str| (identity == "order_engine").then_some(&credentials);
    for request in &requests {
        let path_and_query = match request.url.query() {
            Some(query) => format!("{}?{query}", request.url.path()),
            None => request.url.path().to_owned(),
        };
        let headers = SignatureHeaders::from_lookup(|name| header_value(request, name));
        assert_eq!(headers.timestamp, Some(now.timestamp().to_string().as_str()));
        assert_eq!(headers.api_key, Some("test-key"));
        for (name, value) in &request.headers {
            let value = value.to_str().unwrap_or_default();
            assert!(!value.contains(SIGNING_SECRET), "{name} carries the signing secret");
        }
        let inbound = SignedRequest {
            method: request.method.as_str(),
            path_and_query: &path_and_query,
            body: &request.body,
            user_id: None,
        };
        let verified = signing::verify(&headers, &inbound, registered, now.timestamp());
        assert_eq!(verified.map(|v| v.identity), Ok("order_engine"), "{path_and_query}");
        let tampered = SignedRequest { body: b"{}", ..inbound };
        assert!(signing::verify(&headers, &tampered, registered, now.timestamp()).is_err());
        if request.url.query().is_some() {
            let other_query = path_and_query.replace("10.50000001", "99");
            let requery = SignedRequest {
                path_and_query: &other_query,
                ..inbound
            };
            assert!(signing::verify(&headers, &requery, registered, now.timestamp()).is_err());
        }
    }
    assert!(requests[2]
        .url
        .query()
        .is_some_and(|q| q.contains("amount=10.50000001")));
}

#[tokio::test]
async fn retries_within_one_second_are_signed_distinctly() {
    // Proves a retry is a new request to the receiver's replay check: with the clock standing still,
    // each attempt after a 503 carries a later timestamp and another signature, and each verifies.
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(balance_json()))
        .mount(&server)
        .await;
    let (client, credentials, now) = signed_client(&server);

    client.get_balance(USER).await.unwrap();

    let requests = received(&server).await;
    assert_eq!(requests.len(), 3);
    let registered = |identity: &str| (identity == "order_engine").then_some(&credentials);
    let mut signatures = Vec::new();
    for (i, request) in requests.iter().enumerate() {
        let headers = SignatureHeaders::from_lookup(|name| header_value(request, name));
        let expected_timestamp = now.timestamp() + i64::try_from(i).unwrap();
        assert_eq!(headers.timestamp, Some(expected_timestamp.to_string().as_str()));
        let inbound = SignedRequest {
            method: "GET",
            path_and_query: request.url.path(),
            body: b"",
            user_id: None,
        };
        assert!(signing::verify(&headers, &inbound, registered, now.timestamp()).is_ok());
        signatures.push(headers.signature.unwrap().to_owned());
    }
    signatures.dedup();
    assert_eq!(signatures.len(), 3, "a retry repeated a signature");
}

#[tokio::test]
async fn unsigned_clients_send_no_signing_headers() {
    // Proves credentials are opt-in: without them no key or signature leaves the process.
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(balance_json()))
        .mount(&server)
        .await;
    let client = HttpBalanceClient::new(&patient(&server.uri())).unwrap();

    client.get_balance(USER).await.unwrap();

    let requests = received(&server).await;
    assert_eq!(requests.len(), 1);
    assert!(header_value(&requests[0], "X-Request-Signature").is_none());
    assert!(header_value(&requests[0], "X-Internal-API-Key").is_none());
}

#[tokio::test]
async fn the_account_client_maps_404_to_not_found_and_reads_the_status() {
    // Proves an unknown account is NotFound (not retried) and a known one decodes.
    let server = MockServer::start().await;
    let known = Uuid::from_u128(1);
    Mock::given(method("GET"))
        .and(path(format!("/api/v1/accounts/{known}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "user_id": known, "active": true, "can_trade": false
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/api/v1/accounts/{USER}")))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"error": "account_not_found"})))
        .mount(&server)
        .await;
    let client = HttpAccountsClient::new(&patient(&server.uri())).unwrap();

    assert_eq!(client.status(USER).await.unwrap_err(), AccountError::NotFound(USER));
    assert_eq!(received(&server).await.len(), 1);

    let status = client.status(known).await.unwrap();
    assert!(status.active && !status.can_trade);
    assert_eq!(client.breaker_state(), BreakerState::Closed);
}
