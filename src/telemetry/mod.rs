//! Logging set-up: human-readable by default, JSON lines with LOG_FORMAT=json;
//! and the Prometheus metrics (`metrics`). Never installs a second global
//! subscriber over the first.

pub mod metered;
pub mod metrics;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. RUST_LOG filters (default `info`).
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        // Logs on stderr: stdout is for what a command prints (a token, a report).
        .with_writer(std::io::stderr);
    // A second init (tests) is harmless: the first subscriber stays.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
