//! Floods against the real HTTP app on port 0 (the battery's "poison and
//! floods", HTTP half): oversized bodies refused before they are read, a
//! thousand connections at once, and memory flat over many orders.
//!
//! Must never depend on the machine's shared services: it runs on SQLite in a
//! temp dir, and every wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use common::engine::fast_config;
use common::http::{spawn_app, spawn_app_with, token, TestApp};
use common::TestDb;
use order_engine::api::BODY_BYTES_MAX;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

/// The body a flooder declares: 10 MB, as the battery says.
const FLOOD_BODY_BYTES: usize = 10 * 1024 * 1024;
/// How soon an oversized body must be refused. Reading 10 MB would not take
/// this long on loopback, which is why the test also never sends most of it:
/// an answer at all proves the server did not wait for the rest.
const REFUSAL_WITHIN: Duration = Duration::from_secs(5);
/// Connections opened at once.
const CONNECTIONS: usize = 1_000;
/// Open files the connection flood needs: both ends of each connection live
/// in this process, plus the database, the runtime and the test harness.
const CONNECTIONS_FDS_NEEDED: u64 = 2 * CONNECTIONS as u64 + 512;
/// How long the whole connection flood may take to be answered.
const CONNECTIONS_WITHIN: Duration = Duration::from_secs(30);
/// Orders the memory test submits at most, unless ORDER_ENGINE_FLOOD_ORDERS
/// says otherwise (scripts/soak-http-memory.sh runs the long version).
const MEMORY_ORDERS_MAX: usize = 20_000;
/// How long the memory test submits at most, unless
/// ORDER_ENGINE_FLOOD_SECONDS says otherwise: it stops at whichever of the
/// two comes first, so a loaded machine shortens the run, not fails it.
const MEMORY_SUBMIT_SECONDS: u64 = 40;
/// Fewer orders than this and the run measured nothing worth asserting.
const MEMORY_ORDERS_MIN: usize = 300;
/// Concurrent submitters in the memory test.
const MEMORY_SUBMITTERS: usize = 32;
/// Users per submitter: a user's next order comes after its last one settled,
/// so the test measures memory, not one account's contention.
const USERS_PER_SUBMITTER: usize = 4;
/// How often the resident memory is sampled.
const MEMORY_SAMPLE_EVERY: Duration = Duration::from_millis(500);
/// Order actors kept alive, and for how long idle: small, so that the run
/// reaches the steady state `serve` reaches at its 10,000 after far more
/// orders (every other cache in the engine is bounded the same way).
const MEMORY_LIVE_ACTORS_MAX: usize = 200;
const MEMORY_PASSIVATE_AFTER: Duration = Duration::from_secs(2);
/// Most the resident memory may grow over the last third of the run's
/// orders. A leak of 1 KiB per order shows at 20,000 orders; the allocator's
/// arenas and SQLite's page caches settle well within it.
const MEMORY_LAST_THIRD_GROWTH_MAX_KIB: u64 = 16 * 1024;

/// The tests of this file run one at a time: the memory test samples the
/// whole process, which the others would otherwise share with it.
static ONE_AT_A_TIME: LazyLock<tokio::sync::Mutex<()>> = LazyLock::new(|| tokio::sync::Mutex::new(()));

/// This process's resident memory now (`VmRSS`), in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A LIMIT buy far below the market: it rests, so it costs the engine little.
fn limit_order() -> Value {
    json!({"symbol": "AAPL", "order_type": "LIMIT", "order_side": "BUY", "quantity": 1, "price": 10})
}

fn address(app: &TestApp) -> String {
    app.address.trim_start_matches("http://").to_owned()
}

/// Reads until the status line and headers have arrived (or the peer closes).
async fn read_head(stream: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let mut buffer = [0_u8; 4096];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buffer[..n]),
        }
        if seen.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[actix_rt::test]
async fn a_ten_megabyte_body_is_refused_before_it_is_read() {
    // Proves a 10 MB body (declared or chunked) is refused with 413 promptly, having sent almost none of it.
    let _serial = ONE_AT_A_TIME.lock().await;
    let db = TestDb::sqlite();
    let app = spawn_app(&db).await;
    let bearer = token(Uuid::new_v4());

    // Declared: the headers promise 10 MB, the client sends 11 bytes of it and waits.
    let started = Instant::now();
    let mut stream = TcpStream::connect(address(&app)).await.unwrap();
    let head = format!(
        "POST /api/v1/orders HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {bearer}\r\n\
         Content-Type: application/json\r\nContent-Length: {FLOOD_BODY_BYTES}\r\n\r\n{{\"symbol\":"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = tokio::time::timeout(REFUSAL_WITHIN, read_head(&mut stream))
        .await
        .expect("no answer to a declared 10 MB body: the server is waiting to read it");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("application/problem+json"),
        "{answer}"
    );
    let declared = started.elapsed();

    // Chunked, no length: 4 × the limit is streamed, the rest of 10 MB never comes.
    let started = Instant::now();
    let mut stream = TcpStream::connect(address(&app)).await.unwrap();
    let head = format!(
        "POST /api/v1/orders HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {bearer}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b' '; 8 * 1024];
    let mut sent = 0;
    while sent < 4 * BODY_BYTES_MAX {
        let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
        if stream.write_all(&framed).await.is_err() {
            // The server refused and closed while we streamed: that is the point.
            break;
        }
        sent += chunk.len();
    }
    let answer = tokio::time::timeout(REFUSAL_WITHIN, read_head(&mut stream))
        .await
        .expect("no answer to a chunked flood: the server is waiting for its end");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let chunked = started.elapsed();
    assert!(sent < FLOOD_BODY_BYTES / 100, "sent {sent} bytes");
    eprintln!(
        "413 figures: declared 10 MB refused in {} ms (11 bytes sent); chunked refused in {} ms \
         ({sent} of 10,485,760 bytes sent; limit {BODY_BYTES_MAX})",
        declared.as_millis(),
        chunked.as_millis()
    );

    // The app still takes a normal order.
    let ok = app.submit(&bearer, &limit_order(), None).await;
    assert_eq!(ok.status(), 202);
}

/// This process's soft limit on open files, raised to `needed` with
/// util-linux's `prlimit` when it is lower (no unsafe code, no new crate).
fn ensure_open_files(needed: u64) -> u64 {
    let soft = || {
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
        let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
        line.split_whitespace()
            .nth(3)
            .unwrap()
            .parse::<u64>()
            .unwrap_or(u64::MAX)
    };
    if soft() >= needed {
        return soft();
    }
    let raised = std::process::Command::new("prlimit")
        .args(["--pid", &std::process::id().to_string(), &format!("--nofile={needed}:")])
        .status();
    let now = soft();
    assert!(
        now >= needed,
        "the connection flood needs {needed} open files and the soft limit is {now}; prlimit said {raised:?}. \
         Raise it with `ulimit -n {needed}` before `cargo test`"
    );
    now
}

#[actix_rt::test]
async fn a_thousand_connections_at_once_are_all_answered() {
    // Proves 1,000 connections at once are all answered or cleanly refused, and the app serves afterwards.
    let _serial = ONE_AT_A_TIME.lock().await;
    let open_files = ensure_open_files(CONNECTIONS_FDS_NEEDED);
    let db = TestDb::sqlite();
    let app = spawn_app(&db).await;
    let user = Uuid::new_v4();
    let request = Arc::new(format!(
        "GET /api/v1/orders/history?limit=5 HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {}\r\n\
         Connection: close\r\n\r\n",
        token(user)
    ));
    let barrier = Arc::new(tokio::sync::Barrier::new(CONNECTIONS));
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let (address, request, barrier) = (address(&app), Arc::clone(&request), Arc::clone(&barrier));
            tokio::spawn(async move {
                let stream = TcpStream::connect(address).await;
                // Every connection is open before any request is sent.
                barrier.wait().await;
                let mut stream = stream.map_err(|e| format!("connect: {e}"))?;
                stream
                    .write_all(request.as_bytes())
                    .await
                    .map_err(|e| format!("write: {e}"))?;
                let head = read_head(&mut stream).await;
                Ok::<String, String>(head.lines().next().unwrap_or_default().to_owned())
            })
        })
        .collect();
    let results = tokio::time::timeout(CONNECTIONS_WITHIN, futures_util::future::join_all(tasks))
        .await
        .expect("the connection flood was not answered in time");
    let elapsed = started.elapsed();
    let mut answered = 0;
    let mut refused = Vec::new();
    for result in results {
        match result.expect("a connection task panicked") {
            Ok(status) if status.starts_with("HTTP/1.1 200") => answered += 1,
            // A clean refusal is an HTTP status saying so, or a refused connection.
            Ok(status) if status.starts_with("HTTP/1.1 503") || status.starts_with("HTTP/1.1 429") => {
                refused.push(status)
            }
            Err(error) if error.starts_with("connect") => refused.push(error),
            other => panic!("a connection got neither an answer nor a clean refusal: {other:?}"),
        }
    }
    eprintln!(
        "connection flood: {CONNECTIONS} connections, {answered} answered 200, {} refused, in {} ms \
         (open-file limit {open_files})",
        refused.len(),
        elapsed.as_millis()
    );
    assert_eq!(answered + refused.len(), CONNECTIONS);
    assert!(
        answered >= CONNECTIONS * 9 / 10,
        "only {answered} answered: {refused:?}"
    );
    // Still serving, reads and writes.
    let ready = app.get_json("/health/ready", None).await;
    assert_eq!(ready["status"], "ready", "{ready}");
    let order = app.submit(&token(user), &limit_order(), None).await;
    assert_eq!(order.status(), 202);
}

#[actix_rt::test]
async fn memory_stays_flat_over_thousands_of_orders() {
    // Proves the serving process's RSS grows less than a stated bound over the last third of the orders.
    let _serial = ONE_AT_A_TIME.lock().await;
    let orders_max = env_or("ORDER_ENGINE_FLOOD_ORDERS", MEMORY_ORDERS_MAX);
    let submit_for = Duration::from_secs(env_or("ORDER_ENGINE_FLOOD_SECONDS", MEMORY_SUBMIT_SECONDS));
    let db = TestDb::sqlite();
    let mut config = fast_config();
    config.actors.live_actors_max = MEMORY_LIVE_ACTORS_MAX;
    config.actors.passivate_after = MEMORY_PASSIVATE_AFTER;
    let app = Arc::new(spawn_app_with(&db, config, None).await);
    let tokens: Arc<Vec<Vec<String>>> = Arc::new(
        (0..MEMORY_SUBMITTERS)
            .map(|_| (0..USERS_PER_SUBMITTER).map(|_| token(Uuid::new_v4())).collect())
            .collect(),
    );
    let submitted = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + submit_for;
    let submitters: Vec<_> = (0..MEMORY_SUBMITTERS)
        .map(|submitter| {
            let (app, tokens, submitted) = (Arc::clone(&app), Arc::clone(&tokens), Arc::clone(&submitted));
            let market_buy = json!({"symbol": "AAPL", "order_type": "MARKET", "order_side": "BUY", "quantity": 1});
            actix_rt::spawn(async move {
                for turn in 0.. {
                    if Instant::now() >= deadline || submitted.load(Ordering::SeqCst) >= orders_max {
                        return;
                    }
                    let bearer = &tokens[submitter][turn % USERS_PER_SUBMITTER];
                    let response = app.submit(bearer, &market_buy, None).await;
                    assert_eq!(response.status(), 202, "{:?}", response.text().await);
                    submitted.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    // (orders submitted, RSS KiB), sampled on a timer while the submitters run.
    let mut samples = vec![(0_usize, rss_kib())];
    let all_done = futures_util::future::join_all(submitters);
    tokio::pin!(all_done);
    let mut tick = tokio::time::interval(MEMORY_SAMPLE_EVERY);
    loop {
        tokio::select! {
            done = &mut all_done => {
                assert!(done.iter().all(Result::is_ok), "a submitter failed");
                break;
            }
            _ = tick.tick() => {
                samples.push((submitted.load(Ordering::SeqCst), rss_kib()));
                // The submitters check the deadline per order; one stuck request still ends the test.
                assert!(Instant::now() < deadline + REFUSAL_WITHIN * 6, "a submission hung past the deadline");
            }
        }
    }
    let elapsed = started.elapsed();
    let orders = submitted.load(Ordering::SeqCst);
    samples.push((orders, rss_kib()));
    let third = orders * 2 / 3;
    let at_two_thirds = samples
        .iter()
        .filter(|(n, _)| *n <= third)
        .map(|(_, rss)| *rss)
        .next_back()
        .unwrap();
    let peak_last_third = samples
        .iter()
        .filter(|(n, _)| *n > third)
        .map(|(_, rss)| *rss)
        .max()
        .unwrap();
    let growth = peak_last_third.saturating_sub(at_two_thirds);
    let step = samples.len().div_ceil(12);
    let figures: Vec<String> = samples
        .iter()
        .step_by(step.max(1))
        .chain(samples.last())
        .map(|(n, rss)| format!("{n}:{}MiB", rss / 1024))
        .collect();
    eprintln!(
        "memory: {orders} orders over HTTP in {} ms ({:.0}/s; cap {orders_max} orders or {} s); RSS by orders \
         submitted {}; last-third growth {growth} KiB (bound {MEMORY_LAST_THIRD_GROWTH_MAX_KIB} KiB)",
        elapsed.as_millis(),
        orders as f64 / elapsed.as_secs_f64(),
        submit_for.as_secs(),
        figures.join(" ")
    );
    assert!(
        orders >= MEMORY_ORDERS_MIN,
        "only {orders} orders in {} s: too few to measure memory",
        submit_for.as_secs()
    );
    assert!(
        growth < MEMORY_LAST_THIRD_GROWTH_MAX_KIB,
        "memory grew {growth} KiB over the last third: {figures:?}"
    );
    // The engine kept working throughout: the app still answers.
    let page = app
        .get_json("/api/v1/orders/history?limit=1", Some(&tokens[0][0]))
        .await;
    assert!(page["total_count"].as_u64().is_some(), "{page}");
}
