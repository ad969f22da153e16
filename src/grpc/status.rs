//! Refusals in gRPC's terms: a [`Problem`] (the one place errors get an HTTP
//! status and a slug) becomes a gRPC status code, with the call's
//! `APIResponse` packed into the status details as the standard rich error
//! model does (`grpc-status-details-bin` holding a `google.rpc.Status` whose
//! one detail is an `Any` of `monolith.APIResponse`; docs/adr/0002).
//!
//! Must never invent a second slug or sentence: both come from the problem,
//! so a gRPC client and an HTTP client read the same `error_code`.

use prost::Message;
use tonic::{Code, Status};

use super::pb;
use crate::api::dto::ApiResponse;
use crate::api::problem::Problem;

/// The `Any` type URL of the detail, as Google's libraries spell packed messages.
pub const API_RESPONSE_TYPE_URL: &str = "type.googleapis.com/monolith.APIResponse";

/// `google.rpc.Status` (google/rpc/status.proto), the message gRPC's rich
/// error model puts in `grpc-status-details-bin`; written out here rather
/// than generated, as it is three fields that never change.
#[derive(Clone, PartialEq, Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<prost_types::Any>,
}

/// The gRPC code of a refusal: the HTTP status's equivalent, refined by the
/// slug where the status alone is ambiguous (a 409 or a 422).
pub fn code_of(problem: &Problem) -> Code {
    match (problem.status().as_u16(), problem.slug()) {
        (_, "idempotency-key-reused" | "already-submitted") => Code::AlreadyExists,
        (_, "idempotency-key-in-progress") => Code::Aborted,
        // The order's state or the market's, not the request, stands in the way.
        (_, "already-final" | "wrong-status" | "market-closed" | "account-not-allowed") => Code::FailedPrecondition,
        (400 | 422, _) => Code::InvalidArgument,
        (401, _) => Code::Unauthenticated,
        (403, _) => Code::PermissionDenied,
        (404, _) => Code::NotFound,
        (409, _) => Code::Aborted,
        (413 | 429, _) => Code::ResourceExhausted,
        (503, _) => Code::Unavailable,
        _ => Code::Internal,
    }
}

/// The proto's APIResponse for `api`.
pub fn api_response(api: &ApiResponse) -> pb::ApiResponse {
    pb::ApiResponse {
        success: api.success,
        status_code: i32::from(api.status_code),
        error_code: api.error_code.clone(),
        message: api.message.clone(),
        request_id: api.request_id.clone(),
    }
}

/// The status a refused call answers with, its APIResponse in the details.
pub fn refusal(problem: &Problem, request_id: &str) -> Status {
    let code = code_of(problem);
    let api = api_response(&ApiResponse::refused(problem, request_id));
    let message = api.message.clone();
    let details = RpcStatus {
        code: code as i32,
        message: message.clone(),
        details: vec![prost_types::Any {
            type_url: API_RESPONSE_TYPE_URL.to_owned(),
            value: api.encode_to_vec(),
        }],
    };
    Status::with_details(code, message, details.encode_to_vec().into())
}

/// The APIResponse in a refusal's details, for clients (the tests, the bench).
pub fn api_response_of(status: &Status) -> Option<pb::ApiResponse> {
    let rich = RpcStatus::decode(status.details()).ok()?;
    rich.details
        .iter()
        .find(|any| any.type_url == API_RESPONSE_TYPE_URL)
        .and_then(|any| pb::ApiResponse::decode(any.value.as_slice()).ok())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use actix_web::http::StatusCode;

    #[test]
    fn a_refusal_carries_the_problems_slug_status_and_sentence() {
        // Proves the details decode to the APIResponse of the same problem HTTP would send.
        let problem =
            Problem::new(StatusCode::NOT_FOUND, "order-not-found", "Order not found").with_detail("no order x");
        let status = refusal(&problem, "req-1");
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(
            api_response_of(&status).unwrap(),
            pb::ApiResponse {
                success: false,
                status_code: 404,
                error_code: "order-not-found".into(),
                message: "no order x".into(),
                request_id: "req-1".into(),
            }
        );
    }

    #[test]
    fn codes_follow_the_http_status_and_the_slug() {
        // Proves the mapping of the statuses the order routes answer with.
        let code = |status: u16, slug: &str| code_of(&Problem::new(StatusCode::from_u16(status).unwrap(), slug, "t"));
        assert_eq!(code(422, "price-required"), Code::InvalidArgument);
        assert_eq!(code(422, "idempotency-key-reused"), Code::AlreadyExists);
        assert_eq!(code(409, "already-final"), Code::FailedPrecondition);
        assert_eq!(code(409, "idempotency-key-in-progress"), Code::Aborted);
        assert_eq!(code(401, "token-invalid"), Code::Unauthenticated);
        assert_eq!(code(403, "permission-denied"), Code::PermissionDenied);
        assert_eq!(code(503, "service-unavailable"), Code::Unavailable);
        assert_eq!(code(500, "internal-error"), Code::Internal);
    }
}
