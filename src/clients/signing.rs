//! HMAC request signing between services (seed 001's four headers), outbound
//! and inbound.
//!
//! Never reads the clock (time is passed in), never puts a signing secret in a
//! header, and never compares keys or signatures with `==`: verification is
//! constant-time.
//!
//! A signed request carries seed 001's four headers, and `X-User-Id` when it
//! acts for a user:
//!
//! ```text
//! X-Service-Identity:   <identity>              e.g. algo_engine
//! X-Internal-API-Key:   <api key>               identifies the caller; not a signing key
//! X-Request-Timestamp:  <unix seconds>          e.g. 1767225600
//! X-Request-Signature:  hex(HMAC-SHA256(key = signing secret, message = canonical string))
//! X-User-Id:            <user uuid>             optional; covered by the signature when sent
//! ```
//!
//! The API key and the signing secret are two different values registered
//! per identity. The key travels with every request, so whoever reads one
//! request knows it; the secret never leaves the two parties, so knowing
//! everything that was sent does not let anyone sign another request.
//!
//! The canonical string is seven lines joined by `\n` (no trailing newline):
//!
//! ```text
//! OE-HMAC-SHA256-v1           the version of this layout, [`CANONICAL_VERSION`]
//! {timestamp}                 the X-Request-Timestamp value, decimal
//! {METHOD}                    upper case: GET, POST, PUT
//! {path with query}           as sent on the wire: /api/v1/orders?limit=10
//! {hex(sha256(body))}         lower-case hex; the hash of the empty body for a GET
//! {identity}                  the X-Service-Identity value
//! {user id}                   the X-User-Id value as sent, or empty when not sent
//! ```
//!
//! Every input that decides what the request does is a line, so changing any
//! of them (redirecting the call to another user included) breaks the
//! signature. A header value cannot hold a line break, so the lines cannot be
//! shifted into one another; [`verify`] refuses one anyway.
//!
//! The receiver refuses a timestamp more than [`SIGNATURE_SKEW_MAX`] away from
//! its own clock, in either direction, which bounds how long a captured
//! request can be replayed (and `auth::internal` refuses a replay within it).

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::config::ServiceCredentials;

pub const HEADER_SERVICE_IDENTITY: &str = "X-Service-Identity";
pub const HEADER_API_KEY: &str = "X-Internal-API-Key";
pub const HEADER_TIMESTAMP: &str = "X-Request-Timestamp";
pub const HEADER_SIGNATURE: &str = "X-Request-Signature";
/// The user a service call acts for; covered by the signature.
pub const HEADER_USER_ID: &str = "X-User-Id";

/// The first line of the canonical string. A new layout gets a new version,
/// so a receiver can accept both while its callers move over.
pub const CANONICAL_VERSION: &str = "OE-HMAC-SHA256-v1";

/// How far a request's timestamp may be from the receiver's clock.
pub const SIGNATURE_SKEW_MAX: Duration = Duration::from_secs(300);

type HmacSha256 = Hmac<Sha256>;

/// What a signature covers besides the timestamp and the caller's identity:
/// the request as it goes on the wire.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    /// Any case; signed upper case.
    pub method: &'a str,
    /// Exactly as sent, query included, e.g. `/api/v1/orders?limit=10`.
    pub path_and_query: &'a str,
    pub body: &'a [u8],
    /// The `X-User-Id` header value as sent, None when the header is absent.
    pub user_id: Option<&'a str>,
}

/// The message that is signed; see the module doc.
pub fn canonical_string(timestamp_secs: i64, identity: &str, request: &SignedRequest<'_>) -> String {
    format!(
        "{CANONICAL_VERSION}\n{timestamp_secs}\n{}\n{}\n{}\n{identity}\n{}",
        request.method.to_ascii_uppercase(),
        request.path_and_query,
        hex::encode(Sha256::digest(request.body)),
        request.user_id.unwrap_or_default(),
    )
}

/// Whether a presented key or secret equals the expected one, in time that
/// does not depend on where they differ (nor on their lengths): both are
/// HMACed under the same fixed key and the tags compared in constant time.
pub fn secrets_equal(presented: &str, expected: &str) -> bool {
    let expected_tag = mac(expected, "secret-check").finalize().into_bytes();
    mac(presented, "secret-check").verify_slice(&expected_tag).is_ok()
}

fn mac(key: &str, message: &str) -> HmacSha256 {
    // HMAC takes keys of any length (long ones are hashed first), so this cannot fail;
    // the fallback keeps the no-panic rule without a reachable branch mattering.
    let mut mac = HmacSha256::new_from_slice(key.as_bytes())
        .unwrap_or_else(|_| <HmacSha256 as hmac::digest::KeyInit>::new(&Default::default()));
    mac.update(message.as_bytes());
    mac
}

/// `hex(HMAC-SHA256(signing_secret, canonical string))`.
pub fn signature(signing_secret: &str, timestamp_secs: i64, identity: &str, request: &SignedRequest<'_>) -> String {
    let message = canonical_string(timestamp_secs, identity, request);
    hex::encode(mac(signing_secret, &message).finalize().into_bytes())
}

/// The four seed 001 headers to add to an outbound request, as `(name, value)`
/// pairs. The signing secret is not among them. When `request.user_id` is
/// set, the caller sends `X-User-Id` with exactly that value.
pub fn sign(
    credentials: &ServiceCredentials,
    timestamp_secs: i64,
    request: &SignedRequest<'_>,
) -> [(&'static str, String); 4] {
    [
        (HEADER_SERVICE_IDENTITY, credentials.identity.clone()),
        (HEADER_API_KEY, credentials.api_key.clone()),
        (HEADER_TIMESTAMP, timestamp_secs.to_string()),
        (
            HEADER_SIGNATURE,
            signature(
                &credentials.signing_secret,
                timestamp_secs,
                &credentials.identity,
                request,
            ),
        ),
    ]
}

/// The signing headers of an inbound request, however the server reads headers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SignatureHeaders<'a> {
    pub identity: Option<&'a str>,
    pub api_key: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
}

impl<'a> SignatureHeaders<'a> {
    /// Collects the four headers through `header(name)` (names as the constants above).
    pub fn from_lookup(header: impl Fn(&'static str) -> Option<&'a str>) -> Self {
        Self {
            identity: header(HEADER_SERVICE_IDENTITY),
            api_key: header(HEADER_API_KEY),
            timestamp: header(HEADER_TIMESTAMP),
            signature: header(HEADER_SIGNATURE),
        }
    }
}

/// Why an inbound request's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("header {0} is missing; signed requests carry X-Service-Identity, X-Internal-API-Key, X-Request-Timestamp and X-Request-Signature")]
    MissingHeader(&'static str),
    #[error("header {0} holds a line break; the signed fields are single lines")]
    LineBreak(&'static str),
    #[error("service identity {0:?} is not known here; register its API key and signing secret")]
    UnknownService(String),
    #[error("the API key does not match the one registered for {0:?}")]
    ApiKeyMismatch(String),
    #[error("X-Request-Timestamp {0:?} is not whole unix seconds")]
    BadTimestamp(String),
    #[error("request timestamp {timestamp} is {} s from now ({now}); at most {} s is accepted: check the sender's clock or a replay", now.abs_diff(*timestamp), SIGNATURE_SKEW_MAX.as_secs())]
    Stale { timestamp: i64, now: i64 },
    #[error("the signature does not match the request: the method, path, query, body, timestamp, identity or X-User-Id changed, or the wrong secret signed it ({CANONICAL_VERSION})")]
    BadSignature,
}

/// A verified request: who sent it, and the signature (decoded) that proves
/// it, which is also the request's nonce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified<'a> {
    pub identity: &'a str,
    pub timestamp_secs: i64,
    pub signature: Vec<u8>,
}

/// Checks a signed request and returns the caller's identity.
///
/// `registered(identity)` gives what the receiver holds for a service (its API
/// key and signing secret); `now_secs` is the receiver's clock in unix seconds.
/// The cheap checks (headers, timestamp window) come before any HMAC work.
pub fn verify<'a, 'k>(
    headers: &SignatureHeaders<'a>,
    request: &SignedRequest<'_>,
    registered: impl Fn(&str) -> Option<&'k ServiceCredentials>,
    now_secs: i64,
) -> Result<Verified<'a>, VerifyError> {
    let identity = headers
        .identity
        .ok_or(VerifyError::MissingHeader(HEADER_SERVICE_IDENTITY))?;
    let presented_key = headers.api_key.ok_or(VerifyError::MissingHeader(HEADER_API_KEY))?;
    let timestamp_text = headers.timestamp.ok_or(VerifyError::MissingHeader(HEADER_TIMESTAMP))?;
    let signature_hex = headers.signature.ok_or(VerifyError::MissingHeader(HEADER_SIGNATURE))?;
    let has_line_break = |text: &str| text.contains(['\n', '\r']);
    if has_line_break(identity) {
        return Err(VerifyError::LineBreak(HEADER_SERVICE_IDENTITY));
    }
    if request.user_id.is_some_and(has_line_break) {
        return Err(VerifyError::LineBreak(HEADER_USER_ID));
    }

    let timestamp: i64 = timestamp_text
        .trim()
        .parse()
        .map_err(|_| VerifyError::BadTimestamp(timestamp_text.to_owned()))?;
    if now_secs.abs_diff(timestamp) > SIGNATURE_SKEW_MAX.as_secs() {
        return Err(VerifyError::Stale {
            timestamp,
            now: now_secs,
        });
    }

    let service = registered(identity).ok_or_else(|| VerifyError::UnknownService(identity.to_owned()))?;
    if !secrets_equal(presented_key, &service.api_key) {
        return Err(VerifyError::ApiKeyMismatch(identity.to_owned()));
    }

    let signature = hex::decode(signature_hex.trim()).map_err(|_| VerifyError::BadSignature)?;
    let message = canonical_string(timestamp, identity, request);
    mac(&service.signing_secret, &message)
        .verify_slice(&signature)
        .map_err(|_| VerifyError::BadSignature)?;
    Ok(Verified {
        identity,
        timestamp_secs: timestamp,
        signature,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_767_225_600;
    const PATH: &str = "/api/v1/orders?dry_run=false";
    const BODY: &[u8] = br#"{"order_id":"o","amount":10.5,"idempotency_key":"o:reserve"}"#;
    const USER_A: &str = "0190a000-0000-7000-8000-000000000001";
    const USER_B: &str = "0190b000-0000-7000-8000-000000000002";
    const ALGO_KEY: &str = "algo-engine-api-key";
    const ALGO_SECRET: &str = "algo-engine-signing-secret-0123456789abcdef";

    fn creds() -> ServiceCredentials {
        ServiceCredentials::new("algo_engine", ALGO_KEY, ALGO_SECRET)
    }

    fn registry() -> [ServiceCredentials; 2] {
        [
            creds(),
            ServiceCredentials::new(
                "user_interface",
                "user-interface-api-key",
                "user-interface-signing-secret-0123456789",
            ),
        ]
    }

    fn request(body: &[u8]) -> SignedRequest<'_> {
        SignedRequest {
            method: "POST",
            path_and_query: PATH,
            body,
            user_id: Some(USER_A),
        }
    }

    fn headers_of<'a>(signed: &'a [(&'static str, String); 4]) -> SignatureHeaders<'a> {
        SignatureHeaders::from_lookup(|name| signed.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str()))
    }

    fn check<'a>(
        headers: &SignatureHeaders<'a>,
        request: &SignedRequest<'_>,
        now: i64,
    ) -> Result<&'a str, VerifyError> {
        let registry = registry();
        verify(
            headers,
            request,
            |identity| registry.iter().find(|c| c.identity == identity),
            now,
        )
        .map(|verified| verified.identity)
    }

    #[test]
    fn the_canonical_string_is_the_documented_seven_lines() {
        // Proves the exact message layout another service must reproduce, version line first.
        let text = canonical_string(
            NOW,
            "order_engine",
            &SignedRequest {
                method: "get",
                path_and_query: "/a?b=1",
                body: b"",
                user_id: None,
            },
        );
        assert_eq!(
            text,
            "OE-HMAC-SHA256-v1\n1767225600\nGET\n/a?b=1\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\norder_engine\n"
        );
        assert_eq!(
            canonical_string(NOW, "algo_engine", &request(BODY)),
            format!(
                "OE-HMAC-SHA256-v1\n1767225600\nPOST\n{PATH}\n\
                 2cf42406b01bb8742ebb1453a7f430d576128e65023cf9c8d0de5f5baf0d267b\nalgo_engine\n{USER_A}"
            )
        );
    }

    #[test]
    fn the_signature_matches_vectors_computed_independently() {
        // Proves the signature is plain HMAC-SHA256 with the signing secret over the canonical string:
        // the expected values come from python3's hmac module, not from this code:
        //   hmac.new(secret, "\n".join([version, ts, method, path, sha256(body).hexdigest(), identity, user]).encode(),
        //            hashlib.sha256).hexdigest()
        assert_eq!(
            signature(ALGO_SECRET, NOW, "algo_engine", &request(BODY)),
            "dfcc1fbc9da9677ee9cbf9bd8674eed477e7c8b4772499d9c4b3cbb28cf124f6"
        );
        let get = SignedRequest {
            method: "GET",
            path_and_query: "/api/v1/balances/u/sufficient-funds?amount=10.5",
            body: b"",
            user_id: None,
        };
        assert_eq!(
            signature(
                "order-engine-signing-secret-0123456789abcdef",
                NOW,
                "order_engine",
                &get
            ),
            "7daa4945bce8cc8736195aad8b4dfb00c623d19478de3ab9865b1a873fc56861"
        );
    }

    #[test]
    fn a_signed_request_verifies_and_names_its_sender() {
        // Proves the round trip sign → verify, at the edges of the skew window too.
        let signed = sign(&creds(), NOW, &request(BODY));
        assert_eq!(signed[0], ("X-Service-Identity", "algo_engine".to_owned()));
        assert_eq!(signed[1], ("X-Internal-API-Key", ALGO_KEY.to_owned()));
        assert_eq!(signed[2], ("X-Request-Timestamp", NOW.to_string()));
        let headers = headers_of(&signed);
        for now in [NOW, NOW + 300, NOW - 300] {
            assert_eq!(check(&headers, &request(BODY), now), Ok("algo_engine"));
        }
    }

    #[test]
    fn the_signing_secret_is_never_sent() {
        // Proves no header of a signed request carries the secret (the key in X-Internal-API-Key is another value).
        let signed = sign(&creds(), NOW, &request(BODY));
        for (name, value) in &signed {
            assert!(!value.contains(ALGO_SECRET), "{name} carries the signing secret");
        }
    }

    #[test]
    fn changing_any_signed_field_breaks_the_signature() {
        // Proves every line of the canonical string is covered: redirecting to another user, adding or
        // dropping X-User-Id, another query, path, method or body are each refused.
        let signed = sign(&creds(), NOW, &request(BODY));
        let headers = headers_of(&signed);
        let tampered_body = br#"{"order_id":"o","amount":1000.5,"idempotency_key":"o:reserve"}"#;
        let cases: [(&str, SignedRequest<'_>); 7] = [
            (
                "another user",
                SignedRequest {
                    user_id: Some(USER_B),
                    ..request(BODY)
                },
            ),
            (
                "X-User-Id dropped",
                SignedRequest {
                    user_id: None,
                    ..request(BODY)
                },
            ),
            (
                "another query",
                SignedRequest {
                    path_and_query: "/api/v1/orders?dry_run=true",
                    ..request(BODY)
                },
            ),
            (
                "the query dropped",
                SignedRequest {
                    path_and_query: "/api/v1/orders",
                    ..request(BODY)
                },
            ),
            (
                "another path",
                SignedRequest {
                    path_and_query: "/api/v1/orderz?dry_run=false",
                    ..request(BODY)
                },
            ),
            (
                "another method",
                SignedRequest {
                    method: "PUT",
                    ..request(BODY)
                },
            ),
            ("another body", request(tampered_body)),
        ];
        for (what, tampered) in cases {
            assert_eq!(
                check(&headers, &tampered, NOW),
                Err(VerifyError::BadSignature),
                "{what}"
            );
        }
        let unsigned_user = sign(
            &creds(),
            NOW,
            &SignedRequest {
                user_id: None,
                ..request(BODY)
            },
        );
        assert_eq!(
            check(&headers_of(&unsigned_user), &request(BODY), NOW),
            Err(VerifyError::BadSignature),
            "X-User-Id added to a request signed without one"
        );
    }

    #[test]
    fn what_was_sent_is_not_enough_to_sign_another_request() {
        // Proves the key-from-header attack fails: an attacker who read a whole signed request (API key
        // included) and signs a request for another user with that key, as the old scheme did, is refused.
        let seen = sign(&creds(), NOW, &request(BODY));
        let seen_headers = headers_of(&seen);
        assert_eq!(check(&seen_headers, &request(BODY), NOW), Ok("algo_engine"));
        let api_key_from_the_wire = seen_headers.api_key.unwrap();
        let redirected = SignedRequest {
            user_id: Some(USER_B),
            ..request(BODY)
        };
        for guessed_key in [api_key_from_the_wire, seen_headers.signature.unwrap()] {
            let mut forged = seen.clone();
            forged[2].1 = (NOW + 1).to_string();
            forged[3].1 = signature(guessed_key, NOW + 1, "algo_engine", &redirected);
            assert_eq!(
                check(&headers_of(&forged), &redirected, NOW + 1),
                Err(VerifyError::BadSignature),
                "signed with {guessed_key}"
            );
        }
    }

    #[test]
    fn the_wrong_key_or_secret_is_refused() {
        // Proves both values matter: the presented API key identifies, the secret signs; another
        // service's secret, and a signature that is not hex, are refused.
        let wrong_key = ServiceCredentials::new("algo_engine", "not-the-key", ALGO_SECRET);
        let signed = sign(&wrong_key, NOW, &request(BODY));
        assert_eq!(
            check(&headers_of(&signed), &request(BODY), NOW),
            Err(VerifyError::ApiKeyMismatch("algo_engine".into()))
        );
        let wrong_secret = ServiceCredentials::new("algo_engine", ALGO_KEY, "user-interface-signing-secret-0123456789");
        let signed = sign(&wrong_secret, NOW, &request(BODY));
        assert_eq!(
            check(&headers_of(&signed), &request(BODY), NOW),
            Err(VerifyError::BadSignature)
        );
        let mut garbage = sign(&creds(), NOW, &request(BODY));
        garbage[3].1 = "zz-not-hex".into();
        assert_eq!(
            check(&headers_of(&garbage), &request(BODY), NOW),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn an_unknown_service_is_refused() {
        // Proves only registered identities are accepted.
        let stranger = ServiceCredentials::new("stranger", ALGO_KEY, ALGO_SECRET);
        let signed = sign(&stranger, NOW, &request(BODY));
        assert_eq!(
            check(&headers_of(&signed), &request(BODY), NOW),
            Err(VerifyError::UnknownService("stranger".into()))
        );
    }

    #[test]
    fn timestamps_outside_the_skew_window_are_refused() {
        // Proves replays older than 300 s, and clocks 300 s ahead, are refused before any HMAC work.
        let signed = sign(&creds(), NOW, &request(BODY));
        let headers = headers_of(&signed);
        for now in [NOW + 301, NOW - 301] {
            assert_eq!(
                check(&headers, &request(BODY), now),
                Err(VerifyError::Stale { timestamp: NOW, now })
            );
        }
        let message = check(&headers, &request(BODY), NOW + 301).unwrap_err().to_string();
        assert!(message.contains("301 s") && message.contains("300 s"), "{message}");
    }

    #[test]
    fn a_malformed_timestamp_or_a_line_break_is_refused() {
        // Proves a timestamp that is not unix seconds is named as such, and a field that could shift
        // the canonical lines is refused outright.
        let mut signed = sign(&creds(), NOW, &request(BODY));
        signed[2].1 = "2026-01-01T00:00:00Z".into();
        assert_eq!(
            check(&headers_of(&signed), &request(BODY), NOW),
            Err(VerifyError::BadTimestamp("2026-01-01T00:00:00Z".into()))
        );
        let signed = sign(&creds(), NOW, &request(BODY));
        let split_user = SignedRequest {
            user_id: Some("a\nb"),
            ..request(BODY)
        };
        assert_eq!(
            check(&headers_of(&signed), &split_user, NOW),
            Err(VerifyError::LineBreak(HEADER_USER_ID))
        );
        let mut split_identity = signed.clone();
        split_identity[0].1 = "algo_engine\n".into();
        assert_eq!(
            check(&headers_of(&split_identity), &request(BODY), NOW),
            Err(VerifyError::LineBreak(HEADER_SERVICE_IDENTITY))
        );
    }

    #[test]
    fn each_missing_header_is_named() {
        // Proves a request lacking any of the four headers is refused with that header's name.
        let signed = sign(&creds(), NOW, &request(BODY));
        for missing in [
            HEADER_SERVICE_IDENTITY,
            HEADER_API_KEY,
            HEADER_TIMESTAMP,
            HEADER_SIGNATURE,
        ] {
            let headers = SignatureHeaders::from_lookup(|name| {
                (name != missing)
                    .then(|| signed.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str()))
                    .flatten()
            });
            assert_eq!(
                check(&headers, &request(BODY), NOW),
                Err(VerifyError::MissingHeader(missing))
            );
        }
        assert_eq!(
            check(&SignatureHeaders::default(), &request(BODY), NOW),
            Err(VerifyError::MissingHeader(HEADER_SERVICE_IDENTITY))
        );
    }
}
