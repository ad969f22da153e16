//! Prometheus metrics: the names seed 001 fixes beside the engine's own, in
//! one registry owned by [`Metrics`], and the middleware that counts HTTP
//! requests.
//!
//! Must never label a metric with an unbounded value (a raw path, an order or
//! user id): every label value comes from a small, fixed set, so the number of
//! series stays bounded however many orders flow through.
//!
//! Usage (the route author's side):
//!
//! ```text
//! let metrics = web::Data::new(Metrics::new()?);
//! App::new()
//!     .app_data(metrics.clone())
//!     .wrap(actix_web::middleware::from_fn(telemetry::metrics::count_http_requests))
//!     .route("/metrics", web::get().to(telemetry::metrics::metrics_endpoint))
//! // and in a handler: metrics.count_order("accepted");
//! ```

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderValue, CONTENT_TYPE};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Seed 001's request counter.
pub const HTTP_REQUESTS_TOTAL: &str = "order_service_http_requests_total";
/// Seed 001's order counter, by the status the order reached.
pub const ORDERS_TOTAL: &str = "order_service_orders_total";
/// Seed 001's outbound call latency.
pub const SERVICE_CLIENT_REQUEST_DURATION_SECONDS: &str = "service_client_request_duration_seconds";
pub const APPEND_DURATION_SECONDS: &str = "order_engine_append_duration_seconds";
pub const PROJECTION_LAG_EVENTS: &str = "order_engine_projection_lag_events";
pub const PROJECTION_LAG_SECONDS: &str = "order_engine_projection_lag_seconds";
pub const SAGA_STEP_DURATION_SECONDS: &str = "order_engine_saga_step_duration_seconds";
pub const LIVE_ACTORS: &str = "order_engine_live_actors";
pub const PROJECTION_FAILED: &str = "order_engine_projection_failed";
pub const SAGAS_STALLED: &str = "order_engine_sagas_stalled";
pub const DUPLICATE_SUBMISSIONS_TOTAL: &str = "order_engine_duplicate_submissions_total";
pub const CONFLICTING_SUBMISSIONS_TOTAL: &str = "order_engine_conflicting_submissions_total";
pub const FORWARDED_SUBMISSIONS_TOTAL: &str = "order_engine_forwarded_submissions_total";
/// gRPC calls answered, by method and status code (the HTTP counter's twin).
pub const GRPC_REQUESTS_TOTAL: &str = "order_service_grpc_requests_total";
pub const GRPC_REQUEST_DURATION_SECONDS: &str = "order_service_grpc_request_duration_seconds";
/// Each remote client's breaker: 0 closed, 1 half-open, 2 open.
pub const CIRCUIT_BREAKER_STATE: &str = "service_client_circuit_breaker_state";
/// What each breaker saw, by `event`: succeeded, failed, refused, opened.
pub const CIRCUIT_BREAKER_EVENTS_TOTAL: &str = "service_client_circuit_breaker_events_total";

/// The `route` label of a request no route matched: one series for all of
/// them, whatever paths scanners try.
pub const ROUTE_UNMATCHED: &str = "unmatched";

/// Buckets for calls to other services: a few ms on a LAN up to the 10 s a
/// retried, timed-out call can take.
pub const SERVICE_CLIENT_BUCKETS_SECONDS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Buckets for one log append: sub-millisecond on SQLite up to a contended
/// PostgreSQL commit.
pub const APPEND_BUCKETS_SECONDS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];
/// Buckets for one gRPC call: a read answered from memory in well under a
/// millisecond up to a submission waiting on a slow dependency.
pub const GRPC_BUCKETS_SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];
/// Buckets for one saga step, which includes a balance-service round trip
/// and its retries.
pub const SAGA_STEP_BUCKETS_SECONDS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Every metric the engine exports, registered in its own registry (not the
/// process-global default) so tests and several engines in one process do not
/// collide.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Labels `method`, `route` (the matched pattern, e.g. `/api/v1/orders/{id}`), `status`.
    pub http_requests_total: IntCounterVec,
    /// Label `status`: the order status reached (PENDING, EXECUTED, …) or `rejected`.
    pub orders_total: IntCounterVec,
    /// Labels `service` (balance, accounts), `operation` (reserve, status, …), `outcome` (ok, error, unavailable; `contended` for the embedded ledger's lost races).
    pub service_client_request_duration_seconds: HistogramVec,
    pub append_duration_seconds: prometheus::Histogram,
    /// Label `projection`: events in the log the projection has not applied yet.
    pub projection_lag_events: IntGaugeVec,
    /// Label `projection`: age of the oldest event the projection has not applied yet.
    pub projection_lag_seconds: GaugeVec,
    /// Labels `step` (reserve, deduct, release, …), `outcome` (ok, error, unavailable, contended).
    pub saga_step_duration_seconds: HistogramVec,
    pub live_actors: IntGauge,
    /// Label `projection`: 1 while the projection (or the engine's reactor,
    /// `engine.reactor`) is stopped on a poison event, else 0.
    pub projection_failed: IntGaugeVec,
    /// Sagas whose local retries ran out; they resume after a restart.
    pub sagas_stalled: IntGauge,
    /// Label `source` (amqp): resends of an existing order with the same fields, acked quietly.
    pub duplicate_submissions_total: IntCounterVec,
    /// Label `source` (amqp): resends under an existing order's id with other fields, set aside.
    pub conflicting_submissions_total: IntCounterVec,
    /// Label `source` (amqp): submissions moved to the queue of their user's partition, owned by another process.
    pub forwarded_submissions_total: IntCounterVec,
    /// Labels `method` (one of the service's five RPCs, or `unknown`), `code` (the gRPC status name, e.g. `OK`, `NOT_FOUND`).
    pub grpc_requests_total: IntCounterVec,
    /// Label `method`: time from the request's arrival to its answer's headers.
    pub grpc_request_duration_seconds: HistogramVec,
    /// Label `service`; set at scrape time from the breakers.
    pub circuit_breaker_state: IntGaugeVec,
    /// Labels `service`, `event`; brought up to the breakers' counts at scrape time.
    pub circuit_breaker_events_total: IntCounterVec,
    /// Two scrapes at once would each add the same difference: one at a time.
    breakers_observed: std::sync::Arc<std::sync::Mutex<()>>,
}

impl Metrics {
    /// Creates and registers every metric. Fails only on a programming error
    /// (a duplicate or malformed name), so callers may treat it as fatal at start.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let http_requests_total = IntCounterVec::new(
            Opts::new(
                HTTP_REQUESTS_TOTAL,
                "HTTP requests answered, by method, matched route and status.",
            ),
            &["method", "route", "status"],
        )?;
        let orders_total = IntCounterVec::new(
            Opts::new(ORDERS_TOTAL, "Orders by the status they reached."),
            &["status"],
        )?;
        let service_client_request_duration_seconds = HistogramVec::new(
            HistogramOpts::new(
                SERVICE_CLIENT_REQUEST_DURATION_SECONDS,
                "Duration of calls to other services, retries included.",
            )
            .buckets(SERVICE_CLIENT_BUCKETS_SECONDS.to_vec()),
            &["service", "operation", "outcome"],
        )?;
        let append_duration_seconds = prometheus::Histogram::with_opts(
            HistogramOpts::new(APPEND_DURATION_SECONDS, "Duration of one append to the event log.")
                .buckets(APPEND_BUCKETS_SECONDS.to_vec()),
        )?;
        let projection_lag_events = IntGaugeVec::new(
            Opts::new(
                PROJECTION_LAG_EVENTS,
                "Events in the log a projection has not applied yet.",
            ),
            &["projection"],
        )?;
        let projection_lag_seconds = GaugeVec::new(
            Opts::new(
                PROJECTION_LAG_SECONDS,
                "Age of the oldest event a projection has not applied yet.",
            ),
            &["projection"],
        )?;
        let saga_step_duration_seconds = HistogramVec::new(
            HistogramOpts::new(SAGA_STEP_DURATION_SECONDS, "Duration of one saga step.")
                .buckets(SAGA_STEP_BUCKETS_SECONDS.to_vec()),
            &["step", "outcome"],
        )?;
        let live_actors = IntGauge::new(LIVE_ACTORS, "Order actors currently in memory.")?;
        let projection_failed = IntGaugeVec::new(
            Opts::new(
                PROJECTION_FAILED,
                "1 while a projection (or engine.reactor) is stopped on an event it cannot apply.",
            ),
            &["projection"],
        )?;
        let sagas_stalled = IntGauge::new(
            SAGAS_STALLED,
            "Sagas that ran out of local retries; a restart resumes them.",
        )?;
        let duplicate_submissions_total = IntCounterVec::new(
            Opts::new(
                DUPLICATE_SUBMISSIONS_TOTAL,
                "Resubmissions of an existing order with the same fields, acknowledged without a refusal.",
            ),
            &["source"],
        )?;
        let conflicting_submissions_total = IntCounterVec::new(
            Opts::new(
                CONFLICTING_SUBMISSIONS_TOTAL,
                "Resubmissions under an existing order's id with other fields, set aside in the dead-letter queue.",
            ),
            &["source"],
        )?;
        let forwarded_submissions_total = IntCounterVec::new(
            Opts::new(
                FORWARDED_SUBMISSIONS_TOTAL,
                "Submissions taken from orders.submit and moved to the queue of their user's partition, which another process owns.",
            ),
            &["source"],
        )?;
        let grpc_requests_total = IntCounterVec::new(
            Opts::new(GRPC_REQUESTS_TOTAL, "gRPC calls answered, by method and status code."),
            &["method", "code"],
        )?;
        let grpc_request_duration_seconds = HistogramVec::new(
            HistogramOpts::new(GRPC_REQUEST_DURATION_SECONDS, "Duration of one gRPC call, by method.")
                .buckets(GRPC_BUCKETS_SECONDS.to_vec()),
            &["method"],
        )?;
        let circuit_breaker_state = IntGaugeVec::new(
            Opts::new(
                CIRCUIT_BREAKER_STATE,
                "A remote client's circuit breaker: 0 closed, 1 half-open, 2 open.",
            ),
            &["service"],
        )?;
        let circuit_breaker_events_total = IntCounterVec::new(
            Opts::new(
                CIRCUIT_BREAKER_EVENTS_TOTAL,
                "What a remote client's circuit breaker saw: calls succeeded, failed or refused, and openings.",
            ),
            &["service", "event"],
        )?;

        registry.register(Box::new(http_requests_total.clone()))?;
        registry.register(Box::new(orders_total.clone()))?;
        registry.register(Box::new(service_client_request_duration_seconds.clone()))?;
        registry.register(Box::new(append_duration_seconds.clone()))?;
        registry.register(Box::new(projection_lag_events.clone()))?;
        registry.register(Box::new(projection_lag_seconds.clone()))?;
        registry.register(Box::new(saga_step_duration_seconds.clone()))?;
        registry.register(Box::new(live_actors.clone()))?;
        registry.register(Box::new(projection_failed.clone()))?;
        registry.register(Box::new(sagas_stalled.clone()))?;
        registry.register(Box::new(duplicate_submissions_total.clone()))?;
        registry.register(Box::new(conflicting_submissions_total.clone()))?;
        registry.register(Box::new(forwarded_submissions_total.clone()))?;
        registry.register(Box::new(grpc_requests_total.clone()))?;
        registry.register(Box::new(grpc_request_duration_seconds.clone()))?;
        registry.register(Box::new(circuit_breaker_state.clone()))?;
        registry.register(Box::new(circuit_breaker_events_total.clone()))?;

        Ok(Self {
            registry,
            http_requests_total,
            orders_total,
            service_client_request_duration_seconds,
            append_duration_seconds,
            projection_lag_events,
            projection_lag_seconds,
            saga_step_duration_seconds,
            live_actors,
            projection_failed,
            sagas_stalled,
            duplicate_submissions_total,
            conflicting_submissions_total,
            forwarded_submissions_total,
            grpc_requests_total,
            grpc_request_duration_seconds,
            circuit_breaker_state,
            circuit_breaker_events_total,
            breakers_observed: std::sync::Arc::new(std::sync::Mutex::new(())),
        })
    }

    /// Brings the breaker series up to `breakers` (called at scrape time).
    /// The counters only ever move up, to the breaker's own count, so they
    /// stay counters however often they are scraped.
    pub fn observe_breakers(&self, breakers: &[(&'static str, crate::clients::BreakerSnapshot)]) {
        use crate::clients::BreakerState;
        let _one_at_a_time = self
            .breakers_observed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (service, b) in breakers {
            let service: &str = service;
            let state = match b.state {
                BreakerState::Closed => 0,
                BreakerState::HalfOpen => 1,
                BreakerState::Open => 2,
            };
            self.circuit_breaker_state.with_label_values(&[service]).set(state);
            for (event, total) in [
                ("succeeded", b.succeeded_total),
                ("failed", b.failed_total),
                ("refused", b.refused_total),
                ("opened", b.opened_total),
            ] {
                let counter = self.circuit_breaker_events_total.with_label_values(&[service, event]);
                counter.inc_by(total.saturating_sub(counter.get()));
            }
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Counts one order reaching `status` (an order status name or `rejected`).
    pub fn count_order(&self, status: &str) {
        self.orders_total.with_label_values(&[status]).inc();
    }

    /// Counts one answered HTTP request. `route` must be a route pattern or
    /// [`ROUTE_UNMATCHED`], never a raw path.
    pub fn count_http_request(&self, method: &str, route: &str, status: u16) {
        self.http_requests_total
            .with_label_values(&[method, route, &status.to_string()])
            .inc();
    }

    /// Every metric in the Prometheus text exposition format. A vector metric
    /// appears once it has at least one series.
    /// Adds metrics kept elsewhere (the settings layer's, created before
    /// the engine) to this registry, so `/metrics` exports them too.
    pub fn register(&self, collector: Box<dyn prometheus::core::Collector>) -> Result<(), prometheus::Error> {
        self.registry.register(collector)
    }

    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding only fails on a malformed family, which `new` rules out; say so
        // in the output rather than panic or serve an empty page silently.
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(%error, "rendering metrics failed");
            return format!("# rendering metrics failed: {error}\n");
        }
        String::from_utf8_lossy(&buffer).into_owned()
    }
}

/// Middleware for `actix_web::middleware::from_fn`: counts every answered
/// request in `order_service_http_requests_total` with the matched route
/// pattern as `route`. Needs `web::Data<Metrics>` in the app data; without it
/// requests pass uncounted.
///
/// Errors returned by inner services (extractor failures) are counted with
/// the status their response will carry.
pub async fn count_http_requests(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let metrics = req.app_data::<web::Data<Metrics>>().cloned();
    let method = req.method().as_str().to_owned();
    // The pattern, not the path: `/api/v1/orders/{id}` is one series, however many ids.
    let route = req.match_pattern().unwrap_or_else(|| ROUTE_UNMATCHED.to_owned());
    let result = next.call(req).await;
    if let Some(metrics) = metrics {
        let status = match &result {
            Ok(response) => response.status(),
            Err(error) => error.as_response_error().status_code(),
        };
        metrics.count_http_request(&method, &route, status.as_u16());
    }
    result
}

/// A `GET /metrics` handler serving [`Metrics::render`].
pub async fn metrics_endpoint(metrics: web::Data<Metrics>) -> HttpResponse {
    let mut response = HttpResponse::Ok().body(metrics.render());
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(prometheus::TEXT_FORMAT));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test as actix_test;
    use actix_web::{middleware::from_fn, App, HttpResponse};

    #[test]
    fn every_metric_name_appears_in_the_rendered_text() {
        // Proves the seed's names and the engine's own are exported exactly as spelled.
        let metrics = Metrics::new().unwrap();
        metrics.count_http_request("GET", "/api/v1/orders/{id}", 200);
        metrics.count_order("EXECUTED");
        metrics
            .service_client_request_duration_seconds
            .with_label_values(&["balance", "reserve", "ok"])
            .observe(0.02);
        metrics.append_duration_seconds.observe(0.001);
        metrics.projection_lag_events.with_label_values(&["orders"]).set(3);
        metrics.projection_lag_seconds.with_label_values(&["orders"]).set(0.5);
        metrics
            .saga_step_duration_seconds
            .with_label_values(&["reserve", "ok"])
            .observe(0.01);
        metrics.live_actors.set(7);
        metrics.projection_failed.with_label_values(&["orders"]).set(0);
        metrics.sagas_stalled.set(0);
        metrics.duplicate_submissions_total.with_label_values(&["amqp"]).inc();
        metrics.conflicting_submissions_total.with_label_values(&["amqp"]).inc();
        metrics.forwarded_submissions_total.with_label_values(&["amqp"]).inc();
        metrics
            .grpc_requests_total
            .with_label_values(&["GetOrderStatus", "OK"])
            .inc();
        metrics
            .grpc_request_duration_seconds
            .with_label_values(&["GetOrderStatus"])
            .observe(0.0004);

        let text = metrics.render();
        for name in [
            "order_service_http_requests_total",
            "order_service_orders_total",
            "service_client_request_duration_seconds",
            "order_engine_append_duration_seconds",
            "order_engine_projection_lag_events",
            "order_engine_projection_lag_seconds",
            "order_engine_saga_step_duration_seconds",
            "order_engine_live_actors",
            "order_engine_projection_failed",
            "order_engine_sagas_stalled",
            "order_engine_duplicate_submissions_total",
            "order_engine_conflicting_submissions_total",
            "order_engine_forwarded_submissions_total",
            "order_service_grpc_requests_total",
            "order_service_grpc_request_duration_seconds",
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} missing from:\n{text}"
            );
        }
        assert!(text.contains("# TYPE order_service_http_requests_total counter"));
        assert!(text.contains("# TYPE service_client_request_duration_seconds histogram"));
        assert!(text.contains("# TYPE order_engine_live_actors gauge"));
        assert!(
            text.contains(r#"order_service_orders_total{status="EXECUTED"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn two_instances_do_not_share_series() {
        // Proves each Metrics owns its registry (no global state between tests or engines).
        let a = Metrics::new().unwrap();
        let b = Metrics::new().unwrap();
        a.count_order("EXECUTED");
        assert!(!b.render().contains("order_service_orders_total{"));
    }

    #[actix_web::test]
    async fn the_route_label_is_the_pattern_not_the_path() {
        // Proves the middleware bounds cardinality: two ids, one series; unknown paths share one.
        let metrics = web::Data::new(Metrics::new().unwrap());
        let app = actix_test::init_service(
            App::new()
                .app_data(metrics.clone())
                .wrap(from_fn(count_http_requests))
                .service(
                    web::scope("/api/v1")
                        .route("/orders/{id}", web::get().to(|| async { HttpResponse::Ok().finish() })),
                )
                .route("/metrics", web::get().to(metrics_endpoint)),
        )
        .await;
        for path in ["/api/v1/orders/1", "/api/v1/orders/2", "/nope/a", "/nope/b"] {
            actix_test::call_service(&app, actix_test::TestRequest::get().uri(path).to_request()).await;
        }
        let response =
            actix_test::call_service(&app, actix_test::TestRequest::get().uri("/metrics").to_request()).await;
        assert_eq!(
            response.headers().get(CONTENT_TYPE).unwrap(),
            "text/plain; version=0.0.4"
        );
        let text = String::from_utf8(actix_test::read_body(response).await.to_vec()).unwrap();
        assert!(
            text.contains(
                r#"order_service_http_requests_total{method="GET",route="/api/v1/orders/{id}",status="200"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"order_service_http_requests_total{method="GET",route="unmatched",status="404"} 2"#),
            "{text}"
        );
        assert!(!text.contains("/api/v1/orders/1"), "{text}");
    }
}
