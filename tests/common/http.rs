//! The real HTTP app on a random port, over a test engine (zero2prod's spawn_app).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use std::time::Duration;

use actix_web::{web, HttpServer};
use order_engine::api::{self, AppState};
use order_engine::auth::{mint_dev_token, Authenticator, InternalVerifier, JwtConfig, JwtVerifier, ServiceKeys};
use order_engine::clients::ServiceCredentials;
use order_engine::clock::SystemClock;
use order_engine::projections::{run_orders_projection, ProjectionHealth};
use order_engine::telemetry::metrics::Metrics;
use uuid::Uuid;

use super::engine::TestEngine;

pub struct TestApp {
    pub address: String,
    pub engine: Arc<TestEngine>,
    pub client: reqwest::Client,
    pub orders_projection: Arc<ProjectionHealth>,
    pub metrics: web::Data<Metrics>,
    _stop_projection: tokio::sync::watch::Sender<bool>,
}

/// Serves the API for `engine` on 127.0.0.1 with a port the OS picks, trusting
/// development tokens and [`test_service`].
pub fn spawn_app(engine: TestEngine) -> TestApp {
    let auth = Authenticator::new(
        JwtVerifier::new(&JwtConfig::development(None)).unwrap(),
        InternalVerifier::new(ServiceKeys::new([test_service()]), Arc::new(SystemClock)),
    );
    spawn_app_with_auth(engine, auth)
}

/// As [`spawn_app`], with another token verifier or other service keys.
pub fn spawn_app_with_auth(engine: TestEngine, auth: Authenticator) -> TestApp {
    let engine = Arc::new(engine);
    let orders_projection = Arc::new(ProjectionHealth::default());
    let metrics = web::Data::new(Metrics::new().unwrap());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    actix_rt::spawn(run_orders_projection(
        Arc::clone(&engine.store.store),
        Arc::clone(&engine.store.models),
        Arc::clone(&orders_projection),
        Some(metrics.clone().into_inner()),
        stopped,
    ));
    // The projection runs as long as the test's runtime; the sender lives in the app.
    let state = web::Data::new(AppState {
        engine: Arc::clone(&engine.engine),
        models: Arc::clone(&engine.store.models),
        orders_projection: Arc::clone(&orders_projection),
        broker_connected: None,
    });
    let auth = web::Data::new(auth);
    let app_metrics = metrics.clone();
    let server = HttpServer::new(move || api::app(state.clone(), auth.clone(), app_metrics.clone()))
        .workers(1)
        .bind("127.0.0.1:0")
        .unwrap();
    let port = server.addrs()[0].port();
    actix_rt::spawn(server.run());
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        engine,
        client: reqwest::Client::new(),
        orders_projection,
        metrics,
        _stop_projection: stop,
    }
}

impl TestApp {
    /// POST /api/v1/orders with `body` as `bearer`, with an Idempotency-Key if given.
    pub async fn submit(&self, bearer: &str, body: &serde_json::Value, key: Option<&str>) -> reqwest::Response {
        let mut request = self
            .client
            .post(format!("{}/api/v1/orders", self.address))
            .bearer_auth(bearer)
            .json(body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        request.send().await.unwrap()
    }

    /// GET `path`'s JSON body, as `bearer` if given.
    pub async fn get_json(&self, path: &str, bearer: Option<&str>) -> serde_json::Value {
        let mut request = self.client.get(format!("{}{path}", self.address));
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        request.send().await.unwrap().json().await.unwrap()
    }
}

/// The internal service the test app trusts, its API key and its signing secret.
pub const TEST_SERVICE: &str = "algo_engine";
pub const TEST_SERVICE_KEY: &str = "test-algo-engine-key";
pub const TEST_SERVICE_SECRET: &str = "test-algo-engine-signing-secret-0123456789";

pub fn test_service() -> ServiceCredentials {
    ServiceCredentials::new(TEST_SERVICE, TEST_SERVICE_KEY, TEST_SERVICE_SECRET)
}

/// A development token for `user`, as `order-engine token --user` prints.
pub fn token(user: Uuid) -> String {
    mint_dev_token(&JwtConfig::development(None), user, Duration::from_secs(600)).unwrap()
}
