//! Settings of the RabbitMQ layer: where the broker is, how queues are
//! declared, and every bound (prefetch, batch sizes, retries, backoff).
//!
//! Pure data: never connects or reads the environment itself.

use std::time::Duration;

/// The broker CI and the quick start use.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Unacknowledged submissions the broker hands the consumer at once; also the
/// number handled concurrently. Bounds memory under a flood (RELIABILITY.md).
pub const DEFAULT_PREFETCH: u16 = 64;

/// Largest prefetch a setting may ask for: every delivery in hand keeps its
/// body (up to `wire::SUBMISSION_BYTES_MAX`, 64 KiB) in memory, so this
/// bounds the consumer at 64 MiB of bodies.
pub const PREFETCH_MAX: u16 = 1024;

/// `x-delivery-limit` declared on the dead-lettered quorum queues. Kept as
/// it always was so a broker that already holds the queues accepts the
/// declaration (a changed argument is PRECONDITION_FAILED); on
/// `orders.submit` it never fires, because the consumer re-enqueues a
/// redelivered submission (a restart is not a poison message) and
/// dead-letters poison explicitly (ARCHITECTURE.md, "Redeliveries").
pub const DEFAULT_DELIVERY_LIMIT: u32 = 5;

/// Seed 004 §3.4: 5 min, 15 min, 1 h, 6 h; a fifth failure goes to the DLQ.
pub const SEED_RETRY_LADDER: [Duration; 4] = [
    Duration::from_secs(5 * 60),
    Duration::from_secs(15 * 60),
    Duration::from_secs(60 * 60),
    Duration::from_secs(6 * 60 * 60),
];

/// Most rungs a ladder may have: each rung is a queue on the broker.
pub const RETRY_RUNGS_MAX: usize = 16;

/// Longest rung: RabbitMQ's `x-message-ttl` is a 32-bit count of milliseconds.
pub const RETRY_DELAY_MAX: Duration = Duration::from_millis(u32::MAX as u64);

/// Tries of a transiently failing submission inside the consumer, seconds
/// apart, before it is put on the first rung: a database restart of a few
/// seconds must not cost an order five minutes (issue 11, item 3). With the
/// defaults below the waits are 0.1, 0.2, 0.4, 0.8, 1.6 s (each plus up to as
/// much again of jitter), about 3 to 6 s in all.
pub const DEFAULT_QUICK_RETRIES: u32 = 5;
pub const DEFAULT_QUICK_RETRY_MIN: Duration = Duration::from_millis(100);
pub const DEFAULT_QUICK_RETRY_MAX: Duration = Duration::from_secs(2);
/// Most in-consumer tries a setting may ask for: each holds a prefetch slot
/// while it waits.
pub const QUICK_RETRIES_MAX: u32 = 20;

/// Messages a publisher sends before it waits for their confirms and moves
/// its checkpoint: larger batches amortise the round trip, smaller ones
/// republish less after a dropped connection.
pub const DEFAULT_PUBLISHER_BATCH: usize = 256;

/// First and longest wait between reconnection attempts (doubling between).
pub const DEFAULT_RECONNECT_MIN: Duration = Duration::from_millis(100);
pub const DEFAULT_RECONNECT_MAX: Duration = Duration::from_secs(10);

/// How long a publisher waits for the confirms of one batch before it treats
/// the channel as broken and republishes from its checkpoint.
pub const DEFAULT_CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// Orders whose submission details a publisher keeps to format position
/// updates without reading the order's stream; beyond it the cache is reset.
pub const DEFAULT_ORDER_CACHE_MAX: usize = 50_000;

/// The kind of the durable work queues. Quorum queues replicate, survive a
/// node loss and count deliveries (`x-delivery-limit`); classic queues are
/// the fallback for brokers that cannot run them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueKind {
    Classic,
    Quorum,
}

impl QueueKind {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueKind::Classic => "classic",
            QueueKind::Quorum => "quorum",
        }
    }
}

#[derive(Debug, Clone)]
pub struct AmqpConfig {
    /// `amqp://user:pass@host:port/vhost`.
    pub url: String,
    /// Put before every exchange and queue name; empty in production (the
    /// seed's names), set by tests and side-by-side deployments.
    pub queue_prefix: String,
    /// Shown by the broker (`rabbitmqctl list_connections client_properties`)
    /// as `<connection_name> <role>`, so an operator can find each connection.
    pub connection_name: String,
    pub prefetch: u16,
    pub queue_kind: QueueKind,
    pub delivery_limit: u32,
    /// Delay before retry n (1-based) of a submission that failed transiently;
    /// its length is the number of retries before the DLQ. Each distinct delay
    /// is its own queue (`orders.retry.<delay>`, see `topology::retry_queue`).
    pub retry_delays: Vec<Duration>,
    /// In-consumer retries of a transient failure before the first rung, 0 for none.
    pub quick_retries: u32,
    /// First wait between in-consumer retries; doubles up to `quick_retry_max`, with jitter.
    pub quick_retry_min: Duration,
    pub quick_retry_max: Duration,
    pub publisher_batch_size: usize,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    pub confirm_timeout: Duration,
    pub order_cache_max: usize,
    /// In a cluster, move each submission whose user's partition another
    /// process owns to that partition's queue (`ORDER_ENGINE_SUBMIT_ROUTING=forward`)
    /// instead of recording it here for the owner to pick up from the log.
    pub forward_submissions: bool,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        Self {
            url: DEFAULT_AMQP_URL.to_owned(),
            queue_prefix: String::new(),
            connection_name: "order-engine".to_owned(),
            prefetch: DEFAULT_PREFETCH,
            queue_kind: QueueKind::Quorum,
            delivery_limit: DEFAULT_DELIVERY_LIMIT,
            retry_delays: SEED_RETRY_LADDER.to_vec(),
            quick_retries: DEFAULT_QUICK_RETRIES,
            quick_retry_min: DEFAULT_QUICK_RETRY_MIN,
            quick_retry_max: DEFAULT_QUICK_RETRY_MAX,
            publisher_batch_size: DEFAULT_PUBLISHER_BATCH,
            reconnect_min: DEFAULT_RECONNECT_MIN,
            reconnect_max: DEFAULT_RECONNECT_MAX,
            confirm_timeout: DEFAULT_CONFIRM_TIMEOUT,
            order_cache_max: DEFAULT_ORDER_CACHE_MAX,
            forward_submissions: false,
        }
    }
}

impl AmqpConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    /// The full name of a seed queue or exchange, with the prefix.
    pub fn name(&self, base: &str) -> String {
        format!("{}{base}", self.queue_prefix)
    }

    /// The in-consumer backoff: exponential from `quick_retry_min` to
    /// `quick_retry_max`, with jitter so submissions that failed together do
    /// not retry together, at most `quick_retries` times.
    pub fn quick_backoff(&self) -> backon::ExponentialBuilder {
        backon::ExponentialBuilder::default()
            .with_min_delay(self.quick_retry_min)
            .with_max_delay(self.quick_retry_max.max(self.quick_retry_min))
            .with_max_times(self.quick_retries as usize)
            .with_jitter()
    }

    /// The wait before reconnection attempt `attempt` (0-based): doubling from
    /// `reconnect_min`, capped at `reconnect_max`.
    pub fn reconnect_delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX);
        self.reconnect_min.saturating_mul(factor).min(self.reconnect_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_retry_ladder_is_the_seeds() {
        // Proves the production ladder is seed 004 §3.4 to the minute, four retries.
        let minutes: Vec<u64> = AmqpConfig::default()
            .retry_delays
            .iter()
            .map(|d| d.as_secs() / 60)
            .collect();
        assert_eq!(minutes, vec![5, 15, 60, 360]);
    }

    #[test]
    fn the_quick_backoff_is_bounded_in_count_and_in_each_wait() {
        // Proves the in-consumer retries stop after `quick_retries` and no wait exceeds twice the cap (jitter adds at most one delay).
        use backon::BackoffBuilder;
        let config = AmqpConfig::default();
        let waits: Vec<Duration> = config.quick_backoff().build().collect();
        assert_eq!(waits.len(), DEFAULT_QUICK_RETRIES as usize);
        assert!(waits[0] >= DEFAULT_QUICK_RETRY_MIN);
        assert!(waits.iter().all(|w| *w <= DEFAULT_QUICK_RETRY_MAX * 2), "{waits:?}");
        let none = AmqpConfig {
            quick_retries: 0,
            ..AmqpConfig::default()
        };
        assert_eq!(none.quick_backoff().build().count(), 0);
    }

    #[test]
    fn reconnect_backoff_doubles_then_stays_at_its_cap() {
        // Proves the backoff grows from the minimum and never passes the maximum.
        let config = AmqpConfig::default();
        assert_eq!(config.reconnect_delay(0), DEFAULT_RECONNECT_MIN);
        assert_eq!(config.reconnect_delay(1), DEFAULT_RECONNECT_MIN * 2);
        assert_eq!(config.reconnect_delay(40), DEFAULT_RECONNECT_MAX);
    }

    #[test]
    fn names_carry_the_prefix() {
        // Proves production names are the seed's and prefixed ones stay distinct.
        assert_eq!(AmqpConfig::default().name("orders.submit"), "orders.submit");
        let config = AmqpConfig {
            queue_prefix: "t1.".into(),
            ..AmqpConfig::default()
        };
        assert_eq!(config.name("orders.exchange"), "t1.orders.exchange");
    }
}
