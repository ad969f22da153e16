//! The event log's vocabulary: envelopes, metadata, stream ids, and the codec
//! that turns typed events into stored rows and back (upcasting old shapes).
//!
//! No I/O here: the store (`crate::store`) moves these values to and from a database.

mod codec;
mod envelope;
mod payload;
mod stream_id;

pub use codec::{decode, encode, DecodeError, EventFamily, UpcastError};
pub use envelope::{EventMetadata, NewEvent, RecordedEvent, TraceContext};
pub use payload::{write_canonical, write_json_string, Payload};
pub use stream_id::{StreamId, StreamIdError, STREAM_ID_LEN_MAX};
