//! The HTTP API (actix-web): routes, JSON shapes and problem+json errors.
//!
//! Handlers only translate: they call the engine facade and never touch the
//! store, so every write goes through an order actor.

pub mod commands;
pub mod dto;
mod health;
pub mod openapi;
pub(crate) mod orders;
pub mod problem;

use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::middleware::from_fn;
use actix_web::{web, App};

use crate::auth::extractor::{verify_signed_requests, Authenticator};
use crate::controls::Controls;
use crate::engine::Engine;
use crate::projections::{ProjectionHealth, ReadModels};
use crate::telemetry::metrics::{count_http_requests, Metrics};

/// Largest request body accepted, in bytes; larger ones get 413.
pub const BODY_BYTES_MAX: usize = 16 * 1024;

/// What every handler can reach.
pub struct AppState {
    pub engine: Arc<Engine>,
    pub models: Arc<dyn ReadModels>,
    pub orders_projection: Arc<ProjectionHealth>,
    /// Whether the broker is connected; None when no broker is configured.
    pub broker_connected: Option<Arc<dyn Fn() -> bool + Send + Sync>>,
    /// This process's membership of the cluster; None standalone.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Pre-trade controls: idempotency fail-closed, breakers and limits to report.
    pub controls: Arc<Controls>,
}

pub use health::{readiness, PROJECTION_LAG_EVENTS_MAX};

/// The whole app: auth and metrics middleware, JSON limits, every route.
/// `serve` and the tests build it here, so they serve the same thing.
pub fn app(
    state: web::Data<AppState>,
    auth: web::Data<Authenticator>,
    metrics: web::Data<Metrics>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(state)
        .app_data(auth)
        .app_data(metrics)
        .app_data(problem::json_config(BODY_BYTES_MAX))
        .app_data(problem::path_config())
        .app_data(problem::query_config())
        .wrap(from_fn(verify_signed_requests))
        // Outermost, so refusals by the inner layers are counted too.
        .wrap(from_fn(count_http_requests))
        .configure(configure)
        .default_service(web::to(problem::route_not_found))
}

/// Mounts every route. Each path is one resource whose other methods are
/// answered 405 with `Allow` (RFC 9110 §15.5.6), not 404: the path exists.
pub fn configure(config: &mut web::ServiceConfig) {
    config
        .service(resource("/health/live", "GET").route(web::get().to(health::live)))
        .service(resource("/health/ready", "GET").route(web::get().to(health::ready)))
        .service(resource("/health/circuit-breaker", "GET").route(web::get().to(health::circuit_breakers)))
        .service(resource("/health/rate-limiter", "GET").route(web::get().to(health::rate_limiter)))
        .service(resource("/metrics", "GET").route(web::get().to(health::metrics)))
        .service(resource("/api/v1/openapi.json", "GET").route(web::get().to(openapi::document)))
        .service(resource("/api/v1/orders", "POST").route(web::post().to(orders::submit)))
        // Before `/{order_id}`, which would otherwise take "history" as an id.
        .service(resource("/api/v1/orders/history", "GET").route(web::get().to(orders::history)))
        .service(resource("/api/v1/orders/{order_id}", "GET").route(web::get().to(orders::get)))
        .service(resource("/api/v1/orders/{order_id}/status", "GET").route(web::get().to(orders::status)))
        .service(resource("/api/v1/orders/{order_id}/events", "GET").route(web::get().to(orders::events)))
        .service(resource("/api/v1/orders/{order_id}/cancel", "PUT").route(web::put().to(orders::cancel)));
}

/// A resource at `path` serving `allow` (its methods, comma-separated); any
/// other method gets 405.
fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move |request: actix_web::HttpRequest| async move {
        problem::method_not_allowed(&request, allow)
    }))
}
