//! A RabbitMQ virtual host per test (created with `rabbitmqctl`, deleted
//! after), so tests run in parallel without seeing each other's queues; and
//! small helpers to publish to and collect from it.
//!
//! Never touches other vhosts: every command names the test's own.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use order_engine::amqp::{AmqpConfig, DEFAULT_AMQP_URL};
use uuid::Uuid;

use super::{report_skip, services_required};

/// How long connecting to the broker may take before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub fn amqp_base_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| DEFAULT_AMQP_URL.to_owned())
}

/// Runs `rabbitmqctl` off the async runtime (the engine shares its thread).
pub async fn rabbitmqctl(args: Vec<String>) -> Result<String, String> {
    tokio::task::spawn_blocking(move || rabbitmqctl_blocking(&args))
        .await
        .map_err(|e| e.to_string())?
}

fn rabbitmqctl_blocking(args: &[String]) -> Result<String, String> {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run rabbitmqctl: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "rabbitmqctl {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// A fresh vhost on the local broker; deleted (with its queues) on drop.
pub struct TestBroker {
    pub vhost: String,
    pub url: String,
}

impl TestBroker {
    /// A new vhost, or `None` (after reporting) when RabbitMQ or rabbitmqctl
    /// is missing and services are not required.
    pub async fn new(test: &str) -> Option<Self> {
        let base = amqp_base_url();
        let reachable = tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(&base, properties("probe"))).await;
        let problem = match reachable {
            Ok(Ok(connection)) => {
                let _ = connection.close(200, "probe").await;
                None
            }
            Ok(Err(error)) => Some(format!("RabbitMQ unreachable at {base}: {error}")),
            Err(_) => Some(format!("RabbitMQ at {base} did not answer within {CONNECT_TIMEOUT:?}")),
        };
        let vhost = format!("oe-test-{}", Uuid::new_v4().simple());
        let problem = match problem {
            Some(problem) => Some(problem),
            None => rabbitmqctl(vec!["add_vhost".into(), vhost.clone()]).await.err(),
        };
        if let Some(problem) = problem {
            if services_required() {
                panic!("{test}: RabbitMQ is required (ORDER_ENGINE_REQUIRE_SERVICES=1): {problem}");
            }
            report_skip(test, &problem);
            return None;
        }
        let user = amqp_user(&base);
        rabbitmqctl(vec![
            "set_permissions".into(),
            "-p".into(),
            vhost.clone(),
            user,
            ".*".into(),
            ".*".into(),
            ".*".into(),
        ])
        .await
        .unwrap();
        let url = replace_vhost(&base, &vhost);
        Some(Self { vhost, url })
    }

    /// The engine's settings on this vhost, with a retry ladder and in-consumer retries of milliseconds.
    pub fn config(&self) -> AmqpConfig {
        AmqpConfig {
            url: self.url.clone(),
            retry_delays: vec![Duration::from_millis(50); 4],
            quick_retry_min: Duration::from_millis(10),
            quick_retry_max: Duration::from_millis(100),
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_millis(500),
            ..AmqpConfig::new(self.url.clone())
        }
    }

    pub async fn connect(&self, name: &str) -> Connection {
        Connection::connect(&self.url, properties(name)).await.unwrap()
    }

    /// Closes every connection the engine holds on this vhost (found by the
    /// `connection_name` it announces); returns how many.
    pub async fn close_engine_connections(&self) -> usize {
        // Text output: one connection a line, `<pid>\t<vhost>\t<client properties>`.
        let listing = rabbitmqctl(vec![
            "-q".into(),
            "list_connections".into(),
            "pid".into(),
            "vhost".into(),
            "client_properties".into(),
        ])
        .await
        .unwrap();
        let mut closed = 0;
        for line in listing.lines() {
            let mut fields = line.splitn(3, '\t');
            let (Some(pid), Some(vhost), Some(client)) = (fields.next(), fields.next(), fields.next()) else {
                continue;
            };
            if vhost == self.vhost && client.contains("order-engine") {
                match rabbitmqctl(vec![
                    "close_connection".into(),
                    pid.to_owned(),
                    "test: broker closes".into(),
                ])
                .await
                {
                    Ok(_) => closed += 1,
                    Err(error) => {
                        let _ = writeln!(std::io::stderr(), "close_connection {pid}: {error}");
                    }
                }
            }
        }
        closed
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        let _ = rabbitmqctl_blocking(&["delete_vhost".to_owned(), self.vhost.clone()]);
    }
}

/// The user name in an AMQP URL (`guest` when it names none).
fn amqp_user(url: &str) -> String {
    url.parse::<lapin::uri::AMQPUri>()
        .map_or_else(|_| "guest".to_owned(), |uri| uri.authority.userinfo.username)
}

fn properties(name: &str) -> ConnectionProperties {
    ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio::current())
        .with_connection_name(format!("test {name}").into())
}

fn replace_vhost(url: &str, vhost: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    match url[scheme_end..].find('/') {
        Some(slash) => format!("{}/{vhost}", &url[..scheme_end + slash]),
        None => format!("{url}/{vhost}"),
    }
}

/// A MARKET BUY submission in the exact shape of seed 004 §3.2.1.
pub fn seed_submission(order_id: Uuid, user_id: Uuid, symbol: &str, quantity: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "order_id": order_id,
        "user_id": user_id,
        "symbol": symbol,
        "order_side": "BUY",
        "order_type": "MARKET",
        "quantity": quantity,
        "price": null,
        "status": "PENDING",
        "created_at": "2025-11-04T10:00:00Z",
        "updated_at": "2025-11-04T10:00:00Z",
        "message_metadata": {
            "message_id": format!("msg_{order_id}"),
            "correlation_id": order_id,
            "timestamp": "2025-11-04T10:00:00Z",
            "retry_attempt": 0,
            "priority": 5,
            "source": "order_submission",
            "message_type": "order_submission",
            "processing_stage": "initial"
        }
    })
}

/// A publishing channel in confirm mode.
pub async fn producer(connection: &Connection) -> Channel {
    let channel = connection.create_channel().await.unwrap();
    channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    channel
}

/// Publishes a submission to `orders.submit` through the default exchange, as a stock client would.
pub async fn publish(channel: &Channel, body: &[u8], headers: FieldTable) {
    let confirm = channel
        .basic_publish(
            "",
            "orders.submit",
            BasicPublishOptions::default(),
            body,
            BasicProperties::default()
                .with_content_type("application/json".into())
                .with_delivery_mode(2)
                .with_headers(headers),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack());
}

/// One message as a test saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub body: Vec<u8>,
    pub json: serde_json::Value,
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
    pub headers: FieldTable,
}

impl Received {
    pub fn header(&self, key: &str) -> Option<String> {
        match self.headers.inner().get(key)? {
            AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
            AMQPValue::LongLongInt(v) => Some(v.to_string()),
            other => Some(format!("{other:?}")),
        }
    }
}

/// Every message that reached `queue`, counted (never deduplicated).
#[derive(Clone, Default)]
pub struct Collector {
    pub messages: Arc<Mutex<Vec<Received>>>,
}

impl Collector {
    /// Consumes `queue` (auto-ack) on `connection` until the test ends.
    pub async fn start(connection: &Connection, queue: &str) -> Self {
        let channel = connection.create_channel().await.unwrap();
        let mut consumer = channel
            .basic_consume(
                queue,
                &format!("test-{queue}"),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let collector = Self::default();
        let messages = Arc::clone(&collector.messages);
        tokio::spawn(async move {
            let _channel = channel;
            while let Some(Ok(delivery)) = consumer.next().await {
                let json = serde_json::from_slice(&delivery.data).unwrap_or(serde_json::Value::Null);
                messages.lock().unwrap().push(Received {
                    json,
                    message_id: delivery.properties.message_id().as_ref().map(|m| m.to_string()),
                    correlation_id: delivery.properties.correlation_id().as_ref().map(|m| m.to_string()),
                    headers: delivery.properties.headers().clone().unwrap_or_default(),
                    body: delivery.data,
                });
            }
        });
        collector
    }

    pub fn all(&self) -> Vec<Received> {
        self.messages.lock().unwrap().clone()
    }

    pub fn len(&self) -> usize {
        self.messages.lock().unwrap().len()
    }
}
