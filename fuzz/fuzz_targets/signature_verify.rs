//! Fuzz target: seed 001's inbound signature check (`clients::signing::verify`)
//! on arbitrary headers and requests, with a fixed key registry and clock.
//! Must never compare a secret with `==` on the engine's behalf: it only
//! checks what `verify` decided.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use order_engine::clients::config::ServiceCredentials;
use order_engine::clients::signing::{
    sign, signature, verify, SignatureHeaders, SignedRequest, VerifyError, SIGNATURE_SKEW_MAX,
};

const NOW: i64 = 1_767_225_600;
const IDENTITY: &str = "algo_engine";
const API_KEY: &str = "fuzz-api-key-of-algo-engine";
const SECRET: &str = "fuzz-signing-secret-of-algo-engine-0123456789";

fn credentials() -> &'static ServiceCredentials {
    static CREDENTIALS: std::sync::OnceLock<ServiceCredentials> = std::sync::OnceLock::new();
    CREDENTIALS.get_or_init(|| ServiceCredentials::new(IDENTITY, API_KEY, SECRET))
}

fn registered(identity: &str) -> Option<&'static ServiceCredentials> {
    (identity == IDENTITY).then(credentials)
}

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    identity: Option<&'a str>,
    api_key: Option<&'a str>,
    timestamp: Option<&'a str>,
    signature: Option<&'a str>,
    method: &'a str,
    path_and_query: &'a str,
    body: &'a [u8],
    user_id: Option<&'a str>,
    /// Sign the request properly at NOW + skew, then verify it as sent and tampered.
    signed_skew_secs: Option<i16>,
    tampered_body: &'a [u8],
}

fuzz_target!(|input: Input<'_>| {
    let request = SignedRequest {
        method: input.method,
        path_and_query: input.path_and_query,
        body: input.body,
        user_id: input.user_id,
    };
    let headers = SignatureHeaders {
        identity: input.identity,
        api_key: input.api_key,
        timestamp: input.timestamp,
        signature: input.signature,
    };
    if let Ok(verified) = verify(&headers, &request, registered, NOW) {
        // Accepted: only with the registered identity and key, in the window,
        // and a signature that is the HMAC of exactly this request under the
        // secret, which was never sent.
        assert_eq!(verified.identity, IDENTITY);
        assert_eq!(input.api_key, Some(API_KEY));
        let timestamp: i64 = input
            .timestamp
            .unwrap_or_default()
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(NOW.abs_diff(timestamp) <= SIGNATURE_SKEW_MAX.as_secs());
        let expected = signature(SECRET, timestamp, IDENTITY, &request);
        let presented = hex::decode(input.signature.unwrap_or_default().trim()).unwrap_or_default();
        assert_eq!(
            hex::encode(presented),
            expected,
            "accepted a signature that is not this request's"
        );
    }

    // sign ∘ verify: what the outbound signer produces verifies, and any
    // change to the body after signing is refused.
    if let Some(skew) = input.signed_skew_secs {
        let at = NOW + i64::from(skew);
        let signed = sign(credentials(), at, &request);
        let lookup = |name: &str| signed.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str());
        let headers = SignatureHeaders::from_lookup(lookup);
        let verdict = verify(&headers, &request, registered, NOW).map(|v| v.identity);
        let line_break = input.user_id.is_some_and(|u| u.contains(['\n', '\r']));
        if line_break {
            assert_eq!(verdict, Err(VerifyError::LineBreak("X-User-Id")));
        } else if NOW.abs_diff(at) <= SIGNATURE_SKEW_MAX.as_secs() {
            assert_eq!(verdict, Ok(IDENTITY), "a request signed at {at} must verify");
            let tampered = SignedRequest {
                body: input.tampered_body,
                ..request
            };
            let verdict = verify(&headers, &tampered, registered, NOW).map(|v| v.identity);
            if input.tampered_body == input.body {
                assert_eq!(verdict, Ok(IDENTITY));
            } else {
                assert_eq!(
                    verdict,
                    Err(VerifyError::BadSignature),
                    "a changed body must be refused"
                );
            }
        } else {
            assert_eq!(
                verdict,
                Err(VerifyError::Stale {
                    timestamp: at,
                    now: NOW
                })
            );
        }
    }
});
