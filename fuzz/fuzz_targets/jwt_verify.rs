//! Fuzz target: bearer tokens through `JwtVerifier::verify` with a fixed
//! HS256 key: raw strings, and tokens built from fuzzed header and claims and
//! signed with the right key, so the claims checks are reached, not only the
//! signature check. Must never print the secret.
#![no_main]

use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::Utc;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use order_engine::auth::jwt::{JwtAlgorithm, JwtConfig, JwtVerifier};
use serde_json::{json, Map, Value};
use sha2::Sha256;
use uuid::Uuid;

const SECRET: &str = "fuzz-secret-of-at-least-thirty-two-bytes";
const ISSUER: &str = "issuer-fuzz";
const AUDIENCE: &str = "order-engine";
const LEEWAY_SECS: u64 = 30;

#[derive(Debug, Arbitrary)]
enum Text<'a> {
    Expected,
    Other(&'a str),
}

#[derive(Debug, Arbitrary)]
enum Aud<'a> {
    One(Text<'a>),
    Many(Vec<Text<'a>>),
    Json(&'a str),
}

#[derive(Debug, Arbitrary)]
enum Time<'a> {
    /// Seconds from now.
    FromNow(i32),
    Raw(i64),
    Json(&'a str),
}

#[derive(Debug, Arbitrary)]
struct Claims<'a> {
    sub: Option<Result<u128, &'a str>>,
    iss: Option<Text<'a>>,
    aud: Option<Aud<'a>>,
    exp: Option<Time<'a>>,
    nbf: Option<Time<'a>>,
    extra: Option<(&'a str, &'a str)>,
}

#[derive(Debug, Arbitrary)]
enum Token<'a> {
    Raw(&'a str),
    /// Raw header and claims bytes, signed with the right key or not at all.
    Parts {
        header: &'a [u8],
        claims: &'a [u8],
        sign: bool,
    },
    Built {
        alg: Text<'a>,
        claims: Claims<'a>,
        sign: bool,
    },
}

fn text(t: &Text<'_>, expected: &str) -> Value {
    match t {
        Text::Expected => json!(expected),
        Text::Other(s) => json!(s),
    }
}

fn raw_json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|_| json!(s))
}

fn time(t: &Time<'_>, now: i64) -> Value {
    match t {
        Time::FromNow(secs) => json!(now + i64::from(*secs)),
        Time::Raw(secs) => json!(secs),
        Time::Json(s) => raw_json(s),
    }
}

fn claims_json(c: &Claims<'_>, now: i64) -> Value {
    let mut map = Map::new();
    if let Some((key, value)) = c.extra {
        map.insert(key.to_owned(), raw_json(value));
    }
    if let Some(sub) = &c.sub {
        let sub = match sub {
            Ok(n) => Uuid::from_u128(*n).to_string(),
            Err(s) => (*s).to_owned(),
        };
        map.insert("sub".into(), json!(sub));
    }
    if let Some(iss) = &c.iss {
        map.insert("iss".into(), text(iss, ISSUER));
    }
    if let Some(aud) = &c.aud {
        let aud = match aud {
            Aud::One(one) => text(one, AUDIENCE),
            Aud::Many(many) => Value::Array(many.iter().map(|t| text(t, AUDIENCE)).collect()),
            Aud::Json(s) => raw_json(s),
        };
        map.insert("aud".into(), aud);
    }
    if let Some(exp) = &c.exp {
        map.insert("exp".into(), time(exp, now));
    }
    if let Some(nbf) = &c.nbf {
        map.insert("nbf".into(), time(nbf, now));
    }
    Value::Object(map)
}

fn token(header: &[u8], claims: &[u8], sign: bool) -> String {
    let signing_input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
    let signature = if sign {
        let mut mac = <Hmac<Sha256>>::new_from_slice(SECRET.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        mac.update(signing_input.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    } else {
        String::new()
    };
    format!("{signing_input}.{signature}")
}

fn verifier() -> JwtVerifier {
    let config = JwtConfig {
        algorithm: JwtAlgorithm::Hs256 { secret: SECRET.into() },
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        leeway: Duration::from_secs(LEEWAY_SECS),
    };
    JwtVerifier::new(&config).unwrap_or_else(|e| panic!("the fuzz key is valid: {e}"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = Token::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    // Errors may quote the token's header or claims: an input that carries
    // the secret itself may see it again.
    let input_has_secret = data.windows(SECRET.len()).any(|w| w == SECRET.as_bytes());
    let before = Utc::now().timestamp();
    let (token, signed) = match &input {
        Token::Raw(raw) => ((*raw).to_owned(), false),
        Token::Parts { header, claims, sign } => (token(header, claims, *sign), *sign),
        Token::Built { alg, claims, sign } => {
            let header = json!({"alg": text(alg, "HS256"), "typ": "JWT"});
            let claims = claims_json(claims, before);
            (
                token(header.to_string().as_bytes(), claims.to_string().as_bytes(), *sign),
                *sign,
            )
        }
    };
    let verdict = verifier().verify(&token);
    let after = Utc::now().timestamp();
    let claims = match verdict {
        Ok(claims) => claims,
        Err(error) => {
            let part_has_secret = token.split('.').any(|part| {
                let bytes = URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).unwrap_or_default();
                bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes())
            });
            if !input_has_secret && !part_has_secret {
                assert!(!error.to_string().contains(SECRET), "an error message shows the secret");
            }
            return;
        }
    };
    // Accepted: only a token this key signed, with HS256 named in its header,
    // and claims that say this issuer, this audience, a UUID subject and a
    // future expiry.
    assert!(signed, "accepted a token not signed with the key: {token}");
    let mut parts = token.split('.');
    let decode = |part: Option<&str>| -> Value {
        let bytes = URL_SAFE_NO_PAD
            .decode(part.unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"));
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("accepted a part that is not JSON: {e}"))
    };
    let header = decode(parts.next());
    let payload = decode(parts.next());
    assert_eq!(header["alg"], "HS256", "accepted another algorithm: {header}");
    assert_eq!(payload["sub"].as_str().map(Uuid::parse_str), Some(Ok(claims.user_id)));
    assert_eq!((claims.issuer.as_str(), &payload["iss"]), (ISSUER, &json!(ISSUER)));
    assert!(
        claims.audience.iter().any(|a| a == AUDIENCE),
        "accepted audience {:?}",
        claims.audience
    );
    let leeway = i64::try_from(LEEWAY_SECS).unwrap_or_default();
    assert!(
        claims.expires_at.timestamp() + leeway >= before,
        "accepted an expired token: {payload}"
    );
    if let Some(nbf) = payload.get("nbf").and_then(Value::as_i64) {
        assert!(nbf - leeway <= after, "accepted a token not valid before {nbf}");
    }
});
