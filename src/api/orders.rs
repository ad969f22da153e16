//! The order routes: submit, read, status, cancel, history, audit trail.
// A `Problem` is the error response itself, built once per refused request:
// boxing it would allocate on every error path to shrink a value that is
// moved once, so the size lint is relaxed for this module.
#![allow(clippy::result_large_err)]

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use uuid::Uuid;

use super::commands::{self, CallContext};
use super::dto::{
    CancelOrderResponse, HistoryQuery, HistoryResponse, OrderDetailsResponse, OrderStatusResponse, SubmitOrderBody,
    SubmitOrderResponse, HISTORY_OFFSET_MAX, HISTORY_PAGE_MAX,
};
use super::openapi::{OrderEventsDoc, ProblemDoc};
use super::problem::Problem;
use super::AppState;
use crate::amqp::wire::parse_traceparent;
use crate::auth::extractor::{requires, Authorized};
use crate::engine::EngineError;
use crate::events::TraceContext;
use crate::projections::HISTORY_LIMIT_MAX;
use crate::telemetry::traces;
use crate::wire::ObjectOnly;
use tracing::Instrument;

/// History page size when the caller names none (the seed's example).
pub(crate) const HISTORY_LIMIT_DEFAULT: u32 = 20;

/// The caller's request id header, echoed in `api_response.request_id`.
const HEADER_REQUEST_ID: &str = "X-Request-Id";

fn request_id(request: &HttpRequest) -> String {
    commands::request_id(request.headers().get(HEADER_REQUEST_ID).and_then(|v| v.to_str().ok()))
}

#[utoipa::path(post, path = "/api/v1/orders", tag = "orders", request_body = SubmitOrderBody,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = r"^[!-~]+$",
        description = "Repeat-safe submission: the same key with the same body returns the first answer \
            (also while the first request is still running); with another body it is refused")),
    responses((status = 202, description = "Order accepted as PENDING", body = SubmitOrderResponse,
            headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored answer to an earlier request with the same Idempotency-Key"))),
        (status = 400, description = "Malformed JSON, unknown field, wrong type, invalid Idempotency-Key", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "The first request with this Idempotency-Key is still running; retry after Retry-After", body = ProblemDoc, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
        (status = 413, description = "Body over the size limit", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "Body not sent as application/json", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "The order breaks a rule (quantity, price, symbol), or the key was reused with another body", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "A per-user pre-trade control refused the order: `reason` is `daily_order_limit_reached` (with `limit` and `resets_at`) or `rate_limited` (with `limit_per_minute`); nothing was recorded", body = ProblemDoc, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds until a new order can pass")))),
    security(("bearer" = [])))]
pub async fn submit(
    state: web::Data<AppState>,
    caller: Authorized<requires::PlaceOrder>,
    request: HttpRequest,
    body: web::Json<ObjectOnly<SubmitOrderBody>>,
) -> Result<HttpResponse, Problem> {
    // The caller's W3C trace, validated as on AMQP; exported, the span below continues it.
    let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
    let incoming = header("traceparent").and_then(|tp| parse_traceparent(tp, header("tracestate")));
    let span = traces::span(|| tracing::info_span!("http.submission", user = %caller.user_id));
    traces::continue_trace(&span, incoming.as_ref());
    submit_traced(state, caller, request, body, incoming)
        .instrument(span)
        .await
}

/// [`submit`] inside its span; `incoming` is the caller's trace context.
async fn submit_traced(
    state: web::Data<AppState>,
    caller: Authorized<requires::PlaceOrder>,
    request: HttpRequest,
    body: web::Json<ObjectOnly<SubmitOrderBody>>,
    incoming: Option<TraceContext>,
) -> Result<HttpResponse, Problem> {
    let body = body.into_inner().0.exact()?;
    let key = request
        .headers()
        .get("Idempotency-Key")
        .map(|v| v.to_str().unwrap_or_default());
    let key = commands::idempotency_key(key)?;
    let request_id = request_id(&request);
    // With traces exported, the submission span's context; else the caller's as it came.
    let trace = traces::current(incoming);
    let call = CallContext {
        source: "http",
        request_id: &request_id,
        trace: trace.as_ref(),
    };
    let submitted = commands::submit(&state, &caller, body, key, call).await?;
    let mut answer = HttpResponse::Accepted();
    if submitted.replayed {
        answer.insert_header(("Idempotent-Replayed", "true"));
    }
    Ok(answer.json(submitted.body))
}

#[utoipa::path(get, path = "/api/v1/orders/history", tag = "orders", params(HistoryQuery),
    responses((status = 200, body = HistoryResponse),
        (status = 400, description = "A parameter out of its bounds or not a number, an unknown status or parameter, or both offset and page",
            body = ProblemDoc, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn history(
    state: web::Data<AppState>,
    caller: Authorized<requires::GetOrders>,
    request: HttpRequest,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, Problem> {
    let query = query.into_inner();
    let limit = bounded("limit", query.limit.as_deref(), 1, u64::from(HISTORY_LIMIT_MAX))?
        .map_or(Ok(HISTORY_LIMIT_DEFAULT), u32::try_from)
        .map_err(|_| out_of_bounds("limit", 1, u64::from(HISTORY_LIMIT_MAX)))?;
    let offset = bounded("offset", query.offset.as_deref(), 0, HISTORY_OFFSET_MAX)?;
    let page = bounded("page", query.page.as_deref(), 1, HISTORY_PAGE_MAX)?;
    // With both, pages count from `offset`. Checked although the bounds make
    // it fit (at most 2^54): an overflow here would page wrongly, not fail.
    let pages_skipped = page.map_or(Some(0), |page| (page - 1).checked_mul(u64::from(limit)));
    let offset = pages_skipped
        .and_then(|skipped| skipped.checked_add(offset.unwrap_or(0)))
        .filter(|offset| i64::try_from(*offset).is_ok())
        .ok_or_else(|| out_of_bounds("page", 1, HISTORY_PAGE_MAX))?;
    let page = commands::history(&state, &caller, query.status, limit, offset, &request_id(&request)).await?;
    Ok(HttpResponse::Ok().json(page))
}

/// A whole-number query parameter, if sent, checked against its bounds.
fn bounded(name: &str, raw: Option<&str>, minimum: u64, maximum: u64) -> Result<Option<u64>, Problem> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    // Digits only: no sign, no spaces, no exponent, as the document's `integer` says.
    let value = (!raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()))
        .then(|| raw.parse::<u64>().ok())
        .flatten()
        .filter(|value| (minimum..=maximum).contains(value));
    value.map(Some).ok_or_else(|| out_of_bounds(name, minimum, maximum))
}

/// A read with `Cache-Control: no-cache` is a forced refresh.
fn refresh(request: &HttpRequest) -> commands::Refresh {
    let forced = request
        .headers()
        .get_all(actix_web::http::header::CACHE_CONTROL)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|directive| directive.trim().eq_ignore_ascii_case("no-cache"));
    if forced {
        commands::Refresh::Forced
    } else {
        commands::Refresh::Cached
    }
}

pub(crate) fn out_of_bounds(name: &str, minimum: u64, maximum: u64) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, "invalid-query", "Invalid query")
        .with_detail(format!("{name} must be a whole number from {minimum} to {maximum}"))
        .with_extension("parameter", name)
        .with_extension("minimum", minimum)
        .with_extension("maximum", maximum)
}

#[utoipa::path(get, path = "/api/v1/orders/{order_id}", tag = "orders", params(("order_id" = Uuid, Path), ("Cache-Control" = Option<String>, Header, description = "`no-cache` forces a refresh: the order is folded again from the log past every cache; at most once per ORDER_SERVICE_HARD_REFRESH_RATE_LIMIT_SECONDS per caller (429 with Retry-After sooner)")),
    responses((status = 200, body = OrderDetailsResponse), (status = 400, description = "order_id is not a UUID", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such order for this user", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "A forced refresh sooner than the interval allows", body = ProblemDoc, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds until a forced refresh is allowed")))),
    security(("bearer" = [])))]
pub async fn get(
    state: web::Data<AppState>,
    caller: Authorized<requires::GetOrders>,
    request: HttpRequest,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    let details = commands::details(
        &state,
        &caller,
        path.into_inner(),
        refresh(&request),
        &request_id(&request),
    )
    .await?;
    Ok(HttpResponse::Ok().json(details))
}

#[utoipa::path(get, path = "/api/v1/orders/{order_id}/status", tag = "orders", params(("order_id" = Uuid, Path), ("Cache-Control" = Option<String>, Header, description = "`no-cache` forces a refresh: the order is folded again from the log past every cache; at most once per ORDER_SERVICE_HARD_REFRESH_RATE_LIMIT_SECONDS per caller (429 with Retry-After sooner)")),
    responses((status = 200, body = OrderStatusResponse), (status = 400, description = "order_id is not a UUID", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such order for this user", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "A forced refresh sooner than the interval allows", body = ProblemDoc, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds until a forced refresh is allowed")))),
    security(("bearer" = [])))]
pub async fn status(
    state: web::Data<AppState>,
    caller: Authorized<requires::GetOrders>,
    request: HttpRequest,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    let status = commands::status(
        &state,
        &caller,
        path.into_inner(),
        refresh(&request),
        &request_id(&request),
    )
    .await?;
    Ok(HttpResponse::Ok().json(status))
}

#[utoipa::path(put, path = "/api/v1/orders/{order_id}/cancel", tag = "orders", params(("order_id" = Uuid, Path)),
    responses((status = 200, body = CancelOrderResponse), (status = 400, description = "order_id is not a UUID", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such order for this user", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "The order is already final", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "The order cannot be cancelled in its state", body = ProblemDoc, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn cancel(
    state: web::Data<AppState>,
    caller: Authorized<requires::CancelOrder>,
    request: HttpRequest,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    let cancelled = commands::cancel(&state, &caller, path.into_inner(), &request_id(&request)).await?;
    Ok(HttpResponse::Ok().json(cancelled))
}

#[utoipa::path(get, path = "/api/v1/orders/{order_id}/events", tag = "orders", params(("order_id" = Uuid, Path)),
    responses((status = 200, description = "The order's events, its saga's steps, the ledger entries it caused and what the pre-trade controls recorded of it (its count, anomalies, a hold), in log order", body = OrderEventsDoc),
        (status = 400, description = "order_id is not a UUID", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such order for this user", body = ProblemDoc, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn events(
    state: web::Data<AppState>,
    caller: Authorized<requires::GetOrders>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    let order_id = path.into_inner();
    // Ownership first: another user's order is a 404 like a missing one.
    state.engine.owned(order_id, caller.user_id).await?;
    let story = crate::audit::order_story(state.engine.deps().store.as_ref(), order_id)
        .await
        .map_err(|e| Problem::from(EngineError::Unavailable(e.to_string())))?
        .ok_or(EngineError::NotFound(order_id))?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "order_id": order_id, "events": story })))
}
