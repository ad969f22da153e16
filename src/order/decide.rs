//! `decide`: the order's rules. Pure: the command carries every fact it needs.

use rust_decimal::Decimal;

use super::command::{AcceptOrder, CancelOrder, ExecuteOrder, FailOrder, OrderCommand, SubmitOrder, TriggerOrder};
use super::event::{
    OrderAccepted, OrderCancelled, OrderEvent, OrderExecuted, OrderFailed, OrderSubmitted, OrderTriggered,
};
use super::rejection::OrderRejection;
use super::state::{Order, OrderState};
use super::types::{check_positive_amount, OrderStatus, OrderType, Side, Symbol};

pub fn decide(state: &OrderState, command: &OrderCommand) -> Result<Vec<OrderEvent>, OrderRejection> {
    let order = match (state, command) {
        (OrderState::Empty, OrderCommand::Submit(submit)) => return submit_order(submit),
        (OrderState::Empty, _) => return Err(OrderRejection::NotSubmitted),
        (OrderState::Placed(order), _) => order,
    };
    let is_submit = matches!(command, OrderCommand::Submit(_));
    if order.status.is_terminal() && !is_submit {
        return Err(OrderRejection::AlreadyFinal { status: order.status });
    }
    let event = match command {
        OrderCommand::Submit(_) => return Err(OrderRejection::AlreadySubmitted { order_id: order.id }),
        OrderCommand::Accept(accept) => accept_order(order, accept)?,
        OrderCommand::Trigger(trigger) => trigger_order(order, trigger)?,
        OrderCommand::Execute(execute) => execute_order(order, execute)?,
        OrderCommand::Cancel(cancel) => cancel_order(cancel)?,
        OrderCommand::Fail(fail) => fail_order(fail)?,
    };
    Ok(vec![event])
}

fn submit_order(cmd: &SubmitOrder) -> Result<Vec<OrderEvent>, OrderRejection> {
    check_positive_amount(cmd.quantity).map_err(|reason| OrderRejection::InvalidQuantity {
        quantity: cmd.quantity,
        reason,
    })?;
    check_price(
        "limit_price",
        cmd.limit_price,
        cmd.order_type.needs_limit_price(),
        cmd.order_type,
    )?;
    check_price(
        "stop_price",
        cmd.stop_price,
        cmd.order_type.needs_stop_price(),
        cmd.order_type,
    )?;
    let symbol = Symbol::parse(&cmd.symbol).map_err(OrderRejection::InvalidSymbol)?;
    let quote = cmd.quote.as_ref().ok_or_else(|| OrderRejection::UnknownSymbol {
        symbol: symbol.to_string(),
    })?;
    if cmd.order_type == OrderType::Market && !quote.market_open {
        return Err(OrderRejection::MarketClosed {
            symbol: symbol.to_string(),
        });
    }
    Ok(vec![OrderEvent::OrderSubmitted(OrderSubmitted {
        order_id: cmd.order_id,
        user_id: cmd.user_id,
        symbol,
        side: cmd.side,
        order_type: cmd.order_type,
        quantity: cmd.quantity,
        limit_price: cmd.limit_price,
        stop_price: cmd.stop_price,
        market_price_at_submission: Some(quote.price),
        market_data_timestamp: Some(quote.as_of),
        submitted_at: cmd.submitted_at,
    })])
}

fn check_price(
    field: &'static str,
    value: Option<Decimal>,
    required: bool,
    order_type: OrderType,
) -> Result<(), OrderRejection> {
    match (value, required) {
        (None, true) => Err(OrderRejection::PriceRequired { order_type, field }),
        (Some(_), false) => Err(OrderRejection::PriceNotAllowed { order_type, field }),
        (Some(value), true) => {
            check_positive_amount(value).map_err(|reason| OrderRejection::InvalidPrice { field, value, reason })
        }
        (None, false) => Ok(()),
    }
}

fn require_status(order: &Order, command: &'static str, expected: OrderStatus) -> Result<(), OrderRejection> {
    if order.status == expected {
        Ok(())
    } else {
        Err(OrderRejection::WrongStatus {
            command,
            expected,
            actual: order.status,
        })
    }
}

fn accept_order(order: &Order, cmd: &AcceptOrder) -> Result<OrderEvent, OrderRejection> {
    require_status(order, "AcceptOrder", OrderStatus::Pending)?;
    let reserved = cmd.reserved_amount;
    if reserved < Decimal::ZERO {
        return Err(OrderRejection::NegativeReservation { reserved });
    }
    match order.side {
        Side::Sell if !reserved.is_zero() => return Err(OrderRejection::ReservationNotAllowed { reserved }),
        Side::Buy if reserved.is_zero() => return Err(OrderRejection::ReservationRequired),
        Side::Buy => {
            if let Some(limit) = order.limit_price {
                let required = order.quantity * limit;
                if reserved < required {
                    return Err(OrderRejection::ReservationTooSmall { required, reserved });
                }
            }
        }
        Side::Sell => {}
    }
    Ok(OrderEvent::OrderAccepted(OrderAccepted {
        reserved_amount: reserved,
        accepted_at: cmd.accepted_at,
    }))
}

fn trigger_order(order: &Order, cmd: &TriggerOrder) -> Result<OrderEvent, OrderRejection> {
    require_status(order, "TriggerOrder", OrderStatus::Processing)?;
    let Some(stop_price) = order.stop_price else {
        return Err(OrderRejection::NotAStopOrder {
            order_type: order.order_type,
        });
    };
    if order.triggered_at.is_some() {
        return Err(OrderRejection::AlreadyTriggered);
    }
    check_positive_amount(cmd.market_price).map_err(|reason| OrderRejection::InvalidPrice {
        field: "market_price",
        value: cmd.market_price,
        reason,
    })?;
    // A sell stop protects against a fall, a buy stop against a rise.
    let reached = match order.side {
        Side::Sell => cmd.market_price <= stop_price,
        Side::Buy => cmd.market_price >= stop_price,
    };
    if !reached {
        return Err(OrderRejection::StopNotReached {
            side: order.side,
            stop_price,
            market_price: cmd.market_price,
        });
    }
    Ok(OrderEvent::OrderTriggered(OrderTriggered {
        market_price: cmd.market_price,
        triggered_at: cmd.triggered_at,
    }))
}

fn execute_order(order: &Order, cmd: &ExecuteOrder) -> Result<OrderEvent, OrderRejection> {
    require_status(order, "ExecuteOrder", OrderStatus::Processing)?;
    if order.stop_price.is_some() && order.triggered_at.is_none() {
        return Err(OrderRejection::NotTriggered);
    }
    for (field, value) in [
        ("execution_price", cmd.execution_price),
        ("market_price", cmd.market_price),
    ] {
        check_positive_amount(value).map_err(|reason| OrderRejection::InvalidPrice { field, value, reason })?;
    }
    let price = cmd.execution_price;
    if let Some(limit_price) = order.binding_limit() {
        let within = match order.side {
            Side::Buy => price <= limit_price,
            Side::Sell => price >= limit_price,
        };
        if !within {
            return Err(OrderRejection::LimitNotMet {
                side: order.side,
                limit_price,
                execution_price: price,
            });
        }
    }
    let total_value = order.quantity * price;
    if order.side == Side::Buy && total_value > order.reserved_amount {
        return Err(OrderRejection::ExceedsReservation {
            cost: total_value,
            reserved: order.reserved_amount,
        });
    }
    Ok(OrderEvent::OrderExecuted(OrderExecuted {
        execution_price: price,
        quantity: order.quantity,
        total_value,
        market_price_at_exec: cmd.market_price,
        executed_at: cmd.executed_at,
    }))
}

fn cancel_order(cmd: &CancelOrder) -> Result<OrderEvent, OrderRejection> {
    if cmd.reason.trim().is_empty() {
        return Err(OrderRejection::ReasonRequired);
    }
    Ok(OrderEvent::OrderCancelled(OrderCancelled {
        reason: cmd.reason.clone(),
        cancelled_at: cmd.cancelled_at,
    }))
}

fn fail_order(cmd: &FailOrder) -> Result<OrderEvent, OrderRejection> {
    if cmd.reason.trim().is_empty() {
        return Err(OrderRejection::ReasonRequired);
    }
    Ok(OrderEvent::OrderFailed(OrderFailed {
        reason: cmd.reason.clone(),
        failed_at: cmd.failed_at,
    }))
}
