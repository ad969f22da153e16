//! The broker's shape (seed 004 §3.1): the topic exchange, the durable queues,
//! their bindings, dead-lettering and the TTL retry loop; and opening a
//! connection to it. Declared idempotently by every connection at start.
//!
//! Must never delete or purge anything: the broker may hold messages of other
//! engines and producers.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};

use super::config::{AmqpConfig, QueueKind};

/// The seed's topic exchange. Every queue below is bound to it.
pub const EXCHANGE: &str = "orders.exchange";

pub const SUBMIT: &str = "orders.submit";
pub const PROCESSING: &str = "orders.processing";
pub const SETTLEMENT: &str = "orders.settlement";
pub const STATUS: &str = "orders.status";
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

/// Headers the engine writes on messages it dead-letters or retries.
pub const HEADER_REJECTION_REASON: &str = "x-rejection-reason";
pub const HEADER_ORIGINAL_ROUTING_KEY: &str = "x-original-routing-key";
pub const HEADER_ORIGINAL_EXCHANGE: &str = "x-original-exchange";
pub const HEADER_RETRY_ATTEMPT: &str = "x-retry-attempt";
pub const HEADER_TRACEPARENT: &str = "traceparent";
pub const HEADER_TRACESTATE: &str = "tracestate";

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
    if DEAD_LETTERED.contains(&queue) {
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
        // Each retry carries its own TTL (`expiration`); on expiry the broker
        // dead-letters it back to orders.submit, not the seed's
        // orders.processing: this engine takes work only from orders.submit.
        args.insert("x-dead-letter-exchange".into(), string(&exchange));
        args.insert("x-dead-letter-routing-key".into(), string(SUBMIT));
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
    for queue in QUEUES {
        let name = config.name(queue);
        channel
            .queue_declare(
                &name,
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                queue_arguments(config, queue),
            )
            .await?;
        channel
            .queue_bind(
                &name,
                &exchange,
                queue,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
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
