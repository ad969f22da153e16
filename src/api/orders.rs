//! The order routes: submit, read, status, cancel, history, audit trail.
// A `Problem` is the error response itself, built once per refused request:
// boxing it would allocate on every error path to shrink a value that is
// moved once, so the size lint is relaxed for this module.
#![allow(clippy::result_large_err)]

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use uuid::Uuid;

use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};

use super::dto::{
    CancelOrderResponse, HistoryQuery, HistoryResponse, OrderBody, OrderDetails, OrderStatusResponse, SubmitOrderBody,
    SubmitOrderResponse, HISTORY_OFFSET_MAX, HISTORY_PAGE_MAX,
};
use super::openapi::{OrderEventsDoc, ProblemDoc};
use super::problem::Problem;
use super::AppState;
use crate::amqp::wire::parse_traceparent;
use crate::auth::extractor::{requires, Authorized};
use crate::engine::{EngineError, SubmitRequest, ENGINE_NAMESPACE};
use crate::events::{EventMetadata, TraceContext};
use crate::order::{OrderRejection, OrderType};
use crate::projections::{IdempotencyClaim, IdempotencyRecord, HISTORY_LIMIT_MAX, IDEMPOTENCY_IN_FLIGHT};
use crate::telemetry::traces;
use crate::wire::ObjectOnly;
use tracing::Instrument;

/// Longest Idempotency-Key accepted (the seed's VARCHAR(255)).
const IDEMPOTENCY_KEY_LEN_MAX: usize = 255;
/// How long a stored answer to an Idempotency-Key is replayed.
const IDEMPOTENCY_TTL_HOURS: i64 = 24;
/// How long a retry waits for the first request with its Idempotency-Key to
/// answer before it is told 409 and to retry: a submission takes milliseconds
/// unless a dependency is slow, and a client should not hang behind that.
pub const IDEMPOTENCY_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(5);
/// First pause between looks at an in-flight key; doubles up to the next.
const IDEMPOTENCY_POLL_MIN: std::time::Duration = std::time::Duration::from_millis(5);
const IDEMPOTENCY_POLL_MAX: std::time::Duration = std::time::Duration::from_millis(200);
/// An in-flight claim older than this is presumed dead (its process crashed
/// between claiming and answering) and a retry takes it over. Far above any
/// submission's own time; a takeover of a live one is harmless anyway, as it
/// submits the same order id, which the engine records once.
pub const IDEMPOTENCY_CLAIM_STALE: std::time::Duration = std::time::Duration::from_secs(60);
/// Retry-After of the 409 for a key still in progress.
const RETRY_AFTER_IN_PROGRESS: std::time::Duration = std::time::Duration::from_secs(1);
/// History page size when the caller names none (the seed's example).
const HISTORY_LIMIT_DEFAULT: u32 = 20;

fn unprocessable(detail: &str) -> Problem {
    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "order-rejected", "Order rejected").with_detail(detail)
}

/// The Idempotency-Key header, if sent, checked for length and characters.
fn idempotency_key(request: &HttpRequest) -> Result<Option<String>, Problem> {
    let Some(value) = request.headers().get("Idempotency-Key") else {
        return Ok(None);
    };
    let key = value.to_str().map(str::trim).unwrap_or_default();
    if key.is_empty() || key.len() > IDEMPOTENCY_KEY_LEN_MAX || !key.chars().all(|c| c.is_ascii_graphic()) {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-idempotency-key",
            "Invalid Idempotency-Key",
        )
        .with_detail(format!(
            "Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_LEN_MAX} visible ASCII characters"
        )));
    }
    Ok(Some(key.to_owned()))
}

/// What makes two submissions the same request, whatever their JSON spelling.
fn request_hash(body: &OrderBody) -> String {
    let canonical = format!(
        "{}|{}|{}|{}|{:?}|{:?}",
        body.symbol,
        body.order_type,
        body.order_side,
        body.quantity.normalize(),
        body.price.map(|p| p.normalize()),
        body.stop_price.map(|p| p.normalize())
    );
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

fn key_reused() -> Problem {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency-key-reused",
        "Idempotency-Key reused",
    )
    .with_detail("this Idempotency-Key was used with a different request; use a new key for a new order")
}

/// 409 for a retry whose first request with this key is still running.
fn in_progress() -> Problem {
    Problem::new(
        StatusCode::CONFLICT,
        "idempotency-key-in-progress",
        "Request with this Idempotency-Key in progress",
    )
    .with_detail(format!(
        "the first request with this Idempotency-Key has not answered within {} ms; retry after the \
         Retry-After delay to get its answer",
        IDEMPOTENCY_WAIT_MAX.as_millis()
    ))
    .with_retry_after(RETRY_AFTER_IN_PROGRESS)
}

fn replayed(record: &IdempotencyRecord) -> HttpResponse {
    HttpResponse::Accepted()
        .insert_header(("Idempotent-Replayed", "true"))
        .json(&record.response_data)
}

/// What waiting on another request's claim of a key ended with.
enum Waited {
    /// Its answer, to replay.
    Answered(IdempotencyRecord),
    /// The claim is gone (released, expired, or dropped as stale): claim again.
    Gone,
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
        (status = 422, description = "The order breaks a rule (quantity, price, symbol), or the key was reused with another body", body = ProblemDoc, content_type = "application/problem+json")),
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
    let user = caller.user_id;
    let body = body.into_inner().0.exact()?;
    // With traces exported, the submission span's context; else the caller's as it came.
    let trace = traces::current(incoming);
    let Some(key) = idempotency_key(&request)? else {
        let order = state
            .engine
            .submit(order_request(user, caller.who(), body, None, trace)?)
            .await?;
        return Ok(HttpResponse::Accepted().json(SubmitOrderResponse::from(&order)));
    };
    let hash = request_hash(&body);
    // The order id follows from the key: a retry that takes over a dead
    // request's claim submits the same order, which the engine records once.
    let order_id = Uuid::new_v5(&ENGINE_NAMESPACE, format!("{user}:idempotency:{key}").as_bytes());
    let submission = order_request(user, caller.who(), body, Some(order_id), trace)?;
    let deadline = Instant::now() + IDEMPOTENCY_WAIT_MAX;
    loop {
        let now = Utc::now();
        let claim = IdempotencyRecord {
            idempotency_key: key.clone(),
            user_id: user,
            order_id,
            status: IDEMPOTENCY_IN_FLIGHT.to_owned(),
            request_hash: hash.clone(),
            response_data: serde_json::Value::Null,
            created_at: now,
            expires_at: now + Duration::hours(IDEMPOTENCY_TTL_HOURS),
        };
        match state.models.claim(claim).await.map_err(unavailable)? {
            IdempotencyClaim::Won => return submit_claimed(&state, submission, &key, now).await,
            IdempotencyClaim::Released => {}
            IdempotencyClaim::Held(record) => match wait_for_answer(&state, record, &hash, deadline).await? {
                Waited::Answered(record) => return Ok(replayed(&record)),
                Waited::Gone => {}
            },
        }
        if Instant::now() >= deadline {
            return Err(in_progress());
        }
    }
}

/// Waits, bounded by `deadline`, for the request holding the key to answer.
async fn wait_for_answer(
    state: &AppState,
    mut record: IdempotencyRecord,
    hash: &str,
    deadline: Instant,
) -> Result<Waited, Problem> {
    let mut pause = IDEMPOTENCY_POLL_MIN;
    loop {
        if record.request_hash != hash {
            return Err(key_reused());
        }
        if !record.in_flight() {
            return Ok(Waited::Answered(record));
        }
        let now = Utc::now();
        if now - record.created_at
            > Duration::from_std(IDEMPOTENCY_CLAIM_STALE).unwrap_or_else(|_| Duration::hours(IDEMPOTENCY_TTL_HOURS))
        {
            // Its holder died between claiming and answering (a crash): take over.
            tracing::warn!(key = %record.idempotency_key, user = %record.user_id, claimed_at = %record.created_at,
                "taking over a stale Idempotency-Key claim");
            state
                .models
                .release(record.user_id, &record.idempotency_key, record.created_at)
                .await
                .map_err(unavailable)?;
            return Ok(Waited::Gone);
        }
        if Instant::now() + pause > deadline {
            return Err(in_progress());
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(IDEMPOTENCY_POLL_MAX);
        match state
            .models
            .idempotency(record.user_id, &record.idempotency_key, Utc::now())
            .await
            .map_err(unavailable)?
        {
            Some(next) => record = next,
            None => return Ok(Waited::Gone),
        }
    }
}

/// Submits the order of the request holding the key, then stores its answer;
/// on a refusal the claim is dropped so that a corrected retry may run.
async fn submit_claimed(
    state: &AppState,
    submission: SubmitRequest,
    key: &str,
    claimed_at: DateTime<Utc>,
) -> Result<HttpResponse, Problem> {
    let (user, order_id) = (submission.user_id, submission.order_id.unwrap_or_default());
    let release = || async {
        if let Err(error) = state.models.release(user, key, claimed_at).await {
            // The claim then goes stale and the next retry takes it over.
            tracing::warn!(%error, %key, %user, "could not release an Idempotency-Key claim");
        }
    };
    let expected = submission.clone();
    let (order, replay) = match state.engine.submit(submission).await {
        Ok(order) => (order, false),
        Err(EngineError::Rejected(OrderRejection::AlreadySubmitted { .. })) => {
            // A claim taken over from a crashed request whose order got through,
            // or a key reused after its record expired.
            match state.engine.owned(order_id, user).await {
                Ok(order) if same_order(&order, &expected) => (order, true),
                _ => {
                    release().await;
                    return Err(key_reused());
                }
            }
        }
        Err(error) => {
            release().await;
            return Err(error.into());
        }
    };
    let response = SubmitOrderResponse::from(&order);
    let data = serde_json::to_value(&response).map_err(internal)?;
    if let Err(error) = state.models.complete(user, key, &order.status.to_string(), &data).await {
        // The order stands; a retry finds the claim stale and recovers the answer from the order.
        tracing::warn!(%error, %key, %user, %order_id, "could not store the answer to an Idempotency-Key");
    }
    let mut answer = HttpResponse::Accepted();
    if replay {
        answer.insert_header(("Idempotent-Replayed", "true"));
    }
    Ok(answer.json(data))
}

/// Whether `order` is what `request` asks for (a retry of it, not another order).
fn same_order(order: &crate::order::Order, request: &SubmitRequest) -> bool {
    order.symbol.as_str() == request.symbol
        && order.side == request.side
        && order.order_type == request.order_type
        && order.quantity == request.quantity
        && order.limit_price == request.limit_price
        && order.stop_price == request.stop_price
}

fn internal(error: impl std::fmt::Display) -> Problem {
    Problem::from(EngineError::Internal(error.to_string()))
}

fn unavailable(error: impl std::fmt::Display) -> Problem {
    Problem::from(EngineError::Unavailable(error.to_string()))
}

/// The engine's request for a submission body, or why the body's prices do not fit its type.
fn order_request(
    user: Uuid,
    who: String,
    body: OrderBody,
    order_id: Option<Uuid>,
    trace: Option<TraceContext>,
) -> Result<SubmitRequest, Problem> {
    // The seed's single `price` means the limit or the stop depending on the type.
    let (limit_price, stop_price) = match body.order_type {
        OrderType::Market if body.price.is_some() || body.stop_price.is_some() => {
            return Err(unprocessable(
                "a MARKET order takes no price; remove it or send a LIMIT order",
            ))
        }
        OrderType::Market => (None, None),
        OrderType::Limit | OrderType::StopLimit if body.price.is_none() => {
            return Err(unprocessable(&format!(
                "a {} order needs a price (its limit)",
                body.order_type
            )))
        }
        OrderType::Limit if body.stop_price.is_some() => {
            return Err(unprocessable(
                "a LIMIT order takes no stop_price; send a STOP_LIMIT order",
            ))
        }
        OrderType::Limit => (body.price, None),
        OrderType::StopLimit => (body.price, body.stop_price),
        OrderType::StopLoss => match (body.price, body.stop_price) {
            (Some(stop), None) | (None, Some(stop)) => (None, Some(stop)),
            (Some(_), Some(_)) => {
                return Err(unprocessable(
                    "a STOP_LOSS order takes one price (its stop); send price or stop_price",
                ))
            }
            (None, None) => return Err(unprocessable("a STOP_LOSS order needs a price (its stop)")),
        },
    };
    Ok(SubmitRequest {
        order_id,
        user_id: user,
        symbol: body.symbol,
        side: body.order_side,
        order_type: body.order_type,
        quantity: body.quantity,
        limit_price,
        stop_price,
        metadata: EventMetadata {
            who: Some(who),
            source: Some("http".into()),
            trace,
            ..EventMetadata::default()
        },
    })
}

#[utoipa::path(get, path = "/api/v1/orders/history", tag = "orders", params(HistoryQuery),
    responses((status = 200, body = HistoryResponse),
        (status = 400, description = "A parameter out of its bounds or not a number, an unknown status or parameter, or both offset and page",
            body = ProblemDoc, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn history(
    state: web::Data<AppState>,
    caller: Authorized<requires::GetOrders>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, Problem> {
    let user = caller.user_id;
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
    let page = state
        .models
        .history(user, query.status, limit, offset)
        .await
        .map_err(|e| Problem::from(EngineError::Unavailable(e.to_string())))?;
    Ok(HttpResponse::Ok().json(HistoryResponse {
        orders: page.orders.iter().map(OrderDetails::from).collect(),
        total_count: page.total_count,
        limit,
        offset,
    }))
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

fn out_of_bounds(name: &str, minimum: u64, maximum: u64) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, "invalid-query", "Invalid query")
        .with_detail(format!("{name} must be a whole number from {minimum} to {maximum}"))
        .with_extension("parameter", name)
        .with_extension("minimum", minimum)
        .with_extension("maximum", maximum)
}

#[utoipa::path(get, path = "/api/v1/orders/{order_id}", tag = "orders", params(("order_id" = Uuid, Path)),
    responses((status = 200, body = OrderDetails), (status = 400, description = "order_id is not a UUID", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such order for this user", body = ProblemDoc, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn get(
    state: web::Data<AppState>,
    caller: Authorized<requires::GetOrders>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    let order = state.engine.owned(path.into_inner(), caller.user_id).await?;
    Ok(HttpResponse::Ok().json(OrderDetails::from(&order)))
}

#[utoipa::path(get, path = "/api/v1/orders/{order_id}/status", tag = "orders", params(("order_id" = Uuid, Path)),
    responses((status = 200, body = OrderStatusResponse), (status = 400, description = "order_id is not a UUID", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such order for this user", body = ProblemDoc, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn status(
    state: web::Data<AppState>,
    caller: Authorized<requires::GetOrders>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    let order = state.engine.owned(path.into_inner(), caller.user_id).await?;
    Ok(HttpResponse::Ok().json(OrderStatusResponse::from(&order)))
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
    path: web::Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    let user = caller.user_id;
    let order = state
        .engine
        .cancel(path.into_inner(), user, "cancelled by the user")
        .await?;
    Ok(HttpResponse::Ok().json(CancelOrderResponse {
        order_id: order.id,
        status: order.status,
        cancelled_at: order.updated_at,
    }))
}

#[utoipa::path(get, path = "/api/v1/orders/{order_id}/events", tag = "orders", params(("order_id" = Uuid, Path)),
    responses((status = 200, description = "The order's events, its saga's steps and the ledger entries it caused, in log order", body = OrderEventsDoc),
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
