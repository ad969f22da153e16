//! The real HTTP app on a random port, over a test engine (zero2prod's spawn_app).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use actix_web::{web, App, HttpServer};
use order_engine::api::{self, AppState};
use order_engine::projections::{run_orders_projection, ProjectionHealth};

use super::engine::TestEngine;

pub struct TestApp {
    pub address: String,
    pub engine: Arc<TestEngine>,
    pub client: reqwest::Client,
    pub orders_projection: Arc<ProjectionHealth>,
    _stop_projection: tokio::sync::watch::Sender<bool>,
}

/// Serves the API for `engine` on 127.0.0.1 with a port the OS picks.
pub fn spawn_app(engine: TestEngine) -> TestApp {
    let engine = Arc::new(engine);
    let orders_projection = Arc::new(ProjectionHealth::default());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    actix_rt::spawn(run_orders_projection(
        Arc::clone(&engine.store.store),
        Arc::clone(&engine.store.models),
        Arc::clone(&orders_projection),
        stopped,
    ));
    // The projection runs as long as the test's runtime; the sender lives in the app.
    let state = web::Data::new(AppState {
        engine: Arc::clone(&engine.engine),
        models: Arc::clone(&engine.store.models),
        orders_projection: Arc::clone(&orders_projection),
        broker_connected: None,
    });
    let server = HttpServer::new(move || App::new().app_data(state.clone()).configure(api::configure))
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
        _stop_projection: stop,
    }
}
