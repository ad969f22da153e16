//! Readers of the whole log: the tail that projections and publishers follow.
//!
//! Never writes to the log.

mod tail;

pub use tail::{LogTail, TAIL_POLL_INTERVAL};
