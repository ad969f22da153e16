//! Liveness and readiness. Live: the process answers. Ready: the database
//! answers, the read model is running and within its lag bound, the engine's
//! reactor is running (not stopped on an event it cannot read), and the
//! broker is connected when one is configured. Stalled sagas are reported,
//! not failed on: the instance still serves, and a restart resumes them.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::openapi::{CircuitBreakersDoc, HealthDoc, RateLimiterDoc};
use super::AppState;

/// A projection further behind than this many events is not ready.
pub const PROJECTION_LAG_EVENTS_MAX: u64 = 10_000;

#[utoipa::path(get, path = "/health/live", tag = "operations", responses((status = 200, description = "The process answers", body = HealthDoc)))]
pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "live" }))
}

#[utoipa::path(get, path = "/health/ready", tag = "operations", responses((status = 200, description = "Database, projections and broker are fine", body = HealthDoc), (status = 503, description = "A check failed; the body names it", body = HealthDoc)))]
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let (ready, body) = readiness(&state).await;
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Whether the instance is ready, and the checks that say why: what
/// `/health/ready` answers and what the gRPC health service reports.
pub async fn readiness(state: &AppState) -> (bool, serde_json::Value) {
    let mut ready = true;
    let database = match state.engine.deps().store.head_position().await {
        Ok(head) => json!({ "status": "ok", "head_position": head, "backend": state.engine.deps().store.backend() }),
        Err(error) => {
            ready = false;
            json!({ "status": "unavailable", "error": error.to_string() })
        }
    };
    let projection = state.orders_projection.snapshot();
    let projection_ok = projection.failed.is_none() && projection.lag_events() <= PROJECTION_LAG_EVENTS_MAX;
    ready &= projection_ok;
    let mut checks = json!({
        "database": database,
        "projection.orders": {
            "status": if projection_ok { "ok" } else if projection.failed.is_some() { "failed" } else { "lagging" },
            "position": projection.position,
            "lag_events": projection.lag_events(),
            "lag_seconds": projection.lag_seconds,
            "failed": projection.failed,
        },
    });
    let engine = state.engine.health();
    ready &= engine.reactor_failed.is_none();
    checks["engine.reactor"] = json!({
        "status": if engine.reactor_failed.is_none() { "ok" } else { "failed" },
        "failed": engine.reactor_failed,
    });
    checks["engine.sagas"] = json!({
        "stalled": engine.sagas_stalled,
        "stalled_orders": engine
            .stalled_examples
            .iter()
            .map(|(order_id, reason)| json!({ "order_id": order_id, "reason": reason }))
            .collect::<Vec<_>>(),
    });
    if let Some(cluster) = &state.cluster {
        let status = cluster.status();
        // Owning nothing is not a failure (more members than work); being
        // replaced by a newer process under this node name is.
        ready &= !status.replaced;
        let now = chrono::Utc::now();
        checks["cluster"] = json!({
            "status": if status.replaced { "replaced" } else if status.last_error.is_some() { "heartbeat failing" } else { "ok" },
            "node": status.node,
            "incarnation": status.incarnation,
            "members": status.members,
            "last_heartbeat": status.last_beat,
            "last_error": status.last_error,
            "leases": status.leases.iter().map(|(name, lease)| json!({
                "name": name,
                "token": lease.token,
                "held_seconds": lease.held_seconds(now),
            })).collect::<Vec<_>>(),
        });
    }
    if let Some(connected) = &state.broker_connected {
        let up = connected();
        ready &= up;
        checks["broker"] = json!({ "status": if up { "ok" } else { "disconnected" } });
    }
    let body = json!({ "status": if ready { "ready" } else { "not ready" }, "checks": checks });
    (ready, body)
}

/// Each remote client's circuit breaker (seed 001's `/health/circuit-breaker`):
/// its state, its counts since start and its configuration. Always 200: an
/// open breaker is the client protecting the engine, reported rather than
/// failed on (`/health/ready` is what a load balancer asks). `services` is
/// empty when everything is embedded.
#[utoipa::path(get, path = "/health/circuit-breaker", tag = "operations", responses((status = 200, description = "Each remote client's breaker", body = CircuitBreakersDoc)))]
pub async fn circuit_breakers(state: web::Data<AppState>) -> HttpResponse {
    let services: serde_json::Map<String, serde_json::Value> = state
        .controls
        .breakers
        .snapshots()
        .into_iter()
        .map(|(service, b)| {
            let body = json!({
                "state": b.state.as_str(),
                "consecutive_failures": b.consecutive_failures,
                "succeeded_total": b.succeeded_total,
                "failed_total": b.failed_total,
                "refused_total": b.refused_total,
                "opened_total": b.opened_total,
                "failure_threshold": b.config.failure_threshold,
                "open_for_ms": u64::try_from(b.config.open_for.as_millis()).unwrap_or(u64::MAX),
            });
            (service.to_owned(), body)
        })
        .collect();
    let any_open = services.values().any(|b| b["state"] != "closed");
    HttpResponse::Ok().json(json!({
        "status": if any_open { "degraded" } else { "ok" },
        "services": services,
    }))
}

/// The limits in force and the users held back (seed 001's `/health/rate-limiter`).
#[utoipa::path(get, path = "/health/rate-limiter", tag = "operations", responses((status = 200, description = "Limits in force and users currently limited", body = RateLimiterDoc)))]
pub async fn rate_limiter(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(state.controls.rate_limits())
}

/// Prometheus text: the seed's metric names and the engine's own. Gauges that
/// describe the present (live actors, projection lag) are read at scrape time.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(
    state: web::Data<AppState>,
    metrics: web::Data<crate::telemetry::metrics::Metrics>,
) -> HttpResponse {
    metrics
        .live_actors
        .set(i64::try_from(state.engine.registry().live_count()).unwrap_or(i64::MAX));
    let projection = state.orders_projection.snapshot();
    let name = crate::projections::ORDERS_PROJECTION;
    metrics
        .projection_lag_events
        .with_label_values(&[name])
        .set(i64::try_from(projection.lag_events()).unwrap_or(i64::MAX));
    metrics
        .projection_lag_seconds
        .with_label_values(&[name])
        .set(projection.lag_seconds);
    metrics
        .projection_failed
        .with_label_values(&[name])
        .set(i64::from(projection.failed.is_some()));
    // The reactor follows the log as a projection does, and stops as one does.
    let engine = state.engine.health();
    metrics
        .projection_failed
        .with_label_values(&[crate::engine::REACTOR_CHECKPOINT])
        .set(i64::from(engine.reactor_failed.is_some()));
    metrics
        .sagas_stalled
        .set(i64::try_from(engine.sagas_stalled).unwrap_or(i64::MAX));
    if let Some(cluster) = &state.cluster {
        cluster.observe_metrics();
    }
    metrics.observe_breakers(&state.controls.breakers.snapshots());
    crate::telemetry::metrics::metrics_endpoint(metrics).await
}
