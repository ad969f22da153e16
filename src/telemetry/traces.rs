//! OpenTelemetry traces (issue 14): the OTLP exporter's layer, on only when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and the W3C trace context every hop
//! continues and carries on (HTTP, AMQP, the order actor, the log, the saga,
//! the publishers). When off, nothing here exports, no layer is added, no
//! span of the hot path is created and the trace context passes through
//! unchanged, as it did before traces existed. Never installs a subscriber
//! itself (`telemetry::init` does, once).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing::Span;
use tracing_opentelemetry::{OpenTelemetryLayer, OpenTelemetrySpanExt};
use tracing_subscriber::registry::LookupSpan;

use crate::events::TraceContext;

/// The service name the resource carries unless `OTEL_SERVICE_NAME` says otherwise.
pub const SERVICE_NAME_DEFAULT: &str = "order-engine";
/// How often finished spans are sent; the SDK's own default (5 s).
pub const EXPORT_INTERVAL_DEFAULT: Duration = Duration::from_secs(5);
/// What the OTLP/HTTP specification appends to the base endpoint for traces.
const TRACES_PATH: &str = "/v1/traces";

/// Set once the exporter's layer is installed: every hop asks this before
/// making a span or reading a trace context, so traces cost one atomic load when off.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (an OTLP endpoint was configured and the layer installed).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Where and as whom spans are exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceConfig {
    /// The collector's base URL (`OTEL_EXPORTER_OTLP_ENDPOINT`); spans go to `<endpoint>/v1/traces`.
    pub endpoint: String,
    /// The resource's `service.name` (`OTEL_SERVICE_NAME`, default `order-engine`).
    pub service_name: String,
    /// How often the batch processor sends what has finished (tests shorten it).
    pub export_interval: Duration,
}

impl TraceConfig {
    /// From the environment through `lookup`; `None` (traces off) when no endpoint is set.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Option<Self> {
        let endpoint = lookup("OTEL_EXPORTER_OTLP_ENDPOINT").filter(|e| !e.trim().is_empty())?;
        Some(Self {
            endpoint: endpoint.trim().to_owned(),
            service_name: lookup("OTEL_SERVICE_NAME")
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(|| SERVICE_NAME_DEFAULT.to_owned()),
            export_interval: EXPORT_INTERVAL_DEFAULT,
        })
    }

    /// The URL spans are POSTed to.
    pub fn traces_url(&self) -> String {
        format!("{}{TRACES_PATH}", self.endpoint.trim_end_matches('/'))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("cannot build the OTLP exporter for {endpoint}: {reason}")]
    Exporter { endpoint: String, reason: String },
    #[error("exporting spans: {0}")]
    Export(String),
}

/// The tracer provider behind the layer: flush it before asserting on what
/// a collector received, shut it down before the process exits so the last
/// spans are sent.
#[derive(Debug, Clone)]
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// Sends every finished span now.
    pub fn flush(&self) -> Result<(), TraceError> {
        self.provider
            .force_flush()
            .map_err(|error| TraceError::Export(error.to_string()))
    }

    /// Sends what is left and stops the exporter's thread.
    pub fn shutdown(&self) -> Result<(), TraceError> {
        self.provider
            .shutdown()
            .map_err(|error| TraceError::Export(error.to_string()))
    }
}

/// The OTLP/HTTP (protobuf) exporter behind a batch processor, as a tracing
/// layer, and its provider. Marks traces enabled: call it only to install the layer.
pub(super) fn layer<S>(config: &TraceConfig) -> Result<(OpenTelemetryLayer<S, SdkTracer>, Traces), TraceError>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(config.traces_url())
        .build()
        .map_err(|error| TraceError::Exporter {
            endpoint: config.traces_url(),
            reason: error.to_string(),
        })?;
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(config.export_interval)
                .build(),
        )
        .build();
    let resource = Resource::builder()
        .with_service_name(config.service_name.clone())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer(SERVICE_NAME_DEFAULT);
    ENABLED.store(true, Ordering::Relaxed);
    Ok((
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            // Thread and code location attributes are noise on every span of the hot path.
            .with_threads(false)
            .with_location(false),
        Traces { provider },
    ))
}

/// An info span from `make` when traces are exported; otherwise the disabled
/// span, so a hop off the hot path's log lines costs nothing when off.
pub fn span(make: impl FnOnce() -> Span) -> Span {
    if enabled() {
        make()
    } else {
        Span::none()
    }
}

/// Makes `span` continue the trace `parent` names (a W3C traceparent from a
/// header, or an event's stored context) instead of its place in the
/// current task. Call before the span is first entered.
pub fn continue_trace(span: &Span, parent: Option<&TraceContext>) {
    let Some(parent) = parent.filter(|_| enabled()) else {
        return;
    };
    let context = TraceContextPropagator::new().extract(&Carrier(parent));
    if context.span().span_context().is_valid() {
        // Refused only for a span already started or disabled: it stays where it is.
        let _ = span.set_parent(context);
    }
}

/// The trace context to carry on from here (into an event's metadata, an
/// AMQP header, an HTTP call): the current span's when traces are exported,
/// else `fallback` unchanged (the caller's own, passed through).
pub fn current(fallback: Option<TraceContext>) -> Option<TraceContext> {
    if !enabled() {
        return fallback;
    }
    let context = Span::current().context();
    if !context.span().span_context().is_valid() {
        return fallback;
    }
    let mut fields: HashMap<String, String> = HashMap::with_capacity(2);
    TraceContextPropagator::new().inject_context(&context, &mut fields);
    let traceparent = fields.remove("traceparent")?;
    Some(TraceContext {
        traceparent,
        tracestate: fields.remove("tracestate").filter(|s| !s.is_empty()),
    })
}

/// A copy of `trace` for a later hop to continue, when traces are exported;
/// off, `None` without copying (nothing continues it then).
pub fn kept(trace: Option<&TraceContext>) -> Option<TraceContext> {
    trace.filter(|_| enabled()).cloned()
}

/// A stored or received trace context as the propagator reads it.
struct Carrier<'a>(&'a TraceContext);

impl Extractor for Carrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => Some(self.0.traceparent.as_str()),
            "tracestate" => self.0.tracestate.as_deref(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_endpoint_means_no_traces() {
        // Proves traces are off, and free, unless OTEL_EXPORTER_OTLP_ENDPOINT is set (blank counts as unset).
        assert_eq!(TraceConfig::from_lookup(|_| None), None);
        assert_eq!(
            TraceConfig::from_lookup(|k| (k == "OTEL_EXPORTER_OTLP_ENDPOINT").then(|| "  ".to_owned())),
            None
        );
    }

    #[test]
    fn the_endpoint_is_the_base_and_the_service_name_is_honoured() {
        // Proves spans go to <endpoint>/v1/traces as the OTLP/HTTP spec says, and OTEL_SERVICE_NAME names the service.
        let config = TraceConfig::from_lookup(|k| match k {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://collector:4318/".to_owned()),
            "OTEL_SERVICE_NAME" => Some("orders-eu".to_owned()),
            _ => None,
        })
        .unwrap();
        assert_eq!(config.traces_url(), "http://collector:4318/v1/traces");
        assert_eq!(config.service_name, "orders-eu");
        let default = TraceConfig::from_lookup(|k| {
            (k == "OTEL_EXPORTER_OTLP_ENDPOINT").then(|| "http://127.0.0.1:4318".to_owned())
        })
        .unwrap();
        assert_eq!(default.service_name, SERVICE_NAME_DEFAULT);
    }

    #[test]
    fn when_off_the_callers_trace_passes_through_unchanged() {
        // Proves the pre-OpenTelemetry behaviour holds with traces off: the incoming context is carried as it came.
        let incoming = TraceContext {
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            tracestate: Some("k=v".into()),
        };
        // Unit tests never install the exporter's layer.
        assert!(!enabled());
        assert_eq!(current(Some(incoming.clone())), Some(incoming));
        assert!(span(|| tracing::info_span!("x")).is_none());
    }
}
