//! The settings layer against a stand-in of the config service that speaks
//! shared/contracts/config-service.md (wiremock on 127.0.0.1): each migration
//! mode at start, fail fast, refresh without restart and stale on error,
//! self-registration, discovery with a second lookup, `config validate`, and
//! the binary itself in production mode.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use order_engine::balance::http::HttpBalanceClient;
use order_engine::balance::BalanceService;
use order_engine::clients::RemoteServiceConfig;
use order_engine::config::source::{self, LoadError, StartOptions};
use order_engine::config::validate::{self, Verdict};
use order_engine::config::Origin;
use order_engine::configsvc::discovery::RegistryLookup;
use order_engine::configsvc::registry::Readiness;
use order_engine::configsvc::{ConfigServiceClient, Refreshed, Refresher, Registration, SelfRegistration};
use serde_json::json;
use uuid::Uuid;
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const KEY: &str = "engine-internal-key";

/// A process environment made of these pairs.
fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + Send + Sync + 'static {
    let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    move |name| map.get(name).cloned()
}

fn production(url: &str, mode: Option<&str>, extra: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + Send + Sync {
    let mut pairs = vec![
        ("ENVIRONMENT", "prod"),
        ("CONFIG_SERVICE_URL", url),
        ("INTERNAL_API_KEY", KEY),
    ];
    if let Some(mode) = mode {
        pairs.push(("CONFIG_MIGRATION_MODE", mode));
    }
    pairs.extend_from_slice(extra);
    env(&pairs)
}

fn quick() -> StartOptions {
    StartOptions {
        budget: Duration::from_secs(2),
        cache_ttl: Duration::from_secs(300),
    }
}

/// The stand-in's answer to the bulk load: the contract's array of entries.
fn entries(values: &[(&str, &str)]) -> serde_json::Value {
    json!(values
        .iter()
        .map(|(k, v)| json!({"key": k, "value": v, "environment": "prod", "service_name": "order_service"}))
        .collect::<Vec<_>>())
}

async fn serve_config(server: &MockServer, values: &[(&str, &str)]) {
    Mock::given(method("GET"))
        .and(path("/api/v1/config/service/order_service"))
        .and(query_param("environment", "prod"))
        .and(header("X-Internal-API-Key", KEY))
        .respond_with(ResponseTemplate::new(200).set_body_json(entries(values)))
        .mount(server)
        .await;
    for (key, value) in values {
        Mock::given(method("GET"))
            .and(path(format!("/api/v1/config/{key}")))
            .and(query_param("service_name", "order_service"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"key": key, "value": value})))
            .mount(server)
            .await;
    }
}

/// Ports and registry lookups the stand-in does not know: 404.
async fn unknown_elsewhere(server: &MockServer) {
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(404))
        .with_priority(u8::MAX)
        .mount(server)
        .await;
}

const JWT: (&str, &str) = ("ORDER_SERVICE_JWT_SECRET", "a-production-secret-of-enough-length");

/// A port nothing listens on.
fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

#[tokio::test]
async fn legacy_only_reads_the_environment_under_both_names() {
    // Proves the default mode without CONFIG_SERVICE_URL is today's behaviour, and the contract's key names work in the environment too.
    let loaded = source::load(
        &env(&[
            ("ORDER_SERVICE_DAILY_ORDER_LIMIT", "10"),
            ("ORDER_ENGINE_MARKET_BUFFER_BPS", "250"),
        ]),
        &quick(),
    )
    .await
    .unwrap();
    assert_eq!(loaded.mode.as_str(), "legacy_only");
    assert!(loaded.service.is_none());
    assert_eq!(loaded.settings.runtime.daily_order_limit, Some(10));
    assert_eq!(loaded.settings.market_buffer_bps, 250);
    let read = &loaded.provenance.0["ORDER_SERVICE_DAILY_ORDER_LIMIT"];
    assert_eq!((read.value.as_deref(), read.origin), (Some("10"), Origin::Env));
    assert_eq!(loaded.provenance.0["DATABASE_URL"].origin, Origin::Default);
}

#[tokio::test]
async fn new_only_takes_everything_from_the_service_ports_and_registry() {
    // Proves production mode: values, the listen ports from the port registry and the balance service's URL from the registry.
    let server = MockServer::start().await;
    serve_config(
        &server,
        &[
            ("DATABASE_URL", "sqlite:/tmp/never-opened.db"),
            ("ORDER_SERVICE_DAILY_ORDER_LIMIT", "25"),
            ("ORDER_SERVICE_DAILY_RESET_TIME", "09:15"),
            JWT,
        ],
    )
    .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/ports/order_service"))
        .and(query_param("environment", "prod"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"service_name": "order_service", "environment": "prod", "port": 8087})),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/registry/balance_service"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"service_name": "balance_service", "service_url": "http://balance:8000/", "status": "healthy"}),
        ))
        .mount(&server)
        .await;
    unknown_elsewhere(&server).await;
    // An environment variable beside the triad is ignored in new_only.
    let loaded = source::load(
        &production(&server.uri(), None, &[("ORDER_SERVICE_DAILY_ORDER_LIMIT", "99")]),
        &quick(),
    )
    .await
    .unwrap();
    assert_eq!(loaded.mode.as_str(), "new_only");
    let s = &loaded.settings;
    assert_eq!(s.database_url, "sqlite:/tmp/never-opened.db");
    assert_eq!(s.runtime.daily_order_limit, Some(25));
    assert_eq!(s.runtime.daily_reset_time.to_string(), "09:15:00");
    assert_eq!(s.http_addr.to_string(), "0.0.0.0:8087");
    assert_eq!(
        s.grpc_addr.to_string(),
        "127.0.0.1:50051",
        "no gRPC port registered: the default"
    );
    assert_eq!(s.balance_service_url.as_deref(), Some("http://balance:8000"));
    assert_eq!(s.account_service_url, None, "not registered: every account active");
    assert_eq!(
        loaded.provenance.0["ORDER_SERVICE_DAILY_ORDER_LIMIT"].origin,
        Origin::ConfigService
    );
    let shown = loaded.provenance.lines(&loaded.settings).join("\n");
    assert!(
        shown.contains("ORDER_SERVICE_RETRY_DELAYS = 300s,900s,3600s,21600s (default)"),
        "{shown}"
    );
    assert!(
        shown.contains("ORDER_SERVICE_JWT_SECRET = **** (config service)"),
        "{shown}"
    );
    assert!(!shown.contains(JWT.1), "{shown}");
}

#[tokio::test]
async fn new_only_fails_fast_naming_the_url_and_the_cause() {
    // Proves a config service that does not answer stops the start within the budget, naming the URL and why;
    // a refusal (401) is not retried at all.
    let url = dead_url();
    let started = Instant::now();
    let error = source::load(&production(&url, None, &[]), &quick())
        .await
        .err()
        .unwrap();
    let text = error.to_string();
    assert!(matches!(error, LoadError::Unreachable { .. }), "{text}");
    assert!(text.contains(&url) && text.contains("unreachable"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());

    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401).set_body_string("bad key"))
        .expect(1)
        .mount(&server)
        .await;
    let error = source::load(&production(&server.uri(), None, &[]), &quick())
        .await
        .err()
        .unwrap();
    assert!(error.to_string().contains("401"), "{error}");
}

/// Why new_only refuses to start against a stand-in serving `values`.
async fn start_error(values: &[(&str, &str)]) -> LoadError {
    let server = MockServer::start().await;
    serve_config(&server, values).await;
    unknown_elsewhere(&server).await;
    source::load(&production(&server.uri(), None, &[]), &quick())
        .await
        .err()
        .unwrap()
}

#[tokio::test]
async fn a_value_that_does_not_parse_names_its_key_and_source() {
    // Proves a bad value from the config service stops the start with the contract's key name.
    let text = start_error(&[("ORDER_SERVICE_DAILY_ORDER_LIMIT", "ten"), JWT])
        .await
        .to_string();
    assert!(
        text.contains("ORDER_SERVICE_DAILY_ORDER_LIMIT") && text.contains("config service"),
        "{text}"
    );
}

#[tokio::test]
async fn test_auth_mode_is_refused_in_prod() {
    // Proves ENVIRONMENT=prod with ORDER_SERVICE_TEST_AUTH_MODE=true never starts, from either source.
    // Refused where the setting is read (config::controls, naming the key) or by the production check.
    let refused = |error: &LoadError| {
        matches!(error, LoadError::TestAuthInProduction)
            || matches!(error, LoadError::Invalid { key, .. } if key == "ORDER_SERVICE_TEST_AUTH_MODE")
    };
    let error = start_error(&[("ORDER_SERVICE_TEST_AUTH_MODE", "true"), JWT]).await;
    assert!(refused(&error), "{error}");
    let error = source::load(
        &env(&[("ENVIRONMENT", "prod"), ("ORDER_SERVICE_TEST_AUTH_MODE", "true"), JWT]),
        &quick(),
    )
    .await
    .err()
    .unwrap();
    assert!(refused(&error), "{error}");
    // In staging it is allowed.
    let staging = source::load(
        &env(&[("ENVIRONMENT", "staging"), ("ORDER_SERVICE_TEST_AUTH_MODE", "true")]),
        &quick(),
    )
    .await
    .unwrap();
    assert!(staging.settings.controls.test_auth_mode);
}

#[tokio::test]
async fn new_with_fallback_takes_the_environment_per_key_and_counts_it() {
    // Proves the fallback mode: the service's values where it has them, the environment's (counted) where it
    // does not, and every key from the environment when the service is down.
    let server = MockServer::start().await;
    serve_config(&server, &[("ORDER_SERVICE_DAILY_ORDER_LIMIT", "25"), JWT]).await;
    unknown_elsewhere(&server).await;
    let extra = [
        ("ORDER_SERVICE_DAILY_ORDER_LIMIT", "99"),
        ("ORDER_ENGINE_MARKET_BUFFER_BPS", "300"),
    ];
    let loaded = source::load(&production(&server.uri(), Some("new_with_fallback"), &extra), &quick())
        .await
        .unwrap();
    assert_eq!(loaded.settings.runtime.daily_order_limit, Some(25));
    assert_eq!(loaded.settings.market_buffer_bps, 300);
    let fallbacks = |loaded: &source::Loaded, key: &str| loaded.metrics.fallback_total.with_label_values(&[key]).get();
    assert_eq!(fallbacks(&loaded, "ORDER_SERVICE_MARKET_BUFFER_BPS"), 1);
    assert_eq!(fallbacks(&loaded, "ORDER_SERVICE_DAILY_ORDER_LIMIT"), 0);

    let mut extra = extra.to_vec();
    extra.push(JWT);
    let down = source::load(&production(&dead_url(), Some("new_with_fallback"), &extra), &quick())
        .await
        .unwrap();
    assert_eq!(down.settings.runtime.daily_order_limit, Some(99));
    assert_eq!(fallbacks(&down, "ORDER_SERVICE_DAILY_ORDER_LIMIT"), 1);
}

#[tokio::test]
async fn legacy_with_validation_uses_the_environment_and_counts_differences() {
    // Proves the validation mode: the environment's values are used, and each difference from the service is counted.
    let server = MockServer::start().await;
    serve_config(
        &server,
        &[
            ("ORDER_SERVICE_DAILY_ORDER_LIMIT", "25"),
            ("ORDER_SERVICE_MARKET_BUFFER_BPS", "300"),
            JWT,
        ],
    )
    .await;
    let extra = [
        ("ORDER_SERVICE_DAILY_ORDER_LIMIT", "99"),
        ("ORDER_SERVICE_MARKET_BUFFER_BPS", "300"),
        JWT,
    ];
    let loaded = source::load(
        &production(&server.uri(), Some("legacy_with_validation"), &extra),
        &quick(),
    )
    .await
    .unwrap();
    assert_eq!(loaded.settings.runtime.daily_order_limit, Some(99));
    let differences = |key: &str| loaded.metrics.discrepancy_total.with_label_values(&[key]).get();
    assert_eq!(differences("ORDER_SERVICE_DAILY_ORDER_LIMIT"), 1);
    assert_eq!(differences("ORDER_SERVICE_MARKET_BUFFER_BPS"), 0);
    assert_eq!(differences("ORDER_SERVICE_JWT_SECRET"), 0);
}

#[tokio::test]
async fn a_changed_value_applies_without_restart_and_a_dead_service_leaves_the_last_values() {
    // Proves the refresh: a changed limit reaches the watch at once, a changed database URL is reported as
    // needing a restart, an invalid change is refused, and a service that goes down leaves the values in force.
    let server = MockServer::start().await;
    serve_config(
        &server,
        &[
            ("ORDER_SERVICE_DAILY_ORDER_LIMIT", "10"),
            ("DATABASE_URL", "sqlite:a.db"),
            JWT,
        ],
    )
    .await;
    unknown_elsewhere(&server).await;
    let environment = production(&server.uri(), None, &[]);
    let loaded = source::load(&environment, &quick()).await.unwrap();
    let cache = loaded.service.clone().unwrap();
    let refresher = Refresher::new(
        Arc::clone(&cache),
        Arc::new(environment),
        false,
        loaded.settings.runtime.clone(),
    );
    let mut runtime = refresher.subscribe();
    assert_eq!(refresher.refresh().await, Refreshed::Unchanged);

    server.reset().await;
    serve_config(
        &server,
        &[
            ("ORDER_SERVICE_DAILY_ORDER_LIMIT", "20"),
            ("DATABASE_URL", "sqlite:b.db"),
            JWT,
        ],
    )
    .await;
    let refreshed = refresher.refresh().await;
    assert_eq!(
        refreshed,
        Refreshed::Changed {
            applied: vec!["ORDER_SERVICE_DAILY_ORDER_LIMIT".into()],
            restart: vec!["DATABASE_URL".into()],
        }
    );
    assert!(runtime.has_changed().unwrap());
    assert_eq!(runtime.borrow_and_update().daily_order_limit, Some(20));

    server.reset().await;
    serve_config(
        &server,
        &[
            ("ORDER_SERVICE_DAILY_ORDER_LIMIT", "lots"),
            ("DATABASE_URL", "sqlite:b.db"),
            JWT,
        ],
    )
    .await;
    assert!(
        matches!(refresher.refresh().await, Refreshed::Refused(reason) if reason.contains("ORDER_SERVICE_DAILY_ORDER_LIMIT"))
    );
    assert_eq!(runtime.borrow().daily_order_limit, Some(20));

    server.reset().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    assert!(matches!(refresher.refresh().await, Refreshed::Stale(_)));
    assert_eq!(runtime.borrow().daily_order_limit, Some(20));
    assert_eq!(
        cache.get("ORDER_SERVICE_DAILY_ORDER_LIMIT").await.unwrap().as_deref(),
        Some("20")
    );
    assert_eq!(loaded.metrics.refresh_failures_total.get(), 1);
    assert!(
        loaded
            .metrics
            .stale_served_total
            .with_label_values(&["ORDER_SERVICE_DAILY_ORDER_LIMIT"])
            .get()
            >= 1
    );
}

struct AlwaysReady;

#[async_trait::async_trait]
impl Readiness for AlwaysReady {
    async fn ready(&self) -> bool {
        true
    }
}

fn bodies(requests: &[Request], verb: &str, route: &str) -> Vec<serde_json::Value> {
    requests
        .iter()
        .filter(|r| r.method.as_str() == verb && r.url.path() == route)
        .map(|r| {
            assert_eq!(r.headers.get("X-Internal-API-Key").unwrap(), KEY);
            assert_eq!(r.headers.get("Authorization").unwrap(), &format!("ApiKey {KEY}"));
            serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null)
        })
        .collect()
}

#[tokio::test]
async fn registration_heartbeats_and_deregistration_reach_the_registry() {
    // Proves the registry sees the contract's register body, heartbeats with status and response time, and the
    // DELETE at stop, each with both auth headers; a registry that fails is counted and does not end the loop.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/registry/register"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/api/v1/registry/health"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/api/v1/registry/order_service"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let client = ConfigServiceClient::new(&server.uri(), "prod", KEY).unwrap();
    let metrics = order_engine::configsvc::ConfigMetrics::new().unwrap();
    let running = SelfRegistration::start(
        Arc::new(client),
        Arc::new(AlwaysReady),
        Registration {
            service_url: "http://engine:8087".into(),
            health_check_url: "http://engine:8087/health/ready".into(),
            version: "0.1.0".into(),
            region: "eu-west-1".into(),
        },
        Duration::from_millis(100),
        metrics,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(350)).await;
    running.stop().await;
    let requests = server.received_requests().await.unwrap();
    let registered = bodies(&requests, "POST", "/api/v1/registry/register");
    assert_eq!(
        registered,
        vec![
            json!({"service_name": "order_service", "service_url": "http://engine:8087", "health_check_url": "http://engine:8087/health/ready", "metadata": {"version": "0.1.0", "region": "eu-west-1"}})
        ]
    );
    let heartbeats = bodies(&requests, "PUT", "/api/v1/registry/health");
    assert!(heartbeats.len() >= 2, "{heartbeats:?}");
    assert_eq!(heartbeats[0]["service_name"], "order_service");
    assert_eq!(heartbeats[0]["status"], "healthy");
    assert!(heartbeats[0]["response_time"].is_u64());
    assert_eq!(bodies(&requests, "DELETE", "/api/v1/registry/order_service").len(), 1);
}

#[tokio::test]
async fn the_balance_client_finds_the_service_again_when_its_address_stops_answering() {
    // Proves discovery with a second lookup: the client starts on an address that refuses connections, asks
    // the registry, and the retry of the same call reaches the service where the registry says it is now.
    let registry = MockServer::start().await;
    let balance = MockServer::start().await;
    let user = Uuid::new_v4();
    Mock::given(method("GET"))
        .and(path(format!("/api/v1/balances/{user}")))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"user_id": user, "available": 10, "reserved": 0})),
        )
        .mount(&balance)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/registry/balance_service"))
        .and(header("X-Internal-API-Key", KEY))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"service_name": "balance_service", "service_url": balance.uri(), "status": "healthy"}),
        ))
        .expect(1)
        .mount(&registry)
        .await;
    let lookup = RegistryLookup::new(
        ConfigServiceClient::new(&registry.uri(), "prod", KEY).unwrap(),
        "balance_service",
    );
    let client = HttpBalanceClient::new(&RemoteServiceConfig::new(dead_url()))
        .unwrap()
        .with_discovery(Arc::new(lookup));
    let answer = client.get_balance(user).await.unwrap();
    assert_eq!(answer.user_id, user);
    // The address is kept: the next call needs no lookup (the registry expects exactly one).
    client.get_balance(user).await.unwrap();
}

#[tokio::test]
async fn config_validate_reports_match_mismatch_and_error() {
    // Proves the per-key report: equal values MATCH, different or missing ones MISMATCH, a key the service
    // fails on ERROR; secrets masked; the report fails.
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/config/ORDER_SERVICE_DAILY_RESET_TIME"))
        .respond_with(ResponseTemplate::new(500))
        .with_priority(1)
        .mount(&server)
        .await;
    serve_config(
        &server,
        &[
            ("ORDER_SERVICE_DAILY_ORDER_LIMIT", "10"),
            ("ORDER_SERVICE_MARKET_BUFFER_BPS", "300"),
            JWT,
        ],
    )
    .await;
    unknown_elsewhere(&server).await;
    let environment = production(
        &server.uri(),
        Some("legacy_with_validation"),
        &[
            ("ORDER_SERVICE_DAILY_ORDER_LIMIT", "10"),
            ("ORDER_SERVICE_MARKET_BUFFER_BPS", "500"),
            ("ORDER_SERVICE_JWT_SECRET", "another-secret-that-differs"),
            ("ORDER_SERVICE_DAILY_RESET_TIME", "09:15"),
        ],
    );
    let report = validate::validate(&environment).await.unwrap();
    let verdict = |key: &str| report.keys.iter().find(|k| k.key == key).map(|k| k.verdict);
    assert_eq!(verdict("ORDER_SERVICE_DAILY_ORDER_LIMIT"), Some(Verdict::Match));
    assert_eq!(verdict("ORDER_SERVICE_MARKET_BUFFER_BPS"), Some(Verdict::Mismatch));
    assert_eq!(verdict("ORDER_SERVICE_JWT_SECRET"), Some(Verdict::Mismatch));
    assert_eq!(verdict("ORDER_SERVICE_DAILY_RESET_TIME"), Some(Verdict::Error));
    assert!(!report.passed());
    let text = report.render();
    assert!(
        !text.contains("another-secret") && !text.contains(JWT.1) && !text.contains(KEY),
        "{text}"
    );
    assert!(text.contains("summary:") && text.contains("1 MATCH"), "{text}");
}

/// The binary, as a process, in production mode against a stand-in that is not there.
#[test]
fn the_binary_exits_non_zero_within_30_s_naming_the_url_when_the_service_is_down() {
    // Proves fail fast end to end: exit status, time and the message on stderr.
    let url = dead_url();
    let started = Instant::now();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_order-engine"))
        .arg("serve")
        .env_clear()
        .env("ENVIRONMENT", "prod")
        .env("CONFIG_SERVICE_URL", &url)
        .env("INTERNAL_API_KEY", KEY)
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");
    assert!(stderr.contains(&url) && stderr.contains("unreachable"), "{stderr}");
    assert!(!stderr.contains(KEY), "{stderr}");
}

/// Waits until the stand-in has received a request for `route`, or panics after `within`.
async fn received_on(server: &MockServer, verb: &str, route: &str, within: Duration) -> Request {
    let started = Instant::now();
    loop {
        let requests = server.received_requests().await.unwrap();
        if let Some(request) = requests
            .into_iter()
            .find(|r| r.method.as_str() == verb && r.url.path() == route)
        {
            return request;
        }
        assert!(started.elapsed() < within, "no {verb} {route} within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn serve_in_production_mode_takes_orders_with_only_the_three_variables() {
    // Proves the binary in production mode end to end: configuration, registration with its real address,
    // orders served, the daily limit from the config service refusing the second order, and
    // deregistration on SIGTERM.
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite:{}", dir.path().join("engine.db").display());
    let server = MockServer::start().await;
    serve_config(
        &server,
        &[
            ("DATABASE_URL", database.as_str()),
            ("ORDER_SERVICE_HTTP_ADDR", "127.0.0.1:0"),
            ("ORDER_SERVICE_GRPC_ADDR", "127.0.0.1:0"),
            ("ORDER_SERVICE_DAILY_ORDER_LIMIT", "1"),
            ("ORDER_SERVICE_REGION", "eu-west-1"),
            JWT,
        ],
    )
    .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/feature-flags/evaluate"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"enabled": true})))
        .mount(&server)
        .await;
    for (verb, route) in [
        ("POST", "/api/v1/registry/register"),
        ("PUT", "/api/v1/registry/health"),
        ("DELETE", "/api/v1/registry/order_service"),
    ] {
        Mock::given(method(verb))
            .and(path(route))
            .respond_with(ResponseTemplate::new(200))
            .mount(&server)
            .await;
    }
    unknown_elsewhere(&server).await;
    let triad = |command: &mut std::process::Command| {
        command
            .env_clear()
            .env("ENVIRONMENT", "prod")
            .env("CONFIG_SERVICE_URL", server.uri())
            .env("INTERNAL_API_KEY", KEY)
            .current_dir(dir.path());
    };
    let log = std::fs::File::create(dir.path().join("engine.log")).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_order-engine"));
    triad(&mut command);
    let mut engine = command.arg("serve").stderr(log).spawn().unwrap();
    let logged = || std::fs::read_to_string(dir.path().join("engine.log")).unwrap_or_default();

    let registered = received_on(&server, "POST", "/api/v1/registry/register", Duration::from_secs(60)).await;
    let body: serde_json::Value = serde_json::from_slice(&registered.body).unwrap();
    let base = body["service_url"].as_str().unwrap().to_owned();
    assert_eq!(body["metadata"]["region"], "eu-west-1");
    assert_eq!(body["health_check_url"], format!("{base}/health/ready"));

    // `token` in production mode reads the same JWT secret from the stand-in.
    let mint = |user: Uuid| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_order-engine"));
        triad(&mut command);
        let token = command.args(["token", "--user", &user.to_string()]).output().unwrap();
        assert!(token.status.success(), "{}", String::from_utf8_lossy(&token.stderr));
        String::from_utf8(token.stdout).unwrap().trim().to_owned()
    };
    let (token, other) = (mint(Uuid::new_v4()), mint(Uuid::new_v4()));
    let http = reqwest::Client::new();
    let submit = |token: &str| {
        http.post(format!("{base}/api/v1/orders"))
            .bearer_auth(token)
            .json(&json!({"symbol": "AAPL", "order_type": "MARKET", "order_side": "BUY", "quantity": 1}))
            .send()
    };
    let first = submit(&token).await.unwrap();
    assert_eq!(first.status(), 202, "{}\n{}", first.text().await.unwrap(), logged());
    let second = submit(&token).await.unwrap();
    assert_eq!(second.status(), 429, "the daily limit of 1");
    let refused: serde_json::Value = second.json().await.unwrap();
    assert_eq!(refused["reason"], "daily_order_limit_reached", "{refused}");
    // The config service goes down: orders keep flowing (the cached values and the log decide;
    // another user has their own day).
    server.reset().await;
    Mock::given(method("DELETE"))
        .and(path("/api/v1/registry/order_service"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(503))
        .with_priority(u8::MAX)
        .mount(&server)
        .await;
    let third = submit(&other).await.unwrap();
    assert_eq!(third.status(), 202, "{}", third.text().await.unwrap());

    let killed = std::process::Command::new("kill")
        .args(["-TERM", &engine.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    received_on(
        &server,
        "DELETE",
        "/api/v1/registry/order_service",
        Duration::from_secs(30),
    )
    .await;
    let status = engine.wait().unwrap();
    assert!(status.success(), "{status:?}\n{}", logged());
    assert!(!logged().contains(JWT.1), "a secret was logged");
}
