//! Market data as the engine sees it (seed 004 section 1.1): symbol validation,
//! prices, asset details, market hours, and a feed of price ticks that drives
//! resting orders.
//!
//! Implementations: the embedded simulator (`simulator.rs`), the default, and
//! the market data service over gRPC (`grpc.rs`), chosen by a setting.

use async_trait::async_trait;
use chrono::{DateTime, NaiveTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::order::Symbol;

pub mod grpc;
mod hours;
pub mod proto;
mod simulator;
mod walk;

pub use grpc::{ConfiguredAddress, DiscoveryError, GrpcMarketData, GrpcMarketDataConfig, MarketDataDiscovery};
pub use hours::{HoursError, MarketHours, Session};
pub use simulator::{
    ListedSymbol, MarketSimulator, SetPriceError, SimulatorConfig, DEFAULT_FEED_CAPACITY, DEFAULT_MAX_STEP_BPS,
    DEFAULT_SEED, DEFAULT_TICK_INTERVAL, FEED_CAPACITY_MAX, FEED_CAPACITY_MIN, TICK_INTERVAL_MIN,
};
pub use walk::{apply_move, walk_step, BPS_PER_UNIT, MAX_PRICE, MAX_STEP_BPS_MAX, MIN_PRICE, PRICE_SCALE};

/// A price observed at a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceQuote {
    pub symbol: Symbol,
    pub price: Decimal,
    pub as_of: DateTime<Utc>,
}

/// One price change on the feed.
pub type Tick = PriceQuote;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetDetails {
    pub symbol: Symbol,
    pub name: String,
    pub category: String,
}

/// When a symbol trades, in UTC. `None` hours mean always open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradingHours {
    pub symbol: Symbol,
    pub open_utc: Option<NaiveTime>,
    pub close_utc: Option<NaiveTime>,
    /// Trades on Saturday and Sunday too.
    pub weekends: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MarketError {
    #[error("symbol {0} is not listed")]
    UnknownSymbol(String),
    #[error("market data unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait MarketData: Send + Sync + 'static {
    async fn validate_symbol(&self, symbol: &str) -> Result<bool, MarketError>;
    async fn current_price(&self, symbol: &str) -> Result<PriceQuote, MarketError>;
    async fn asset_details(&self, symbol: &str) -> Result<AssetDetails, MarketError>;
    /// Quotes for the listed symbols among `symbols`, in the order asked; unknown ones are left out.
    async fn batch_prices(&self, symbols: &[String]) -> Result<Vec<PriceQuote>, MarketError>;
    async fn is_market_open(&self, symbol: &str) -> Result<bool, MarketError>;
    async fn trading_hours(&self, symbol: &str) -> Result<TradingHours, MarketError>;
    /// A new subscription to the tick feed. A slow subscriber loses the oldest
    /// ticks (`RecvError::Lagged`) rather than growing memory; the next tick
    /// of a symbol carries its latest price, so nothing is owed.
    fn subscribe(&self) -> broadcast::Receiver<Tick>;
}
