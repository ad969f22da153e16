//! The order's vocabulary: sides, types, statuses, symbols and decimal rules.
//!
//! Pure: no I/O. Wire names are the seed's (`BUY`, `STOP_LIMIT`, `PENDING`).

use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Decimal places allowed on quantities and prices, as in `DECIMAL(18, 8)`.
pub const DECIMAL_SCALE_MAX: u32 = 8;

/// Digits allowed before the point in `DECIMAL(18, 8)`: values stay below 10^10.
pub const DECIMAL_INTEGER_DIGITS_MAX: u32 = 10;

/// Longest symbol the `orders.symbol VARCHAR(20)` column holds.
pub const SYMBOL_LEN_MAX: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "BUY",
            Side::Sell => "SELL",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderType {
    Market,
    Limit,
    StopLoss,
    StopLimit,
}

impl OrderType {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderType::Market => "MARKET",
            OrderType::Limit => "LIMIT",
            OrderType::StopLoss => "STOP_LOSS",
            OrderType::StopLimit => "STOP_LIMIT",
        }
    }

    pub fn needs_limit_price(self) -> bool {
        matches!(self, OrderType::Limit | OrderType::StopLimit)
    }

    pub fn needs_stop_price(self) -> bool {
        matches!(self, OrderType::StopLoss | OrderType::StopLimit)
    }
}

/// Where an order is in its life. `Executed`, `Cancelled` and `Failed` are terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    /// Submitted and validated; funds not yet reserved.
    Pending,
    /// Funds reserved (BUY) or accepted (SELL): working or resting in the market.
    Processing,
    Executed,
    Cancelled,
    Failed,
}

impl OrderStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            OrderStatus::Executed | OrderStatus::Cancelled | OrderStatus::Failed
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "PENDING",
            OrderStatus::Processing => "PROCESSING",
            OrderStatus::Executed => "EXECUTED",
            OrderStatus::Cancelled => "CANCELLED",
            OrderStatus::Failed => "FAILED",
        }
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for OrderType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A ticker symbol: 1 to 20 of `A-Z`, `0-9`, `.` and `-`, starting with a letter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Symbol(String);

/// Why a string is not a symbol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SymbolError {
    #[error("symbol is empty")]
    Empty,
    #[error("symbol {0:?} is longer than {SYMBOL_LEN_MAX} characters")]
    TooLong(String),
    #[error("symbol {0:?} must start with an upper-case letter and use only A-Z, 0-9, '.' and '-'")]
    BadCharacters(String),
}

impl Symbol {
    pub fn parse(raw: &str) -> Result<Self, SymbolError> {
        if raw.is_empty() {
            return Err(SymbolError::Empty);
        }
        if raw.len() > SYMBOL_LEN_MAX {
            return Err(SymbolError::TooLong(raw.to_owned()));
        }
        let mut chars = raw.chars();
        let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_uppercase());
        let rest_ok = chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '.' || c == '-');
        if !starts_with_letter || !rest_ok {
            return Err(SymbolError::BadCharacters(raw.to_owned()));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Symbol {
    type Error = SymbolError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Symbol::parse(&value)
    }
}

impl From<Symbol> for String {
    fn from(value: Symbol) -> Self {
        value.0
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a decimal does not fit `DECIMAL(18, 8)` as a positive amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("must be greater than zero")]
    NotPositive,
    #[error("has {0} decimal places; at most {DECIMAL_SCALE_MAX} are allowed")]
    TooManyDecimalPlaces(u32),
    #[error("must be below 10^{DECIMAL_INTEGER_DIGITS_MAX}")]
    TooLarge,
}

/// Checks that a quantity or price is positive and fits `DECIMAL(18, 8)`.
pub fn check_positive_amount(value: Decimal) -> Result<(), AmountError> {
    if value <= Decimal::ZERO {
        return Err(AmountError::NotPositive);
    }
    // Trailing zeros do not count: "10.500000000" has scale 9 but means 10.5.
    let scale = value.normalize().scale();
    if scale > DECIMAL_SCALE_MAX {
        return Err(AmountError::TooManyDecimalPlaces(scale));
    }
    if value >= Decimal::from(10_i64.pow(DECIMAL_INTEGER_DIGITS_MAX)) {
        return Err(AmountError::TooLarge);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn symbols_follow_the_ticker_format() {
        assert!(Symbol::parse("AAPL").is_ok());
        assert!(Symbol::parse("BRK.B").is_ok());
        assert_eq!(Symbol::parse(""), Err(SymbolError::Empty));
        assert!(matches!(Symbol::parse("aapl"), Err(SymbolError::BadCharacters(_))));
        assert!(matches!(Symbol::parse("1ABC"), Err(SymbolError::BadCharacters(_))));
        assert!(matches!(Symbol::parse("A B"), Err(SymbolError::BadCharacters(_))));
        assert!(matches!(Symbol::parse(&"A".repeat(21)), Err(SymbolError::TooLong(_))));
    }

    #[test]
    fn amounts_must_fit_decimal_18_8() {
        assert_eq!(check_positive_amount(dec!(0.00000001)), Ok(()));
        assert_eq!(check_positive_amount(dec!(10.500000000)), Ok(()));
        assert_eq!(check_positive_amount(dec!(0)), Err(AmountError::NotPositive));
        assert_eq!(check_positive_amount(dec!(-1)), Err(AmountError::NotPositive));
        assert_eq!(
            check_positive_amount(dec!(0.000000001)),
            Err(AmountError::TooManyDecimalPlaces(9))
        );
        assert_eq!(check_positive_amount(dec!(9999999999.99999999)), Ok(()));
        assert_eq!(check_positive_amount(dec!(10000000000)), Err(AmountError::TooLarge));
    }

    #[test]
    fn wire_names_are_the_seeds() {
        assert_eq!(serde_json::to_string(&OrderType::StopLimit).unwrap(), "\"STOP_LIMIT\"");
        assert_eq!(serde_json::to_string(&Side::Buy).unwrap(), "\"BUY\"");
        assert_eq!(
            serde_json::to_string(&OrderStatus::Processing).unwrap(),
            "\"PROCESSING\""
        );
    }
}
