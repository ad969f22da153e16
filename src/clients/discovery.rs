//! Where a remote service is now: the seam service discovery plugs into
//! (the config service's registry, `configsvc::discovery`). A client asks
//! again when a call to the address it had could not connect.

use async_trait::async_trait;

/// Looks up a service's current base URL.
#[async_trait]
pub trait AddressLookup: Send + Sync + 'static {
    /// `http(s)://host:port` of a healthy instance; None when the registry
    /// knows none (the client keeps the address it has).
    async fn lookup(&self) -> Result<Option<String>, String>;
}
