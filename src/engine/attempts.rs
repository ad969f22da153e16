//! Recording a submission's failed tries on `submission-<order id>`, best
//! effort: the usual reason a try failed is that the log is down, so a record
//! the log fails, or that is not written within `ATTEMPT_RECORD_TIMEOUT`, is
//! given up (only a race lost to another record of the same order is tried
//! again), and it never holds up the caller's own retry.
//!
//! Must never write to an order's stream (it does not exist yet) or block the
//! consumer's ack and retry decisions.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use uuid::Uuid;

use super::saga_runner::ENGINE_NAMESPACE;
use super::{Engine, EngineError};
use crate::events::{encode, StreamId};
use crate::store::{append, event_id, AppendRequest, Conflict, StoreError};
use crate::submission::FailedAttempt;

/// How long a record may take before it is given up: short, because a log
/// that does not answer in this time is the outage the try failed on.
pub const ATTEMPT_RECORD_TIMEOUT: Duration = Duration::from_millis(500);

/// Appends lost to another record of the same stream before a record is
/// given up. Records of one order's tries run on their own tasks, a few
/// milliseconds apart, so a slow log makes them race for the next version.
const ATTEMPT_RECORD_CONFLICTS_MAX: usize = 10;
/// The pause after a lost race, doubling (with jitter, so racers part) from
/// the first to the second; all within `ATTEMPT_RECORD_TIMEOUT`.
const ATTEMPT_RECORD_CONFLICT_PAUSE: (Duration, Duration) = (Duration::from_millis(5), Duration::from_millis(50));

/// Why one append of a record did not land.
enum Missed {
    /// Another record took the version: read it again and retry.
    Conflict(Conflict),
    Failed(EngineError),
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
        let store = self.deps.store.as_ref();
        let stream = StreamId::submission(attempt.order_id);
        let command_id = Uuid::new_v5(&ENGINE_NAMESPACE, attempt.key().as_bytes());
        // The event id from the command id, as every stream's are: a retried record carries the same event.
        let event = encode(
            &attempt.event(self.deps.clock.now()),
            event_id(command_id, &stream, 0),
            attempt.metadata.clone(),
        )
        .map_err(|e| EngineError::Internal(e.to_string()))?;
        let once = || async {
            let expected_version = store
                .stream_version(&stream)
                .await
                .map_err(|e| Missed::Failed(store_error(e)))?;
            let request = AppendRequest {
                stream_id: stream.clone(),
                expected_version,
                command_id: Some(command_id),
                events: vec![event.clone()],
                linked: false,
            };
            // A command id already applied answers before the version check:
            // a repeat is `Ok` (deduplicated) whatever the stream's version.
            match append(store, request).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(conflict)) => Err(Missed::Conflict(conflict)),
                Err(error) => Err(Missed::Failed(store_error(error))),
            }
        };
        let (pause_min, pause_max) = ATTEMPT_RECORD_CONFLICT_PAUSE;
        once.retry(
            ExponentialBuilder::default()
                .with_min_delay(pause_min)
                .with_max_delay(pause_max)
                .with_max_times(ATTEMPT_RECORD_CONFLICTS_MAX)
                .with_jitter(),
        )
        .sleep(tokio::time::sleep)
        // Only a lost race is retried: a log that fails is the outage itself.
        .when(|missed| matches!(missed, Missed::Conflict(_)))
        .await
        .map_err(|missed| match missed {
            Missed::Conflict(conflict) => EngineError::Unavailable(format!(
                "{conflict}; gave up after {ATTEMPT_RECORD_CONFLICTS_MAX} lost races"
            )),
            Missed::Failed(error) => error,
        })
    }
}

fn store_error(error: StoreError) -> EngineError {
    if error.is_transient() {
        EngineError::Unavailable(error.to_string())
    } else {
        EngineError::Internal(error.to_string())
    }
}
