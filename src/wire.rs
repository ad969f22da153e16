//! JSON shapes shared by every format the engine speaks to the outside (HTTP,
//! RabbitMQ, remote services): decimals go out as JSON numbers, as the seeds
//! show, written from their exact text so nothing passes through a float.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde::Serialize;

/// Serializes a decimal as an arbitrary-precision JSON number (`1502.50`).
pub fn decimal_as_number<S: serde::Serializer>(value: &Decimal, serializer: S) -> Result<S::Ok, S::Error> {
    let number = serde_json::Number::from_str(&value.to_string()).map_err(serde::ser::Error::custom)?;
    number.serialize(serializer)
}

/// [`decimal_as_number`] for optional decimals; `None` is `null`.
pub fn option_decimal_as_number<S: serde::Serializer>(
    value: &Option<Decimal>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => decimal_as_number(value, serializer),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;
    use serde::Serialize;

    use super::*;

    #[derive(Serialize)]
    struct Sample {
        #[serde(serialize_with = "decimal_as_number")]
        total: Decimal,
        #[serde(serialize_with = "option_decimal_as_number")]
        price: Option<Decimal>,
    }

    #[test]
    fn decimals_go_out_as_exact_numbers() {
        // Proves the scale and every digit survive: no float in between.
        let json = serde_json::to_string(&Sample {
            total: dec!(1502.50),
            price: Some(dec!(0.00000001)),
        })
        .unwrap();
        assert_eq!(json, r#"{"total":1502.50,"price":0.00000001}"#);
        let none = serde_json::to_string(&Sample {
            total: dec!(1),
            price: None,
        })
        .unwrap();
        assert_eq!(none, r#"{"total":1,"price":null}"#);
    }
}
