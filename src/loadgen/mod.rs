//! The load generator behind `order-engine loadgen`: offers MARKET orders to
//! a running engine over RabbitMQ (seed 004 §3.2.1 on `orders.submit`) or
//! HTTP, at a fixed open-loop rate or as fast as a bounded number in flight
//! allows, and times each from its due time to its position update on
//! `positions.updates` (read from a queue of its own bound to the exchange).
//!
//! Must never consume the engine's queues or change the topology beyond its
//! own exclusive queue, and never report a figure it did not measure.

mod memory;
mod message;
mod pacing;
mod report;
mod run;
mod stats;
mod tracker;

use std::time::Duration;

use crate::amqp::AmqpConfig;
use crate::auth::JwtConfig;

pub use memory::{parse_status, sample as sample_memory, MemoryReport, MemorySample};
pub use message::{http_body, order_id_of, submission, OrderSpec};
pub use pacing::{due_offset, planned_orders, Rate, RATE_MAX_PER_S};
pub use report::{summary, Errors, Report};
pub use run::run;
pub use stats::{percentile, LatencySummary};
pub use tracker::{Outcome, Tracker, EARLY_UPDATES_MAX};

/// How orders reach the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Published to `orders.submit` with publisher confirms.
    Amqp,
    /// `POST /api/v1/orders` with a bearer token per user.
    Http,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Amqp => "amqp",
            Transport::Http => "http",
        }
    }
}

/// Listed symbols of the embedded market simulator, the default rotation.
pub const DEFAULT_SYMBOLS: [&str; 10] = [
    "AAPL", "MSFT", "GOOGL", "AMZN", "TSLA", "NVDA", "META", "JPM", "BRK.B", "SPY",
];

/// How often the engine's memory is read during a run.
pub const MEMORY_SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

/// Most position updates the load generator's own queue holds; the broker
/// drops the oldest beyond it rather than growing without bound.
pub const OWN_QUEUE_LENGTH_MAX: i64 = 1_000_000;

/// Most users a run may spread orders over (each costs one token and, on
/// first use, the opening of a funded account).
pub const USERS_MAX: usize = 100_000;

#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub transport: Transport,
    /// The broker (always needed: position updates come back over it) and
    /// the queue prefix the engine runs with.
    pub amqp: AmqpConfig,
    /// The engine's HTTP base address, e.g. `http://127.0.0.1:8080`.
    pub http_url: String,
    /// Mints the users' tokens; must match the engine's secret, issuer and audience.
    pub jwt: JwtConfig,
    pub rate: Rate,
    /// Stop after this many orders (the first of this and `duration`).
    pub orders: Option<u64>,
    pub duration: Option<Duration>,
    /// Distinct users, orders spread round-robin.
    pub users: usize,
    pub symbols: Vec<String>,
    /// Shares per order.
    pub quantity: u32,
    /// `--rate max`: orders sent and not yet completed; fixed rates: sends
    /// (publish + confirm, or HTTP request) outstanding at once.
    pub in_flight: usize,
    /// An order without its position update this long after its due time
    /// counts as a timeout.
    pub timeout: Duration,
    /// The engine's process, whose `/proc/<pid>/status` is sampled.
    pub engine_pid: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    #[error("cannot reach RabbitMQ at {url}: {source}; is it running and is AMQP_URL right?")]
    Connect { url: String, source: lapin::Error },
    #[error("exchange {exchange} does not exist on the broker: start `order-engine serve` with AMQP_URL on this vhost (and --queue-prefix if it uses one) first; it declares the topology")]
    NoTopology { exchange: String },
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    #[error("the engine's HTTP API at {url} does not answer: {reason}; is `order-engine serve` running there (ORDER_ENGINE_HTTP_ADDR / --http-url)?")]
    EngineUnreachable { url: String, reason: String },
    #[error("cannot mint user tokens: {0}")]
    Token(#[from] crate::auth::AuthConfigError),
    #[error("cannot read the memory of process {pid} from /proc/{pid}/status: {source}; is --engine-pid the engine's process id?")]
    Memory { pid: u32, source: std::io::Error },
    #[error("invalid load: {0}")]
    Config(String),
}

impl LoadConfig {
    /// Refuses a run that could not be meaningful, naming the option.
    pub fn check(&self) -> Result<(), LoadgenError> {
        let fail = |why: &str| Err(LoadgenError::Config(why.to_owned()));
        if self.users == 0 || self.users > USERS_MAX {
            return fail(&format!("--users must be between 1 and {USERS_MAX}"));
        }
        if self.symbols.is_empty() || self.symbols.iter().any(|s| s.trim().is_empty()) {
            return fail("--symbols needs at least one symbol, such as AAPL,MSFT");
        }
        if self.quantity == 0 {
            return fail("--quantity must be at least 1");
        }
        if self.in_flight == 0 {
            return fail("--in-flight must be at least 1");
        }
        if self.orders == Some(0) {
            return fail("--orders must be at least 1");
        }
        if self.orders.is_none() && self.duration.is_none() {
            return fail("give --orders or --duration (or both: the first reached ends the run)");
        }
        if self.timeout.is_zero() {
            return fail("--timeout must be above zero");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LoadConfig {
        LoadConfig {
            transport: Transport::Amqp,
            amqp: AmqpConfig::default(),
            http_url: "http://127.0.0.1:8080".into(),
            jwt: JwtConfig::development(Some("a-secret-of-at-least-thirty-two-bytes!!".into())),
            rate: Rate::PerSecond(100.0),
            orders: Some(10),
            duration: None,
            users: 1,
            symbols: vec!["AAPL".into()],
            quantity: 1,
            in_flight: 1,
            timeout: Duration::from_secs(1),
            engine_pid: None,
        }
    }

    #[test]
    fn a_meaningless_run_is_refused_naming_the_option() {
        // Proves each impossible setting is refused before connecting, with the flag to fix.
        assert!(config().check().is_ok());
        type Breaker = fn(&mut LoadConfig);
        let cases: [(&str, Breaker); 6] = [
            ("--users", |c| c.users = 0),
            ("--symbols", |c| c.symbols = vec![" ".into()]),
            ("--quantity", |c| c.quantity = 0),
            ("--in-flight", |c| c.in_flight = 0),
            ("--orders or --duration", |c| c.orders = None),
            ("--timeout", |c| c.timeout = Duration::ZERO),
        ];
        for (flag, break_it) in cases {
            let mut c = config();
            break_it(&mut c);
            let error = c.check().unwrap_err().to_string();
            assert!(error.contains(flag), "{flag}: {error}");
        }
    }
}
