//! The balance saga: a process manager per order whose state is its own
//! event stream (`saga-<order id>`). It reserves funds before a BUY may work,
//! deducts and releases after a fill, releases after a cancel or failure, and
//! credits a SELL's proceeds, each call idempotent by `{order id}:{step}`.
//!
//! The pure core (`decide`, `evolve`, `next_actions`) never does I/O; the
//! runner in the engine is its shell.

mod amount;
mod decide;
mod event;
mod plan;
mod state;
mod step;

#[cfg(test)]
mod tests;

pub use amount::reserve_amount;
pub use decide::{decide, SagaCommand, SagaRejection, StepOutcome};
pub use event::{
    ObservedOrder, OrderObserved, SagaCompleted, SagaEvent, SagaStarted, StepAttempted, StepFailed, StepSucceeded,
};
pub use plan::{next_actions, Action};
pub use state::{evolve, try_evolve, Failure, Saga, SagaState, StepProgress};
pub use step::Step;

/// The saga as an [`Aggregate`](crate::aggregate::Aggregate).
#[derive(Debug, Clone, Copy, Default)]
pub struct SagaAggregate;

impl crate::aggregate::Aggregate for SagaAggregate {
    type State = SagaState;
    type Command = SagaCommand;
    type Event = SagaEvent;
    type Rejection = SagaRejection;

    fn decide(state: &SagaState, command: &SagaCommand) -> Result<Vec<SagaEvent>, SagaRejection> {
        decide(state, command)
    }

    fn try_evolve(state: SagaState, event: &SagaEvent) -> Result<SagaState, crate::aggregate::InvariantViolation> {
        try_evolve(state, event)
    }
}
