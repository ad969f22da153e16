//! The gRPC order service (`proto/order_service.proto`, package `monolith`,
//! service `OrderService`) beside the HTTP API, on its own port: the five
//! RPCs (`service.rs`) behind authentication and metrics (`guard.rs`), the
//! standard `grpc.health.v1` service tied to readiness, and server reflection.
//!
//! Must never be a second engine front: every RPC goes through
//! `api::commands`, the path the HTTP handlers take, so the rules, refusals
//! and idempotency are one. Built and stopped by the composition root
//! (`app::Application`), never on its own.

mod guard;
pub mod money;
mod service;
pub mod status;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

pub use guard::code_name;
pub use service::{OrderGrpc, METADATA_IDEMPOTENCY_KEY, METADATA_REQUEST_ID};

use crate::api::{readiness, AppState, BODY_BYTES_MAX};
use crate::auth::{AuthError, AuthenticatedUser, Authenticator};
use crate::telemetry::metrics::Metrics;

/// The code generated from the proto at build time (build.rs, protox).
pub mod pb {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("monolith");
}

/// The proto's encoded descriptor set, which reflection serves.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/order_service_descriptor.bin"));

/// The full name of the service, as health checks and reflection name it.
pub const SERVICE_NAME: &str = <pb::order_service_server::OrderServiceServer<OrderGrpc> as NamedService>::NAME;

/// How often the health service re-reads readiness (the checks `/health/ready` runs).
pub const READINESS_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Calls one connection may have in flight at once (HTTP/2 streams).
pub const STREAMS_PER_CONNECTION_MAX: u32 = 256;

/// The caller the guard established for a call, or why it could not; put in
/// the request's extensions for the service, which refuses on an error.
#[derive(Debug, Clone)]
pub struct CallerOutcome(pub Result<AuthenticatedUser, AuthError>);

/// Why the gRPC server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    #[error("binding ORDER_ENGINE_GRPC_ADDR={addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the reflection service could not read the proto's descriptors: {0}")]
    Reflection(String),
    #[error("the gRPC server failed")]
    Serve(#[source] tonic::transport::Error),
}

/// The gRPC server, bound and serving; `stop` ends it.
pub struct GrpcServer {
    port: u16,
    stop: Arc<watch::Sender<bool>>,
    serving: JoinHandle<Result<(), GrpcError>>,
    readiness: JoinHandle<()>,
}

impl GrpcServer {
    /// Binds `addr` (port 0: the OS picks) and serves the order service, health
    /// and reflection until [`stop`](Self::stop). Needs a Tokio runtime.
    pub async fn start(
        addr: SocketAddr,
        state: Arc<AppState>,
        auth: Arc<Authenticator>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, GrpcError> {
        let incoming = TcpIncoming::bind(addr)
            .map_err(|source| GrpcError::Bind { addr, source })?
            // Small unary messages: send each answer at once.
            .with_nodelay(Some(true));
        let port = incoming
            .local_addr()
            .map_err(|source| GrpcError::Bind { addr, source })?
            .port();
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        // Both versions: v1 for current clients, v1alpha for the many tools that still ask it first.
        let reflection_v1 = reflection()
            .build_v1()
            .map_err(|e| GrpcError::Reflection(e.to_string()))?;
        let reflection_v1alpha = reflection()
            .build_v1alpha()
            .map_err(|e| GrpcError::Reflection(e.to_string()))?;
        let (health, health_service) = tonic_health::server::health_reporter();
        // Known from the first call on, NOT_SERVING until readiness says otherwise.
        health.set_service_status("", ServingStatus::NotServing).await;
        health.set_service_status(SERVICE_NAME, ServingStatus::NotServing).await;
        let orders = pb::order_service_server::OrderServiceServer::new(OrderGrpc::new(Arc::clone(&state)))
            // The HTTP API's body limit, for the same messages.
            .max_decoding_message_size(BODY_BYTES_MAX);
        let (stop, stopped) = watch::channel(false);
        let readiness = tokio::spawn(report_readiness(state, health, stopped.clone()));
        let mut until_stopped = stopped;
        let serving = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .max_concurrent_streams(Some(STREAMS_PER_CONNECTION_MAX))
                .add_service(health_service)
                .add_service(reflection_v1)
                .add_service(reflection_v1alpha)
                .add_service(guard::Guarded::new(orders, auth, metrics))
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = until_stopped.wait_for(|stop| *stop).await;
                })
                .await
                .map_err(GrpcError::Serve)
        });
        Ok(Self {
            port,
            stop: Arc::new(stop),
            serving,
            readiness,
        })
    }

    /// The port bound; the OS's pick when the address said port 0.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What starts the stop without waiting for it (the signal handler's side).
    pub fn stopper(&self) -> GrpcStopper {
        GrpcStopper(Arc::clone(&self.stop))
    }

    /// Reports NOT_SERVING, refuses new calls, lets calls in flight finish,
    /// and returns once the server has stopped (the caller bounds the wait).
    pub async fn stop(self) -> Result<(), GrpcError> {
        let _ = self.stop.send(true);
        let _ = self.readiness.await;
        match self.serving.await {
            Ok(served) => served,
            // Only a panic in the server task ends it otherwise; it has stopped either way.
            Err(error) => {
                tracing::error!(%error, "the gRPC server task ended abnormally");
                Ok(())
            }
        }
    }
}

/// Starts a [`GrpcServer`]'s stop from elsewhere (the task that hears the signal).
#[derive(Clone)]
pub struct GrpcStopper(Arc<watch::Sender<bool>>);

impl GrpcStopper {
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

/// Keeps `grpc.health.v1` in step with readiness: SERVING exactly when
/// `/health/ready` would answer 200, for the whole server ("") and the order
/// service by name; NOT_SERVING once stopping starts.
async fn report_readiness(
    state: Arc<AppState>,
    health: tonic_health::server::HealthReporter,
    mut stopped: watch::Receiver<bool>,
) {
    let mut last = None;
    loop {
        let (ready, checks) = readiness(&state).await;
        let status = if ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        if last != Some(ready) {
            if !ready {
                tracing::warn!(%checks, "gRPC health: NOT_SERVING");
            }
            health.set_service_status("", status).await;
            health.set_service_status(SERVICE_NAME, status).await;
            last = Some(ready);
        }
        tokio::select! {
            _ = tokio::time::sleep(READINESS_POLL_INTERVAL) => {}
            _ = stopped.wait_for(|stop| *stop) => break,
        }
    }
    health.set_service_status("", ServingStatus::NotServing).await;
    health.set_service_status(SERVICE_NAME, ServingStatus::NotServing).await;
}
