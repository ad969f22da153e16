//! How much a BUY must hold before it may work. Pure.

use rust_decimal::{Decimal, RoundingStrategy};

use crate::order::{OrderSubmitted, OrderType, Side, DECIMAL_SCALE_MAX};

/// Basis points in one.
const BPS_PER_UNIT: i64 = 10_000;

/// quantity × reference price: the limit for LIMIT and STOP_LIMIT; for MARKET
/// the quote at submission plus `buffer_bps`; for STOP_LOSS the higher of the
/// quote and the stop (a buy stop fills at or above it) plus the buffer.
/// Rounded up to 8 places so the hold never falls a fraction short. Zero for a SELL.
pub fn reserve_amount(order: &OrderSubmitted, buffer_bps: u32) -> Decimal {
    if order.side == Side::Sell {
        return Decimal::ZERO;
    }
    let buffered =
        |price: Decimal| price * (Decimal::ONE + Decimal::new(i64::from(buffer_bps), 0) / Decimal::from(BPS_PER_UNIT));
    let market = order.market_price_at_submission.unwrap_or_default();
    let reference = match order.order_type {
        OrderType::Limit | OrderType::StopLimit => order.limit_price.unwrap_or_default(),
        OrderType::Market => buffered(market),
        OrderType::StopLoss => buffered(market.max(order.stop_price.unwrap_or_default())),
    };
    (order.quantity * reference).round_dp_with_strategy(DECIMAL_SCALE_MAX, RoundingStrategy::AwayFromZero)
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use rust_decimal_macros::dec;
    use uuid::Uuid;

    use super::*;
    use crate::order::Symbol;

    fn submitted(side: Side, order_type: OrderType, limit: Option<Decimal>, stop: Option<Decimal>) -> OrderSubmitted {
        OrderSubmitted {
            order_id: Uuid::nil(),
            user_id: Uuid::nil(),
            symbol: Symbol::parse("AAPL").unwrap(),
            side,
            order_type,
            quantity: dec!(10),
            limit_price: limit,
            stop_price: stop,
            market_price_at_submission: Some(dec!(150.25)),
            market_data_timestamp: None,
            submitted_at: Utc::now(),
        }
    }

    #[test]
    fn the_reference_price_follows_the_order_type() {
        // Proves the brief's rule: limit for LIMIT/STOP_LIMIT, quote plus buffer otherwise.
        assert_eq!(
            reserve_amount(&submitted(Side::Buy, OrderType::Limit, Some(dec!(140)), None), 500),
            dec!(1400)
        );
        assert_eq!(
            reserve_amount(&submitted(Side::Buy, OrderType::Market, None, None), 500),
            dec!(1577.625)
        );
        assert_eq!(
            reserve_amount(&submitted(Side::Buy, OrderType::StopLoss, None, Some(dec!(160))), 500),
            dec!(1680)
        );
        assert_eq!(
            reserve_amount(&submitted(Side::Sell, OrderType::Market, None, None), 500),
            dec!(0)
        );
    }

    #[test]
    fn amounts_round_up_to_eight_places() {
        // Proves rounding never leaves the hold short.
        let mut order = submitted(Side::Buy, OrderType::Market, None, None);
        order.quantity = dec!(0.33333333);
        order.market_price_at_submission = Some(dec!(3.33333333));
        let amount = reserve_amount(&order, 1);
        assert!(amount.scale() <= 8);
        assert!(amount >= order.quantity * dec!(3.33333333) * dec!(1.0001));
    }
}
