//! Key names across sources and masking: the engine's environment variables
//! (`ORDER_ENGINE_*`) and the config service's `{SERVICE}_{KEY}` names
//! (`ORDER_SERVICE_*`, seed 000) name the same settings. Never logs a value
//! that [`is_secret`] says holds a secret.

use crate::store::redact_url;

/// The prefix the engine's own environment variables carry.
pub const ENGINE_PREFIX: &str = "ORDER_ENGINE_";
/// The prefix of the engine's keys in the config service (`{SERVICE}_{KEY}`).
pub const SERVICE_PREFIX: &str = "ORDER_SERVICE_";

/// Where a setting's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Origin {
    /// An environment variable.
    Env,
    /// The config service.
    ConfigService,
    /// Not set anywhere: the documented default.
    Default,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Env => "env",
            Self::ConfigService => "config service",
            Self::Default => "default",
        })
    }
}

/// The config service's name for the variable `Settings::from_lookup` asks
/// for: `ORDER_ENGINE_X` is `ORDER_SERVICE_X`; common parameters
/// (`DATABASE_URL`, `AMQP_URL`, `INTERNAL_API_KEY`) keep their names.
pub fn contract_key(variable: &str) -> String {
    match variable.strip_prefix(ENGINE_PREFIX) {
        Some(rest) => format!("{SERVICE_PREFIX}{rest}"),
        None => variable.to_owned(),
    }
}

/// Whether a key's value must never be printed: keys, secrets, passwords, tokens.
pub fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_uppercase();
    [
        "SECRET",
        "API_KEY",
        "SERVICE_KEYS",
        "PASSWORD",
        "TOKEN",
        "ENCRYPTION_KEY",
        "PRIVATE_KEY",
    ]
    .iter()
    .any(|word| key.contains(word))
}

/// What a log line or a report may show of `value`: secrets as `****`, URLs
/// without their password, everything else as it is.
pub fn mask(key: &str, value: &str) -> String {
    if is_secret(key) {
        "****".to_owned()
    } else if value.contains("://") {
        redact_url(value)
    } else {
        value.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_variables_map_onto_the_contract_keys() {
        // Proves both naming schemes meet: ORDER_ENGINE_X is ORDER_SERVICE_X, common parameters stay.
        assert_eq!(
            contract_key("ORDER_ENGINE_DAILY_ORDER_LIMIT"),
            "ORDER_SERVICE_DAILY_ORDER_LIMIT"
        );
        assert_eq!(contract_key("DATABASE_URL"), "DATABASE_URL");
        assert_eq!(contract_key("INTERNAL_API_KEY"), "INTERNAL_API_KEY");
    }

    #[test]
    fn secrets_and_url_passwords_are_masked() {
        // Proves no secret reaches a log line or a report through `mask`.
        for key in [
            "ORDER_SERVICE_GATEWAY_SECRET",
            "ORDER_SERVICE_JWT_SECRET",
            "INTERNAL_API_KEY",
            "ORDER_SERVICE_SERVICE_KEYS",
            "CACHE_ENCRYPTION_KEY",
        ] {
            assert_eq!(mask(key, "hunter2"), "****", "{key}");
        }
        assert_eq!(
            mask("DATABASE_URL", "postgres://app:hunter2@db:5432/orders"),
            "postgres://app:***@db:5432/orders"
        );
        assert_eq!(mask("ORDER_SERVICE_DAILY_ORDER_LIMIT", "10"), "10");
    }
}
