//! Parsing helpers shared by the read-model backends.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde::de::DeserializeOwned;

use crate::store::StoreError;

/// Reads a stored enum by its wire name (`BUY`, `STOP_LIMIT`, `PENDING`).
pub(crate) fn parse_enum<T: DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_value(serde_json::Value::String(text.to_owned())).map_err(|e| StoreError::Corrupt {
        position: -1,
        reason: format!("read model holds {text:?}: {e}"),
    })
}

pub(crate) fn parse_opt_decimal(text: Option<String>) -> Result<Option<Decimal>, StoreError> {
    text.map(|t| {
        Decimal::from_str(&t).map_err(|e| StoreError::Corrupt {
            position: -1,
            reason: format!("read model holds the amount {t:?}: {e}"),
        })
    })
    .transpose()
}
