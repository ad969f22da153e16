//! What `/health/rate-limiter` reports: every bound the engine enforces on
//! how much a caller may send, and the users a per-user limiter is holding
//! back right now.
//!
//! Must never invent a limit: each entry names the constant or setting that
//! enforces it, so the report cannot promise what the code does not do.

use serde::Serialize;
use uuid::Uuid;

use crate::api::BODY_BYTES_MAX;
use crate::auth::internal::REPLAY_CACHE_ENTRIES_MAX;
use crate::auth::SIGNED_BODY_BYTES_MAX;

/// One bound in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LimitInForce {
    /// A stable name, such as `http_body_bytes`.
    pub name: &'static str,
    /// Whom it applies to: `request`, `connection`, `service`, `user`, `process`.
    pub scope: &'static str,
    pub limit: u64,
    /// What `limit` counts, such as `bytes` or `orders_per_minute`.
    pub unit: &'static str,
    /// What a caller over it gets.
    pub answer: &'static str,
    /// The setting or constant that fixes it.
    pub source: &'static str,
}

/// A user a per-user limiter is refusing right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LimitedUser {
    pub user_id: Uuid,
    /// The [`LimitInForce::name`] the user is over.
    pub limit: &'static str,
    /// When the user may send again, in whole seconds from now.
    pub retry_after_secs: u64,
}

/// A per-user limiter's side of the report (the lead's per-user submission
/// limit of issue 16 implements it and is set on `Controls::user_limiter`).
pub trait UserRateLimiter: Send + Sync {
    /// The limits it enforces (scope `user`).
    fn limits(&self) -> Vec<LimitInForce>;
    /// The users it is refusing now; bounded by the limiter's own table size.
    fn limited_users(&self) -> Vec<LimitedUser>;
}

/// The body of `/health/rate-limiter`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RateLimitReport {
    /// `ok`: the report is complete (there is nothing that can be unhealthy
    /// about a limit; a limiter that fails refuses, and says so per request).
    pub status: &'static str,
    /// Whether a per-user limiter runs (`false`: no per-user limit is enforced).
    pub per_user_limiter: bool,
    pub limits: Vec<LimitInForce>,
    pub users_limited: Vec<LimitedUser>,
}

/// The bounds every request meets, whatever limiter runs.
fn fixed_limits() -> Vec<LimitInForce> {
    vec![
        LimitInForce {
            name: "http_body_bytes",
            scope: "request",
            limit: BODY_BYTES_MAX as u64,
            unit: "bytes",
            answer: "413 problem+json",
            source: "api::BODY_BYTES_MAX",
        },
        LimitInForce {
            name: "signed_body_bytes",
            scope: "request",
            limit: SIGNED_BODY_BYTES_MAX as u64,
            unit: "bytes",
            answer: "413 problem+json (gRPC RESOURCE_EXHAUSTED)",
            source: "auth::SIGNED_BODY_BYTES_MAX",
        },
        LimitInForce {
            name: "signed_requests_in_replay_window",
            scope: "process",
            limit: REPLAY_CACHE_ENTRIES_MAX as u64,
            unit: "requests_per_300s",
            answer: "503 problem+json replay-cache-full with Retry-After",
            source: "auth::REPLAY_CACHE_ENTRIES_MAX",
        },
    ]
}

pub(super) fn report(user_limiter: Option<&dyn UserRateLimiter>) -> RateLimitReport {
    let mut limits = fixed_limits();
    let users_limited = match user_limiter {
        Some(limiter) => {
            limits.extend(limiter.limits());
            limiter.limited_users()
        }
        None => Vec::new(),
    };
    RateLimitReport {
        status: "ok",
        per_user_limiter: user_limiter.is_some(),
        limits,
        users_limited,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct OneUserHeld;

    impl UserRateLimiter for OneUserHeld {
        fn limits(&self) -> Vec<LimitInForce> {
            vec![LimitInForce {
                name: "orders_per_minute",
                scope: "user",
                limit: 120,
                unit: "orders_per_minute",
                answer: "429 with Retry-After",
                source: "test",
            }]
        }

        fn limited_users(&self) -> Vec<LimitedUser> {
            vec![LimitedUser {
                user_id: Uuid::nil(),
                limit: "orders_per_minute",
                retry_after_secs: 7,
            }]
        }
    }

    #[test]
    fn the_report_lists_fixed_bounds_and_a_limiters_users_when_one_runs() {
        // Proves the report without a per-user limiter (today) says so, and one plugged in shows its users.
        let none = report(None);
        assert!(!none.per_user_limiter && none.users_limited.is_empty());
        assert!(none
            .limits
            .iter()
            .any(|l| l.name == "http_body_bytes" && l.limit == BODY_BYTES_MAX as u64));
        let held = report(Some(&OneUserHeld));
        assert!(held.per_user_limiter);
        assert_eq!(held.limits.len(), none.limits.len() + 1);
        assert_eq!(held.users_limited[0].retry_after_secs, 7);
    }
}
