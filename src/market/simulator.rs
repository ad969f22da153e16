//! The embedded market: listed symbols whose prices follow a seeded random
//! walk, market hours, and a bounded feed of price ticks.
//!
//! Must never hold its lock across an `.await`, read the wall clock (time comes
//! from the injected `Clock`), or let a slow subscriber grow memory.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rust_decimal::Decimal;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::hours::MarketHours;
use super::walk::{apply_move, walk_step, MAX_STEP_BPS_MAX};
use super::{AssetDetails, MarketData, MarketError, PriceQuote, Tick, TradingHours};
use crate::clock::Clock;
use crate::order::{check_positive_amount, AmountError, Symbol};

/// The default seed: any fixed number, so two default engines tell the same story.
pub const DEFAULT_SEED: u64 = 20_260_105;

/// How often the default feed moves prices.
pub const DEFAULT_TICK_INTERVAL: Duration = Duration::from_secs(1);

/// The default largest move per tick: 0.5%, lively but not wild.
pub const DEFAULT_MAX_STEP_BPS: u32 = 50;

/// Ticks the default feed keeps for a slow subscriber before it lags.
pub const DEFAULT_FEED_CAPACITY: usize = 1_024;

/// The shortest tick interval honoured: a zero interval would spin (and
/// `tokio::time::interval` refuses it).
pub const TICK_INTERVAL_MIN: Duration = Duration::from_millis(1);

/// A broadcast channel needs room for at least one tick.
pub const FEED_CAPACITY_MIN: usize = 1;

/// The most ticks the feed keeps per subscriber; memory per lagging subscriber
/// is bounded by this, whatever the configuration asks.
pub const FEED_CAPACITY_MAX: usize = 65_536;

/// A symbol the simulator lists, and where its price starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedSymbol {
    pub symbol: Symbol,
    pub name: String,
    pub category: String,
    pub start_price: Decimal,
}

/// How the simulator behaves. `Default` lists a handful of well-known US
/// tickers and is always open, so a demo works at any hour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulatorConfig {
    /// Listed in this order; `step` moves them in this order, which is part of
    /// what a seed reproduces. A repeated symbol keeps its first listing.
    pub symbols: Vec<ListedSymbol>,
    pub seed: u64,
    /// How often `spawn`ed feeds call `step`; at least [`TICK_INTERVAL_MIN`].
    pub tick_interval: Duration,
    /// The largest move per tick, in basis points; at most [`MAX_STEP_BPS_MAX`].
    pub max_step_bps: u32,
    pub hours: MarketHours,
    /// Ticks kept for a slow subscriber; within [`FEED_CAPACITY_MIN`]..=[`FEED_CAPACITY_MAX`].
    pub feed_capacity: usize,
}

/// The default listing: (symbol, name, category, start price in cents).
const DEFAULT_LISTING: [(&str, &str, &str, i64); 10] = [
    ("AAPL", "Apple Inc.", "Technology", 15_025),
    ("MSFT", "Microsoft Corporation", "Technology", 37_885),
    ("GOOGL", "Alphabet Inc. Class A", "Communication Services", 14_180),
    ("AMZN", "Amazon.com, Inc.", "Consumer Discretionary", 17_825),
    ("TSLA", "Tesla, Inc.", "Consumer Discretionary", 24_850),
    ("NVDA", "NVIDIA Corporation", "Technology", 87_530),
    ("META", "Meta Platforms, Inc. Class A", "Communication Services", 48_420),
    ("JPM", "JPMorgan Chase & Co.", "Financials", 19_575),
    ("BRK.B", "Berkshire Hathaway Inc. Class B", "Financials", 40_860),
    ("SPY", "SPDR S&P 500 ETF Trust", "ETF", 50_210),
];

impl Default for SimulatorConfig {
    fn default() -> Self {
        let symbols = DEFAULT_LISTING
            .iter()
            // Every entry is a valid ticker (a test lists them all), so nothing is dropped.
            .filter_map(|&(ticker, name, category, cents)| {
                Some(ListedSymbol {
                    symbol: Symbol::parse(ticker).ok()?,
                    name: name.to_owned(),
                    category: category.to_owned(),
                    start_price: Decimal::new(cents, 2),
                })
            })
            .collect();
        Self {
            symbols,
            seed: DEFAULT_SEED,
            tick_interval: DEFAULT_TICK_INTERVAL,
            max_step_bps: DEFAULT_MAX_STEP_BPS,
            hours: MarketHours::AlwaysOpen,
            feed_capacity: DEFAULT_FEED_CAPACITY,
        }
    }
}

/// Why `set_price` refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetPriceError {
    #[error("symbol {0} is not listed")]
    UnknownSymbol(String),
    #[error("price {price} for {symbol} is refused: it {reason}")]
    InvalidPrice {
        symbol: String,
        price: Decimal,
        reason: AmountError,
    },
}

impl From<SetPriceError> for MarketError {
    /// `MarketError` has no variant for a bad price (only callers driving the
    /// simulator by hand can cause one), so it travels as `Unavailable` with the reason.
    fn from(error: SetPriceError) -> Self {
        match error {
            SetPriceError::UnknownSymbol(symbol) => MarketError::UnknownSymbol(symbol),
            invalid @ SetPriceError::InvalidPrice { .. } => MarketError::Unavailable(invalid.to_string()),
        }
    }
}

/// The market's mutable part, behind one lock so a tick and the price it
/// reports are always the same.
struct State {
    rng: StdRng,
    /// The latest quote of each listing, in listing order.
    quotes: Vec<PriceQuote>,
}

/// The embedded market simulator. Share it as `Arc<MarketSimulator>`.
pub struct MarketSimulator {
    listings: Vec<ListedSymbol>,
    index: HashMap<Symbol, usize>,
    max_step_bps: u32,
    tick_interval: Duration,
    hours: MarketHours,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    feed: broadcast::Sender<Tick>,
}

impl fmt::Debug for MarketSimulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MarketSimulator")
            .field("symbols", &self.listings.len())
            .field("max_step_bps", &self.max_step_bps)
            .field("tick_interval", &self.tick_interval)
            .field("hours", &self.hours)
            .field("subscribers", &self.feed.receiver_count())
            .finish_non_exhaustive()
    }
}

impl MarketSimulator {
    /// Builds the market. Out-of-range settings are brought into range rather
    /// than refused, with a warning, because the embedded market must start:
    /// the interval, step bound and feed capacity are clamped to their named
    /// limits, and start prices are put on the cent grid between `MIN_PRICE`
    /// and `MAX_PRICE` (the walk's own rounding, with no move).
    pub fn new(config: SimulatorConfig, clock: Arc<dyn Clock>) -> Self {
        let max_step_bps = config.max_step_bps.min(MAX_STEP_BPS_MAX);
        let tick_interval = config.tick_interval.max(TICK_INTERVAL_MIN);
        let feed_capacity = config.feed_capacity.clamp(FEED_CAPACITY_MIN, FEED_CAPACITY_MAX);
        if (max_step_bps, tick_interval, feed_capacity)
            != (config.max_step_bps, config.tick_interval, config.feed_capacity)
        {
            tracing::warn!(
                max_step_bps,
                ?tick_interval,
                feed_capacity,
                "market simulator settings clamped to their limits"
            );
        }

        let now = clock.now();
        let mut listings = Vec::with_capacity(config.symbols.len());
        let mut index = HashMap::with_capacity(config.symbols.len());
        let mut quotes = Vec::with_capacity(config.symbols.len());
        for mut listing in config.symbols {
            if index.contains_key(&listing.symbol) {
                tracing::warn!(symbol = %listing.symbol, "symbol listed twice; keeping the first listing");
                continue;
            }
            let start = apply_move(listing.start_price, 0);
            if start != listing.start_price {
                tracing::warn!(symbol = %listing.symbol, requested = %listing.start_price, %start,
                    "start price moved onto the cent grid within the walk's bounds");
                listing.start_price = start;
            }
            index.insert(listing.symbol.clone(), listings.len());
            quotes.push(PriceQuote {
                symbol: listing.symbol.clone(),
                price: start,
                as_of: now,
            });
            listings.push(listing);
        }

        let (feed, _) = broadcast::channel(feed_capacity);
        Self {
            listings,
            index,
            max_step_bps,
            tick_interval,
            hours: config.hours,
            clock,
            state: Mutex::new(State {
                rng: StdRng::seed_from_u64(config.seed),
                quotes,
            }),
            feed,
        }
    }

    /// Moves every listed price one step of the walk, in listing order, and
    /// publishes one tick per symbol. Returns the ticks published.
    pub fn step(&self) -> Vec<Tick> {
        let now = self.clock.now();
        let mut state = self.lock();
        let State { rng, quotes } = &mut *state;
        quotes
            .iter_mut()
            .map(|quote| {
                quote.price = walk_step(quote.price, self.max_step_bps, rng);
                quote.as_of = now;
                self.publish(quote.clone())
            })
            .collect()
    }

    /// Sets a symbol's price, for tests and demos that need a known price, and
    /// publishes the tick. Any positive `DECIMAL(18, 8)` amount is accepted as
    /// given; the next `step` puts it back on the cent grid.
    pub fn set_price(&self, symbol: &str, price: Decimal) -> Result<Tick, SetPriceError> {
        let position = self
            .position(symbol)
            .ok_or_else(|| SetPriceError::UnknownSymbol(symbol.to_owned()))?;
        check_positive_amount(price).map_err(|reason| SetPriceError::InvalidPrice {
            symbol: symbol.to_owned(),
            price,
            reason,
        })?;
        let now = self.clock.now();
        let mut state = self.lock();
        let quote = state
            .quotes
            .get_mut(position)
            .ok_or_else(|| SetPriceError::UnknownSymbol(symbol.to_owned()))?;
        // Normalised so a caller's trailing zeros cannot stretch later arithmetic.
        quote.price = price.normalize();
        quote.as_of = now;
        Ok(self.publish(quote.clone()))
    }

    /// Runs `step` every `tick_interval` until the task is aborted or the
    /// simulator is dropped. The first step comes one interval after the call.
    /// A stalled runtime delays ticks rather than bursting to catch up.
    pub fn spawn(self: Arc<Self>) -> JoinHandle<()> {
        let tick_interval = self.tick_interval;
        // A weak handle, so the feed never keeps a market alive that nobody else holds.
        let market = Arc::downgrade(&self);
        drop(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(tick_interval);
            ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
            // The first tick of an interval is immediate; the feed starts one interval in.
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let Some(market) = market.upgrade() else {
                    return;
                };
                market.step();
            }
        })
    }

    /// The symbols listed, in listing order.
    pub fn listings(&self) -> &[ListedSymbol] {
        &self.listings
    }

    pub fn hours(&self) -> MarketHours {
        self.hours
    }

    /// Sends under the state lock so the feed's order is the order prices changed.
    /// A send with no subscribers fails; the tick is simply not needed.
    fn publish(&self, tick: Tick) -> Tick {
        let _ = self.feed.send(tick.clone());
        tick
    }

    /// Where a listed symbol sits; `None` for unlisted ones and for strings
    /// that are not valid tickers (matching is exact: `aapl` is not `AAPL`).
    fn position(&self, symbol: &str) -> Option<usize> {
        let symbol = Symbol::parse(symbol).ok()?;
        self.index.get(&symbol).copied()
    }

    fn listed(&self, symbol: &str) -> Result<usize, MarketError> {
        self.position(symbol)
            .ok_or_else(|| MarketError::UnknownSymbol(symbol.to_owned()))
    }

    fn quote_at(&self, position: usize, symbol: &str) -> Result<PriceQuote, MarketError> {
        self.lock()
            .quotes
            .get(position)
            .cloned()
            .ok_or_else(|| MarketError::UnknownSymbol(symbol.to_owned()))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves whole quotes behind (each is
        // replaced in one assignment), so the state is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl MarketData for MarketSimulator {
    async fn validate_symbol(&self, symbol: &str) -> Result<bool, MarketError> {
        Ok(self.position(symbol).is_some())
    }

    /// The latest price; `as_of` is when it was set (by the clock at that step).
    async fn current_price(&self, symbol: &str) -> Result<PriceQuote, MarketError> {
        let position = self.listed(symbol)?;
        self.quote_at(position, symbol)
    }

    async fn asset_details(&self, symbol: &str) -> Result<AssetDetails, MarketError> {
        let listing = self
            .listed(symbol)
            .ok()
            .and_then(|position| self.listings.get(position))
            .ok_or_else(|| MarketError::UnknownSymbol(symbol.to_owned()))?;
        Ok(AssetDetails {
            symbol: listing.symbol.clone(),
            name: listing.name.clone(),
            category: listing.category.clone(),
        })
    }

    async fn batch_prices(&self, symbols: &[String]) -> Result<Vec<PriceQuote>, MarketError> {
        let positions: Vec<usize> = symbols.iter().filter_map(|symbol| self.position(symbol)).collect();
        // One lock for the batch, so its quotes are one consistent snapshot.
        let state = self.lock();
        Ok(positions
            .into_iter()
            .filter_map(|position| state.quotes.get(position).cloned())
            .collect())
    }

    async fn is_market_open(&self, symbol: &str) -> Result<bool, MarketError> {
        self.listed(symbol)?;
        Ok(self.hours.is_open(self.clock.now()))
    }

    async fn trading_hours(&self, symbol: &str) -> Result<TradingHours, MarketError> {
        let position = self.listed(symbol)?;
        let listing = self
            .listings
            .get(position)
            .ok_or_else(|| MarketError::UnknownSymbol(symbol.to_owned()))?;
        Ok(self.hours.trading_hours(listing.symbol.clone()))
    }

    /// Each receiver holds at most `feed_capacity` ticks it has not read. A
    /// receiver that falls further behind gets `RecvError::Lagged(n)` and
    /// resumes at the oldest tick still held, so a slow subscriber loses old
    /// ticks instead of growing memory; the next tick of a symbol carries its
    /// latest price, so nothing is owed.
    fn subscribe(&self) -> broadcast::Receiver<Tick> {
        self.feed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Duration as ChronoDuration, NaiveTime, TimeZone, Utc};
    use rust_decimal_macros::dec;
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};

    use super::super::walk::{MAX_PRICE, MIN_PRICE};
    use super::*;
    use crate::clock::ManualClock;

    /// Monday 2026-01-05, 15:00 UTC.
    fn monday_afternoon() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 5, 15, 0, 0).single().unwrap()
    }

    fn listing(ticker: &str, cents: i64) -> ListedSymbol {
        ListedSymbol {
            symbol: Symbol::parse(ticker).unwrap(),
            name: format!("{ticker} Corp."),
            category: "Technology".into(),
            start_price: Decimal::new(cents, 2),
        }
    }

    fn config(seed: u64) -> SimulatorConfig {
        SimulatorConfig {
            symbols: vec![
                listing("AAPL", 15_025),
                listing("MSFT", 37_885),
                listing("BRK.B", 40_860),
            ],
            seed,
            tick_interval: Duration::from_secs(1),
            max_step_bps: 50,
            hours: MarketHours::AlwaysOpen,
            feed_capacity: 64,
        }
    }

    fn market_with(config: SimulatorConfig) -> (MarketSimulator, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(monday_afternoon()));
        (MarketSimulator::new(config, clock.clone()), clock)
    }

    fn market(seed: u64) -> MarketSimulator {
        market_with(config(seed)).0
    }

    fn prices(ticks: &[Tick]) -> Vec<Decimal> {
        ticks.iter().map(|tick| tick.price).collect()
    }

    fn drain(feed: &mut broadcast::Receiver<Tick>) -> Vec<Tick> {
        let mut ticks = Vec::new();
        while let Ok(tick) = feed.try_recv() {
            ticks.push(tick);
        }
        ticks
    }

    #[tokio::test]
    async fn the_default_lists_real_looking_symbols_and_is_always_open() {
        // Proves the embedded default lists every ticker it names, at its start price, and never closes.
        let defaults = SimulatorConfig::default();
        assert_eq!(defaults.symbols.len(), DEFAULT_LISTING.len());
        assert_eq!(defaults.hours, MarketHours::AlwaysOpen);
        let (market, _) = market_with(defaults);
        assert_eq!(market.current_price("AAPL").await.unwrap().price, dec!(150.25));
        for ticker in ["MSFT", "GOOGL", "AMZN", "TSLA", "NVDA", "SPY", "BRK.B"] {
            assert!(market.validate_symbol(ticker).await.unwrap(), "{ticker} is listed");
        }
        let spy = market.asset_details("SPY").await.unwrap();
        assert_eq!(spy.category, "ETF");
        assert!(market.is_market_open("AAPL").await.unwrap());
    }

    #[tokio::test]
    async fn unknown_and_malformed_symbols_are_refused() {
        // Proves lookups are exact on the ticker format: unlisted, lower-case and malformed symbols are unknown.
        let market = market(1);
        for symbol in ["ZZZZ", "aapl", "", "AAPL ", "1AAPL"] {
            assert!(!market.validate_symbol(symbol).await.unwrap(), "{symbol:?}");
            let unknown = MarketError::UnknownSymbol(symbol.to_owned());
            assert_eq!(market.current_price(symbol).await, Err(unknown.clone()));
            assert_eq!(market.asset_details(symbol).await, Err(unknown.clone()));
            assert_eq!(market.is_market_open(symbol).await, Err(unknown.clone()));
            assert_eq!(market.trading_hours(symbol).await, Err(unknown));
            assert_eq!(
                market.set_price(symbol, dec!(1)),
                Err(SetPriceError::UnknownSymbol(symbol.to_owned()))
            );
        }
        assert!(market.validate_symbol("BRK.B").await.unwrap());
    }

    #[tokio::test]
    async fn batch_prices_lists_the_known_symbols_in_the_order_asked() {
        // Proves batch_prices keeps the caller's order and leaves out unknown symbols.
        let market = market(1);
        let asked = ["BRK.B", "NOPE", "AAPL", "msft", "MSFT"].map(String::from);
        let quotes = market.batch_prices(&asked).await.unwrap();
        let symbols: Vec<&str> = quotes.iter().map(|quote| quote.symbol.as_str()).collect();
        assert_eq!(symbols, ["BRK.B", "AAPL", "MSFT"]);
        assert_eq!(quotes[1].price, dec!(150.25));
    }

    #[tokio::test]
    async fn set_price_publishes_a_tick_a_subscriber_receives() {
        // Proves a hand-set price is the current price and reaches every subscriber, stamped by the clock.
        let (market, clock) = market_with(config(1));
        let mut first = market.subscribe();
        let mut second = market.subscribe();
        clock.advance(ChronoDuration::seconds(30));
        let tick = market.set_price("AAPL", dec!(149.12345678)).unwrap();
        assert_eq!(tick.price, dec!(149.12345678));
        assert_eq!(tick.as_of, monday_afternoon() + ChronoDuration::seconds(30));
        assert_eq!(first.recv().await.unwrap(), tick);
        assert_eq!(second.recv().await.unwrap(), tick);
        assert_eq!(market.current_price("AAPL").await.unwrap(), tick);
    }

    #[tokio::test]
    async fn set_price_refuses_what_decimal_18_8_cannot_hold() {
        // Proves set_price checks the price like an order amount and changes nothing when it refuses.
        let market = market(1);
        let mut feed = market.subscribe();
        for price in [dec!(0), dec!(-1), dec!(0.000000001), dec!(10000000000)] {
            let refused = market.set_price("AAPL", price).unwrap_err();
            assert!(matches!(refused, SetPriceError::InvalidPrice { .. }), "{price}");
            assert!(matches!(MarketError::from(refused), MarketError::Unavailable(_)));
        }
        assert_eq!(feed.try_recv(), Err(TryRecvError::Empty));
        assert_eq!(market.current_price("AAPL").await.unwrap().price, dec!(150.25));
    }

    #[tokio::test]
    async fn step_publishes_one_tick_per_symbol_in_listing_order() {
        // Proves a step moves every symbol once, publishes exactly those ticks, and the quotes follow them.
        let (market, clock) = market_with(config(1));
        let mut feed = market.subscribe();
        clock.advance(ChronoDuration::seconds(1));
        let stepped = market.step();
        let received = drain(&mut feed);
        assert_eq!(received, stepped);
        let symbols: Vec<&str> = received.iter().map(|tick| tick.symbol.as_str()).collect();
        assert_eq!(symbols, ["AAPL", "MSFT", "BRK.B"]);
        for tick in &received {
            assert_eq!(tick.as_of, monday_afternoon() + ChronoDuration::seconds(1));
            assert_eq!(&market.current_price(tick.symbol.as_str()).await.unwrap(), tick);
        }
    }

    #[test]
    fn the_same_seed_drives_the_same_feed() {
        // Proves two markets with one seed tell the same story, and another seed a different one.
        let (first, second, other) = (market(42), market(42), market(43));
        let run = |market: &MarketSimulator| (0..50).flat_map(|_| prices(&market.step())).collect::<Vec<_>>();
        let story = run(&first);
        assert_eq!(story, run(&second));
        assert_ne!(story, run(&other));
    }

    #[test]
    fn a_step_bound_of_zero_holds_every_price() {
        // Proves max_step_bps bounds the feed's moves: zero means prices never change.
        let (market, _) = market_with(SimulatorConfig {
            max_step_bps: 0,
            ..config(9)
        });
        for _ in 0..20 {
            assert_eq!(prices(&market.step()), [dec!(150.25), dec!(378.85), dec!(408.60)]);
        }
    }

    #[test]
    fn out_of_range_settings_are_brought_into_range() {
        // Proves new() never panics on a bad config: capacity, interval, bound and prices are clamped.
        let (market, _) = market_with(SimulatorConfig {
            symbols: vec![listing("AAPL", -5), listing("MSFT", 1), listing("AAPL", 100)],
            tick_interval: Duration::ZERO,
            max_step_bps: u32::MAX,
            feed_capacity: 0,
            ..config(3)
        });
        assert_eq!(market.listings().len(), 2, "the repeated AAPL is dropped");
        assert_eq!(market.listings()[0].start_price, MIN_PRICE);
        assert_eq!(market.tick_interval, TICK_INTERVAL_MIN);
        assert_eq!(market.max_step_bps, MAX_STEP_BPS_MAX);
        let mut feed = market.subscribe();
        market.step();
        // Capacity 1: of the step's two ticks only the last is kept.
        assert_eq!(feed.try_recv(), Err(TryRecvError::Lagged(1)));
        assert_eq!(feed.try_recv().map(|tick| tick.symbol.to_string()), Ok("MSFT".into()));
        for _ in 0..100 {
            assert!(market
                .step()
                .iter()
                .all(|tick| tick.price >= MIN_PRICE && tick.price <= MAX_PRICE));
        }
    }

    #[tokio::test]
    async fn a_lagging_subscriber_is_told_it_lagged_instead_of_growing_memory() {
        // Proves the feed keeps only feed_capacity ticks: a slow reader loses the oldest and is told how many.
        let capacity = 4;
        let (market, _) = market_with(SimulatorConfig {
            feed_capacity: capacity,
            ..config(1)
        });
        let mut slow = market.subscribe();
        let sent = 10_i64;
        for cents in 1..=sent {
            market.set_price("AAPL", Decimal::new(10_000 + cents, 2)).unwrap();
        }
        let skipped = u64::try_from(sent).unwrap() - u64::try_from(capacity).unwrap();
        assert_eq!(slow.recv().await, Err(RecvError::Lagged(skipped)));
        let kept: Vec<Decimal> = drain(&mut slow).iter().map(|tick| tick.price).collect();
        assert_eq!(kept, [dec!(100.07), dec!(100.08), dec!(100.09), dec!(100.10)]);
    }

    #[tokio::test]
    async fn market_hours_follow_the_clock_across_boundaries_and_weekends() {
        // Proves is_market_open reads the injected clock: open at the open, closed at the close and on Saturday.
        let open = NaiveTime::from_hms_opt(14, 30, 0).unwrap();
        let close = NaiveTime::from_hms_opt(21, 0, 0).unwrap();
        let clock = Arc::new(ManualClock::new(
            Utc.with_ymd_and_hms(2026, 1, 9, 14, 29, 59).single().unwrap(),
        ));
        let market = MarketSimulator::new(
            SimulatorConfig {
                hours: MarketHours::session(open, close, false).unwrap(),
                ..config(1)
            },
            clock.clone(),
        );
        let mut observed = Vec::new();
        for step in [0, 1, 6 * 3600 + 29 * 60 + 59, 1, 24 * 3600 - 1] {
            clock.advance(ChronoDuration::seconds(step));
            observed.push((clock.now().to_rfc3339(), market.is_market_open("AAPL").await.unwrap()));
        }
        let expected = [
            ("2026-01-09T14:29:59+00:00", false),
            ("2026-01-09T14:30:00+00:00", true),
            ("2026-01-09T20:59:59+00:00", true),
            ("2026-01-09T21:00:00+00:00", false),
            ("2026-01-10T20:59:59+00:00", false),
        ]
        .map(|(at, open)| (at.to_owned(), open));
        assert_eq!(observed, expected);
        let hours = market.trading_hours("MSFT").await.unwrap();
        assert_eq!(
            (hours.open_utc, hours.close_utc, hours.weekends),
            (Some(open), Some(close), false)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn spawn_steps_every_tick_interval() {
        // Proves the spawned feed steps once per interval in virtual time, and stops when aborted.
        let market = Arc::new(market(1));
        let mut feed = market.subscribe();
        let symbols = market.listings().len();
        let handle = Arc::clone(&market).spawn();

        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(drain(&mut feed).is_empty(), "the first step waits one interval");
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(drain(&mut feed).len(), 3 * symbols, "steps at 1 s, 2 s and 3 s");

        handle.abort();
        assert!(handle.await.unwrap_err().is_cancelled());
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(drain(&mut feed).is_empty(), "an aborted feed is silent");
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_market_stops_its_feed() {
        // Proves the spawned task does not keep the market alive: dropping the last handle ends it.
        let market = Arc::new(market(1));
        let handle = Arc::clone(&market).spawn();
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        drop(market);
        tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .expect("the feed ends within an interval")
            .unwrap();
    }
}
