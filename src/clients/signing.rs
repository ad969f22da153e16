//! HMAC request signing between services (seed 001), outbound and inbound.
//!
//! Never reads the clock (time is passed in) and never compares secrets or
//! signatures with `==`: verification is constant-time.
//!
//! A signed request carries four headers:
//!
//! ```text
//! X-Service-Identity:   <identity>              e.g. order_engine
//! X-Internal-API-Key:   <api key>
//! X-Request-Timestamp:  <unix seconds>          e.g. 1767225600
//! X-Request-Signature:  hex(HMAC-SHA256(key = api key, message = canonical string))
//! ```
//!
//! The canonical string is four lines joined by `\n` (no trailing newline):
//!
//! ```text
//! {timestamp}                 the X-Request-Timestamp value, decimal
//! {METHOD}                    upper case: GET, POST
//! {path with query}           as sent on the wire: /api/v1/balances/…?amount=10.5
//! {hex(sha256(body))}         lower-case hex; the hash of the empty body for a GET
//! ```
//!
//! The receiver refuses a timestamp more than [`SIGNATURE_SKEW_MAX`] away from
//! its own clock, in either direction, which bounds how long a captured
//! request can be replayed.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::config::ServiceCredentials;

pub const HEADER_SERVICE_IDENTITY: &str = "X-Service-Identity";
pub const HEADER_API_KEY: &str = "X-Internal-API-Key";
pub const HEADER_TIMESTAMP: &str = "X-Request-Timestamp";
pub const HEADER_SIGNATURE: &str = "X-Request-Signature";

/// How far a request's timestamp may be from the receiver's clock.
pub const SIGNATURE_SKEW_MAX: Duration = Duration::from_secs(300);

type HmacSha256 = Hmac<Sha256>;

/// The message that is signed; see the module doc.
pub fn canonical_string(timestamp_secs: i64, method: &str, path_and_query: &str, body: &[u8]) -> String {
    format!(
        "{timestamp_secs}\n{}\n{path_and_query}\n{}",
        method.to_ascii_uppercase(),
        hex::encode(Sha256::digest(body))
    )
}

fn mac(api_key: &str, message: &str) -> HmacSha256 {
    // HMAC takes keys of any length (long ones are hashed first), so this cannot fail;
    // the fallback keeps the no-panic rule without a reachable branch mattering.
    let mut mac = HmacSha256::new_from_slice(api_key.as_bytes())
        .unwrap_or_else(|_| <HmacSha256 as hmac::digest::KeyInit>::new(&Default::default()));
    mac.update(message.as_bytes());
    mac
}

/// `hex(HMAC-SHA256(api_key, canonical string))`.
pub fn signature(api_key: &str, timestamp_secs: i64, method: &str, path_and_query: &str, body: &[u8]) -> String {
    let message = canonical_string(timestamp_secs, method, path_and_query, body);
    hex::encode(mac(api_key, &message).finalize().into_bytes())
}

/// The four headers to add to an outbound request, as `(name, value)` pairs.
pub fn sign(
    credentials: &ServiceCredentials,
    timestamp_secs: i64,
    method: &str,
    path_and_query: &str,
    body: &[u8],
) -> [(&'static str, String); 4] {
    [
        (HEADER_SERVICE_IDENTITY, credentials.identity.clone()),
        (HEADER_API_KEY, credentials.api_key.clone()),
        (HEADER_TIMESTAMP, timestamp_secs.to_string()),
        (
            HEADER_SIGNATURE,
            signature(&credentials.api_key, timestamp_secs, method, path_and_query, body),
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

/// The parts of an inbound request the signature covers.
#[derive(Debug, Clone, Copy)]
pub struct InboundRequest<'a> {
    pub method: &'a str,
    /// Exactly as received, e.g. `/api/v1/orders?limit=10`.
    pub path_and_query: &'a str,
    pub body: &'a [u8],
}

/// Why an inbound request's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("header {0} is missing; signed requests carry X-Service-Identity, X-Internal-API-Key, X-Request-Timestamp and X-Request-Signature")]
    MissingHeader(&'static str),
    #[error("service identity {0:?} is not known here; register its API key")]
    UnknownService(String),
    #[error("the API key does not match the one registered for {0:?}")]
    ApiKeyMismatch(String),
    #[error("X-Request-Timestamp {0:?} is not whole unix seconds")]
    BadTimestamp(String),
    #[error("request timestamp {timestamp} is {} s from now ({now}); at most {} s is accepted: check the sender's clock or a replay", now.abs_diff(*timestamp), SIGNATURE_SKEW_MAX.as_secs())]
    Stale { timestamp: i64, now: i64 },
    #[error("the signature does not match the request: the body, path, method or timestamp changed, or the wrong key signed it")]
    BadSignature,
}

/// Checks a signed request and returns the caller's identity.
///
/// `api_key_for(identity)` gives the key registered for a service; `now_secs`
/// is the receiver's clock in unix seconds. The cheap checks (headers,
/// timestamp window) come before any HMAC work.
pub fn verify<'a, 'k>(
    headers: &SignatureHeaders<'a>,
    request: &InboundRequest<'_>,
    api_key_for: impl Fn(&str) -> Option<&'k str>,
    now_secs: i64,
) -> Result<&'a str, VerifyError> {
    let identity = headers
        .identity
        .ok_or(VerifyError::MissingHeader(HEADER_SERVICE_IDENTITY))?;
    let presented_key = headers.api_key.ok_or(VerifyError::MissingHeader(HEADER_API_KEY))?;
    let timestamp_text = headers.timestamp.ok_or(VerifyError::MissingHeader(HEADER_TIMESTAMP))?;
    let signature_hex = headers.signature.ok_or(VerifyError::MissingHeader(HEADER_SIGNATURE))?;

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

    let api_key = api_key_for(identity).ok_or_else(|| VerifyError::UnknownService(identity.to_owned()))?;
    // Constant-time key comparison: HMAC both under a fixed key and compare the tags.
    let expected_tag = mac(api_key, "api-key-check").finalize().into_bytes();
    if mac(presented_key, "api-key-check").verify_slice(&expected_tag).is_err() {
        return Err(VerifyError::ApiKeyMismatch(identity.to_owned()));
    }

    let signature = hex::decode(signature_hex.trim()).map_err(|_| VerifyError::BadSignature)?;
    let message = canonical_string(timestamp, request.method, request.path_and_query, request.body);
    mac(api_key, &message)
        .verify_slice(&signature)
        .map_err(|_| VerifyError::BadSignature)?;
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_767_225_600;
    const PATH: &str = "/api/v1/balances/7/reserve";
    const BODY: &[u8] = br#"{"order_id":"o","amount":10.5,"idempotency_key":"o:reserve"}"#;

    fn creds() -> ServiceCredentials {
        ServiceCredentials::new("order_engine", "k3y")
    }

    fn keys(identity: &str) -> Option<&'static str> {
        (identity == "order_engine").then_some("k3y")
    }

    fn headers_of<'a>(signed: &'a [(&'static str, String); 4]) -> SignatureHeaders<'a> {
        SignatureHeaders::from_lookup(|name| signed.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str()))
    }

    fn request(body: &[u8]) -> InboundRequest<'_> {
        InboundRequest {
            method: "POST",
            path_and_query: PATH,
            body,
        }
    }

    #[test]
    fn the_canonical_string_is_the_documented_four_lines() {
        // Proves the exact message layout another service must reproduce.
        let text = canonical_string(NOW, "get", "/a?b=1", b"");
        assert_eq!(
            text,
            "1767225600\nGET\n/a?b=1\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn the_signature_matches_an_independent_hmac_vector() {
        // Proves the signature is plain HMAC-SHA256 (RFC 4231 test case 2) applied to the canonical string.
        let mut mac = HmacSha256::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let message = canonical_string(NOW, "POST", PATH, BODY);
        let mut direct = HmacSha256::new_from_slice(b"k3y").unwrap();
        direct.update(message.as_bytes());
        assert_eq!(
            signature("k3y", NOW, "POST", PATH, BODY),
            hex::encode(direct.finalize().into_bytes())
        );
    }

    #[test]
    fn a_signed_request_verifies_and_names_its_sender() {
        // Proves the round trip sign → verify, at the edges of the skew window too.
        let signed = sign(&creds(), NOW, "POST", PATH, BODY);
        assert_eq!(signed[0], ("X-Service-Identity", "order_engine".to_owned()));
        assert_eq!(signed[2], ("X-Request-Timestamp", NOW.to_string()));
        let headers = headers_of(&signed);
        assert_eq!(verify(&headers, &request(BODY), keys, NOW), Ok("order_engine"));
        assert_eq!(verify(&headers, &request(BODY), keys, NOW + 300), Ok("order_engine"));
        assert_eq!(verify(&headers, &request(BODY), keys, NOW - 300), Ok("order_engine"));
    }

    #[test]
    fn a_tampered_body_path_or_method_is_refused() {
        // Proves every part of the canonical string is covered by the signature.
        let signed = sign(&creds(), NOW, "POST", PATH, BODY);
        let headers = headers_of(&signed);
        let tampered = br#"{"order_id":"o","amount":1000.5,"idempotency_key":"o:reserve"}"#;
        assert_eq!(
            verify(&headers, &request(tampered), keys, NOW),
            Err(VerifyError::BadSignature)
        );
        let other_path = InboundRequest {
            path_and_query: "/api/v1/balances/8/reserve",
            ..request(BODY)
        };
        assert_eq!(verify(&headers, &other_path, keys, NOW), Err(VerifyError::BadSignature));
        let other_method = InboundRequest {
            method: "PUT",
            ..request(BODY)
        };
        assert_eq!(
            verify(&headers, &other_method, keys, NOW),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn a_signature_made_with_the_wrong_key_is_refused() {
        // Proves the key matters twice: the presented key and the key that signed.
        let wrong = ServiceCredentials::new("order_engine", "not-the-key");
        let signed = sign(&wrong, NOW, "POST", PATH, BODY);
        assert_eq!(
            verify(&headers_of(&signed), &request(BODY), keys, NOW),
            Err(VerifyError::ApiKeyMismatch("order_engine".into()))
        );

        let mut forged = sign(&creds(), NOW, "POST", PATH, BODY);
        forged[3].1 = signature("not-the-key", NOW, "POST", PATH, BODY);
        assert_eq!(
            verify(&headers_of(&forged), &request(BODY), keys, NOW),
            Err(VerifyError::BadSignature)
        );

        let mut garbage = sign(&creds(), NOW, "POST", PATH, BODY);
        garbage[3].1 = "zz-not-hex".into();
        assert_eq!(
            verify(&headers_of(&garbage), &request(BODY), keys, NOW),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn an_unknown_service_is_refused() {
        // Proves only registered identities are accepted.
        let stranger = ServiceCredentials::new("stranger", "k3y");
        let signed = sign(&stranger, NOW, "POST", PATH, BODY);
        assert_eq!(
            verify(&headers_of(&signed), &request(BODY), keys, NOW),
            Err(VerifyError::UnknownService("stranger".into()))
        );
    }

    #[test]
    fn timestamps_outside_the_skew_window_are_refused() {
        // Proves replays older than 300 s, and clocks 300 s ahead, are refused before any HMAC work.
        let signed = sign(&creds(), NOW, "POST", PATH, BODY);
        let headers = headers_of(&signed);
        assert_eq!(
            verify(&headers, &request(BODY), keys, NOW + 301),
            Err(VerifyError::Stale {
                timestamp: NOW,
                now: NOW + 301
            })
        );
        assert_eq!(
            verify(&headers, &request(BODY), keys, NOW - 301),
            Err(VerifyError::Stale {
                timestamp: NOW,
                now: NOW - 301
            })
        );
        let message = verify(&headers, &request(BODY), keys, NOW + 301)
            .unwrap_err()
            .to_string();
        assert!(message.contains("301 s") && message.contains("300 s"), "{message}");
    }

    #[test]
    fn a_malformed_timestamp_is_refused() {
        // Proves a timestamp that is not unix seconds is named as such.
        let mut signed = sign(&creds(), NOW, "POST", PATH, BODY);
        signed[2].1 = "2026-01-01T00:00:00Z".into();
        assert_eq!(
            verify(&headers_of(&signed), &request(BODY), keys, NOW),
            Err(VerifyError::BadTimestamp("2026-01-01T00:00:00Z".into()))
        );
    }

    #[test]
    fn each_missing_header_is_named() {
        // Proves a request lacking any of the four headers is refused with that header's name.
        let signed = sign(&creds(), NOW, "POST", PATH, BODY);
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
                verify(&headers, &request(BODY), keys, NOW),
                Err(VerifyError::MissingHeader(missing))
            );
        }
        assert_eq!(
            verify(&SignatureHeaders::default(), &request(BODY), keys, NOW),
            Err(VerifyError::MissingHeader(HEADER_SERVICE_IDENTITY))
        );
    }
}
