//! The HTTP API (actix-web): routes, JSON shapes and problem+json errors.
//!
//! Handlers only translate: they call the engine facade and never touch the
//! store, so every write goes through an order actor.

pub mod dto;
mod health;
pub mod openapi;
mod orders;
pub mod problem;

use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::middleware::from_fn;
use actix_web::{web, App};

use crate::auth::extractor::{verify_signed_requests, Authenticator};
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
}

pub use health::PROJECTION_LAG_EVENTS_MAX;

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

/// Mounts every route.
pub fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/health/live", web::get().to(health::live))
        .route("/health/ready", web::get().to(health::ready))
        .route("/metrics", web::get().to(health::metrics))
        .route("/api/v1/openapi.json", web::get().to(openapi::document))
        .service(
            web::scope("/api/v1/orders")
                .route("", web::post().to(orders::submit))
                // Before `/{order_id}`, which would otherwise take "history" as an id.
                .route("/history", web::get().to(orders::history))
                .route("/{order_id}", web::get().to(orders::get))
                .route("/{order_id}/status", web::get().to(orders::status))
                .route("/{order_id}/events", web::get().to(orders::events))
                .route("/{order_id}/cancel", web::put().to(orders::cancel)),
        );
}
