//! Why the application could not be built, served or stopped in time.

use std::net::SocketAddr;
use std::time::Duration;

use crate::auth::AuthConfigError;
use crate::clients::ConfigError;
use crate::store::StoreError;

/// Everything `Application::build` and `run_until_stopped` can fail with.
/// All of it is raised at start or at stop, never per request: a bad setting,
/// an unreachable database, a port in use, a step of the stop that overran.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// `database` is already redacted (no password).
    #[error("opening the event log at {database}")]
    Store {
        database: String,
        #[source]
        source: StoreError,
    },
    /// The order actors' threads could not start (ORDER_ENGINE_ACTOR_THREADS).
    #[error("starting the order actors (ORDER_ENGINE_ACTOR_THREADS)")]
    Actors(#[source] crate::actors::StartError),
    /// The log was given without read models (`ApplicationBuilder::engine_log`),
    /// which the HTTP API and the orders projection read.
    #[error("the log was given without the read models the HTTP API needs")]
    NoReadModels,
    /// Joining the other processes on this database (issue 13) failed.
    #[error("joining the cluster on {database}")]
    Cluster {
        database: String,
        #[source]
        source: crate::cluster::ClusterError,
    },
    #[error("registering metrics")]
    Metrics(#[source] prometheus::Error),
    /// A remote service client (balance, accounts) refused its configuration.
    #[error("{variable}={url}")]
    RemoteClient {
        variable: &'static str,
        url: String,
        #[source]
        source: ConfigError,
    },
    /// The market data service's address is not usable.
    #[error("ORDER_ENGINE_MARKET_DATA_URL={address}")]
    MarketData {
        address: String,
        #[source]
        source: crate::market::DiscoveryError,
    },
    #[error("reading ORDER_ENGINE_JWT_PUBLIC_KEY_FILE={path}")]
    JwtKeyFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("JWT settings")]
    Jwt(#[source] AuthConfigError),
    /// No key to verify user tokens with, and the development secret is not allowed.
    #[error("no key to verify user tokens: set ORDER_ENGINE_JWT_SECRET or ORDER_ENGINE_JWT_PUBLIC_KEY_FILE{}", if *production { " (ENVIRONMENT is production: the development secret is refused)" } else { ", or ORDER_SERVICE_TEST_AUTH_MODE=true for development tokens" })]
    NoJwtKey { production: bool },
    #[error("binding ORDER_ENGINE_HTTP_ADDR={addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP server")]
    Server(#[source] std::io::Error),
    /// The gRPC server could not bind or start, or failed while serving.
    #[error("gRPC server")]
    Grpc(#[source] crate::grpc::GrpcError),
    /// A step of the stop was still running at the deadline. The caller (the
    /// binary) exits with a non-zero status: the log is the source of truth,
    /// so nothing acknowledged is lost, and a supervisor restarts the process.
    #[error("shutdown did not finish within ORDER_ENGINE_SHUTDOWN_TIMEOUT ({timeout:?}): {step} was still stopping")]
    ShutdownTimedOut { step: &'static str, timeout: Duration },
}
