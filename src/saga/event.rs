//! What a saga recorded: what it saw of its order, each step's intent and
//! outcome, and its end. The durable schema of `saga-<order id>` streams.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::step::Step;
use crate::events::EventFamily;
use crate::order::Side;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SagaStarted {
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub side: Side,
    /// Funds to hold for a BUY (quantity × reference price); zero for a SELL.
    pub reserve_amount: Decimal,
    pub started_at: DateTime<Utc>,
}

/// The order reached a state the saga must act on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ObservedOrder {
    Executed { total_value: Decimal },
    Cancelled { reason: String },
    Failed { reason: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderObserved {
    /// The order event observed; observing it twice is a no-op.
    pub event_id: Uuid,
    pub order: ObservedOrder,
    pub observed_at: DateTime<Utc>,
}

/// Recorded before the call: if the engine dies now, the call is made again
/// with the same key after restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepAttempted {
    pub step: Step,
    pub attempt: u32,
    /// None for a release, which moves whatever is still reserved.
    pub amount: Option<Decimal>,
    pub idempotency_key: String,
    pub attempted_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSucceeded {
    pub step: Step,
    pub attempt: u32,
    /// What the balance service says moved.
    pub amount: Decimal,
    pub succeeded_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepFailed {
    pub step: Step,
    pub attempt: u32,
    pub reason: String,
    /// Whether trying again may help (timeouts, 5xx) or not (insufficient funds).
    pub transient: bool,
    /// When the next attempt is due; None when the saga gives the step up.
    pub retry_at: Option<DateTime<Utc>>,
    pub failed_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SagaCompleted {
    pub completed_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum SagaEvent {
    SagaStarted(SagaStarted),
    OrderObserved(OrderObserved),
    StepAttempted(StepAttempted),
    StepSucceeded(StepSucceeded),
    StepFailed(StepFailed),
    SagaCompleted(SagaCompleted),
}

impl EventFamily for SagaEvent {
    fn event_type(&self) -> &'static str {
        match self {
            SagaEvent::SagaStarted(_) => "SagaStarted",
            SagaEvent::OrderObserved(_) => "OrderObserved",
            SagaEvent::StepAttempted(_) => "StepAttempted",
            SagaEvent::StepSucceeded(_) => "StepSucceeded",
            SagaEvent::StepFailed(_) => "StepFailed",
            SagaEvent::SagaCompleted(_) => "SagaCompleted",
        }
    }

    fn schema_version(_event_type: &str) -> u32 {
        1
    }
}
