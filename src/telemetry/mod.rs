//! Logging set-up: human-readable by default, JSON lines with LOG_FORMAT=json;
//! OpenTelemetry traces when an OTLP endpoint is configured (`traces`); and
//! the Prometheus metrics (`metrics`). Never installs a second global
//! subscriber over the first.

pub mod metered;
pub mod metrics;
pub mod traces;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

pub use traces::{TraceConfig, TraceError, Traces};

/// Installs the global subscriber. RUST_LOG filters (default `info`). With
/// `traces` (OTEL_EXPORTER_OTLP_ENDPOINT set), spans are also exported over
/// OTLP and the returned handle flushes and shuts the exporter down; without
/// it no layer is added and nothing is exported.
pub fn init(json: bool, traces: Option<&TraceConfig>) -> Result<Option<Traces>, TraceError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(true)
        // Logs on stderr: stdout is for what a command prints (a token, a report).
        .with_writer(std::io::stderr);
    let fmt: Box<dyn Layer<Registry> + Send + Sync> = if json { fmt.json().boxed() } else { fmt.boxed() };
    // A second init (tests) is harmless: the first subscriber stays.
    match traces {
        None => {
            let _ = tracing_subscriber::registry().with(fmt).with(filter).try_init();
            Ok(None)
        }
        Some(config) => {
            let (layer, handle) = traces::layer(config)?;
            let _ = tracing_subscriber::registry()
                .with(fmt)
                .with(layer)
                .with(filter)
                .try_init();
            Ok(Some(handle))
        }
    }
}
