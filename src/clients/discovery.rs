//! Where a remote service is now: the seam service discovery plugs into
//! (the config service's registry, `configsvc::discovery`). A client keeps
//! the address it has and asks again only when a call to it could not connect.
//!
//! Must never hand out an address its client could not use: a lookup that
//! fails, knows no instance or gives something unusable keeps the address.

use std::sync::{Arc, PoisonError, RwLock};

use async_trait::async_trait;

/// Looks up a service's current base URL.
#[async_trait]
pub trait AddressLookup: Send + Sync + 'static {
    /// `http(s)://host:port` of a healthy instance; None when the registry
    /// knows none (the client keeps the address it has).
    async fn lookup(&self) -> Result<Option<String>, String>;
}

/// A service's address as its client last found it, and where to ask again.
/// The balance, account and market data clients each hold one.
pub struct CachedAddress {
    /// Labels logs (`balance`, `accounts`, `market_data`).
    service: &'static str,
    /// Without a trailing `/`.
    current: RwLock<String>,
    /// None: the address is fixed.
    lookup: Option<Arc<dyn AddressLookup>>,
}

impl std::fmt::Debug for CachedAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedAddress")
            .field("service", &self.service)
            .field("current", &self.get())
            .field("discovered", &self.lookup.is_some())
            .finish()
    }
}

impl CachedAddress {
    /// `url` until a lookup says otherwise (with [`Self::with_lookup`]), or for good.
    pub fn new(service: &'static str, url: &str) -> Self {
        Self {
            service,
            current: RwLock::new(url.trim_end_matches('/').to_owned()),
            lookup: None,
        }
    }

    /// Asks `lookup` when a call to the address cannot connect.
    pub fn with_lookup(mut self, lookup: Arc<dyn AddressLookup>) -> Self {
        self.lookup = Some(lookup);
        self
    }

    /// The address calls go to now.
    pub fn get(&self) -> String {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// After a connection error: asks the lookup where the service is now.
    /// When it moved and `usable` accepts the new address (building what the
    /// client needs to call there), the address is replaced and `usable`'s
    /// value returned, so the next attempt (this call's retry, or the next
    /// call) goes there. None: no lookup, it failed, or the service is where it was.
    pub async fn refresh<T>(&self, usable: impl FnOnce(&str) -> Result<T, String>) -> Option<T> {
        let lookup = self.lookup.as_ref()?;
        let url = match lookup.lookup().await {
            Ok(Some(url)) => url.trim_end_matches('/').to_owned(),
            Ok(None) => {
                tracing::warn!(
                    service = self.service,
                    "the registry knows no healthy instance; keeping the address"
                );
                return None;
            }
            Err(error) => {
                tracing::warn!(service = self.service, %error, "service discovery failed; keeping the address");
                return None;
            }
        };
        // The value is a plain string replaced whole; a panic elsewhere cannot leave it torn.
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if *current == url {
            return None;
        }
        match usable(&url) {
            Ok(value) => {
                tracing::info!(service = self.service, from = %*current, to = %url, "service moved; calling the address the registry gives");
                *current = url;
                Some(value)
            }
            Err(reason) => {
                tracing::warn!(service = self.service, %url, %reason, "the registry gave an unusable address; keeping the address");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Answers from a list, the last one for good.
    struct Answers(Mutex<Vec<Result<Option<String>, String>>>);

    #[async_trait]
    impl AddressLookup for Answers {
        async fn lookup(&self) -> Result<Option<String>, String> {
            let mut answers = self.0.lock().unwrap();
            if answers.len() > 1 {
                answers.remove(0)
            } else {
                answers[0].clone()
            }
        }
    }

    fn cached(answers: Vec<Result<Option<String>, String>>) -> CachedAddress {
        CachedAddress::new("t", "http://old:1/").with_lookup(Arc::new(Answers(Mutex::new(answers))))
    }

    fn accept(url: &str) -> Result<String, String> {
        Ok(url.to_owned())
    }

    #[tokio::test]
    async fn a_moved_service_is_called_where_the_lookup_says() {
        // Proves the address is replaced (trailing slash dropped) and the new one handed to the client.
        let address = cached(vec![Ok(Some("http://new:2/".into()))]);
        assert_eq!(address.get(), "http://old:1");
        assert_eq!(address.refresh(accept).await, Some("http://new:2".to_owned()));
        assert_eq!(address.get(), "http://new:2");
        assert_eq!(address.refresh(accept).await, None, "same address: nothing to rebuild");
    }

    #[tokio::test]
    async fn a_failed_empty_or_unusable_answer_keeps_the_address() {
        // Proves nothing but a usable new address replaces the one the client has.
        let address = cached(vec![
            Err("registry down".into()),
            Ok(None),
            Ok(Some("not a url".into())),
        ]);
        assert_eq!(address.refresh(accept).await, None);
        assert_eq!(address.refresh(accept).await, None);
        assert_eq!(address.refresh(|_| Err::<(), _>("no scheme".into())).await, None);
        assert_eq!(address.get(), "http://old:1");
        let fixed = CachedAddress::new("t", "http://old:1");
        assert_eq!(fixed.refresh(accept).await, None);
    }
}
