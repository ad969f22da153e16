//! The chaos harness: runs `order-engine serve` as a child process (so it can
//! be killed with SIGKILL), private PostgreSQL and RabbitMQ servers the test
//! may stop and start, a stub balance service, a seed-format workload
//! published at a steady rate, observers on the engine's exchange, and the
//! counts that say whether anything was lost, done twice or left behind.
//!
//! Never stops, restarts or reconfigures the machine's shared PostgreSQL or
//! RabbitMQ: everything it stops is a child it started, on ports and in
//! directories of its own.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};
use order_engine::amqp::{topology, AmqpConfig};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sqlx::Row;
use uuid::Uuid;
use wiremock::{Request, ResponseTemplate};

use crate::common::{report_skip, services_required};

/// How long a fresh `serve` may take to answer `/health/ready` with 200.
pub const SERVE_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `order-engine verify` may run.
pub const VERIFY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a private RabbitMQ node may take to boot (about 6 s on the CI machine).
pub const RABBIT_BOOT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one pg_ctl or rabbitmqctl command may take.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(60);
/// Wait between reconnection attempts of the harness's own AMQP clients.
const RECONNECT_PAUSE: Duration = Duration::from_millis(200);
/// The saga's ladder given to `serve`: short, so a test climbs it in seconds.
pub const SAGA_RETRY_DELAYS: &str = "500ms,1s,2s,4s";
/// The exchange and routing keys `serve` declares (seed 004 §3.1).
pub use order_engine::amqp::topology::EXCHANGE;
pub const SUBMIT: &str = "orders.submit";
pub const OBSERVED_KEYS: [&str; 4] = ["positions.updates", "orders.events", "orders.dlq", "orders.retry"];

/// A number from the environment (the soak script turns the battery up), or `default`.
pub fn setting<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Prints a figure line on the real stderr, past libtest's capture.
pub fn figures(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Runs a command with a bound; `Err` carries its output.
pub async fn run_bounded(mut command: Command, bound: Duration) -> Result<String, String> {
    let what = format!("{command:?}");
    let task = tokio::task::spawn_blocking(move || command.output());
    match tokio::time::timeout(bound, task).await {
        Err(_) => Err(format!("{what} did not finish within {bound:?}")),
        Ok(Err(join)) => Err(join.to_string()),
        Ok(Ok(Err(error))) => Err(format!("cannot run {what}: {error}")),
        Ok(Ok(Ok(output))) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            if output.status.success() {
                Ok(text)
            } else {
                Err(format!("{what} failed ({}): {text}", output.status))
            }
        }
    }
}

/// A service the test needs and cannot get: a failure under
/// ORDER_ENGINE_REQUIRE_SERVICES=1, a loud skip otherwise.
fn unavailable(test: &str, problem: &str) {
    if services_required() {
        panic!("{test}: a required service is unavailable (ORDER_ENGINE_REQUIRE_SERVICES=1): {problem}");
    }
    report_skip(test, problem);
}

// ---------------------------------------------------------------- serve

/// `order-engine serve` as a child process, restartable on the same settings.
pub struct Serve {
    env: Vec<(String, String)>,
    pub http: String,
    child: Option<Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
    pub starts: u32,
    pub kills: u32,
}

impl Serve {
    /// Settings for `serve`: `env` plus an HTTP port of its own and the short saga ladder.
    pub fn new(env: &[(&str, String)]) -> Self {
        let port = free_port();
        let mut all: Vec<(String, String)> = vec![
            ("ORDER_ENGINE_HTTP_ADDR".into(), format!("127.0.0.1:{port}")),
            // gRPC is not exercised here; any free port, so restarts never collide.
            ("ORDER_ENGINE_GRPC_ADDR".into(), "127.0.0.1:0".into()),
            ("ORDER_ENGINE_RETRY_DELAYS".into(), SAGA_RETRY_DELAYS.into()),
            ("ORDER_ENGINE_SHUTDOWN_TIMEOUT".into(), "5s".into()),
            ("RUST_LOG".into(), "order_engine=info,warn".into()),
        ];
        all.extend(env.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        let dir = tempfile::tempdir().unwrap();
        Self {
            env: all,
            http: format!("http://127.0.0.1:{port}"),
            child: None,
            log: dir.path().join("serve.log"),
            _dir: dir,
            starts: 0,
            kills: 0,
        }
    }

    /// Starts the process (its output appended to one log across restarts).
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "serve is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_order-engine"))
            .arg("serve")
            .env_remove("DATABASE_URL")
            .env_remove("AMQP_URL")
            .env_remove("BALANCE_SERVICE_URL")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.starts += 1;
    }

    /// SIGKILL: no shutdown hook runs, as when the machine or the OOM killer takes it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // std's kill() is SIGKILL on Unix.
            let _ = child.kill();
            let _ = child.wait();
            self.kills += 1;
        }
    }

    /// SIGSTOP: the process stays, holding its connections, and does nothing
    /// (a VM pause, a debugger, a long GC elsewhere).
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("serve is running").id();
        let status = Command::new("kill").args([signal, &pid.to_string()]).status().unwrap();
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// Whether the process died on its own (a crash the test did not cause).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Polls `/health/ready` until 200; returns how long it took.
    pub async fn wait_ready(&mut self, bound: Duration) -> Duration {
        let started = Instant::now();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        loop {
            if let Some(status) = self.exited() {
                panic!(
                    "serve exited ({status}) before it was ready; log:\n{}",
                    self.log_tail(40)
                );
            }
            if let Ok(response) = client.get(format!("{}/health/ready", self.http)).send().await {
                if response.status() == 200 {
                    return started.elapsed();
                }
            }
            assert!(
                started.elapsed() < bound,
                "serve not ready within {bound:?}; log:\n{}",
                self.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Log lines containing `needle`, counted over every run.
    pub fn log_count(&self, needle: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Runs `order-engine verify` on the same settings; its exit code and last line.
    pub async fn verify(&self) -> (i32, String) {
        let (code, stdout) = self.run_command(&["verify"]).await;
        (code, stdout.lines().last().unwrap_or_default().to_owned())
    }

    /// Runs `order-engine <args>` on the same settings; its exit code and output.
    pub async fn run_command(&self, args: &[&str]) -> (i32, String) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_order-engine"));
        command
            .args(args)
            .env_remove("DATABASE_URL")
            .env_remove("AMQP_URL")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let task = tokio::task::spawn_blocking(move || command.output());
        let output = tokio::time::timeout(VERIFY_TIMEOUT, task)
            .await
            .expect("the command finished within its bound")
            .unwrap()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let code = output.status.code().unwrap_or(-1);
        if code != 0 {
            figures(&format!("{args:?} exited {code}:\n{stdout}\n{stderr}"));
        }
        (code, stdout)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------- private PostgreSQL

/// The PostgreSQL binaries: CHAOS_PG_BIN, or the newest /usr/lib/postgresql/*/bin.
fn postgres_bin() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("CHAOS_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

/// Whether this process runs as root (PostgreSQL refuses to; we then run it as `postgres`).
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A PostgreSQL server of the test's own (initdb in a temp dir, a free port),
/// which the test may stop and start; stopped and deleted on drop.
pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    as_postgres: bool,
}

impl PrivatePostgres {
    pub async fn start(test: &str) -> Option<Self> {
        let Some(bin) = postgres_bin() else {
            unavailable(
                test,
                "no PostgreSQL server binaries (initdb) under /usr/lib/postgresql; set CHAOS_PG_BIN",
            );
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let as_postgres = is_root();
        if as_postgres {
            if let Err(error) = run_bounded(
                {
                    let mut c = Command::new("chown");
                    c.args(["-R", "postgres:postgres"]).arg(dir.path());
                    c
                },
                CONTROL_TIMEOUT,
            )
            .await
            {
                unavailable(
                    test,
                    &format!("cannot give the data directory to the postgres user: {error}"),
                );
                return None;
            }
        }
        let server = Self {
            dir,
            bin,
            port: free_port(),
            as_postgres,
        };
        let data = server.data();
        let init = server.command("initdb", |c| {
            c.arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"]);
        });
        if let Err(error) = run_bounded(init, CONTROL_TIMEOUT).await {
            unavailable(test, &format!("initdb failed: {error}"));
            return None;
        }
        if let Err(error) = server.resume().await {
            unavailable(test, &format!("the private PostgreSQL did not start: {error}"));
            return None;
        }
        Some(server)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, program: &str, args: impl FnOnce(&mut Command)) -> Command {
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(self.bin.join(program));
            c
        } else {
            Command::new(self.bin.join(program))
        };
        args(&mut command);
        command
    }

    /// `postgres://` URL of a database on this server.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Starts the server and waits until it accepts connections.
    pub async fn resume(&self) -> Result<(), String> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log");
        let data = self.data();
        let start = self.command("pg_ctl", |c| {
            c.arg("-D")
                .arg(&data)
                .arg("-o")
                .arg(&options)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "60", "start"]);
        });
        run_bounded(start, CONTROL_TIMEOUT).await.map(|_| ())
    }

    /// A fast shutdown, as `systemctl restart postgresql` does: sessions are
    /// terminated, the server stops accepting connections.
    pub async fn stop(&self) -> Result<(), String> {
        let data = self.data();
        let stop = self.command("pg_ctl", |c| {
            c.arg("-D").arg(&data).args(["-m", "fast", "-w", "-t", "60", "stop"]);
        });
        run_bounded(stop, CONTROL_TIMEOUT).await.map(|_| ())
    }

    /// Creates a database on this server.
    pub async fn create_database(&self, name: &str) {
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(&self.url("postgres")).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.data();
        let mut stop = self.command("pg_ctl", |c| {
            c.arg("-D")
                .arg(&data)
                .args(["-m", "immediate", "-w", "-t", "30", "stop"]);
        });
        let _ = stop.output();
    }
}

// ---------------------------------------------------------------- private RabbitMQ

/// A RabbitMQ node of the test's own (its own node name, ports and data
/// directory), which the test may stop and start; stopped on drop.
pub struct PrivateRabbit {
    dir: tempfile::TempDir,
    pub node: String,
    pub port: u16,
    child: Option<Child>,
    pub boot: Duration,
}

impl PrivateRabbit {
    pub async fn start(test: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        // The server scripts switch to the rabbitmq user when started as root.
        if is_root() {
            let mut chown = Command::new("chown");
            chown.args(["-R", "rabbitmq:rabbitmq"]).arg(dir.path());
            if let Err(error) = run_bounded(chown, CONTROL_TIMEOUT).await {
                unavailable(test, &format!("cannot give the node's directory to rabbitmq: {error}"));
                return None;
            }
        }
        std::fs::write(dir.path().join("enabled_plugins"), "[].\n").unwrap();
        let node = format!("chaos{}@localhost", &Uuid::new_v4().simple().to_string()[..12]);
        let port = free_port();
        let dist_port = free_port();
        let log = std::fs::File::create(dir.path().join("server.out")).unwrap();
        let spawned = Command::new("rabbitmq-server")
            .env("RABBITMQ_NODENAME", &node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", port.to_string())
            .env("RABBITMQ_DIST_PORT", dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", dir.path().join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.path().join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.path().join("enabled_plugins"))
            .env("RABBITMQ_CONFIG_FILE", dir.path().join("rabbitmq"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(error) => {
                unavailable(test, &format!("cannot run rabbitmq-server: {error}"));
                return None;
            }
        };
        let started = Instant::now();
        let mut rabbit = Self {
            dir,
            node,
            port,
            child: Some(child),
            boot: Duration::ZERO,
        };
        loop {
            if rabbit.ctl(&["-q", "await_startup", "--timeout", "2"]).await.is_ok() {
                break;
            }
            let exited = rabbit.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || started.elapsed() > RABBIT_BOOT_TIMEOUT {
                let out = std::fs::read_to_string(rabbit.dir.path().join("server.out")).unwrap_or_default();
                unavailable(
                    test,
                    &format!("the private RabbitMQ node did not boot within {RABBIT_BOOT_TIMEOUT:?}: {out}"),
                );
                return None;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        rabbit.boot = started.elapsed();
        Some(rabbit)
    }

    pub async fn ctl(&self, args: &[&str]) -> Result<String, String> {
        let mut command = Command::new("rabbitmqctl");
        command.arg("-n").arg(&self.node).args(args);
        run_bounded(command, CONTROL_TIMEOUT).await
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Stops the broker application (connections closed, port shut), the node stays.
    pub async fn stop_app(&self) -> Result<(), String> {
        self.ctl(&["stop_app"]).await.map(|_| ())
    }

    pub async fn start_app(&self) -> Result<(), String> {
        self.ctl(&["start_app"]).await.map(|_| ())
    }
}

impl Drop for PrivateRabbit {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .arg("-n")
            .arg(&self.node)
            .arg("stop")
            .output();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------- workload

/// Symbols the workload trades, with the simulator's start prices (it
/// restarts from them with `serve`, and moves at most 0.5 % a tick).
pub const SYMBOLS: [(&str, i64); 4] = [("AAPL", 15_025), ("MSFT", 37_885), ("GOOGL", 14_180), ("JPM", 19_575)];
/// A LIMIT meant to cross is this far through the start price (in percent);
/// one meant to rest is this far away from it, out of reach of a test's walk.
pub const CROSSING_PERCENT: i64 = 15;
pub const RESTING_PERCENT: i64 = 50;

/// What a valid order is expected to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Intent {
    Market,
    /// A LIMIT through the market: executes on arrival or at the next tick.
    LimitCrossing,
    /// A LIMIT far from the market: rests until the end of the test.
    LimitResting,
}

/// One message to publish.
#[derive(Debug, Clone)]
pub struct Planned {
    pub order_id: Uuid,
    pub body: Vec<u8>,
    pub valid: bool,
    pub duplicate: bool,
}

/// The seed 004 §3.2.1 messages of a run, in publishing order, and what each should become.
#[derive(Debug, Default)]
pub struct Workload {
    pub messages: Vec<Planned>,
    pub valid: HashMap<Uuid, Intent>,
    /// Invalid submissions by order id (each one also has a unique body).
    pub invalid: HashMap<Uuid, Vec<u8>>,
    pub duplicates: usize,
    /// Orders the test added on the side (over HTTP), expected to finish like MARKET orders.
    pub extra: Mutex<HashSet<Uuid>>,
}

/// A seed 004 §3.2.1 message: the load generator's MARKET BUY with this
/// order's side, type, quantity and price put in.
fn submission(
    order_id: Uuid,
    user_id: Uuid,
    symbol: &str,
    side: &str,
    order_type: &str,
    quantity: Value,
    price: Value,
) -> Value {
    let spec = order_engine::loadgen::OrderSpec {
        order_id,
        user_id,
        symbol: symbol.to_owned(),
        quantity: 1,
    };
    let mut message = order_engine::loadgen::submission(&spec, chrono::Utc::now());
    message["order_side"] = json!(side);
    message["order_type"] = json!(order_type);
    message["quantity"] = quantity;
    message["price"] = price;
    message
}

/// A seeded mix: MARKET and LIMIT (crossing and resting), buys and sells,
/// `duplicate_percent` exact re-publications and `invalid_percent` invalid submissions.
pub fn workload(seed: u64, orders: usize, users: usize, duplicate_percent: u32, invalid_percent: u32) -> Workload {
    let mut rng = SmallRng::seed_from_u64(seed);
    let users: Vec<Uuid> = (0..users.max(1)).map(|_| Uuid::from_u128(rng.gen())).collect();
    let mut load = Workload::default();
    for i in 0..orders {
        let order_id = Uuid::from_u128(rng.gen());
        let user = users[i % users.len()];
        let (symbol, cents) = SYMBOLS[rng.gen_range(0..SYMBOLS.len())];
        let start = Decimal::new(cents, 2);
        if rng.gen_range(0..100) < invalid_percent {
            let body = match rng.gen_range(0..4) {
                0 => submission(order_id, user, symbol, "BUY", "MARKET", json!(-1), Value::Null).to_string(),
                1 => submission(order_id, user, "NOPE.X", "BUY", "MARKET", json!(1), Value::Null).to_string(),
                2 => submission(order_id, user, symbol, "BUY", "LIMIT", json!(1), Value::Null).to_string(),
                _ => format!("not json: a broken producer {order_id}"),
            }
            .into_bytes();
            load.invalid.insert(order_id, body.clone());
            load.messages.push(Planned {
                order_id,
                body,
                valid: false,
                duplicate: false,
            });
            continue;
        }
        let side = if rng.gen_bool(0.5) { "BUY" } else { "SELL" };
        let quantity = json!(rng.gen_range(1..=3));
        let roll = rng.gen_range(0..100);
        let (intent, body) = if roll < 60 {
            (
                Intent::Market,
                submission(order_id, user, symbol, side, "MARKET", quantity, Value::Null),
            )
        } else {
            let crossing = roll < 80;
            let percent = if crossing { CROSSING_PERCENT } else { RESTING_PERCENT };
            // A crossing BUY bids above the market, a crossing SELL asks below it; resting ones the reverse.
            let above = (side == "BUY") == crossing;
            let factor = if above { 100 + percent } else { 100 - percent };
            let price = (start * Decimal::from(factor) / Decimal::from(100)).round_dp(2);
            let intent = if crossing {
                Intent::LimitCrossing
            } else {
                Intent::LimitResting
            };
            (
                intent,
                submission(
                    order_id,
                    user,
                    symbol,
                    side,
                    "LIMIT",
                    quantity,
                    json!(price.to_string()),
                ),
            )
        };
        let body = body.to_string().into_bytes();
        load.valid.insert(order_id, intent);
        load.messages.push(Planned {
            order_id,
            body: body.clone(),
            valid: true,
            duplicate: false,
        });
        if rng.gen_range(0..100) < duplicate_percent {
            load.duplicates += 1;
            load.messages.push(Planned {
                order_id,
                body,
                valid: true,
                duplicate: true,
            });
        }
    }
    load
}

// ---------------------------------------------------------------- AMQP clients

/// The engine's own connect, named `chaos <role>` in `rabbitmqctl list_connections`.
async fn connect(url: &str, role: &str) -> Result<Connection, lapin::Error> {
    let config = AmqpConfig {
        connection_name: "chaos".into(),
        ..AmqpConfig::new(url)
    };
    topology::connect(&config, role).await
}

/// A producer that keeps publishing through broker outages: each message is
/// republished (same body, same message id) until the broker confirms it.
pub struct Producer {
    url: String,
    channel: Option<(Connection, Channel)>,
    pub republished: u64,
}

impl Producer {
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            channel: None,
            republished: 0,
        }
    }

    async fn channel(&mut self) -> Result<&Channel, lapin::Error> {
        if self.channel.as_ref().is_none_or(|(c, _)| !c.status().connected()) {
            let connection = connect(&self.url, "producer").await?;
            let channel = connection.create_channel().await?;
            channel.confirm_select(ConfirmSelectOptions::default()).await?;
            self.channel = Some((connection, channel));
        }
        Ok(&self.channel.as_ref().unwrap().1)
    }

    async fn try_publish(&mut self, body: &[u8], message_id: &str) -> Result<bool, lapin::Error> {
        let channel = self.channel().await?;
        let confirm = channel
            .basic_publish(
                "",
                SUBMIT,
                BasicPublishOptions::default(),
                body,
                BasicProperties::default()
                    .with_content_type("application/json".into())
                    .with_delivery_mode(2)
                    .with_message_id(message_id.into()),
            )
            .await?
            .await?;
        Ok(confirm.is_ack())
    }

    /// Publishes until confirmed, or panics after `bound`.
    pub async fn publish(&mut self, body: &[u8], message_id: &str, bound: Duration) {
        let started = Instant::now();
        loop {
            match tokio::time::timeout(Duration::from_secs(5), self.try_publish(body, message_id)).await {
                Ok(Ok(true)) => return,
                _ => {
                    self.channel = None;
                    self.republished += 1;
                }
            }
            assert!(
                started.elapsed() < bound,
                "a submission was not confirmed within {bound:?}"
            );
            tokio::time::sleep(RECONNECT_PAUSE).await;
        }
    }
}

/// One message an observer saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub routing_key: String,
    pub message_id: Option<String>,
    pub kind: Option<String>,
    pub correlation_id: Option<String>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The order a message is about: `order_id` at the top, in `data`, or the correlation id.
    pub fn order_id(&self) -> Option<Uuid> {
        let json = self.json();
        let text = json
            .get("order_id")
            .or_else(|| json.get("data").and_then(|d| d.get("order_id")))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| self.correlation_id.clone())?;
        text.parse().ok()
    }
}

/// Copies of what `serve` routes to the observed keys, in queues of the
/// test's own (durable, so they outlive a broker restart), consumed with
/// acks and reconnection.
pub struct Observer {
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Observer {
    /// Declares and binds the observer's queues (returns once they exist), then consumes them.
    pub async fn start(url: &str) -> Self {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(observe(url.to_owned(), Arc::clone(&seen), Some(ready_tx)));
        tokio::time::timeout(Duration::from_secs(30), ready_rx)
            .await
            .expect("the observer's queues were declared")
            .unwrap();
        Self { seen, task }
    }

    pub fn of(&self, routing_key: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.routing_key == routing_key)
            .cloned()
            .collect()
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn observe(url: String, seen: Arc<Mutex<Vec<Seen>>>, mut ready: Option<tokio::sync::oneshot::Sender<()>>) {
    loop {
        let session = async {
            let connection = connect(&url, "observer").await?;
            let channel = connection.create_channel().await?;
            // The engine's topology as `serve` declares it, so observers can bind before it starts.
            topology::declare(&channel, &AmqpConfig::new(url.as_str())).await?;
            let mut streams = Vec::new();
            for key in OBSERVED_KEYS {
                let queue = format!("chaos.observe.{key}");
                channel
                    .queue_declare(
                        &queue,
                        QueueDeclareOptions {
                            durable: true,
                            ..QueueDeclareOptions::default()
                        },
                        FieldTable::default(),
                    )
                    .await?;
                channel
                    .queue_bind(
                        &queue,
                        EXCHANGE,
                        key,
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
                let consumer = channel
                    .basic_consume(
                        &queue,
                        &format!("chaos-{key}"),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
                streams.push(consumer);
            }
            if let Some(ready) = ready.take() {
                let _ = ready.send(());
            }
            let mut all = futures_util::stream::select_all(streams);
            while let Some(delivery) = all.next().await {
                let delivery = delivery?;
                let properties = &delivery.properties;
                seen.lock().unwrap().push(Seen {
                    routing_key: delivery.routing_key.to_string(),
                    message_id: properties.message_id().as_ref().map(|m| m.to_string()),
                    kind: properties.kind().as_ref().map(|m| m.to_string()),
                    correlation_id: properties.correlation_id().as_ref().map(|m| m.to_string()),
                    body: delivery.data.clone(),
                });
                delivery.ack(BasicAckOptions::default()).await?;
            }
            Ok::<(), lapin::Error>(())
        };
        let _ = session.await;
        tokio::time::sleep(RECONNECT_PAUSE).await;
    }
}

// ---------------------------------------------------------------- HTTP prober

/// Requests issued during a fault, each with a client deadline: the slowest
/// answer and how many never came within the deadline.
#[derive(Debug, Default)]
pub struct Probe {
    pub requests: AtomicU64,
    pub ok: AtomicU64,
    pub refused: AtomicU64,
    pub hung: AtomicU64,
    pub max_latency_ms: AtomicU64,
}

impl Probe {
    pub fn summary(&self) -> String {
        format!(
            "http_requests={} http_2xx={} http_errors={} http_hung={} http_max_ms={}",
            self.requests.load(Ordering::Relaxed),
            self.ok.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
            self.hung.load(Ordering::Relaxed),
            self.max_latency_ms.load(Ordering::Relaxed)
        )
    }
}

/// How long one probe request may take; a connection to a healthy engine
/// answers in milliseconds, and every engine-side wait (pool acquire 5 s,
/// remote call 2 s × 3 attempts) is shorter.
pub const HTTP_DEADLINE: Duration = Duration::from_secs(10);

/// Until `stop` turns true: GET /health/ready and POST a MARKET order (whose
/// id joins `load.extra` when accepted) every `every`.
pub fn spawn_prober(
    http: String,
    load: Arc<Workload>,
    every: Duration,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (Arc<Probe>, tokio::task::JoinHandle<()>) {
    let probe = Arc::new(Probe::default());
    let stats = Arc::clone(&probe);
    let task = tokio::spawn(async move {
        let client = reqwest::Client::builder().timeout(HTTP_DEADLINE).build().unwrap();
        let user = Uuid::new_v4();
        let token = order_engine::auth::mint_dev_token(
            &order_engine::auth::JwtConfig::development(None),
            user,
            Duration::from_secs(3_600),
        )
        .unwrap();
        let mut handles = Vec::new();
        while !*stop.borrow() {
            for post in [false, true] {
                let (client, http, token, stats, load) = (
                    client.clone(),
                    http.clone(),
                    token.clone(),
                    Arc::clone(&stats),
                    Arc::clone(&load),
                );
                // Each request runs on its own: one stuck request must not stop the probing.
                handles.push(tokio::spawn(async move {
                    let started = Instant::now();
                    stats.requests.fetch_add(1, Ordering::Relaxed);
                    let request = if post {
                        client.post(format!("{http}/api/v1/orders")).bearer_auth(&token).json(
                            &json!({"symbol": "AAPL", "order_type": "MARKET", "order_side": "BUY", "quantity": 1}),
                        )
                    } else {
                        client.get(format!("{http}/health/ready"))
                    };
                    let result = request.send().await;
                    let elapsed = started.elapsed();
                    stats
                        .max_latency_ms
                        .fetch_max(elapsed.as_millis() as u64, Ordering::Relaxed);
                    match result {
                        Ok(response) if response.status().is_success() => {
                            stats.ok.fetch_add(1, Ordering::Relaxed);
                            if post {
                                if let Ok(body) = response.json::<Value>().await {
                                    if let Some(id) = body.get("order_id").and_then(Value::as_str) {
                                        load.extra.lock().unwrap().insert(id.parse().unwrap());
                                    }
                                }
                            }
                        }
                        Ok(_) => {
                            stats.refused.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(error) if error.is_timeout() => {
                            stats.hung.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            stats.refused.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }));
            }
            tokio::time::sleep(every).await;
        }
        for handle in handles {
            let _ = handle.await;
        }
    });
    (probe, task)
}

// ---------------------------------------------------------------- stub balance service

/// What every new account of the stub starts with.
pub const STUB_DEMO_BALANCE: i64 = 100_000;

/// An in-memory balance service speaking docs/contracts/balance-service.md:
/// idempotent by key, with per-order reservations; it counts every
/// operation it applied, so a test can see money moved twice.
#[derive(Default)]
pub struct StubLedger {
    accounts: HashMap<Uuid, (Decimal, Decimal)>,
    reserved: HashMap<Uuid, Decimal>,
    answers: HashMap<String, (u16, Value)>,
    /// (order, action) → times applied (not replayed).
    pub applied: HashMap<(Uuid, String), u32>,
    pub calls: u64,
}

impl StubLedger {
    fn balance(&mut self, user: Uuid) -> Value {
        let (available, reserved) = *self
            .accounts
            .entry(user)
            .or_insert((Decimal::from(STUB_DEMO_BALANCE), Decimal::ZERO));
        json!({"user_id": user, "available": available.to_string(), "reserved": reserved.to_string()})
    }

    fn apply(&mut self, user: Uuid, action: &str, body: &Value) -> (u16, Value) {
        let key = body
            .get("idempotency_key")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        if let Some(answer) = self.answers.get(&key) {
            return answer.clone();
        }
        let order: Uuid = body
            .get("order_id")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .unwrap_or_default();
        let amount: Decimal = body
            .get("amount")
            .map(|a| a.to_string().trim_matches('"').parse().unwrap_or_default())
            .unwrap_or_default();
        self.balance(user);
        let (available, held) = self.accounts.get_mut(&user).unwrap();
        let for_order = self.reserved.entry(order).or_default();
        let answer = match action {
            "reserve" if *available < amount => (
                422,
                json!({"error": "insufficient_funds", "available": available.to_string(), "requested": amount.to_string()}),
            ),
            "reserve" => {
                *available -= amount;
                *held += amount;
                *for_order += amount;
                (200, Value::Null)
            }
            "deduct" if for_order.is_zero() => (409, json!({"error": "no_reservation"})),
            "deduct" if *for_order < amount => (
                409,
                json!({"error": "exceeds_reservation", "reserved": for_order.to_string(), "requested": amount.to_string()}),
            ),
            "deduct" => {
                *held -= amount;
                *for_order -= amount;
                (200, Value::Null)
            }
            "credit" => {
                *available += amount;
                (200, Value::Null)
            }
            "release" => {
                let released = *for_order;
                *held -= released;
                *available += released;
                *for_order = Decimal::ZERO;
                (200, json!(released.to_string()))
            }
            _ => (404, json!({"error": "unknown_action"})),
        };
        let answer = if answer.0 == 200 {
            *self.applied.entry((order, action.to_owned())).or_default() += 1;
            let moved = if action == "release" {
                answer.1
            } else {
                json!(amount.to_string())
            };
            (
                200,
                json!({"idempotency_key": key, "amount": moved, "balance": self.balance(user)}),
            )
        } else {
            answer
        };
        self.answers.insert(key, answer.clone());
        answer
    }

    /// Orders with an action applied more than once (distinct keys), by action.
    pub fn applied_twice(&self, action: &str) -> usize {
        self.applied.iter().filter(|((_, a), n)| a == action && **n > 1).count()
    }

    /// Money still held for orders: (orders, total).
    pub fn still_reserved(&self) -> (usize, Decimal) {
        let held: Vec<Decimal> = self.reserved.values().copied().filter(|d| !d.is_zero()).collect();
        (held.len(), held.iter().sum())
    }
}

/// The stub's HTTP face (wiremock), shared state behind a lock.
pub struct StubBalance(pub Arc<Mutex<StubLedger>>);

impl wiremock::Respond for StubBalance {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut ledger = self.0.lock().unwrap();
        ledger.calls += 1;
        let path = request.url.path().trim_start_matches("/api/v1/balances/").to_owned();
        let mut parts = path.split('/');
        let Some(user) = parts.next().and_then(|u| u.parse::<Uuid>().ok()) else {
            return ResponseTemplate::new(404).set_body_json(json!({"error": "not_found"}));
        };
        match (request.method.as_str(), parts.next()) {
            ("GET", None) => ResponseTemplate::new(200).set_body_json(ledger.balance(user)),
            ("GET", Some("sufficient-funds")) => {
                let amount: Decimal = request
                    .url
                    .query_pairs()
                    .find(|(k, _)| k == "amount")
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or_default();
                ledger.balance(user);
                let available = ledger.accounts[&user].0;
                ResponseTemplate::new(200).set_body_json(json!({"sufficient": available >= amount}))
            }
            ("POST", Some(action)) => {
                let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
                let (status, answer) = ledger.apply(user, action, &body);
                ResponseTemplate::new(status).set_body_json(answer)
            }
            _ => ResponseTemplate::new(404).set_body_json(json!({"error": "not_found"})),
        }
    }
}

/// Starts the stub balance service on a port of its own.
pub async fn stub_balance() -> (wiremock::MockServer, Arc<Mutex<StubLedger>>) {
    let server = wiremock::MockServer::start().await;
    let ledger: Arc<Mutex<StubLedger>> = Arc::default();
    wiremock::Mock::given(wiremock::matchers::path_regex("^/api/v1/balances/"))
        .respond_with(StubBalance(Arc::clone(&ledger)))
        .mount(&server)
        .await;
    (server, ledger)
}

// ---------------------------------------------------------------- counting

/// What became of a run, counted from the log, the observers and `verify`.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub valid: usize,
    pub invalid: usize,
    pub executed: usize,
    pub failed: usize,
    pub cancelled: usize,
    pub resting: usize,
    /// LIMIT orders meant to cross that had not executed yet.
    pub crossing_not_executed: usize,
    /// Valid orders with a stream, neither terminal nor a resting LIMIT.
    pub unfinished: usize,
    /// Valid orders with no stream, last seen scheduled on `orders.retry`.
    pub parked_on_retry: usize,
    /// Valid orders refused by the engine (with OrderRejected) and never recorded.
    pub refused_valid: usize,
    /// Valid orders dead-lettered and never recorded.
    pub dead_lettered_valid: usize,
    /// Valid orders with no stream and no trace anywhere.
    pub lost: usize,
    pub executed_twice: usize,
    pub reserved_twice: usize,
    pub deducted_twice: usize,
    /// Executed orders whose saga has not completed.
    pub saga_unfinished: usize,
    pub positions_missing: usize,
    pub positions_seen: usize,
    pub position_duplicate_message_ids: usize,
    /// Valid orders announced as `OrderRejected` on orders.events.
    pub valid_announced_rejected: usize,
    pub invalid_not_refused: usize,
    pub invalid_recorded: usize,
    pub retries_scheduled: usize,
    pub dead_lettered: usize,
    pub failure_reasons: BTreeMap<String, usize>,
}

impl Tally {
    /// Everything valid is executed, resting, failed with a reason or cancelled, and positions are in.
    /// Every order has its outcome, invalid ones too: an invalid submission
    /// that met a fault on its way to its refusal climbs the retry rungs
    /// (invisible to the observer) and is refused later, after the valid ones
    /// may have settled.
    pub fn settled(&self) -> bool {
        self.invalid_not_refused == 0
            && self.unfinished == 0
            && self.lost == 0
            && self.parked_on_retry == 0
            && self.crossing_not_executed == 0
            && self.positions_missing == 0
            && self.saga_unfinished == 0
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "valid={} invalid={} executed={} failed={} cancelled={} resting={} crossing_not_executed={} \
             unfinished={} parked_on_retry={} refused_valid={} dead_lettered_valid={} lost={} executed_twice={} \
             reserved_twice={} deducted_twice={} saga_unfinished={} positions={} positions_missing={} \
             position_duplicate_message_ids={} valid_announced_rejected={} invalid_not_refused={} \
             invalid_recorded={} retries_scheduled={} dead_lettered={}",
            self.valid,
            self.invalid,
            self.executed,
            self.failed,
            self.cancelled,
            self.resting,
            self.crossing_not_executed,
            self.unfinished,
            self.parked_on_retry,
            self.refused_valid,
            self.dead_lettered_valid,
            self.lost,
            self.executed_twice,
            self.reserved_twice,
            self.deducted_twice,
            self.saga_unfinished,
            self.positions_seen,
            self.positions_missing,
            self.position_duplicate_message_ids,
            self.valid_announced_rejected,
            self.invalid_not_refused,
            self.invalid_recorded,
            self.retries_scheduled,
            self.dead_lettered,
        )?;
        if !self.failure_reasons.is_empty() {
            write!(f, " failure_reasons={:?}", self.failure_reasons)?;
        }
        Ok(())
    }
}

/// The order (or user's ledger entry's order) a payload names.
fn payload_order(payload: &Value) -> Option<Uuid> {
    payload
        .get("order_id")
        .or_else(|| payload.get("data").and_then(|d| d.get("order_id")))
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
}

/// Counts a run from the database at `database_url` and what `observer` saw.
pub async fn tally(database_url: &str, load: &Workload, observer: &Observer) -> Tally {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect(database_url)
        .await
        .unwrap();
    let rows = sqlx::query(
        "SELECT stream_id, event_type, payload FROM events \
         WHERE stream_id LIKE 'order-%' \
            OR event_type IN ('FundsReserved', 'ReservationDeducted', 'SagaCompleted') \
         ORDER BY global_position",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    let mut last: HashMap<Uuid, (String, Value)> = HashMap::new();
    let mut executions: HashMap<Uuid, usize> = HashMap::new();
    let mut reservations: HashMap<Uuid, usize> = HashMap::new();
    let mut deductions: HashMap<Uuid, usize> = HashMap::new();
    let mut sagas_done: HashSet<Uuid> = HashSet::new();
    for row in rows {
        let stream: String = row.get("stream_id");
        let kind: String = row.get("event_type");
        let payload: Value = row.get("payload");
        if let Some(order) = stream.strip_prefix("order-").and_then(|s| s.parse::<Uuid>().ok()) {
            if kind == "OrderExecuted" {
                *executions.entry(order).or_default() += 1;
            }
            last.insert(order, (kind, payload));
            continue;
        }
        match kind.as_str() {
            "SagaCompleted" => {
                if let Some(order) = stream.strip_prefix("saga-").and_then(|s| s.parse().ok()) {
                    sagas_done.insert(order);
                }
            }
            "FundsReserved" => {
                if let Some(order) = payload_order(&payload) {
                    *reservations.entry(order).or_default() += 1;
                }
            }
            "ReservationDeducted" => {
                if let Some(order) = payload_order(&payload) {
                    *deductions.entry(order).or_default() += 1;
                }
            }
            _ => {}
        }
    }
    let positions = observer.of("positions.updates");
    let events = observer.of("orders.events");
    let dlq = observer.of("orders.dlq");
    let retry = observer.of("orders.retry");
    let positioned: HashSet<Uuid> = positions.iter().filter_map(Seen::order_id).collect();
    let mut position_ids: HashMap<String, usize> = HashMap::new();
    for seen in &positions {
        if let Some(id) = &seen.message_id {
            *position_ids.entry(id.clone()).or_default() += 1;
        }
    }
    let rejections: Vec<(Uuid, String)> = events
        .iter()
        .filter(|s| s.kind.as_deref() == Some("OrderRejected"))
        .filter_map(|s| {
            let json = s.json();
            let code = json
                .get("data")
                .and_then(|d| d.get("code"))
                .or_else(|| json.get("code"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            s.order_id().map(|order| (order, code))
        })
        .collect();
    let rejected: HashSet<Uuid> = rejections.iter().map(|(order, _)| *order).collect();
    let announced_duplicate: HashSet<Uuid> = rejections
        .iter()
        .filter(|(_, code)| code == "AlreadySubmitted")
        .map(|(order, _)| *order)
        .collect();
    let dlq_bodies: HashSet<&[u8]> = dlq.iter().map(|s| s.body.as_slice()).collect();
    let dlq_orders: HashSet<Uuid> = dlq.iter().filter_map(Seen::order_id).collect();
    let retry_orders: HashSet<Uuid> = retry.iter().filter_map(Seen::order_id).collect();

    let extra = load.extra.lock().unwrap().clone();
    let valid: Vec<(Uuid, Intent)> = load
        .valid
        .iter()
        .map(|(id, intent)| (*id, *intent))
        .chain(extra.iter().map(|id| (*id, Intent::Market)))
        .collect();
    let mut t = Tally {
        valid: valid.len(),
        invalid: load.invalid.len(),
        positions_seen: positions.len(),
        retries_scheduled: retry.len(),
        dead_lettered: dlq.len(),
        ..Tally::default()
    };
    for (order, intent) in &valid {
        // A refusal of an order the log holds is a duplicate announced as a rejection.
        if announced_duplicate.contains(order) || (rejected.contains(order) && last.contains_key(order)) {
            t.valid_announced_rejected += 1;
        }
        match last.get(order).map(|(k, p)| (k.as_str(), p)) {
            Some(("OrderExecuted", _)) => {
                t.executed += 1;
                if !positioned.contains(order) {
                    t.positions_missing += 1;
                }
                if !sagas_done.contains(order) {
                    t.saga_unfinished += 1;
                }
            }
            Some(("OrderFailed", payload)) => {
                t.failed += 1;
                let reason = payload
                    .get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .chars()
                    .take(60)
                    .collect::<String>();
                *t.failure_reasons.entry(reason).or_default() += 1;
            }
            Some(("OrderCancelled", _)) => t.cancelled += 1,
            Some(("OrderAccepted", _)) if *intent == Intent::LimitResting => t.resting += 1,
            Some(("OrderAccepted", _)) if *intent == Intent::LimitCrossing => t.crossing_not_executed += 1,
            Some(_) => t.unfinished += 1,
            None if rejected.contains(order) => t.refused_valid += 1,
            None if dlq_orders.contains(order) => t.dead_lettered_valid += 1,
            None if retry_orders.contains(order) => t.parked_on_retry += 1,
            None => t.lost += 1,
        }
    }
    t.executed_twice = executions.values().filter(|n| **n > 1).count();
    t.reserved_twice = reservations.values().filter(|n| **n > 1).count();
    t.deducted_twice = deductions.values().filter(|n| **n > 1).count();
    t.position_duplicate_message_ids = position_ids.values().filter(|n| **n > 1).count();
    for (order, body) in &load.invalid {
        if last.contains_key(order) {
            t.invalid_recorded += 1;
            t.invalid_not_refused += 1;
        } else if !rejected.contains(order) && !dlq_bodies.contains(body.as_slice()) {
            t.invalid_not_refused += 1;
        }
    }
    t
}

/// Re-counts until everything has settled or `bound` passes; the last count.
pub async fn settle(database_url: &str, load: &Workload, observer: &Observer, bound: Duration) -> (Tally, Duration) {
    let started = Instant::now();
    loop {
        let t = tally(database_url, load, observer).await;
        if t.settled() || started.elapsed() >= bound {
            return (t, started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Publishes `load` at `rate_per_s` on a fixed schedule (faults run beside
/// it in their own task); returns the elapsed time.
pub async fn publish_all(
    producer: &mut Producer,
    load: &Workload,
    rate_per_s: f64,
    publish_bound: Duration,
) -> Duration {
    let started = Instant::now();
    let gap = Duration::from_secs_f64(1.0 / rate_per_s);
    for (i, message) in load.messages.iter().enumerate() {
        let due = started + gap * i as u32;
        tokio::time::sleep_until(due.into()).await;
        producer
            .publish(&message.body, &format!("msg_{}", message.order_id), publish_bound)
            .await;
    }
    started.elapsed()
}

/// Asserts the figures every chaos test shares (see README "Reliability").
/// Each line names the defect of issue 11 it depends on, if any.
pub fn assert_common(test: &str, t: &Tally) {
    assert_eq!(t.lost, 0, "{test}: valid orders lost: {t}");
    assert_eq!(t.executed_twice, 0, "{test}: orders executed twice: {t}");
    assert_eq!(t.reserved_twice, 0, "{test}: money reserved twice: {t}");
    assert_eq!(t.deducted_twice, 0, "{test}: money deducted twice: {t}");
    assert_eq!(t.invalid_not_refused, 0, "{test}: invalid orders not refused: {t}");
    assert_eq!(t.refused_valid, 0, "{test}: valid orders refused: {t}");
    assert_eq!(
        t.positions_missing, 0,
        "{test}: executions missing from positions.updates: {t}"
    );
    // Issue 11 defect 1: a re-delivered submission is announced as OrderRejected/AlreadySubmitted.
    assert_eq!(
        t.valid_announced_rejected, 0,
        "{test}: valid orders announced as rejected (defect 1): {t}"
    );
    // Issue 11 defect 9: crash redeliveries count against the delivery limit and dead-letter valid orders.
    assert_eq!(
        t.dead_lettered_valid, 0,
        "{test}: valid orders dead-lettered (defect 9): {t}"
    );
    // Issue 11 defect 3: a transient failure parks a submission on the 5-minute rung.
    assert_eq!(
        t.parked_on_retry, 0,
        "{test}: valid orders parked on the retry ladder (defect 3): {t}"
    );
    assert_eq!(t.unfinished, 0, "{test}: valid orders not finished: {t}");
    assert_eq!(
        t.crossing_not_executed, 0,
        "{test}: crossing LIMIT orders not executed: {t}"
    );
    assert_eq!(
        t.saga_unfinished, 0,
        "{test}: executed orders whose saga did not complete: {t}"
    );
}

/// A path inside a temp dir, for scripts.
pub fn path_text(path: &Path) -> String {
    path.display().to_string()
}
