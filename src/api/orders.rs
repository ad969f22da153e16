//! The order routes: submit, read, status, cancel, history, audit trail.
// A `Problem` is the error response itself, built once per refused request:
// boxing it would allocate on every error path to shrink a value that is
// moved once, so the size lint is relaxed for this module.
#![allow(clippy::result_large_err)]

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use uuid::Uuid;

use chrono::{Duration, Utc};
use sha2::{Digest, Sha256};

use super::dto::{
    CancelOrderResponse, HistoryQuery, HistoryResponse, OrderDetails, OrderStatusResponse, SubmitOrderBody,
    SubmitOrderResponse,
};
use super::openapi::ProblemDoc;
use super::problem::Problem;
use super::AppState;
use crate::auth::extractor::{requires, Authorized};
use crate::engine::{EngineError, SubmitRequest, ENGINE_NAMESPACE};
use crate::events::EventMetadata;
use crate::order::OrderType;
use crate::projections::{IdempotencyRecord, HISTORY_LIMIT_MAX};

/// Longest Idempotency-Key accepted (the seed's VARCHAR(255)).
const IDEMPOTENCY_KEY_LEN_MAX: usize = 255;
/// How long a stored answer to an Idempotency-Key is replayed.
const IDEMPOTENCY_TTL_HOURS: i64 = 24;
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
fn request_hash(body: &SubmitOrderBody) -> String {
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

fn replay(record: &IdempotencyRecord, hash: &str) -> Result<HttpResponse, Problem> {
    if record.request_hash != hash {
        return Err(key_reused());
    }
    Ok(HttpResponse::Accepted()
        .insert_header(("Idempotent-Replayed", "true"))
        .json(&record.response_data))
}

#[utoipa::path(post, path = "/api/v1/orders", tag = "orders", request_body = SubmitOrderBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Repeat-safe submission: the same key returns the first answer")),
    responses((status = 202, description = "Order accepted as PENDING", body = SubmitOrderResponse),
        (status = 400, description = "Malformed JSON, unknown field, wrong type", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "Missing, invalid or expired token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "Body over the size limit", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "The order breaks a rule (quantity, price, symbol), or the key was reused", body = ProblemDoc, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn submit(
    state: web::Data<AppState>,
    caller: Authorized<requires::PlaceOrder>,
    request: HttpRequest,
    body: web::Json<SubmitOrderBody>,
) -> Result<HttpResponse, Problem> {
    let user = caller.user_id;
    let body = body.into_inner();
    let Some(key) = idempotency_key(&request)? else {
        let order = submit_order(&state, user, caller.who(), body, None).await?;
        return Ok(HttpResponse::Accepted().json(SubmitOrderResponse::from(&order)));
    };
    let hash = request_hash(&body);
    let now = Utc::now();
    if let Some(record) = state.models.idempotency(user, &key, now).await.map_err(internal)? {
        return replay(&record, &hash);
    }
    // The order id follows from the key, so a retry racing this one submits the same order.
    let order_id = Uuid::new_v5(&ENGINE_NAMESPACE, format!("{user}:idempotency:{key}").as_bytes());
    let order = match submit_order(&state, user, caller.who(), body, Some(order_id)).await {
        Err(problem)
            if problem.status() == StatusCode::UNPROCESSABLE_ENTITY
                && state.engine.owned(order_id, user).await.is_ok() =>
        {
            // Same key, a concurrent request with another body got there first.
            return Err(key_reused());
        }
        other => other?,
    };
    let response = SubmitOrderResponse::from(&order);
    let record = IdempotencyRecord {
        idempotency_key: key,
        user_id: user,
        order_id,
        status: order.status.to_string(),
        request_hash: hash.clone(),
        response_data: serde_json::to_value(&response).map_err(|e| internal(e.to_string()))?,
        created_at: now,
        expires_at: now + Duration::hours(IDEMPOTENCY_TTL_HOURS),
    };
    let kept = state.models.remember(record).await.map_err(internal)?;
    if kept.request_hash != hash {
        return Err(key_reused());
    }
    Ok(HttpResponse::Accepted().json(response))
}

fn internal(error: impl std::fmt::Display) -> Problem {
    Problem::from(EngineError::Internal(error.to_string()))
}

async fn submit_order(
    state: &AppState,
    user: Uuid,
    who: String,
    body: SubmitOrderBody,
    order_id: Option<Uuid>,
) -> Result<crate::order::Order, Problem> {
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
    let order = state
        .engine
        .submit(SubmitRequest {
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
                ..EventMetadata::default()
            },
        })
        .await?;
    Ok(order)
}

#[utoipa::path(get, path = "/api/v1/orders/history", tag = "orders", params(HistoryQuery),
    responses((status = 200, body = HistoryResponse), (status = 400, body = ProblemDoc, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn history(
    state: web::Data<AppState>,
    caller: Authorized<requires::GetOrders>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, Problem> {
    let user = caller.user_id;
    let query = query.into_inner();
    let limit = query.limit.unwrap_or(HISTORY_LIMIT_DEFAULT);
    if limit == 0 || limit > HISTORY_LIMIT_MAX {
        return Err(Problem::new(StatusCode::BAD_REQUEST, "invalid-query", "Invalid query")
            .with_detail(format!("limit must be between 1 and {HISTORY_LIMIT_MAX}")));
    }
    let offset = match (query.offset, query.page) {
        (Some(_), Some(_)) => {
            return Err(Problem::new(StatusCode::BAD_REQUEST, "invalid-query", "Invalid query")
                .with_detail("send either offset or page, not both"))
        }
        (Some(offset), None) => offset,
        (None, Some(0)) => {
            return Err(Problem::new(StatusCode::BAD_REQUEST, "invalid-query", "Invalid query")
                .with_detail("page counts from 1"))
        }
        (None, Some(page)) => (page - 1).saturating_mul(u64::from(limit)),
        (None, None) => 0,
    };
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

#[utoipa::path(get, path = "/api/v1/orders/{order_id}", tag = "orders", params(("order_id" = Uuid, Path)),
    responses((status = 200, body = OrderDetails), (status = 404, description = "No such order for this user", body = ProblemDoc, content_type = "application/problem+json")),
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
    responses((status = 200, body = OrderStatusResponse), (status = 404, body = ProblemDoc, content_type = "application/problem+json")),
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
    responses((status = 200, body = CancelOrderResponse), (status = 404, body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "The order is already final", body = ProblemDoc, content_type = "application/problem+json")),
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
    responses((status = 200, description = "The order's events, its saga's steps and the ledger entries it caused, in log order"),
        (status = 404, body = ProblemDoc, content_type = "application/problem+json")),
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
