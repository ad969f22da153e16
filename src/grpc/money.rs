//! Amounts across the proto's doubles. A double coming in becomes a decimal
//! through its shortest decimal representation (Rust's `Display` of `f64`
//! prints the shortest text that reads back as the same double: 1.1 is "1.1",
//! not 1.100000000000000088817841970012523), refused beyond 8 decimal places
//! or when not finite; a decimal going out becomes the double nearest to it.
//!
//! Must never do arithmetic on a double: past this edge every amount is a
//! `rust_decimal::Decimal`, as on the HTTP and AMQP paths.

use std::str::FromStr;

use rust_decimal::Decimal;

use crate::api::dto::Amount;
use crate::order::DECIMAL_SCALE_MAX;

/// The amount a double stands for: `Exact` when its shortest text has at most
/// [`DECIMAL_SCALE_MAX`] decimal places, else `Unrepresentable`, which the
/// submission refuses with the HTTP path's slug and sentence.
pub fn amount(value: f64) -> Amount {
    if !value.is_finite() {
        return Amount::Unrepresentable(value.to_string());
    }
    // Display never uses an exponent, so the places are the digits after the point.
    let text = value.to_string();
    let places = text.split_once('.').map_or(0, |(_, fraction)| fraction.len());
    if places > DECIMAL_SCALE_MAX as usize {
        return Amount::Unrepresentable(text);
    }
    Decimal::from_str(&text).map_or(Amount::Unrepresentable(text), Amount::Exact)
}

/// The double nearest to `value`, for the proto's outgoing fields.
pub fn double(value: Decimal) -> f64 {
    // Parsing the exact text rounds once, to the nearest double.
    f64::from_str(&value.to_string()).unwrap_or(f64::NAN)
}

/// The double nearest to a JSON number (the stored first answer to an Idempotency-Key).
pub fn double_of_json(value: &serde_json::Value) -> Option<f64> {
    match value {
        serde_json::Value::Number(number) => f64::from_str(&number.to_string()).ok(),
        serde_json::Value::String(text) => f64::from_str(text).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn a_double_is_read_through_its_shortest_text() {
        // Proves 1.1 is 1.1 (not the binary expansion), 8 places pass and 9 are refused.
        assert_eq!(amount(1.1), Amount::Exact(dec!(1.1)));
        assert_eq!(amount(150.25), Amount::Exact(dec!(150.25)));
        assert_eq!(amount(10.0), Amount::Exact(dec!(10)));
        assert_eq!(amount(0.12345678), Amount::Exact(dec!(0.12345678)));
        assert_eq!(amount(0.1 + 0.2), Amount::Unrepresentable("0.30000000000000004".into()));
        assert_eq!(amount(1.123456789), Amount::Unrepresentable("1.123456789".into()));
        assert_eq!(amount(1e-9), Amount::Unrepresentable("0.000000001".into()));
    }

    #[test]
    fn not_a_number_and_infinities_are_refused() {
        // Proves no non-finite double becomes an amount.
        for value in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(matches!(amount(value), Amount::Unrepresentable(_)), "{value}");
        }
    }

    #[test]
    fn a_huge_double_is_refused_not_rounded() {
        // Proves a value no decimal holds is refused rather than saturated.
        assert!(matches!(amount(1e300), Amount::Unrepresentable(_)));
    }

    #[test]
    fn a_decimal_goes_out_as_the_nearest_double() {
        // Proves what a client reads back is the amount it sent.
        assert_eq!(double(dec!(1502.50)), 1502.5);
        assert_eq!(double(dec!(0.1)), 0.1);
        assert_eq!(double_of_json(&serde_json::json!(150.25)), Some(150.25));
    }
}
