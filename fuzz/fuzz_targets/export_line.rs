//! Fuzz target: one line of an `order-engine export` file as `import` reads
//! it (`ChainedEvent` from JSON), then what the tools do with it: verify its
//! chain, decode its payload. Must never open a database.
#![no_main]

use libfuzzer_sys::fuzz_target;
use order_engine::account::AccountEvent;
use order_engine::order::OrderEvent;
use order_engine::saga::SagaEvent;
use order_engine::store::chain::stream_link;
use order_engine::store::{ChainVerifier, ChainedEvent, EventHash};
use order_engine_fuzz::round_trip;

fuzz_target!(|line: &[u8]| {
    let Ok(line) = std::str::from_utf8(line) else {
        return;
    };
    let Ok(event) = serde_json::from_str::<ChainedEvent>(line) else {
        return;
    };
    // export ∘ import: the line written back reads as the same event, and
    // writing that again gives the same bytes.
    let written = serde_json::to_string(&event).unwrap_or_else(|e| panic!("an imported event must export: {e}"));
    assert!(!written.contains('\n'), "an exported event must stay on one line");
    let again: ChainedEvent =
        serde_json::from_str(&written).unwrap_or_else(|e| panic!("an exported line must import: {e}\n{written}"));
    assert_eq!(again, event, "export then import changed the event");
    assert_eq!(serde_json::to_string(&again).ok().as_deref(), Some(written.as_str()));
    // Its hash does not depend on how the line spelled it: a log verifies
    // after any number of export/import hops.
    assert_eq!(
        stream_link(&EventHash::GENESIS, &again.event),
        stream_link(&EventHash::GENESIS, &event.event),
    );

    let mut verifier = ChainVerifier::new();
    let _ = verifier.check(&event);
    let summary = verifier.finish();
    assert_eq!(summary.events, 1);

    // Whatever a payload holds, decoding refuses it or reads an event that
    // encodes back to itself; it never panics.
    let recorded = &event.event;
    if let Ok(decoded) = order_engine::events::decode::<OrderEvent>(recorded) {
        assert_eq!(round_trip(&decoded).as_ref(), Some(&decoded));
    }
    if let Ok(decoded) = order_engine::events::decode::<SagaEvent>(recorded) {
        assert_eq!(round_trip(&decoded).as_ref(), Some(&decoded));
    }
    if let Ok(decoded) = order_engine::events::decode::<AccountEvent>(recorded) {
        assert_eq!(round_trip(&decoded).as_ref(), Some(&decoded));
    }
});
