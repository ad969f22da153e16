//! The consumer's side of recording failed tries: what comes after a try
//! (a quick retry, a rung, the DLQ) and a record sent off without waiting.
//!
//! Must never delay or change the consumer's ack and retry decisions: a
//! record runs on a task of its own and its failure is only logged.

use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

use super::consumer::OrderSubmitter;
use crate::engine::{EngineError, SubmitRequest};
use crate::submission::{FailedAttempt, NextTry};

/// Where a delivery's last failed try goes: the rung after `retry_attempt`, or
/// the DLQ when the ladder is climbed (as `retry_or_dead_letter` decides).
pub(crate) fn ladder_step(retry_delays: &[Duration], retry_attempt: u32) -> NextTry {
    usize::try_from(retry_attempt)
        .ok()
        .and_then(|i| retry_delays.get(i))
        .map_or(NextTry::DeadLettered, |delay| NextTry::Rung {
            rung: retry_attempt.saturating_add(1),
            delay_ms: millis(*delay),
        })
}

pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Records a failed try of `request` on its submission stream, on a task of
/// its own: the consumer goes on at once, whether the log is up or not (the
/// engine gives a record up after a short timeout). A request without an
/// order id has no stream to record on; the consumer always sets one.
pub(crate) fn record_failed_try(
    submitter: &Arc<dyn OrderSubmitter>,
    request: &SubmitRequest,
    retry_attempt: u32,
    next: NextTry,
    error: &EngineError,
) {
    let Some(order_id) = request.order_id else {
        return;
    };
    let attempt = FailedAttempt {
        order_id,
        retry_attempt,
        next,
        error: error.to_string(),
        metadata: request.metadata.clone(),
    };
    let submitter = Arc::clone(submitter);
    tokio::spawn(
        async move {
            if let Err(error) = submitter.record_failed_try(attempt).await {
                tracing::info!(%error, "the failed try is not in the event log (only in this process log)");
            }
        }
        .instrument(tracing::Span::current()),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_try_of_a_delivery_goes_to_the_next_rung_then_the_dlq() {
        // Proves the recorded next step matches the ladder: rung n+1 with its delay, the DLQ past the end.
        let ladder = [Duration::from_secs(300), Duration::from_secs(900)];
        assert_eq!(
            ladder_step(&ladder, 0),
            NextTry::Rung {
                rung: 1,
                delay_ms: 300_000
            }
        );
        assert_eq!(
            ladder_step(&ladder, 1),
            NextTry::Rung {
                rung: 2,
                delay_ms: 900_000
            }
        );
        assert_eq!(ladder_step(&ladder, 2), NextTry::DeadLettered);
        assert_eq!(ladder_step(&[], 0), NextTry::DeadLettered);
    }
}
