//! Fuzz target: `orders.submit` bodies through `Submission::parse`, then the
//! pure `decide` on what it read. Must never touch a broker or a database.
#![no_main]

use libfuzzer_sys::fuzz_target;
use order_engine::amqp::wire::{EventMessage, Submission, WireError, SUBMISSION_BYTES_MAX};
use order_engine::order::OrderType;
use order_engine_fuzz::{check_submission, fixed_now, is_object, Parsed};

fuzz_target!(|body: &[u8]| {
    let parsed = Submission::parse(body);
    assert_eq!(parsed, Submission::parse(body), "parse must be deterministic");
    let submission = match parsed {
        Ok(submission) => submission,
        Err(WireError::TooLarge { size }) => {
            assert!(size > SUBMISSION_BYTES_MAX && size == body.len());
            return;
        }
        Err(error) => {
            assert!(body.len() <= SUBMISSION_BYTES_MAX);
            // The reason goes to orders.dlq: it must say something.
            assert!(!error.to_string().is_empty());
            return;
        }
    };
    assert!(body.len() <= SUBMISSION_BYTES_MAX);
    // A message this parser accepts is a JSON object, as seed 004 §3.2.1 shows
    // it. (Not a check that the whole body is valid JSON: serde skips ignored
    // fields without validating their UTF-8, which is harmless.)
    assert!(
        is_object(body),
        "accepted a submission that is not a JSON object: {}",
        String::from_utf8_lossy(body)
    );
    // Empty ids mean "none": they must never become an idempotency key.
    assert_ne!(submission.message_id.as_deref(), Some(""));
    assert_ne!(submission.correlation_id.as_deref(), Some(""));
    if submission.order_type == OrderType::StopLoss {
        assert_eq!(submission.limit_price, None, "a STOP_LOSS has a stop, never a limit");
    }
    // The ids derived from producers' ids are stable across redeliveries.
    assert_eq!(
        submission.causation_id(),
        Submission::parse(body).ok().and_then(|s| s.causation_id())
    );
    let _ = submission.correlation_id();

    // The refusal announced for it carries what was read, and serializes.
    let refusal = EventMessage::rejected(&submission, "fuzz", "Fuzz", fixed_now());
    let json = serde_json::to_value(&refusal).unwrap_or_else(|e| panic!("OrderRejected must serialize: {e}"));
    assert_eq!(json["event_data"]["order_id"], submission.order_id.to_string());
    assert_eq!(json["event_data"]["symbol"], submission.symbol.as_str());
    let text = serde_json::to_string(&json).unwrap_or_else(|e| panic!("{e}"));
    let back: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back, json, "the published refusal must read back as written");

    check_submission(&Parsed {
        order_id: submission.order_id,
        user_id: submission.user_id,
        symbol: &submission.symbol,
        side: submission.side,
        order_type: submission.order_type,
        quantity: submission.quantity,
        limit_price: submission.limit_price,
        stop_price: submission.stop_price,
    });
});
