//! The saga as folded from its stream, and `evolve`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::event::{ObservedOrder, SagaEvent};
use super::step::Step;
use crate::order::Side;

/// Where one step stands.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StepProgress {
    pub attempts: u32,
    /// An attempt was recorded and its outcome was not: the call may or may
    /// not have reached the balance service, so it is made again with its key.
    pub in_flight: Option<Option<Decimal>>,
    pub succeeded: Option<Decimal>,
    pub last_failure: Option<Failure>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub reason: String,
    pub transient: bool,
    pub retry_at: Option<DateTime<Utc>>,
}

impl StepProgress {
    /// The saga stopped trying this step.
    pub fn gave_up(&self) -> bool {
        self.in_flight.is_none()
            && self.succeeded.is_none()
            && self.last_failure.as_ref().is_some_and(|f| f.retry_at.is_none())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Saga {
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub side: Side,
    pub reserve_amount: Decimal,
    /// The order's final state, once seen.
    pub observed: Option<ObservedOrder>,
    pub steps: BTreeMap<Step, StepProgress>,
    pub completed: bool,
    pub started_at: DateTime<Utc>,
}

impl Saga {
    pub fn step(&self, step: Step) -> StepProgress {
        self.steps.get(&step).cloned().unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub enum SagaState {
    #[default]
    NotStarted,
    Running(Box<Saga>),
}

impl SagaState {
    pub fn saga(&self) -> Option<&Saga> {
        match self {
            SagaState::NotStarted => None,
            SagaState::Running(saga) => Some(saga),
        }
    }
}

pub fn evolve(state: SagaState, event: &SagaEvent) -> SagaState {
    let mut saga = match (state, event) {
        (SagaState::NotStarted, SagaEvent::SagaStarted(e)) => {
            return SagaState::Running(Box::new(Saga {
                order_id: e.order_id,
                user_id: e.user_id,
                side: e.side,
                reserve_amount: e.reserve_amount,
                observed: None,
                steps: BTreeMap::new(),
                completed: false,
                started_at: e.started_at,
            }))
        }
        (SagaState::Running(saga), _) => saga,
        (SagaState::NotStarted, other) => {
            debug_assert!(false, "{other:?} before SagaStarted");
            return SagaState::NotStarted;
        }
    };
    debug_assert!(!saga.completed, "{event:?} after SagaCompleted");
    match event {
        SagaEvent::SagaStarted(_) => debug_assert!(false, "SagaStarted twice for {}", saga.order_id),
        SagaEvent::OrderObserved(e) => saga.observed = Some(e.order.clone()),
        SagaEvent::StepAttempted(e) => {
            let progress = saga.steps.entry(e.step).or_default();
            debug_assert_eq!(e.attempt, progress.attempts + 1, "attempts of {} skip", e.step);
            progress.attempts = e.attempt;
            progress.in_flight = Some(e.amount);
        }
        SagaEvent::StepSucceeded(e) => {
            let progress = saga.steps.entry(e.step).or_default();
            progress.in_flight = None;
            progress.succeeded = Some(e.amount);
            progress.last_failure = None;
        }
        SagaEvent::StepFailed(e) => {
            let progress = saga.steps.entry(e.step).or_default();
            progress.in_flight = None;
            progress.last_failure = Some(Failure {
                reason: e.reason.clone(),
                transient: e.transient,
                retry_at: e.retry_at,
            });
        }
        SagaEvent::SagaCompleted(_) => saga.completed = true,
    }
    SagaState::Running(saga)
}
