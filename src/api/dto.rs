//! The JSON shapes of the order routes, field for field as seed 004 section 2.1.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::order::{Order, OrderStatus, OrderType, Side};
use crate::projections::OrderRow;

/// POST /api/v1/orders. `price` is the limit for LIMIT and STOP_LIMIT and the
/// stop for STOP_LOSS, as in the seed; STOP_LIMIT also takes `stop_price`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitOrderBody {
    pub symbol: String,
    #[schema(value_type = String, example = "LIMIT")]
    pub order_type: OrderType,
    #[schema(value_type = String, example = "BUY")]
    pub order_side: Side,
    pub quantity: Decimal,
    #[serde(default)]
    pub price: Option<Decimal>,
    #[serde(default)]
    pub stop_price: Option<Decimal>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SubmitOrderResponse {
    pub order_id: Uuid,
    #[schema(value_type = String, example = "PENDING")]
    pub status: OrderStatus,
    #[serde(with = "crate::wire::exact_number_option")]
    pub estimated_price: Option<Decimal>,
    #[serde(with = "crate::wire::exact_number_option")]
    pub estimated_value: Option<Decimal>,
    #[serde(with = "crate::wire::exact_number_option")]
    pub market_price: Option<Decimal>,
    pub submitted_at: DateTime<Utc>,
}

impl From<&Order> for SubmitOrderResponse {
    fn from(order: &Order) -> Self {
        let estimated_price = order.limit_price.or(order.market_price_at_submission);
        Self {
            order_id: order.id,
            status: order.status,
            estimated_price,
            estimated_value: estimated_price.map(|p| p * order.quantity),
            market_price: order.market_price_at_submission,
            submitted_at: order.created_at,
        }
    }
}

/// GET /api/v1/orders/{id}: the seed's OrderDetails.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OrderDetails {
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub symbol: String,
    #[schema(value_type = String, example = "LIMIT")]
    pub order_type: OrderType,
    #[schema(value_type = String, example = "BUY")]
    pub order_side: Side,
    #[serde(with = "crate::wire::exact_number")]
    pub quantity: Decimal,
    #[serde(with = "crate::wire::exact_number_option")]
    pub price: Option<Decimal>,
    #[serde(with = "crate::wire::exact_number_option")]
    pub stop_price: Option<Decimal>,
    #[schema(value_type = String, example = "PENDING")]
    pub status: OrderStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub executed_at: Option<DateTime<Utc>>,
    #[serde(with = "crate::wire::exact_number_option")]
    pub execution_price: Option<Decimal>,
    #[serde(with = "crate::wire::exact_number_option")]
    pub market_price_at_submission: Option<Decimal>,
    pub market_data_timestamp: Option<DateTime<Utc>>,
    #[serde(with = "crate::wire::exact_number_option")]
    pub estimated_value: Option<Decimal>,
    #[serde(with = "crate::wire::exact_number_option")]
    pub execution_value: Option<Decimal>,
    pub failure_reason: Option<String>,
}

impl From<&Order> for OrderDetails {
    fn from(order: &Order) -> Self {
        let price = match order.order_type {
            OrderType::StopLoss => order.stop_price,
            _ => order.limit_price,
        };
        let reference = order.limit_price.or(order.market_price_at_submission);
        Self {
            order_id: order.id,
            user_id: order.user_id,
            symbol: order.symbol.to_string(),
            order_type: order.order_type,
            order_side: order.side,
            quantity: order.quantity,
            price,
            stop_price: order.stop_price,
            status: order.status,
            created_at: order.created_at,
            updated_at: order.updated_at,
            executed_at: order.execution.as_ref().map(|e| e.executed_at),
            execution_price: order.execution.as_ref().map(|e| e.price),
            market_price_at_submission: order.market_price_at_submission,
            market_data_timestamp: order.market_data_timestamp,
            estimated_value: reference.map(|p| p * order.quantity),
            execution_value: order.execution.as_ref().map(|e| e.total_value),
            failure_reason: order.reason.clone(),
        }
    }
}

impl From<&OrderRow> for OrderDetails {
    fn from(row: &OrderRow) -> Self {
        let reference = match row.order_type {
            OrderType::Limit | OrderType::StopLimit => row.price,
            _ => row.market_price_at_submission,
        };
        Self {
            order_id: row.id,
            user_id: row.user_id,
            symbol: row.symbol.clone(),
            order_type: row.order_type,
            order_side: row.order_side,
            quantity: row.quantity,
            price: row.price,
            stop_price: row.stop_price,
            status: row.status,
            created_at: row.created_at,
            updated_at: row.updated_at,
            executed_at: row.executed_at,
            execution_price: row.execution_price,
            market_price_at_submission: row.market_price_at_submission,
            market_data_timestamp: row.market_data_timestamp,
            estimated_value: reference.map(|p| p * row.quantity),
            execution_value: row.execution_value,
            failure_reason: row.failure_reason.clone(),
        }
    }
}

/// GET /api/v1/orders/history query: `limit` with `offset`, or the seed's `page` (from 1).
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    pub limit: Option<u32>,
    pub offset: Option<u64>,
    pub page: Option<u64>,
    #[param(value_type = Option<String>, example = "EXECUTED")]
    pub status: Option<OrderStatus>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HistoryResponse {
    pub orders: Vec<OrderDetails>,
    pub total_count: u64,
    pub limit: u32,
    pub offset: u64,
}

/// GET /api/v1/orders/{id}/status.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OrderStatusResponse {
    pub order_id: Uuid,
    #[schema(value_type = String, example = "PENDING")]
    pub status: OrderStatus,
    pub status_message: String,
    pub updated_at: DateTime<Utc>,
}

impl From<&Order> for OrderStatusResponse {
    fn from(order: &Order) -> Self {
        let status_message = match (order.status, &order.reason) {
            (_, Some(reason)) => reason.clone(),
            (OrderStatus::Pending, None) => "accepted; reserving funds".to_owned(),
            (OrderStatus::Processing, None) if order.triggered_at.is_some() => "triggered; working".to_owned(),
            (OrderStatus::Processing, None) => "working in the market".to_owned(),
            (OrderStatus::Executed, None) => "executed".to_owned(),
            (status, None) => status.to_string(),
        };
        Self {
            order_id: order.id,
            status: order.status,
            status_message,
            updated_at: order.updated_at,
        }
    }
}

/// PUT /api/v1/orders/{id}/cancel.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CancelOrderResponse {
    pub order_id: Uuid,
    #[schema(value_type = String, example = "PENDING")]
    pub status: OrderStatus,
    pub cancelled_at: DateTime<Utc>,
}
