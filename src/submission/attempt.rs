//! A failed try as the consumer reports it: everything the event says but the
//! time, which the engine stamps from its clock, and the metadata it is
//! recorded with.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::event::{NextTry, SubmissionAttemptFailed, SubmissionEvent};
use crate::events::EventMetadata;

/// Longest error text kept in an event: an engine error can quote a whole
/// cause chain, and every failed try of every order lands in the log.
pub const ERROR_TEXT_CHARS_MAX: usize = 1_000;

/// One failed try of a submission, to be recorded on `submission-<order id>`.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedAttempt {
    pub order_id: Uuid,
    /// The message's `x-retry-attempt` (0 on its first delivery).
    pub retry_attempt: u32,
    pub next: NextTry,
    pub error: String,
    /// The submission's correlation, causation, who, source (`amqp`) and trace.
    pub metadata: EventMetadata,
}

impl FailedAttempt {
    /// What makes this try unique for its order: the delivery (`retry_attempt`)
    /// and the try within it. A quick retry is the n-th of its delivery; the
    /// delivery's last try (put on a rung or dead-lettered) happens once per
    /// delivery. A redelivered message repeats its keys, so it records once.
    pub fn key(&self) -> String {
        let step = match self.next {
            NextTry::Quick { retry, .. } => format!("quick-{retry}"),
            NextTry::Rung { .. } | NextTry::DeadLettered => "ladder".to_owned(),
        };
        format!("{}:attempt:{}:{step}", self.order_id, self.retry_attempt)
    }

    /// The event, failed at `failed_at`, its error text cut to `ERROR_TEXT_CHARS_MAX`.
    pub fn event(&self, failed_at: DateTime<Utc>) -> SubmissionEvent {
        SubmissionEvent::SubmissionAttemptFailed(SubmissionAttemptFailed {
            order_id: self.order_id,
            retry_attempt: self.retry_attempt,
            next: self.next,
            error: self.error.chars().take(ERROR_TEXT_CHARS_MAX).collect(),
            failed_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(retry_attempt: u32, next: NextTry) -> FailedAttempt {
        FailedAttempt {
            order_id: Uuid::from_u128(7),
            retry_attempt,
            next,
            error: "é".repeat(ERROR_TEXT_CHARS_MAX + 5),
            metadata: EventMetadata::default(),
        }
    }

    #[test]
    fn keys_tell_tries_apart_and_repeat_for_a_redelivery() {
        // Proves each try of an order has its own key, and the same try (a redelivered message) the same key.
        let keys: Vec<String> = [
            attempt(0, NextTry::Quick { retry: 1, wait_ms: 100 }),
            attempt(0, NextTry::Quick { retry: 2, wait_ms: 200 }),
            attempt(
                0,
                NextTry::Rung {
                    rung: 1,
                    delay_ms: 300_000,
                },
            ),
            attempt(1, NextTry::Quick { retry: 1, wait_ms: 100 }),
            attempt(1, NextTry::DeadLettered),
        ]
        .iter()
        .map(FailedAttempt::key)
        .collect();
        let unique: std::collections::HashSet<&String> = keys.iter().collect();
        assert_eq!(unique.len(), keys.len(), "{keys:?}");
        assert_eq!(keys[0], "00000000-0000-0000-0000-000000000007:attempt:0:quick-1");
        // The wait is jittered: a redelivery's quick retry waits differently but is the same try.
        assert_eq!(attempt(0, NextTry::Quick { retry: 1, wait_ms: 170 }).key(), keys[0]);
        assert_eq!(attempt(1, NextTry::Rung { rung: 2, delay_ms: 1 }).key(), keys[4]);
    }

    #[test]
    fn the_error_text_is_bounded_on_a_character_boundary() {
        // Proves a long, multi-byte error is cut to the bound without splitting a character.
        let SubmissionEvent::SubmissionAttemptFailed(event) =
            attempt(0, NextTry::DeadLettered).event(DateTime::UNIX_EPOCH);
        assert_eq!(event.error.chars().count(), ERROR_TEXT_CHARS_MAX);
        assert_eq!(event.failed_at, DateTime::UNIX_EPOCH);
    }
}
