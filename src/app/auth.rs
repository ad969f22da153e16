//! Who the HTTP API trusts, from the settings: user tokens (RS256 with a
//! public key file when configured, else HS256) and the internal services'
//! keys. Reads only the key file the settings name.

use std::sync::Arc;

use super::AppError;
use crate::auth::{Authenticator, InternalVerifier, JwtAlgorithm, JwtConfig, JwtVerifier, ServiceKeys};
use crate::clock::Clock;
use crate::config::Settings;

/// User tokens: RS256 with a public key file when configured, else HS256.
/// The `token` and `loadgen` commands mint with it too, so they agree with `serve`.
pub fn jwt_config(settings: &Settings) -> Result<JwtConfig, AppError> {
    let mut config = JwtConfig::development(settings.jwt_secret.clone());
    // The PEM itself (from the config service) before a file holding it (from the environment).
    if let Some(public_key_pem) = &settings.jwt_public_key_pem {
        config.algorithm = JwtAlgorithm::Rs256 {
            public_key_pem: public_key_pem.clone(),
            private_key_pem: None,
        };
    } else if let Some(path) = &settings.jwt_public_key_file {
        let public_key_pem = std::fs::read_to_string(path).map_err(|source| AppError::JwtKeyFile {
            path: path.clone(),
            source,
        })?;
        config.algorithm = JwtAlgorithm::Rs256 {
            public_key_pem,
            private_key_pem: None,
        };
    }
    if let Some(issuer) = &settings.jwt_issuer {
        config.issuer = issuer.clone();
    }
    if let Some(audience) = &settings.jwt_audience {
        config.audience = audience.clone();
    }
    Ok(config)
}

/// The API's authenticator; `clock` judges the age of signed internal requests.
/// The API gateway is trusted only when the settings give its secret.
pub(super) fn authenticator(settings: &Settings, clock: Arc<dyn Clock>) -> Result<Authenticator, AppError> {
    // Without a key of its own the engine would verify tokens with the
    // published development secret: only in test auth mode, never in production.
    if !settings.controls.test_auth_mode && settings.jwt_secret.is_none() && settings.jwt_public_key_file.is_none() {
        return Err(AppError::NoJwtKey {
            production: settings.controls.production(),
        });
    }
    let authenticator = Authenticator::new(
        JwtVerifier::new(&jwt_config(settings)?).map_err(AppError::Jwt)?,
        InternalVerifier::new(ServiceKeys::new(settings.service_keys.clone()), clock),
    );
    Ok(match &settings.controls.gateway {
        Some(gateway) => authenticator.with_gateway_secret(gateway.secret.clone()),
        None => authenticator,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;

    #[test]
    fn production_without_a_token_key_is_refused() {
        // Proves ENVIRONMENT=prod never falls back to the development JWT secret,
        // and that test auth mode off refuses it elsewhere too.
        for (vars, production) in [
            (&[("ENVIRONMENT", "prod")][..], true),
            (&[("ORDER_SERVICE_TEST_AUTH_MODE", "false")][..], false),
        ] {
            let settings =
                Settings::from_lookup(|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned()))
                    .unwrap();
            let refused = authenticator(&settings, Arc::new(SystemClock)).unwrap_err();
            assert!(
                matches!(refused, AppError::NoJwtKey { production: p } if p == production),
                "{refused}"
            );
        }
        let prod_with_key = Settings::from_lookup(|name| match name {
            "ENVIRONMENT" => Some("prod".into()),
            "ORDER_ENGINE_JWT_SECRET" => Some("a-production-secret-of-at-least-32-bytes".into()),
            _ => None,
        })
        .unwrap();
        assert!(authenticator(&prod_with_key, Arc::new(SystemClock)).is_ok());
    }
}
