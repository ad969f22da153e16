//! The peer's order aggregate: place, reserve, fill, written the way the
//! cqrs-es 0.5 book writes an aggregate. Must never touch the store, the clock
//! or the driver: it is the part of the peer that corresponds to the engine's
//! pure `decide`/`evolve`, and the benchmark measures what surrounds it.
//!
//! One order is three commands and four events: `Place` emits `OrderPlaced`,
//! `Reserve` emits `FundsReserved`, and `Fill` emits `OrderFilled` and
//! `OrderCompleted` (a full fill ends the order and releases what the fill did
//! not cost). That is the shape issue 12 fixes for the comparison.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Schema version written beside every event; bumped with an upcaster if a shape changes.
const EVENT_VERSION: &str = "1.0";

/// What a caller asks of an order. Imperative, as cqrs-es names commands.
#[derive(Debug, Clone, PartialEq)]
pub enum OrderCommand {
    /// Opens the order: buy `quantity` of `symbol` at no more than `limit_price`.
    Place {
        account_id: String,
        symbol: String,
        quantity: Decimal,
        limit_price: Decimal,
    },
    /// Sets aside the funds the order may spend; must cover quantity × limit.
    Reserve { amount: Decimal },
    /// Executes the whole quantity at `price`, which may not exceed the limit.
    Fill { quantity: Decimal, price: Decimal },
}

/// What happened to an order. Past tense; the durable schema of the peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OrderEvent {
    OrderPlaced {
        account_id: String,
        symbol: String,
        quantity: Decimal,
        limit_price: Decimal,
    },
    FundsReserved {
        amount: Decimal,
    },
    OrderFilled {
        quantity: Decimal,
        price: Decimal,
    },
    /// The order is over: `cost` was spent, `released` goes back to the account.
    OrderCompleted {
        cost: Decimal,
        released: Decimal,
    },
}

impl DomainEvent for OrderEvent {
    fn event_type(&self) -> String {
        match self {
            Self::OrderPlaced { .. } => "OrderPlaced",
            Self::FundsReserved { .. } => "FundsReserved",
            Self::OrderFilled { .. } => "OrderFilled",
            Self::OrderCompleted { .. } => "OrderCompleted",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        EVENT_VERSION.to_string()
    }
}

/// A refused command, named after the rule it breaks.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OrderError {
    #[error("{field} must be positive, got {value}")]
    NotPositive { field: &'static str, value: Decimal },
    #[error("the order has already been placed")]
    AlreadyPlaced,
    #[error("the order has not been placed")]
    NotPlaced,
    #[error("funds have already been reserved for the order")]
    AlreadyReserved,
    #[error("a reservation of {offered} does not cover the order's {needed}")]
    ReservationShort { needed: Decimal, offered: Decimal },
    #[error("no funds are reserved for the order")]
    NotReserved,
    #[error("the order is complete")]
    AlreadyCompleted,
    #[error("a fill of {filled} does not match the order's quantity {ordered}")]
    PartialFill { ordered: Decimal, filled: Decimal },
    #[error("a fill at {price} is above the limit {limit_price}")]
    AboveLimit { price: Decimal, limit_price: Decimal },
    #[error("the amount overflows a decimal")]
    Overflow,
}

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderStatus {
    /// No event yet: the aggregate cqrs-es starts every fold from.
    #[default]
    New,
    Placed,
    Reserved,
    Completed,
}

/// The state folded from an order's events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub status: OrderStatus,
    /// Ordered quantity; a fill must match it (no partial fills in the peer).
    pub quantity: Decimal,
    /// The most the order may pay per unit.
    pub limit_price: Decimal,
    /// Funds set aside by `FundsReserved`; the fill's cost comes out of it.
    pub reserved: Decimal,
}

impl Order {
    /// The most the order can cost, which a reservation must cover.
    fn notional(&self) -> Result<Decimal, OrderError> {
        self.quantity.checked_mul(self.limit_price).ok_or(OrderError::Overflow)
    }

    fn place(&self, quantity: Decimal, limit_price: Decimal) -> Result<(), OrderError> {
        if self.status != OrderStatus::New {
            return Err(OrderError::AlreadyPlaced);
        }
        positive("quantity", quantity)?;
        positive("limit_price", limit_price)
    }

    fn reserve(&self, amount: Decimal) -> Result<(), OrderError> {
        match self.status {
            OrderStatus::New => return Err(OrderError::NotPlaced),
            OrderStatus::Reserved => return Err(OrderError::AlreadyReserved),
            OrderStatus::Completed => return Err(OrderError::AlreadyCompleted),
            OrderStatus::Placed => {}
        }
        let needed = self.notional()?;
        if amount < needed {
            return Err(OrderError::ReservationShort {
                needed,
                offered: amount,
            });
        }
        Ok(())
    }

    /// Checks a fill and returns the completion it leads to.
    fn fill(&self, quantity: Decimal, price: Decimal) -> Result<OrderEvent, OrderError> {
        match self.status {
            OrderStatus::New => return Err(OrderError::NotPlaced),
            OrderStatus::Placed => return Err(OrderError::NotReserved),
            OrderStatus::Completed => return Err(OrderError::AlreadyCompleted),
            OrderStatus::Reserved => {}
        }
        positive("price", price)?;
        if quantity != self.quantity {
            return Err(OrderError::PartialFill {
                ordered: self.quantity,
                filled: quantity,
            });
        }
        if price > self.limit_price {
            return Err(OrderError::AboveLimit {
                price,
                limit_price: self.limit_price,
            });
        }
        let cost = quantity.checked_mul(price).ok_or(OrderError::Overflow)?;
        // Cannot go negative: the reservation covers quantity × limit and price ≤ limit.
        let released = self.reserved - cost;
        Ok(OrderEvent::OrderCompleted { cost, released })
    }
}

fn positive(field: &'static str, value: Decimal) -> Result<(), OrderError> {
    if value > Decimal::ZERO {
        Ok(())
    } else {
        Err(OrderError::NotPositive { field, value })
    }
}

impl Aggregate for Order {
    const TYPE: &'static str = "order";
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Error = OrderError;
    /// No services: the peer is store only, as the comparison asks.
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            OrderCommand::Place {
                account_id,
                symbol,
                quantity,
                limit_price,
            } => {
                self.place(quantity, limit_price)?;
                let placed = OrderEvent::OrderPlaced {
                    account_id,
                    symbol,
                    quantity,
                    limit_price,
                };
                sink.write(placed, self).await;
            }
            OrderCommand::Reserve { amount } => {
                self.reserve(amount)?;
                sink.write(OrderEvent::FundsReserved { amount }, self).await;
            }
            OrderCommand::Fill { quantity, price } => {
                // Both events are checked before either is written: the sink applies as it goes.
                let completed = self.fill(quantity, price)?;
                sink.write(OrderEvent::OrderFilled { quantity, price }, self).await;
                sink.write(completed, self).await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            OrderEvent::OrderPlaced {
                quantity, limit_price, ..
            } => {
                self.status = OrderStatus::Placed;
                self.quantity = quantity;
                self.limit_price = limit_price;
            }
            OrderEvent::FundsReserved { amount } => {
                self.status = OrderStatus::Reserved;
                self.reserved = amount;
            }
            // The order stays reserved until the completion that always follows a fill.
            OrderEvent::OrderFilled { .. } => {}
            OrderEvent::OrderCompleted { .. } => self.status = OrderStatus::Completed,
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;
    use rust_decimal::Decimal;

    use super::{Order, OrderCommand, OrderError, OrderEvent};

    type OrderTest = TestFramework<Order>;

    fn dec(text: &str) -> Decimal {
        text.parse().unwrap()
    }

    fn placed() -> OrderEvent {
        OrderEvent::OrderPlaced {
            account_id: "acc-1".into(),
            symbol: "AAPL".into(),
            quantity: dec("10"),
            limit_price: dec("150.25"),
        }
    }

    fn reserved() -> OrderEvent {
        OrderEvent::FundsReserved { amount: dec("1502.50") }
    }

    #[test]
    fn place_emits_order_placed() {
        // Proves a new order accepts Place and records it as one event.
        OrderTest::with(())
            .given_no_previous_events()
            .when(OrderCommand::Place {
                account_id: "acc-1".into(),
                symbol: "AAPL".into(),
                quantity: dec("10"),
                limit_price: dec("150.25"),
            })
            .then_expect_events(vec![placed()]);
    }

    #[test]
    fn reserve_must_cover_quantity_times_limit() {
        // Proves a short reservation is refused by name and a covering one accepted.
        OrderTest::with(())
            .given(vec![placed()])
            .when(OrderCommand::Reserve { amount: dec("1502.49") })
            .then_expect_error(OrderError::ReservationShort {
                needed: dec("1502.50"),
                offered: dec("1502.49"),
            });
        OrderTest::with(())
            .given(vec![placed()])
            .when(OrderCommand::Reserve { amount: dec("1502.50") })
            .then_expect_events(vec![reserved()]);
    }

    #[test]
    fn fill_emits_filled_and_completed_with_the_release() {
        // Proves the fourth event: a fill below the limit completes the order and releases the rest.
        OrderTest::with(())
            .given(vec![placed(), reserved()])
            .when(OrderCommand::Fill {
                quantity: dec("10"),
                price: dec("150.00"),
            })
            .then_expect_events(vec![
                OrderEvent::OrderFilled {
                    quantity: dec("10"),
                    price: dec("150.00"),
                },
                OrderEvent::OrderCompleted {
                    cost: dec("1500.00"),
                    released: dec("2.50"),
                },
            ]);
    }

    #[test]
    fn out_of_order_and_repeated_commands_are_refused() {
        // Proves each rule of the life cycle: nothing before Place, nothing after completion.
        OrderTest::with(())
            .given_no_previous_events()
            .when(OrderCommand::Reserve { amount: dec("1") })
            .then_expect_error(OrderError::NotPlaced);
        OrderTest::with(())
            .given(vec![placed()])
            .when(OrderCommand::Fill {
                quantity: dec("10"),
                price: dec("150"),
            })
            .then_expect_error(OrderError::NotReserved);
        let completed = vec![
            placed(),
            reserved(),
            OrderEvent::OrderFilled {
                quantity: dec("10"),
                price: dec("150"),
            },
            OrderEvent::OrderCompleted {
                cost: dec("1500"),
                released: dec("2.50"),
            },
        ];
        OrderTest::with(())
            .given(completed)
            .when(OrderCommand::Fill {
                quantity: dec("10"),
                price: dec("150"),
            })
            .then_expect_error(OrderError::AlreadyCompleted);
    }

    #[test]
    fn fills_above_the_limit_or_partial_are_refused() {
        // Proves the fill rules the peer keeps: the whole quantity, at or under the limit.
        OrderTest::with(())
            .given(vec![placed(), reserved()])
            .when(OrderCommand::Fill {
                quantity: dec("10"),
                price: dec("150.26"),
            })
            .then_expect_error(OrderError::AboveLimit {
                price: dec("150.26"),
                limit_price: dec("150.25"),
            });
        OrderTest::with(())
            .given(vec![placed(), reserved()])
            .when(OrderCommand::Fill {
                quantity: dec("4"),
                price: dec("150"),
            })
            .then_expect_error(OrderError::PartialFill {
                ordered: dec("10"),
                filled: dec("4"),
            });
    }
}
