//! The rules' names, severities and thresholds (seed 001), and the limits in
//! force (seed 000). Plain values: the settings layer fills them.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// The span of the per-minute rules and the rate limit: the orders (or
/// cancellations) of the last 60 seconds, this one included.
pub const WINDOW_SECONDS: i64 = 60;
/// The most recent orders (and cancellations) a state keeps for its
/// windows; the settings refuse a per-minute threshold or limit above it, so
/// the window is never cut short.
pub const RECENT_KEPT_MAX: usize = 10_000;
/// The most distinct symbols a state remembers for the day. Past it every
/// further symbol counts as new (the unusual-symbols rule fired long before).
pub const SYMBOLS_KEPT_MAX: usize = 1_024;

/// The five anomaly rules of seed 001, by their stored names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyType {
    /// More than `orders_per_minute` orders in a minute.
    HighFrequencyOrders,
    /// One order over `order_quantity` units or `order_value` in money.
    LargeOrderSize,
    /// More than `symbols_per_day` distinct symbols in a trading day.
    UnusualSymbols,
    /// An order outside the exchange's session hours.
    OffHoursActivity,
    /// More than `cancellations_per_minute` cancellations in a minute.
    RapidCancellations,
}

impl AnomalyType {
    pub const ALL: [AnomalyType; 5] = [
        AnomalyType::HighFrequencyOrders,
        AnomalyType::LargeOrderSize,
        AnomalyType::UnusualSymbols,
        AnomalyType::OffHoursActivity,
        AnomalyType::RapidCancellations,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyType::HighFrequencyOrders => "high_frequency_orders",
            AnomalyType::LargeOrderSize => "large_order_size",
            AnomalyType::UnusualSymbols => "unusual_symbols",
            AnomalyType::OffHoursActivity => "off_hours_activity",
            AnomalyType::RapidCancellations => "rapid_cancellations",
        }
    }

    /// Seed 001's alerting: bursts (of orders or of cancellations) are the
    /// critical alerts; large orders, many symbols and off-hours activity are
    /// warnings.
    pub fn severity(self) -> Severity {
        match self {
            AnomalyType::HighFrequencyOrders | AnomalyType::RapidCancellations => Severity::High,
            AnomalyType::LargeOrderSize | AnomalyType::UnusualSymbols | AnomalyType::OffHoursActivity => {
                Severity::Medium
            }
        }
    }
}

impl std::fmt::Display for AnomalyType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How loud an anomaly is: HIGH logs `ORDER_ANOMALY_CRITICAL` (and may hold
/// the user), MEDIUM logs `ORDER_ANOMALY_WARNING`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Severity {
    Medium,
    High,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Medium => "MEDIUM",
            Severity::High => "HIGH",
        }
    }

    /// Seed 001: HIGH and CRITICAL go to the critical log line.
    pub fn is_critical(self) -> bool {
        self == Severity::High
    }
}

/// The anomaly rules' thresholds; an anomaly is raised when a figure is
/// strictly above its threshold (30 orders in a minute pass, the 31st raises).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thresholds {
    pub orders_per_minute: u32,
    pub order_quantity: Decimal,
    pub order_value: Decimal,
    pub symbols_per_day: u32,
    pub cancellations_per_minute: u32,
}

impl Default for Thresholds {
    /// Seed 001's figures: 30 a minute, 50,000 units or 10 lakh (1,000,000),
    /// 15 symbols a day, 20 cancellations a minute.
    fn default() -> Self {
        Self {
            orders_per_minute: 30,
            order_quantity: Decimal::from(50_000),
            order_value: Decimal::from(1_000_000),
            symbols_per_day: 15,
            cancellations_per_minute: 20,
        }
    }
}

/// The refusing limits in force for one decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// Orders a user may submit in a trading day; None: no daily limit.
    pub daily_orders: Option<u32>,
    /// Orders a user may submit in any minute; None: no rate limit.
    pub orders_per_minute: Option<u32>,
}
