//! The chaos battery (issue 11): `order-engine serve` as a child process under
//! SIGKILL every few seconds, PostgreSQL and RabbitMQ restarts, and network
//! faults from a TCP proxy; each test bounded, each printing its figures
//! (`chaos <name>: …`) and asserting nothing was lost, done twice or stuck.
//! The restart tests stop only servers they started themselves.
//!
//! Longer runs: `scripts/chaos-soak.sh` (same tests, bigger numbers).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/fault_proxy.rs"]
mod fault_proxy;
#[path = "common/chaos.rs"]
mod harness;

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::amqp::TestBroker;
use common::TestDb;
use fault_proxy::{Fault, FaultProxy};
use harness::{
    assert_common, figures, publish_all, setting, settle, spawn_prober, workload, Observer, PrivatePostgres,
    PrivateRabbit, Producer, Serve, Workload, HTTP_DEADLINE, SERVE_READY_TIMEOUT,
};
use rand::{Rng, SeedableRng};

/// Share of exact re-publications and of invalid submissions, in percent.
const DUPLICATE_PERCENT: u32 = 5;
const INVALID_PERCENT: u32 = 5;
/// Accounts the workload spreads over (each funded by the engine's demo deposit).
const USERS: usize = 40;
/// How long a submission may wait for its confirm, outages included.
const PUBLISH_BOUND: Duration = Duration::from_secs(60);
/// How long the engine has, after the load, to finish every order.
const DRAIN_BOUND_S: u64 = 45;

fn drain_bound() -> Duration {
    Duration::from_secs(setting("CHAOS_DRAIN_S", DRAIN_BOUND_S))
}
/// How soon `/health/ready` must answer 200 after a restarted service is back.
const READY_AFTER_RESTART_BOUND: Duration = Duration::from_secs(20);
/// Probe requests (a readiness check and an order) per this interval.
const PROBE_EVERY: Duration = Duration::from_millis(250);

/// The seed of a run: CHAOS_SEED, or a fresh one (printed, so a failure replays).
fn seed() -> u64 {
    setting("CHAOS_SEED", rand::random::<u32>() as u64)
}

/// `url` with its host and port replaced by `proxy`.
fn through(url: &str, proxy: SocketAddr) -> String {
    let mut parsed = reqwest::Url::parse(url).unwrap();
    parsed.set_host(Some(&proxy.ip().to_string())).unwrap();
    parsed.set_port(Some(proxy.port())).unwrap();
    parsed.to_string()
}

/// The address a URL names (its port, or the scheme's `default_port`).
fn upstream(url: &str, default_port: u16) -> SocketAddr {
    let parsed = reqwest::Url::parse(url).unwrap();
    let host = parsed.host_str().unwrap_or("127.0.0.1").to_owned();
    let port = parsed.port().unwrap_or(default_port);
    (host.as_str(), port).to_socket_addrs().unwrap().next().unwrap()
}

/// Publishes the whole workload in a task of its own; returns when it is done.
fn publish_in_background(url: String, load: Arc<Workload>, rate: f64) -> tokio::task::JoinHandle<(Duration, u64)> {
    tokio::spawn(async move {
        let mut producer = Producer::new(&url);
        let elapsed = publish_all(&mut producer, &load, rate, PUBLISH_BOUND).await;
        (elapsed, producer.republished)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_under_load_loses_nothing_and_does_nothing_twice() {
    // Proves serve killed with SIGKILL every few seconds under seed-format AMQP load loses no order, executes none twice, moves no money twice, publishes every execution, refuses every invalid order, and leaves `verify` clean.
    let test = "sigkill_under_load_loses_nothing_and_does_nothing_twice";
    let started = Instant::now();
    let Some(db) = TestDb::postgres(test).await else { return };
    let Some(broker) = TestBroker::new(test).await else {
        return;
    };
    let orders: usize = setting("CHAOS_ORDERS", 1_200);
    let rate: f64 = setting("CHAOS_RATE", 30.0);
    let kill_every_ms: u64 = setting("CHAOS_KILL_EVERY_MS", 3_000);
    let seed = seed();
    let load = Arc::new(workload(seed, orders, USERS, DUPLICATE_PERCENT, INVALID_PERCENT));
    let observer = Observer::start(&broker.url).await;
    let mut serve = Serve::new(&[("DATABASE_URL", db.url().to_owned()), ("AMQP_URL", broker.url.clone())]);
    serve.spawn();
    serve.wait_ready(SERVE_READY_TIMEOUT).await;

    let publisher = publish_in_background(broker.url.clone(), Arc::clone(&load), rate);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let mut ready_max = Duration::ZERO;
    while !publisher.is_finished() {
        // Jitter spreads the kills over every step of the saga and the publishers.
        let pause = Duration::from_millis(rng.gen_range(kill_every_ms / 2..=kill_every_ms * 3 / 2));
        tokio::time::sleep(pause).await;
        if publisher.is_finished() {
            break;
        }
        serve.kill9();
        serve.spawn();
        ready_max = ready_max.max(serve.wait_ready(SERVE_READY_TIMEOUT).await);
    }
    let (send_time, republished) = publisher.await.unwrap();
    let (tally, drain) = settle(db.url(), &load, &observer, drain_bound()).await;
    let (verify, verify_line) = serve.verify().await;
    figures(&format!(
        "chaos crash: seed={seed} published={} duplicates_sent={} kills={} send_s={:.1} republished={republished} \
         ready_max_ms={} drain_s={:.1} {tally} verify={verify} ({verify_line}) elapsed_s={:.1}",
        load.messages.len(),
        load.duplicates,
        serve.kills,
        send_time.as_secs_f64(),
        ready_max.as_millis(),
        drain.as_secs_f64(),
        started.elapsed().as_secs_f64()
    ));
    assert!(serve.kills >= 3, "too few kills for a crash test: {}", serve.kills);
    assert_eq!(tally.failed, 0, "{test}: orders failed: {tally}");
    assert_common(test, &tally);
    assert_eq!(verify, 0, "verify found violations: {verify_line}");
}

/// A server a restart test stops and starts: one it started itself.
enum Restarted<'a> {
    Postgres(&'a PrivatePostgres),
    Rabbit(&'a PrivateRabbit),
}

impl Restarted<'_> {
    async fn stop(&self) {
        match self {
            Restarted::Postgres(pg) => pg.stop().await.unwrap(),
            Restarted::Rabbit(rabbit) => rabbit.stop_app().await.unwrap(),
        }
    }

    async fn resume(&self) {
        match self {
            Restarted::Postgres(pg) => pg.resume().await.unwrap(),
            Restarted::Rabbit(rabbit) => rabbit.start_app().await.unwrap(),
        }
    }
}

/// Runs the restart battery: load on `serve`, `server` stopped for the
/// outage twice, then the counts, the HTTP deadlines and `verify`.
async fn restarts_under_load(test: &str, name: &str, server: Restarted<'_>, database_url: &str, amqp_url: &str) {
    let started = Instant::now();
    let orders: usize = setting("CHAOS_RESTART_ORDERS", 600);
    let rate: f64 = setting("CHAOS_RATE", 30.0);
    let outage = Duration::from_millis(setting("CHAOS_OUTAGE_MS", 2_500));
    let seed = seed();
    let load = Arc::new(workload(seed, orders, USERS, DUPLICATE_PERCENT, INVALID_PERCENT));
    let observer = Observer::start(amqp_url).await;
    let mut serve = Serve::new(&[
        ("DATABASE_URL", database_url.to_owned()),
        ("AMQP_URL", amqp_url.to_owned()),
    ]);
    serve.spawn();
    serve.wait_ready(SERVE_READY_TIMEOUT).await;

    let load_started = Instant::now();
    let (stop_probe, probe_stopped) = tokio::sync::watch::channel(false);
    let (probe, prober) = spawn_prober(serve.http.clone(), Arc::clone(&load), PROBE_EVERY, probe_stopped);
    let publisher = publish_in_background(amqp_url.to_owned(), Arc::clone(&load), rate);
    let load_time = Duration::from_secs_f64(load.messages.len() as f64 / rate);
    let mut ready_after = Vec::new();
    for at in [load_time / 5, load_time * 3 / 5] {
        tokio::time::sleep_until((load_started + at).into()).await;
        server.stop().await;
        tokio::time::sleep(outage).await;
        server.resume().await;
        ready_after.push(serve.wait_ready(READY_AFTER_RESTART_BOUND).await);
    }
    let (send_time, republished) = publisher.await.unwrap();
    let _ = stop_probe.send(true);
    prober.await.unwrap();
    let (tally, drain) = settle(database_url, &load, &observer, drain_bound()).await;
    let (verify, verify_line) = serve.verify().await;
    let ready_ms: Vec<u128> = ready_after.iter().map(Duration::as_millis).collect();
    let boot = match &server {
        Restarted::Rabbit(rabbit) => format!(" node_boot_ms={}", rabbit.boot.as_millis()),
        Restarted::Postgres(_) => String::new(),
    };
    figures(&format!(
        "chaos {name}: seed={seed}{boot} published={} restarts={} outage_ms={} ready_after_ms={ready_ms:?} \
         send_s={:.1} republished={republished} {} drain_s={:.1} {tally} verify={verify} ({verify_line}) elapsed_s={:.1}",
        load.messages.len(),
        ready_after.len(),
        outage.as_millis(),
        send_time.as_secs_f64(),
        probe.summary(),
        drain.as_secs_f64(),
        started.elapsed().as_secs_f64()
    ));
    assert_eq!(
        probe.hung.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "HTTP requests hung past {HTTP_DEADLINE:?}: {}",
        probe.summary()
    );
    assert_eq!(tally.failed, 0, "{test}: orders failed: {tally}");
    assert_common(test, &tally);
    assert_eq!(verify, 0, "verify found violations: {verify_line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restarts_under_load_lose_nothing_and_hang_no_request() {
    // Proves two restarts of (a private) PostgreSQL under load, the engine left running, lose no order, do nothing twice, hang no HTTP request past its deadline, and the engine is ready again soon after each.
    let test = "postgres_restarts_under_load_lose_nothing_and_hang_no_request";
    let Some(pg) = PrivatePostgres::start(test).await else {
        return;
    };
    let Some(broker) = TestBroker::new(test).await else {
        return;
    };
    pg.create_database("chaos").await;
    restarts_under_load(
        test,
        "postgres-restart",
        Restarted::Postgres(&pg),
        &pg.url("chaos"),
        &broker.url,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rabbitmq_restarts_under_load_lose_nothing_and_hang_no_request() {
    // Proves two restarts (stop_app/start_app) of a private RabbitMQ node under load, the engine left running, lose no order, do nothing twice, hang no HTTP request, and the engine reconnects and is ready soon after each.
    let test = "rabbitmq_restarts_under_load_lose_nothing_and_hang_no_request";
    let Some(db) = TestDb::postgres(test).await else { return };
    let Some(rabbit) = PrivateRabbit::start(test).await else {
        return;
    };
    restarts_under_load(
        test,
        "rabbitmq-restart",
        Restarted::Rabbit(&rabbit),
        db.url(),
        &rabbit.url(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn network_faults_to_every_service_lose_nothing_and_hang_nothing() {
    // Proves latency, mid-stream resets and black holes between serve and PostgreSQL, RabbitMQ and a remote balance service lose no order, move no money twice, and hang no HTTP request past its deadline.
    let test = "network_faults_to_every_service_lose_nothing_and_hang_nothing";
    let started = Instant::now();
    let Some(db) = TestDb::postgres(test).await else { return };
    let Some(broker) = TestBroker::new(test).await else {
        return;
    };
    let (balance_server, ledger) = harness::stub_balance().await;
    let balance_address = *balance_server.address();
    let pg_proxy = FaultProxy::start(upstream(db.url(), 5432)).await;
    let amqp_proxy = FaultProxy::start(upstream(&broker.url, 5672)).await;
    let balance_proxy = FaultProxy::start(balance_address).await;
    let orders: usize = setting("CHAOS_FAULT_ORDERS", 600);
    let rate: f64 = setting("CHAOS_RATE", 30.0);
    let seed = seed();
    let load = Arc::new(workload(seed, orders, USERS, DUPLICATE_PERCENT, INVALID_PERCENT));
    // The test's own clients talk to the broker directly: only the engine's traffic crosses the proxies.
    let observer = Observer::start(&broker.url).await;
    let mut serve = Serve::new(&[
        ("DATABASE_URL", through(db.url(), pg_proxy.address)),
        ("AMQP_URL", through(&broker.url, amqp_proxy.address)),
        ("BALANCE_SERVICE_URL", format!("http://{}", balance_proxy.address)),
    ]);
    serve.spawn();
    serve.wait_ready(SERVE_READY_TIMEOUT).await;

    let load_started = Instant::now();
    let (stop_probe, probe_stopped) = tokio::sync::watch::channel(false);
    let (probe, prober) = spawn_prober(serve.http.clone(), Arc::clone(&load), PROBE_EVERY, probe_stopped);
    let publisher = publish_in_background(broker.url.clone(), Arc::clone(&load), rate);
    let proxies = [&pg_proxy, &amqp_proxy, &balance_proxy];
    let at = |seconds: f64| tokio::time::sleep_until((load_started + Duration::from_secs_f64(seconds)).into());
    // Each phase is short enough to leave the engine's own timeouts room to act.
    at(1.0).await;
    for proxy in proxies {
        proxy.set(Fault::Latency(Duration::from_millis(50)));
    }
    at(4.0).await;
    for proxy in proxies {
        proxy.set(Fault::None);
        proxy.reset_all();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    at(7.0).await;
    balance_proxy.set(Fault::BlackHole);
    at(11.0).await;
    balance_proxy.set(Fault::None);
    balance_proxy.reset_all();
    at(12.0).await;
    pg_proxy.set(Fault::BlackHole);
    at(14.0).await;
    pg_proxy.set(Fault::None);
    at(15.0).await;
    amqp_proxy.set(Fault::BlackHole);
    at(17.0).await;
    amqp_proxy.set(Fault::None);
    let faults_done = load_started.elapsed();
    let ready_after = serve.wait_ready(READY_AFTER_RESTART_BOUND).await;
    let (send_time, republished) = publisher.await.unwrap();
    let _ = stop_probe.send(true);
    prober.await.unwrap();
    let (tally, drain) = settle(db.url(), &load, &observer, drain_bound()).await;
    let (verify, verify_line) = serve.verify().await;
    let (reserved_twice, deducted_twice, calls, still_reserved) = {
        let ledger = ledger.lock().unwrap();
        (
            ledger.applied_twice("reserve"),
            ledger.applied_twice("deduct"),
            ledger.calls,
            ledger.still_reserved(),
        )
    };
    figures(&format!(
        "chaos network: seed={seed} published={} faults_s={:.1} ready_after_ms={} send_s={:.1} \
         republished={republished} {} balance_calls={calls} stub_reserved_twice={reserved_twice} \
         stub_deducted_twice={deducted_twice} stub_still_reserved={still_reserved:?} drain_s={:.1} {tally} \
         verify={verify} ({verify_line}) pg_proxy[{}] amqp_proxy[{}] balance_proxy[{}] elapsed_s={:.1}",
        load.messages.len(),
        faults_done.as_secs_f64(),
        ready_after.as_millis(),
        send_time.as_secs_f64(),
        probe.summary(),
        drain.as_secs_f64(),
        pg_proxy.summary(),
        amqp_proxy.summary(),
        balance_proxy.summary(),
        started.elapsed().as_secs_f64()
    ));
    assert_eq!(
        probe.hung.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "HTTP requests hung past {HTTP_DEADLINE:?}: {}",
        probe.summary()
    );
    assert_eq!(reserved_twice, 0, "the balance service reserved twice for an order");
    assert_eq!(deducted_twice, 0, "the balance service deducted twice for an order");
    // A black-holed balance service opens the client's breaker (30 s) and the
    // saga's ladder here is seconds long: an order may FAIL, with that reason.
    // Any other failure is a defect.
    for reason in tally.failure_reasons.keys() {
        assert!(
            reason.contains("balance service"),
            "{test}: an order failed for another reason: {tally}"
        );
    }
    assert_common(test, &tally);
    assert_eq!(verify, 0, "verify found violations: {verify_line}");
}
