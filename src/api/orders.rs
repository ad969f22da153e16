//! The order routes: submit, read, status, cancel.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use uuid::Uuid;

use super::dto::{CancelOrderResponse, OrderDetails, OrderStatusResponse, SubmitOrderBody, SubmitOrderResponse};
use super::error::Problem;
use super::AppState;
use crate::engine::SubmitRequest;
use crate::events::EventMetadata;
use crate::order::OrderType;

/// The caller's user id, from `X-User-Id` until token authentication is wired.
fn user_id(request: &HttpRequest) -> Result<Uuid, Problem> {
    let header = request.headers().get("X-User-Id").ok_or_else(|| {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "Who is asking?",
            "send the user id in the X-User-Id header",
        )
    })?;
    header
        .to_str()
        .ok()
        .and_then(|v| Uuid::parse_str(v.trim()).ok())
        .ok_or_else(|| {
            Problem::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "Who is asking?",
                "X-User-Id must be a UUID",
            )
        })
}

fn unprocessable(detail: &str) -> Problem {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "order-rejected",
        "Order rejected",
        detail,
    )
}

pub async fn submit(
    state: web::Data<AppState>,
    request: HttpRequest,
    body: web::Json<SubmitOrderBody>,
) -> Result<HttpResponse, Problem> {
    let user = user_id(&request)?;
    let body = body.into_inner();
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
            order_id: None,
            user_id: user,
            symbol: body.symbol,
            side: body.order_side,
            order_type: body.order_type,
            quantity: body.quantity,
            limit_price,
            stop_price,
            metadata: EventMetadata {
                who: Some(format!("user:{user}")),
                source: Some("http".into()),
                ..EventMetadata::default()
            },
        })
        .await?;
    Ok(HttpResponse::Accepted().json(SubmitOrderResponse::from(&order)))
}

pub async fn get(
    state: web::Data<AppState>,
    request: HttpRequest,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    let order = state.engine.owned(path.into_inner(), user_id(&request)?).await?;
    Ok(HttpResponse::Ok().json(OrderDetails::from(&order)))
}

pub async fn status(
    state: web::Data<AppState>,
    request: HttpRequest,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    let order = state.engine.owned(path.into_inner(), user_id(&request)?).await?;
    Ok(HttpResponse::Ok().json(OrderStatusResponse::from(&order)))
}

pub async fn cancel(
    state: web::Data<AppState>,
    request: HttpRequest,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    let user = user_id(&request)?;
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
