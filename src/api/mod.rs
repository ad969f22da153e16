//! The HTTP API (actix-web): routes, JSON shapes and problem+json errors.
//!
//! Handlers only translate: they call the engine facade and never touch the
//! store, so every write goes through an order actor.

pub mod dto;
pub mod error;
mod health;
mod orders;
pub mod problem;

use std::sync::Arc;

use actix_web::web;

use crate::engine::Engine;
use crate::projections::{ProjectionHealth, ReadModels};

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

/// Mounts every route on an actix-web app.
pub fn configure(config: &mut web::ServiceConfig) {
    config
        .app_data(
            web::JsonConfig::default()
                .limit(BODY_BYTES_MAX)
                .error_handler(|error, _| {
                    let status = match &error {
                        actix_web::error::JsonPayloadError::OverflowKnownLength { .. }
                        | actix_web::error::JsonPayloadError::Overflow { .. } => {
                            actix_web::http::StatusCode::PAYLOAD_TOO_LARGE
                        }
                        actix_web::error::JsonPayloadError::ContentType => {
                            actix_web::http::StatusCode::UNSUPPORTED_MEDIA_TYPE
                        }
                        _ => actix_web::http::StatusCode::BAD_REQUEST,
                    };
                    error::Problem::new(status, "invalid-body", "Invalid request body", error.to_string()).into()
                }),
        )
        .route("/health/live", web::get().to(health::live))
        .route("/health/ready", web::get().to(health::ready))
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
