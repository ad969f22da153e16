//! What happened in a user's trading day. Past-tense names; the durable
//! schema of `tradingday-*` streams: never edit a shape that has been stored,
//! add a version and an upcaster instead.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::rules::{AnomalyType, Severity};
use crate::events::EventFamily;

/// An order of the day, counted in the commit that records its submission.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderCounted {
    pub order_id: Uuid,
    pub symbol: String,
    pub quantity: Decimal,
    /// quantity × the limit price, or the quote's price; None when neither is known.
    pub value: Option<Decimal>,
    pub at: DateTime<Utc>,
}

/// A cancellation the user asked for, counted in the commit that cancels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancellationCounted {
    pub order_id: Uuid,
    pub at: DateTime<Utc>,
}

/// One rule's hit, recorded with the order (or cancellation) that raised it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalyDetected {
    pub anomaly: AnomalyType,
    pub severity: Severity,
    /// The order that raised it (the order cancelled, for cancellations).
    pub order_id: Uuid,
    /// The figure that crossed the threshold, as text (`31`, `75000`, `07:12`).
    pub observed: String,
    pub threshold: String,
    pub at: DateTime<Utc>,
}

/// Enforcement: the user's further orders are refused until `until`, or
/// until an operator lifts the hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrdersHeld {
    pub anomaly: AnomalyType,
    pub until: DateTime<Utc>,
    pub at: DateTime<Utc>,
}

/// An operator lifted a hold before it ran out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldLifted {
    /// Who lifted it (`operator:<name>`).
    pub by: String,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// Every event of a trading-day stream. The variant name is the stored event type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum TradingDayEvent {
    OrderCounted(OrderCounted),
    CancellationCounted(CancellationCounted),
    AnomalyDetected(AnomalyDetected),
    OrdersHeld(OrdersHeld),
    HoldLifted(HoldLifted),
}

impl TradingDayEvent {
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            TradingDayEvent::OrderCounted(e) => e.at,
            TradingDayEvent::CancellationCounted(e) => e.at,
            TradingDayEvent::AnomalyDetected(e) => e.at,
            TradingDayEvent::OrdersHeld(e) => e.at,
            TradingDayEvent::HoldLifted(e) => e.at,
        }
    }
}

impl EventFamily for TradingDayEvent {
    fn event_type(&self) -> &'static str {
        match self {
            TradingDayEvent::OrderCounted(_) => "OrderCounted",
            TradingDayEvent::CancellationCounted(_) => "CancellationCounted",
            TradingDayEvent::AnomalyDetected(_) => "AnomalyDetected",
            TradingDayEvent::OrdersHeld(_) => "OrdersHeld",
            TradingDayEvent::HoldLifted(_) => "HoldLifted",
        }
    }

    fn schema_version(_event_type: &str) -> u32 {
        1
    }
}
