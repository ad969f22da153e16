//! The interceptor in front of the order service (a tower service around the
//! generated server, because a signature covers the request's bytes and a
//! tonic `Interceptor` never sees them): it authenticates every call with the
//! HTTP API's own verifiers and counts and times it.
//!
//! - End users send `authorization: Bearer <jwt>` metadata.
//! - Services send seed 001's headers as metadata (`x-service-identity`,
//!   `x-internal-api-key`, `x-request-timestamp`, `x-request-signature`) and
//!   `x-user-id`; the signature's canonical string is the HTTP one with
//!   method `POST`, the full method path (`/monolith.OrderService/SubmitOrder`)
//!   as the path, and the request message's bytes (the one gRPC frame's
//!   payload) as the body.
//! - The API gateway, when trusted, sends `x-gateway-secret` and `x-user-id`
//!   (the HTTP rules, `auth::extractor`).
//!
//! Must never run a call whose credentials it could not check: the verdict is
//! left in the request's extensions ([`CallerOutcome`]) and the service
//! refuses before doing anything; a signed call over the size limit is
//! refused here without reading further.
// The refusal is the HTTP response itself, answered at once; boxing it would
// allocate on every refused call to shrink a value moved once.
#![allow(clippy::result_large_err)]

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::Code;

use super::status::refusal;
use super::CallerOutcome;
use crate::api::problem::Problem;
use crate::auth::{AuthError, Authenticator, NotText, Presented, HEADER_GATEWAY_SECRET, HEADER_USER_ID};
use crate::clients::signing::{SignatureHeaders, SignedRequest, HEADER_SERVICE_IDENTITY};
use crate::telemetry::metrics::Metrics;

/// Bytes before each gRPC message: a compression flag and a 4-byte length.
const FRAME_HEADER_BYTES: usize = 5;
/// The service's RPCs, the only values of the metrics' `method` label.
const METHODS: [&str; 5] = [
    "SubmitOrder",
    "GetOrderDetails",
    "GetOrderStatus",
    "CancelOrder",
    "GetOrderHistory",
];
/// The `method` label of a path that is none of them.
const METHOD_UNKNOWN: &str = "unknown";

/// The order service behind authentication and metrics.
#[derive(Clone)]
pub struct Guarded<S> {
    inner: S,
    auth: Arc<Authenticator>,
    metrics: Arc<Metrics>,
}

impl<S> Guarded<S> {
    pub fn new(inner: S, auth: Arc<Authenticator>, metrics: Arc<Metrics>) -> Self {
        Self { inner, auth, metrics }
    }
}

impl<S: NamedService> NamedService for Guarded<S> {
    const NAME: &'static str = S::NAME;
}

type Request = http::Request<Body>;
type Response = http::Response<Body>;

impl<S> tower_service::Service<Request> for Guarded<S>
where
    S: tower_service::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = futures_util::future::BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // The clone is fresh and not ready; the one polled ready serves this call.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let (auth, metrics) = (Arc::clone(&self.auth), Arc::clone(&self.metrics));
        Box::pin(async move {
            let started = Instant::now();
            let method = method_label(request.uri().path());
            let response = match authenticated(&auth, request).await {
                Ok(request) => inner.call(request).await?,
                Err(refused) => refused,
            };
            let code = response_code(&response);
            metrics
                .grpc_requests_total
                .with_label_values(&[method, code_name(code)])
                .inc();
            metrics
                .grpc_request_duration_seconds
                .with_label_values(&[method])
                .observe(started.elapsed().as_secs_f64());
            Ok(response)
        })
    }
}

/// The request with its caller's verdict attached, or the refusal to answer
/// at once (a signed body over the limit, which is not read further).
async fn authenticated(auth: &Authenticator, request: Request) -> Result<Request, Response> {
    let (mut parts, body) = request.into_parts();
    let signed = parts.headers.contains_key(HEADER_SERVICE_IDENTITY);
    let (body, signature) = if signed {
        let limit_bytes = auth.signed_body_bytes_max();
        let bytes = match Limited::new(body, limit_bytes + FRAME_HEADER_BYTES).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) => {
                let error = if error.is::<http_body_util::LengthLimitError>() {
                    AuthError::BodyTooLarge { limit_bytes }
                } else {
                    AuthError::BodyUnreadable(error.to_string())
                };
                let request_id = crate::api::commands::request_id(
                    parts
                        .headers
                        .get(super::service::METADATA_REQUEST_ID)
                        .and_then(|v| v.to_str().ok()),
                );
                return Err(refusal(&Problem::from(error), &request_id).into_http());
            }
        };
        let outcome = verify_signature(auth, &parts, &bytes);
        if let Err(error) = &outcome {
            tracing::warn!(%error, path = parts.uri.path(), "signed gRPC call refused");
        }
        (Body::new(Full::new(bytes)), Some(outcome))
    } else {
        (body, None)
    };
    let header = |name: &str| parts.headers.get(name).map(|v| v.to_str().map_err(|_| NotText));
    let caller = auth.authenticate(Presented {
        authorization: header(http::header::AUTHORIZATION.as_str()),
        signature,
        user_id: header(HEADER_USER_ID),
        gateway_secret: header(HEADER_GATEWAY_SECRET),
    });
    parts.extensions.insert(CallerOutcome(caller));
    Ok(Request::from_parts(parts, body))
}

/// The signature check over the one message the call carries.
fn verify_signature(auth: &Authenticator, parts: &http::request::Parts, body: &Bytes) -> Result<String, AuthError> {
    let message = single_message(body).ok_or_else(|| {
        AuthError::BodyUnreadable("a signed gRPC call carries exactly one uncompressed message".into())
    })?;
    let headers = &parts.headers;
    let lookup = SignatureHeaders::from_lookup(|name| headers.get(name).and_then(|v| v.to_str().ok()));
    let user_id = headers.get(HEADER_USER_ID).and_then(|v| v.to_str().ok());
    auth.internal().verify(
        &lookup,
        &SignedRequest {
            method: parts.method.as_str(),
            path_and_query: parts.uri.path(),
            body: message,
            user_id,
        },
    )
}

/// The payload of a body that is exactly one uncompressed gRPC frame.
fn single_message(body: &[u8]) -> Option<&[u8]> {
    let (header, message) = body.split_at_checked(FRAME_HEADER_BYTES)?;
    let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    (header[0] == 0 && usize::try_from(length).ok()? == message.len()).then_some(message)
}

/// The RPC's name when it is one of the service's, for a bounded label.
fn method_label(path: &str) -> &'static str {
    let name = path.rsplit('/').next().unwrap_or_default();
    METHODS
        .iter()
        .find(|method| **method == name)
        .copied()
        .unwrap_or(METHOD_UNKNOWN)
}

/// The call's status: a refusal's code is in the headers (a trailers-only
/// answer); a unary answer without one carries a message and succeeded.
fn response_code(response: &Response) -> Code {
    response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(Code::Ok, Code::from)
}

/// gRPC's canonical name of a code (statuscodes.md), the `code` label.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_one_uncompressed_frame_is_a_signed_message() {
        // Proves the signed bytes are exactly the message, and anything else is refused.
        assert_eq!(single_message(&[0, 0, 0, 0, 2, 7, 8]), Some(&[7u8, 8][..]));
        assert_eq!(single_message(&[0, 0, 0, 0, 0]), Some(&[][..]));
        assert_eq!(single_message(&[1, 0, 0, 0, 2, 7, 8]), None, "compressed");
        assert_eq!(
            single_message(&[0, 0, 0, 0, 1, 7, 8]),
            None,
            "two frames or trailing bytes"
        );
        assert_eq!(single_message(&[0, 0, 0, 0, 3, 7, 8]), None, "truncated");
        assert_eq!(single_message(&[0, 0]), None, "no header");
    }

    #[test]
    fn the_method_label_is_bounded() {
        // Proves a scanner's paths collapse into one series.
        assert_eq!(method_label("/monolith.OrderService/SubmitOrder"), "SubmitOrder");
        assert_eq!(method_label("/monolith.OrderService/Nope"), METHOD_UNKNOWN);
        assert_eq!(method_label("/x/y/z/../SubmitOrder2"), METHOD_UNKNOWN);
    }
}
