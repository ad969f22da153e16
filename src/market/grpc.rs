//! The market data service over gRPC (`docs/contracts/market_data.proto`),
//! as another implementation of [`MarketData`]: deadlines, retries with
//! backoff and the circuit breaker of `clients::resilience`, the address
//! looked up again when it stops accepting connections (as the HTTP clients
//! do), and answers checked before the engine sees them.
//!
//! Must never make up a price: a call that fails, times out, meets an open
//! breaker or gets a wrong answer (a zero, negative or malformed price, an
//! answer about another symbol) is `MarketError::Unavailable`, and the engine
//! refuses the order rather than quoting it.

use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveTime, Utc};
use rust_decimal::Decimal;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

use super::proto::market_data_service_client::MarketDataServiceClient;
use super::proto::{self, BatchMarketDataRequest, SymbolRequest};
use super::{AssetDetails, MarketData, MarketError, PriceQuote, Tick, TradingHours};
use crate::clients::{
    AddressLookup, BreakerConfig, BreakerState, CachedAddress, Resilience, ResilienceError, RetryPolicy, Transient,
};
use crate::order::{check_positive_amount, Symbol};

/// Per-attempt deadline when nothing is configured: a quote is on the
/// submission path, so a slow service must not hold an order for long.
pub const DEADLINE_DEFAULT: Duration = Duration::from_millis(500);
/// How often the watched symbols' prices are polled into the tick feed.
pub const POLL_INTERVAL_DEFAULT: Duration = Duration::from_secs(1);
/// The most symbols the tick feed polls; a symbol asked about past this is
/// quoted but not polled, so memory and the batch size stay bounded.
pub const WATCHED_SYMBOLS_MAX: usize = 1_024;
/// Ticks kept for a slow subscriber (as the simulator's default feed).
pub const FEED_CAPACITY: usize = 1_024;
/// The most decimal places a price may carry (`DECIMAL(18, 8)`).
const PRICE_PLACES_MAX: usize = 8;

/// How to reach the market data service and how patiently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcMarketDataConfig {
    /// Bound on one attempt (the client gives up; not sent as grpc-timeout).
    pub deadline: Duration,
    pub retry: RetryPolicy,
    pub breaker: BreakerConfig,
    /// How often the tick feed polls the symbols the engine has asked about.
    pub poll_interval: Duration,
}

impl Default for GrpcMarketDataConfig {
    /// 500 ms per attempt, 3 attempts with 100 ms–2 s backoff, a breaker
    /// opening after 5 consecutive failures for 30 s, a poll each second.
    fn default() -> Self {
        Self {
            deadline: DEADLINE_DEFAULT,
            retry: RetryPolicy::default(),
            breaker: BreakerConfig::default(),
            poll_interval: POLL_INTERVAL_DEFAULT,
        }
    }
}

/// Why the service's address is not known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    #[error("market data address {address:?} is not usable: {reason}")]
    BadAddress { address: String, reason: String },
}

/// Where the market data service is at start: a setting
/// ([`ConfiguredAddress`]), which `config::source` fills from the config
/// service's registry in production. Later moves are found through
/// [`GrpcMarketData::with_discovery`].
#[async_trait]
pub trait MarketDataDiscovery: Send + Sync {
    /// `http://host:port` of the service.
    async fn address(&self) -> Result<String, DiscoveryError>;
}

/// The address from `ORDER_ENGINE_MARKET_DATA_URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfiguredAddress(pub String);

#[async_trait]
impl MarketDataDiscovery for ConfiguredAddress {
    async fn address(&self) -> Result<String, DiscoveryError> {
        Ok(self.0.clone())
    }
}

/// Why one call failed, before resilience decides whether to try again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("market data service answered {code:?}: {message}")]
    Status { code: tonic::Code, message: String },
    /// The service answered, but not something the engine can trust.
    #[error("wrong answer from the market data service: {0}")]
    WrongAnswer(String),
}

impl Transient for CallError {
    fn is_transient(&self) -> bool {
        match self {
            Self::Status { code, .. } => matches!(
                code,
                tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::ResourceExhausted
                    | tonic::Code::Aborted
                    | tonic::Code::Internal
                    | tonic::Code::Unknown
            ),
            // A service that answers nonsense is unhealthy: another try may
            // reach a healthy instance, and repeated nonsense opens the breaker.
            Self::WrongAnswer(_) => true,
        }
    }
}

impl From<tonic::Status> for CallError {
    fn from(status: tonic::Status) -> Self {
        Self::Status {
            code: status.code(),
            message: status.message().to_owned(),
        }
    }
}

/// The market data service over gRPC. Share it as `Arc<GrpcMarketData>`.
pub struct GrpcMarketData {
    /// A lazy channel to `address`, replaced when discovery finds the service elsewhere.
    client: RwLock<MarketDataServiceClient<Channel>>,
    address: CachedAddress,
    resilience: Resilience,
    deadline: Duration,
    poll_interval: Duration,
    /// Symbols the engine asked about, polled into the tick feed so resting
    /// orders see prices move.
    watched: Mutex<BTreeSet<String>>,
    feed: broadcast::Sender<Tick>,
}

impl std::fmt::Debug for GrpcMarketData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcMarketData")
            .field("address", &self.address)
            .field("deadline", &self.deadline)
            .field("breaker", &self.resilience.breaker().state())
            .finish_non_exhaustive()
    }
}

impl GrpcMarketData {
    /// A client of the service at the address `discovery` gives. Connects
    /// lazily: a service that is down at start makes calls fail (and the
    /// orders that need them be refused), not the engine fail to start.
    pub async fn connect(
        discovery: &dyn MarketDataDiscovery,
        config: &GrpcMarketDataConfig,
    ) -> Result<Self, DiscoveryError> {
        let address = discovery.address().await?;
        let client = lazy_client(&address, config.deadline).map_err(|reason| DiscoveryError::BadAddress {
            address: address.clone(),
            reason,
        })?;
        Ok(Self {
            client: RwLock::new(client),
            address: CachedAddress::new("market_data", &address),
            resilience: Resilience::new(config.retry, config.breaker, config.deadline),
            deadline: config.deadline,
            poll_interval: config.poll_interval,
            watched: Mutex::new(BTreeSet::new()),
            feed: broadcast::channel(FEED_CAPACITY).0,
        })
    }

    /// Looks the service up again through `discovery` when a call cannot
    /// connect to the address it has (the registry's `market_data_service`
    /// in production, as for the balance and account clients).
    pub fn with_discovery(mut self, discovery: Arc<dyn AddressLookup>) -> Self {
        self.address = self.address.with_lookup(discovery);
        self
    }

    /// The address calls go to now.
    pub fn address(&self) -> String {
        self.address.get()
    }

    /// What a call arriving now would meet; for tests and health.
    pub fn breaker_state(&self) -> BreakerState {
        self.resilience.breaker().state()
    }

    /// The breaker, for `/health/circuit-breaker` and `/metrics`.
    pub fn breaker(&self) -> Arc<crate::clients::CircuitBreaker> {
        self.resilience.shared_breaker()
    }

    /// Polls the watched symbols into the tick feed every `poll_interval`
    /// until the task is aborted. A failed poll is logged and skipped: no
    /// tick is better than a made-up one.
    pub fn spawn_feed(self: Arc<Self>) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(self.poll_interval);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let symbols: Vec<String> = self.lock_watched().iter().cloned().collect();
                if symbols.is_empty() {
                    continue;
                }
                match self.batch_prices(&symbols).await {
                    Ok(quotes) => {
                        for quote in quotes {
                            // No subscriber is not an error: nothing rests yet.
                            let _ = self.feed.send(quote);
                        }
                    }
                    Err(error) => tracing::warn!(%error, "market data poll failed; no ticks this round"),
                }
            }
        })
    }

    fn watch(&self, symbol: &str) {
        let mut watched = self.lock_watched();
        if watched.len() < WATCHED_SYMBOLS_MAX {
            watched.insert(symbol.to_owned());
        }
    }

    fn lock_watched(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        // A set of names replaced element by element; a panic cannot leave it torn.
        self.watched.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One resilient call: each attempt is bounded by the deadline, and its answer is
    /// checked by `check` inside the attempt, so a wrong answer is retried
    /// and counted by the breaker like a failure.
    async fn call<Req, Res, T, F, Fut>(
        &self,
        symbol: &str,
        request: Req,
        send: F,
        check: impl Fn(Res) -> Result<T, CallError>,
    ) -> Result<T, MarketError>
    where
        Req: Clone,
        F: Fn(MarketDataServiceClient<Channel>, tonic::Request<Req>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<Res>, tonic::Status>>,
    {
        let answer = self
            .resilience
            .run(|_attempt| {
                // The deadline is Resilience's per-attempt timeout alone: a
                // tonic-side one (grpc-timeout) races it and ends the call as
                // CANCELLED, which reads as a refusal and is not retried.
                let request = tonic::Request::new(request.clone());
                let pending = send(self.current_client(), request);
                let check = &check;
                async move {
                    match pending.await {
                        Ok(answer) => check(answer.into_inner()),
                        Err(status) => {
                            if is_connection_error(&status) {
                                self.rediscover().await;
                            }
                            Err(status.into())
                        }
                    }
                }
            })
            .await;
        answer.map_err(|error| match error {
            ResilienceError::Failed {
                error:
                    CallError::Status {
                        code: tonic::Code::NotFound,
                        ..
                    },
                ..
            } => MarketError::UnknownSymbol(symbol.to_owned()),
            other => MarketError::Unavailable(other.to_string()),
        })
    }
}

impl GrpcMarketData {
    fn current_client(&self) -> MarketDataServiceClient<Channel> {
        // A handle replaced whole; a panic elsewhere cannot leave it torn.
        self.client.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// After a connection error: ask discovery where the service is now and,
    /// when it moved, point the channel there, so the next attempt (this
    /// call's retry, or the next call) goes there.
    async fn rediscover(&self) {
        let moved = self.address.refresh(|url| lazy_client(url, self.deadline)).await;
        if let Some(client) = moved {
            *self.client.write().unwrap_or_else(PoisonError::into_inner) = client;
        }
    }
}

/// A client whose channel connects at its first call: a service that is down
/// makes calls fail (and the orders that need them be refused), not the
/// engine fail to start. The connect is bounded by the per-attempt deadline.
fn lazy_client(address: &str, deadline: Duration) -> Result<MarketDataServiceClient<Channel>, String> {
    let endpoint = Endpoint::from_shared(address.to_owned())
        .map_err(|e| e.to_string())?
        .connect_timeout(deadline);
    Ok(MarketDataServiceClient::new(endpoint.connect_lazy()))
}

/// Whether the channel failed to connect or lost its connection, as opposed
/// to the service answering UNAVAILABLE: tonic makes the status on this side
/// then, with the transport's error as its source; a status the service sent
/// is read from its trailers and has none.
fn is_connection_error(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unavailable && std::error::Error::source(status).is_some()
}

/// A price as the contract writes it: plain decimal text, greater than zero,
/// at most 8 places, fitting `DECIMAL(18, 8)`. Refuses exponents, signs other
/// than a leading `-` (then refused as not positive), separators and
/// anything a float would print for NaN or infinity.
pub fn parse_price(text: &str) -> Result<Decimal, String> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let plain = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !plain(whole) || !plain(fraction) || (digits.contains('.') && fraction.is_empty()) {
        return Err(format!("price {text:?} is not a plain decimal"));
    }
    if fraction.len() > PRICE_PLACES_MAX {
        return Err(format!(
            "price {text:?} has {} decimal places; at most {PRICE_PLACES_MAX} are allowed",
            fraction.len()
        ));
    }
    let price = Decimal::from_str_exact(text).map_err(|e| format!("price {text:?}: {e}"))?;
    check_positive_amount(price).map_err(|reason| format!("price {text:?} {reason}"))?;
    Ok(price)
}

fn same_symbol(asked: &str, answered: &str) -> Result<(), CallError> {
    if asked == answered {
        Ok(())
    } else {
        Err(CallError::WrongAnswer(format!(
            "asked about {asked}, answered about {answered:?}"
        )))
    }
}

fn symbol_of(text: &str) -> Result<Symbol, CallError> {
    Symbol::parse(text).map_err(|e| CallError::WrongAnswer(format!("symbol {text:?}: {e}")))
}

fn as_of(timestamp: Option<&prost_types::Timestamp>) -> Result<DateTime<Utc>, CallError> {
    let timestamp = timestamp.ok_or_else(|| CallError::WrongAnswer("a price without its time (as_of)".into()))?;
    u32::try_from(timestamp.nanos)
        .ok()
        .and_then(|nanos| DateTime::from_timestamp(timestamp.seconds, nanos))
        .ok_or_else(|| CallError::WrongAnswer(format!("as_of {timestamp:?} is not a time")))
}

/// A quote from one `MarketData` message, checked.
fn quote_of(data: &proto::MarketData) -> Result<PriceQuote, CallError> {
    Ok(PriceQuote {
        symbol: symbol_of(&data.symbol)?,
        price: parse_price(&data.price).map_err(CallError::WrongAnswer)?,
        as_of: as_of(data.as_of.as_ref())?,
    })
}

fn time_of_day(seconds: u32) -> Result<NaiveTime, CallError> {
    NaiveTime::from_num_seconds_from_midnight_opt(seconds, 0)
        .ok_or_else(|| CallError::WrongAnswer(format!("{seconds} s is not a time of day")))
}

#[async_trait]
impl MarketData for GrpcMarketData {
    async fn validate_symbol(&self, symbol: &str) -> Result<bool, MarketError> {
        let request = SymbolRequest { symbol: symbol.into() };
        let listed = self
            .call(
                symbol,
                request,
                |mut client, request| async move { client.validate_symbol(request).await },
                |answer: proto::ValidateSymbolResponse| {
                    same_symbol(symbol, &answer.symbol)?;
                    Ok(answer.listed)
                },
            )
            .await;
        match listed {
            Err(MarketError::UnknownSymbol(_)) => Ok(false),
            other => other,
        }
    }

    async fn current_price(&self, symbol: &str) -> Result<PriceQuote, MarketError> {
        let request = SymbolRequest { symbol: symbol.into() };
        let quote = self
            .call(
                symbol,
                request,
                |mut client, request| async move { client.get_market_data(request).await },
                |answer: proto::MarketData| {
                    same_symbol(symbol, &answer.symbol)?;
                    quote_of(&answer)
                },
            )
            .await?;
        self.watch(symbol);
        Ok(quote)
    }

    async fn asset_details(&self, symbol: &str) -> Result<AssetDetails, MarketError> {
        let request = SymbolRequest { symbol: symbol.into() };
        self.call(
            symbol,
            request,
            |mut client, request| async move { client.get_market_data(request).await },
            |answer: proto::MarketData| {
                same_symbol(symbol, &answer.symbol)?;
                Ok(AssetDetails {
                    symbol: symbol_of(&answer.symbol)?,
                    name: answer.company_name,
                    category: answer.category,
                })
            },
        )
        .await
    }

    async fn batch_prices(&self, symbols: &[String]) -> Result<Vec<PriceQuote>, MarketError> {
        let request = BatchMarketDataRequest {
            symbols: symbols.to_vec(),
        };
        let asked: BTreeSet<&str> = symbols.iter().map(String::as_str).collect();
        self.call(
            "",
            request,
            |mut client, request| async move { client.get_batch_market_data(request).await },
            |answer: proto::BatchMarketDataResponse| {
                answer
                    .quotes
                    .iter()
                    .map(|data| {
                        if !asked.contains(data.symbol.as_str()) {
                            return Err(CallError::WrongAnswer(format!(
                                "a batch answer about {:?}, which was not asked",
                                data.symbol
                            )));
                        }
                        quote_of(data)
                    })
                    .collect()
            },
        )
        .await
    }

    async fn is_market_open(&self, symbol: &str) -> Result<bool, MarketError> {
        let request = SymbolRequest { symbol: symbol.into() };
        self.call(
            symbol,
            request,
            |mut client, request| async move { client.is_market_open(request).await },
            |answer: proto::MarketOpenResponse| {
                same_symbol(symbol, &answer.symbol)?;
                Ok(answer.open)
            },
        )
        .await
    }

    async fn trading_hours(&self, symbol: &str) -> Result<TradingHours, MarketError> {
        let request = SymbolRequest { symbol: symbol.into() };
        self.call(
            symbol,
            request,
            |mut client, request| async move { client.get_trading_hours(request).await },
            |answer: proto::TradingHoursResponse| {
                same_symbol(symbol, &answer.symbol)?;
                let (open_utc, close_utc) = match (answer.open_utc_seconds, answer.close_utc_seconds) {
                    (None, None) => (None, None),
                    (Some(open), Some(close)) => (Some(time_of_day(open)?), Some(time_of_day(close)?)),
                    _ => {
                        return Err(CallError::WrongAnswer(
                            "trading hours with an open but no close, or a close but no open".into(),
                        ))
                    }
                };
                Ok(TradingHours {
                    symbol: symbol_of(&answer.symbol)?,
                    open_utc,
                    close_utc,
                    weekends: answer.weekends,
                })
            },
        )
        .await
    }

    fn subscribe(&self) -> broadcast::Receiver<Tick> {
        self.feed.subscribe()
    }
}

impl FromStr for ConfiguredAddress {
    type Err = DiscoveryError;

    /// `http://host:port`; the scheme is required so a typo fails at start.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.starts_with("http://") || text.starts_with("https://") {
            Ok(Self(text.trim_end_matches('/').to_owned()))
        } else {
            Err(DiscoveryError::BadAddress {
                address: text.to_owned(),
                reason: "expected http://host:port".into(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_pass_exactly_and_wrong_ones_are_refused() {
        // Proves the contract's decimal text: kept exactly (scale too), and zero,
        // negative, exponent, separators, NaN/inf text and >8 places refused.
        assert_eq!(parse_price("150.25").unwrap().to_string(), "150.25");
        assert_eq!(parse_price("0.00000001").unwrap().to_string(), "0.00000001");
        assert_eq!(parse_price("150.10").unwrap().to_string(), "150.10");
        for wrong in [
            "0",
            "0.0",
            "-1",
            "-150.25",
            "1e3",
            "1_000",
            "+5",
            "NaN",
            "inf",
            "",
            ".5",
            "5.",
            "1.123456789",
            "1,5",
            " 1",
            "1000000000000",
        ] {
            assert!(parse_price(wrong).is_err(), "{wrong:?} was accepted");
        }
    }

    #[test]
    fn statuses_that_may_pass_are_transient_and_refusals_are_not() {
        // Proves which answers are retried and counted by the breaker.
        let status = |code| CallError::Status {
            code,
            message: String::new(),
        };
        assert!(status(tonic::Code::Unavailable).is_transient());
        assert!(status(tonic::Code::DeadlineExceeded).is_transient());
        assert!(CallError::WrongAnswer("x".into()).is_transient());
        assert!(!status(tonic::Code::NotFound).is_transient());
        assert!(!status(tonic::Code::InvalidArgument).is_transient());
    }

    #[test]
    fn only_a_failed_connection_sends_the_client_back_to_discovery() {
        // Proves an UNAVAILABLE the service sent keeps the address, and one the transport made looks up again.
        assert!(!is_connection_error(&tonic::Status::unavailable("draining")));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let local = tonic::Status::from_error(Box::new(tonic::ConnectError(Box::new(refused))));
        assert_eq!(local.code(), tonic::Code::Unavailable);
        assert!(is_connection_error(&local));
        let not_found = tonic::Status::from_error(Box::new(tonic::Status::not_found("AAPL")));
        assert!(!is_connection_error(&not_found));
    }

    #[test]
    fn the_configured_address_needs_a_scheme() {
        // Proves a typo in ORDER_ENGINE_MARKET_DATA_URL fails at start.
        assert_eq!(
            "http://md:50054/".parse::<ConfiguredAddress>().unwrap(),
            ConfiguredAddress("http://md:50054".into())
        );
        assert!("md:50054".parse::<ConfiguredAddress>().is_err());
    }
}
