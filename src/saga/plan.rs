//! `next_actions`: what the shell must do next for a saga, derived from its
//! state alone, so a restarted engine resumes exactly where the log says.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::event::ObservedOrder;
use super::state::{Saga, SagaState};
use super::step::Step;
use crate::order::Side;

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Record the intent for `step`, then call.
    Attempt { step: Step, amount: Option<Decimal> },
    /// The intent is recorded but not the outcome: call (again) with the same key.
    Call {
        step: Step,
        attempt: u32,
        amount: Option<Decimal>,
        idempotency_key: String,
    },
    /// Nothing to do for `step` until then.
    WaitUntil { step: Step, at: DateTime<Utc> },
    /// Tell the order its funds are in place.
    AcceptOrder { reserved_amount: Decimal },
    /// Tell the order it failed, and why.
    FailOrder { reason: String },
    /// Everything is done: record the end.
    Complete,
}

pub fn next_actions(state: &SagaState, now: DateTime<Utc>) -> Vec<Action> {
    let Some(saga) = state.saga() else {
        return vec![];
    };
    if saga.completed {
        return vec![];
    }
    match saga.side {
        Side::Buy => buy_actions(saga, now),
        Side::Sell => sell_actions(saga, now),
    }
}

fn buy_actions(saga: &Saga, now: DateTime<Utc>) -> Vec<Action> {
    let reserve = saga.step(Step::Reserve);
    match &saga.observed {
        None if reserve.succeeded.is_some() => vec![Action::AcceptOrder {
            reserved_amount: saga.reserve_amount,
        }],
        None if reserve.gave_up() => {
            let reason = reserve.last_failure.map(|f| f.reason).unwrap_or_default();
            vec![Action::FailOrder {
                reason: format!("funds could not be reserved: {reason}"),
            }]
        }
        None => step_action(saga, Step::Reserve, Some(saga.reserve_amount), now)
            .into_iter()
            .collect(),
        Some(ObservedOrder::Executed { total_value }) => {
            then_complete([(Step::Deduct, Some(*total_value)), (Step::Release, None)], saga, now)
        }
        Some(ObservedOrder::Cancelled { .. } | ObservedOrder::Failed { .. }) => {
            if reserve.attempts == 0 {
                // Nothing was ever asked of the balance service.
                vec![Action::Complete]
            } else {
                // Released even when no reservation is known: an attempt that
                // timed out may have reserved, and a release is idempotent.
                then_complete([(Step::Release, None)], saga, now)
            }
        }
    }
}

fn sell_actions(saga: &Saga, now: DateTime<Utc>) -> Vec<Action> {
    match &saga.observed {
        None => vec![Action::AcceptOrder {
            reserved_amount: Decimal::ZERO,
        }],
        Some(ObservedOrder::Executed { total_value }) => then_complete([(Step::Credit, Some(*total_value))], saga, now),
        Some(ObservedOrder::Cancelled { .. } | ObservedOrder::Failed { .. }) => vec![Action::Complete],
    }
}

/// The first unfinished step of `steps`, in order; `Complete` when all are done.
fn then_complete<const N: usize>(steps: [(Step, Option<Decimal>); N], saga: &Saga, now: DateTime<Utc>) -> Vec<Action> {
    for (step, amount) in steps {
        if let Some(action) = step_action(saga, step, amount, now) {
            return vec![action];
        }
        if saga.step(step).succeeded.is_none() {
            // Given up: a person must look (the saga stays open and visible).
            return vec![];
        }
    }
    vec![Action::Complete]
}

/// What `step` needs now, or None when it succeeded or was given up.
fn step_action(saga: &Saga, step: Step, amount: Option<Decimal>, now: DateTime<Utc>) -> Option<Action> {
    let progress = saga.step(step);
    if progress.succeeded.is_some() {
        return None;
    }
    if let Some(amount) = progress.in_flight {
        return Some(Action::Call {
            step,
            attempt: progress.attempts,
            amount,
            idempotency_key: step.idempotency_key(saga.order_id),
        });
    }
    match progress.last_failure {
        None => Some(Action::Attempt { step, amount }),
        Some(failure) => match failure.retry_at {
            Some(at) if at > now => Some(Action::WaitUntil { step, at }),
            Some(_) => Some(Action::Attempt { step, amount }),
            None => None,
        },
    }
}
