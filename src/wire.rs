//! JSON shapes shared by every format the engine speaks to the outside (HTTP,
//! RabbitMQ, remote services): decimals go out as JSON numbers, as the seeds
//! show, written from their exact text so nothing passes through a float.

/// `#[serde(with = "crate::wire::exact_number")]`: a decimal as an exact JSON
/// number (`1502.50`, scale kept); numbers and strings are both read.
pub use rust_decimal::serde::arbitrary_precision as exact_number;
/// [`exact_number`] for optional decimals; `None` is `null`.
pub use rust_decimal::serde::arbitrary_precision_option as exact_number_option;

#[cfg(test)]
mod tests {
    use rust_decimal::Decimal;
    use rust_decimal_macros::dec;
    use serde::Serialize;

    use super::*;

    #[derive(Serialize)]
    struct Sample {
        #[serde(with = "exact_number")]
        total: Decimal,
        #[serde(with = "exact_number_option")]
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
