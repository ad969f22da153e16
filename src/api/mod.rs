//! The HTTP API: for now only the problem-details type every error response
//! uses. Routes come later; nothing here may talk to the store directly.

pub mod problem;
