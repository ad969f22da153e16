//! The broker's shape (seed 004 §3.1): the topic exchange, the durable queues,
//! their bindings, dead-lettering and the TTL retry loop; and opening a
//! connection to it. Declared idempotently by every connection at start.
//!
//! Must never delete or purge anything (the broker may hold messages of other
//! engines and producers), and never change the arguments of a queue an
//! earlier version declared: the broker refuses such a declaration
//! (PRECONDITION_FAILED), so a new shape gets new queue names.

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};

use super::config::{AmqpConfig, QueueKind};
use crate::cluster::{Partition, Partitioning};

/// The seed's topic exchange. Every queue below is bound to it.
pub const EXCHANGE: &str = "orders.exchange";

pub const SUBMIT: &str = "orders.submit";
pub const PROCESSING: &str = "orders.processing";
pub const SETTLEMENT: &str = "orders.settlement";
pub const STATUS: &str = "orders.status";
/// The seed's retry queue. Declared as before (per-message TTLs, expiring
/// to `orders.submit`) so retries an earlier version left in it still come
/// back; the engine now retries through one queue per rung (`retry_queue`).
pub const RETRY: &str = "orders.retry";
pub const DLQ: &str = "orders.dlq";
pub const POSITIONS: &str = "positions.updates";
pub const EVENTS: &str = "orders.events";

/// Every queue the engine declares, with its routing key on `orders.exchange`.
/// The routing key of each queue is its (unprefixed) seed name, so a producer
/// reaches the same queue through `orders.exchange` or the default exchange.
pub const QUEUES: [&str; 8] = [SUBMIT, PROCESSING, SETTLEMENT, STATUS, RETRY, DLQ, POSITIONS, EVENTS];

/// The seed's "DLQ: Yes" queues: rejected or over-delivered messages go to `orders.dlq`.
const DEAD_LETTERED: [&str; 3] = [SUBMIT, PROCESSING, SETTLEMENT];

/// The queue of one partition's submissions, for a cluster that forwards
/// each submission to its user's partition owner
/// (`ORDER_ENGINE_SUBMIT_ROUTING=forward`): `orders.submit.<count>.<partition>`.
/// The count is in the name so that a cluster re-partitioned with another
/// count declares new queues instead of mixing the two.
pub fn partition_queue(partitioning: Partitioning, partition: Partition) -> String {
    format!("{SUBMIT}.{}.{}", partitioning.count(), partition.0)
}

/// Headers the engine writes on messages it dead-letters or retries.
pub const HEADER_REJECTION_REASON: &str = "x-rejection-reason";
pub const HEADER_ORIGINAL_ROUTING_KEY: &str = "x-original-routing-key";
pub const HEADER_ORIGINAL_EXCHANGE: &str = "x-original-exchange";
pub const HEADER_RETRY_ATTEMPT: &str = "x-retry-attempt";
/// Set by quorum queues on a redelivery: how many earlier deliveries were returned.
pub const HEADER_DELIVERY_COUNT: &str = "x-delivery-count";
pub const HEADER_TRACEPARENT: &str = "traceparent";
pub const HEADER_TRACESTATE: &str = "tracestate";

/// The queue of one rung of the retry ladder: `orders.retry.<delay>`, the
/// delay in the largest unit that divides it (`orders.retry.5m`,
/// `orders.retry.1h`, `orders.retry.250ms`). Every message in it waits the
/// same time (a queue-level `x-message-ttl`), so the one at the head always
/// expires first: no retry waits behind a longer one. The name carries the
/// TTL, so changing the ladder declares new queues instead of redeclaring
/// old ones with other arguments.
pub fn retry_queue(delay: Duration) -> String {
    let ms = rung_ttl_ms(delay);
    let label = [(3_600_000, "h"), (60_000, "m"), (1_000, "s")]
        .into_iter()
        .find(|(unit, _)| ms % unit == 0)
        .map_or_else(|| format!("{ms}ms"), |(unit, suffix)| format!("{}{suffix}", ms / unit));
    format!("{RETRY}.{label}")
}

/// The rung's TTL in milliseconds: at least 1 (0 would expire at once).
fn rung_ttl_ms(delay: Duration) -> u64 {
    u64::try_from(delay.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The distinct rungs of a ladder, in ladder order.
fn rungs(config: &AmqpConfig) -> Vec<Duration> {
    let mut rungs: Vec<Duration> = Vec::new();
    for delay in &config.retry_delays {
        if !rungs.iter().any(|d| retry_queue(*d) == retry_queue(*delay)) {
            rungs.push(*delay);
        }
    }
    rungs
}

/// Opens a connection on the current tokio runtime, named for the broker's
/// connection list (`<connection_name> <role>`).
pub async fn connect(config: &AmqpConfig, role: &str) -> Result<Connection, lapin::Error> {
    let properties = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio::current())
        .with_connection_name(LongString::from(format!("{} {role}", config.connection_name)));
    Connection::connect(&config.url, properties).await
}

fn string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

/// The arguments of one queue: its kind, and for the dead-lettered ones the
/// DLX and the delivery limit; `orders.retry` routes expired messages back.
fn queue_arguments(config: &AmqpConfig, queue: &str) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), string(config.queue_kind.as_str()));
    let exchange = config.name(EXCHANGE);
    if DEAD_LETTERED.contains(&queue) || queue.starts_with(&format!("{SUBMIT}.")) {
        args.insert("x-dead-letter-exchange".into(), string(&exchange));
        args.insert("x-dead-letter-routing-key".into(), string(DLQ));
        if config.queue_kind == QueueKind::Quorum {
            args.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongLongInt(i64::from(config.delivery_limit)),
            );
        }
    }
    if queue == RETRY {
        // Retries of earlier versions carry their own TTL (`expiration`); on
        // expiry the broker dead-letters them back to orders.submit, not the
        // seed's orders.processing: this engine takes work only from orders.submit.
        args.insert("x-dead-letter-exchange".into(), string(&exchange));
        args.insert("x-dead-letter-routing-key".into(), string(SUBMIT));
    }
    args
}

/// The arguments of one rung's queue: its TTL, and back to `orders.submit`
/// on expiry. Quorum rungs dead-letter at least once (the broker keeps the
/// message until `orders.submit` has it), which needs `reject-publish`.
fn rung_arguments(config: &AmqpConfig, delay: Duration) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), string(config.queue_kind.as_str()));
    args.insert(
        "x-message-ttl".into(),
        AMQPValue::LongLongInt(i64::try_from(rung_ttl_ms(delay)).unwrap_or(i64::MAX)),
    );
    args.insert("x-dead-letter-exchange".into(), string(&config.name(EXCHANGE)));
    args.insert("x-dead-letter-routing-key".into(), string(SUBMIT));
    if config.queue_kind == QueueKind::Quorum {
        args.insert("x-dead-letter-strategy".into(), string("at-least-once"));
        args.insert("x-overflow".into(), string("reject-publish"));
    }
    args
}

/// Declares the exchange, the queues and their bindings. Idempotent: a second
/// call with the same configuration changes nothing; a call whose arguments
/// differ from an existing queue's fails with PRECONDITION_FAILED, naming it.
pub async fn declare(channel: &Channel, config: &AmqpConfig) -> Result<(), lapin::Error> {
    let exchange = config.name(EXCHANGE);
    channel
        .exchange_declare(
            &exchange,
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let rungs = rungs(config)
        .into_iter()
        .map(|delay| (retry_queue(delay), rung_arguments(config, delay)));
    let seed = QUEUES
        .into_iter()
        .map(|queue| (queue.to_owned(), queue_arguments(config, queue)));
    for (queue, arguments) in seed.chain(rungs) {
        declare_bound(channel, config, &exchange, &queue, arguments).await?;
    }
    Ok(())
}

/// Declares one durable queue (`queue` with the prefix) and binds it to
/// `exchange` under its unprefixed name.
async fn declare_bound(
    channel: &Channel,
    config: &AmqpConfig,
    exchange: &str,
    queue: &str,
    arguments: FieldTable,
) -> Result<(), lapin::Error> {
    let name = config.name(queue);
    channel
        .queue_declare(
            &name,
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await?;
    channel
        .queue_bind(
            &name,
            exchange,
            queue,
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}

/// Declares every partition's submission queue, bound to the exchange by its
/// name. Declared by every process that forwards or consumes them, before it
/// does: a forward to a queue that does not exist yet would be dropped by the
/// broker and still confirmed.
pub async fn declare_partition_queues(
    channel: &Channel,
    config: &AmqpConfig,
    partitioning: Partitioning,
) -> Result<(), lapin::Error> {
    let exchange = config.name(EXCHANGE);
    for partition in partitioning.all() {
        let queue = partition_queue(partitioning, partition);
        let arguments = queue_arguments(config, &queue);
        declare_bound(channel, config, &exchange, &queue, arguments).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(args: &FieldTable, key: &str) -> Option<String> {
        match args.inner().get(key) {
            Some(AMQPValue::LongString(s)) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            _ => None,
        }
    }

    #[test]
    fn work_queues_dead_letter_to_the_dlq_and_retries_come_back_to_submit() {
        // Proves the DLQ and retry routing of seed 004 §3.1/§3.4 (retry → orders.submit here).
        let config = AmqpConfig {
            queue_prefix: "p.".into(),
            ..AmqpConfig::default()
        };
        for queue in [SUBMIT, PROCESSING, SETTLEMENT] {
            let args = queue_arguments(&config, queue);
            assert_eq!(
                text(&args, "x-dead-letter-exchange").as_deref(),
                Some("p.orders.exchange")
            );
            assert_eq!(text(&args, "x-dead-letter-routing-key").as_deref(), Some(DLQ));
            assert!(args.contains_key("x-delivery-limit"), "{queue}");
        }
        let retry = queue_arguments(&config, RETRY);
        assert_eq!(text(&retry, "x-dead-letter-routing-key").as_deref(), Some(SUBMIT));
        for queue in [STATUS, DLQ, POSITIONS, EVENTS] {
            assert!(
                !queue_arguments(&config, queue).contains_key("x-dead-letter-exchange"),
                "{queue}"
            );
        }
    }

    #[test]
    fn each_rung_is_its_own_queue_named_by_its_delay() {
        // Proves rung names are stable, readable and distinct per delay, and each rung's TTL is its delay, expiring back to orders.submit.
        let names: Vec<String> = crate::amqp::SEED_RETRY_LADDER.iter().map(|d| retry_queue(*d)).collect();
        assert_eq!(
            names,
            [
                "orders.retry.5m",
                "orders.retry.15m",
                "orders.retry.1h",
                "orders.retry.6h"
            ]
        );
        assert_eq!(retry_queue(Duration::from_millis(250)), "orders.retry.250ms");
        assert_eq!(retry_queue(Duration::from_secs(90)), "orders.retry.90s");
        assert_eq!(retry_queue(Duration::ZERO), "orders.retry.1ms");
        let config = AmqpConfig {
            queue_prefix: "p.".into(),
            ..AmqpConfig::default()
        };
        let args = rung_arguments(&config, Duration::from_secs(300));
        assert_eq!(
            args.inner().get("x-message-ttl"),
            Some(&AMQPValue::LongLongInt(300_000))
        );
        assert_eq!(
            text(&args, "x-dead-letter-exchange").as_deref(),
            Some("p.orders.exchange")
        );
        assert_eq!(text(&args, "x-dead-letter-routing-key").as_deref(), Some(SUBMIT));
        assert_eq!(text(&args, "x-dead-letter-strategy").as_deref(), Some("at-least-once"));
        let repeated = AmqpConfig {
            retry_delays: vec![
                Duration::from_millis(50),
                Duration::from_millis(50),
                Duration::from_secs(1),
            ],
            ..AmqpConfig::default()
        };
        assert_eq!(rungs(&repeated).len(), 2, "one queue per distinct delay");
    }

    #[test]
    fn the_seed_queues_keep_the_arguments_earlier_versions_declared() {
        // Proves the upgrade path: orders.retry and orders.submit are declared exactly as before (a changed argument would be PRECONDITION_FAILED on an existing broker).
        let config = AmqpConfig::default();
        let retry = queue_arguments(&config, RETRY);
        assert_eq!(retry.inner().len(), 3, "{retry:?}");
        assert!(!retry.contains_key("x-message-ttl"));
        let submit = queue_arguments(&config, SUBMIT);
        assert_eq!(submit.inner().len(), 4, "{submit:?}");
        assert_eq!(submit.inner().get("x-delivery-limit"), Some(&AMQPValue::LongLongInt(5)));
    }

    #[test]
    fn a_partitions_queue_names_its_count_and_dead_letters_like_orders_submit() {
        // Proves forwarded submissions keep orders.submit's DLQ routing and delivery limit, and that another partition count gets other queues.
        let config = AmqpConfig::default();
        let queue = partition_queue(Partitioning::new(16), Partition(7));
        assert_eq!(queue, "orders.submit.16.7");
        assert_ne!(queue, partition_queue(Partitioning::new(32), Partition(7)));
        assert_eq!(queue_arguments(&config, &queue), queue_arguments(&config, SUBMIT));
    }

    #[test]
    fn classic_queues_carry_no_delivery_limit() {
        // Proves the quorum-only argument is not sent to classic queues (the broker would refuse it).
        let config = AmqpConfig {
            queue_kind: QueueKind::Classic,
            ..AmqpConfig::default()
        };
        let args = queue_arguments(&config, SUBMIT);
        assert!(!args.contains_key("x-delivery-limit"));
        assert_eq!(text(&args, "x-queue-type").as_deref(), Some("classic"));
    }
}
