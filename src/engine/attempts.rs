//! Recording a submission's failed tries on `submission-<order id>`, best
//! effort: the usual reason a try failed is that the log is down, so a record
//! the log fails, or that is not written within `ATTEMPT_RECORD_TIMEOUT`, is
//! given up (only a race lost to another record of the same order is tried
//! again), and it never holds up the caller's own retry.
//!
//! Must never write to an order's stream (it does not exist yet) or block the
//! consumer's ack and retry decisions.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use uuid::Uuid;

use super::saga_runner::ENGINE_NAMESPACE;
use super::{Engine, EngineError};
use crate::events::StreamId;
use crate::store::{execute, Around, ExecuteError, FoldError, Freshness, Hydrated, Policy, StoreError};
use crate::submission::{FailedAttempt, RecordFailedTry, SubmissionAggregate, SubmissionEvent};

/// How long a record may take before it is given up: short, because a log
/// that does not answer in this time is the outage the try failed on.
pub const ATTEMPT_RECORD_TIMEOUT: Duration = Duration::from_millis(500);

/// Appends lost to another record of the same stream before a record is
/// given up. Records of one order's tries run on their own tasks, a few
/// milliseconds apart, so a slow log makes them race for the next version.
const ATTEMPT_RECORD_CONFLICTS_MAX: u32 = 10;
/// The pause after a lost race, doubling (with jitter, so racers part) from
/// the first to the second; all within `ATTEMPT_RECORD_TIMEOUT`.
const ATTEMPT_RECORD_CONFLICT_PAUSE: (Duration, Duration) = (Duration::from_millis(5), Duration::from_millis(50));

/// Records race each other for the stream: after a lost race, wait a
/// jittered, growing pause so that they part.
struct Racing(ExponentialBackoff);

impl Racing {
    fn new() -> Self {
        let (pause_min, pause_max) = ATTEMPT_RECORD_CONFLICT_PAUSE;
        Self(
            ExponentialBuilder::default()
                .with_min_delay(pause_min)
                .with_max_delay(pause_max)
                .with_jitter()
                .without_max_times()
                .build(),
        )
    }
}

impl Around<SubmissionAggregate> for Racing {
    type Halt = std::convert::Infallible;

    fn pause_after_conflict(&mut self, _conflicts: u32) -> Duration {
        self.0.next().unwrap_or(ATTEMPT_RECORD_CONFLICT_PAUSE.1)
    }
}

impl Engine {
    /// Records one failed try of a submission as `SubmissionAttemptFailed` on
    /// `submission-<order id>`, at the engine's clock. The command id derives
    /// from the try's key (order, `x-retry-attempt`, quick retry or ladder), so a
    /// redelivered message records each try once. Gives up with `Unavailable`
    /// after `ATTEMPT_RECORD_TIMEOUT`.
    pub async fn record_submission_attempt(&self, attempt: FailedAttempt) -> Result<(), EngineError> {
        match tokio::time::timeout(ATTEMPT_RECORD_TIMEOUT, self.append_attempt(&attempt)).await {
            Ok(result) => result,
            Err(_) => Err(EngineError::Unavailable(format!(
                "the log did not record the failed try within {} ms",
                ATTEMPT_RECORD_TIMEOUT.as_millis()
            ))),
        }
    }

    async fn append_attempt(&self, attempt: &FailedAttempt) -> Result<(), EngineError> {
        let stream = StreamId::submission(attempt.order_id);
        let command_id = Uuid::new_v5(&ENGINE_NAMESPACE, attempt.key().as_bytes());
        let SubmissionEvent::SubmissionAttemptFailed(failed) = attempt.event(self.deps.clock.now());
        let mut hydrated = Hydrated::<SubmissionAggregate>::default();
        // A command id already applied answers before the version check: a
        // repeat is `Repeated` whatever the stream's version. Only a lost race
        // is retried: a log that fails is the outage itself.
        let executed = execute(
            self.deps.store.as_ref(),
            &stream,
            &mut hydrated,
            &RecordFailedTry(failed),
            command_id,
            &attempt.metadata,
            Policy {
                freshness: Freshness::CatchUp,
                conflict_retries_max: ATTEMPT_RECORD_CONFLICTS_MAX,
            },
            &mut Racing::new(),
        )
        .await;
        match executed {
            Ok(_) => Ok(()),
            Err(ExecuteError::Store(error) | ExecuteError::Fold(FoldError::Store(error))) => Err(store_error(error)),
            Err(error @ ExecuteError::Contended { .. }) => Err(EngineError::Unavailable(error.to_string())),
            Err(other) => Err(EngineError::Internal(format!(
                "the failed try of order {} could not be recorded: {other}",
                attempt.order_id
            ))),
        }
    }
}

fn store_error(error: StoreError) -> EngineError {
    if error.is_transient() {
        EngineError::Unavailable(error.to_string())
    } else {
        EngineError::Internal(error.to_string())
    }
}
