//! The order service's operations as both transports run them: HTTP
//! (`api::orders`) and gRPC (`crate::grpc`) authenticate the caller and read
//! their own wire format, then call here, so a rule, a refusal and its slug
//! are the same whichever way an order came in.
//!
//! Must never know a transport: callers bring an authenticated user and exact
//! amounts, and get a response DTO (with its `api_response`) or a [`Problem`],
//! whose status and slug each transport renders its own way. Every write goes
//! through the engine facade, never the store.
// A `Problem` is the error response itself, built once per refused request:
// boxing it would allocate on every error path to shrink a value that is
// moved once, so the size lint is relaxed for this module.
#![allow(clippy::result_large_err)]

use std::time::Instant;

use actix_web::http::StatusCode;
use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::dto::{
    ApiResponse, CancelOrderResponse, HistoryResponse, OrderBody, OrderDetails, OrderDetailsResponse,
    OrderStatusResponse, SubmitOrderResponse,
};
use super::problem::{Problem, RETRY_AFTER_UNAVAILABLE};
use super::AppState;
use crate::auth::{AuthenticatedUser, Permission};
use crate::controls::audit::{self, AuditOutcome, AuditRecord};
use crate::engine::{EngineError, SubmitRequest, ENGINE_NAMESPACE};
use crate::events::{EventMetadata, TraceContext};
use crate::order::{OrderRejection, OrderStatus, OrderType};
use crate::projections::{IdempotencyClaim, IdempotencyRecord, IDEMPOTENCY_IN_FLIGHT};

/// Longest Idempotency-Key accepted (the seed's VARCHAR(255)).
pub const IDEMPOTENCY_KEY_LEN_MAX: usize = 255;
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
/// Longest caller-sent request id echoed in `api_response.request_id`.
pub const REQUEST_ID_LEN_MAX: usize = 128;

/// The id of this call for `api_response.request_id`: the caller's own
/// (`X-Request-Id`, gRPC `x-request-id`) when it is 1 to
/// [`REQUEST_ID_LEN_MAX`] visible ASCII characters, else a fresh UUID, so a
/// gateway can follow one call through both hops.
pub fn request_id(sent: Option<&str>) -> String {
    match sent.map(str::trim) {
        Some(id) if !id.is_empty() && id.len() <= REQUEST_ID_LEN_MAX && id.chars().all(|c| c.is_ascii_graphic()) => {
            id.to_owned()
        }
        _ => Uuid::new_v4().to_string(),
    }
}

/// An Idempotency-Key as sent (header or metadata), checked for length and characters.
pub fn idempotency_key(raw: Option<&str>) -> Result<Option<String>, Problem> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let key = raw.trim();
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

/// The answer to a submission: the response body (the stored one when
/// replayed), and whether it is the first answer to an earlier request with
/// the same Idempotency-Key.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub body: serde_json::Value,
    pub replayed: bool,
}

/// Where a call came in, for the events' metadata.
#[derive(Debug, Clone, Copy)]
pub struct CallContext<'a> {
    /// `http` or `grpc`.
    pub source: &'static str,
    pub request_id: &'a str,
    /// The trace the events continue: the call's span when traces are
    /// exported, else the caller's `traceparent` as it came.
    pub trace: Option<&'a TraceContext>,
}

/// Submits an order, once per Idempotency-Key when one is given: the same key
/// and request get the first answer, another request with the key is refused.
/// A refusal is audited here (an AUDIT_EVENT line); an acceptance is audited
/// from the log (`controls::audit`), where every door's orders meet.
pub async fn submit(
    state: &AppState,
    caller: &AuthenticatedUser,
    body: OrderBody,
    key: Option<String>,
    call: CallContext<'_>,
) -> Result<Submitted, Problem> {
    let terms = (
        body.symbol.clone(),
        body.order_side,
        body.order_type,
        body.quantity,
        body.price,
    );
    let result = submit_unaudited(state, caller, body, key, call).await;
    if let Err(problem) = &result {
        let (symbol, side, order_type, quantity, price) = terms;
        let who = caller.who();
        audit::emit(
            AuditOutcome::Refused,
            &AuditRecord {
                user_id: Some(caller.user_id),
                symbol: Some(symbol.as_str()),
                side: Some(side),
                order_type: Some(order_type),
                quantity: Some(quantity),
                price,
                source: Some(call.source),
                who: Some(&who),
                reason: Some(problem.slug()),
                at: Some(Utc::now()),
                ..AuditRecord::default()
            },
        );
    }
    result
}

async fn submit_unaudited(
    state: &AppState,
    caller: &AuthenticatedUser,
    body: OrderBody,
    key: Option<String>,
    call: CallContext<'_>,
) -> Result<Submitted, Problem> {
    caller.require(Permission::PlaceOrder)?;
    let user = caller.user_id;
    let Some(key) = key else {
        let order = state
            .engine
            .submit(order_request(user, caller.who(), body, None, call)?)
            .await?;
        let body = accepted(&order, call.request_id, false)?;
        return Ok(Submitted { body, replayed: false });
    };
    let hash = request_hash(&body);
    // The order id follows from the key: a retry that takes over a dead
    // request's claim submits the same order, which the engine records once.
    let order_id = Uuid::new_v5(&ENGINE_NAMESPACE, format!("{user}:idempotency:{key}").as_bytes());
    let submission = order_request(user, caller.who(), body, Some(order_id), call)?;
    match submit_once_per_key(state, submission.clone(), &key, &hash, call.request_id).await {
        Ok(submitted) => Ok(submitted),
        Err(Keyed::Refused(problem)) => Err(problem),
        Err(Keyed::Unchecked(cause)) if state.controls.settings.idempotency_fail_closed => {
            tracing::warn!(%cause, %key, %user, "refusing an order: its Idempotency-Key could not be checked (fail-closed)");
            Err(idempotency_unavailable())
        }
        Err(Keyed::Unchecked(cause)) => {
            // Fail-open: the order id still follows from the key, so a retry
            // during the outage meets the first order in the log (recorded
            // once) and gets its answer; only the stored answer is missing.
            tracing::warn!(%cause, %key, %user, "submitting without checking the Idempotency-Key (ORDER_SERVICE_IDEMPOTENCY_FAIL_CLOSED=false)");
            let (order, replay) = submit_keyed(state, submission).await?;
            let body = accepted(&order, call.request_id, replay)?;
            Ok(Submitted { body, replayed: replay })
        }
    }
}

/// Why a keyed submission produced no answer.
enum Keyed {
    /// A refusal to answer with.
    Refused(Problem),
    /// The idempotency record could not be read or written (the cause, for the log).
    Unchecked(String),
}

impl From<Problem> for Keyed {
    fn from(problem: Problem) -> Self {
        Self::Refused(problem)
    }
}

fn unchecked(error: impl std::fmt::Display) -> Keyed {
    Keyed::Unchecked(error.to_string())
}

/// 503 for an order whose Idempotency-Key could not be checked (fail-closed).
fn idempotency_unavailable() -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "idempotency-unavailable",
        "Idempotency check unavailable",
    )
    .with_detail(format!(
        "the Idempotency-Key could not be checked against earlier requests, so the order was not submitted \
         rather than risk a duplicate; nothing was recorded. Retry with the same key in {} s",
        RETRY_AFTER_UNAVAILABLE.as_secs()
    ))
    .with_retry_after(RETRY_AFTER_UNAVAILABLE)
}

/// Claims the key and submits, or answers with the first request's answer.
async fn submit_once_per_key(
    state: &AppState,
    submission: SubmitRequest,
    key: &str,
    hash: &str,
    request_id: &str,
) -> Result<Submitted, Keyed> {
    let (user, order_id) = (submission.user_id, submission.order_id.unwrap_or_default());
    let deadline = Instant::now() + IDEMPOTENCY_WAIT_MAX;
    loop {
        let now = Utc::now();
        let claim = IdempotencyRecord {
            idempotency_key: key.to_owned(),
            user_id: user,
            order_id,
            status: IDEMPOTENCY_IN_FLIGHT.to_owned(),
            request_hash: hash.to_owned(),
            response_data: serde_json::Value::Null,
            created_at: now,
            expires_at: now + Duration::hours(IDEMPOTENCY_TTL_HOURS),
        };
        match state.models.claim(claim).await.map_err(unchecked)? {
            IdempotencyClaim::Won => return Ok(submit_claimed(state, submission, key, now, request_id).await?),
            IdempotencyClaim::Released => {}
            IdempotencyClaim::Held(record) => match wait_for_answer(state, record, hash, deadline).await? {
                Waited::Answered(record) => return Ok(replayed(&record, request_id)),
                Waited::Gone => {}
            },
        }
        if Instant::now() >= deadline {
            return Err(in_progress().into());
        }
    }
}

/// The 202 body for `order`.
fn accepted(order: &crate::order::Order, request_id: &str, replay: bool) -> Result<serde_json::Value, Problem> {
    let message = if replay {
        "the first answer to this Idempotency-Key: the order was accepted then"
    } else {
        "order accepted; funds are reserved next"
    };
    let response = SubmitOrderResponse::new(order, ApiResponse::ok(StatusCode::ACCEPTED, message, request_id));
    serde_json::to_value(&response).map_err(internal)
}

/// What makes two submissions the same request, whatever their spelling.
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

/// The stored first answer. One stored before answers carried `api_response`
/// gets one, so every 202 has the same shape.
fn replayed(record: &IdempotencyRecord, request_id: &str) -> Submitted {
    let mut body = record.response_data.clone();
    if let Some(object) = body.as_object_mut() {
        if !object.contains_key("api_response") {
            let api = ApiResponse::ok(
                StatusCode::ACCEPTED,
                "the first answer to this Idempotency-Key: the order was accepted then",
                request_id,
            );
            if let Ok(api) = serde_json::to_value(api) {
                object.insert("api_response".into(), api);
            }
        }
    }
    Submitted { body, replayed: true }
}

/// What waiting on another request's claim of a key ended with.
enum Waited {
    /// Its answer, to replay.
    Answered(IdempotencyRecord),
    /// The claim is gone (released, expired, or dropped as stale): claim again.
    Gone,
}

/// Waits, bounded by `deadline`, for the request holding the key to answer.
async fn wait_for_answer(
    state: &AppState,
    mut record: IdempotencyRecord,
    hash: &str,
    deadline: Instant,
) -> Result<Waited, Keyed> {
    let mut pause = IDEMPOTENCY_POLL_MIN;
    loop {
        if record.request_hash != hash {
            return Err(key_reused().into());
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
                .map_err(unchecked)?;
            return Ok(Waited::Gone);
        }
        if Instant::now() + pause > deadline {
            return Err(in_progress().into());
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(IDEMPOTENCY_POLL_MAX);
        match state
            .models
            .idempotency(record.user_id, &record.idempotency_key, Utc::now())
            .await
            .map_err(unchecked)?
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
    request_id: &str,
) -> Result<Submitted, Problem> {
    let (user, order_id) = (submission.user_id, submission.order_id.unwrap_or_default());
    let release = || async {
        if let Err(error) = state.models.release(user, key, claimed_at).await {
            // The claim then goes stale and the next retry takes it over.
            tracing::warn!(%error, %key, %user, "could not release an Idempotency-Key claim");
        }
    };
    let (order, replay) = match submit_keyed(state, submission).await {
        Ok(submitted) => submitted,
        Err(problem) => {
            release().await;
            return Err(problem);
        }
    };
    let body = accepted(&order, request_id, replay)?;
    if let Err(error) = state.models.complete(user, key, &order.status.to_string(), &body).await {
        // The order stands; a retry finds the claim stale and recovers the answer from the order.
        tracing::warn!(%error, %key, %user, %order_id, "could not store the answer to an Idempotency-Key");
    }
    Ok(Submitted { body, replayed: replay })
}

/// Submits under the key's order id. The order already there under that id
/// is the answer when it is the same order (a claim taken over from a
/// crashed request whose order got through, or a retry that could not be
/// checked); another order there means the key was reused.
async fn submit_keyed(state: &AppState, submission: SubmitRequest) -> Result<(crate::order::Order, bool), Problem> {
    let (user, order_id) = (submission.user_id, submission.order_id.unwrap_or_default());
    let expected = submission.clone();
    match state.engine.submit(submission).await {
        Ok(order) => Ok((order, false)),
        Err(EngineError::Rejected(OrderRejection::AlreadySubmitted { .. })) => {
            match state.engine.owned(order_id, user).await {
                Ok(order) if same_order(&order, &expected) => Ok((order, true)),
                _ => Err(key_reused()),
            }
        }
        Err(error) => Err(error.into()),
    }
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

pub fn internal(error: impl std::fmt::Display) -> Problem {
    Problem::from(EngineError::Internal(error.to_string()))
}

pub fn unavailable(error: impl std::fmt::Display) -> Problem {
    Problem::from(EngineError::Unavailable(error.to_string()))
}

fn unprocessable(detail: &str) -> Problem {
    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "order-rejected", "Order rejected").with_detail(detail)
}

/// The engine's request for a submission, or why its prices do not fit its type.
fn order_request(
    user: Uuid,
    who: String,
    body: OrderBody,
    order_id: Option<Uuid>,
    call: CallContext<'_>,
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
            source: Some(call.source.into()),
            trace: call.trace.cloned(),
            ..EventMetadata::default()
        },
    })
}

/// One of the caller's orders; another user's is a 404 like a missing one.
pub async fn details(
    state: &AppState,
    caller: &AuthenticatedUser,
    order_id: Uuid,
    refresh: Refresh,
    request_id: &str,
) -> Result<OrderDetailsResponse, Problem> {
    caller.require(Permission::GetOrders)?;
    let order = read_order(state, caller, order_id, refresh).await?;
    Ok(OrderDetailsResponse {
        api_response: ApiResponse::ok(StatusCode::OK, "the order as it stands", request_id),
        order: OrderDetails::from(&order),
    })
}

/// Where one of the caller's orders is.
pub async fn status(
    state: &AppState,
    caller: &AuthenticatedUser,
    order_id: Uuid,
    refresh: Refresh,
    request_id: &str,
) -> Result<OrderStatusResponse, Problem> {
    caller.require(Permission::GetOrders)?;
    let order = read_order(state, caller, order_id, refresh).await?;
    Ok(OrderStatusResponse::new(
        &order,
        ApiResponse::ok(StatusCode::OK, "the order's status", request_id),
    ))
}

/// Whether a read may be served from the engine's state (`Cached`), or must
/// be folded again from the log (`Forced`, `Cache-Control: no-cache` over
/// HTTP): a forced refresh is rate limited per caller by
/// `ORDER_SERVICE_HARD_REFRESH_RATE_LIMIT_SECONDS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    Cached,
    Forced,
}

async fn read_order(
    state: &AppState,
    caller: &AuthenticatedUser,
    order_id: Uuid,
    refresh: Refresh,
) -> Result<crate::order::Order, Problem> {
    match refresh {
        Refresh::Cached => Ok(state.engine.owned(order_id, caller.user_id).await?),
        Refresh::Forced => {
            if let Err(retry_after_secs) = state.engine.deps().controls.hard_refresh(caller.user_id) {
                return Err(Problem::hard_refresh_limited(retry_after_secs));
            }
            Ok(state.engine.reread(order_id, caller.user_id).await?)
        }
    }
}

/// Cancels one of the caller's orders.
pub async fn cancel(
    state: &AppState,
    caller: &AuthenticatedUser,
    order_id: Uuid,
    request_id: &str,
) -> Result<CancelOrderResponse, Problem> {
    caller.require(Permission::CancelOrder)?;
    let order = state
        .engine
        .cancel(order_id, caller.user_id, "cancelled by the user")
        .await?;
    Ok(CancelOrderResponse {
        api_response: ApiResponse::ok(StatusCode::OK, "order cancelled", request_id),
        order_id: order.id,
        status: order.status,
        cancelled_at: order.updated_at,
    })
}

/// A page of the caller's orders, newest first; bounds are checked by the transport.
pub async fn history(
    state: &AppState,
    caller: &AuthenticatedUser,
    status: Option<OrderStatus>,
    limit: u32,
    offset: u64,
    request_id: &str,
) -> Result<HistoryResponse, Problem> {
    caller.require(Permission::GetOrders)?;
    let page = state
        .models
        .history(caller.user_id, status, limit, offset)
        .await
        .map_err(unavailable)?;
    let message = format!("{} of {} orders", page.orders.len(), page.total_count);
    Ok(HistoryResponse {
        api_response: ApiResponse::ok(StatusCode::OK, message, request_id),
        orders: page.orders.iter().map(OrderDetails::from).collect(),
        total_count: page.total_count,
        limit,
        offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_id_is_the_callers_when_usable_else_fresh() {
        // Proves a gateway's id is echoed and anything unusable is replaced by a UUID.
        assert_eq!(request_id(Some("gw-42")), "gw-42");
        for unusable in [
            None,
            Some(""),
            Some("has space"),
            Some(&*"x".repeat(REQUEST_ID_LEN_MAX + 1)),
        ] {
            let id = request_id(unusable);
            assert!(Uuid::parse_str(&id).is_ok(), "{unusable:?} gave {id}");
        }
    }
}
