//! What happened to an account. Past-tense names; the durable schema of
//! `account-<user id>` streams: never edit a shape that has been stored, add a
//! version and an upcaster instead.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::events::EventFamily;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountOpened {
    pub user_id: Uuid,
    pub opened_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FundsDeposited {
    pub amount: Decimal,
    pub idempotency_key: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FundsReserved {
    pub order_id: Uuid,
    pub amount: Decimal,
    pub idempotency_key: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReservationDeducted {
    pub order_id: Uuid,
    pub amount: Decimal,
    pub idempotency_key: String,
    pub at: DateTime<Utc>,
}

/// Recorded even when nothing was reserved (amount zero), so the key has a
/// receipt and a repeated release answers the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReservationReleased {
    pub order_id: Uuid,
    /// Whatever was still reserved for the order; may be zero.
    pub amount: Decimal,
    pub idempotency_key: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FundsCredited {
    pub order_id: Uuid,
    pub amount: Decimal,
    pub idempotency_key: String,
    pub at: DateTime<Utc>,
}

/// Every event of an account stream. The variant name is the stored event type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum AccountEvent {
    AccountOpened(AccountOpened),
    FundsDeposited(FundsDeposited),
    FundsReserved(FundsReserved),
    ReservationDeducted(ReservationDeducted),
    ReservationReleased(ReservationReleased),
    FundsCredited(FundsCredited),
}

impl AccountEvent {
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            AccountEvent::AccountOpened(e) => e.opened_at,
            AccountEvent::FundsDeposited(e) => e.at,
            AccountEvent::FundsReserved(e) => e.at,
            AccountEvent::ReservationDeducted(e) => e.at,
            AccountEvent::ReservationReleased(e) => e.at,
            AccountEvent::FundsCredited(e) => e.at,
        }
    }
}

impl EventFamily for AccountEvent {
    fn event_type(&self) -> &'static str {
        match self {
            AccountEvent::AccountOpened(_) => "AccountOpened",
            AccountEvent::FundsDeposited(_) => "FundsDeposited",
            AccountEvent::FundsReserved(_) => "FundsReserved",
            AccountEvent::ReservationDeducted(_) => "ReservationDeducted",
            AccountEvent::ReservationReleased(_) => "ReservationReleased",
            AccountEvent::FundsCredited(_) => "FundsCredited",
        }
    }

    fn schema_version(_event_type: &str) -> u32 {
        1
    }
}
