//! The OpenAPI document, generated from the route and type annotations, so
//! it cannot drift from the code without a test noticing.

use actix_web::HttpResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::dto::{
    CancelOrderResponse, HistoryResponse, OrderDetails, OrderStatusResponse, SubmitOrderBody, SubmitOrderResponse,
};

/// The shape of every error body (`application/problem+json`, RFC 9457).
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
        super::health::metrics,
    ),
    components(schemas(
        SubmitOrderBody,
        SubmitOrderResponse,
        OrderDetails,
        OrderStatusResponse,
        CancelOrderResponse,
        HistoryResponse,
        ProblemDoc
    )),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// GET /api/v1/openapi.json
pub async fn document() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
