//! The security negatives against the real app (engine, store, projection) on
//! 127.0.0.1:0, on each backend: the JWT matrix, the HMAC matrix of seed 001's
//! signed calls, and other users' orders. Every refusal is checked for its
//! status, its problem+json type AND for leaving the event log exactly as it
//! was (event count and head position); a positive control in each test shows
//! that the same request, when valid, does change the log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::engine::eventually;
use common::http::{
    log_state, settled, spawn_app_with_auth, test_service, token, TestApp, SETTLE_TIMEOUT, TEST_SERVICE_KEY,
    TEST_SERVICE_SECRET,
};
use common::TestDb;
use hmac::{Hmac, Mac};
use order_engine::auth::{
    jwt, Authenticator, InternalVerifier, JwtAlgorithm, JwtConfig, JwtVerifier, ServiceKeys, HEADER_USER_ID,
};
use order_engine::clients::signing::{self, SignedRequest};
use order_engine::clients::{Call, RemoteService, RemoteServiceConfig, ServiceCredentials};
use order_engine::clock::SystemClock;
use reqwest::Method;
use rust_decimal_macros::dec;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

on_every_backend_in_actix!(
    the_jwt_matrix_is_refused_and_leaves_the_log_unchanged,
    an_hs256_token_is_refused_by_an_rs256_server,
    the_hmac_matrix_is_refused_and_leaves_the_log_unchanged,
    a_signed_call_cannot_be_redirected_to_another_user,
    what_was_sent_is_not_enough_to_sign_another_request,
    the_query_string_is_signed,
    the_outbound_signer_is_accepted_inbound,
    another_users_order_is_404_and_untouched,
);

const ORDERS: &str = "/api/v1/orders";
const RSA_PRIVATE_PEM: &str = include_str!("fixtures/jwt_rs256_test_private.pem");
const RSA_PUBLIC_PEM: &str = include_str!("fixtures/jwt_rs256_test_public.pem");
/// Past the 300 s window by a margin, so a second ticking over during the
/// request cannot bring it back inside (the exact edge is a unit test's).
const SKEW_OVER_SECS: i64 = 310;
/// `{"alg":"none","typ":"JWT"}`, base64url.
const ALG_NONE_HEADER: &str = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";

fn risk_manager() -> ServiceCredentials {
    ServiceCredentials::new(
        "risk_manager",
        "risk-manager-key",
        "risk-manager-signing-secret-0123456789",
    )
}

fn user_interface() -> ServiceCredentials {
    ServiceCredentials::new(
        "user_interface",
        "user-interface-key",
        "user-interface-signing-secret-0123456789",
    )
}

/// algo_engine (place, modify, cancel), risk_manager (cancel, positions) and
/// user_interface (place, read, cancel), as seed 001's table has them.
fn registry() -> ServiceKeys {
    ServiceKeys::new([test_service(), risk_manager(), user_interface()])
}

async fn spawn(db: &TestDb, jwt: &JwtConfig) -> TestApp {
    let auth = Authenticator::new(
        JwtVerifier::new(jwt).unwrap(),
        InternalVerifier::new(registry(), Arc::new(SystemClock)),
    );
    let app = spawn_app_with_auth(db, auth).await;
    // A LIMIT buy at 100 rests below this, so a positive control settles once reserved.
    app.engine.market.set_price("AAPL", dec!(150)).unwrap();
    app
}

fn dev_jwt() -> JwtConfig {
    JwtConfig::development(None)
}

/// A LIMIT buy that rests: accepting it appends events, then the log goes quiet.
fn resting_order() -> String {
    json!({"symbol": "AAPL", "order_type": "LIMIT", "order_side": "BUY", "quantity": 1, "price": 100}).to_string()
}

/// Sends `request`, asserts its status and problem type, and that the log is
/// exactly as it was before.
async fn refused(app: &TestApp, case: &str, request: reqwest::RequestBuilder, status: u16, slug: &str) -> Value {
    let before = log_state(app).await;
    let response = request.send().await.unwrap();
    assert_eq!(response.status().as_u16(), status, "{case}: status");
    assert_eq!(
        response.headers().get("content-type").map(|v| v.to_str().unwrap()),
        Some("application/problem+json"),
        "{case}"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["type"],
        format!("urn:order-engine:problem:{slug}"),
        "{case}: {body}"
    );
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()), "{case}: {body}");
    // A refused request appends nothing, now or a moment later.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(log_state(app).await, before, "{case}: the log changed");
    body
}

fn post(app: &TestApp, body: &str) -> reqwest::RequestBuilder {
    app.client
        .post(format!("{}{ORDERS}", app.address))
        .header("Content-Type", "application/json")
        .body(body.to_owned())
}

/// Seed 001's four headers for a request signed by `credentials` at
/// `timestamp`, acting for `user` (the X-User-Id line of the signature).
fn sign_for(
    credentials: &ServiceCredentials,
    timestamp: i64,
    method: &Method,
    path_and_query: &str,
    body: &str,
    user: Option<Uuid>,
) -> [(&'static str, String); 4] {
    let user = user.map(|u| u.to_string());
    let signed = SignedRequest {
        method: method.as_str(),
        path_and_query,
        body: body.as_bytes(),
        user_id: user.as_deref(),
    };
    signing::sign(credentials, timestamp, &signed)
}

fn with_headers(
    mut request: reqwest::RequestBuilder,
    headers: impl IntoIterator<Item = (&'static str, String)>,
) -> reqwest::RequestBuilder {
    for (name, value) in headers {
        request = request.header(name, value);
    }
    request
}

/// A request signed by `credentials` at `timestamp` for `signed_user`, sent
/// with `X-User-Id: sent_user` (they differ only when a test redirects it).
#[allow(clippy::too_many_arguments)]
fn signed_as(
    app: &TestApp,
    credentials: &ServiceCredentials,
    timestamp: i64,
    method: Method,
    path_and_query: &str,
    body: &str,
    signed_user: Uuid,
    sent_user: Uuid,
) -> reqwest::RequestBuilder {
    let headers = sign_for(credentials, timestamp, &method, path_and_query, body, Some(signed_user));
    let request = app
        .client
        .request(method, format!("{}{path_and_query}", app.address))
        .header("Content-Type", "application/json")
        .header(HEADER_USER_ID, sent_user.to_string())
        .body(body.to_owned());
    with_headers(request, headers)
}

/// The common case: POST an order now, for `user`.
fn signed_post(app: &TestApp, credentials: &ServiceCredentials, timestamp: i64, user: Uuid) -> reqwest::RequestBuilder {
    signed_as(
        app,
        credentials,
        timestamp,
        Method::POST,
        ORDERS,
        &resting_order(),
        user,
        user,
    )
}

async fn accepted(request: reqwest::RequestBuilder) -> Value {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 202, "{body}");
    body
}

/// GET `path` as `user` (a token), the JSON answer.
async fn get_as(app: &TestApp, user: Uuid, path: &str) -> Value {
    let response = app
        .client
        .get(format!("{}{path}", app.address))
        .bearer_auth(token(user))
        .send()
        .await
        .unwrap();
    response.json().await.unwrap()
}

async fn orders_of(app: &TestApp, user: Uuid) -> u64 {
    let page = get_as(app, user, &format!("{ORDERS}/history")).await;
    page["total_count"].as_u64().unwrap()
}

/// Waits until the read model lists `count` orders of `user` (the projection trails the log).
async fn expect_orders(app: &TestApp, user: Uuid, count: u64) {
    eventually(&format!("{count} orders of {user}"), SETTLE_TIMEOUT, || async {
        orders_of(app, user).await == count
    })
    .await;
}

fn now() -> i64 {
    Utc::now().timestamp()
}

async fn the_jwt_matrix_is_refused_and_leaves_the_log_unchanged(db: TestDb) {
    // Proves every bad bearer token (none, garbage, expired, wrong iss, wrong aud, alg none,
    // another algorithm, another key) is a 401 of its own type that appends nothing.
    let app = spawn(&db, &dev_jwt()).await;
    let user = Uuid::new_v4();
    let mint = |config: &JwtConfig, issued_at, ttl_secs| {
        jwt::mint_token(config, user, issued_at, Duration::from_secs(ttl_secs)).unwrap()
    };
    let valid = mint(&dev_jwt(), Utc::now(), 600);
    let claims_part = valid.split('.').nth(1).unwrap().to_owned();
    let rs256 = JwtConfig {
        algorithm: JwtAlgorithm::Rs256 {
            public_key_pem: RSA_PUBLIC_PEM.into(),
            private_key_pem: Some(RSA_PRIVATE_PEM.into()),
        },
        ..dev_jwt()
    };
    let other_secret = JwtConfig {
        algorithm: JwtAlgorithm::Hs256 {
            secret: "another-secret-that-is-also-32-bytes-long".into(),
        },
        ..dev_jwt()
    };
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("no token", None, "missing-credentials"),
        ("garbage", Some("Bearer not.a.jwt".into()), "token-invalid"),
        ("not bearer", Some(format!("Basic {valid}")), "malformed-authorization"),
        (
            "expired",
            Some(format!(
                "Bearer {}",
                mint(&dev_jwt(), Utc::now() - chrono::Duration::hours(2), 3600)
            )),
            "token-expired",
        ),
        (
            "wrong iss",
            Some(format!(
                "Bearer {}",
                mint(
                    &JwtConfig {
                        issuer: "someone-else".into(),
                        ..dev_jwt()
                    },
                    Utc::now(),
                    600
                )
            )),
            "token-issuer-refused",
        ),
        (
            "wrong aud",
            Some(format!(
                "Bearer {}",
                mint(
                    &JwtConfig {
                        audience: "another-service".into(),
                        ..dev_jwt()
                    },
                    Utc::now(),
                    600
                )
            )),
            "token-audience-refused",
        ),
        (
            "alg none",
            Some(format!("Bearer {ALG_NONE_HEADER}.{claims_part}.")),
            "token-invalid",
        ),
        (
            "RS256 to an HS256 server",
            Some(format!("Bearer {}", mint(&rs256, Utc::now(), 600))),
            "token-algorithm-refused",
        ),
        (
            "another HS256 secret",
            Some(format!("Bearer {}", mint(&other_secret, Utc::now(), 600))),
            "token-invalid",
        ),
    ];
    let mut refused_posts = 0;
    for (case, authorization, slug) in cases {
        let mut request = post(&app, &resting_order());
        if let Some(value) = authorization {
            request = request.header("Authorization", value);
        }
        let body = refused(&app, case, request, 401, slug).await;
        assert_eq!(body["instance"], ORDERS, "{case}");
        refused_posts += 1;
    }
    let metrics = app.metrics_text().await;
    let line = format!(
        r#"order_service_http_requests_total{{method="POST",route="/api/v1/orders",status="401"}} {refused_posts}"#
    );
    assert!(
        metrics.contains(&line),
        "refusals are counted under the route: {metrics}"
    );

    // Positive control: the same request with the valid token is accepted and is logged.
    let before = log_state(&app).await;
    accepted(post(&app, &resting_order()).bearer_auth(&valid)).await;
    assert!(settled(&app).await.events > before.events);
}

async fn an_hs256_token_is_refused_by_an_rs256_server(db: TestDb) {
    // Proves the other direction of algorithm pinning: on a server pinned to RS256, an HS256 token
    // (the development one, and one keyed with the RSA public key: key confusion) is a 401.
    let rs256 = JwtConfig {
        algorithm: JwtAlgorithm::Rs256 {
            public_key_pem: RSA_PUBLIC_PEM.into(),
            private_key_pem: Some(RSA_PRIVATE_PEM.into()),
        },
        ..dev_jwt()
    };
    let app = spawn(&db, &rs256).await;
    let user = Uuid::new_v4();
    let hs256 = jwt::mint_token(&dev_jwt(), user, Utc::now(), Duration::from_secs(600)).unwrap();
    let confused_config = JwtConfig {
        algorithm: JwtAlgorithm::Hs256 {
            secret: RSA_PUBLIC_PEM.into(),
        },
        ..dev_jwt()
    };
    let confused = jwt::mint_token(&confused_config, user, Utc::now(), Duration::from_secs(600)).unwrap();
    for (case, token) in [("HS256", hs256), ("HS256 keyed with the public key", confused)] {
        let request = post(&app, &resting_order()).bearer_auth(token);
        refused(&app, case, request, 401, "token-algorithm-refused").await;
    }
    let valid = jwt::mint_token(&rs256, user, Utc::now(), Duration::from_secs(600)).unwrap();
    accepted(post(&app, &resting_order()).bearer_auth(valid)).await;
}

async fn the_hmac_matrix_is_refused_and_leaves_the_log_unchanged(db: TestDb) {
    // Proves seed 001's negatives: unsigned, bad signature, wrong API key, tampered body, stale and
    // future timestamps (over 300 s), an unknown identity, a service without the permission, an
    // oversize signed body, and a replay, each refused with its status and nothing appended.
    let app = spawn(&db, &dev_jwt()).await;
    let user = Uuid::new_v4();
    let algo = test_service();
    let t = now();
    let order = resting_order();
    let mut zeroed = sign_for(&algo, t, &Method::POST, ORDERS, &order, Some(user));
    zeroed[3].1 = "00".repeat(32);
    let bad_signature = with_headers(post(&app, &order).header(HEADER_USER_ID, user.to_string()), zeroed);
    let wrong_key = ServiceCredentials::new("algo_engine", "guessed-api-key", TEST_SERVICE_SECRET);
    let wrong_secret = ServiceCredentials::new("algo_engine", TEST_SERVICE_KEY, "a-guessed-signing-secret-0123456789");
    let stranger = ServiceCredentials::new("stranger", "stranger-key", "stranger-signing-secret-0123456789");
    let tampered = with_headers(
        post(&app, &order.replace("\"quantity\":1", "\"quantity\":500")).header(HEADER_USER_ID, user.to_string()),
        sign_for(&algo, t - 1, &Method::POST, ORDERS, &order, Some(user)),
    );
    let huge = json!({"symbol": "A".repeat(70 * 1024), "quantity": 1}).to_string();
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        (
            "identity without the other headers",
            post(&app, &resting_order())
                .header("X-Service-Identity", "algo_engine")
                .header(HEADER_USER_ID, user.to_string()),
            401,
            "signature-missing",
        ),
        ("bad signature", bad_signature, 401, "signature-invalid"),
        (
            "wrong API key",
            signed_post(&app, &wrong_key, t - 2, user),
            401,
            "signature-invalid",
        ),
        (
            "wrong signing secret",
            signed_post(&app, &wrong_secret, t - 3, user),
            401,
            "signature-invalid",
        ),
        ("tampered body", tampered, 401, "signature-invalid"),
        (
            "stale",
            signed_post(&app, &algo, t - SKEW_OVER_SECS, user),
            401,
            "signature-stale",
        ),
        (
            "future",
            signed_post(&app, &algo, t + SKEW_OVER_SECS, user),
            401,
            "signature-stale",
        ),
        (
            "unknown identity",
            signed_post(&app, &stranger, t - 4, user),
            401,
            "service-unknown",
        ),
        (
            "risk_manager placing an order",
            signed_post(&app, &risk_manager(), t - 5, user),
            403,
            "permission-denied",
        ),
        (
            "oversize signed body",
            signed_as(&app, &algo, t - 6, Method::POST, ORDERS, &huge, user, user),
            413,
            "body-too-large",
        ),
    ];
    for (case, request, status, slug) in cases {
        let body = refused(&app, case, request, status, slug).await;
        if status == 403 {
            assert_eq!(
                (&body["service"], &body["permission"]),
                (&json!("risk_manager"), &json!("place_order"))
            );
        }
        if case == "stale" {
            assert!(body["detail"].as_str().unwrap().contains("300 s"), "{body}");
        }
    }

    // Positive control, then its replay: the first sending is logged, the second is refused.
    let before = log_state(&app).await;
    let t = now();
    accepted(signed_post(&app, &algo, t, user)).await;
    let after_first = settled(&app).await;
    assert!(after_first.events > before.events);
    refused(
        &app,
        "replay",
        signed_post(&app, &algo, t, user),
        401,
        "request-replayed",
    )
    .await;
    expect_orders(&app, user, 1).await;
}

async fn a_signed_call_cannot_be_redirected_to_another_user(db: TestDb) {
    // Proves defect 7's first half: a request algo_engine signed for user A, sent with
    // X-User-Id: B (or with X-User-Id dropped), is a 401, the log is unchanged and B has no
    // order; signed and sent for A, it is accepted.
    let app = spawn(&db, &dev_jwt()).await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let algo = test_service();
    let t = now();
    let body = resting_order();
    let redirected = signed_as(&app, &algo, t, Method::POST, ORDERS, &body, a, b);
    refused(&app, "signed for A, sent for B", redirected, 401, "signature-invalid").await;
    assert_eq!(orders_of(&app, b).await, 0);

    let dropped = with_headers(
        post(&app, &body),
        sign_for(&algo, t - 1, &Method::POST, ORDERS, &body, Some(a)),
    );
    refused(&app, "signed for A, sent for nobody", dropped, 401, "signature-invalid").await;

    accepted(signed_as(&app, &algo, t - 2, Method::POST, ORDERS, &body, a, a)).await;
    settled(&app).await;
    expect_orders(&app, a, 1).await;
    assert_eq!(orders_of(&app, b).await, 0);
}

/// HMAC-SHA256 of `message` under `key`, hex: what an attacker can compute.
fn hmac_hex(key: &str, message: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

async fn what_was_sent_is_not_enough_to_sign_another_request(db: TestDb) {
    // Proves defect 7's second half: an attacker who captured a whole accepted request (headers,
    // API key, body) signs an order for another user with the captured API key, in the old
    // seed layout and in the current one: both are 401 and nothing is logged.
    let app = spawn(&db, &dev_jwt()).await;
    let (victim, other) = (Uuid::new_v4(), Uuid::new_v4());
    let algo = test_service();
    let t = now();
    let captured = sign_for(&algo, t, &Method::POST, ORDERS, &resting_order(), Some(victim));
    accepted(with_headers(
        post(&app, &resting_order()).header(HEADER_USER_ID, victim.to_string()),
        captured.clone(),
    ))
    .await;
    settled(&app).await;
    let header = |name: &str| captured.iter().find(|(n, _)| *n == name).unwrap().1.clone();
    let api_key_on_the_wire = header("X-Internal-API-Key");

    let body =
        json!({"symbol": "AAPL", "order_type": "LIMIT", "order_side": "BUY", "quantity": 50, "price": 100}).to_string();
    let forged_at = t + 1;
    let body_sha = hex::encode(Sha256::digest(body.as_bytes()));
    let other_text = other.to_string();
    let seed_layout = format!("{forged_at}\nPOST\n{ORDERS}\n{body_sha}");
    let current_layout = signing::canonical_string(
        forged_at,
        "algo_engine",
        &SignedRequest {
            method: "POST",
            path_and_query: ORDERS,
            body: body.as_bytes(),
            user_id: Some(&other_text),
        },
    );
    for (case, message) in [("seed layout", seed_layout), ("current layout", current_layout)] {
        let forged = post(&app, &body)
            .header(HEADER_USER_ID, other.to_string())
            .header("X-Service-Identity", header("X-Service-Identity"))
            .header("X-Internal-API-Key", &api_key_on_the_wire)
            .header("X-Request-Timestamp", forged_at.to_string())
            .header("X-Request-Signature", hmac_hex(&api_key_on_the_wire, &message));
        refused(&app, case, forged, 401, "signature-invalid").await;
    }
    assert_eq!(orders_of(&app, other).await, 0);
}

async fn the_query_string_is_signed(db: TestDb) {
    // Proves the query is part of what is signed: a GET signed for `?limit=1` and sent with
    // `?limit=100` (or without its query) is a 401; as signed, it is answered.
    let app = spawn(&db, &dev_jwt()).await;
    let user = Uuid::new_v4();
    let ui = user_interface();
    let signed_path = format!("{ORDERS}/history?limit=1");
    let send = |timestamp: i64, sent_path: &str| {
        let request = app
            .client
            .get(format!("{}{sent_path}", app.address))
            .header(HEADER_USER_ID, user.to_string());
        with_headers(
            request,
            sign_for(&ui, timestamp, &Method::GET, &signed_path, "", Some(user)),
        )
    };
    let t = now();
    let other_limit = format!("{ORDERS}/history?limit=100");
    let no_query = format!("{ORDERS}/history");
    refused(&app, "another query", send(t, &other_limit), 401, "signature-invalid").await;
    refused(&app, "query dropped", send(t - 1, &no_query), 401, "signature-invalid").await;
    let answer = send(t - 2, &signed_path).send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    let page: Value = answer.json().await.unwrap();
    assert_eq!(page["limit"], 1, "{page}");
}

async fn the_outbound_signer_is_accepted_inbound(db: TestDb) {
    // Proves both ends sign the same canonical form: the engine's own HTTP client (RemoteService,
    // which the balance and account clients use) places an order for a user through the app's
    // inbound check, and reads back with a query string.
    let app = spawn(&db, &dev_jwt()).await;
    let user = Uuid::new_v4();
    let client = |credentials: ServiceCredentials| {
        RemoteService::new(
            "order-engine",
            &RemoteServiceConfig::new(app.address.clone()).with_credentials(credentials),
        )
        .unwrap()
    };
    let placed = client(test_service())
        .send(Call::post(ORDERS, resting_order().into_bytes()).header(HEADER_USER_ID, user.to_string()))
        .await
        .unwrap();
    assert_eq!(placed.status, 202, "{}", placed.body_excerpt());
    settled(&app).await;

    let path = format!("{ORDERS}/history?limit=5&offset=0");
    let reader = client(user_interface());
    eventually(
        "the order is read back through the signed client",
        SETTLE_TIMEOUT,
        || async {
            let read = reader
                .send(Call::get(&path).header(HEADER_USER_ID, user.to_string()))
                .await
                .unwrap();
            assert_eq!(read.status, 200, "{}", read.body_excerpt());
            let page: Value = serde_json::from_slice(&read.body).unwrap();
            assert_eq!(page["limit"], 5, "{page}");
            page["total_count"] == 1
        },
    )
    .await;

    // The same client with another identity's secret is refused: the secret, not the key, signs.
    let wrong = ServiceCredentials::new("user_interface", "user-interface-key", TEST_SERVICE_SECRET);
    let denied = client(wrong)
        .send(Call::get(&path).header(HEADER_USER_ID, user.to_string()))
        .await
        .unwrap();
    assert_eq!(denied.status, 401);
}

async fn another_users_order_is_404_and_untouched(db: TestDb) {
    // Proves an order is invisible to anyone but its owner: GET, status, events and cancel by
    // another user (by token, or by a service acting for that user) answer 404 and change nothing.
    let app = spawn(&db, &dev_jwt()).await;
    let (owner, intruder) = (Uuid::new_v4(), Uuid::new_v4());
    let order = accepted(post(&app, &resting_order()).bearer_auth(token(owner))).await;
    let order_id = order["order_id"].as_str().unwrap().to_owned();
    let status_path = format!("{ORDERS}/{order_id}/status");
    eventually("the order rests", SETTLE_TIMEOUT, || async {
        get_as(&app, owner, &status_path).await["status"] == "PROCESSING"
    })
    .await;
    settled(&app).await;

    let by_token = |method: Method, path: String| {
        app.client
            .request(method, format!("{}{path}", app.address))
            .bearer_auth(token(intruder))
    };
    let cancel_path = format!("{ORDERS}/{order_id}/cancel");
    let cases = [
        ("GET", by_token(Method::GET, format!("{ORDERS}/{order_id}"))),
        ("status", by_token(Method::GET, status_path.clone())),
        ("events", by_token(Method::GET, format!("{ORDERS}/{order_id}/events"))),
        ("cancel", by_token(Method::PUT, cancel_path.clone())),
        (
            "cancel by algo_engine for another user",
            signed_as(
                &app,
                &test_service(),
                now(),
                Method::PUT,
                &cancel_path,
                "",
                intruder,
                intruder,
            ),
        ),
    ];
    for (case, request) in cases {
        refused(&app, case, request, 404, "order-not-found").await;
    }
    let status = get_as(&app, owner, &status_path).await;
    assert_eq!(status["status"], "PROCESSING", "{status}");
}
