//! The account service over HTTP (contract: `docs/contracts/account-service.md`).
//!
//! Never turns "could not ask" into an answer: an unreachable service is
//! `Unavailable`, never an inactive (or active) account.

use std::sync::Arc;

use async_trait::async_trait;
use uuid::Uuid;

use super::{AccountError, AccountStatus, Accounts};
use crate::clients::{Answer, BreakerState, Call, ConfigError, RemoteService, RemoteServiceConfig, Transient};
use crate::clock::Clock;

/// Every account endpoint lives under this prefix.
pub const ACCOUNTS_PATH: &str = "/api/v1/accounts";

/// [`Accounts`] against the remote account service, with timeouts, retries,
/// a circuit breaker and (when configured) signed requests.
#[derive(Debug)]
pub struct HttpAccountsClient {
    remote: RemoteService,
}

impl HttpAccountsClient {
    pub fn new(config: &RemoteServiceConfig) -> Result<Self, ConfigError> {
        Ok(Self {
            remote: RemoteService::new("accounts", config)?,
        })
    }

    /// Finds the service again through `discovery` when its address stops answering.
    pub fn with_discovery(self, discovery: Arc<dyn crate::clients::AddressLookup>) -> Self {
        Self {
            remote: self.remote.with_discovery(discovery),
        }
    }

    /// Replaces the clock that timestamps signatures.
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        Self {
            remote: self.remote.with_clock(clock),
        }
    }

    /// The breaker's state, for health checks and metrics.
    pub fn breaker_state(&self) -> BreakerState {
        self.remote.breaker_state()
    }

    /// The breaker, for `/health/circuit-breaker` and `/metrics`.
    pub fn breaker(&self) -> std::sync::Arc<crate::clients::CircuitBreaker> {
        self.remote.breaker()
    }
}

#[async_trait]
impl Accounts for HttpAccountsClient {
    async fn status(&self, user_id: Uuid) -> Result<AccountStatus, AccountError> {
        let path = format!("{ACCOUNTS_PATH}/{user_id}");
        let answer = self.remote.send(Call::get(&path)).await.map_err(|error| {
            if error.is_transient() {
                AccountError::Unavailable(error.to_string())
            } else {
                AccountError::Rejected(error.to_string())
            }
        })?;
        interpret(&answer, user_id)
    }
}

/// An answer below 500 as the account's status or the refusal it carries.
fn interpret(answer: &Answer, user_id: Uuid) -> Result<AccountStatus, AccountError> {
    match answer.status {
        200..=299 => serde_json::from_slice(&answer.body).map_err(|e| {
            // Version skew or a broken proxy; asking again later may help, and
            // nothing was changed by asking.
            AccountError::Unavailable(format!(
                "unreadable answer (HTTP {}): {e}: {}",
                answer.status,
                answer.body_excerpt()
            ))
        }),
        404 => Err(AccountError::NotFound(user_id)),
        status => Err(AccountError::Rejected(format!(
            "HTTP {status}: {}",
            answer.body_excerpt()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: Uuid = Uuid::from_u128(7);

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn a_success_decodes_the_status() {
        // Proves the documented 200 body becomes an AccountStatus.
        let body = format!(r#"{{"user_id":"{USER}","active":true,"can_trade":false}}"#);
        assert_eq!(
            interpret(&answer(200, &body), USER),
            Ok(AccountStatus {
                user_id: USER,
                active: true,
                can_trade: false
            })
        );
    }

    #[test]
    fn not_found_and_other_refusals_are_permanent() {
        // Proves 404 is NotFound for the asked user and any other 4xx is Rejected with the body.
        assert_eq!(interpret(&answer(404, ""), USER), Err(AccountError::NotFound(USER)));
        let refused = interpret(&answer(403, r#"{"error":"forbidden"}"#), USER).unwrap_err();
        assert_eq!(
            refused,
            AccountError::Rejected(r#"HTTP 403: {"error":"forbidden"}"#.into())
        );
        assert!(!refused.is_transient());
    }

    #[test]
    fn an_unreadable_success_is_transient() {
        // Proves a garbled 2xx is not mistaken for an inactive account.
        let error = interpret(&answer(200, r#"{"active":"yes"}"#), USER).unwrap_err();
        assert!(error.is_transient(), "{error}");
    }
}
