//! Fuzz target: `Settings::from_lookup` with fuzzed values for the variables
//! `serve` reads. Must never read the process environment.
#![no_main]

use std::collections::HashMap;
use std::net::SocketAddr;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use order_engine::config::{parse_duration, parse_duration_list, Settings, EMBEDDED_DATABASE_URL};
use rust_decimal::Decimal;

/// Every variable `Settings::from_lookup` reads; a new one belongs here too.
const VARIABLES: [&str; 27] = [
    "DATABASE_URL",
    "ORDER_ENGINE_HTTP_ADDR",
    "ORDER_ENGINE_DEMO_BALANCE",
    "ORDER_ENGINE_MARKET_BUFFER_BPS",
    "ORDER_ENGINE_RETRY_DELAYS",
    "ORDER_ENGINE_PASSIVATE_AFTER",
    "ORDER_ENGINE_LIVE_ACTORS_MAX",
    "ORDER_ENGINE_GROUP_COMMIT",
    "BALANCE_SERVICE_URL",
    "ACCOUNT_SERVICE_URL",
    "AMQP_URL",
    "ORDER_ENGINE_SIMULATOR_SEED",
    "ORDER_ENGINE_TICK_INTERVAL",
    "ORDER_ENGINE_SHUTDOWN_TIMEOUT",
    "ORDER_ENGINE_JWT_SECRET",
    "ORDER_ENGINE_JWT_PUBLIC_KEY_FILE",
    "ORDER_ENGINE_JWT_ISSUER",
    "ORDER_ENGINE_JWT_AUDIENCE",
    "ORDER_ENGINE_SERVICE_KEYS",
    "ORDER_ENGINE_SERVICE_SECRETS",
    "ORDER_ENGINE_SIGNING_SECRET",
    "INTERNAL_API_KEY",
    "ORDER_ENGINE_AMQP_RETRY_DELAYS",
    "ORDER_ENGINE_AMQP_QUICK_RETRIES",
    "ORDER_ENGINE_ACTOR_THREADS",
    // Not read by `from_lookup`: setting them must change nothing.
    "ORDER_ENGINE_UNKNOWN",
    "PATH",
];

const SECRET_HOLDERS: [&str; 4] = [
    "ORDER_ENGINE_SERVICE_KEYS",
    "ORDER_ENGINE_SERVICE_SECRETS",
    "ORDER_ENGINE_SIGNING_SECRET",
    "ORDER_ENGINE_JWT_SECRET",
];

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    values: Vec<(u8, &'a str)>,
}

fuzz_target!(|input: Input<'_>| {
    let vars: HashMap<&str, &str> = input
        .values
        .iter()
        .map(|(index, value)| (VARIABLES[usize::from(*index) % VARIABLES.len()], *value))
        .collect();
    let lookup = |name: &str| vars.get(name).map(|v| (*v).to_owned());
    let result = Settings::from_lookup(lookup);
    assert_eq!(
        result,
        Settings::from_lookup(lookup),
        "from_lookup must be deterministic"
    );
    let get = |name: &str| vars.get(name).copied();
    let settings = match result {
        Ok(settings) => settings,
        Err(error) => {
            // Only a variable that was set can be wrong, and the error names it;
            // or it names the missing half of a pair that was started (service
            // keys without their signing secrets).
            let companion_of_a_set_one =
                error.variable == "ORDER_ENGINE_SERVICE_SECRETS" && vars.contains_key("ORDER_ENGINE_SERVICE_KEYS");
            assert!(
                vars.contains_key(error.variable) || companion_of_a_set_one,
                "{error} names an unset variable"
            );
            assert!(error.to_string().contains(error.variable));
            // A value that holds secrets is never echoed back: the placeholder stands in for it.
            if SECRET_HOLDERS.contains(&error.variable) {
                assert_eq!(
                    error.value,
                    order_engine::config::HIDDEN,
                    "{} echoes a secret",
                    error.variable
                );
            }
            return;
        }
    };

    assert_eq!(
        settings.database_url,
        get("DATABASE_URL").unwrap_or(EMBEDDED_DATABASE_URL)
    );
    if let Some(addr) = get("ORDER_ENGINE_HTTP_ADDR") {
        assert_eq!(addr.trim().parse::<SocketAddr>().ok(), Some(settings.http_addr));
    }
    assert!(
        settings.demo_balance >= Decimal::ZERO,
        "demo balance {}",
        settings.demo_balance
    );
    if let Some(balance) = get("ORDER_ENGINE_DEMO_BALANCE") {
        assert_eq!(balance.trim().parse::<Decimal>().ok(), Some(settings.demo_balance));
    }
    assert!(!settings.retry_delays.is_empty(), "the retry ladder may not be empty");
    if let Some(ladder) = get("ORDER_ENGINE_RETRY_DELAYS") {
        assert_eq!(parse_duration_list(ladder).ok().as_ref(), Some(&settings.retry_delays));
    }
    for (name, value) in [
        ("ORDER_ENGINE_PASSIVATE_AFTER", settings.passivate_after),
        ("ORDER_ENGINE_TICK_INTERVAL", settings.tick_interval),
        ("ORDER_ENGINE_SHUTDOWN_TIMEOUT", settings.shutdown_timeout),
    ] {
        if let Some(text) = get(name) {
            assert_eq!(parse_duration(text), Ok(value), "{name}");
        }
    }
    // The error message promises "a whole number above zero".
    assert!(
        settings.live_actors_max > 0,
        "ORDER_ENGINE_LIVE_ACTORS_MAX=0 was accepted"
    );
    // Set or not, the actor threads stay within "a whole number from 1 to 64".
    assert!(
        (1..=order_engine::actors::ACTOR_THREADS_MAX).contains(&settings.actor_threads),
        "{} actor threads",
        settings.actor_threads
    );
    if let Some(threads) = get("ORDER_ENGINE_ACTOR_THREADS") {
        assert_eq!(threads.trim().parse::<usize>().ok(), Some(settings.actor_threads));
    }
    for service in &settings.service_keys {
        // Every registered service passed the same rules serve starts with.
        assert_eq!(service.validate(), Ok(()), "{}", service.identity);
        assert_eq!(service.identity.trim(), service.identity.as_str());
    }
    for (name, value) in [
        ("BALANCE_SERVICE_URL", &settings.balance_service_url),
        ("ACCOUNT_SERVICE_URL", &settings.account_service_url),
        ("AMQP_URL", &settings.amqp_url),
        ("ORDER_ENGINE_JWT_SECRET", &settings.jwt_secret),
        ("ORDER_ENGINE_JWT_ISSUER", &settings.jwt_issuer),
        ("ORDER_ENGINE_JWT_AUDIENCE", &settings.jwt_audience),
    ] {
        assert_eq!(value.as_deref(), get(name), "{name}");
    }
});
