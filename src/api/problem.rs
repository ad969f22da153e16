//! RFC 9457 problem details (`application/problem+json`): the one place where
//! errors become HTTP statuses, for auth, the engine and malformed requests.
//!
//! Must never put internal detail (SQL, hostnames, stack traces, upstream
//! messages) in a response: 500 and 503 bodies are generic and the cause goes
//! to the log instead.
//!
//! # Problem types
//!
//! Every problem's `type` is `urn:order-engine:problem:<slug>`
//! ([`PROBLEM_TYPE_PREFIX`]). A URN rather than an `https://` URL: RFC 9457
//! allows non-resolvable URIs, and a URL on a host we do not serve would
//! promise documentation that is not there. Slugs are stable API: clients
//! branch on them, so a slug is never renamed, only added. Each order
//! rejection has its own (the match in [`rejection_slug`] is exhaustive, so a
//! new rejection does not compile until it is named).
//!
//! # Usage (route author)
//!
//! ```text
//! async fn get_order(user: AuthenticatedUser, id: web::Path<Uuid>, engine: web::Data<Engine>)
//!     -> Result<HttpResponse, Problem>
//! {
//!     let order = engine.get(*id).await?;                 // EngineError → Problem
//!     if order.user_id != user.user_id {
//!         return Err(Problem::from(EngineError::NotFound(*id))); // never reveal others' orders
//!     }
//!     Ok(HttpResponse::Ok().json(OrderView::from(order)))
//! }
//! // App: .app_data(problem::json_config(ORDER_BODY_BYTES_MAX)).app_data(problem::path_config())
//! //      .app_data(problem::query_config()).default_service(web::to(problem::route_not_found))
//! ```
//!
//! Path parameters that do not parse (a non-UUID order id) are answered 400
//! `invalid-path-parameter`, not 404: the caller made a syntax error, and
//! saying so is more useful than claiming an order is missing.

use std::time::Duration;

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::header::{HeaderName, HeaderValue, ALLOW, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde_json::{Map, Value};

use crate::auth::{AuthError, AuthFailure};
use crate::engine::EngineError;
use crate::order::OrderRejection;
use crate::trading_day::TradingDayRejection;

/// The media type of every error response (RFC 9457 §3).
pub const PROBLEM_JSON: &str = "application/problem+json";
/// Prefix of every problem `type`; the slug follows.
pub const PROBLEM_TYPE_PREFIX: &str = "urn:order-engine:problem:";
/// How long a caller should wait after a 503 from a dependency being down: a
/// few seconds lets a circuit breaker's half-open probe go first.
pub const RETRY_AFTER_UNAVAILABLE: Duration = Duration::from_secs(5);
/// How long to wait after the replay cache was full: entries expire every second.
pub const RETRY_AFTER_BUSY: Duration = Duration::from_secs(1);
/// The members RFC 9457 defines; extensions may not shadow them.
const RESERVED_MEMBERS: [&str; 5] = ["type", "title", "status", "detail", "instance"];

/// One problem-details response.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// `urn:order-engine:problem:<slug>`.
    problem_type: String,
    /// Short, the same for every occurrence of this type.
    title: String,
    status: StatusCode,
    /// This occurrence, in a sentence that says what to change.
    detail: Option<String>,
    /// The request path this occurrence is about.
    instance: Option<String>,
    /// Extension members (`order_id`, `errors`, `limit_bytes`, …).
    extensions: Map<String, Value>,
    /// Headers the status calls for (`Retry-After`, `WWW-Authenticate`).
    headers: Vec<(HeaderName, String)>,
}

impl Problem {
    pub fn new(status: StatusCode, slug: &str, title: impl Into<String>) -> Self {
        Self {
            problem_type: format!("{PROBLEM_TYPE_PREFIX}{slug}"),
            title: title.into(),
            status,
            detail: None,
            instance: None,
            extensions: Map::new(),
            headers: Vec::new(),
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = Some(instance.into());
        self
    }

    /// Adds an extension member. The RFC's own member names are ignored here:
    /// an extension must not change what `type` or `status` say.
    pub fn with_extension(mut self, name: &str, value: impl Into<Value>) -> Self {
        if !RESERVED_MEMBERS.contains(&name) {
            self.extensions.insert(name.to_owned(), value.into());
        }
        self
    }

    /// A forced refresh asked for sooner than the interval allows.
    pub fn hard_refresh_limited(retry_after_secs: u64) -> Self {
        Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "hard-refresh-rate-limited",
            "Forced refresh too soon",
        )
        .with_detail(format!(
            "a forced refresh (Cache-Control: no-cache) is allowed once per ORDER_SERVICE_HARD_REFRESH_RATE_LIMIT_SECONDS; \
             retry in {retry_after_secs} s, or read without no-cache"
        ))
        .with_retry_after(Duration::from_secs(retry_after_secs))
    }

    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.headers.push((RETRY_AFTER, after.as_secs().max(1).to_string()));
        self
    }

    fn with_header(mut self, name: HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn type_uri(&self) -> &str {
        &self.problem_type
    }

    /// The stable name at the end of `type` (`order-not-found`), which gRPC sends as `error_code`.
    pub fn slug(&self) -> &str {
        self.problem_type
            .strip_prefix(PROBLEM_TYPE_PREFIX)
            .unwrap_or(&self.problem_type)
    }

    pub fn title(&self) -> &str {
        &self.title
    }

    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    pub fn extension(&self, name: &str) -> Option<&Value> {
        self.extensions.get(name)
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("type".into(), Value::String(self.problem_type.clone()));
        body.insert("title".into(), Value::String(self.title.clone()));
        body.insert("status".into(), Value::from(self.status.as_u16()));
        if let Some(detail) = &self.detail {
            body.insert("detail".into(), Value::String(detail.clone()));
        }
        if let Some(instance) = &self.instance {
            body.insert("instance".into(), Value::String(instance.clone()));
        }
        for (name, value) in &self.extensions {
            body.insert(name.clone(), value.clone());
        }
        Value::Object(body)
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.title)?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

impl ResponseError for Problem {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        response.insert_header((CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON)));
        for (name, value) in &self.headers {
            if let Ok(value) = HeaderValue::from_str(value) {
                response.insert_header((name.clone(), value));
            }
        }
        response.body(self.body().to_string())
    }
}

impl From<AuthError> for Problem {
    fn from(error: AuthError) -> Self {
        let slug = error.slug();
        match error.failure() {
            AuthFailure::Unauthenticated => {
                // RFC 9110 §15.5.2: a 401 names the scheme to use; RFC 6750 §3 adds why a token failed.
                let challenge = if error == AuthError::MissingCredentials {
                    r#"Bearer realm="order-engine""#
                } else {
                    r#"Bearer realm="order-engine", error="invalid_token""#
                };
                Problem::new(StatusCode::UNAUTHORIZED, slug, "Authentication failed")
                    .with_detail(error.to_string())
                    .with_header(WWW_AUTHENTICATE, challenge)
            }
            AuthFailure::Forbidden => {
                let mut problem =
                    Problem::new(StatusCode::FORBIDDEN, slug, "Permission denied").with_detail(error.to_string());
                if let AuthError::Forbidden { identity, permission } = &error {
                    problem = problem
                        .with_extension("service", identity.as_str())
                        .with_extension("permission", permission.as_str());
                }
                problem
            }
            AuthFailure::TooLarge => {
                let mut problem = Problem::new(StatusCode::PAYLOAD_TOO_LARGE, slug, "Request body too large")
                    .with_detail(error.to_string());
                if let AuthError::BodyTooLarge { limit_bytes } = error {
                    problem = problem.with_extension("limit_bytes", limit_bytes);
                }
                problem
            }
            AuthFailure::BadRequest => {
                Problem::new(StatusCode::BAD_REQUEST, slug, "Unreadable request body").with_detail(error.to_string())
            }
            AuthFailure::Busy => Problem::new(StatusCode::SERVICE_UNAVAILABLE, slug, "Too many signed requests")
                .with_detail(error.to_string())
                .with_retry_after(RETRY_AFTER_BUSY),
            AuthFailure::ServerError => {
                tracing::error!(%error, "authentication is misconfigured");
                internal_error()
            }
        }
    }
}

impl From<EngineError> for Problem {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::Rejected(rejection) => Problem::from(rejection),
            EngineError::AccountNotAllowed(_) => {
                Problem::new(StatusCode::FORBIDDEN, "account-not-allowed", "Account may not trade")
                    .with_detail(error.to_string())
            }
            EngineError::Refused {
                ref rejection,
                retry_after_secs,
            } => {
                let (status, title) = match rejection {
                    TradingDayRejection::OrdersHeld { .. } => (StatusCode::FORBIDDEN, "Orders held"),
                    TradingDayRejection::DailyOrderLimitReached { .. } => {
                        (StatusCode::TOO_MANY_REQUESTS, "Daily order limit reached")
                    }
                    _ => (StatusCode::TOO_MANY_REQUESTS, "Too many orders"),
                };
                let mut problem = Problem::new(status, &rejection.code().replace('_', "-"), title)
                    .with_detail(error.to_string())
                    .with_extension("reason", rejection.code())
                    .with_retry_after(Duration::from_secs(retry_after_secs));
                match rejection {
                    TradingDayRejection::DailyOrderLimitReached { limit, resets_at } => {
                        problem = problem
                            .with_extension("limit", *limit)
                            .with_extension("resets_at", resets_at.to_rfc3339());
                    }
                    TradingDayRejection::RateLimited { limit, .. } => {
                        problem = problem.with_extension("limit_per_minute", *limit);
                    }
                    TradingDayRejection::OrdersHeld { anomaly, until } => {
                        problem = problem
                            .with_extension("anomaly", anomaly.as_str())
                            .with_extension("held_until", until.to_rfc3339());
                    }
                    TradingDayRejection::NotHeld { .. } => {}
                }
                problem
            }
            EngineError::NotFound(order_id) => {
                Problem::new(StatusCode::NOT_FOUND, "order-not-found", "Order not found")
                    .with_detail(error.to_string())
                    .with_extension("order_id", order_id.to_string())
            }
            EngineError::Unavailable(cause) => {
                // The cause names internal services and addresses: logged, not returned.
                tracing::warn!(%cause, "answering 503: a dependency is unavailable");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "service-unavailable",
                    "Temporarily unavailable",
                )
                .with_detail(format!(
                    "a service the engine needs is unavailable; retry in {} s",
                    RETRY_AFTER_UNAVAILABLE.as_secs()
                ))
                .with_retry_after(RETRY_AFTER_UNAVAILABLE)
            }
            EngineError::MarketDataUnavailable(cause) => {
                // Its own type: the order was refused for want of a price, not
                // quoted at a made-up one; the cause (addresses) is logged only.
                tracing::warn!(%cause, "answering 503: market data is unavailable");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "market-data-unavailable",
                    "Market data unavailable",
                )
                .with_detail(format!(
                    "no current price or market status could be had for this order, so it was not accepted; retry in {} s",
                    RETRY_AFTER_UNAVAILABLE.as_secs()
                ))
                .with_retry_after(RETRY_AFTER_UNAVAILABLE)
            }
            EngineError::Internal(cause) => {
                tracing::error!(%cause, "answering 500");
                internal_error()
            }
        }
    }
}

impl From<OrderRejection> for Problem {
    fn from(rejection: OrderRejection) -> Self {
        let (status, title) = match rejection {
            // A final order is a state conflict with the resource, not a bad request.
            OrderRejection::AlreadyFinal { .. } => (StatusCode::CONFLICT, "Order already final"),
            _ => (StatusCode::UNPROCESSABLE_ENTITY, "Order rejected"),
        };
        Problem::new(status, rejection_slug(&rejection), title).with_detail(rejection.to_string())
    }
}

/// The stable slug of each rejection, named after the rule it enforces.
pub fn rejection_slug(rejection: &OrderRejection) -> &'static str {
    // Exhaustive on purpose: no `_`, so every new rejection gets a slug.
    match rejection {
        OrderRejection::InvalidQuantity { .. } => "invalid-quantity",
        OrderRejection::InvalidPrice { .. } => "invalid-price",
        OrderRejection::PriceRequired { .. } => "price-required",
        OrderRejection::PriceNotAllowed { .. } => "price-not-allowed",
        OrderRejection::InvalidSymbol(_) => "invalid-symbol",
        OrderRejection::UnknownSymbol { .. } => "unknown-symbol",
        OrderRejection::MarketClosed { .. } => "market-closed",
        OrderRejection::AlreadySubmitted { .. } => "already-submitted",
        OrderRejection::NotSubmitted => "order-not-submitted",
        OrderRejection::AlreadyFinal { .. } => "already-final",
        OrderRejection::WrongStatus { .. } => "wrong-status",
        OrderRejection::ReservationRequired => "reservation-required",
        OrderRejection::ReservationNotAllowed { .. } => "reservation-not-allowed",
        OrderRejection::ReservationTooSmall { .. } => "reservation-too-small",
        OrderRejection::NegativeReservation { .. } => "negative-reservation",
        OrderRejection::NotAStopOrder { .. } => "not-a-stop-order",
        OrderRejection::AlreadyTriggered => "already-triggered",
        OrderRejection::StopNotReached { .. } => "stop-not-reached",
        OrderRejection::NotTriggered => "not-triggered",
        OrderRejection::LimitNotMet { .. } => "limit-not-met",
        OrderRejection::ExceedsReservation { .. } => "exceeds-reservation",
        OrderRejection::ReasonRequired => "reason-required",
    }
}

fn internal_error() -> Problem {
    Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal-error", "Internal error")
        .with_detail("an internal error occurred; it has been logged")
}

/// A `web::JsonConfig` with a body limit whose errors are problems:
/// 400 `malformed-json`, `unknown-field`, `missing-field`, `invalid-field`;
/// 413 `body-too-large`; 415 `unsupported-media-type`.
pub fn json_config(limit_bytes: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit_bytes)
        .error_handler(|error, req| json_problem(error, req).into())
}

/// The problem for a JSON body that could not be read (see [`json_config`]).
pub fn json_problem(error: JsonPayloadError, req: &HttpRequest) -> Problem {
    let problem = match error {
        JsonPayloadError::OverflowKnownLength { limit, .. } | JsonPayloadError::Overflow { limit } => too_large(limit),
        JsonPayloadError::ContentType => Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
        )
        .with_detail("send the body as JSON with `Content-Type: application/json`"),
        JsonPayloadError::Deserialize(error) => deserialize_problem(&error),
        JsonPayloadError::Payload(actix_web::error::PayloadError::Overflow) => too_large(0),
        other => Problem::new(StatusCode::BAD_REQUEST, "body-unreadable", "Unreadable request body")
            .with_detail(format!("the request body could not be read: {other}")),
    };
    problem.with_instance(req.path())
}

fn too_large(limit_bytes: usize) -> Problem {
    let problem = Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body-too-large",
        "Request body too large",
    );
    if limit_bytes == 0 {
        return problem.with_detail("the body is larger than this endpoint accepts");
    }
    problem
        .with_detail(format!(
            "the body is larger than the {limit_bytes} bytes this endpoint accepts"
        ))
        .with_extension("limit_bytes", limit_bytes)
}

/// Tells syntax errors from shape errors, and names the field when serde does.
fn deserialize_problem(error: &serde_json::Error) -> Problem {
    use serde_json::error::Category;
    let message = error.to_string();
    let location = serde_json::json!({"line": error.line(), "column": error.column()});
    match error.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            Problem::new(StatusCode::BAD_REQUEST, "malformed-json", "Malformed JSON")
                .with_detail(format!("the body is not valid JSON: {message}"))
                .with_extension("errors", Value::Array(vec![location]))
        }
        Category::Data => {
            // serde's messages are the only structured hint: "unknown field `x`, expected …",
            // "missing field `x`", "invalid type: …". The field name sits between backticks.
            let field = backticked(&message);
            let (slug, title) = if message.starts_with("unknown field") {
                ("unknown-field", "Unknown field")
            } else if message.starts_with("missing field") {
                ("missing-field", "Missing field")
            } else {
                ("invalid-field", "Invalid field value")
            };
            let mut entry = serde_json::json!({"detail": message, "line": error.line(), "column": error.column()});
            if let (Some(field), Some(entry)) = (field, entry.as_object_mut()) {
                entry.insert("field".into(), Value::String(field.to_owned()));
            }
            Problem::new(StatusCode::BAD_REQUEST, slug, title)
                .with_detail(message.clone())
                .with_extension("errors", Value::Array(vec![entry]))
        }
    }
}

fn backticked(message: &str) -> Option<&str> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(&message[start..start + len])
}

/// A `web::PathConfig` answering unparsable path parameters (a non-UUID
/// order id) with 400 `invalid-path-parameter`.
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|error, req| {
        // Non-exhaustive upstream: a future variant still becomes a 400 with its message.
        let cause = match error {
            PathError::Deserialize(cause) => cause.to_string(),
            other => other.to_string(),
        };
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-path-parameter",
            "Invalid path parameter",
        )
        .with_detail(format!("{} does not name a resource here: {cause}", req.path()))
        .with_instance(req.path())
        .into()
    })
}

/// A `web::QueryConfig` answering bad query strings with 400 `invalid-query`.
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|error, req| {
        let cause = match error {
            QueryPayloadError::Deserialize(cause) => cause.to_string(),
            other => other.to_string(),
        };
        Problem::new(StatusCode::BAD_REQUEST, "invalid-query", "Invalid query string")
            .with_detail(format!("the query string is not valid here: {cause}"))
            .with_instance(req.path())
            .into()
    })
}

/// The answer to a method a known path does not serve: 405 with `Allow`.
pub fn method_not_allowed(req: &HttpRequest, allow: &str) -> HttpResponse {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
    )
    .with_detail(format!(
        "{} does not serve {}; it serves {allow}",
        req.path(),
        req.method()
    ))
    .with_instance(req.path())
    .with_header(ALLOW, allow)
    .error_response()
}

/// A default service answering unknown routes with a 404 problem.
pub async fn route_not_found(req: HttpRequest) -> HttpResponse {
    Problem::new(StatusCode::NOT_FOUND, "route-not-found", "No such endpoint")
        .with_detail(format!("no endpoint {} {}", req.method(), req.path()))
        .with_instance(req.path())
        .error_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients::signing::VerifyError;
    use crate::order::{AmountError, OrderStatus, OrderType};
    use actix_web::test as actix_test;
    use actix_web::App;
    use rust_decimal_macros::dec;
    use uuid::Uuid;

    async fn body_of(response: HttpResponse) -> Value {
        let bytes = actix_web::body::to_bytes(response.into_body()).await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn content_type(response: &HttpResponse) -> &str {
        response.headers().get(CONTENT_TYPE).unwrap().to_str().unwrap()
    }

    #[actix_web::test]
    async fn each_engine_error_maps_to_its_status_and_problem_json() {
        // Proves the one mapping table: Rejected 422 (AlreadyFinal 409), NotFound 404,
        // AccountNotAllowed 403, Unavailable 503 + Retry-After, Internal 500; all problem+json.
        let id = Uuid::nil();
        let cases: Vec<(EngineError, u16, &str)> = vec![
            (
                EngineError::Rejected(OrderRejection::PriceRequired {
                    order_type: OrderType::Limit,
                    field: "limit price",
                }),
                422,
                "urn:order-engine:problem:price-required",
            ),
            (
                EngineError::Rejected(OrderRejection::AlreadyFinal {
                    status: OrderStatus::Executed,
                }),
                409,
                "urn:order-engine:problem:already-final",
            ),
            (
                EngineError::NotFound(id),
                404,
                "urn:order-engine:problem:order-not-found",
            ),
            (
                EngineError::AccountNotAllowed(id),
                403,
                "urn:order-engine:problem:account-not-allowed",
            ),
            (
                EngineError::Unavailable("balance at 10.0.0.7:8080 refused".into()),
                503,
                "urn:order-engine:problem:service-unavailable",
            ),
            (
                EngineError::MarketDataUnavailable("market data at 10.0.0.7:50054: circuit open".into()),
                503,
                "urn:order-engine:problem:market-data-unavailable",
            ),
            (
                EngineError::Internal("sqlx: relation \"events\" does not exist".into()),
                500,
                "urn:order-engine:problem:internal-error",
            ),
        ];
        for (error, status, type_uri) in cases {
            let message = error.to_string();
            let response = Problem::from(error).error_response();
            assert_eq!(response.status().as_u16(), status, "{message}");
            assert_eq!(content_type(&response), "application/problem+json");
            let retry_after = response.headers().get(RETRY_AFTER).cloned();
            let body = body_of(response).await;
            assert_eq!(body["type"], type_uri);
            assert_eq!(body["status"], status);
            assert!(body["title"].is_string());
            if status >= 500 {
                // Never leak internals: the cause is logged, not returned.
                let detail = body["detail"].as_str().unwrap();
                assert!(!detail.contains("10.0.0.7") && !detail.contains("sqlx"), "{detail}");
            } else {
                assert_eq!(body["detail"], message);
            }
            assert_eq!(retry_after.is_some(), status == 503, "{message}");
        }
    }

    #[actix_web::test]
    async fn a_not_found_order_names_its_id() {
        // Proves the order_id extension member on a 404.
        let id = Uuid::parse_str("6f1c1d2e-7a3b-4c5d-9e8f-0a1b2c3d4e5f").unwrap();
        let body = body_of(Problem::from(EngineError::NotFound(id)).error_response()).await;
        assert_eq!(body["order_id"], id.to_string());
    }

    #[test]
    fn every_rejection_has_a_distinct_stable_type() {
        // Proves slugs are unique per variant and the detail is the rejection's own message.
        let rejections = vec![
            OrderRejection::InvalidQuantity {
                quantity: dec!(-1),
                reason: AmountError::NotPositive,
            },
            OrderRejection::InvalidPrice {
                field: "limit price",
                value: dec!(0),
                reason: AmountError::NotPositive,
            },
            OrderRejection::PriceRequired {
                order_type: OrderType::Limit,
                field: "limit price",
            },
            OrderRejection::PriceNotAllowed {
                order_type: OrderType::Market,
                field: "limit price",
            },
            OrderRejection::UnknownSymbol { symbol: "ZZZ".into() },
            OrderRejection::MarketClosed { symbol: "AAPL".into() },
            OrderRejection::AlreadySubmitted { order_id: Uuid::nil() },
            OrderRejection::NotSubmitted,
            OrderRejection::AlreadyFinal {
                status: OrderStatus::Cancelled,
            },
            OrderRejection::ReservationRequired,
            OrderRejection::AlreadyTriggered,
            OrderRejection::NotTriggered,
            OrderRejection::ReasonRequired,
        ];
        let mut seen = std::collections::HashSet::new();
        for rejection in rejections {
            let problem = Problem::from(rejection.clone());
            assert!(seen.insert(problem.type_uri().to_owned()), "{}", problem.type_uri());
            assert_eq!(problem.detail(), Some(rejection.to_string().as_str()));
            assert!(problem.type_uri().starts_with(PROBLEM_TYPE_PREFIX));
        }
    }

    #[actix_web::test]
    async fn auth_errors_map_to_401_403_413_with_a_challenge_on_401() {
        // Proves the auth statuses and that a 401 carries WWW-Authenticate.
        let cases = vec![
            (AuthError::MissingCredentials, 401),
            (AuthError::TokenExpired, 401),
            (AuthError::Replayed, 401),
            (AuthError::Signature(VerifyError::BadSignature), 401),
            (
                AuthError::Forbidden {
                    identity: "risk_manager".into(),
                    permission: crate::auth::Permission::PlaceOrder,
                },
                403,
            ),
            (AuthError::BodyTooLarge { limit_bytes: 10 }, 413),
            (AuthError::ReplayCacheFull { entries_max: 1 }, 503),
            (AuthError::NotConfigured("x"), 500),
        ];
        for (error, status) in cases {
            let response = Problem::from(error.clone()).error_response();
            assert_eq!(response.status().as_u16(), status, "{error}");
            assert_eq!(content_type(&response), PROBLEM_JSON);
            assert_eq!(
                response.headers().contains_key(WWW_AUTHENTICATE),
                status == 401,
                "{error}"
            );
        }
    }

    #[test]
    fn extensions_cannot_shadow_the_standard_members() {
        // Proves an extension named `status` or `type` is ignored rather than contradicting the response.
        let problem = Problem::new(StatusCode::BAD_REQUEST, "x", "X")
            .with_extension("status", 200)
            .with_extension("type", "about:blank")
            .with_extension("order_id", "o-1");
        let body = problem.body();
        assert_eq!(body["status"], 400);
        assert_eq!(body["type"], "urn:order-engine:problem:x");
        assert_eq!(body["order_id"], "o-1");
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Probe {
        quantity: u32,
        symbol: String,
    }

    async fn probe(_: web::Json<Probe>, _: web::Path<Uuid>) -> HttpResponse {
        HttpResponse::Ok().finish()
    }

    #[actix_web::test]
    async fn json_and_path_errors_are_specific_problems() {
        // Proves each body failure gets its own status and type: malformed 400, unknown field 400
        // naming it, wrong type 400, missing field 400, too large 413, wrong content type 415,
        // non-UUID path parameter 400.
        let app = actix_test::init_service(
            App::new()
                .app_data(json_config(64))
                .app_data(path_config())
                .route("/orders/{id}", web::post().to(probe))
                .default_service(web::to(route_not_found)),
        )
        .await;
        let uri = "/orders/6f1c1d2e-7a3b-4c5d-9e8f-0a1b2c3d4e5f";
        let oversize = "x".repeat(100);
        let cases: Vec<(&str, &str, &str, u16, &str)> = vec![
            (
                uri,
                "application/json",
                r#"{"quantity": 1, "symbol": "AAPL""#,
                400,
                "malformed-json",
            ),
            (
                uri,
                "application/json",
                r#"{"quantity":1,"symbol":"A","side":"BUY"}"#,
                400,
                "unknown-field",
            ),
            (
                uri,
                "application/json",
                r#"{"quantity":"many","symbol":"A"}"#,
                400,
                "invalid-field",
            ),
            (uri, "application/json", r#"{"quantity":1}"#, 400, "missing-field"),
            (uri, "application/json", &oversize, 413, "body-too-large"),
            (
                uri,
                "text/plain",
                r#"{"quantity":1,"symbol":"A"}"#,
                415,
                "unsupported-media-type",
            ),
            (
                "/orders/not-a-uuid",
                "application/json",
                r#"{"quantity":1,"symbol":"A"}"#,
                400,
                "invalid-path-parameter",
            ),
            ("/nowhere", "application/json", "{}", 404, "route-not-found"),
        ];
        for (path, content_type, body, status, slug) in cases {
            let request = actix_test::TestRequest::post()
                .uri(path)
                .insert_header((CONTENT_TYPE, content_type))
                .set_payload(body.to_owned())
                .to_request();
            let response = actix_test::call_service(&app, request).await;
            assert_eq!(response.status().as_u16(), status, "{slug}");
            assert_eq!(response.headers().get(CONTENT_TYPE).unwrap(), PROBLEM_JSON, "{slug}");
            let json: Value = actix_test::read_body_json(response).await;
            assert_eq!(json["type"], format!("{PROBLEM_TYPE_PREFIX}{slug}"));
            assert_eq!(json["instance"], path, "{slug}");
            if slug == "unknown-field" {
                assert_eq!(json["errors"][0]["field"], "side", "{json}");
                assert!(json["detail"].as_str().unwrap().contains("unknown field `side`"));
            }
            if slug == "missing-field" {
                assert_eq!(json["errors"][0]["field"], "symbol", "{json}");
            }
        }
        let ok = actix_test::TestRequest::post()
            .uri(uri)
            .insert_header((CONTENT_TYPE, "application/json"))
            .set_payload(r#"{"quantity":1,"symbol":"A"}"#)
            .to_request();
        assert_eq!(actix_test::call_service(&app, ok).await.status().as_u16(), 200);
    }
}
