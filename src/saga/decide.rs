//! `decide` for sagas: turns what happened (an order event, a step's outcome)
//! into saga events. Duplicates are absorbed (no events), because the shell
//! replays order events after a restart.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::event::{
    ObservedOrder, OrderObserved, SagaCompleted, SagaEvent, SagaStarted, StepAttempted, StepFailed, StepSucceeded,
};
use super::plan::{next_actions, Action};
use super::state::SagaState;
use super::step::Step;
use crate::order::Side;

#[derive(Debug, Clone, PartialEq)]
pub enum SagaCommand {
    Start {
        order_id: Uuid,
        user_id: Uuid,
        side: Side,
        reserve_amount: Decimal,
        at: DateTime<Utc>,
    },
    Observe {
        event_id: Uuid,
        order: ObservedOrder,
        at: DateTime<Utc>,
    },
    /// Record the intent to call the balance service for `step`.
    Attempt {
        step: Step,
        amount: Option<Decimal>,
        at: DateTime<Utc>,
    },
    /// Record the outcome of the in-flight call of `step`.
    RecordOutcome {
        step: Step,
        outcome: StepOutcome,
        /// The retry ladder in force (seed 004 section 3.4 in production).
        retry_delays: Vec<Duration>,
        at: DateTime<Utc>,
    },
    Complete {
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum StepOutcome {
    Succeeded { amount: Decimal },
    Failed { reason: String, transient: bool },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SagaRejection {
    #[error("the saga has not started")]
    NotStarted,
    #[error("the saga is complete")]
    AlreadyCompleted,
    #[error("step {step} is not due: {reason}")]
    StepNotDue { step: Step, reason: &'static str },
    #[error("step {0} has no call in flight")]
    NothingInFlight(Step),
    #[error("the saga still has work to do")]
    NotFinished,
}

pub fn decide(state: &SagaState, command: &SagaCommand) -> Result<Vec<SagaEvent>, SagaRejection> {
    let saga = match (state, command) {
        (
            SagaState::NotStarted,
            SagaCommand::Start {
                order_id,
                user_id,
                side,
                reserve_amount,
                at,
            },
        ) => {
            return Ok(vec![SagaEvent::SagaStarted(SagaStarted {
                order_id: *order_id,
                user_id: *user_id,
                side: *side,
                reserve_amount: *reserve_amount,
                started_at: *at,
            })])
        }
        (SagaState::NotStarted, _) => return Err(SagaRejection::NotStarted),
        (SagaState::Running(_), SagaCommand::Start { .. }) => return Ok(vec![]),
        (SagaState::Running(saga), _) => saga,
    };
    if saga.completed {
        // A replayed order event after the end changes nothing.
        return match command {
            SagaCommand::Observe { .. } => Ok(vec![]),
            _ => Err(SagaRejection::AlreadyCompleted),
        };
    }
    match command {
        SagaCommand::Start { .. } => Ok(vec![]),
        SagaCommand::Observe { event_id, order, at } => {
            if saga.observed.is_some() {
                return Ok(vec![]);
            }
            Ok(vec![SagaEvent::OrderObserved(OrderObserved {
                event_id: *event_id,
                order: order.clone(),
                observed_at: *at,
            })])
        }
        SagaCommand::Attempt { step, amount, at } => {
            let progress = saga.step(*step);
            if progress.succeeded.is_some() {
                return Err(SagaRejection::StepNotDue {
                    step: *step,
                    reason: "it already succeeded",
                });
            }
            if progress.in_flight.is_some() {
                return Err(SagaRejection::StepNotDue {
                    step: *step,
                    reason: "a call is already in flight",
                });
            }
            if progress.gave_up() {
                return Err(SagaRejection::StepNotDue {
                    step: *step,
                    reason: "the saga gave it up",
                });
            }
            Ok(vec![SagaEvent::StepAttempted(StepAttempted {
                step: *step,
                attempt: progress.attempts + 1,
                amount: *amount,
                idempotency_key: step.idempotency_key(saga.order_id),
                attempted_at: *at,
            })])
        }
        SagaCommand::RecordOutcome {
            step,
            outcome,
            retry_delays,
            at,
        } => {
            let progress = saga.step(*step);
            if progress.in_flight.is_none() {
                // A late or duplicate reply: the outcome is already recorded.
                return Err(SagaRejection::NothingInFlight(*step));
            }
            let attempt = progress.attempts;
            Ok(vec![match outcome {
                StepOutcome::Succeeded { amount } => SagaEvent::StepSucceeded(StepSucceeded {
                    step: *step,
                    attempt,
                    amount: *amount,
                    succeeded_at: *at,
                }),
                StepOutcome::Failed { reason, transient } => SagaEvent::StepFailed(StepFailed {
                    step: *step,
                    attempt,
                    reason: reason.clone(),
                    transient: *transient,
                    retry_at: retry_at(*step, attempt, *transient, retry_delays, *at),
                    failed_at: *at,
                }),
            }])
        }
        SagaCommand::Complete { at } => {
            if next_actions(state, *at) != [Action::Complete] {
                return Err(SagaRejection::NotFinished);
            }
            Ok(vec![SagaEvent::SagaCompleted(SagaCompleted { completed_at: *at })])
        }
    }
}

/// The ladder: after failed attempt n, wait `delays[n-1]`. Past the last rung a
/// reservation gives up; steps that must complete stay on the last rung.
fn retry_at(
    step: Step,
    attempt: u32,
    transient: bool,
    delays: &[Duration],
    at: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let index = usize::try_from(attempt).ok()?.checked_sub(1)?;
    let delay = match delays.get(index) {
        Some(delay) if transient => *delay,
        _ if step.must_complete() => *delays.last()?,
        _ => return None,
    };
    // A permanent failure of a must-complete step needs a person; it is retried
    // on the slowest rung so it shows up in alerts, not in a hot loop.
    chrono::Duration::from_std(delay).ok().map(|d| at + d)
}
