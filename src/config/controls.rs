//! The settings of the pre-trade controls and security layer (issue 16):
//! idempotency fail-closed, gateway trust and test auth mode, under seed
//! 000's `ORDER_SERVICE_*` names, read from the same lookup as the rest of
//! [`Settings`](super::Settings).
//!
//! Must never echo a secret: an error about the gateway secret shows
//! [`HIDDEN`](super::HIDDEN) in place of the value, and `Debug` hides it too.

use super::{ConfigError, HIDDEN};

/// Who the engine runs as (`prod`, `staging`, `dev`); seed 000's first variable.
pub const ENVIRONMENT_ENV: &str = "ENVIRONMENT";
/// `true` (default): an order whose Idempotency-Key cannot be checked is refused with 503.
pub const IDEMPOTENCY_FAIL_CLOSED_ENV: &str = "ORDER_SERVICE_IDEMPOTENCY_FAIL_CLOSED";
/// `true`: a request that proves the gateway secret may name its user in a header.
pub const TRUST_GATEWAY_HEADERS_ENV: &str = "ORDER_SERVICE_TRUST_GATEWAY_HEADERS";
/// The secret the API gateway proves in [`HEADER_GATEWAY_SECRET`](crate::auth::HEADER_GATEWAY_SECRET).
pub const GATEWAY_SECRET_ENV: &str = "ORDER_SERVICE_GATEWAY_SECRET";
/// `true`: user tokens may be verified with the built-in development secret.
pub const TEST_AUTH_MODE_ENV: &str = "ORDER_SERVICE_TEST_AUTH_MODE";
/// The shortest gateway secret accepted: as long as the HMAC-SHA256 keys of
/// seed 001's signatures, so it cannot be guessed faster than they can.
pub const GATEWAY_SECRET_BYTES_MIN: usize = 32;

/// The controls' settings, with the defaults documented on each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlSettings {
    /// `ENVIRONMENT`; None when unset (the embedded default, a development run).
    pub environment: Option<String>,
    /// [`IDEMPOTENCY_FAIL_CLOSED_ENV`], default true: refusing an order costs
    /// the caller a retry, a duplicate would cost them money.
    pub idempotency_fail_closed: bool,
    /// [`TRUST_GATEWAY_HEADERS_ENV`] with its secret; None (default): gateway
    /// headers are refused like any other unproven claim.
    pub gateway: Option<GatewayTrust>,
    /// [`TEST_AUTH_MODE_ENV`]: the development JWT secret stands in when no
    /// key is configured. Default true outside production (the embedded
    /// default serves with it) and false in production, where true is refused.
    pub test_auth_mode: bool,
}

impl Default for ControlSettings {
    fn default() -> Self {
        Self {
            environment: None,
            idempotency_fail_closed: true,
            gateway: None,
            test_auth_mode: true,
        }
    }
}

/// The shared secret that makes the gateway's user header trusted.
#[derive(Clone, PartialEq, Eq)]
pub struct GatewayTrust {
    pub secret: String,
}

impl std::fmt::Debug for GatewayTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayTrust").field("secret", &HIDDEN).finish()
    }
}

impl ControlSettings {
    /// Reads the controls through `lookup`; unset names take the defaults above.
    pub fn from_lookup(lookup: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let environment = lookup(ENVIRONMENT_ENV).map(|e| e.trim().to_owned());
        let production = environment.as_deref().is_some_and(is_production);
        let idempotency_fail_closed = flag(lookup, IDEMPOTENCY_FAIL_CLOSED_ENV, true)?;
        let test_auth_mode = flag(lookup, TEST_AUTH_MODE_ENV, !production)?;
        if production && test_auth_mode {
            return Err(ConfigError {
                variable: TEST_AUTH_MODE_ENV,
                value: "true".into(),
                expected: format!(
                    "false when {ENVIRONMENT_ENV} is {:?}: development tokens are refused in production",
                    environment.unwrap_or_default()
                ),
            });
        }
        let gateway = if flag(lookup, TRUST_GATEWAY_HEADERS_ENV, false)? {
            let secret = lookup(GATEWAY_SECRET_ENV)
                .map(|s| s.trim().to_owned())
                .unwrap_or_default();
            if secret.len() < GATEWAY_SECRET_BYTES_MIN {
                return Err(ConfigError {
                    variable: GATEWAY_SECRET_ENV,
                    value: HIDDEN.into(),
                    expected: format!(
                        "a secret of at least {GATEWAY_SECRET_BYTES_MIN} bytes (it is {}) when {TRUST_GATEWAY_HEADERS_ENV} is true",
                        secret.len()
                    ),
                });
            }
            Some(GatewayTrust { secret })
        } else {
            None
        };
        Ok(Self {
            environment,
            idempotency_fail_closed,
            gateway,
            test_auth_mode,
        })
    }

    /// Whether `ENVIRONMENT` names production.
    pub fn production(&self) -> bool {
        self.environment.as_deref().is_some_and(is_production)
    }
}

/// `prod` or `production`, in any case.
fn is_production(environment: &str) -> bool {
    ["prod", "production"]
        .iter()
        .any(|p| environment.eq_ignore_ascii_case(p))
}

/// A boolean setting: `true`/`false` (any case) or `1`/`0`, as the config
/// service stores flags as strings.
fn flag(lookup: &impl Fn(&str) -> Option<String>, variable: &'static str, default: bool) -> Result<bool, ConfigError> {
    let Some(value) = lookup(variable) else {
        return Ok(default);
    };
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(ConfigError {
            variable,
            value,
            expected: "true or false".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn controls(vars: &[(&str, &str)]) -> Result<ControlSettings, ConfigError> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        ControlSettings::from_lookup(&|name: &str| vars.get(name).cloned())
    }

    const SECRET: &str = "gateway-shared-secret-0123456789abcdef";

    #[test]
    fn defaults_fail_closed_trust_no_gateway_and_allow_test_tokens_outside_production() {
        // Proves the documented defaults, in development and in production.
        let dev = controls(&[]).unwrap();
        assert_eq!(dev, ControlSettings::default());
        assert!(dev.idempotency_fail_closed && dev.test_auth_mode && dev.gateway.is_none());
        let prod = controls(&[(ENVIRONMENT_ENV, "prod")]).unwrap();
        assert!(prod.production() && !prod.test_auth_mode && prod.idempotency_fail_closed);
    }

    #[test]
    fn each_setting_is_read() {
        // Proves the three ORDER_SERVICE_* names reach the struct, flags in either spelling.
        let c = controls(&[
            (IDEMPOTENCY_FAIL_CLOSED_ENV, "FALSE"),
            (TRUST_GATEWAY_HEADERS_ENV, "1"),
            (GATEWAY_SECRET_ENV, SECRET),
            (TEST_AUTH_MODE_ENV, "false"),
            (ENVIRONMENT_ENV, "staging"),
        ])
        .unwrap();
        assert!(!c.idempotency_fail_closed && !c.test_auth_mode && !c.production());
        assert_eq!(c.gateway.as_ref().map(|g| g.secret.as_str()), Some(SECRET));
        assert!(!format!("{c:?}").contains(SECRET), "Debug must hide the secret");
        assert!(
            controls(&[(GATEWAY_SECRET_ENV, SECRET)]).unwrap().gateway.is_none(),
            "a secret alone trusts nothing"
        );
    }

    #[test]
    fn unsafe_combinations_are_refused_at_start() {
        // Proves test tokens in production, trust without a (long enough) secret and a
        // non-boolean flag are refused naming the variable, and no secret is echoed.
        let cases: [(&[(&str, &str)], &str); 5] = [
            (
                &[(ENVIRONMENT_ENV, "PRODUCTION"), (TEST_AUTH_MODE_ENV, "true")],
                TEST_AUTH_MODE_ENV,
            ),
            (&[(TRUST_GATEWAY_HEADERS_ENV, "true")], GATEWAY_SECRET_ENV),
            (
                &[
                    (TRUST_GATEWAY_HEADERS_ENV, "true"),
                    (GATEWAY_SECRET_ENV, "short-secret"),
                ],
                GATEWAY_SECRET_ENV,
            ),
            (&[(IDEMPOTENCY_FAIL_CLOSED_ENV, "maybe")], IDEMPOTENCY_FAIL_CLOSED_ENV),
            (&[(TRUST_GATEWAY_HEADERS_ENV, "yes please")], TRUST_GATEWAY_HEADERS_ENV),
        ];
        for (vars, variable) in cases {
            let error = controls(vars).unwrap_err();
            assert_eq!(error.variable, variable, "{error}");
            assert!(!error.to_string().contains("short-secret"), "{error}");
        }
    }
}
