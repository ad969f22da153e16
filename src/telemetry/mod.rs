//! Logging set-up: human-readable by default, JSON lines with LOG_FORMAT=json;
//! OpenTelemetry traces when an OTLP endpoint is configured (`traces`); and
//! the Prometheus metrics (`metrics`). Never installs a second global
//! subscriber over the first.

pub mod metered;
pub mod metrics;
pub mod traces;

use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

pub use traces::{TraceConfig, TraceError, Traces};

/// Installs the global subscriber. RUST_LOG filters (default `info`). With
/// `traces` (OTEL_EXPORTER_OTLP_ENDPOINT set), spans are also exported over
/// OTLP and the returned handle flushes and shuts the exporter down; without
/// it no layer is added and nothing is exported.
pub fn init(json: bool, traces: Option<&TraceConfig>) -> Result<Option<Traces>, TraceError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Reloadable: the config service may change the level while the engine runs.
    let (filter, handle) = reload::Layer::new(filter);
    let _ = LOG_FILTER.set(handle);
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(true)
        // Logs on stderr: stdout is for what a command prints (a token, a report).
        .with_writer(std::io::stderr);
    let fmt: Box<dyn Layer<Filtered> + Send + Sync> = if json { fmt.json().boxed() } else { fmt.boxed() };
    // A second init (tests) is harmless: the first subscriber stays.
    match traces {
        None => {
            let _ = tracing_subscriber::registry().with(filter).with(fmt).try_init();
            Ok(None)
        }
        Some(config) => {
            let (layer, handle) = traces::layer(config)?;
            let _ = tracing_subscriber::registry()
                .with(filter)
                .with(fmt)
                .with(layer)
                .try_init();
            Ok(Some(handle))
        }
    }
}

/// The registry under the reloadable filter, which the other layers sit on.
type Filtered = tracing_subscriber::layer::Layered<reload::Layer<EnvFilter, Registry>, Registry>;

/// The installed filter, for [`set_log_level`]; unset until [`init`].
static LOG_FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Replaces the log filter (`info`, `order_engine=debug,warn`) without a
/// restart. Refused when the directives do not parse or nothing is installed.
pub fn set_log_level(directives: &str) -> Result<(), String> {
    let filter = EnvFilter::try_new(directives).map_err(|e| format!("{directives:?}: {e}"))?;
    let handle = LOG_FILTER.get().ok_or("no log filter is installed")?;
    handle.reload(filter).map_err(|e| e.to_string())?;
    tracing::info!(filter = directives, "log level changed");
    Ok(())
}
