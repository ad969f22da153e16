//! HTTP errors as `application/problem+json` (RFC 9457), mapped in one place.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::engine::EngineError;
use crate::order::OrderRejection;

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
}

impl Problem {
    pub fn new(status: StatusCode, slug: &str, title: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("urn:order-engine:problem:{slug}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.title, self.detail)
    }
}

impl ResponseError for Problem {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code())
            .content_type("application/problem+json")
            .json(self)
    }
}

impl From<EngineError> for Problem {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::Rejected(OrderRejection::AlreadyFinal { status }) => Problem::new(
                StatusCode::CONFLICT,
                "order-final",
                "Order is final",
                format!("order is {status}, a final state; it can no longer change"),
            ),
            EngineError::Rejected(rejection) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "order-rejected",
                "Order rejected",
                rejection.to_string(),
            ),
            EngineError::NotFound(id) => Problem::new(
                StatusCode::NOT_FOUND,
                "order-not-found",
                "Order not found",
                format!("no order {id}"),
            ),
            EngineError::AccountNotAllowed(id) => Problem::new(
                StatusCode::FORBIDDEN,
                "account-not-allowed",
                "Account may not trade",
                format!("account {id} is not active or may not trade"),
            ),
            EngineError::Unavailable(detail) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Temporarily unavailable",
                detail,
            ),
            EngineError::Internal(detail) => {
                tracing::error!(%detail, "internal error answering a request");
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "Internal error",
                    "the engine failed; the error is logged",
                )
            }
        }
    }
}
