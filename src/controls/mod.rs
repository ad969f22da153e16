//! Pre-trade controls and the security layer at run time (issue 16): what
//! the HTTP and gRPC fronts consult (idempotency fail-closed), what the
//! health routes report (circuit breakers, rate limits), and the AUDIT_EVENT
//! log lines. The settings are `config::controls`; gateway trust lives with
//! the rest of auth (`auth::extractor`).
//!
//! Must never decide an order's fate from anything but the settings and the
//! log: the rules that count a user's orders belong to the log's aggregates.

pub mod audit;
pub mod calendar;
pub mod rate_limits;
pub mod trading_day;

use std::sync::Arc;

use crate::clients::Breakers;
use crate::config::ControlSettings;
pub use rate_limits::{LimitInForce, LimitedUser, RateLimitReport, UserRateLimiter};

/// The controls as the fronts and health routes see them.
pub struct Controls {
    pub settings: ControlSettings,
    /// The remote clients' breakers (`/health/circuit-breaker`, `/metrics`).
    pub breakers: Breakers,
    /// The per-user submission limiter, when one runs. None today: the
    /// per-user limits of issue 16 (items 1 to 3) plug in here, and
    /// `/health/rate-limiter` reports them and the users they hold back.
    pub user_limiter: Option<Arc<dyn UserRateLimiter>>,
}

impl Controls {
    pub fn new(settings: ControlSettings, breakers: Breakers) -> Self {
        Self {
            settings,
            breakers,
            user_limiter: None,
        }
    }

    /// What `/health/rate-limiter` answers.
    pub fn rate_limits(&self) -> RateLimitReport {
        rate_limits::report(self.user_limiter.as_deref())
    }
}

impl Default for Controls {
    /// The defaults of every setting and no remote client: what tests that
    /// build an `AppState` by hand run with.
    fn default() -> Self {
        Self::new(ControlSettings::default(), Breakers::default())
    }
}
