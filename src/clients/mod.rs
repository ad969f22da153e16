//! Clients for the services the engine calls (balance and accounts over HTTP,
//! market data over gRPC): resilience (timeouts, retries on backon, circuit
//! breaker), the cached address service discovery refreshes, request signing,
//! and the shared HTTP transport the typed clients in `balance::http` and
//! `accounts::http` use.
//!
//! Never retries a call the service refused (4xx): only failures that may go
//! away by themselves are retried, and retried calls carry idempotency keys.

pub mod breakers;
pub mod config;
pub mod discovery;
pub mod remote;
pub mod resilience;
pub mod signing;

pub use breakers::Breakers;
pub use config::{
    ConfigError, CredentialsError, RemoteServiceConfig, ServiceCredentials, SIGNING_SECRET_BYTES_MIN, TIMEOUT_DEFAULT,
};
pub use discovery::{AddressLookup, CachedAddress};
pub use remote::{Answer, Call, RemoteError, RemoteService, TransportError};
pub use resilience::{
    BreakerConfig, BreakerPermit, BreakerRefusal, BreakerSnapshot, BreakerState, CircuitBreaker, Resilience,
    ResilienceError, RetryPolicy, Transient,
};
pub use signing::{secrets_equal, verify, SignatureHeaders, SignedRequest, Verified, VerifyError, SIGNATURE_SKEW_MAX};
