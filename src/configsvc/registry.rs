//! Self-registration in the service registry (seed 002, pattern 7): register
//! at start, a heartbeat every 30 s carrying the engine's own readiness and
//! how long it took to answer, deregister on graceful shutdown. A registry
//! that fails is logged and counted; it never stops or slows order flow.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::client::{ConfigServiceClient, ConfigServiceError, Registration};
use super::metrics::ConfigMetrics;

/// Seed 002: a heartbeat every 30 s.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);
/// How long the readiness probe may take before it counts as not ready.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The registry's three writes (the config service; a recorder in tests).
#[async_trait]
pub trait ServiceRegistry: Send + Sync + 'static {
    async fn register(&self, registration: &Registration) -> Result<(), ConfigServiceError>;
    async fn heartbeat(&self, healthy: bool, response_time_ms: u64) -> Result<(), ConfigServiceError>;
    async fn deregister(&self) -> Result<(), ConfigServiceError>;
}

#[async_trait]
impl ServiceRegistry for ConfigServiceClient {
    async fn register(&self, registration: &Registration) -> Result<(), ConfigServiceError> {
        ConfigServiceClient::register(self, registration).await
    }
    async fn heartbeat(&self, healthy: bool, response_time_ms: u64) -> Result<(), ConfigServiceError> {
        ConfigServiceClient::heartbeat(self, healthy, response_time_ms).await
    }
    async fn deregister(&self) -> Result<(), ConfigServiceError> {
        ConfigServiceClient::deregister(self).await
    }
}

/// The engine's readiness, as a heartbeat reports it.
#[async_trait]
pub trait Readiness: Send + Sync + 'static {
    /// Whether the engine is ready.
    async fn ready(&self) -> bool;
}

/// Asks the engine's own `/health/ready`, as the registry's health check
/// would: the answer is the real readiness, its duration the response time.
pub struct HealthEndpoint {
    http: reqwest::Client,
    url: String,
}

impl HealthEndpoint {
    pub fn new(url: impl Into<String>) -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: reqwest::Client::builder().timeout(PROBE_TIMEOUT).build()?,
            url: url.into(),
        })
    }
}

#[async_trait]
impl Readiness for HealthEndpoint {
    async fn ready(&self) -> bool {
        match self.http.get(&self.url).send().await {
            Ok(response) => response.status().is_success(),
            Err(error) => {
                tracing::warn!(url = self.url, %error, "readiness probe failed");
                false
            }
        }
    }
}

/// The running registration: heartbeats until [`stop`](Self::stop).
pub struct SelfRegistration {
    registry: Arc<dyn ServiceRegistry>,
    heartbeats: JoinHandle<()>,
    metrics: ConfigMetrics,
}

impl SelfRegistration {
    /// Registers (a failure is retried at each heartbeat) and starts heartbeats every `interval`.
    pub async fn start(
        registry: Arc<dyn ServiceRegistry>,
        readiness: Arc<dyn Readiness>,
        registration: Registration,
        interval: Duration,
        metrics: ConfigMetrics,
    ) -> Self {
        let mut registered = register(&*registry, &registration, &metrics).await;
        let heartbeats = {
            let registry = Arc::clone(&registry);
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval_at(Instant::now() + interval, interval);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    if !registered {
                        registered = register(&*registry, &registration, &metrics).await;
                    }
                    let asked = Instant::now();
                    let ready = readiness.ready().await;
                    let response_time_ms = asked.elapsed().as_millis() as u64;
                    if let Err(error) = registry.heartbeat(ready, response_time_ms).await {
                        metrics.registry_failures_total.with_label_values(&["heartbeat"]).inc();
                        tracing::warn!(%error, "heartbeat to the service registry failed; orders are not affected");
                    }
                }
            })
        };
        Self {
            registry,
            heartbeats,
            metrics,
        }
    }

    /// Stops the heartbeats and leaves the registry (graceful shutdown).
    pub async fn stop(self) {
        self.heartbeats.abort();
        match self.registry.deregister().await {
            Ok(()) => tracing::info!("deregistered from the service registry"),
            Err(error) => {
                self.metrics
                    .registry_failures_total
                    .with_label_values(&["deregister"])
                    .inc();
                tracing::warn!(%error, "could not deregister from the service registry");
            }
        }
    }
}

async fn register(registry: &dyn ServiceRegistry, registration: &Registration, metrics: &ConfigMetrics) -> bool {
    match registry.register(registration).await {
        Ok(()) => {
            tracing::info!(url = registration.service_url, "registered in the service registry");
            true
        }
        Err(error) => {
            metrics.registry_failures_total.with_label_values(&["register"]).inc();
            tracing::warn!(%error, "could not register in the service registry; trying again at the next heartbeat");
            false
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    use super::*;

    /// Records each call with the virtual time it came at.
    #[derive(Default)]
    struct Recorder {
        calls: Mutex<Vec<(Duration, String)>>,
        down: AtomicBool,
        start: Mutex<Option<Instant>>,
    }

    impl Recorder {
        fn note(&self, call: String) -> Result<(), ConfigServiceError> {
            let start = *self.start.lock().unwrap().get_or_insert_with(Instant::now);
            self.calls.lock().unwrap().push((start.elapsed(), call));
            if self.down.load(Ordering::SeqCst) {
                return Err(ConfigServiceError::Unreachable {
                    url: "http://config".into(),
                    cause: "connection refused".into(),
                });
            }
            Ok(())
        }
    }

    #[async_trait]
    impl ServiceRegistry for Recorder {
        async fn register(&self, registration: &Registration) -> Result<(), ConfigServiceError> {
            self.note(format!("register {}", registration.health_check_url))
        }
        async fn heartbeat(&self, healthy: bool, _: u64) -> Result<(), ConfigServiceError> {
            self.note(format!("heartbeat {healthy}"))
        }
        async fn deregister(&self) -> Result<(), ConfigServiceError> {
            self.note("deregister".into())
        }
    }

    struct Flag(AtomicBool);

    #[async_trait]
    impl Readiness for Flag {
        async fn ready(&self) -> bool {
            self.0.load(Ordering::SeqCst)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_come_every_30_s_with_the_readiness_and_survive_a_registry_outage() {
        // Proves registration at start, a heartbeat each 30 s of virtual time carrying the current readiness,
        // that a registry failing mid-way is counted and skipped (the loop keeps going), and deregistration at stop.
        let recorder = Arc::new(Recorder::default());
        *recorder.start.lock().unwrap() = Some(Instant::now());
        let readiness = Arc::new(Flag(AtomicBool::new(true)));
        let metrics = ConfigMetrics::new().unwrap();
        let registration = Registration {
            service_url: "http://engine:8087".into(),
            health_check_url: "http://engine:8087/health/ready".into(),
            version: "0.1.0".into(),
            region: "eu-west-1".into(),
        };
        let running = SelfRegistration::start(
            recorder.clone(),
            readiness.clone(),
            registration,
            HEARTBEAT_INTERVAL,
            metrics.clone(),
        )
        .await;
        tokio::time::sleep(Duration::from_secs(61)).await;
        readiness.0.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(30)).await;
        recorder.down.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(30)).await;
        recorder.down.store(false, Ordering::SeqCst);
        running.stop().await;
        let calls: Vec<(u64, String)> = recorder
            .calls
            .lock()
            .unwrap()
            .iter()
            .map(|(at, call)| (at.as_secs(), call.clone()))
            .collect();
        assert_eq!(
            calls,
            vec![
                (0, "register http://engine:8087/health/ready".to_owned()),
                (30, "heartbeat true".to_owned()),
                (60, "heartbeat true".to_owned()),
                (90, "heartbeat false".to_owned()),
                (120, "heartbeat false".to_owned()),
                (121, "deregister".to_owned()),
            ]
        );
        assert_eq!(
            metrics.registry_failures_total.with_label_values(&["heartbeat"]).get(),
            1
        );
    }
}
