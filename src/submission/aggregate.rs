//! A submission's stream as an aggregate, so its failed tries are recorded
//! through the same `store::execute` as every other command: a stream holds
//! the tries of one order, counted, and nothing else.

use uuid::Uuid;

use super::event::{SubmissionAttemptFailed, SubmissionEvent};
use crate::aggregate::{ensure, Aggregate, InvariantViolation};

/// What a submission stream has recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubmissionState {
    /// The order the stream is about, from its first event.
    pub order_id: Option<Uuid>,
    /// Failed tries recorded.
    pub failed_tries: u64,
}

/// Record one failed try (already stamped with the engine's time).
#[derive(Debug, Clone, PartialEq)]
pub struct RecordFailedTry(pub SubmissionAttemptFailed);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmissionRejection {
    #[error("a try of order {found} cannot be recorded on the stream of order {stream}")]
    AnotherOrder { stream: Uuid, found: Uuid },
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SubmissionAggregate;

impl Aggregate for SubmissionAggregate {
    type State = SubmissionState;
    type Command = RecordFailedTry;
    type Event = SubmissionEvent;
    type Rejection = SubmissionRejection;

    fn decide(state: &SubmissionState, command: &RecordFailedTry) -> Result<Vec<SubmissionEvent>, SubmissionRejection> {
        let RecordFailedTry(failed) = command;
        match state.order_id {
            Some(stream) if stream != failed.order_id => Err(SubmissionRejection::AnotherOrder {
                stream,
                found: failed.order_id,
            }),
            _ => Ok(vec![SubmissionEvent::SubmissionAttemptFailed(failed.clone())]),
        }
    }

    fn try_evolve(state: SubmissionState, event: &SubmissionEvent) -> Result<SubmissionState, InvariantViolation> {
        let SubmissionEvent::SubmissionAttemptFailed(failed) = event;
        let order_id = state.order_id.unwrap_or(failed.order_id);
        ensure(order_id == failed.order_id, || {
            format!("a try of order {} on the stream of order {order_id}", failed.order_id)
        })?;
        Ok(SubmissionState {
            order_id: Some(order_id),
            failed_tries: state.failed_tries + 1,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::submission::NextTry;

    fn failed(order: u128) -> SubmissionAttemptFailed {
        SubmissionAttemptFailed {
            order_id: Uuid::from_u128(order),
            retry_attempt: 0,
            next: NextTry::DeadLettered,
            error: "database unreachable".into(),
            failed_at: Utc.with_ymd_and_hms(2026, 11, 29, 13, 0, 0).unwrap(),
        }
    }

    #[test]
    fn given_tries_of_an_order_when_another_is_recorded_then_it_is_counted() {
        let state = SubmissionAggregate::fold(
            SubmissionState::default(),
            &[SubmissionEvent::SubmissionAttemptFailed(failed(7))],
        );
        let (state, events) = SubmissionAggregate::handle(&state, &RecordFailedTry(failed(7))).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(
            state,
            SubmissionState {
                order_id: Some(Uuid::from_u128(7)),
                failed_tries: 2
            }
        );
    }

    #[test]
    fn a_try_of_another_order_is_refused_and_never_folded() {
        let state = SubmissionAggregate::fold(
            SubmissionState::default(),
            &[SubmissionEvent::SubmissionAttemptFailed(failed(7))],
        );
        assert_eq!(
            SubmissionAggregate::decide(&state, &RecordFailedTry(failed(8))),
            Err(SubmissionRejection::AnotherOrder {
                stream: Uuid::from_u128(7),
                found: Uuid::from_u128(8)
            })
        );
        assert!(SubmissionAggregate::try_evolve(state, &SubmissionEvent::SubmissionAttemptFailed(failed(8))).is_err());
    }
}
