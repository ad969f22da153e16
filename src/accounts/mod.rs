//! Account checks (seed 004 section 1.2): is the account active, may it trade.
//!
//! Implementations: `EmbeddedAccounts` (every account active) and the HTTP
//! client (`http.rs`).

pub mod http;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountStatus {
    pub user_id: Uuid,
    pub active: bool,
    pub can_trade: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    #[error("account {0} does not exist")]
    NotFound(Uuid),
    #[error("account service refused the request: {0}")]
    Rejected(String),
    #[error("account service unavailable: {0}")]
    Unavailable(String),
}

impl AccountError {
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

#[async_trait]
pub trait Accounts: Send + Sync + 'static {
    async fn status(&self, user_id: Uuid) -> Result<AccountStatus, AccountError>;
}

/// The embedded default: every account exists, is active and may trade.
#[derive(Debug, Clone, Copy, Default)]
pub struct EmbeddedAccounts;

#[async_trait]
impl Accounts for EmbeddedAccounts {
    async fn status(&self, user_id: Uuid) -> Result<AccountStatus, AccountError> {
        Ok(AccountStatus {
            user_id,
            active: true,
            can_trade: true,
        })
    }
}
