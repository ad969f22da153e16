//! The platform's config service as the engine uses it (seeds 000, 002 and
//! shared/contracts/config-service.md): the HTTP client, the TTL cache with
//! stale-on-error, refresh without restart, self-registration, service
//! discovery and feature flags, with their metrics. The typed settings and
//! the migration modes live in `config`; this folder only speaks to the service.

pub mod cache;
pub mod client;
pub mod discovery;
pub mod flags;
pub mod metrics;
pub mod refresh;
pub mod registry;

pub use cache::{ConfigCache, CACHE_TTL_DEFAULT};
pub use client::{ConfigServiceClient, ConfigServiceError, Registration, SERVICE_NAME};
pub use metrics::ConfigMetrics;
pub use refresh::{Refreshed, Refresher};
pub use registry::{HealthEndpoint, Readiness, SelfRegistration, ServiceRegistry, HEARTBEAT_INTERVAL};
