//! When a market price triggers or fills a working order. Pure.

use rust_decimal::Decimal;
use uuid::Uuid;

use crate::order::{Order, OrderSubmitted, OrderType, Side, Symbol};

/// An accepted order waiting for the market.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkingOrder {
    pub order_id: Uuid,
    pub symbol: Symbol,
    pub side: Side,
    pub order_type: OrderType,
    pub quantity: Decimal,
    pub limit_price: Option<Decimal>,
    pub stop_price: Option<Decimal>,
    pub reserved_amount: Decimal,
    pub triggered: bool,
}

impl WorkingOrder {
    pub fn accepted(submitted: &OrderSubmitted, reserved_amount: Decimal) -> Self {
        Self {
            order_id: submitted.order_id,
            symbol: submitted.symbol.clone(),
            side: submitted.side,
            order_type: submitted.order_type,
            quantity: submitted.quantity,
            limit_price: submitted.limit_price,
            stop_price: submitted.stop_price,
            reserved_amount,
            triggered: false,
        }
    }

    /// The working form of an order its saga just accepted.
    pub fn from_order(order: &Order) -> Self {
        Self {
            order_id: order.id,
            symbol: order.symbol.clone(),
            side: order.side,
            order_type: order.order_type,
            quantity: order.quantity,
            limit_price: order.limit_price,
            stop_price: order.stop_price,
            reserved_amount: order.reserved_amount,
            triggered: order.triggered_at.is_some(),
        }
    }

    /// A BUY whose cost at `price` would exceed its reservation cannot fill there.
    pub fn affordable_at(&self, price: Decimal) -> bool {
        self.side == Side::Sell || self.quantity * price <= self.reserved_amount
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum MatchAction {
    Trigger { market_price: Decimal },
    Execute { price: Decimal },
}

/// What the market price asks of a working order, if anything. A LIMIT BUY
/// fills at or below its limit (a SELL at or above), at the market price; a
/// stop triggers at its stop price and then works as MARKET or LIMIT.
pub fn on_price(order: &WorkingOrder, price: Decimal) -> Option<MatchAction> {
    if let (Some(stop), false) = (order.stop_price, order.triggered) {
        let reached = match order.side {
            Side::Sell => price <= stop,
            Side::Buy => price >= stop,
        };
        return reached.then_some(MatchAction::Trigger { market_price: price });
    }
    let limit = match order.order_type {
        OrderType::Limit | OrderType::StopLimit => order.limit_price,
        OrderType::Market | OrderType::StopLoss => None,
    };
    let fills = match (limit, order.side) {
        (None, _) => true,
        (Some(limit), Side::Buy) => price <= limit,
        (Some(limit), Side::Sell) => price >= limit,
    };
    fills.then_some(MatchAction::Execute { price })
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;

    fn order(side: Side, order_type: OrderType, limit: Option<Decimal>, stop: Option<Decimal>) -> WorkingOrder {
        WorkingOrder {
            order_id: Uuid::nil(),
            symbol: Symbol::parse("AAPL").unwrap_or_else(|_| unreachable!()),
            side,
            order_type,
            quantity: dec!(10),
            limit_price: limit,
            stop_price: stop,
            reserved_amount: dec!(1000),
            triggered: false,
        }
    }

    #[test]
    fn market_orders_fill_at_any_price() {
        // Proves a MARKET order fills at the price it sees.
        let o = order(Side::Buy, OrderType::Market, None, None);
        assert_eq!(on_price(&o, dec!(99)), Some(MatchAction::Execute { price: dec!(99) }));
    }

    #[test]
    fn limits_fill_only_at_the_limit_or_better() {
        // Proves a LIMIT BUY waits for the price to fall to its limit, a SELL to rise to it.
        let buy = order(Side::Buy, OrderType::Limit, Some(dec!(95)), None);
        assert_eq!(on_price(&buy, dec!(95.01)), None);
        assert_eq!(on_price(&buy, dec!(95)), Some(MatchAction::Execute { price: dec!(95) }));
        let sell = order(Side::Sell, OrderType::Limit, Some(dec!(105)), None);
        assert_eq!(on_price(&sell, dec!(104.99)), None);
        assert_eq!(
            on_price(&sell, dec!(106)),
            Some(MatchAction::Execute { price: dec!(106) })
        );
    }

    #[test]
    fn stops_trigger_then_work_as_market_or_limit() {
        // Proves a stop waits for its stop price, then a STOP_LIMIT respects its limit.
        let mut o = order(Side::Sell, OrderType::StopLimit, Some(dec!(88)), Some(dec!(90)));
        assert_eq!(on_price(&o, dec!(90.5)), None);
        assert_eq!(
            on_price(&o, dec!(90)),
            Some(MatchAction::Trigger { market_price: dec!(90) })
        );
        o.triggered = true;
        assert_eq!(on_price(&o, dec!(87)), None);
        assert_eq!(on_price(&o, dec!(89)), Some(MatchAction::Execute { price: dec!(89) }));
        let mut buy_stop = order(Side::Buy, OrderType::StopLoss, None, Some(dec!(110)));
        assert_eq!(on_price(&buy_stop, dec!(109)), None);
        assert!(matches!(
            on_price(&buy_stop, dec!(110)),
            Some(MatchAction::Trigger { .. })
        ));
        buy_stop.triggered = true;
        assert_eq!(
            on_price(&buy_stop, dec!(111)),
            Some(MatchAction::Execute { price: dec!(111) })
        );
    }

    #[test]
    fn a_buy_is_affordable_only_within_its_reservation() {
        // Proves the matcher can tell a fill the order's reservation would refuse.
        let o = order(Side::Buy, OrderType::Market, None, None);
        assert!(o.affordable_at(dec!(100)));
        assert!(!o.affordable_at(dec!(100.01)));
    }
}
