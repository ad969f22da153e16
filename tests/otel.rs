//! OpenTelemetry traces end to end (issue 14, item 4): an in-process OTLP/HTTP
//! receiver collects what the engine exports while one order submitted on
//! orders.submit goes through to positions.updates, and its spans form one
//! trace, parent to child, from the producer's traceparent to the publish.
//!
//! One test in this binary: it installs the global subscriber with the
//! exporter's layer, which no other test should run under.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use common::amqp::{producer, publish, seed_submission, Collector, TestBroker};
use common::engine::{eventually, start};
use common::http::{spawn_app, token};
use common::TestDb;
use lapin::types::{AMQPValue, FieldTable, LongString};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use order_engine::amqp::{self, OrderSubmitter};
use order_engine::clock::SystemClock;
use order_engine::telemetry::{self, TraceConfig};
use prost::Message;
use rust_decimal_macros::dec;
use serde_json::json;
use uuid::Uuid;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const REMOTE_PARENT: &str = "00f067aa0ba902b7";
/// The HTTP caller's trace and span, apart from the AMQP producer's.
const HTTP_TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const HTTP_REMOTE_PARENT: &str = "b7ad6b7169203331";
const WAIT: Duration = Duration::from_secs(30);

/// What the receiver was sent: every span, and every resource's attributes.
#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    resources: Vec<Vec<KeyValue>>,
}

/// An OTLP/HTTP receiver on port 0: decodes each POST /v1/traces as the
/// protobuf `ExportTraceServiceRequest` the specification defines.
async fn receiver() -> (u16, Arc<Mutex<Received>>) {
    let received = Arc::new(Mutex::new(Received::default()));
    let state = web::Data::from(Arc::clone(&received));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(web::PayloadConfig::new(64 << 20))
            .route(
                "/v1/traces",
                web::post().to(|body: web::Bytes, received: web::Data<Mutex<Received>>| async move {
                    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
                        return HttpResponse::BadRequest().finish();
                    };
                    let mut received = received.lock().unwrap();
                    for resource_spans in request.resource_spans {
                        received
                            .resources
                            .push(resource_spans.resource.map(|r| r.attributes).unwrap_or_default());
                        for scope in resource_spans.scope_spans {
                            received.spans.extend(scope.spans);
                        }
                    }
                    // An empty ExportTraceServiceResponse is zero bytes.
                    HttpResponse::Ok().content_type("application/x-protobuf").finish()
                }),
            )
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let port = server.addrs()[0].port();
    actix_web::rt::spawn(server.run());
    (port, received)
}

fn text(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .map(|value| match value {
            AnyValue::StringValue(s) => s.clone(),
            other => format!("{other:?}"),
        })
}

/// Every span in `spans` belongs to the trace `trace_id`.
fn assert_in_trace(spans: &[&Span], trace_id: &str) {
    for span in spans {
        assert_eq!(
            hex::encode(&span.trace_id),
            trace_id,
            "span {} left the trace",
            span.name
        );
    }
}

#[actix_rt::test]
async fn one_amqp_order_is_one_trace_from_the_incoming_traceparent_to_the_position_update() {
    // Proves that with OTEL_EXPORTER_OTLP_ENDPOINT's configuration the spans of an AMQP-submitted order all carry the producer's trace id and link parent to child from its traceparent through the submission, the order's append and the saga to the positions.updates publish, under the service's name and version; and that an HTTP submission's traceparent is continued the same way.
    let test = "otel::one_amqp_order_is_one_trace";
    let Some(db) = TestDb::postgres(test).await else {
        return;
    };
    let Some(broker) = TestBroker::new(test).await else {
        return;
    };
    let Some(http_db) = TestDb::postgres("otel::one_http_order_is_one_trace").await else {
        return;
    };
    let (port, received) = receiver().await;
    let config = TraceConfig {
        export_interval: Duration::from_millis(100),
        ..TraceConfig::from_lookup(|name| match name {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some(format!("http://127.0.0.1:{port}")),
            "OTEL_SERVICE_NAME" => Some("order-engine-under-test".to_owned()),
            _ => None,
        })
        .unwrap()
    };
    let traces = telemetry::init(false, Some(&config)).unwrap().unwrap();
    assert!(telemetry::traces::enabled());

    let engine = start(&db).await;
    engine.market.set_price("AAPL", dec!(150.25)).unwrap();
    let handle = amqp::start(
        broker.config(),
        Arc::clone(&engine.engine) as Arc<dyn OrderSubmitter>,
        Arc::clone(&engine.store.store),
        Arc::new(SystemClock),
        None,
    );
    assert!(handle.wait_connected(WAIT).await, "the AMQP layer never connected");
    let reader = broker.connect("reader").await;
    let positions = Collector::start(&reader, "positions.updates").await;

    let order_id = Uuid::new_v4();
    let mut headers = FieldTable::default();
    headers.insert(
        "traceparent".into(),
        AMQPValue::LongString(LongString::from(format!("00-{TRACE_ID}-{REMOTE_PARENT}-01"))),
    );
    let body = serde_json::to_vec(&seed_submission(order_id, Uuid::new_v4(), "AAPL", json!(10))).unwrap();
    publish(&producer(&reader).await, &body, headers).await;
    eventually("one position update", WAIT, || async { positions.len() >= 1 }).await;

    // The message carries the trace on, from the publish's own span.
    let update = positions.all().remove(0);
    let traceparent = update
        .header("traceparent")
        .expect("a traceparent on the position update");
    assert!(traceparent.starts_with(&format!("00-{TRACE_ID}-")), "{traceparent}");
    assert!(
        !traceparent.contains(REMOTE_PARENT),
        "the publish's own span, not the producer's: {traceparent}"
    );

    // An order over HTTP, on an app of its own, under another caller's trace.
    let app = spawn_app(&http_db).await;
    app.engine.market.set_price("AAPL", dec!(150.25)).unwrap();
    let http_user = Uuid::new_v4();
    let answer = app
        .client
        .post(format!("{}/api/v1/orders", app.address))
        .bearer_auth(token(http_user))
        .header("traceparent", format!("00-{HTTP_TRACE_ID}-{HTTP_REMOTE_PARENT}-01"))
        .json(&json!({"symbol": "AAPL", "order_type": "MARKET", "order_side": "BUY", "quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    let http_order: serde_json::Value = answer.json().await.unwrap();
    let http_order = http_order["order_id"].as_str().unwrap().to_owned();

    let bearer = token(http_user);
    eventually("the HTTP order executed", WAIT, || {
        let (app, path, bearer) = (&app, format!("/api/v1/orders/{http_order}/status"), bearer.clone());
        async move { app.get_json(&path, Some(&bearer)).await["status"] == "EXECUTED" }
    })
    .await;

    // The publish span ends once the broker confirmed it: flush until it is in.
    let is_position_publish = |s: &Span| {
        s.name == "amqp.publish" && text(&s.attributes, "routing_key").as_deref() == Some("positions.updates")
    };
    eventually("the positions.updates publish span exported", WAIT, || {
        traces.flush().unwrap();
        let found = received.lock().unwrap().spans.iter().any(is_position_publish);
        async move { found }
    })
    .await;
    let received = std::mem::take(&mut *received.lock().unwrap());

    // Every span of the order is in the producer's trace.
    let order = order_id.to_string();
    let of_order: Vec<&Span> = received
        .spans
        .iter()
        .filter(|s| text(&s.attributes, "order_id").as_deref() == Some(order.as_str()))
        .collect();
    let names: Vec<&str> = of_order.iter().map(|s| s.name.as_str()).collect();
    for wanted in [
        "amqp.submission",
        "order.command",
        "order.append",
        "saga.step",
        "amqp.publish",
    ] {
        assert!(names.contains(&wanted), "no {wanted} span among the order's: {names:?}");
    }
    assert_in_trace(&of_order, TRACE_ID);

    // From the publish, parent by parent, back to the producer's span.
    let by_id: HashMap<Vec<u8>, &Span> = received.spans.iter().map(|s| (s.span_id.clone(), s)).collect();
    let mut span: &Span = received.spans.iter().find(|s| is_position_publish(s)).unwrap();
    let mut chain = vec![span.name.clone()];
    while let Some(parent) = by_id.get(&span.parent_span_id) {
        span = *parent;
        chain.push(span.name.clone());
    }
    assert_eq!(
        hex::encode(&span.parent_span_id),
        REMOTE_PARENT,
        "the chain {chain:?} must end at the producer's span"
    );
    assert_eq!(chain.last().map(String::as_str), Some("amqp.submission"), "{chain:?}");
    let position = |name: &str| chain.iter().position(|n| n == name);
    let (submission, saga, append) = (
        position("amqp.submission").unwrap(),
        position("saga.step").expect("the saga in the chain"),
        position("order.append").expect("an append in the chain"),
    );
    // The chain runs publish → the fill's append → … → the saga → … → the submission.
    assert!(append < saga && saga < submission, "{chain:?}");
    assert!(
        chain.iter().filter(|n| *n == "order.append").count() >= 2,
        "the submission's append and the fill's: {chain:?}"
    );

    // The HTTP submission continues its caller's span, and its order stays in that trace.
    let http_submission = received
        .spans
        .iter()
        .find(|s| s.name == "http.submission" && hex::encode(&s.trace_id) == HTTP_TRACE_ID)
        .expect("an http.submission span in the HTTP caller's trace");
    assert_eq!(hex::encode(&http_submission.parent_span_id), HTTP_REMOTE_PARENT);
    let http_spans: Vec<&Span> = received
        .spans
        .iter()
        .filter(|s| text(&s.attributes, "order_id").as_deref() == Some(http_order.as_str()))
        .collect();
    assert!(
        http_spans.iter().any(|s| s.name == "saga.step"),
        "the saga, past the log, in the HTTP trace"
    );
    assert_in_trace(&http_spans, HTTP_TRACE_ID);

    // The service names itself on every export.
    assert!(!received.resources.is_empty());
    for attributes in &received.resources {
        assert_eq!(
            text(attributes, "service.name").as_deref(),
            Some("order-engine-under-test")
        );
        assert_eq!(
            text(attributes, "service.version").as_deref(),
            Some(env!("CARGO_PKG_VERSION"))
        );
    }
    handle.shutdown().await;
    traces.shutdown().unwrap();
}
