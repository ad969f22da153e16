//! The balance service over HTTP (contract: `docs/contracts/balance-service.md`).
//!
//! Never sends a mutating call without its idempotency key (body and
//! `Idempotency-Key` header): retries here and in the saga rely on the service
//! applying one key once.

use std::sync::Arc;

use async_trait::async_trait;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Balance, BalanceError, BalanceOp, BalanceReceipt, BalanceService, ReleaseOp};
use crate::clients::{
    Answer, BreakerState, Call, ConfigError, RemoteError, RemoteService, RemoteServiceConfig, Transient,
};
use crate::clock::Clock;

/// Every balance endpoint lives under this prefix.
pub const BALANCES_PATH: &str = "/api/v1/balances";
/// The header that repeats a mutating call's idempotency key.
pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";

#[derive(Debug, Serialize)]
struct MoveBody<'a> {
    order_id: Uuid,
    #[serde(with = "crate::wire::exact_number")]
    amount: Decimal,
    idempotency_key: &'a str,
}

#[derive(Debug, Serialize)]
struct ReleaseBody<'a> {
    order_id: Uuid,
    idempotency_key: &'a str,
}

#[derive(Debug, Deserialize)]
struct SufficientFundsBody {
    sufficient: bool,
}

/// A 4xx body: `{"error": "<code>", …details}`.
#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    error: Option<String>,
    message: Option<String>,
    available: Option<Decimal>,
    requested: Option<Decimal>,
    reserved: Option<Decimal>,
}

/// The order and amount a mutating call was about, to fill in refusals.
#[derive(Debug, Clone, Copy)]
struct Subject {
    order_id: Uuid,
    amount: Option<Decimal>,
}

/// [`BalanceService`] against the remote balance service, with timeouts,
/// retries, a circuit breaker and (when configured) signed requests.
#[derive(Debug)]
pub struct HttpBalanceClient {
    remote: RemoteService,
}

impl HttpBalanceClient {
    pub fn new(config: &RemoteServiceConfig) -> Result<Self, ConfigError> {
        Ok(Self {
            remote: RemoteService::new("balance", config)?,
        })
    }

    /// Finds the service again through `discovery` when its address stops answering.
    pub fn with_discovery(self, discovery: Arc<dyn crate::clients::AddressLookup>) -> Self {
        Self {
            remote: self.remote.with_discovery(discovery),
        }
    }

    /// Replaces the clock that timestamps signatures.
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        Self {
            remote: self.remote.with_clock(clock),
        }
    }

    /// The breaker's state, for health checks and metrics.
    pub fn breaker_state(&self) -> BreakerState {
        self.remote.breaker_state()
    }

    /// The breaker, for `/health/circuit-breaker` and `/metrics`.
    pub fn breaker(&self) -> std::sync::Arc<crate::clients::CircuitBreaker> {
        self.remote.breaker()
    }

    async fn move_money(&self, action: &str, op: BalanceOp) -> Result<BalanceReceipt, BalanceError> {
        let body = encode(&MoveBody {
            order_id: op.order_id,
            amount: op.amount,
            idempotency_key: &op.idempotency_key,
        })?;
        let subject = Subject {
            order_id: op.order_id,
            amount: Some(op.amount),
        };
        self.mutate(op.user_id, action, body, &op.idempotency_key, subject)
            .await
    }

    async fn mutate(
        &self,
        user_id: Uuid,
        action: &str,
        body: Vec<u8>,
        key: &str,
        subject: Subject,
    ) -> Result<BalanceReceipt, BalanceError> {
        let path = format!("{BALANCES_PATH}/{user_id}/{action}");
        let call = Call::post(&path, body).header(IDEMPOTENCY_KEY_HEADER, key);
        let answer = self.remote.send(call).await.map_err(from_remote)?;
        decode(&answer, Some(subject))
    }
}

/// Writes a decimal as an exact JSON number: rust_decimal's own `Serialize`
/// writes a string unless the crate-wide `serde-float` feature is on, and
/// serde_json's `arbitrary_precision` keeps every digit of the number text.
fn encode(body: &impl Serialize) -> Result<Vec<u8>, BalanceError> {
    serde_json::to_vec(body).map_err(|e| BalanceError::Rejected(format!("the request could not be encoded: {e}")))
}

/// No answer: transient causes are `Unavailable`, a request we could not even build is `Rejected`.
fn from_remote(error: RemoteError) -> BalanceError {
    if error.is_transient() {
        BalanceError::Unavailable(error.to_string())
    } else {
        BalanceError::Rejected(error.to_string())
    }
}

/// A 2xx is decoded as `T`; anything else is a refusal.
fn decode<T: for<'de> Deserialize<'de>>(answer: &Answer, subject: Option<Subject>) -> Result<T, BalanceError> {
    if !answer.is_success() {
        return Err(refusal(answer, subject));
    }
    serde_json::from_slice(&answer.body).map_err(|e| {
        // The service did answer, and for a mutating call may have moved money.
        // Transient, so the saga asks again with the same key and either gets a
        // readable answer or exhausts its retries and compensates.
        BalanceError::Unavailable(format!(
            "unreadable answer (HTTP {}): {e}: {}",
            answer.status,
            answer.body_excerpt()
        ))
    })
}

fn refusal(answer: &Answer, subject: Option<Subject>) -> BalanceError {
    let body: ErrorBody = serde_json::from_slice(&answer.body).unwrap_or_default();
    let conflict = matches!(answer.status, 409 | 422);
    match (conflict, body.error.as_deref(), subject) {
        (true, Some("insufficient_funds"), _) => {
            if let Some(available) = body.available {
                let requested = body.requested.or(subject.and_then(|s| s.amount));
                if let Some(requested) = requested {
                    return BalanceError::InsufficientFunds { available, requested };
                }
            }
        }
        (true, Some("no_reservation"), Some(subject)) => {
            return BalanceError::NoReservation {
                order_id: subject.order_id,
            }
        }
        (true, Some("exceeds_reservation"), Some(subject)) => {
            if let (Some(reserved), Some(requested)) = (body.reserved, body.requested.or(subject.amount)) {
                return BalanceError::ExceedsReservation {
                    order_id: subject.order_id,
                    reserved,
                    requested,
                };
            }
        }
        _ => {}
    }
    let detail = body.message.or(body.error).unwrap_or_else(|| answer.body_excerpt());
    BalanceError::Rejected(format!("HTTP {}: {detail}", answer.status))
}

#[async_trait]
impl BalanceService for HttpBalanceClient {
    async fn get_balance(&self, user_id: Uuid) -> Result<Balance, BalanceError> {
        let path = format!("{BALANCES_PATH}/{user_id}");
        let answer = self.remote.send(Call::get(&path)).await.map_err(from_remote)?;
        decode(&answer, None)
    }

    async fn reserve(&self, op: BalanceOp) -> Result<BalanceReceipt, BalanceError> {
        self.move_money("reserve", op).await
    }

    async fn deduct(&self, op: BalanceOp) -> Result<BalanceReceipt, BalanceError> {
        self.move_money("deduct", op).await
    }

    async fn credit(&self, op: BalanceOp) -> Result<BalanceReceipt, BalanceError> {
        self.move_money("credit", op).await
    }

    async fn release(&self, op: ReleaseOp) -> Result<BalanceReceipt, BalanceError> {
        let body = encode(&ReleaseBody {
            order_id: op.order_id,
            idempotency_key: &op.idempotency_key,
        })?;
        let subject = Subject {
            order_id: op.order_id,
            amount: None,
        };
        self.mutate(op.user_id, "release", body, &op.idempotency_key, subject)
            .await
    }

    async fn sufficient_funds(&self, user_id: Uuid, amount: Decimal) -> Result<bool, BalanceError> {
        let path = format!("{BALANCES_PATH}/{user_id}/sufficient-funds?amount={amount}");
        let answer = self.remote.send(Call::get(&path)).await.map_err(from_remote)?;
        decode::<SufficientFundsBody>(&answer, None).map(|body| body.sufficient)
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;

    const ORDER: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            body: body.as_bytes().to_vec(),
        }
    }

    fn subject() -> Option<Subject> {
        Some(Subject {
            order_id: ORDER,
            amount: Some(dec!(10.5)),
        })
    }

    #[test]
    fn decimals_go_out_as_json_numbers_without_rounding() {
        // Proves amounts are sent as exact JSON numbers, not strings or floats, trailing zeros and all.
        for (amount, expected) in [
            (dec!(1234567890.12345678), r#""amount":1234567890.12345678,"#),
            (dec!(0.00000001), r#""amount":0.00000001,"#),
            (dec!(10.50), r#""amount":10.50,"#),
            (dec!(-3), r#""amount":-3,"#),
        ] {
            let body = encode(&MoveBody {
                order_id: ORDER,
                amount,
                idempotency_key: "k",
            })
            .unwrap();
            let text = String::from_utf8(body).unwrap();
            assert!(text.contains(expected), "{text}");
        }
    }

    #[test]
    fn decimals_are_accepted_as_numbers_or_strings() {
        // Proves a receipt decodes whether the service writes amounts as numbers or strings.
        let user = Uuid::from_u128(2);
        let as_numbers = format!(
            r#"{{"idempotency_key":"k","amount":0.10000001,"balance":{{"user_id":"{user}","available":99999999.99999999,"reserved":0}}}}"#
        );
        let as_strings = format!(
            r#"{{"idempotency_key":"k","amount":"0.10000001","balance":{{"user_id":"{user}","available":"99999999.99999999","reserved":"0"}}}}"#
        );
        for text in [as_numbers, as_strings] {
            let receipt: BalanceReceipt = decode(&answer(200, &text), None).unwrap();
            assert_eq!(receipt.amount, dec!(0.10000001));
            assert_eq!(receipt.balance.available, dec!(99999999.99999999));
            assert_eq!(receipt.balance.reserved, Decimal::ZERO);
        }
    }

    #[test]
    fn refusals_map_to_the_matching_variants() {
        // Proves each documented error code becomes its BalanceError, with the order filled in.
        assert_eq!(
            refusal(
                &answer(
                    422,
                    r#"{"error":"insufficient_funds","available":"3.5","requested":10.5}"#
                ),
                subject()
            ),
            BalanceError::InsufficientFunds {
                available: dec!(3.5),
                requested: dec!(10.5)
            }
        );
        for status in [409, 422] {
            assert_eq!(
                refusal(&answer(status, r#"{"error":"no_reservation"}"#), subject()),
                BalanceError::NoReservation { order_id: ORDER }
            );
            assert_eq!(
                refusal(
                    &answer(
                        status,
                        r#"{"error":"exceeds_reservation","reserved":5,"requested":10.5}"#
                    ),
                    subject()
                ),
                BalanceError::ExceedsReservation {
                    order_id: ORDER,
                    reserved: dec!(5),
                    requested: dec!(10.5)
                }
            );
        }
    }

    #[test]
    fn other_refusals_are_rejected_with_the_services_words() {
        // Proves unknown codes, odd statuses and unreadable bodies still give an actionable Rejected.
        let cases = [
            (
                400,
                r#"{"error":"invalid_amount","message":"amount must be positive"}"#,
                "HTTP 400: amount must be positive",
            ),
            (404, r#"{"error":"account_not_found"}"#, "HTTP 404: account_not_found"),
            (422, "not json", "HTTP 422: not json"),
            (
                400,
                r#"{"error":"insufficient_funds","available":1}"#,
                "HTTP 400: insufficient_funds",
            ),
        ];
        for (status, body, expected) in cases {
            let error = refusal(&answer(status, body), subject());
            assert_eq!(error, BalanceError::Rejected(expected.into()));
            assert!(!error.is_transient());
        }
    }

    #[test]
    fn an_unreadable_success_is_transient() {
        // Proves a garbled 2xx is retried later with the same key rather than taken as a refusal.
        let error = decode::<BalanceReceipt>(&answer(200, "{"), subject()).unwrap_err();
        assert!(error.is_transient(), "{error}");
    }
}
