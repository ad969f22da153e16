//! Who is calling: end users with a Bearer JWT (`jwt`), other services with
//! seed 001's HMAC-signed requests and permission table (`internal`), and the
//! actix-web pieces that put both in front of a route (`extractor`).
//!
//! Must never let a request through on a credential it could not check: every
//! failure is an [`AuthError`], which the HTTP layer (`api::problem`) turns
//! into a 401, 403 or 413 problem. Secrets are never logged or printed.

pub mod extractor;
pub mod internal;
pub mod jwt;

use uuid::Uuid;

use crate::clients::signing::VerifyError;

pub use extractor::{
    requires, verify_signed_requests, AuthenticatedUser, Authenticator, Authorized, Caller, NotText, Presented,
    RequiredPermission, HEADER_GATEWAY_SECRET, HEADER_USER_ID, SIGNED_BODY_BYTES_MAX,
};
pub use internal::{authorize, permissions_of, InternalVerifier, Permission, ServiceKeys, AUTHORIZED_SERVICES};
pub use jwt::{mint_dev_token, mint_token, Claims, JwtAlgorithm, JwtConfig, JwtVerifier};

/// Why a request's credentials were refused. Each message says what the
/// caller should change. Statuses: [`AuthError::status`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials: send `Authorization: Bearer <token>`, or sign the request as a service (X-Service-Identity, X-Internal-API-Key, X-Request-Timestamp, X-Request-Signature)")]
    MissingCredentials,
    #[error("the Authorization header must be `Bearer <token>`")]
    MalformedAuthorization,
    #[error("the token has expired; obtain a new one")]
    TokenExpired,
    #[error("the token is signed with another algorithm than {expected}, the only one this server accepts")]
    WrongAlgorithm { expected: &'static str },
    #[error("the token was not issued by {expected:?}")]
    WrongIssuer { expected: String },
    #[error("the token is not meant for this service (audience {expected:?})")]
    WrongAudience { expected: String },
    #[error("the token lacks the required claim `{0}`")]
    MissingClaim(String),
    #[error("the token's subject {0:?} is not a user id (a UUID)")]
    SubjectNotUuid(String),
    #[error("the token is not valid: {0}")]
    InvalidToken(String),
    #[error("signed request refused: {0}")]
    Signature(#[from] VerifyError),
    #[error(
        "this signed request was already received; sign every request afresh (a new timestamp gives a new signature)"
    )]
    Replayed,
    #[error("too many signed requests in the last 300 s to remember ({entries_max}); retry shortly")]
    ReplayCacheFull { entries_max: usize },
    #[error("a signed internal request must name the user it acts for in X-User-Id, and sign it")]
    MissingUserId,
    #[error("X-User-Id {0:?} is not a user id (a UUID)")]
    InvalidUserId(String),
    #[error("X-User-Id {header} and the bearer token's subject {token} name different users")]
    UserMismatch { header: Uuid, token: Uuid },
    #[error("this server does not trust gateway headers (ORDER_SERVICE_TRUST_GATEWAY_HEADERS is off): drop X-Gateway-Secret and send `Authorization: Bearer <token>`")]
    GatewayNotTrusted,
    #[error("the gateway secret in X-Gateway-Secret is not the one this server shares with the API gateway")]
    GatewaySecretInvalid,
    #[error("a gateway request must name the user it acts for in X-User-Id (a UUID)")]
    GatewayUserMissing,
    #[error("the body of a signed request is larger than {limit_bytes} bytes")]
    BodyTooLarge { limit_bytes: usize },
    #[error("the request body could not be read: {0}")]
    BodyUnreadable(String),
    #[error("service {identity:?} may not {permission}; its permissions: {}", permissions_of(identity).iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", "))]
    Forbidden { identity: String, permission: Permission },
    #[error("authentication is not set up on this server: {0}")]
    NotConfigured(&'static str),
}

/// How an auth failure is answered over HTTP, without depending on actix here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// 401: the caller is not who it needs to prove it is.
    Unauthenticated,
    /// 403: the caller is known but not allowed.
    Forbidden,
    /// 400: the request itself is broken.
    BadRequest,
    /// 413: the signed body is over the limit.
    TooLarge,
    /// 503: retry later.
    Busy,
    /// 500: a server set-up error.
    ServerError,
}

impl AuthError {
    pub fn failure(&self) -> AuthFailure {
        match self {
            Self::Forbidden { .. } => AuthFailure::Forbidden,
            Self::BodyTooLarge { .. } => AuthFailure::TooLarge,
            Self::BodyUnreadable(_) => AuthFailure::BadRequest,
            Self::ReplayCacheFull { .. } => AuthFailure::Busy,
            Self::NotConfigured(_) => AuthFailure::ServerError,
            Self::MissingCredentials
            | Self::MalformedAuthorization
            | Self::TokenExpired
            | Self::WrongAlgorithm { .. }
            | Self::WrongIssuer { .. }
            | Self::WrongAudience { .. }
            | Self::MissingClaim(_)
            | Self::SubjectNotUuid(_)
            | Self::InvalidToken(_)
            | Self::Signature(_)
            | Self::Replayed
            | Self::MissingUserId
            | Self::InvalidUserId(_)
            | Self::UserMismatch { .. }
            | Self::GatewayNotTrusted
            | Self::GatewaySecretInvalid
            | Self::GatewayUserMissing => AuthFailure::Unauthenticated,
        }
    }

    /// A stable, URL-safe name for the problem `type` URI.
    pub fn slug(&self) -> &'static str {
        match self {
            Self::MissingCredentials => "missing-credentials",
            Self::MalformedAuthorization => "malformed-authorization",
            Self::TokenExpired => "token-expired",
            Self::WrongAlgorithm { .. } => "token-algorithm-refused",
            Self::WrongIssuer { .. } => "token-issuer-refused",
            Self::WrongAudience { .. } => "token-audience-refused",
            Self::MissingClaim(_) => "token-claim-missing",
            Self::SubjectNotUuid(_) => "token-subject-invalid",
            Self::InvalidToken(_) => "token-invalid",
            Self::Signature(VerifyError::Stale { .. }) => "signature-stale",
            Self::Signature(VerifyError::MissingHeader(_)) => "signature-missing",
            Self::Signature(VerifyError::UnknownService(_)) => "service-unknown",
            Self::Signature(_) => "signature-invalid",
            Self::Replayed => "request-replayed",
            Self::ReplayCacheFull { .. } => "replay-cache-full",
            Self::MissingUserId => "user-id-missing",
            Self::InvalidUserId(_) => "user-id-invalid",
            Self::UserMismatch { .. } => "user-id-mismatch",
            Self::GatewayNotTrusted => "gateway-not-trusted",
            Self::GatewaySecretInvalid => "gateway-secret-invalid",
            Self::GatewayUserMissing => "gateway-user-missing",
            Self::BodyTooLarge { .. } => "body-too-large",
            Self::BodyUnreadable(_) => "body-unreadable",
            Self::Forbidden { .. } => "permission-denied",
            Self::NotConfigured(_) => "internal-error",
        }
    }
}

/// Why an auth component could not be built from its configuration. Raised at
/// start, never per request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthConfigError {
    #[error("the HS256 secret is {len} bytes; at least {min} are required (RFC 7518 §3.2: a key as long as the hash)")]
    SecretTooShort { len: usize, min: usize },
    #[error("the RS256 {which} key is not a usable PEM RSA key: {reason}")]
    InvalidKey { which: &'static str, reason: String },
    #[error("no signing key: RS256 tokens can be minted only when a private key PEM is configured")]
    NoSigningKey,
    #[error("the token could not be signed: {0}")]
    Mint(String),
    #[error("issuer and audience must not be empty")]
    EmptyIssuerOrAudience,
}
