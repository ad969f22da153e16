//! Fault points in the append path, for tests that must hold, delay or abort a
//! transaction at the worst moment. Unset in production.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::Appended;

/// Runs after an append's rows are written and before its COMMIT. Returning an
/// error rolls the whole batch back, as a crash before commit would.
pub type BeforeCommitHook = Arc<dyn Fn(&[Appended]) -> BoxFuture<'static, Result<(), FaultInjected>> + Send + Sync>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FaultInjected(pub String);
