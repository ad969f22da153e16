//! Internal service calls: who may call (`ServiceKeys`: each identity's API
//! key and signing secret), what each service may do (seed 001's permission
//! table), and the inbound check of a signed request with replay protection
//! (`InternalVerifier`).
//!
//! Must never re-implement the signature check (that is
//! `clients::signing::verify`) and never accept the same signed request twice
//! within the window in which its timestamp is still fresh.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use crate::clients::config::ServiceCredentials;
use crate::clients::signing::{self, SignatureHeaders, SignedRequest, SIGNATURE_SKEW_MAX};
use crate::clock::Clock;

use super::AuthError;

/// What a service may do to orders; seed 001's `AUTHORIZED_SERVICES` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    PlaceOrder,
    GetOrders,
    CancelOrder,
    ModifyOrder,
    GetPositions,
}

impl Permission {
    /// The seed's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::PlaceOrder => "place_order",
            Self::GetOrders => "get_orders",
            Self::CancelOrder => "cancel_order",
            Self::ModifyOrder => "modify_order",
            Self::GetPositions => "get_positions",
        }
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Seed 001's permission table, verbatim. A service with an API key but no
/// row here may call nothing that requires a permission.
pub const AUTHORIZED_SERVICES: &[(&str, &[Permission])] = &[
    (
        "algo_engine",
        &[Permission::PlaceOrder, Permission::ModifyOrder, Permission::CancelOrder],
    ),
    (
        "user_interface",
        &[Permission::PlaceOrder, Permission::GetOrders, Permission::CancelOrder],
    ),
    ("risk_manager", &[Permission::CancelOrder, Permission::GetPositions]),
    ("strategy_service", &[Permission::PlaceOrder, Permission::ModifyOrder]),
];

/// The permissions of `identity` (none when it has no row).
pub fn permissions_of(identity: &str) -> &'static [Permission] {
    AUTHORIZED_SERVICES
        .iter()
        .find(|(name, _)| *name == identity)
        .map_or(&[], |(_, permissions)| permissions)
}

/// Whether service `identity` may do `permission`; a 403 problem when not.
pub fn authorize(identity: &str, permission: Permission) -> Result<(), AuthError> {
    if permissions_of(identity).contains(&permission) {
        Ok(())
    } else {
        Err(AuthError::Forbidden {
            identity: identity.to_owned(),
            permission,
        })
    }
}

/// Each calling service's API key and signing secret, from configuration
/// (the config service in production). `Debug` shows identities only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ServiceKeys {
    services: HashMap<String, ServiceCredentials>,
}

impl ServiceKeys {
    /// Registers each service by its identity (a later entry for the same
    /// identity replaces an earlier one). Configuration validates the
    /// credentials first (`ServiceCredentials::validate`); this does not, so
    /// tests can build any registry.
    pub fn new(services: impl IntoIterator<Item = ServiceCredentials>) -> Self {
        Self {
            services: services.into_iter().map(|c| (c.identity.clone(), c)).collect(),
        }
    }

    pub fn credentials_for(&self, identity: &str) -> Option<&ServiceCredentials> {
        self.services.get(identity)
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }
}

impl std::fmt::Debug for ServiceKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut identities: Vec<&str> = self.services.keys().map(String::as_str).collect();
        identities.sort_unstable();
        f.debug_struct("ServiceKeys")
            .field("identities", &identities)
            .field("api_keys", &"<redacted>")
            .field("signing_secrets", &"<redacted>")
            .finish()
    }
}

/// How many accepted signatures are remembered at once. Each entry is about
/// 100 bytes, so the cache stays under ~10 MB. When it is full of unexpired
/// entries new signed requests are refused (503) rather than a nonce forgotten:
/// forgetting would reopen the replay window.
pub const REPLAY_CACHE_ENTRIES_MAX: usize = 100_000;

/// Signatures seen while their timestamp is still within the skew window.
/// The signature is the nonce: seed 001's headers carry no other, and two
/// requests with the same signature are the same request.
#[derive(Debug)]
struct ReplayCache {
    /// (identity, signature bytes) → the unix second after which the timestamp is stale anyway.
    seen: HashMap<(String, Vec<u8>), i64>,
    /// The same entries ordered by expiry, to evict without scanning.
    by_expiry: BinaryHeap<Reverse<(i64, String, Vec<u8>)>>,
    entries_max: usize,
}

impl ReplayCache {
    fn new(entries_max: usize) -> Self {
        Self {
            seen: HashMap::new(),
            by_expiry: BinaryHeap::new(),
            entries_max,
        }
    }

    fn evict_expired(&mut self, now_secs: i64) {
        while let Some(Reverse((expires, _, _))) = self.by_expiry.peek() {
            if *expires >= now_secs {
                break;
            }
            if let Some(Reverse((_, identity, signature))) = self.by_expiry.pop() {
                self.seen.remove(&(identity, signature));
            }
        }
    }

    /// Records a first sighting; refuses a second one.
    fn check_and_record(
        &mut self,
        identity: &str,
        signature: Vec<u8>,
        timestamp_secs: i64,
        now_secs: i64,
    ) -> Result<(), AuthError> {
        self.evict_expired(now_secs);
        let key = (identity.to_owned(), signature);
        if self.seen.contains_key(&key) {
            return Err(AuthError::Replayed);
        }
        if self.seen.len() >= self.entries_max {
            return Err(AuthError::ReplayCacheFull {
                entries_max: self.entries_max,
            });
        }
        // Past this second `signing::verify` refuses the timestamp as stale, so
        // the entry is no longer needed.
        let skew_secs = i64::try_from(SIGNATURE_SKEW_MAX.as_secs()).unwrap_or(i64::MAX);
        let expires = timestamp_secs.saturating_add(skew_secs);
        self.by_expiry.push(Reverse((expires, key.0.clone(), key.1.clone())));
        self.seen.insert(key, expires);
        Ok(())
    }

    fn len(&self) -> usize {
        self.seen.len()
    }
}

/// Checks inbound signed requests: headers, key, ±300 s timestamp, HMAC over
/// the exact body (all by `signing::verify`), then refuses a replay.
pub struct InternalVerifier {
    keys: ServiceKeys,
    clock: Arc<dyn Clock>,
    // A std mutex: held for a hash lookup and insert, never across an await.
    replay: Mutex<ReplayCache>,
}

impl std::fmt::Debug for InternalVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InternalVerifier")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl InternalVerifier {
    pub fn new(keys: ServiceKeys, clock: Arc<dyn Clock>) -> Self {
        Self::with_replay_capacity(keys, clock, REPLAY_CACHE_ENTRIES_MAX)
    }

    /// As `new` with another bound on remembered signatures (tests).
    pub fn with_replay_capacity(keys: ServiceKeys, clock: Arc<dyn Clock>, entries_max: usize) -> Self {
        Self {
            keys,
            clock,
            replay: Mutex::new(ReplayCache::new(entries_max)),
        }
    }

    /// The calling service's identity when the request is genuine, fresh and
    /// seen for the first time. Permissions are checked separately
    /// ([`authorize`]), once the route's need is known.
    pub fn verify(&self, headers: &SignatureHeaders<'_>, request: &SignedRequest<'_>) -> Result<String, AuthError> {
        let now_secs = self.clock.now().timestamp();
        let verified = signing::verify(headers, request, |id| self.keys.credentials_for(id), now_secs)?;
        // The replay key is the decoded signature (not its text), so a re-cased
        // hex string is the same request.
        let mut replay = self.replay.lock().unwrap_or_else(PoisonError::into_inner);
        replay.check_and_record(verified.identity, verified.signature, verified.timestamp_secs, now_secs)?;
        Ok(verified.identity.to_owned())
    }

    /// Signatures currently remembered (for metrics and tests).
    pub fn remembered_signatures(&self) -> usize {
        self.replay.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients::signing::{sign, VerifyError};
    use crate::clock::ManualClock;
    use chrono::{DateTime, Utc};

    const NOW: i64 = 1_767_225_600;
    const PATH: &str = "/api/v1/orders";
    const BODY: &[u8] = br#"{"symbol":"AAPL","side":"BUY","order_type":"MARKET","quantity":1}"#;

    fn clock() -> Arc<ManualClock> {
        Arc::new(ManualClock::new(DateTime::<Utc>::from_timestamp(NOW, 0).unwrap()))
    }

    /// Each test key's signing secret: derived, so a test names only the key.
    fn secret_of(api_key: &str) -> String {
        format!("{api_key}-signing-secret-0123456789abcdef")
    }

    fn keys() -> ServiceKeys {
        ServiceKeys::new([
            ServiceCredentials::new("algo_engine", "algo-key", secret_of("algo-key")),
            ServiceCredentials::new("risk_manager", "risk-key", secret_of("risk-key")),
        ])
    }

    fn signed(identity: &str, key: &str, timestamp: i64, body: &[u8]) -> [(&'static str, String); 4] {
        let credentials = ServiceCredentials::new(identity, key, secret_of(key));
        sign(&credentials, timestamp, &request(body))
    }

    fn headers<'a>(signed: &'a [(&'static str, String); 4]) -> SignatureHeaders<'a> {
        SignatureHeaders::from_lookup(|name| signed.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str()))
    }

    fn request(body: &[u8]) -> SignedRequest<'_> {
        SignedRequest {
            method: "POST",
            path_and_query: PATH,
            body,
            user_id: None,
        }
    }

    #[test]
    fn a_signed_request_from_a_known_service_is_accepted() {
        // Proves the valid path returns the caller's identity.
        let verifier = InternalVerifier::new(keys(), clock());
        let s = signed("algo_engine", "algo-key", NOW, BODY);
        assert_eq!(verifier.verify(&headers(&s), &request(BODY)), Ok("algo_engine".into()));
    }

    #[test]
    fn an_unknown_service_is_refused() {
        // Proves only services with a configured key get in, whatever they sign with.
        let verifier = InternalVerifier::new(keys(), clock());
        let s = signed("stranger", "algo-key", NOW, BODY);
        assert_eq!(
            verifier.verify(&headers(&s), &request(BODY)),
            Err(AuthError::Signature(VerifyError::UnknownService("stranger".into())))
        );
    }

    #[test]
    fn the_wrong_key_is_refused() {
        // Proves a service signing with another service's key (or a guessed one) fails.
        let verifier = InternalVerifier::new(keys(), clock());
        let s = signed("algo_engine", "risk-key", NOW, BODY);
        assert_eq!(
            verifier.verify(&headers(&s), &request(BODY)),
            Err(AuthError::Signature(VerifyError::ApiKeyMismatch("algo_engine".into())))
        );
    }

    #[test]
    fn a_timestamp_more_than_300_s_old_is_refused() {
        // Proves the skew limit applies on the inbound path (and at 300 s exactly it still passes).
        let verifier = InternalVerifier::new(keys(), clock());
        let stale = signed("algo_engine", "algo-key", NOW - 301, BODY);
        assert!(matches!(
            verifier.verify(&headers(&stale), &request(BODY)),
            Err(AuthError::Signature(VerifyError::Stale { .. }))
        ));
        let edge = signed("algo_engine", "algo-key", NOW - 300, BODY);
        assert!(verifier.verify(&headers(&edge), &request(BODY)).is_ok());
    }

    #[test]
    fn a_replayed_request_is_refused_the_second_time() {
        // Proves the same signed request is accepted once, then refused, also with re-cased hex.
        let verifier = InternalVerifier::new(keys(), clock());
        let s = signed("algo_engine", "algo-key", NOW, BODY);
        assert!(verifier.verify(&headers(&s), &request(BODY)).is_ok());
        assert_eq!(verifier.verify(&headers(&s), &request(BODY)), Err(AuthError::Replayed));
        let mut upper = s.clone();
        upper[3].1 = upper[3].1.to_uppercase();
        assert_eq!(
            verifier.verify(&headers(&upper), &request(BODY)),
            Err(AuthError::Replayed)
        );
        // A re-signed request (new timestamp) is a new request.
        let fresh = signed("algo_engine", "algo-key", NOW + 1, BODY);
        assert!(verifier.verify(&headers(&fresh), &request(BODY)).is_ok());
    }

    #[test]
    fn remembered_signatures_expire_with_the_skew_window() {
        // Proves the cache forgets a signature once its timestamp would be stale anyway,
        // and that the replay is then refused as stale instead.
        let clock = clock();
        let verifier = InternalVerifier::new(keys(), clock.clone());
        let s = signed("algo_engine", "algo-key", NOW, BODY);
        assert!(verifier.verify(&headers(&s), &request(BODY)).is_ok());
        assert_eq!(verifier.remembered_signatures(), 1);
        clock.advance(chrono::Duration::seconds(301));
        let other = signed("algo_engine", "algo-key", NOW + 301, BODY);
        assert!(verifier.verify(&headers(&other), &request(BODY)).is_ok());
        assert_eq!(verifier.remembered_signatures(), 1, "the first entry was evicted");
        assert!(matches!(
            verifier.verify(&headers(&s), &request(BODY)),
            Err(AuthError::Signature(VerifyError::Stale { .. }))
        ));
    }

    #[test]
    fn a_full_replay_cache_refuses_rather_than_forgets() {
        // Proves the bound: with every slot unexpired, a new request is refused (503), not admitted
        // by dropping an entry that would let a replay through.
        let verifier = InternalVerifier::with_replay_capacity(keys(), clock(), 2);
        for t in [NOW, NOW - 1] {
            let s = signed("algo_engine", "algo-key", t, BODY);
            assert!(verifier.verify(&headers(&s), &request(BODY)).is_ok());
        }
        let third = signed("algo_engine", "algo-key", NOW - 2, BODY);
        assert_eq!(
            verifier.verify(&headers(&third), &request(BODY)),
            Err(AuthError::ReplayCacheFull { entries_max: 2 })
        );
    }

    #[test]
    fn the_permission_table_is_the_seeds() {
        // Proves seed 001's table: e.g. risk_manager may cancel but not place; unknown services may do nothing.
        assert_eq!(authorize("risk_manager", Permission::CancelOrder), Ok(()));
        assert_eq!(authorize("risk_manager", Permission::GetPositions), Ok(()));
        let refused = authorize("risk_manager", Permission::PlaceOrder).unwrap_err();
        assert_eq!(
            refused,
            AuthError::Forbidden {
                identity: "risk_manager".into(),
                permission: Permission::PlaceOrder
            }
        );
        assert!(refused.to_string().contains("cancel_order, get_positions"), "{refused}");
        for p in [Permission::PlaceOrder, Permission::ModifyOrder, Permission::CancelOrder] {
            assert_eq!(authorize("algo_engine", p), Ok(()));
        }
        assert!(authorize("algo_engine", Permission::GetOrders).is_err());
        for p in [Permission::PlaceOrder, Permission::GetOrders, Permission::CancelOrder] {
            assert_eq!(authorize("user_interface", p), Ok(()));
        }
        assert!(authorize("user_interface", Permission::ModifyOrder).is_err());
        for p in [Permission::PlaceOrder, Permission::ModifyOrder] {
            assert_eq!(authorize("strategy_service", p), Ok(()));
        }
        assert!(authorize("strategy_service", Permission::CancelOrder).is_err());
        assert!(permissions_of("order_engine").is_empty());
    }

    #[test]
    fn service_keys_never_show_in_debug_output() {
        // Proves configuration can be logged without leaking API keys or signing secrets.
        let text = format!("{:?}", InternalVerifier::new(keys(), clock()));
        assert!(text.contains("algo_engine") && !text.contains("algo-key"), "{text}");
        assert!(!text.contains("signing-secret-0123456789"), "{text}");
    }
}
