//! The JSON shapes of the order routes, field for field as seed 004 section 2.1.
// `Problem` is the error response itself, moved once per refused request (as
// in orders.rs): boxing it would allocate on every error path for nothing.
#![allow(clippy::result_large_err)]

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use std::str::FromStr;

use actix_web::http::StatusCode;

use super::problem::Problem;
use crate::order::{Order, OrderStatus, OrderType, Side, DECIMAL_INTEGER_DIGITS_MAX, DECIMAL_SCALE_MAX};
use crate::projections::{OrderRow, HISTORY_LIMIT_MAX};

/// POST /api/v1/orders. `price` is the limit for LIMIT and STOP_LIMIT and the
/// stop for STOP_LOSS, as in the seed; STOP_LIMIT also takes `stop_price`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitOrderBody {
    /// A listed symbol; an unlisted one is refused with 422.
    #[schema(min_length = 1, max_length = 20, pattern = r"^[A-Z][A-Z0-9.\-]*$", example = "AAPL")]
    pub symbol: String,
    #[schema(value_type = OrderTypeDoc)]
    pub order_type: OrderType,
    #[schema(value_type = SideDoc)]
    pub order_side: Side,
    #[schema(schema_with = amount_schema)]
    pub quantity: Amount,
    #[serde(default)]
    #[schema(schema_with = optional_amount_schema)]
    pub price: Option<Amount>,
    #[serde(default)]
    #[schema(schema_with = optional_amount_schema)]
    pub stop_price: Option<Amount>,
}

/// A submission whose amounts are exact decimals.
#[derive(Debug, Clone)]
pub struct OrderBody {
    pub symbol: String,
    pub order_type: OrderType,
    pub order_side: Side,
    pub quantity: Decimal,
    pub price: Option<Decimal>,
    pub stop_price: Option<Decimal>,
}

impl SubmitOrderBody {
    /// The amounts as decimals, or a 422 naming one no amount can be.
    pub fn exact(self) -> Result<OrderBody, Problem> {
        Ok(OrderBody {
            quantity: self.quantity.exact("quantity", "invalid-quantity")?,
            price: self.price.map(|p| p.exact("price", "invalid-price")).transpose()?,
            stop_price: self
                .stop_price
                .map(|p| p.exact("stop_price", "invalid-price"))
                .transpose()?,
            symbol: self.symbol,
            order_type: self.order_type,
            order_side: self.order_side,
        })
    }
}

/// A quantity or price as sent. Any JSON number is well formed here: one
/// that no decimal holds exactly (1e-254, 40 significant digits) breaks the
/// amount rule (at most 8 decimals, below 10^10) and is refused with 422 like
/// any other amount out of bounds, not 400 as if it were malformed.
#[derive(Debug, Clone, PartialEq)]
pub enum Amount {
    Exact(Decimal),
    /// The number's text, which no `Decimal` represents.
    Unrepresentable(String),
}

impl Amount {
    pub fn exact(self, field: &str, slug: &str) -> Result<Decimal, Problem> {
        match self {
            Self::Exact(value) => Ok(value),
            Self::Unrepresentable(text) => Err(Problem::new(StatusCode::UNPROCESSABLE_ENTITY, slug, "Order rejected")
                .with_detail(format!(
                    "{field} {text} is not an amount: at most {DECIMAL_SCALE_MAX} decimal places and below \
                 10^{DECIMAL_INTEGER_DIGITS_MAX}"
                ))),
        }
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        // serde_json's arbitrary precision keeps a number's text as sent.
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::Number(number) => {
                let text = number.to_string();
                Ok(Decimal::from_str(&text)
                    .or_else(|_| Decimal::from_scientific(&text))
                    .map_or(Self::Unrepresentable(text), Self::Exact))
            }
            serde_json::Value::String(text) => Decimal::from_str(&text)
                .map(Self::Exact)
                .map_err(|e| D::Error::custom(format!("{text:?} is not a decimal amount: {e}"))),
            other => Err(D::Error::custom(format!(
                "invalid type: {other}, expected an amount (a number, or a decimal as a string)"
            ))),
        }
    }
}

/// Above zero and below this: what `DECIMAL(18, 8)` holds (10 integer digits).
/// A float only because utoipa's schema bounds are `f64`: it is written into
/// the OpenAPI document and never meets an amount (amounts are `Decimal`).
const AMOUNT_EXCLUSIVE_MAX: f64 = 1e10;
/// An amount as text: what a JSON number above would be, at most 8 decimals.
const AMOUNT_TEXT_PATTERN: &str = r"^[0-9]{1,10}(\.[0-9]{1,8})?$";

/// A quantity or price: a JSON number, or the same as a string (exact
/// decimals whatever the client's float type), above zero, below 10^10, with
/// at most 8 decimals (refused with 422 beyond).
pub fn amount_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
    Schema::OneOf(
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Number)
                    .exclusive_minimum(Some(0.0))
                    .exclusive_maximum(Some(AMOUNT_EXCLUSIVE_MAX)),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(AMOUNT_TEXT_PATTERN)),
            )
            .description(Some(
                "Above 0 and below 10^10, at most 8 decimal places; a number, or the same as a string",
            ))
            .build(),
    )
}

/// [`amount_schema`], or null / absent.
pub fn optional_amount_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
    let Schema::OneOf(amount) = amount_schema() else {
        return amount_schema();
    };
    let mut nullable = OneOfBuilder::from(amount);
    nullable = nullable.item(ObjectBuilder::new().schema_type(Type::Null));
    Schema::OneOf(nullable.build())
}

/// The document's spelling of [`OrderType`]; [`OrderTypeDoc::of`] is exhaustive,
/// so a new order type does not compile until it is documented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderTypeDoc {
    Market,
    Limit,
    StopLoss,
    StopLimit,
}

impl OrderTypeDoc {
    pub fn of(value: OrderType) -> Self {
        match value {
            OrderType::Market => Self::Market,
            OrderType::Limit => Self::Limit,
            OrderType::StopLoss => Self::StopLoss,
            OrderType::StopLimit => Self::StopLimit,
        }
    }
}

/// The document's spelling of [`Side`] (see [`OrderTypeDoc`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SideDoc {
    Buy,
    Sell,
}

impl SideDoc {
    pub fn of(value: Side) -> Self {
        match value {
            Side::Buy => Self::Buy,
            Side::Sell => Self::Sell,
        }
    }
}

/// The document's spelling of [`OrderStatus`] (see [`OrderTypeDoc`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatusDoc {
    Pending,
    Processing,
    Executed,
    Cancelled,
    Failed,
}

impl OrderStatusDoc {
    pub fn of(value: OrderStatus) -> Self {
        match value {
            OrderStatus::Pending => Self::Pending,
            OrderStatus::Processing => Self::Processing,
            OrderStatus::Executed => Self::Executed,
            OrderStatus::Cancelled => Self::Cancelled,
            OrderStatus::Failed => Self::Failed,
        }
    }
}

/// The outcome of a call, as the proto's `APIResponse`: every HTTP success
/// body carries it as `api_response` (errors stay problem+json, whose `type`
/// ends in the same slug gRPC puts in `error_code`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApiResponse {
    /// False exactly when the call failed.
    pub success: bool,
    /// The HTTP status of the answer (202, 200, or the problem's status).
    #[schema(minimum = 100, maximum = 599)]
    pub status_code: u16,
    /// Empty on success; else the problem's slug, e.g. `order-not-found`.
    pub error_code: String,
    /// A sentence a person can act on.
    pub message: String,
    /// The caller's `X-Request-Id` (or gRPC `x-request-id`) when it sent a usable one, else a fresh UUID.
    pub request_id: String,
}

impl ApiResponse {
    pub fn ok(status: StatusCode, message: impl Into<String>, request_id: &str) -> Self {
        Self {
            success: true,
            status_code: status.as_u16(),
            error_code: String::new(),
            message: message.into(),
            request_id: request_id.to_owned(),
        }
    }

    /// A refusal: the problem's status, slug and sentence (its detail, else its title).
    pub fn refused(problem: &Problem, request_id: &str) -> Self {
        Self {
            success: false,
            status_code: problem.status().as_u16(),
            error_code: problem.slug().to_owned(),
            message: problem.detail().unwrap_or(problem.title()).to_owned(),
            request_id: request_id.to_owned(),
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SubmitOrderResponse {
    pub api_response: ApiResponse,
    pub order_id: Uuid,
    #[schema(value_type = OrderStatusDoc)]
    pub status: OrderStatus,
    #[serde(with = "crate::wire::exact_number_option")]
    pub estimated_price: Option<Decimal>,
    #[serde(with = "crate::wire::exact_number_option")]
    pub estimated_value: Option<Decimal>,
    #[serde(with = "crate::wire::exact_number_option")]
    pub market_price: Option<Decimal>,
    pub submitted_at: DateTime<Utc>,
}

impl SubmitOrderResponse {
    pub fn new(order: &Order, api_response: ApiResponse) -> Self {
        let estimated_price = order.limit_price.or(order.market_price_at_submission);
        Self {
            api_response,
            order_id: order.id,
            status: order.status,
            estimated_price,
            estimated_value: estimated_price.map(|p| p * order.quantity),
            market_price: order.market_price_at_submission,
            submitted_at: order.created_at,
        }
    }
}

/// GET /api/v1/orders/{id}: the proto's GetOrderDetailsResponse.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OrderDetailsResponse {
    pub api_response: ApiResponse,
    pub order: OrderDetails,
}

/// The seed's OrderDetails (with `stop_price` and `failure_reason` beside its fields).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OrderDetails {
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub symbol: String,
    #[schema(value_type = OrderTypeDoc)]
    pub order_type: OrderType,
    #[schema(value_type = SideDoc)]
    pub order_side: Side,
    #[serde(with = "crate::wire::exact_number")]
    pub quantity: Decimal,
    #[serde(with = "crate::wire::exact_number_option")]
    pub price: Option<Decimal>,
    #[serde(with = "crate::wire::exact_number_option")]
    pub stop_price: Option<Decimal>,
    #[schema(value_type = OrderStatusDoc)]
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

/// Largest `offset` accepted: 2^53, the largest whole number every JSON
/// client (and the document's own numbers) hold exactly; far below the
/// signed 64-bit OFFSET both databases take.
pub const HISTORY_OFFSET_MAX: u64 = 1 << 53;
/// Largest `page` accepted: with the largest `limit` its offset stays within
/// [`HISTORY_OFFSET_MAX`], so the page arithmetic cannot overflow.
pub const HISTORY_PAGE_MAX: u64 = HISTORY_OFFSET_MAX / HISTORY_LIMIT_MAX as u64 + 1;

/// GET /api/v1/orders/history query: `limit` with `offset`, the seed's `page`
/// (from 1), or both (pages counted from `offset`).
/// The numbers arrive as text and are checked by the handler, so that a value
/// out of bounds or too large for any integer type gets a problem naming it.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Orders per page (default 20).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
    /// Orders to skip, newest first; with `page`, pages count from here.
    #[param(value_type = Option<u64>, minimum = 0, maximum = 9_007_199_254_740_992_usize)]
    pub offset: Option<String>,
    /// The page of `limit` orders to return, from 1 (after `offset` when both are sent).
    #[param(value_type = Option<u64>, minimum = 1, maximum = 90_071_992_547_410_usize)]
    pub page: Option<String>,
    #[param(value_type = Option<OrderStatusDoc>, inline)]
    pub status: Option<OrderStatus>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HistoryResponse {
    pub api_response: ApiResponse,
    pub orders: Vec<OrderDetails>,
    pub total_count: u64,
    pub limit: u32,
    pub offset: u64,
}

/// GET /api/v1/orders/{id}/status.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OrderStatusResponse {
    pub api_response: ApiResponse,
    pub order_id: Uuid,
    #[schema(value_type = OrderStatusDoc)]
    pub status: OrderStatus,
    pub status_message: String,
    pub updated_at: DateTime<Utc>,
}

impl OrderStatusResponse {
    pub fn new(order: &Order, api_response: ApiResponse) -> Self {
        let status_message = match (order.status, &order.reason) {
            (_, Some(reason)) => reason.clone(),
            (OrderStatus::Pending, None) => "accepted; reserving funds".to_owned(),
            (OrderStatus::Processing, None) if order.triggered_at.is_some() => "triggered; working".to_owned(),
            (OrderStatus::Processing, None) => "working in the market".to_owned(),
            (OrderStatus::Executed, None) => "executed".to_owned(),
            (status, None) => status.to_string(),
        };
        Self {
            api_response,
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
    pub api_response: ApiResponse,
    pub order_id: Uuid,
    #[schema(value_type = OrderStatusDoc)]
    pub status: OrderStatus,
    pub cancelled_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_documented_enums_spell_the_served_ones() {
        // Proves each documented enum value is the JSON the server reads and writes for it.
        let statuses = [
            OrderStatus::Pending,
            OrderStatus::Processing,
            OrderStatus::Executed,
            OrderStatus::Cancelled,
            OrderStatus::Failed,
        ];
        for status in statuses {
            assert_eq!(
                serde_json::to_value(OrderStatusDoc::of(status)).unwrap(),
                serde_json::to_value(status).unwrap()
            );
        }
        for kind in [
            OrderType::Market,
            OrderType::Limit,
            OrderType::StopLoss,
            OrderType::StopLimit,
        ] {
            assert_eq!(
                serde_json::to_value(OrderTypeDoc::of(kind)).unwrap(),
                serde_json::to_value(kind).unwrap()
            );
        }
        for side in [Side::Buy, Side::Sell] {
            assert_eq!(
                serde_json::to_value(SideDoc::of(side)).unwrap(),
                serde_json::to_value(side).unwrap()
            );
        }
    }

    #[test]
    fn the_documented_bounds_are_the_enforced_ones() {
        // Proves the numbers in the document's attributes equal the constants the server checks.
        assert_eq!(HISTORY_OFFSET_MAX, 9_007_199_254_740_992);
        assert_eq!(HISTORY_PAGE_MAX, 90_071_992_547_410);
        assert_eq!(HISTORY_LIMIT_MAX, 100);
        assert_eq!(crate::order::SYMBOL_LEN_MAX, 20);
        assert_eq!(
            AMOUNT_EXCLUSIVE_MAX,
            10_f64.powi(i32::try_from(crate::order::DECIMAL_INTEGER_DIGITS_MAX).unwrap())
        );
        assert_eq!(
            AMOUNT_TEXT_PATTERN,
            format!(
                r"^[0-9]{{1,{}}}(\.[0-9]{{1,{}}})?$",
                crate::order::DECIMAL_INTEGER_DIGITS_MAX,
                crate::order::DECIMAL_SCALE_MAX
            )
        );
    }
}
