//! The saga as folded from its stream, and `evolve`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::event::{ObservedOrder, SagaEvent};
use super::step::Step;
use crate::aggregate::{ensure, InvariantViolation};
use crate::events::EventFamily;
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

/// Applies an event `decide` produced; panics on a broken invariant (a bug in this core).
pub fn evolve(state: SagaState, event: &SagaEvent) -> SagaState {
    <super::SagaAggregate as crate::aggregate::Aggregate>::evolve(state, event)
}

/// Applies one event, or names the invariant it breaks (checked in every build).
pub fn try_evolve(state: SagaState, event: &SagaEvent) -> Result<SagaState, InvariantViolation> {
    let mut saga = match (state, event) {
        (SagaState::NotStarted, SagaEvent::SagaStarted(e)) => {
            return Ok(SagaState::Running(Box::new(Saga {
                order_id: e.order_id,
                user_id: e.user_id,
                side: e.side,
                reserve_amount: e.reserve_amount,
                observed: None,
                steps: BTreeMap::new(),
                completed: false,
                started_at: e.started_at,
            })))
        }
        (SagaState::Running(saga), _) => saga,
        (SagaState::NotStarted, other) => {
            return Err(InvariantViolation(format!("{} before SagaStarted", other.event_type())));
        }
    };
    ensure(!saga.completed, || {
        format!("{} after SagaCompleted of order {}", event.event_type(), saga.order_id)
    })?;
    match event {
        SagaEvent::SagaStarted(_) => {
            return Err(InvariantViolation(format!(
                "SagaStarted twice for order {}",
                saga.order_id
            )));
        }
        SagaEvent::OrderObserved(e) => saga.observed = Some(e.order.clone()),
        SagaEvent::StepAttempted(e) => {
            let progress = saga.steps.entry(e.step).or_default();
            ensure(e.attempt == progress.attempts + 1, || {
                format!(
                    "attempt {} of {} follows attempt {} of order {}",
                    e.attempt, e.step, progress.attempts, saga.order_id
                )
            })?;
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
    Ok(SagaState::Running(saga))
}
