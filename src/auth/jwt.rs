//! Bearer JWTs for end users: verification with one pinned algorithm
//! (HS256 or RS256), and minting of development tokens.
//!
//! Must never accept a token whose header names another algorithm than the
//! configured one (`none` included, and HS256 presented to an RS256 verifier,
//! the classic key-confusion attack), nor one without `exp`, `iss`, `aud` and a
//! UUID `sub`. Never logs or prints a secret or a private key.

use std::time::Duration;

use chrono::{DateTime, Utc};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{AuthConfigError, AuthError};

/// The HS256 secret of the embedded default. **Development only**: it is in
/// the source, so anyone can mint tokens with it. Production configures its
/// own secret (env [`JWT_SECRET_ENV`] or the config service) or RS256.
pub const DEV_JWT_SECRET: &str = "order-engine-development-only-secret-do-not-use-in-production";
/// Overrides [`DEV_JWT_SECRET`] in the embedded default.
pub const JWT_SECRET_ENV: &str = "ORDER_ENGINE_JWT_SECRET";
/// `iss` of tokens in the embedded default.
pub const DEV_ISSUER: &str = "order-engine-dev";
/// `aud` the engine expects in the embedded default.
pub const DEV_AUDIENCE: &str = "order-engine";
/// Clock difference tolerated on `exp` and `nbf` between issuer and engine.
pub const LEEWAY_DEFAULT: Duration = Duration::from_secs(30);
/// Lifetime of a token minted by `order-engine token` unless told otherwise.
pub const DEV_TOKEN_TTL_DEFAULT: Duration = Duration::from_secs(3600);
/// RFC 7518 §3.2: an HS256 key must be at least as long as the hash output.
pub const HS256_SECRET_BYTES_MIN: usize = 32;

/// How tokens are signed, and the keys for it.
#[derive(Clone, PartialEq, Eq)]
pub enum JwtAlgorithm {
    /// A shared secret; whoever verifies can also mint.
    Hs256 { secret: String },
    /// A key pair: the engine needs only the issuer's public key. The private
    /// key is for minting development tokens and is normally absent.
    Rs256 {
        public_key_pem: String,
        private_key_pem: Option<String>,
    },
}

impl JwtAlgorithm {
    fn pinned(&self) -> Algorithm {
        match self {
            Self::Hs256 { .. } => Algorithm::HS256,
            Self::Rs256 { .. } => Algorithm::RS256,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Hs256 { .. } => "HS256",
            Self::Rs256 { .. } => "RS256",
        }
    }
}

impl std::fmt::Debug for JwtAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets and private keys are redacted: configs end up in logs.
        match self {
            Self::Hs256 { .. } => f.debug_struct("Hs256").field("secret", &"<redacted>").finish(),
            Self::Rs256 { private_key_pem, .. } => f
                .debug_struct("Rs256")
                .field("public_key_pem", &"<pem>")
                .field("private_key_pem", &private_key_pem.as_ref().map(|_| "<redacted>"))
                .finish(),
        }
    }
}

/// What a valid token must look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtConfig {
    pub algorithm: JwtAlgorithm,
    /// The only accepted `iss`.
    pub issuer: String,
    /// This engine's name in `aud`; a token must list it.
    pub audience: String,
    /// Tolerated clock difference on `exp` and `nbf`.
    pub leeway: Duration,
}

impl JwtConfig {
    /// The embedded default: HS256 with `secret` or, when None, the
    /// development-only [`DEV_JWT_SECRET`].
    pub fn development(secret: Option<String>) -> Self {
        let secret = secret.unwrap_or_else(|| {
            tracing::warn!(
                "JWT: using the built-in development secret; set {JWT_SECRET_ENV} or configure RS256 outside development"
            );
            DEV_JWT_SECRET.to_owned()
        });
        Self {
            algorithm: JwtAlgorithm::Hs256 { secret },
            issuer: DEV_ISSUER.to_owned(),
            audience: DEV_AUDIENCE.to_owned(),
            leeway: LEEWAY_DEFAULT,
        }
    }

    /// [`JwtConfig::development`] with the secret from [`JWT_SECRET_ENV`] when set.
    pub fn development_from_env() -> Self {
        Self::development(std::env::var(JWT_SECRET_ENV).ok().filter(|s| !s.is_empty()))
    }
}

/// What the engine takes from a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// `sub`, the user the token speaks for.
    pub user_id: Uuid,
    pub issuer: String,
    pub audience: Vec<String>,
    pub expires_at: DateTime<Utc>,
}

/// `aud` is a string or an array of strings (RFC 7519 §4.1.3).
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// Optional here so that the library's own check reports a missing claim by
/// name (it deserializes before it validates); present after validation.
#[derive(Deserialize)]
struct RawClaims {
    sub: Option<String>,
    iss: Option<String>,
    aud: Option<Audience>,
    exp: Option<i64>,
}

#[derive(Serialize)]
struct MintedClaims<'a> {
    sub: String,
    iss: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
}

/// Checks Bearer tokens against one [`JwtConfig`].
pub struct JwtVerifier {
    algorithm: Algorithm,
    key: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithm", &self.algorithm)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// Builds the verifier; a short secret or an unreadable key is refused
    /// here, at start, rather than on the first request.
    pub fn new(config: &JwtConfig) -> Result<Self, AuthConfigError> {
        if config.issuer.is_empty() || config.audience.is_empty() {
            return Err(AuthConfigError::EmptyIssuerOrAudience);
        }
        let key = match &config.algorithm {
            JwtAlgorithm::Hs256 { secret } => {
                check_secret(secret)?;
                DecodingKey::from_secret(secret.as_bytes())
            }
            JwtAlgorithm::Rs256 { public_key_pem, .. } => DecodingKey::from_rsa_pem(public_key_pem.as_bytes())
                .map_err(|e| AuthConfigError::InvalidKey {
                    which: "public",
                    reason: e.to_string(),
                })?,
        };
        let algorithm = config.algorithm.pinned();
        // One algorithm, never the token's choice: `Validation::new` lists only this one.
        let mut validation = Validation::new(algorithm);
        validation.algorithms = vec![algorithm];
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&[config.issuer.as_str()]);
        validation.set_audience(&[config.audience.as_str()]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.leeway = config.leeway.as_secs();
        Ok(Self {
            algorithm,
            key,
            validation,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
        })
    }

    /// Verifies signature, algorithm, `exp` (with leeway), `nbf` if present,
    /// `iss`, `aud`, and that `sub` is a UUID.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        // The header is read first only to name the failure well: a header the
        // library cannot parse is typically `alg: none` or an exotic algorithm.
        jsonwebtoken::decode_header(token).map_err(|_| {
            AuthError::InvalidToken(
                "its header is malformed or names an algorithm this server never accepts (such as `none`)".into(),
            )
        })?;
        let data = jsonwebtoken::decode::<RawClaims>(token, &self.key, &self.validation)
            .map_err(|e| self.classify(e.into_kind()))?;
        let raw = data.claims;
        let missing = |claim: &str| AuthError::MissingClaim(claim.to_owned());
        let sub = raw.sub.ok_or_else(|| missing("sub"))?;
        let exp = raw.exp.ok_or_else(|| missing("exp"))?;
        let issuer = raw.iss.ok_or_else(|| missing("iss"))?;
        let audience = raw.aud.ok_or_else(|| missing("aud"))?;
        let user_id = Uuid::parse_str(&sub).map_err(|_| AuthError::SubjectNotUuid(sub.clone()))?;
        let expires_at = DateTime::from_timestamp(exp, 0)
            .ok_or_else(|| AuthError::InvalidToken(format!("exp {exp} is not a representable time")))?;
        Ok(Claims {
            user_id,
            issuer,
            audience: match audience {
                Audience::One(one) => vec![one],
                Audience::Many(many) => many,
            },
            expires_at,
        })
    }

    fn classify(&self, kind: ErrorKind) -> AuthError {
        match kind {
            ErrorKind::ExpiredSignature => AuthError::TokenExpired,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName | ErrorKind::MissingAlgorithm => {
                AuthError::WrongAlgorithm {
                    expected: algorithm_name(self.algorithm),
                }
            }
            ErrorKind::InvalidIssuer => AuthError::WrongIssuer {
                expected: self.issuer.clone(),
            },
            ErrorKind::InvalidAudience => AuthError::WrongAudience {
                expected: self.audience.clone(),
            },
            ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(claim),
            ErrorKind::InvalidSignature => {
                AuthError::InvalidToken("the signature does not match; the token was signed with another key".into())
            }
            ErrorKind::ImmatureSignature => {
                AuthError::InvalidToken("it is not valid yet (nbf is in the future)".into())
            }
            ErrorKind::InvalidClaimFormat(claim) => AuthError::InvalidToken(format!("claim `{claim}` is malformed")),
            ErrorKind::Json(e) => AuthError::InvalidToken(format!("its claims are not as expected: {e}")),
            ErrorKind::Base64(_) | ErrorKind::Utf8(_) | ErrorKind::InvalidToken => {
                AuthError::InvalidToken("it is not a well-formed JWT (three base64url parts)".into())
            }
            other => AuthError::InvalidToken(format!("{other:?}")),
        }
    }
}

fn algorithm_name(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::RS256 => "RS256",
        _ => "HS256",
    }
}

fn check_secret(secret: &str) -> Result<(), AuthConfigError> {
    if secret.len() < HS256_SECRET_BYTES_MIN {
        return Err(AuthConfigError::SecretTooShort {
            len: secret.len(),
            min: HS256_SECRET_BYTES_MIN,
        });
    }
    Ok(())
}

/// Mints a token for `user_id` valid from `issued_at` for `ttl`, signed as
/// `config` says (HS256, or RS256 when a private key is configured).
pub fn mint_token(
    config: &JwtConfig,
    user_id: Uuid,
    issued_at: DateTime<Utc>,
    ttl: Duration,
) -> Result<String, AuthConfigError> {
    let key = match &config.algorithm {
        JwtAlgorithm::Hs256 { secret } => {
            check_secret(secret)?;
            EncodingKey::from_secret(secret.as_bytes())
        }
        JwtAlgorithm::Rs256 {
            private_key_pem: Some(pem),
            ..
        } => EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| AuthConfigError::InvalidKey {
            which: "private",
            reason: e.to_string(),
        })?,
        JwtAlgorithm::Rs256 {
            private_key_pem: None, ..
        } => return Err(AuthConfigError::NoSigningKey),
    };
    let ttl_secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
    let claims = MintedClaims {
        sub: user_id.to_string(),
        iss: &config.issuer,
        aud: &config.audience,
        iat: issued_at.timestamp(),
        exp: issued_at.timestamp().saturating_add(ttl_secs),
    };
    jsonwebtoken::encode(&Header::new(config.algorithm.pinned()), &claims, &key)
        .map_err(|e| AuthConfigError::Mint(e.to_string()))
}

/// A token for `user_id` valid from now for `ttl`; what `order-engine token
/// --user <uuid>` prints. Meant for development with the embedded default.
pub fn mint_dev_token(config: &JwtConfig, user_id: Uuid, ttl: Duration) -> Result<String, AuthConfigError> {
    mint_token(config, user_id, Utc::now(), ttl)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) const TEST_SECRET: &str = "test-secret-of-at-least-thirty-two-bytes!";
    pub(crate) const RSA_PRIVATE_PEM: &str = include_str!("../../tests/fixtures/jwt_rs256_test_private.pem");
    pub(crate) const RSA_PUBLIC_PEM: &str = include_str!("../../tests/fixtures/jwt_rs256_test_public.pem");

    pub(crate) fn hs256() -> JwtConfig {
        JwtConfig {
            algorithm: JwtAlgorithm::Hs256 {
                secret: TEST_SECRET.into(),
            },
            issuer: "issuer-test".into(),
            audience: "order-engine".into(),
            leeway: Duration::from_secs(0),
        }
    }

    fn rs256() -> JwtConfig {
        JwtConfig {
            algorithm: JwtAlgorithm::Rs256 {
                public_key_pem: RSA_PUBLIC_PEM.into(),
                private_key_pem: Some(RSA_PRIVATE_PEM.into()),
            },
            ..hs256()
        }
    }

    fn user() -> Uuid {
        Uuid::parse_str("6f1c1d2e-7a3b-4c5d-9e8f-0a1b2c3d4e5f").unwrap()
    }

    fn now() -> i64 {
        Utc::now().timestamp()
    }

    /// Signs arbitrary claims with HS256 and the test secret.
    fn hs256_token(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(TEST_SECRET.as_bytes()),
        )
        .unwrap()
    }

    fn good_claims() -> serde_json::Value {
        json!({"sub": user().to_string(), "iss": "issuer-test", "aud": "order-engine", "exp": now() + 600})
    }

    fn base64url(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }

    #[test]
    fn a_valid_hs256_token_names_its_user() {
        // Proves the happy path: signature, exp, iss, aud checked, sub parsed as the user id.
        let verifier = JwtVerifier::new(&hs256()).unwrap();
        let token = mint_dev_token(&hs256(), user(), Duration::from_secs(60)).unwrap();
        let claims = verifier.verify(&token).unwrap();
        assert_eq!(claims.user_id, user());
        assert_eq!(claims.issuer, "issuer-test");
        assert_eq!(claims.audience, vec!["order-engine".to_owned()]);
        assert!(claims.expires_at > Utc::now());
    }

    #[test]
    fn an_expired_token_is_refused_as_expired() {
        // Proves exp is enforced and the caller is told the token expired, not that it is garbage.
        let verifier = JwtVerifier::new(&hs256()).unwrap();
        let issued = Utc::now() - chrono::Duration::hours(2);
        let token = mint_token(&hs256(), user(), issued, Duration::from_secs(3600)).unwrap();
        assert_eq!(verifier.verify(&token), Err(AuthError::TokenExpired));
    }

    #[test]
    fn leeway_accepts_a_token_just_past_exp() {
        // Proves the configured leeway absorbs small clock differences.
        let config = JwtConfig {
            leeway: Duration::from_secs(120),
            ..hs256()
        };
        let verifier = JwtVerifier::new(&config).unwrap();
        let token = hs256_token(
            json!({"sub": user().to_string(), "iss": "issuer-test", "aud": "order-engine", "exp": now() - 30}),
        );
        assert!(verifier.verify(&token).is_ok());
    }

    #[test]
    fn a_token_from_another_issuer_is_refused() {
        // Proves iss is checked against the single configured issuer.
        let verifier = JwtVerifier::new(&hs256()).unwrap();
        let mut claims = good_claims();
        claims["iss"] = json!("someone-else");
        assert_eq!(
            verifier.verify(&hs256_token(claims)),
            Err(AuthError::WrongIssuer {
                expected: "issuer-test".into()
            })
        );
    }

    #[test]
    fn a_token_for_another_audience_is_refused() {
        // Proves aud must list this engine, as a string or in an array.
        let verifier = JwtVerifier::new(&hs256()).unwrap();
        let mut claims = good_claims();
        claims["aud"] = json!("billing");
        assert_eq!(
            verifier.verify(&hs256_token(claims.clone())),
            Err(AuthError::WrongAudience {
                expected: "order-engine".into()
            })
        );
        claims["aud"] = json!(["billing", "order-engine"]);
        assert!(verifier.verify(&hs256_token(claims)).is_ok());
    }

    #[test]
    fn each_required_claim_is_required() {
        // Proves a token without exp (or iss, aud, sub) is refused, naming the claim.
        let verifier = JwtVerifier::new(&hs256()).unwrap();
        for claim in ["exp", "iss", "aud", "sub"] {
            let mut claims = good_claims();
            claims.as_object_mut().unwrap().remove(claim);
            assert_eq!(
                verifier.verify(&hs256_token(claims)),
                Err(AuthError::MissingClaim(claim.into())),
                "{claim}"
            );
        }
    }

    #[test]
    fn an_unsigned_alg_none_token_is_refused() {
        // Proves `alg: none` (no signature at all) is never accepted, whatever its claims.
        let verifier = JwtVerifier::new(&hs256()).unwrap();
        let header = base64url(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = base64url(good_claims().to_string().as_bytes());
        for token in [format!("{header}.{payload}."), format!("{header}.{payload}")] {
            assert!(
                matches!(verifier.verify(&token), Err(AuthError::InvalidToken(_))),
                "{token}"
            );
        }
    }

    #[test]
    fn the_algorithm_is_pinned_in_both_directions() {
        // Proves key confusion fails: an HS256 token (even one keyed with the RSA public key
        // PEM) is refused by an RS256 verifier, and an RS256 token by an HS256 verifier.
        let rs_verifier = JwtVerifier::new(&rs256()).unwrap();
        let hs_token = mint_dev_token(&hs256(), user(), Duration::from_secs(60)).unwrap();
        assert_eq!(
            rs_verifier.verify(&hs_token),
            Err(AuthError::WrongAlgorithm { expected: "RS256" })
        );
        let confused = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &good_claims(),
            &EncodingKey::from_secret(RSA_PUBLIC_PEM.as_bytes()),
        )
        .unwrap();
        assert_eq!(
            rs_verifier.verify(&confused),
            Err(AuthError::WrongAlgorithm { expected: "RS256" })
        );

        let hs_verifier = JwtVerifier::new(&hs256()).unwrap();
        let rs_token = mint_dev_token(&rs256(), user(), Duration::from_secs(60)).unwrap();
        assert_eq!(
            hs_verifier.verify(&rs_token),
            Err(AuthError::WrongAlgorithm { expected: "HS256" })
        );
    }

    #[test]
    fn a_subject_that_is_not_a_uuid_is_refused() {
        // Proves sub must be a user id; an email or a numeric id is not one.
        let verifier = JwtVerifier::new(&hs256()).unwrap();
        for sub in ["alice@example.com", "42"] {
            let mut claims = good_claims();
            claims["sub"] = json!(sub);
            assert_eq!(
                verifier.verify(&hs256_token(claims)),
                Err(AuthError::SubjectNotUuid(sub.into()))
            );
        }
    }

    #[test]
    fn a_valid_rs256_token_verifies_with_the_public_key_only() {
        // Proves RS256 end to end with the committed test key pair; the verifier holds no private key.
        let public_only = JwtConfig {
            algorithm: JwtAlgorithm::Rs256 {
                public_key_pem: RSA_PUBLIC_PEM.into(),
                private_key_pem: None,
            },
            ..hs256()
        };
        let verifier = JwtVerifier::new(&public_only).unwrap();
        let token = mint_dev_token(&rs256(), user(), Duration::from_secs(60)).unwrap();
        assert_eq!(verifier.verify(&token).unwrap().user_id, user());
        assert_eq!(
            mint_dev_token(&public_only, user(), Duration::from_secs(60)),
            Err(AuthConfigError::NoSigningKey)
        );
    }

    #[test]
    fn a_token_signed_with_another_secret_is_refused() {
        // Proves the signature is checked, not just the claims.
        let verifier = JwtVerifier::new(&hs256()).unwrap();
        let other = JwtConfig {
            algorithm: JwtAlgorithm::Hs256 {
                secret: "another-secret-that-is-also-32-bytes-long".into(),
            },
            ..hs256()
        };
        let token = mint_dev_token(&other, user(), Duration::from_secs(60)).unwrap();
        assert!(matches!(verifier.verify(&token), Err(AuthError::InvalidToken(_))));
        assert!(matches!(verifier.verify("not.a.jwt"), Err(AuthError::InvalidToken(_))));
    }

    #[test]
    fn weak_configuration_is_refused_at_start() {
        // Proves a short HS256 secret and a broken PEM fail when the verifier is built.
        let short = JwtConfig {
            algorithm: JwtAlgorithm::Hs256 { secret: "short".into() },
            ..hs256()
        };
        assert!(matches!(
            JwtVerifier::new(&short),
            Err(AuthConfigError::SecretTooShort { len: 5, min: 32 })
        ));
        let broken = JwtConfig {
            algorithm: JwtAlgorithm::Rs256 {
                public_key_pem: "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n".into(),
                private_key_pem: None,
            },
            ..hs256()
        };
        assert!(matches!(
            JwtVerifier::new(&broken),
            Err(AuthConfigError::InvalidKey { which: "public", .. })
        ));
        assert!(JwtVerifier::new(&JwtConfig::development(None)).is_ok());
    }

    #[test]
    fn debug_output_redacts_secrets() {
        // Proves a config logged with {:?} shows no secret or private key.
        let text = format!("{:?} {:?}", hs256(), rs256());
        assert!(!text.contains(TEST_SECRET) && !text.contains("PRIVATE KEY"), "{text}");
    }
}
