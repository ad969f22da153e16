//! Service discovery through the registry (seed 002, pattern 5): a client's
//! [`AddressLookup`] that asks `GET /api/v1/registry/{name}`. The client
//! keeps (caches) the address it gets and asks again only when a call to it
//! cannot connect.

use async_trait::async_trait;

use super::client::ConfigServiceClient;
use crate::clients::AddressLookup;

/// Where `service_name` is, per the registry.
pub struct RegistryLookup {
    client: ConfigServiceClient,
    service_name: &'static str,
}

impl RegistryLookup {
    pub fn new(client: ConfigServiceClient, service_name: &'static str) -> Self {
        Self { client, service_name }
    }
}

#[async_trait]
impl AddressLookup for RegistryLookup {
    async fn lookup(&self) -> Result<Option<String>, String> {
        self.client
            .discover(self.service_name)
            .await
            .map_err(|error| error.to_string())
    }
}
