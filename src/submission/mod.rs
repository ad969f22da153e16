//! What happened to a submission before its order existed: the failed tries
//! of an AMQP submission, kept on `submission-<order id>` so the order's story
//! (audit) shows why it arrived late, or never.
//!
//! Pure: the event family and the request the consumer fills; the engine
//! stamps the time and appends (`engine/attempts.rs`). Nothing here reads the
//! clock, makes ids or does I/O.

mod aggregate;
mod attempt;
mod event;

pub use aggregate::{RecordFailedTry, SubmissionAggregate, SubmissionRejection, SubmissionState};
pub use attempt::{FailedAttempt, ERROR_TEXT_CHARS_MAX};
pub use event::{NextTry, SubmissionAttemptFailed, SubmissionEvent};
