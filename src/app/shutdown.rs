//! The stop's building blocks: the signals that start it and the one
//! deadline every step of it runs against. Never exits the process: a step
//! that overruns is a typed error for the binary to act on.

use std::future::Future;
use std::time::Duration;

use super::AppError;

/// Waits for SIGTERM or SIGINT (Ctrl-C); returns its name.
pub async fn stop_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => tokio::select! {
                _ = terminate.recv() => "SIGTERM",
                _ = tokio::signal::ctrl_c() => "SIGINT",
            },
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the engine gracefully");
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}

/// Runs one step of the stop before `deadline`. A step still running then (a
/// database that never answers, a broker that never closes) is abandoned and
/// named in the error, so the caller can end the process at the deadline.
pub(super) async fn within<F: Future>(
    deadline: tokio::time::Instant,
    timeout: Duration,
    step: &'static str,
    future: F,
) -> Result<F::Output, AppError> {
    tokio::time::timeout_at(deadline, future)
        .await
        .map_err(|_| AppError::ShutdownTimedOut { step, timeout })
}
