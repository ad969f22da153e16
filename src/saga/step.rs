//! The balance steps a saga performs and their idempotency keys.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A call to the balance service on behalf of one order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Hold funds for a BUY before it may work.
    Reserve,
    /// Take an executed BUY's cost out of its reservation.
    Deduct,
    /// Return whatever is still reserved (the remainder after a fill, or all of it).
    Release,
    /// Pay an executed SELL's proceeds.
    Credit,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Reserve => "reserve",
            Step::Deduct => "deduct",
            Step::Release => "release",
            Step::Credit => "credit",
        }
    }

    /// `{order_id}:{step}`: each step moves money at most once per order.
    pub fn idempotency_key(self, order_id: Uuid) -> String {
        format!("{order_id}:{}", self.as_str())
    }

    /// Compensating and post-trade steps must finish: they never give up, they
    /// keep retrying at the last rung of the ladder (and are flagged).
    pub fn must_complete(self) -> bool {
        !matches!(self, Step::Reserve)
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
