//! The checks made in one pass over the log, in position order, beside the
//! store's `ChainVerifier` (which checks positions, versions and hashes):
//! every event readable, the ledger's books, and what each order ended as.
//! Pure: events in, violations out.
//!
//! Memory grows with the number of streams, accounts and orders (a few
//! hundred bytes each), never with the number of events.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::Violation;
use crate::account::{try_evolve, AccountEvent, AccountState};
use crate::events::{decode, RecordedEvent};
use crate::order::{OrderEvent, OrderStatus, Side};
use crate::saga::SagaEvent;
use crate::submission::SubmissionEvent;
use crate::trading_day::TradingDayEvent;

/// An order that finished this long before the log's last event must have
/// settled (its saga deducted, credited or released): a running engine's
/// in-flight sagas are not reported, a stuck one is.
pub const SETTLE_GRACE: Duration = Duration::minutes(5);

/// What one order did, as far as verify cares.
#[derive(Debug, Clone)]
struct OrderFacts {
    user_id: Uuid,
    side: Side,
    status: OrderStatus,
    /// Executed value and the execution event's position.
    executed: Option<(Decimal, u64)>,
    finished_at: Option<DateTime<Utc>>,
}

/// Money the ledger moved for one order.
#[derive(Debug, Clone, Default)]
struct OrderMoney {
    account: Option<Uuid>,
    reserved: Decimal,
    deducted: Decimal,
    credited: Decimal,
}

fn order_money(money: &mut HashMap<Uuid, OrderMoney>, order_id: Uuid, account: Uuid) -> &mut OrderMoney {
    let entry = money.entry(order_id).or_default();
    entry.account = Some(account);
    entry
}

/// One account's entries, summed independently of the aggregate's fold.
#[derive(Debug, Clone, Default)]
struct Book {
    opened: bool,
    available: Decimal,
    deposited: Decimal,
    credited: Decimal,
    deducted: Decimal,
    keys: HashSet<String>,
    /// The aggregate's own fold, fed while every entry passed the checks
    /// (its debug assertions would stop on a bad one); None once one failed.
    fold: Option<AccountState>,
}

#[derive(Default)]
pub struct LogChecks {
    orders: HashMap<Uuid, OrderFacts>,
    money: HashMap<Uuid, OrderMoney>,
    books: HashMap<Uuid, Book>,
    sagas_completed: HashSet<Uuid>,
    last_recorded_at: Option<DateTime<Utc>>,
    events: u64,
    violations: Vec<Violation>,
}

/// An executed order, for the publication check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Execution {
    pub order_id: Uuid,
    pub position: u64,
}

impl LogChecks {
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Checks one event; events must come in position order.
    pub fn check(&mut self, event: &RecordedEvent) {
        self.events += 1;
        let stream = event.stream_id.as_str();
        self.last_recorded_at = Some(event.recorded_at);
        let decoded = match event.stream_id.category() {
            "order" => self.order(event),
            "saga" => self.saga(event),
            "account" => self.account(event),
            // Only readable: a failed try says nothing about money or endings.
            "submission" => decode::<SubmissionEvent>(event).map(drop).map_err(|e| e.to_string()),
            // Readable, too: a count or an anomaly says nothing about money or endings.
            "tradingday" => decode::<TradingDayEvent>(event).map(drop).map_err(|e| e.to_string()),
            _ => Ok(()),
        };
        if let Err(reason) = decoded {
            self.violations.push(Violation::Undecodable {
                position: event.global_position,
                stream: stream.to_owned(),
                reason,
            });
        }
    }

    fn order(&mut self, event: &RecordedEvent) -> Result<(), String> {
        let order_id = event
            .stream_id
            .uuid_in("order")
            .ok_or_else(|| "an order stream without an order id".to_owned())?;
        let decoded: OrderEvent = decode(event).map_err(|e| e.to_string())?;
        if let OrderEvent::OrderSubmitted(submitted) = &decoded {
            self.orders.insert(
                order_id,
                OrderFacts {
                    user_id: submitted.user_id,
                    side: submitted.side,
                    status: OrderStatus::Pending,
                    executed: None,
                    finished_at: None,
                },
            );
            return Ok(());
        }
        let facts = self
            .orders
            .get_mut(&order_id)
            .ok_or_else(|| format!("{} before the order's OrderSubmitted", event.event_type))?;
        match decoded {
            OrderEvent::OrderSubmitted(_) | OrderEvent::OrderTriggered(_) => {}
            OrderEvent::OrderAccepted(_) => facts.status = OrderStatus::Processing,
            OrderEvent::OrderExecuted(e) => {
                facts.status = OrderStatus::Executed;
                facts.executed = Some((e.total_value, event.global_position));
                facts.finished_at = Some(e.executed_at);
            }
            OrderEvent::OrderCancelled(e) => {
                facts.status = OrderStatus::Cancelled;
                facts.finished_at = Some(e.cancelled_at);
            }
            OrderEvent::OrderFailed(e) => {
                facts.status = OrderStatus::Failed;
                facts.finished_at = Some(e.failed_at);
            }
        }
        Ok(())
    }

    fn saga(&mut self, event: &RecordedEvent) -> Result<(), String> {
        let decoded: SagaEvent = decode(event).map_err(|e| e.to_string())?;
        if let (SagaEvent::SagaCompleted(_), Some(order_id)) = (decoded, event.stream_id.uuid_in("saga")) {
            self.sagas_completed.insert(order_id);
        }
        Ok(())
    }

    fn account(&mut self, event: &RecordedEvent) -> Result<(), String> {
        let account = event
            .stream_id
            .uuid_in("account")
            .ok_or_else(|| "an account stream without a user id".to_owned())?;
        let decoded: AccountEvent = decode(event).map_err(|e| e.to_string())?;
        let book = self.books.entry(account).or_insert_with(|| Book {
            fold: Some(AccountState::NotOpened),
            ..Book::default()
        });
        let mut problems = Vec::new();
        let money = &mut self.money;
        let (amount, key) = match &decoded {
            AccountEvent::AccountOpened(_) => {
                if book.opened {
                    problems.push("opened twice".to_owned());
                }
                book.opened = true;
                (Decimal::ZERO, None)
            }
            AccountEvent::FundsDeposited(e) => {
                book.available += e.amount;
                book.deposited += e.amount;
                (e.amount, Some(&e.idempotency_key))
            }
            AccountEvent::FundsReserved(e) => {
                book.available -= e.amount;
                order_money(money, e.order_id, account).reserved += e.amount;
                if book.available < Decimal::ZERO {
                    problems.push(format!(
                        "reserving {} for order {} leaves {} available",
                        e.amount, e.order_id, book.available
                    ));
                }
                (e.amount, Some(&e.idempotency_key))
            }
            AccountEvent::ReservationDeducted(e) => {
                let money = order_money(money, e.order_id, account);
                money.reserved -= e.amount;
                money.deducted += e.amount;
                book.deducted += e.amount;
                if money.reserved < Decimal::ZERO {
                    problems.push(format!(
                        "deducting {} for order {} takes more than was reserved ({} short)",
                        e.amount, e.order_id, -money.reserved
                    ));
                }
                (e.amount, Some(&e.idempotency_key))
            }
            AccountEvent::ReservationReleased(e) => {
                let money = order_money(money, e.order_id, account);
                money.reserved -= e.amount;
                book.available += e.amount;
                if !money.reserved.is_zero() {
                    problems.push(format!(
                        "releasing {} for order {} leaves {} reserved",
                        e.amount, e.order_id, money.reserved
                    ));
                }
                (e.amount, Some(&e.idempotency_key))
            }
            AccountEvent::FundsCredited(e) => {
                order_money(money, e.order_id, account).credited += e.amount;
                book.available += e.amount;
                book.credited += e.amount;
                (e.amount, Some(&e.idempotency_key))
            }
        };
        if !book.opened {
            problems.push(format!("{} before AccountOpened", event.event_type));
        }
        if amount < Decimal::ZERO {
            problems.push(format!("{} of a negative amount {amount}", event.event_type));
        }
        if let Some(key) = key {
            if !book.keys.insert(key.clone()) {
                problems.push(format!("idempotency key {key:?} applied twice"));
            }
        }
        if problems.is_empty() {
            // The aggregate's own invariants, checked in every build: a breach
            // the checks above did not name is reported, never a panic.
            book.fold = match book.fold.take().map(|state| try_evolve(state, &decoded)) {
                Some(Ok(state)) => Some(state),
                Some(Err(violation)) => {
                    problems.push(violation.to_string());
                    None
                }
                None => None,
            };
        } else {
            book.fold = None;
        }
        for detail in problems {
            self.violations.push(Violation::Ledger {
                account,
                detail: format!("{detail} (position {})", event.global_position),
            });
        }
        Ok(())
    }

    /// The end-of-log checks; returns every violation and the executions (for
    /// the publication check), in position order.
    pub fn finish(mut self) -> (Vec<Violation>, Vec<Execution>) {
        let mut total_held = Decimal::ZERO;
        let mut total_in = Decimal::ZERO;
        let mut reserved_by_account: HashMap<Uuid, Decimal> = HashMap::new();
        for money in self.money.values() {
            if let Some(account) = money.account {
                *reserved_by_account.entry(account).or_default() += money.reserved;
            }
        }
        let mut accounts: Vec<_> = self.books.iter().collect();
        accounts.sort_by_key(|(id, _)| **id);
        for (account, book) in accounts {
            let reserved = reserved_by_account.get(account).copied().unwrap_or_default();
            let held = book.available + reserved;
            let entries = book.deposited + book.credited - book.deducted;
            total_held += held;
            total_in += entries;
            if held != entries {
                self.violations.push(Violation::Ledger {
                    account: *account,
                    detail: format!(
                        "available {} + reserved {reserved} = {held}, but deposits {} + credits {} - deductions {} = {entries}",
                        book.available, book.deposited, book.credited, book.deducted
                    ),
                });
            }
            if let Some(folded) = book.fold.as_ref().and_then(AccountState::account) {
                if folded.available != book.available || folded.reserved_total() != reserved {
                    self.violations.push(Violation::Ledger {
                        account: *account,
                        detail: format!(
                            "the account's fold holds available {} and reserved {}, its entries sum to {} and {reserved}",
                            folded.available,
                            folded.reserved_total(),
                            book.available
                        ),
                    });
                }
            }
        }
        if total_held != total_in {
            self.violations.push(Violation::LedgerTotal {
                detail: format!("accounts hold {total_held} in all, their entries sum to {total_in}"),
            });
        }
        let newest = self.last_recorded_at;
        let mut orders: Vec<_> = self.orders.iter().collect();
        orders.sort_by_key(|(id, _)| **id);
        let mut executions = Vec::new();
        for (order_id, facts) in orders {
            if let Some((_, position)) = facts.executed {
                executions.push(Execution {
                    order_id: *order_id,
                    position,
                });
            }
            // Orders of accounts kept elsewhere (a remote balance service) have no entries here.
            if !facts.status.is_terminal() || !self.books.contains_key(&facts.user_id) {
                continue;
            }
            let settled = self.sagas_completed.contains(order_id)
                || match (facts.finished_at, newest) {
                    (Some(finished), Some(newest)) => newest - finished > SETTLE_GRACE,
                    _ => false,
                };
            if !settled {
                continue;
            }
            let money = self.money.get(order_id).cloned().unwrap_or_default();
            if !money.reserved.is_zero() {
                self.violations.push(Violation::Reserved {
                    order_id: *order_id,
                    status: facts.status,
                    amount: money.reserved,
                });
            }
            let value = facts.executed.map_or(Decimal::ZERO, |(value, _)| value);
            let (moved, what) = match facts.side {
                Side::Buy => (money.deducted, "deducted"),
                Side::Sell => (money.credited, "credited"),
            };
            if moved != value {
                self.violations.push(Violation::Ledger {
                    account: facts.user_id,
                    detail: format!(
                        "order {order_id} ({}, {}) is worth {value}, but the ledger {what} {moved} for it",
                        facts.side.as_str(),
                        facts.status
                    ),
                });
            }
        }
        executions.sort_by_key(|e| e.position);
        (self.violations, executions)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::events::{encode, EventMetadata, StreamId};
    use crate::submission::{FailedAttempt, NextTry};

    fn submission_event(payload: Option<serde_json::Value>) -> RecordedEvent {
        let attempt = FailedAttempt {
            order_id: Uuid::from_u128(7),
            retry_attempt: 0,
            next: NextTry::Rung {
                rung: 1,
                delay_ms: 300_000,
            },
            error: "database unreachable".into(),
            metadata: EventMetadata::default(),
        };
        let new = encode(
            &attempt.event(DateTime::UNIX_EPOCH),
            Uuid::from_u128(1),
            EventMetadata::default(),
        )
        .unwrap();
        RecordedEvent {
            global_position: 1,
            stream_id: StreamId::submission(Uuid::from_u128(7)),
            stream_version: 1,
            event_id: new.event_id,
            event_type: new.event_type,
            schema_version: new.schema_version,
            payload: payload.map(crate::events::Payload::from).unwrap_or(new.payload),
            metadata: new.metadata,
            command_id: None,
            recorded_at: DateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn a_failed_try_is_read_and_a_corrupt_one_is_named() {
        // Proves verify accepts the submission streams' events and reports one it cannot read, as for any stream.
        let mut checks = LogChecks::default();
        checks.check(&submission_event(None));
        assert!(checks.finish().0.is_empty());
        let mut checks = LogChecks::default();
        checks.check(&submission_event(Some(serde_json::json!({"order_id": "nope"}))));
        let (violations, _) = checks.finish();
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].kind(), "undecodable");
    }
}
