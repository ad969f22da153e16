//! `monolith.OrderService`: the five RPCs of the proto, each a translation
//! between the proto's messages and `api::commands`, the path HTTP takes too.
//!
//! Must never decide anything itself beyond reading its wire format: rules,
//! refusals and their slugs live in the engine and `api::commands`. The one
//! check of its own is the proto's `user_id`, which must name the caller.
// A `Problem` is the error value itself, moved once per refused call.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use actix_web::http::StatusCode;
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status};
use tracing::Instrument;
use uuid::Uuid;

use super::money::{amount, double, double_of_json};
use super::pb;
use super::pb::order_service_server::OrderService;
use super::status::{api_response, refusal};
use super::CallerOutcome;
use crate::amqp::wire::parse_traceparent;
use crate::api::commands::{self, CallContext};
use crate::api::dto::{self, SubmitOrderBody};
use crate::api::orders::{out_of_bounds, HISTORY_LIMIT_DEFAULT};
use crate::api::problem::Problem;
use crate::api::AppState;
use crate::auth::{AuthError, AuthenticatedUser};
use crate::events::TraceContext;
use crate::projections::HISTORY_LIMIT_MAX;
use crate::telemetry::traces;

/// The metadata key of the Idempotency-Key (HTTP's header, lower case as gRPC requires).
pub const METADATA_IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The caller's request id, echoed in `api_response.request_id`.
pub const METADATA_REQUEST_ID: &str = "x-request-id";

/// The service over the application's state, as the HTTP handlers see it.
#[derive(Clone)]
pub struct OrderGrpc {
    state: Arc<AppState>,
}

impl OrderGrpc {
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }
}

/// What every call starts with: its request id and the caller the auth layer established.
struct Call {
    request_id: String,
    caller: AuthenticatedUser,
}

/// The call's request id and caller, or the refusal (with the request id) when auth failed.
fn begin<T>(request: &Request<T>) -> Result<Call, Status> {
    let request_id = commands::request_id(
        request
            .metadata()
            .get(METADATA_REQUEST_ID)
            .and_then(|v| v.to_str().ok()),
    );
    let outcome = request.extensions().get::<CallerOutcome>().cloned();
    let caller = match outcome {
        Some(CallerOutcome(outcome)) => outcome,
        None => Err(AuthError::NotConfigured(
            "the gRPC auth layer is not in front of the order service",
        )),
    };
    match caller {
        Ok(caller) => Ok(Call { request_id, caller }),
        Err(error) => Err(refusal(&Problem::from(error), &request_id)),
    }
}

impl Call {
    /// Refuses a `user_id` that is not the caller's (the token's subject, or the
    /// user a signed service acts for): PERMISSION_DENIED, and nothing runs.
    fn acting_for(&self, user_id: &str) -> Result<(), Status> {
        let named = Uuid::parse_str(user_id.trim()).ok();
        if named == Some(self.caller.user_id) {
            return Ok(());
        }
        let problem =
            Problem::new(StatusCode::FORBIDDEN, "user-id-not-caller", "Permission denied").with_detail(format!(
                "user_id {user_id:?} is not the user this call is authenticated for; send the caller's own user id"
            ));
        Err(self.refuse(&problem))
    }

    fn refuse(&self, problem: &Problem) -> Status {
        refusal(problem, &self.request_id)
    }

    fn order_id(&self, text: &str) -> Result<Uuid, Status> {
        Uuid::parse_str(text.trim()).map_err(|_| {
            self.refuse(
                &Problem::new(StatusCode::BAD_REQUEST, "invalid-path-parameter", "Invalid order id")
                    .with_detail(format!("order_id {text:?} is not a UUID")),
            )
        })
    }
}

/// A proto enum-as-text field (`order_type`, `order_side`, `status`) read as
/// the JSON API reads it, refused with HTTP's `invalid-field` slug.
fn parse_word<T: DeserializeOwned>(field: &str, text: &str, expected: &str) -> Result<T, Problem> {
    serde_json::from_value(serde_json::Value::String(text.to_owned())).map_err(|_| {
        Problem::new(StatusCode::BAD_REQUEST, "invalid-field", "Invalid field value")
            .with_detail(format!("{field} {text:?} is not one of {expected}"))
    })
}

/// A proto timestamp string: the same RFC 3339 text the JSON API writes.
fn text_of(value: &serde_json::Value) -> String {
    value.as_str().map(str::to_owned).unwrap_or_default()
}

fn order_details(order: &dto::OrderDetails) -> pb::OrderDetails {
    let time = |t: &chrono::DateTime<chrono::Utc>| text_of(&serde_json::json!(t));
    pb::OrderDetails {
        order_id: order.order_id.to_string(),
        user_id: order.user_id.to_string(),
        symbol: order.symbol.clone(),
        order_type: order.order_type.to_string(),
        order_side: order.order_side.to_string(),
        quantity: double(order.quantity),
        price: order.price.map(double),
        status: order.status.to_string(),
        created_at: time(&order.created_at),
        updated_at: time(&order.updated_at),
        executed_at: order.executed_at.as_ref().map(time),
        execution_price: order.execution_price.map(double),
        market_price_at_submission: order.market_price_at_submission.map(double),
        market_data_timestamp: order.market_data_timestamp.as_ref().map(time),
        // Not optional in the proto: 0 when no price was known to estimate with.
        estimated_value: order.estimated_value.map_or(0.0, double),
        execution_value: order.execution_value.map(double),
    }
}

/// The proto's answer to a submission from its JSON body (a fresh one or the
/// stored first answer to an Idempotency-Key), so both transports replay the same answer.
fn submit_response(body: &serde_json::Value, request_id: &str) -> pb::SubmitOrderResponse {
    let api: Option<dto::ApiResponse> = serde_json::from_value(body["api_response"].clone()).ok();
    let api = api.unwrap_or_else(|| dto::ApiResponse::ok(StatusCode::ACCEPTED, "order accepted", request_id));
    pb::SubmitOrderResponse {
        api_response: Some(api_response(&api)),
        order_id: text_of(&body["order_id"]),
        status: text_of(&body["status"]),
        estimated_price: double_of_json(&body["estimated_price"]),
        estimated_value: double_of_json(&body["estimated_value"]),
        market_price: double_of_json(&body["market_price"]),
        submitted_at: text_of(&body["submitted_at"]),
    }
}

impl OrderGrpc {
    /// [`OrderService::submit_order`] inside its span; `incoming` is the caller's trace context.
    async fn submit_traced(
        &self,
        request: Request<pb::SubmitOrderRequest>,
        incoming: Option<TraceContext>,
    ) -> Result<Response<pb::SubmitOrderResponse>, Status> {
        let call = begin(&request)?;
        let key = request
            .metadata()
            .get(METADATA_IDEMPOTENCY_KEY)
            .map(|v| v.to_str().unwrap_or_default());
        let key = commands::idempotency_key(key).map_err(|p| call.refuse(&p))?;
        let message = request.into_inner();
        call.acting_for(&message.user_id)?;
        let body = SubmitOrderBody {
            symbol: message.symbol,
            order_type: parse_word(
                "order_type",
                &message.order_type,
                "MARKET, LIMIT, STOP_LOSS, STOP_LIMIT",
            )
            .map_err(|p| call.refuse(&p))?,
            order_side: parse_word("order_side", &message.order_side, "BUY, SELL").map_err(|p| call.refuse(&p))?,
            quantity: amount(message.quantity),
            price: message.price.map(amount),
            stop_price: message.stop_price.map(amount),
        };
        let body = body.exact().map_err(|p| call.refuse(&p))?;
        // With traces exported, the submission span's context; else the caller's as it came.
        let trace = traces::current(incoming);
        let context = CallContext {
            source: "grpc",
            request_id: &call.request_id,
            trace: trace.as_ref(),
        };
        let submitted = commands::submit(&self.state, &call.caller, body, key, context)
            .await
            .map_err(|p| call.refuse(&p))?;
        Ok(Response::new(submit_response(&submitted.body, &call.request_id)))
    }
}

#[tonic::async_trait]
impl OrderService for OrderGrpc {
    async fn submit_order(
        &self,
        request: Request<pb::SubmitOrderRequest>,
    ) -> Result<Response<pb::SubmitOrderResponse>, Status> {
        // The caller's W3C trace from the metadata, validated as on HTTP and
        // AMQP; exported, the span below continues it.
        let text = |name: &str| request.metadata().get(name).and_then(|v| v.to_str().ok());
        let incoming = text("traceparent").and_then(|tp| parse_traceparent(tp, text("tracestate")));
        let span = traces::span(|| tracing::info_span!("grpc.submission"));
        traces::continue_trace(&span, incoming.as_ref());
        self.submit_traced(request, incoming).instrument(span).await
    }

    async fn get_order_details(
        &self,
        request: Request<pb::GetOrderDetailsRequest>,
    ) -> Result<Response<pb::GetOrderDetailsResponse>, Status> {
        let call = begin(&request)?;
        let message = request.into_inner();
        call.acting_for(&message.user_id)?;
        let order_id = call.order_id(&message.order_id)?;
        let details = commands::details(
            &self.state,
            &call.caller,
            order_id,
            commands::Refresh::Cached,
            &call.request_id,
        )
        .await
        .map_err(|p| call.refuse(&p))?;
        Ok(Response::new(pb::GetOrderDetailsResponse {
            api_response: Some(api_response(&details.api_response)),
            order: Some(order_details(&details.order)),
        }))
    }

    async fn get_order_status(
        &self,
        request: Request<pb::GetOrderStatusRequest>,
    ) -> Result<Response<pb::GetOrderStatusResponse>, Status> {
        let call = begin(&request)?;
        let message = request.into_inner();
        call.acting_for(&message.user_id)?;
        let order_id = call.order_id(&message.order_id)?;
        let status = commands::status(
            &self.state,
            &call.caller,
            order_id,
            commands::Refresh::Cached,
            &call.request_id,
        )
        .await
        .map_err(|p| call.refuse(&p))?;
        Ok(Response::new(pb::GetOrderStatusResponse {
            api_response: Some(api_response(&status.api_response)),
            order_id: status.order_id.to_string(),
            status: status.status.to_string(),
            status_message: status.status_message,
            updated_at: text_of(&serde_json::json!(status.updated_at)),
        }))
    }

    async fn cancel_order(
        &self,
        request: Request<pb::CancelOrderRequest>,
    ) -> Result<Response<pb::CancelOrderResponse>, Status> {
        let call = begin(&request)?;
        let message = request.into_inner();
        call.acting_for(&message.user_id)?;
        let order_id = call.order_id(&message.order_id)?;
        let cancelled = commands::cancel(&self.state, &call.caller, order_id, &call.request_id)
            .await
            .map_err(|p| call.refuse(&p))?;
        Ok(Response::new(pb::CancelOrderResponse {
            api_response: Some(api_response(&cancelled.api_response)),
            order_id: cancelled.order_id.to_string(),
            status: cancelled.status.to_string(),
            cancelled_at: text_of(&serde_json::json!(cancelled.cancelled_at)),
        }))
    }

    async fn get_order_history(
        &self,
        request: Request<pb::GetOrderHistoryRequest>,
    ) -> Result<Response<pb::GetOrderHistoryResponse>, Status> {
        let call = begin(&request)?;
        let message = request.into_inner();
        call.acting_for(&message.user_id)?;
        // The HTTP query's bounds and slug (`invalid-query`), read from the proto's integers.
        let limit = match message.limit {
            None => HISTORY_LIMIT_DEFAULT,
            Some(limit) => u32::try_from(limit)
                .ok()
                .filter(|limit| (1..=HISTORY_LIMIT_MAX).contains(limit))
                .ok_or_else(|| call.refuse(&out_of_bounds("limit", 1, u64::from(HISTORY_LIMIT_MAX))))?,
        };
        // An int32 offset is always within HTTP's bound (2^53); only its sign is checked.
        let offset = u64::try_from(message.offset.unwrap_or(0))
            .map_err(|_| call.refuse(&out_of_bounds("offset", 0, i32::MAX as u64)))?;
        let status = match message.status.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => Some(
                parse_word("status", text, "PENDING, PROCESSING, EXECUTED, CANCELLED, FAILED").map_err(|_| {
                    call.refuse(
                        &Problem::new(StatusCode::BAD_REQUEST, "invalid-query", "Invalid query").with_detail(format!(
                            "status {text:?} is not one of PENDING, PROCESSING, EXECUTED, CANCELLED, FAILED"
                        )),
                    )
                })?,
            ),
        };
        let page = commands::history(&self.state, &call.caller, status, limit, offset, &call.request_id)
            .await
            .map_err(|p| call.refuse(&p))?;
        Ok(Response::new(pb::GetOrderHistoryResponse {
            api_response: Some(api_response(&page.api_response)),
            orders: page.orders.iter().map(order_details).collect(),
            // The proto's counters are int32: saturate rather than wrap.
            total_count: i32::try_from(page.total_count).unwrap_or(i32::MAX),
            limit: i32::try_from(page.limit).unwrap_or(i32::MAX),
            offset: i32::try_from(page.offset).unwrap_or(i32::MAX),
        }))
    }
}
