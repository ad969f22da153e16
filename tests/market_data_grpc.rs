//! The gRPC market data client (`market::grpc`) against a stub market data
//! service built from the same proto, on port 0: quotes pass through exactly;
//! a slow, down or wrong service is `Unavailable` (never a made-up price); the
//! breaker opens after repeated failures (calls stop reaching the stub) and a
//! probe closes it; an address that stops accepting connections is looked up
//! again in a registry stand-in (wiremock); and the real app, built through the composition root with
//! `ORDER_ENGINE_MARKET_DATA=grpc`, refuses an order with
//! `market-data-unavailable` and appends nothing for it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use order_engine::app::Application;
use order_engine::clients::{BreakerConfig, BreakerState, RetryPolicy};
use order_engine::config::source::MARKET_DATA_SERVICE_NAME;
use order_engine::config::MarketDataSource;
use order_engine::configsvc::discovery::RegistryLookup;
use order_engine::configsvc::ConfigServiceClient;
use order_engine::market::proto::market_data_service_server::{MarketDataService, MarketDataServiceServer};
use order_engine::market::proto::{
    BatchMarketDataRequest, BatchMarketDataResponse, MarketData as MarketDataMessage, MarketOpenResponse,
    SymbolRequest, TradingHoursResponse, ValidateSymbolResponse,
};
use order_engine::market::{ConfiguredAddress, GrpcMarketData, GrpcMarketDataConfig, MarketData, MarketError};
use serde_json::json;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};
use uuid::Uuid;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use common::engine::{fast_config, test_settings};
use common::http::token;
use common::TestDb;

/// How the stub behaves for every call from now on.
#[derive(Debug, Clone)]
enum Mode {
    /// Answers from its listing.
    Healthy,
    /// Answers, but only after this long.
    Slow(Duration),
    /// Fails every call with UNAVAILABLE.
    Failing,
    /// Answers every price with this text.
    Price(String),
    /// Answers about another symbol than the one asked.
    OtherSymbol,
}

/// The stub market data service: a listing, a mode, and a count of calls.
#[derive(Clone)]
struct Stub {
    mode: Arc<Mutex<Mode>>,
    calls: Arc<AtomicU32>,
    listing: Arc<HashMap<&'static str, (&'static str, &'static str, &'static str)>>,
}

impl Stub {
    fn new() -> Self {
        let listing = HashMap::from([
            ("AAPL", ("150.25", "Apple Inc.", "Technology")),
            ("MSFT", ("378.10", "Microsoft Corporation", "Technology")),
            ("SPY", ("502.10000001", "SPDR S&P 500 ETF Trust", "ETF")),
        ]);
        Self {
            mode: Arc::new(Mutex::new(Mode::Healthy)),
            calls: Arc::new(AtomicU32::new(0)),
            listing: Arc::new(listing),
        }
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Counts the call and applies the mode's failure or delay.
    async fn enter(&self) -> Result<Mode, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mode = self.mode.lock().unwrap().clone();
        match &mode {
            Mode::Failing => return Err(Status::unavailable("stub: down for maintenance")),
            Mode::Slow(delay) => tokio::time::sleep(*delay).await,
            _ => {}
        }
        Ok(mode)
    }

    fn data(&self, mode: &Mode, symbol: &str) -> Result<MarketDataMessage, Status> {
        let (price, name, category) = self
            .listing
            .get(symbol)
            .ok_or_else(|| Status::not_found(format!("{symbol} is not listed")))?;
        Ok(MarketDataMessage {
            symbol: match mode {
                Mode::OtherSymbol => "TSLA".into(),
                _ => symbol.into(),
            },
            price: match mode {
                Mode::Price(text) => text.clone(),
                _ => (*price).into(),
            },
            company_name: (*name).into(),
            category: (*category).into(),
            as_of: Some(prost_types::Timestamp {
                seconds: 1_762_250_400,
                nanos: 0,
            }),
        })
    }

    fn answered(mode: &Mode, symbol: String) -> String {
        match mode {
            Mode::OtherSymbol => "TSLA".into(),
            _ => symbol,
        }
    }
}

#[tonic::async_trait]
impl MarketDataService for Stub {
    async fn validate_symbol(
        &self,
        request: Request<SymbolRequest>,
    ) -> Result<Response<ValidateSymbolResponse>, Status> {
        let mode = self.enter().await?;
        let symbol = request.into_inner().symbol;
        let listed = self.listing.contains_key(symbol.as_str());
        Ok(Response::new(ValidateSymbolResponse {
            symbol: Self::answered(&mode, symbol),
            listed,
        }))
    }

    async fn get_market_data(&self, request: Request<SymbolRequest>) -> Result<Response<MarketDataMessage>, Status> {
        let mode = self.enter().await?;
        self.data(&mode, &request.into_inner().symbol).map(Response::new)
    }

    async fn get_batch_market_data(
        &self,
        request: Request<BatchMarketDataRequest>,
    ) -> Result<Response<BatchMarketDataResponse>, Status> {
        let mode = self.enter().await?;
        let quotes = request
            .into_inner()
            .symbols
            .iter()
            .filter_map(|symbol| self.data(&mode, symbol).ok())
            .collect();
        Ok(Response::new(BatchMarketDataResponse { quotes }))
    }

    async fn is_market_open(&self, request: Request<SymbolRequest>) -> Result<Response<MarketOpenResponse>, Status> {
        let mode = self.enter().await?;
        let symbol = request.into_inner().symbol;
        self.data(&mode, &symbol)?;
        Ok(Response::new(MarketOpenResponse {
            symbol: Self::answered(&mode, symbol),
            open: true,
        }))
    }

    async fn get_trading_hours(
        &self,
        request: Request<SymbolRequest>,
    ) -> Result<Response<TradingHoursResponse>, Status> {
        let mode = self.enter().await?;
        let symbol = request.into_inner().symbol;
        self.data(&mode, &symbol)?;
        Ok(Response::new(TradingHoursResponse {
            symbol: Self::answered(&mode, symbol),
            open_utc_seconds: Some(14 * 3600 + 30 * 60),
            close_utc_seconds: Some(21 * 3600),
            weekends: false,
        }))
    }
}

/// Serves `stub` on 127.0.0.1 at a port the OS picks; returns its address.
async fn serve(stub: Stub) -> String {
    serve_until(stub, std::future::pending()).await.0
}

/// Serves `stub` until `stop` resolves, then closes its connections; returns
/// its address and the server's task, which ends once it has stopped.
async fn serve_until(
    stub: Stub,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> (String, tokio::task::JoinHandle<Result<(), tonic::transport::Error>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(MarketDataServiceServer::new(stub))
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), stop),
    );
    (address, server)
}

/// An address where nothing listens: a port the OS gave and took back.
async fn nothing_listening() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    address
}

/// Short deadlines and one attempt, so each call is one stub call.
fn config(attempts_max: u32, breaker: BreakerConfig) -> GrpcMarketDataConfig {
    GrpcMarketDataConfig {
        deadline: Duration::from_millis(200),
        retry: RetryPolicy {
            attempts_max,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(20),
        },
        breaker,
        poll_interval: Duration::from_secs(3_600),
    }
}

fn patient_breaker() -> BreakerConfig {
    BreakerConfig {
        failure_threshold: 1_000,
        open_for: Duration::from_secs(60),
    }
}

async fn client(address: &str, config: GrpcMarketDataConfig) -> GrpcMarketData {
    GrpcMarketData::connect(&ConfiguredAddress(address.to_owned()), &config)
        .await
        .unwrap()
}

fn unavailable<T: std::fmt::Debug>(result: Result<T, MarketError>) -> String {
    match result {
        Err(MarketError::Unavailable(reason)) => reason,
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn quotes_details_and_hours_pass_through_exactly() {
    // Proves every method of the contract maps to the trait with prices kept
    // exactly (scale included), and an unlisted symbol is UnknownSymbol.
    let stub = Stub::new();
    let market = client(&serve(stub.clone()).await, config(1, patient_breaker())).await;

    let quote = market.current_price("AAPL").await.unwrap();
    assert_eq!(quote.price.to_string(), "150.25");
    assert_eq!(quote.as_of.timestamp(), 1_762_250_400);
    assert_eq!(market.current_price("MSFT").await.unwrap().price.to_string(), "378.10");
    assert_eq!(
        market.current_price("SPY").await.unwrap().price.to_string(),
        "502.10000001"
    );

    let details = market.asset_details("AAPL").await.unwrap();
    assert_eq!(
        (details.name.as_str(), details.category.as_str()),
        ("Apple Inc.", "Technology")
    );

    let batch = market
        .batch_prices(&["MSFT".into(), "NOPE".into(), "AAPL".into()])
        .await
        .unwrap();
    let batch: Vec<(String, String)> = batch
        .iter()
        .map(|q| (q.symbol.to_string(), q.price.to_string()))
        .collect();
    assert_eq!(
        batch,
        [("MSFT".into(), "378.10".into()), ("AAPL".into(), "150.25".into())]
    );

    assert!(market.validate_symbol("AAPL").await.unwrap());
    assert!(!market.validate_symbol("NOPE").await.unwrap());
    assert!(market.is_market_open("AAPL").await.unwrap());
    let hours = market.trading_hours("AAPL").await.unwrap();
    assert_eq!(hours.open_utc.unwrap().to_string(), "14:30:00");
    assert_eq!(hours.close_utc.unwrap().to_string(), "21:00:00");
    assert!(!hours.weekends);

    assert!(matches!(
        market.current_price("NOPE").await,
        Err(MarketError::UnknownSymbol(symbol)) if symbol == "NOPE"
    ));
    // A NOT_FOUND is an answer: it never counts towards the breaker.
    assert_eq!(market.breaker_state(), BreakerState::Closed);
}

#[tokio::test]
async fn a_slow_service_hits_the_deadline_with_a_clear_error() {
    // Proves the per-attempt deadline: a stub that sleeps past it is
    // Unavailable within the deadlines and backoffs, naming the deadline.
    let stub = Stub::new();
    stub.set(Mode::Slow(Duration::from_secs(5)));
    let market = client(&serve(stub.clone()).await, config(2, patient_breaker())).await;
    let started = Instant::now();
    let reason = unavailable(market.current_price("AAPL").await);
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert!(reason.contains("200 ms"), "{reason}");
    assert_eq!(stub.calls(), 2, "retried once, with backoff");
}

#[tokio::test]
async fn a_down_service_is_unavailable() {
    // Proves a refused connection is Unavailable, not a price.
    let market = client(&nothing_listening().await, config(2, patient_breaker())).await;
    let started = Instant::now();
    let reason = unavailable(market.current_price("AAPL").await);
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert!(!reason.is_empty());
}

/// The registry stand-in's answer for the market data service: `url`.
fn registered_at(url: &str) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .set_body_json(json!({"service_name": MARKET_DATA_SERVICE_NAME, "service_url": url, "status": "healthy"}))
}

#[tokio::test]
async fn the_client_finds_the_service_again_when_its_address_stops_answering() {
    // Proves discovery with a second lookup, as for the balance client: a call to an address that refuses
    // connections asks the registry and its retry reaches the service there; that address is kept (no lookup
    // per call); and when that instance goes away, the registry's changed answer is looked up and called.
    let first = Stub::new();
    let (stop_first, stopped) = tokio::sync::oneshot::channel::<()>();
    let (first_address, first_server) = serve_until(first.clone(), async {
        let _ = stopped.await;
    })
    .await;
    let second = Stub::new();
    let second_address = serve(second.clone()).await;
    let registry = MockServer::start().await;
    let route = format!("/api/v1/registry/{MARKET_DATA_SERVICE_NAME}");
    Mock::given(method("GET"))
        .and(path(route.as_str()))
        .respond_with(registered_at(&first_address))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&registry)
        .await;
    Mock::given(method("GET"))
        .and(path(route.as_str()))
        .respond_with(registered_at(&second_address))
        .mount(&registry)
        .await;
    let lookup = RegistryLookup::new(
        ConfigServiceClient::new(&registry.uri(), "prod", "engine-internal-key").unwrap(),
        MARKET_DATA_SERVICE_NAME,
    );
    let lookups = || async { registry.received_requests().await.unwrap().len() };
    let market = client(&nothing_listening().await, config(3, patient_breaker()))
        .await
        .with_discovery(Arc::new(lookup));

    let quote = market.current_price("AAPL").await.unwrap();
    assert_eq!(quote.price.to_string(), "150.25");
    assert_eq!(market.address(), first_address);
    market.current_price("MSFT").await.unwrap();
    assert_eq!(first.calls(), 2);
    assert_eq!(lookups().await, 1, "the address is kept between calls");

    stop_first.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), first_server)
        .await
        .expect("the first instance stops")
        .unwrap()
        .unwrap();
    let quote = market.current_price("AAPL").await.unwrap();
    assert_eq!(quote.price.to_string(), "150.25");
    assert_eq!(market.address(), second_address);
    assert_eq!((first.calls(), second.calls()), (2, 1));
    assert_eq!(lookups().await, 2);
}

#[tokio::test]
async fn wrong_answers_are_refused_never_passed_on() {
    // Proves a zero, negative, malformed, over-precise or NaN/inf price, and an
    // answer about another symbol, are Unavailable: nothing made up passes.
    let stub = Stub::new();
    let market = client(&serve(stub.clone()).await, config(1, patient_breaker())).await;
    for price in [
        "0",
        "-150.25",
        "1.5e2",
        "NaN",
        "inf",
        "150.123456789",
        "15O.25",
        "",
        "1_000",
    ] {
        stub.set(Mode::Price(price.into()));
        let reason = unavailable(market.current_price("AAPL").await);
        assert!(reason.contains("wrong answer"), "{price:?}: {reason}");
        unavailable(market.batch_prices(&["AAPL".into()]).await);
    }
    stub.set(Mode::OtherSymbol);
    let reason = unavailable(market.current_price("AAPL").await);
    assert!(reason.contains("TSLA"), "{reason}");
    unavailable(market.is_market_open("AAPL").await);
    unavailable(market.trading_hours("AAPL").await);
}

#[tokio::test]
async fn the_breaker_opens_after_failures_and_a_probe_closes_it() {
    // Proves the breaker: three failed calls open it; while open, calls fail
    // at once without reaching the stub; after its period one probe goes
    // through, and its success closes it.
    let stub = Stub::new();
    let open_for = Duration::from_millis(400);
    let breaker = BreakerConfig {
        failure_threshold: 3,
        open_for,
    };
    let market = client(&serve(stub.clone()).await, config(1, breaker)).await;
    stub.set(Mode::Failing);
    for _ in 0..3 {
        unavailable(market.current_price("AAPL").await);
    }
    assert_eq!(stub.calls(), 3);
    assert_eq!(market.breaker_state(), BreakerState::Open);

    let started = Instant::now();
    for _ in 0..10 {
        let reason = unavailable(market.current_price("AAPL").await);
        assert!(reason.contains("circuit open"), "{reason}");
    }
    assert!(started.elapsed() < Duration::from_millis(100), "fails fast");
    assert_eq!(stub.calls(), 3, "an open breaker never calls the stub");

    // The service recovers; after the open period one probe closes the breaker.
    stub.set(Mode::Healthy);
    tokio::time::sleep(open_for + Duration::from_millis(50)).await;
    assert_eq!(market.breaker_state(), BreakerState::HalfOpen);
    assert_eq!(market.current_price("AAPL").await.unwrap().price.to_string(), "150.25");
    assert_eq!(stub.calls(), 4);
    assert_eq!(market.breaker_state(), BreakerState::Closed);
    market.current_price("MSFT").await.unwrap();
    assert_eq!(stub.calls(), 5);
}

#[tokio::test]
async fn a_failed_probe_opens_the_breaker_again() {
    // Proves half-open: a probe that fails re-opens the breaker for another period.
    let stub = Stub::new();
    let breaker = BreakerConfig {
        failure_threshold: 1,
        open_for: Duration::from_millis(200),
    };
    let market = client(&serve(stub.clone()).await, config(1, breaker)).await;
    stub.set(Mode::Failing);
    unavailable(market.current_price("AAPL").await);
    assert_eq!(market.breaker_state(), BreakerState::Open);
    tokio::time::sleep(Duration::from_millis(250)).await;
    unavailable(market.current_price("AAPL").await);
    assert_eq!(stub.calls(), 2, "the probe reached the stub");
    assert_eq!(market.breaker_state(), BreakerState::Open);
}

#[actix_rt::test]
async fn the_app_on_grpc_market_data_quotes_from_it_and_refuses_orders_without_it() {
    // Proves the composition root's setting: with ORDER_ENGINE_MARKET_DATA=grpc
    // an order is quoted at the stub's price; with the stub down the order is
    // refused over HTTP with 503 market-data-unavailable and Retry-After, and
    // nothing is appended to the log for it.
    let stub = Stub::new();
    let address = serve(stub.clone()).await;
    let db = TestDb::sqlite();
    let mut settings = test_settings(db.url(), &fast_config());
    settings.http_addr = "127.0.0.1:0".parse().unwrap();
    settings.market_data = MarketDataSource::Grpc {
        address: ConfiguredAddress(address),
        config: config(1, patient_breaker()),
    };
    let opened = db.open_backend(None).await;
    let app = Application::builder(settings)
        .log(Arc::clone(&opened.store), Arc::clone(&opened.models))
        .http_workers(1)
        .build()
        .await
        .unwrap();
    assert!(app.market().is_none(), "no simulator behind the gRPC client");
    let store = app.store();
    let base = format!("http://127.0.0.1:{}/api/v1/orders", app.port());
    actix_rt::spawn(app.run_until(std::future::pending()));
    let http = reqwest::Client::new();
    let bearer = token(Uuid::new_v4());
    let order = json!({"symbol": "AAPL", "order_type": "MARKET", "order_side": "BUY", "quantity": 10});

    let accepted = http.post(&base).bearer_auth(&bearer).json(&order).send().await.unwrap();
    assert_eq!(accepted.status(), 202);
    let body: serde_json::Value = accepted.json().await.unwrap();
    assert_eq!(body["market_price"].to_string(), "150.25", "{body}");

    // Another user's orders, refused while market data is unavailable: no
    // event anywhere in the log may name them (no order, no reservation).
    let refused_user = Uuid::new_v4();
    let refused_bearer = token(refused_user);
    // Down, then answering a negative price: each refused the same way.
    for mode in [Mode::Failing, Mode::Price("-1".into())] {
        stub.set(mode.clone());
        let refused = http
            .post(&base)
            .bearer_auth(&refused_bearer)
            .json(&order)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 503, "{mode:?}");
        assert!(refused.headers().contains_key("retry-after"), "{mode:?}");
        let problem: serde_json::Value = refused.json().await.unwrap();
        assert_eq!(
            problem["type"], "urn:order-engine:problem:market-data-unavailable",
            "{mode:?}: {problem}"
        );
    }

    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = store.read_all(0, 100_000).await.unwrap();
    assert!(!events.is_empty(), "the accepted order is in the log");
    let needle = refused_user.to_string();
    for event in &events {
        let text = format!("{event:?}");
        assert!(!text.contains(&needle), "an event names the refused user: {text}");
    }
}
