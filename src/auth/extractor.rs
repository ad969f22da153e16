//! The actix-web side of auth: the [`AuthenticatedUser`] and [`Authorized`]
//! extractors, and the [`verify_signed_requests`] middleware that checks a
//! service's HMAC signature against the raw body before any handler runs.
//!
//! Must never hand a handler a user it could not authenticate, and never
//! consume a signed request's body without giving the same bytes back to the
//! handler's own extractors (`web::Json` still works after it).
//!
//! # Two kinds of caller
//!
//! - **End users** send `Authorization: Bearer <jwt>`; the user is the
//!   token's `sub`. `X-User-Id` is ignored for them: a user cannot act for
//!   another.
//! - **Services** (seed 001) send `X-Service-Identity`, `X-Internal-API-Key`,
//!   `X-Request-Timestamp`, `X-Request-Signature`, and name the user they act
//!   for in `X-User-Id` (a UUID), which they must send: the signature covers
//!   it (`clients::signing`), so a signed call cannot be redirected to another
//!   user. We chose a header over a body field so the same request bodies
//!   serve both callers and the user is known before the body is parsed. A
//!   service may also forward the user's Bearer token; then it is verified
//!   too and must name the same user as `X-User-Id`.
//!
//! - **The API gateway** (seed 000's gateway trust, off unless
//!   `ORDER_SERVICE_TRUST_GATEWAY_HEADERS` is true) sends the shared secret in
//!   `X-Gateway-Secret` and the user in `X-User-Id`, in place of a token. The
//!   secret is compared in constant time. With trust off, a wrong secret, or
//!   no user, the request is a 401 and nothing runs. A forwarded token is
//!   checked too and must name the same user.
//!
//! A request carrying `X-Service-Identity` is always treated as a service call:
//! a bad signature is a 401 even if a valid Bearer token is also present.
//! Otherwise a request carrying `X-Gateway-Secret` is always a gateway call,
//! so a stale or wrong secret is never silently ignored in favour of a token.
//!
//! # Usage (route author)
//!
//! ```text
//! use actix_web::{middleware::from_fn, web, App};
//! use order_engine::auth::{self, requires, Authorized, AuthenticatedUser, Permission};
//! use order_engine::api::problem::{self, Problem};
//!
//! let authenticator = web::Data::new(auth::Authenticator::new(jwt_verifier, internal_verifier));
//! App::new()
//!     .app_data(authenticator)
//!     .app_data(problem::json_config(ORDER_BODY_BYTES_MAX))
//!     .app_data(problem::path_config())
//!     .wrap(from_fn(auth::verify_signed_requests)) // buffers and checks signed bodies
//!     .route("/api/v1/orders", web::post().to(place_order));
//!
//! // Declarative: the permission is part of the handler's signature.
//! async fn place_order(user: Authorized<requires::PlaceOrder>, body: web::Json<PlaceOrder>)
//!     -> Result<HttpResponse, Problem> { … user.user_id … }
//!
//! // Or imperative, when the permission depends on the request:
//! async fn cancel(user: AuthenticatedUser, …) -> Result<HttpResponse, Problem> {
//!     user.require(Permission::CancelOrder)?;
//!     …
//! }
//! ```
//!
//! Failures answer as `application/problem+json`: 401 for missing, invalid,
//! expired, unsigned, stale or replayed credentials; 403 when a service lacks
//! the permission; 413 when a signed body exceeds the limit. End users hold
//! every permission on their own orders; checking that an order belongs to
//! `user_id` is the route's job.

use std::future::{ready, Ready};
use std::marker::PhantomData;
use std::ops::Deref;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{AUTHORIZATION, CONTENT_LENGTH};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest, ResponseError};
use futures_util::StreamExt;
use uuid::Uuid;

use super::internal::{authorize, InternalVerifier, Permission};
use super::jwt::JwtVerifier;
use super::AuthError;
use crate::api::problem::Problem;
pub use crate::clients::signing::HEADER_USER_ID;
use crate::clients::signing::{secrets_equal, SignatureHeaders, SignedRequest, HEADER_SERVICE_IDENTITY};

/// The API gateway's proof of the shared secret (`ORDER_SERVICE_GATEWAY_SECRET`).
/// Seed 000 names the setting but not the header; this name is fixed here.
pub const HEADER_GATEWAY_SECRET: &str = "X-Gateway-Secret";

/// The largest body a signed request may carry. The signature covers the
/// whole body, so it is buffered before the handler runs; this bounds that
/// buffer. Orders are a few hundred bytes; 64 KiB leaves room without letting
/// a caller park megabytes per connection.
pub const SIGNED_BODY_BYTES_MAX: usize = 64 * 1024;

/// Everything the extractors and the middleware need; registered once as
/// `web::Data<Authenticator>`.
#[derive(Debug)]
pub struct Authenticator {
    jwt: JwtVerifier,
    internal: InternalVerifier,
    signed_body_bytes_max: usize,
    /// The secret the API gateway proves; None: gateway headers are refused.
    gateway_secret: Option<GatewaySecret>,
}

/// Kept out of `Debug`.
struct GatewaySecret(String);

impl std::fmt::Debug for GatewaySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GatewaySecret(hidden)")
    }
}

impl Authenticator {
    pub fn new(jwt: JwtVerifier, internal: InternalVerifier) -> Self {
        Self {
            jwt,
            internal,
            signed_body_bytes_max: SIGNED_BODY_BYTES_MAX,
            gateway_secret: None,
        }
    }

    /// Trusts the API gateway's user header on requests that prove `secret`
    /// (`ORDER_SERVICE_TRUST_GATEWAY_HEADERS`).
    pub fn with_gateway_secret(mut self, secret: impl Into<String>) -> Self {
        self.gateway_secret = Some(GatewaySecret(secret.into()));
        self
    }

    /// Whether gateway headers are trusted at all.
    pub fn trusts_gateway(&self) -> bool {
        self.gateway_secret.is_some()
    }

    /// Another limit on signed bodies; keep it equal to the JSON body limit.
    pub fn with_signed_body_bytes_max(mut self, bytes: usize) -> Self {
        self.signed_body_bytes_max = bytes;
        self
    }

    /// The largest signed body accepted (the gRPC service holds its messages to it too).
    pub fn signed_body_bytes_max(&self) -> usize {
        self.signed_body_bytes_max
    }

    pub fn jwt(&self) -> &JwtVerifier {
        &self.jwt
    }

    pub fn internal(&self) -> &InternalVerifier {
        &self.internal
    }
}

/// How the caller proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// An end user's Bearer JWT.
    Token,
    /// A signed service call (seed 001), acting for `user_id`.
    Service { identity: String },
    /// The API gateway, which proved the shared secret and named the user.
    Gateway,
}

/// The user a request acts for, and how that was established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedUser {
    pub user_id: Uuid,
    pub via: Caller,
}

impl AuthenticatedUser {
    /// Refuses (403) a service whose row in the permission table lacks
    /// `permission`. End users pass: they hold every permission on their own orders.
    pub fn require(&self, permission: Permission) -> Result<(), AuthError> {
        match &self.via {
            // The gateway speaks for the user it named, with the user's rights.
            Caller::Token | Caller::Gateway => Ok(()),
            Caller::Service { identity } => authorize(identity, permission),
        }
    }

    /// The calling service, if any.
    /// Who acted, for event metadata: `user:<id>` or `service:<identity> for user:<id>`.
    pub fn who(&self) -> String {
        match &self.via {
            Caller::Token => format!("user:{}", self.user_id),
            Caller::Service { identity } => format!("service:{identity} for user:{}", self.user_id),
            Caller::Gateway => format!("gateway for user:{}", self.user_id),
        }
    }

    pub fn service(&self) -> Option<&str> {
        match &self.via {
            Caller::Token | Caller::Gateway => None,
            Caller::Service { identity } => Some(identity),
        }
    }
}

/// The middleware's verdict on a signed request, kept in the request's
/// extensions for the extractor.
#[derive(Debug, Clone)]
struct SignatureOutcome(Result<String, AuthError>);

impl FromRequest for AuthenticatedUser {
    type Error = Problem;
    type Future = Ready<Result<Self, Problem>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req).map_err(|e| Problem::from(e).with_instance(req.path())))
    }
}

fn authenticate(req: &HttpRequest) -> Result<AuthenticatedUser, AuthError> {
    let auth = req
        .app_data::<web::Data<Authenticator>>()
        .ok_or(AuthError::NotConfigured("no web::Data<Authenticator> in the app data"))?;
    let header = |name: &str| req.headers().get(name).map(|v| v.to_str().map_err(|_| NotText));
    let signature = if req.headers().contains_key(HEADER_SERVICE_IDENTITY) {
        match req.extensions().get::<SignatureOutcome>().cloned() {
            Some(SignatureOutcome(outcome)) => Some(outcome),
            None => {
                return Err(AuthError::NotConfigured(
                    "signed requests need the verify_signed_requests middleware on this route",
                ))
            }
        }
    } else {
        None
    };
    auth.authenticate(Presented {
        authorization: header(AUTHORIZATION.as_str()),
        signature,
        user_id: header(HEADER_USER_ID),
        gateway_secret: header(HEADER_GATEWAY_SECRET),
    })
}

/// A header or metadata value that is not visible ASCII text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotText;

/// What a request presents to prove who it is, however its transport reads
/// headers (HTTP headers, gRPC metadata): one set of rules for both.
#[derive(Debug, Clone)]
pub struct Presented<'a> {
    /// The `Authorization` value, when sent.
    pub authorization: Option<Result<&'a str, NotText>>,
    /// The signature's verdict (the service identity, or why it was refused)
    /// when the request carries `X-Service-Identity`; None for an end user's call.
    pub signature: Option<Result<String, AuthError>>,
    /// The `X-User-Id` value, when sent.
    pub user_id: Option<Result<&'a str, NotText>>,
    /// The `X-Gateway-Secret` value, when sent.
    pub gateway_secret: Option<Result<&'a str, NotText>>,
}

impl Authenticator {
    /// The user a request acts for: the token's subject for an end user; for
    /// a signed service call, the signed `X-User-Id`, which a forwarded token
    /// must agree with.
    pub fn authenticate(&self, presented: Presented<'_>) -> Result<AuthenticatedUser, AuthError> {
        let bearer = bearer_token(presented.authorization)?;
        let Some(outcome) = presented.signature else {
            if let Some(secret) = presented.gateway_secret {
                return self.gateway_user(secret, presented.user_id, bearer);
            }
            let token = bearer.ok_or(AuthError::MissingCredentials)?;
            let claims = self.jwt.verify(token)?;
            return Ok(AuthenticatedUser {
                user_id: claims.user_id,
                via: Caller::Token,
            });
        };
        let identity = outcome?;
        // The user comes from the signed header only; a forwarded token is a
        // second opinion that must agree, never a substitute.
        let user_id = user_id_header(presented.user_id)?.ok_or(AuthError::MissingUserId)?;
        self.token_agrees(bearer, user_id)?;
        Ok(AuthenticatedUser {
            user_id,
            via: Caller::Service { identity },
        })
    }
}

impl Authenticator {
    /// A forwarded token, when there is one, must be valid and name `user_id`:
    /// a second opinion on the header, never a substitute for it.
    fn token_agrees(&self, bearer: Option<&str>, user_id: Uuid) -> Result<(), AuthError> {
        let Some(token) = bearer else {
            return Ok(());
        };
        let token_user = self.jwt.verify(token)?.user_id;
        if token_user != user_id {
            return Err(AuthError::UserMismatch {
                header: user_id,
                token: token_user,
            });
        }
        Ok(())
    }

    /// The user the API gateway names, once it has proved the shared secret.
    fn gateway_user(
        &self,
        secret: Result<&str, NotText>,
        user_id: Option<Result<&str, NotText>>,
        bearer: Option<&str>,
    ) -> Result<AuthenticatedUser, AuthError> {
        let Some(GatewaySecret(expected)) = &self.gateway_secret else {
            return Err(AuthError::GatewayNotTrusted);
        };
        // A value that is not text cannot be the secret; compared anyway, so the
        // answer takes the same time.
        if !secrets_equal(secret.unwrap_or_default(), expected) {
            tracing::warn!("gateway request refused: wrong X-Gateway-Secret");
            return Err(AuthError::GatewaySecretInvalid);
        }
        let user_id = user_id_header(user_id)?.ok_or(AuthError::GatewayUserMissing)?;
        self.token_agrees(bearer, user_id)?;
        Ok(AuthenticatedUser {
            user_id,
            via: Caller::Gateway,
        })
    }
}

/// The token of `Authorization: Bearer <token>`; None without the header.
fn bearer_token(value: Option<Result<&str, NotText>>) -> Result<Option<&str>, AuthError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let value = value.map_err(|_| AuthError::MalformedAuthorization)?;
    // The scheme name is case-insensitive (RFC 9110 §11.1).
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => {
            Ok(Some(token.trim()))
        }
        _ => Err(AuthError::MalformedAuthorization),
    }
}

fn user_id_header(value: Option<Result<&str, NotText>>) -> Result<Option<Uuid>, AuthError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let text = value.map_err(|_| AuthError::InvalidUserId("<not ASCII>".into()))?;
    Uuid::parse_str(text.trim())
        .map(Some)
        .map_err(|_| AuthError::InvalidUserId(text.to_owned()))
}

/// Declares a route's permission in the handler's signature:
/// `user: Authorized<requires::CancelOrder>`. Dereferences to [`AuthenticatedUser`].
pub trait RequiredPermission {
    const PERMISSION: Permission;
}

/// Marker types for [`Authorized`], one per [`Permission`].
pub mod requires {
    use super::{Permission, RequiredPermission};

    macro_rules! marker {
        ($($name:ident),*) => {$(
            #[doc = concat!("Requires [`Permission::", stringify!($name), "`].")]
            #[derive(Debug, Clone, Copy)]
            pub struct $name;
            impl RequiredPermission for $name {
                const PERMISSION: Permission = Permission::$name;
            }
        )*};
    }
    marker!(PlaceOrder, GetOrders, CancelOrder, ModifyOrder, GetPositions);
}

/// An [`AuthenticatedUser`] already checked for `P`'s permission.
#[derive(Debug, Clone)]
pub struct Authorized<P> {
    pub user: AuthenticatedUser,
    permission: PhantomData<P>,
}

impl<P> Deref for Authorized<P> {
    type Target = AuthenticatedUser;

    fn deref(&self) -> &AuthenticatedUser {
        &self.user
    }
}

impl<P: RequiredPermission> FromRequest for Authorized<P> {
    type Error = Problem;
    type Future = Ready<Result<Self, Problem>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let result = authenticate(req).and_then(|user| {
            user.require(P::PERMISSION)?;
            Ok(Self {
                user,
                permission: PhantomData,
            })
        });
        ready(result.map_err(|e| Problem::from(e).with_instance(req.path())))
    }
}

/// Middleware for `actix_web::middleware::from_fn`: for a request carrying
/// `X-Service-Identity`, reads the body (at most the [`Authenticator`]'s
/// limit, else 413 at once), verifies the signature over exactly those bytes,
/// refuses replays, and puts the body back for the handler. The verdict is
/// left for the extractors, so routes that need no auth are not affected.
/// Requests without that header pass untouched and unbuffered.
pub async fn verify_signed_requests<B: MessageBody + 'static>(
    mut req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    if !req.headers().contains_key(HEADER_SERVICE_IDENTITY) {
        return Ok(next.call(req).await?.map_into_left_body());
    }
    let Some(auth) = req.app_data::<web::Data<Authenticator>>().cloned() else {
        return Ok(refuse(
            req,
            AuthError::NotConfigured("no web::Data<Authenticator> in the app data"),
        ));
    };
    let limit_bytes = auth.signed_body_bytes_max;
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit_bytes) {
        return Ok(refuse(req, AuthError::BodyTooLarge { limit_bytes }));
    }

    let mut payload = req.take_payload();
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(error) => return Ok(refuse(req, AuthError::BodyUnreadable(error.to_string()))),
        };
        // Checked per chunk, so a body without Content-Length cannot exceed the limit either.
        if body.len() + chunk.len() > limit_bytes {
            return Ok(refuse(req, AuthError::BodyTooLarge { limit_bytes }));
        }
        body.extend_from_slice(&chunk);
    }
    let body = body.freeze();

    let outcome = {
        let headers = req.headers();
        let lookup = SignatureHeaders::from_lookup(|name| headers.get(name).and_then(|v| v.to_str().ok()));
        // The signature covers the path and query exactly as sent, and the user
        // the call acts for (a value that is not text is signed as absent and
        // then refused by the extractor).
        let path_and_query = req.uri().path_and_query().map_or(req.path(), |pq| pq.as_str());
        let user_id = headers.get(HEADER_USER_ID).and_then(|v| v.to_str().ok());
        auth.internal.verify(
            &lookup,
            &SignedRequest {
                method: req.method().as_str(),
                path_and_query,
                body: &body,
                user_id,
            },
        )
    };
    if let Err(error) = &outcome {
        tracing::warn!(%error, path = req.path(), "signed request refused");
    }
    req.extensions_mut().insert(SignatureOutcome(outcome));
    req.set_payload(Payload::from(body));
    Ok(next.call(req).await?.map_into_left_body())
}

fn refuse<B>(req: ServiceRequest, error: AuthError) -> ServiceResponse<EitherBody<B>> {
    let problem = Problem::from(error).with_instance(req.path());
    req.into_response(problem.error_response()).map_into_right_body()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::internal::ServiceKeys;
    use crate::auth::jwt::{mint_dev_token, tests::hs256};
    use crate::clients::signing::sign;
    use crate::clients::ServiceCredentials;
    use crate::clock::SystemClock;
    use actix_web::middleware::from_fn;
    use actix_web::test as actix_test;
    use actix_web::{App, HttpResponse};
    use std::sync::Arc;
    use std::time::Duration;

    const ALICE: Uuid = Uuid::from_u128(0xa11ce);
    const BOB: Uuid = Uuid::from_u128(0xb0b);

    async fn whoami(user: AuthenticatedUser) -> HttpResponse {
        HttpResponse::Ok().body(format!("{} {:?}", user.user_id, user.service()))
    }

    fn token_for(user: Uuid) -> String {
        mint_dev_token(&hs256(), user, Duration::from_secs(60)).unwrap()
    }

    /// A GET signed by algo_engine for `user` (the X-User-Id line of the signature), sending
    /// `sent_user` as X-User-Id.
    fn signed_get(timestamp_offset: i64, user: Option<&str>, sent_user: Option<&str>) -> actix_test::TestRequest {
        let now = chrono::Utc::now().timestamp() + timestamp_offset;
        let mut request = actix_test::TestRequest::get().uri("/whoami");
        let credentials = ServiceCredentials::new("algo_engine", "k", "algo-engine-signing-secret-0123456789");
        let signed = SignedRequest {
            method: "GET",
            path_and_query: "/whoami",
            body: b"",
            user_id: user,
        };
        for header in sign(&credentials, now, &signed) {
            request = request.insert_header(header);
        }
        if let Some(sent) = sent_user {
            request = request.insert_header((HEADER_USER_ID, sent.to_owned()));
        }
        request
    }

    #[actix_web::test]
    async fn who_a_request_acts_for() {
        // Proves the documented choice: a service acts for the signed X-User-Id, which it must send;
        // a forwarded token must agree and cannot stand in for it; an X-User-Id other than the signed
        // one is a bad signature; an end user's X-User-Id is ignored.
        let auth = web::Data::new(Authenticator::new(
            JwtVerifier::new(&hs256()).unwrap(),
            InternalVerifier::new(
                ServiceKeys::new([ServiceCredentials::new(
                    "algo_engine",
                    "k",
                    "algo-engine-signing-secret-0123456789",
                )]),
                Arc::new(SystemClock),
            ),
        ));
        let app = actix_test::init_service(
            App::new()
                .app_data(auth)
                .wrap(from_fn(verify_signed_requests))
                .route("/whoami", web::get().to(whoami)),
        )
        .await;
        let (alice, bob) = (ALICE.to_string(), BOB.to_string());
        let (alice, bob) = (Some(alice.as_str()), Some(bob.as_str()));
        let bearer = |user: Uuid| (AUTHORIZATION, format!("Bearer {}", token_for(user)));
        let cases: Vec<(actix_test::TestRequest, u16, String)> = vec![
            (
                signed_get(0, alice, alice),
                200,
                format!("{ALICE} Some(\"algo_engine\")"),
            ),
            (
                signed_get(-1, bob, bob).insert_header(bearer(BOB)),
                200,
                format!("{BOB} Some(\"algo_engine\")"),
            ),
            (
                signed_get(-2, alice, alice).insert_header(bearer(BOB)),
                401,
                "user-id-mismatch".into(),
            ),
            (
                signed_get(-3, None, None).insert_header(bearer(BOB)),
                401,
                "user-id-missing".into(),
            ),
            (signed_get(-4, None, None), 401, "user-id-missing".into()),
            (
                signed_get(-5, Some("alice"), Some("alice")),
                401,
                "user-id-invalid".into(),
            ),
            (signed_get(-6, alice, bob), 401, "signature-invalid".into()),
            (signed_get(-7, None, alice), 401, "signature-invalid".into()),
            (
                actix_test::TestRequest::get()
                    .uri("/whoami")
                    .insert_header((HEADER_USER_ID, ALICE.to_string()))
                    .insert_header((AUTHORIZATION, format!("bearer {}", token_for(BOB)))),
                200,
                format!("{BOB} None"),
            ),
        ];
        for (request, status, expected) in cases {
            let response = actix_test::call_service(&app, request.to_request()).await;
            assert_eq!(response.status().as_u16(), status, "{expected}");
            let body = String::from_utf8(actix_test::read_body(response).await.to_vec()).unwrap();
            assert!(body.contains(&expected), "{expected}: {body}");
        }
    }
}
