//! The seeded workload: users, orders of every type and side, and the
//! actions that drive them (deliveries, duplicated and reordered, in bursts;
//! cancels; market moves; crashes at action boundaries).
//!
//! Must draw only from the seed's random source.

use order_engine::engine::SubmitRequest;
use order_engine::events::EventMetadata;
use order_engine::market::MarketSimulator;
use order_engine::order::{OrderType, Side};
use rand::rngs::StdRng;
use rand::Rng;
use rust_decimal::Decimal;
use uuid::Uuid;

/// The symbols traded: one cheap and one dear, so some orders outgrow the account.
const SYMBOLS: [&str; 2] = ["AAPL", "MSFT"];
const USERS_MIN: usize = 2;
const USERS_MAX: usize = 3;
const ORDERS_MIN: usize = 3;
const ORDERS_MAX: usize = 8;
const QUANTITY_MAX: i64 = 30;
/// Crashes at action boundaries, at most, per seed.
const BOUNDARY_CRASHES_MAX: u32 = 2;

/// One order as its producer means it.
#[derive(Debug, Clone)]
pub struct Planned {
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub symbol: &'static str,
    pub side: Side,
    pub order_type: OrderType,
    pub quantity: Decimal,
    pub limit_price: Option<Decimal>,
    pub stop_price: Option<Decimal>,
}

/// One delivery of an order's submission message; copy 0 is the original.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub order: usize,
    pub copy: u32,
}

#[derive(Debug, Clone)]
pub enum Action {
    /// Deliveries handled concurrently, as a consumer with prefetch would.
    Deliver(Vec<Delivery>),
    Cancel {
        order: usize,
        attempt: u32,
    },
    /// One step of the market's seeded random walk.
    Tick,
    /// A sudden move of one symbol, in basis points.
    Jump {
        symbol: &'static str,
        bps: i64,
    },
    /// kill -9 between two actions.
    Crash,
}

pub struct Workload {
    pub orders: Vec<Planned>,
    pub actions: Vec<Action>,
}

fn uuid(rng: &mut StdRng) -> Uuid {
    uuid::Builder::from_random_bytes(rng.gen()).into_uuid()
}

/// `price` moved by `bps` basis points, on the cent grid.
fn offset(price: Decimal, bps: i64) -> Decimal {
    (price * Decimal::from(10_000 + bps) / Decimal::from(10_000)).round_dp(2)
}

impl Workload {
    pub fn generate(rng: &mut StdRng, market: &MarketSimulator) -> Self {
        let users: Vec<Uuid> = (0..rng.gen_range(USERS_MIN..=USERS_MAX)).map(|_| uuid(rng)).collect();
        let orders: Vec<Planned> = (0..rng.gen_range(ORDERS_MIN..=ORDERS_MAX))
            .map(|_| Self::order(rng, market, &users))
            .collect();
        // Every order once, some again (a producer's retry, a broker's
        // redelivery), then shuffled within a window: reordered, not random.
        let mut deliveries: Vec<(usize, Delivery)> = Vec::new();
        for order in 0..orders.len() {
            let copies = if rng.gen_bool(0.25) { rng.gen_range(2..=3) } else { 1 };
            for copy in 0..copies {
                let key = order * 10 + rng.gen_range(0..30);
                deliveries.push((key, Delivery { order, copy }));
            }
        }
        deliveries.sort_by_key(|(key, _)| *key);
        let mut pending = deliveries.into_iter().map(|(_, d)| d).peekable();
        let mut actions = Vec::new();
        let mut crashes = 0;
        let mut cancels = 0;
        while pending.peek().is_some() {
            let burst = if rng.gen_bool(0.3) { rng.gen_range(2..=4) } else { 1 };
            actions.push(Action::Deliver(pending.by_ref().take(burst).collect()));
            match rng.gen_range(0..100) {
                0..=34 => actions.push(Action::Tick),
                35..=44 => actions.push(Action::Jump {
                    symbol: SYMBOLS[rng.gen_range(0..SYMBOLS.len())],
                    bps: rng.gen_range(-600..=600),
                }),
                45..=54 => {
                    cancels += 1;
                    actions.push(Action::Cancel {
                        order: rng.gen_range(0..orders.len()),
                        attempt: cancels,
                    });
                }
                55..=61 if crashes < BOUNDARY_CRASHES_MAX => {
                    crashes += 1;
                    actions.push(Action::Crash);
                }
                _ => {}
            }
        }
        // A little market after the last delivery, so resting orders may fill.
        for _ in 0..rng.gen_range(0..6) {
            actions.push(Action::Tick);
        }
        Self { orders, actions }
    }

    fn order(rng: &mut StdRng, market: &MarketSimulator, users: &[Uuid]) -> Planned {
        let symbol = SYMBOLS[rng.gen_range(0..SYMBOLS.len())];
        let price = market
            .listings()
            .iter()
            .find(|l| l.symbol.as_str() == symbol)
            .map_or(Decimal::ONE_HUNDRED, |l| l.start_price);
        let side = if rng.gen_bool(0.6) { Side::Buy } else { Side::Sell };
        // Positive for a price on the side that rests (below for a buy limit,
        // above for a sell limit); stops sit on the other side.
        let rest = if side == Side::Buy { -1 } else { 1 };
        let near = |rng: &mut StdRng| rng.gen_range(0..=400);
        let (order_type, limit_price, stop_price) = match rng.gen_range(0..100) {
            0..=44 => (OrderType::Market, None, None),
            45..=69 => (OrderType::Limit, Some(offset(price, rest * near(rng))), None),
            70..=84 => (OrderType::StopLoss, None, Some(offset(price, -rest * near(rng)))),
            _ => {
                let stop = -rest * near(rng);
                let limit = stop - rest * rng.gen_range(0..=200);
                (
                    OrderType::StopLimit,
                    Some(offset(price, limit)),
                    Some(offset(price, stop)),
                )
            }
        };
        // One order in twenty is invalid (a zero quantity) and must be refused.
        let quantity = if rng.gen_bool(0.05) {
            Decimal::ZERO
        } else {
            Decimal::from(rng.gen_range(1..=QUANTITY_MAX))
        };
        Planned {
            order_id: uuid(rng),
            user_id: users[rng.gen_range(0..users.len())],
            symbol,
            side,
            order_type,
            quantity,
            limit_price,
            stop_price,
        }
    }

    /// The submission one delivery carries (every copy is the same message).
    pub fn request(&self, delivery: &Delivery) -> SubmitRequest {
        let order = &self.orders[delivery.order];
        SubmitRequest {
            order_id: Some(order.order_id),
            user_id: order.user_id,
            symbol: order.symbol.to_owned(),
            side: order.side,
            order_type: order.order_type,
            quantity: order.quantity,
            limit_price: order.limit_price,
            stop_price: order.stop_price,
            metadata: EventMetadata {
                who: Some(format!("user:{}", order.user_id)),
                source: Some("amqp".into()),
                ..EventMetadata::default()
            },
        }
    }
}
