//! The OpenAPI document, generated from the route and type annotations, so
//! it cannot drift from the code without a test noticing.
//!
//! Must never promise less than the server answers: every status a route can
//! give is listed (the ones every authenticated route shares are added by
//! [`SharedResponses`]), and every bound the server enforces on a number is
//! the document's minimum or maximum. schemathesis checks both in CI.

use std::collections::BTreeMap;

use actix_web::HttpResponse;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{Modify, OpenApi, ToSchema};

use super::dto::{
    ApiResponse, CancelOrderResponse, HistoryResponse, OrderDetails, OrderDetailsResponse, OrderStatusDoc,
    OrderStatusResponse, OrderTypeDoc, SideDoc, SubmitOrderBody, SubmitOrderResponse,
};
use super::problem::PROBLEM_JSON;

/// The shape of every error body (`application/problem+json`, RFC 9457);
/// a problem may carry extension members (`errors`, `order_id`, `parameter`…).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ProblemDoc {
    /// `urn:order-engine:problem:<slug>`, stable per kind of problem.
    #[schema(rename = "type")]
    kind: String,
    title: String,
    status: u16,
    detail: Option<String>,
    instance: Option<String>,
}

/// GET /health/live and /health/ready: a status and, for readiness, each check.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct HealthDoc {
    /// `live`, `ready` or `not ready`.
    status: String,
    /// Per dependency: its status and figures (readiness only).
    checks: Option<BTreeMap<String, serde_json::Value>>,
}

/// GET /health/circuit-breaker.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CircuitBreakersDoc {
    /// `ok`, or `degraded` while a breaker is open or half-open.
    status: String,
    /// By client (`balance`, `accounts`, `market_data`); empty when all is embedded.
    services: BTreeMap<String, BreakerDoc>,
}

/// One client's breaker.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct BreakerDoc {
    /// `closed`, `open` or `half_open`.
    state: String,
    consecutive_failures: u32,
    succeeded_total: u64,
    failed_total: u64,
    /// Calls refused without reaching the service.
    refused_total: u64,
    opened_total: u64,
    failure_threshold: u32,
    open_for_ms: u64,
}

/// GET /health/rate-limiter.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RateLimiterDoc {
    status: String,
    /// Whether a per-user limiter runs.
    per_user_limiter: bool,
    limits: Vec<LimitDoc>,
    users_limited: Vec<LimitedUserDoc>,
}

/// One limit in force.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct LimitDoc {
    name: String,
    /// `request`, `connection`, `service`, `user` or `process`.
    scope: String,
    limit: u64,
    unit: String,
    /// What a caller over it gets.
    answer: String,
    /// The setting or constant that fixes it.
    source: String,
}

/// A user a per-user limiter refuses now.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct LimitedUserDoc {
    user_id: uuid::Uuid,
    limit: String,
    retry_after_secs: u64,
}

/// GET /api/v1/orders/{order_id}/events: the order's audit trail.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct OrderEventsDoc {
    order_id: uuid::Uuid,
    /// The order's events, its saga's steps and the ledger entries it caused, in log order.
    events: Vec<serde_json::Value>,
}

/// Statuses every authenticated route can answer, whatever it does: the
/// credentials (401, 403), a signed service request's body (413), and the
/// server's own state (500, 503). Added here once instead of on every route.
struct SharedResponses;

fn problem_response(description: &str, header: Option<(&str, &str)>) -> Response {
    let mut response = ResponseBuilder::new().description(description).content(
        PROBLEM_JSON,
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ProblemDoc")))
            .build(),
    );
    if let Some((name, about)) = header {
        response = response.header(
            name,
            HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(Type::String))
                .description(Some(about))
                .build(),
        );
    }
    response.build()
}

/// The shared responses, by status.
pub fn shared_responses() -> Vec<(&'static str, Response)> {
    vec![
        (
            "401",
            problem_response(
                "Missing, invalid or expired credentials",
                Some(("WWW-Authenticate", "The scheme to use and why the token failed")),
            ),
        ),
        (
            "403",
            problem_response(
                "The caller may not do this: a service without the permission, an account that may not trade, or a user whose orders are held after an anomaly (`orders_held`, with Retry-After)",
                None,
            ),
        ),
        (
            "413",
            problem_response("A signed service request whose body is over the limit", None),
        ),
        ("500", problem_response("An internal error; it has been logged", None)),
        (
            "503",
            problem_response(
                "A service the engine needs is unavailable; retry after Retry-After",
                Some(("Retry-After", "Seconds to wait before retrying")),
            ),
        ),
    ]
}

fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

impl Modify for SharedResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            for operation in operations(item) {
                if operation.security.as_ref().is_none_or(Vec::is_empty) {
                    continue;
                }
                for (status, response) in shared_responses() {
                    operation
                        .responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert(RefOr::T(response));
                }
            }
        }
    }
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "order-engine", description = "An event-sourced order engine: submit, read, cancel and audit orders."),
    paths(
        super::orders::submit,
        super::orders::history,
        super::orders::get,
        super::orders::status,
        super::orders::events,
        super::orders::cancel,
        super::health::live,
        super::health::ready,
        super::health::circuit_breakers,
        super::health::rate_limiter,
        super::health::metrics,
    ),
    components(schemas(
        SubmitOrderBody,
        SubmitOrderResponse,
        ApiResponse,
        OrderDetailsResponse,
        OrderDetails,
        OrderStatusResponse,
        CancelOrderResponse,
        HistoryResponse,
        ProblemDoc,
        HealthDoc,
        CircuitBreakersDoc,
        BreakerDoc,
        RateLimiterDoc,
        LimitDoc,
        LimitedUserDoc,
        OrderEventsDoc,
        OrderStatusDoc,
        OrderTypeDoc,
        SideDoc
    )),
    modifiers(&BearerAuth, &SharedResponses)
)]
pub struct ApiDoc;

/// GET /api/v1/openapi.json
pub async fn document() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
