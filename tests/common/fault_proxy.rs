//! A TCP fault proxy for chaos tests: forwards one local port to an upstream
//! address and, on the test's word, adds latency, resets every connection
//! mid-stream, refuses new ones, or swallows them (a black hole).
//!
//! Test code only: it listens on 127.0.0.1 alone and must never be pointed at
//! anything but the test's own services.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Bytes read from one side before they are forwarded (and delayed) as one chunk.
const CHUNK_BYTES: usize = 16 * 1024;

/// What the proxy does to traffic right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward both ways untouched.
    None,
    /// Hold every chunk this long before forwarding it (each direction).
    Latency(Duration),
    /// Accept connections and read them, but never connect upstream or answer;
    /// connections open at the switch stop forwarding too.
    BlackHole,
    /// Reset new connections at once (as a server that is down, behind a
    /// load balancer that still accepts).
    Refuse,
}

/// Counters a test prints and asserts on.
#[derive(Debug, Default)]
pub struct ProxyStats {
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
    pub reset: AtomicU64,
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
}

/// A running proxy; stops (and drops every connection) when dropped.
pub struct FaultProxy {
    pub address: SocketAddr,
    upstream: SocketAddr,
    fault: watch::Sender<Fault>,
    /// Bumped by `reset_all`: every connection open at the time is reset.
    generation: watch::Sender<u64>,
    pub stats: Arc<ProxyStats>,
    accept: JoinHandle<()>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl FaultProxy {
    /// Listens on 127.0.0.1 (a port the OS picks) and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (fault, fault_rx) = watch::channel(Fault::None);
        let (generation, generation_rx) = watch::channel(0u64);
        let stats = Arc::new(ProxyStats::default());
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = tokio::spawn(accept_loop(
            listener,
            upstream,
            fault_rx,
            generation_rx,
            Arc::clone(&stats),
            Arc::clone(&connections),
        ));
        Self {
            address,
            upstream,
            fault,
            generation,
            stats,
            accept,
            connections,
        }
    }

    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }

    pub fn fault(&self) -> Fault {
        *self.fault.borrow()
    }

    /// Resets (RST) every connection open now; later ones are unaffected.
    pub fn reset_all(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// `host:port` of the proxy, for URLs.
    pub fn host_port(&self) -> String {
        self.address.to_string()
    }

    pub fn summary(&self) -> String {
        format!(
            "accepted={} refused={} reset={} bytes_up={} bytes_down={}",
            self.stats.accepted.load(Ordering::Relaxed),
            self.stats.refused.load(Ordering::Relaxed),
            self.stats.reset.load(Ordering::Relaxed),
            self.stats.bytes_up.load(Ordering::Relaxed),
            self.stats.bytes_down.load(Ordering::Relaxed),
        )
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    fault: watch::Receiver<Fault>,
    generation: watch::Receiver<u64>,
    stats: Arc<ProxyStats>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        let task = tokio::spawn(serve_connection(
            client,
            upstream,
            fault.clone(),
            generation.clone(),
            Arc::clone(&stats),
        ));
        let mut open = connections.lock().unwrap();
        open.retain(|t| !t.is_finished());
        open.push(task);
    }
}

/// Closes `stream` with an RST rather than a FIN: the peer sees
/// "connection reset by peer", as when a server or a middlebox dies.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn serve_connection(
    client: TcpStream,
    upstream: SocketAddr,
    mut fault: watch::Receiver<Fault>,
    mut generation: watch::Receiver<u64>,
    stats: Arc<ProxyStats>,
) {
    let _ = client.set_nodelay(true);
    let born = *generation.borrow_and_update();
    // Copied out: a watch guard must not be held across an await.
    let current = *fault.borrow_and_update();
    match current {
        Fault::Refuse => {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            reset(client);
            return;
        }
        Fault::BlackHole => {
            swallow(client, &mut generation, born, &stats).await;
            return;
        }
        Fault::None | Fault::Latency(_) => {}
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        stats.refused.fetch_add(1, Ordering::Relaxed);
        reset(client);
        return;
    };
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = pump(&mut client_read, &mut server_write, fault.clone(), &stats.bytes_up);
    let down = pump(&mut server_read, &mut client_write, fault.clone(), &stats.bytes_down);
    let reset_now = async {
        while generation.changed().await.is_ok() {
            if *generation.borrow() != born {
                return;
            }
        }
        std::future::pending::<()>().await;
    };
    tokio::select! {
        () = async move { tokio::join!(up, down); } => {}
        () = reset_now => {
            stats.reset.fetch_add(1, Ordering::Relaxed);
            if let (Ok(client), Ok(server)) = (client_read.reunite(client_write), server_read.reunite(server_write)) {
                reset(client);
                reset(server);
            }
        }
    }
}

/// Reads and discards whatever the client sends, answering nothing, until a
/// reset or until the client gives up.
async fn swallow(mut client: TcpStream, generation: &mut watch::Receiver<u64>, born: u64, stats: &ProxyStats) {
    let mut buffer = vec![0u8; CHUNK_BYTES];
    loop {
        tokio::select! {
            read = client.read(&mut buffer) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            changed = generation.changed() => {
                if changed.is_err() || *generation.borrow() != born {
                    stats.reset.fetch_add(1, Ordering::Relaxed);
                    reset(client);
                    return;
                }
            }
        }
    }
}

/// Copies one direction chunk by chunk, applying the fault in force when each
/// chunk arrives; a black hole stalls the copy (the bytes are held, never sent).
async fn pump(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    mut fault: watch::Receiver<Fault>,
    bytes: &AtomicU64,
) {
    let mut buffer = vec![0u8; CHUNK_BYTES];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        loop {
            let current = *fault.borrow_and_update();
            match current {
                Fault::Latency(delay) => {
                    tokio::time::sleep(delay).await;
                    break;
                }
                Fault::BlackHole => {
                    // Held until the fault changes; the connection looks alive and silent.
                    if fault.changed().await.is_err() {
                        return;
                    }
                }
                Fault::None | Fault::Refuse => break,
            }
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
        bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// An upstream that echoes every byte back.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = stream.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        address
    }

    async fn round_trip(stream: &mut TcpStream, payload: &[u8]) -> std::io::Result<Vec<u8>> {
        stream.write_all(payload).await?;
        let mut answer = vec![0u8; payload.len()];
        stream.read_exact(&mut answer).await?;
        Ok(answer)
    }

    const PATIENCE: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn bytes_pass_both_ways_untouched() {
        // Proves a proxy with no fault is transparent: what goes up comes back identical, and it is counted.
        let proxy = FaultProxy::start(echo_server().await).await;
        let mut stream = TcpStream::connect(proxy.address).await.unwrap();
        let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let answer = tokio::time::timeout(PATIENCE, round_trip(&mut stream, &payload))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(answer, payload);
        assert_eq!(proxy.stats.bytes_up.load(Ordering::Relaxed), payload.len() as u64);
    }

    #[tokio::test]
    async fn latency_delays_each_direction() {
        // Proves Latency(d) holds a request and its answer d each: a round trip takes at least 2d.
        let proxy = FaultProxy::start(echo_server().await).await;
        proxy.set(Fault::Latency(Duration::from_millis(150)));
        let mut stream = TcpStream::connect(proxy.address).await.unwrap();
        let started = Instant::now();
        let answer = tokio::time::timeout(PATIENCE, round_trip(&mut stream, b"ping"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(answer, b"ping");
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn reset_all_breaks_open_connections_and_lets_new_ones_through() {
        // Proves reset_all ends an open connection with an error or EOF mid-stream, and the next connection works.
        let proxy = FaultProxy::start(echo_server().await).await;
        let mut stream = TcpStream::connect(proxy.address).await.unwrap();
        round_trip(&mut stream, b"before").await.unwrap();
        proxy.reset_all();
        let mut buffer = [0u8; 8];
        let after = tokio::time::timeout(PATIENCE, async {
            // The write may still succeed locally; the read must see the reset.
            let _ = stream.write_all(b"after").await;
            stream.read(&mut buffer).await
        })
        .await
        .expect("a reset connection must not hang");
        assert!(matches!(after, Ok(0) | Err(_)), "{after:?}");
        assert_eq!(proxy.stats.reset.load(Ordering::Relaxed), 1);
        let mut fresh = TcpStream::connect(proxy.address).await.unwrap();
        assert_eq!(round_trip(&mut fresh, b"again").await.unwrap(), b"again");
    }

    #[tokio::test]
    async fn a_black_hole_accepts_and_never_answers_until_healed() {
        // Proves a black hole accepts connections and stays silent (the client's own timeout fires), and healing resumes traffic.
        let proxy = FaultProxy::start(echo_server().await).await;
        let mut open = TcpStream::connect(proxy.address).await.unwrap();
        round_trip(&mut open, b"warm").await.unwrap();
        proxy.set(Fault::BlackHole);
        let mut fresh = TcpStream::connect(proxy.address).await.unwrap();
        let silent = tokio::time::timeout(Duration::from_millis(300), round_trip(&mut fresh, b"hello")).await;
        assert!(silent.is_err(), "a black hole answered: {silent:?}");
        let stalled = tokio::time::timeout(Duration::from_millis(300), round_trip(&mut open, b"held")).await;
        assert!(stalled.is_err(), "an open connection kept forwarding: {stalled:?}");
        proxy.set(Fault::None);
        // The held bytes of the open connection are delivered once healed.
        let mut held = [0u8; 4];
        tokio::time::timeout(PATIENCE, open.read_exact(&mut held))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&held, b"held");
        let mut healed = TcpStream::connect(proxy.address).await.unwrap();
        assert_eq!(round_trip(&mut healed, b"back").await.unwrap(), b"back");
    }

    #[tokio::test]
    async fn refuse_resets_new_connections() {
        // Proves Refuse resets a new connection at once (no hang), counts it, and lifts cleanly.
        let proxy = FaultProxy::start(echo_server().await).await;
        proxy.set(Fault::Refuse);
        let mut stream = TcpStream::connect(proxy.address).await.unwrap();
        let answer = tokio::time::timeout(PATIENCE, round_trip(&mut stream, b"x"))
            .await
            .unwrap();
        assert!(answer.is_err(), "{answer:?}");
        assert_eq!(proxy.stats.refused.load(Ordering::Relaxed), 1);
        proxy.set(Fault::None);
        let mut again = TcpStream::connect(proxy.address).await.unwrap();
        assert_eq!(round_trip(&mut again, b"ok").await.unwrap(), b"ok");
    }
}
