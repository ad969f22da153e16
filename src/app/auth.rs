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
pub(super) fn authenticator(settings: &Settings, clock: Arc<dyn Clock>) -> Result<Authenticator, AppError> {
    Ok(Authenticator::new(
        JwtVerifier::new(&jwt_config(settings)?).map_err(AppError::Jwt)?,
        InternalVerifier::new(ServiceKeys::new(settings.service_keys.clone()), clock),
    ))
}
