//! The composition root (zero2prod's `Application`): `Application::build`
//! wires everything `serve` runs (the engine stack, the orders projection,
//! RabbitMQ when configured, the HTTP API and the gRPC order service) and `run_until_stopped` serves
//! until SIGTERM or SIGINT, then stops every part against one deadline.
//! The binary, the integration tests and the benches all build through here,
//! so they run the production wrappers (group commit, metering). Tests inject
//! what production lacks through the builder's typed overrides, never a second
//! wiring. Never reads the environment and never exits the process.

mod auth;
mod error;
mod shutdown;
mod stack;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use actix_web::dev::Server;
use actix_web::{web, HttpServer};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use auth::jwt_config;
pub use error::AppError;
pub use shutdown::stop_signal;
pub use stack::{engine_config, leader_roles, EngineStack, GivenLog, LiveInputs, Overrides};

use crate::amqp::{self, AmqpHandle};
use crate::api::{self, AppState};
use crate::auth::Authenticator;
use crate::balance::embedded::EmbeddedLedger;
use crate::balance::BalanceService;
use crate::clock::Clock;
use crate::config::Settings;
use crate::controls::{audit, Controls, UserRateLimiter};
use crate::engine::{CrashPoint, Engine, EngineConfig};
use crate::grpc::GrpcServer;
use crate::market::MarketSimulator;
use crate::projections::{run_orders_projection, ProjectionHealth, ReadModels};
use crate::store::{redact_url, EventStore};
use crate::telemetry::metrics::Metrics;
use shutdown::within;

/// The engine serving HTTP (and RabbitMQ when configured), built and bound
/// but not yet running: `run_until_stopped` drives it.
pub struct Application {
    stack: EngineStack,
    /// The read models beside the log (the stack's, which `build` requires).
    models: Arc<dyn ReadModels>,
    /// The port the HTTP server bound (the OS's pick when the settings say 0).
    port: u16,
    server: Server,
    /// The gRPC order service, serving from `build` on until the stop.
    grpc: GrpcServer,
    amqp: Option<Arc<AmqpHandle>>,
    orders_projection: Arc<ProjectionHealth>,
    projection: JoinHandle<()>,
    /// The AUDIT_EVENT follower (`controls::audit`); stops with the projection.
    audit_log: JoinHandle<()>,
    stop_projection: watch::Sender<bool>,
    /// What the "ready" line reports, kept from the settings.
    settings: Settings,
    /// When building started, for the "ready" line's start-up time.
    started: Instant,
}

/// `Application::build` with overrides; see [`Overrides`] for what each replaces.
pub struct ApplicationBuilder {
    settings: Settings,
    overrides: Overrides,
    authenticator: Option<Authenticator>,
    /// HTTP worker threads; actix's default (one per core) when None.
    http_workers: Option<usize>,
}

impl ApplicationBuilder {
    /// Serve this already open log (the bare backend) instead of opening `settings.database_url`.
    pub fn log(mut self, store: Arc<dyn EventStore>, models: Arc<dyn ReadModels>) -> Self {
        self.overrides.log = Some(GivenLog {
            store,
            models: Some(models),
        });
        self
    }

    /// Run the engine on this log, which has no read models (the in-memory
    /// log); [`build_stack`](Self::build_stack) only: `build` refuses it.
    pub fn engine_log(mut self, store: Arc<dyn EventStore>) -> Self {
        self.overrides.log = Some(GivenLog { store, models: None });
        self
    }

    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.overrides.clock = Some(clock);
        self
    }

    pub fn balance(mut self, balance: Arc<dyn BalanceService>) -> Self {
        self.overrides.balance = Some(balance);
        self
    }

    pub fn crash(mut self, crash: Arc<CrashPoint>) -> Self {
        self.overrides.crash = Some(crash);
        self
    }

    /// Prices move only when the caller sets them (tests that assert fills at a set price).
    pub fn frozen_market(mut self) -> Self {
        self.overrides.frozen_market = true;
        self
    }

    /// Quote from this market, which the caller moves; see [`Overrides::market`].
    pub fn market(mut self, market: Arc<MarketSimulator>) -> Self {
        self.overrides.market = Some(market);
        self
    }

    /// The engine's bounds in place of those the settings give; see [`Overrides::engine`].
    pub fn engine_config(mut self, config: EngineConfig) -> Self {
        self.overrides.engine = Some(config);
        self
    }

    /// Take the run-time values (daily limit, reset time) and the feature flags from the config service.
    pub fn live(mut self, inputs: LiveInputs) -> Self {
        self.overrides.live = Some(inputs);
        self
    }

    /// Find the balance, account and market data services again through this config service's registry.
    pub fn registry(mut self, client: crate::configsvc::ConfigServiceClient) -> Self {
        self.overrides.registry = Some(client);
        self
    }

    /// Trust these token and service verifiers instead of the ones the settings describe.
    pub fn authenticator(mut self, authenticator: Authenticator) -> Self {
        self.authenticator = Some(authenticator);
        self
    }

    pub fn http_workers(mut self, workers: usize) -> Self {
        self.http_workers = Some(workers.max(1));
        self
    }

    /// The engine stack alone, without HTTP, RabbitMQ or the projection (the engine benches).
    pub async fn build_stack(self) -> Result<EngineStack, AppError> {
        EngineStack::build(&self.settings, self.overrides).await
    }

    /// Opens the log, starts the engine and its followers, binds the HTTP
    /// port. Needs an actix system (the order actors and the server run on it).
    pub async fn build(self) -> Result<Application, AppError> {
        let started = Instant::now();
        // Refused before anything starts, not after the engine is up.
        if matches!(self.overrides.log, Some(GivenLog { models: None, .. })) {
            return Err(AppError::NoReadModels);
        }
        let settings = self.settings;
        let stack = EngineStack::build(&settings, self.overrides).await?;
        let models = stack.models.clone().ok_or(AppError::NoReadModels)?;
        let orders_projection = Arc::new(ProjectionHealth::default());
        let (stop_projection, projection_stopped) = watch::channel(false);
        let (feed, projected, health, metrics) = (
            stack.engine.feed().clone(),
            Arc::clone(&models),
            Arc::clone(&orders_projection),
            Arc::clone(&stack.metrics),
        );
        let cluster = stack.engine.deps().cluster.clone();
        // The audit follower's start is read before the server opens: read
        // inside its task, it could land after the first orders were appended
        // and skip their lines. If it cannot be read now, the task retries.
        let audit_start = match audit::start_position(stack.store.as_ref()).await {
            Ok(position) => Some(position),
            Err(error) => {
                tracing::warn!(%error, "the audit log cannot read its checkpoint yet; its task will retry");
                None
            }
        };
        let (audit_feed, audit_store, audit_models) = (
            stack.engine.feed().clone(),
            Arc::clone(&stack.store),
            Arc::clone(&models),
        );
        let mut first_start = audit_start;
        // Once in a cluster, as the projection: where its leader role is held
        // (a later lead reads its checkpoint again).
        let audit_log = tokio::spawn(crate::cluster::lead(
            cluster.clone(),
            audit::AUDIT_CHECKPOINT,
            projection_stopped.clone(),
            move |stop| {
                audit::run_audit_log(
                    audit_feed.clone(),
                    Arc::clone(&audit_store),
                    Arc::clone(&audit_models),
                    first_start.take(),
                    stop,
                )
            },
        ));
        // Once in a cluster: where the projection's leader role is held.
        let projection = tokio::spawn(crate::cluster::lead(
            cluster,
            crate::projections::ORDERS_PROJECTION,
            projection_stopped,
            move |stop| {
                run_orders_projection(
                    feed.clone(),
                    Arc::clone(&projected),
                    Arc::clone(&health),
                    Some(Arc::clone(&metrics)),
                    stop,
                )
            },
        ));
        // RabbitMQ only when configured: the embedded default runs without a broker.
        let amqp = settings.amqp_url.as_ref().map(|url| {
            Arc::new(amqp::start_following(
                settings.amqp_config(url),
                Arc::clone(&stack.engine) as Arc<dyn amqp::OrderSubmitter>,
                stack.engine.feed().clone(),
                Arc::clone(&stack.clock),
                Some(Arc::clone(&stack.metrics)),
                stack.engine.deps().cluster.clone(),
            ))
        });
        let broker_connected = amqp.as_ref().map(|handle| {
            let handle = Arc::clone(handle);
            Arc::new(move || handle.is_connected()) as Arc<dyn Fn() -> bool + Send + Sync>
        });
        let state = web::Data::new(AppState {
            engine: Arc::clone(&stack.engine),
            models: Arc::clone(&models),
            orders_projection: Arc::clone(&orders_projection),
            broker_connected,
            cluster: stack.cluster.clone(),
            controls: Arc::new({
                let mut controls = Controls::new(settings.controls.clone(), stack.breakers.clone());
                let per_user = Arc::clone(&stack.engine.deps().controls);
                controls.user_limiter = Some(per_user as Arc<dyn UserRateLimiter>);
                controls
            }),
        });
        let auth = web::Data::new(match self.authenticator {
            Some(authenticator) => authenticator,
            None => auth::authenticator(&settings, Arc::clone(&stack.clock))?,
        });
        let metrics = web::Data::from(Arc::clone(&stack.metrics));
        // The same state, verifiers and registry as the HTTP API: one engine front.
        let grpc = GrpcServer::start(
            settings.grpc_addr,
            state.clone().into_inner(),
            auth.clone().into_inner(),
            Arc::clone(&stack.metrics),
        )
        .await
        .map_err(AppError::Grpc)?;
        let mut server = HttpServer::new(move || api::app(state.clone(), auth.clone(), metrics.clone()));
        if let Some(workers) = self.http_workers {
            server = server.workers(workers);
        }
        let server = server.bind(settings.http_addr).map_err(|source| AppError::Bind {
            addr: settings.http_addr,
            source,
        })?;
        let port = server
            .addrs()
            .first()
            .map_or(settings.http_addr.port(), |addr| addr.port());
        let server = server
            // In-flight requests may finish within this bound once stopping starts.
            .shutdown_timeout(settings.shutdown_timeout.as_secs())
            // The process hears SIGINT and SIGTERM itself (`run_until_stopped`),
            // so that one deadline bounds the whole stop, not only the HTTP drain.
            .disable_signals()
            .run();
        Ok(Application {
            stack,
            models,
            port,
            server,
            grpc,
            amqp,
            orders_projection,
            projection,
            audit_log,
            stop_projection,
            settings,
            started,
        })
    }
}

impl Application {
    /// Builds what `serve` runs from the settings alone.
    pub async fn build(settings: Settings) -> Result<Self, AppError> {
        Self::builder(settings).build().await
    }

    pub fn builder(settings: Settings) -> ApplicationBuilder {
        ApplicationBuilder {
            settings,
            overrides: Overrides::default(),
            authenticator: None,
            http_workers: None,
        }
    }

    /// The HTTP port bound; the OS's pick when the settings asked for port 0.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The gRPC port bound; the OS's pick when the settings asked for port 0.
    pub fn grpc_port(&self) -> u16 {
        self.grpc.port()
    }

    pub fn engine(&self) -> Arc<Engine> {
        Arc::clone(&self.stack.engine)
    }

    /// The log as the engine sees it (group commit and metering included).
    pub fn store(&self) -> Arc<dyn EventStore> {
        Arc::clone(&self.stack.store)
    }

    pub fn models(&self) -> Arc<dyn ReadModels> {
        Arc::clone(&self.models)
    }

    pub fn metrics(&self) -> web::Data<Metrics> {
        web::Data::from(Arc::clone(&self.stack.metrics))
    }

    /// The simulator when it is the market data; None with the gRPC client.
    pub fn market(&self) -> Option<Arc<MarketSimulator>> {
        self.stack.market.clone()
    }

    /// The embedded ledger when it is the balance service.
    pub fn ledger(&self) -> Option<Arc<EmbeddedLedger>> {
        self.stack.ledger.clone()
    }

    pub fn orders_projection(&self) -> Arc<ProjectionHealth> {
        Arc::clone(&self.orders_projection)
    }

    /// The RabbitMQ layer when AMQP_URL is configured. A clone still held at
    /// shutdown leaves the layer to the process exit (a warning says so).
    pub fn amqp(&self) -> Option<Arc<AmqpHandle>> {
        self.amqp.clone()
    }

    /// Serves until SIGTERM or SIGINT, then stops within ORDER_ENGINE_SHUTDOWN_TIMEOUT.
    pub async fn run_until_stopped(self) -> Result<(), AppError> {
        self.run_until(stop_signal()).await
    }

    /// Serves until `stop` resolves (to the name of what asked), then stops
    /// every part against one deadline, ORDER_ENGINE_SHUTDOWN_TIMEOUT later.
    /// A part still stopping at the deadline is `AppError::ShutdownTimedOut`.
    pub async fn run_until(self, stop: impl Future<Output = &'static str> + 'static) -> Result<(), AppError> {
        let Self {
            stack,
            port,
            mut server,
            grpc,
            amqp,
            projection,
            audit_log,
            stop_projection,
            settings,
            started,
            ..
        } = self;
        let timeout = settings.shutdown_timeout;
        let (stopping, mut stop_requested) = tokio::sync::oneshot::channel();
        let server_handle = server.handle();
        let grpc_stopper = grpc.stopper();
        actix_web::rt::spawn(async move {
            let signal = stop.await;
            let deadline = tokio::time::Instant::now() + timeout;
            tracing::info!(
                signal,
                timeout_ms = timeout.as_millis() as u64,
                "{signal} received; stopping within ORDER_ENGINE_SHUTDOWN_TIMEOUT"
            );
            let _ = stopping.send(deadline);
            // Both fronts stop taking calls together; each drains its own.
            grpc_stopper.stop();
            server_handle.stop(true).await;
        });
        tracing::info!(
            backend = stack.store.backend(),
            database = %redact_url(&settings.database_url),
            http = %settings.http_addr,
            port,
            grpc_port = grpc.port(),
            balance = if settings.balance_service_url.is_some() { "remote" } else { "embedded ledger" },
            market_data = match settings.market_data {
                crate::config::MarketDataSource::Simulator => "simulator",
                crate::config::MarketDataSource::Grpc { .. } => "grpc",
            },
            rabbitmq = settings.amqp_url.is_some(),
            ready_ms = started.elapsed().as_millis() as u64,
            "order-engine ready"
        );
        // Whatever the database or the broker does from here, the stop ends by
        // this deadline: each step below gets what is left of it.
        let deadline = tokio::select! {
            served = &mut server => {
                served.map_err(AppError::Server)?;
                tokio::time::Instant::now() + timeout
            }
            Ok(deadline) = &mut stop_requested => {
                within(deadline, timeout, "the HTTP server (draining requests)", &mut server)
                    .await?
                    .map_err(AppError::Server)?;
                deadline
            }
        };
        // gRPC was told to stop with HTTP; its calls in flight finish before
        // anything behind both stops, and it lets go of the state the RabbitMQ
        // layer's readiness closure is shared through.
        within(deadline, timeout, "the gRPC server (draining calls)", grpc.stop())
            .await?
            .map_err(AppError::Grpc)?;
        tracing::info!(
            "stopping: the projection, the reactor's checkpoint, then the order actors once their queues have run"
        );
        if let Some(feed) = &stack.feed {
            feed.abort();
        }
        // The projection stops alongside the rest rather than after it.
        let _ = stop_projection.send(true);
        if let Some(handle) = amqp {
            // The readiness closure held the only other reference; it went with the server.
            match Arc::try_unwrap(handle) {
                Ok(handle) => within(deadline, timeout, "the RabbitMQ layer", handle.shutdown()).await?,
                Err(_) => tracing::warn!("RabbitMQ layer still shared at shutdown; leaving it to the process exit"),
            }
        }
        // The projection ends before the engine's actor threads do: a pooled
        // connection an actor opened is served by its thread's I/O driver, and
        // fails whoever holds it once that thread has stopped.
        let _ = within(deadline, timeout, "the orders projection", projection).await?;
        let _ = within(deadline, timeout, "the audit log", audit_log).await?;
        within(
            deadline,
            timeout,
            "the engine (reactor checkpoint, order actors and their threads)",
            stack.engine.shutdown(),
        )
        .await?;
        // Last: the reactor saved its checkpoints, so the next owners resume from them.
        if let Some(cluster) = &stack.cluster {
            within(deadline, timeout, "leaving the cluster", cluster.leave()).await?;
        }
        tracing::info!("stopped");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[tokio::test]
    async fn a_log_without_read_models_is_refused_before_anything_starts() {
        // Proves `build` refuses the engine-only log (the HTTP API reads the
        // read models) with a typed error, before it starts an engine.
        let settings = Settings::from_lookup(|_| None).unwrap();
        let built = Application::builder(settings)
            .engine_log(Arc::new(MemoryStore::new()))
            .build()
            .await;
        assert!(matches!(built, Err(AppError::NoReadModels)), "{:?}", built.err());
    }

    #[actix_rt::test]
    async fn serve_with_nothing_configured_builds() {
        // Proves the README's quick start: with no variable set (test auth mode on by default
        // outside production, no JWT key), `serve`'s settings build an application. Only the
        // SQLite file and the ports are moved, so the test writes nothing in the repo and binds
        // nothing another run holds.
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings::from_lookup(|_| None).unwrap();
        settings.database_url = format!("sqlite:{}", dir.path().join("order-engine.db").display());
        settings.http_addr = "127.0.0.1:0".parse().unwrap();
        settings.grpc_addr = "127.0.0.1:0".parse().unwrap();
        let built = Application::build(settings).await;
        let app = built.unwrap_or_else(|error| panic!("serve's defaults refused: {error}"));
        assert_ne!(app.port(), 0);
    }
}
