//! The account as folded from its stream, and `evolve`.
//!
//! `try_evolve` checks in every build that the money invariants still hold
//! after each event and names the broken one; `evolve` (for events `decide`
//! just produced) panics on one, as a bug in this core.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::event::AccountEvent;
use crate::aggregate::{ensure, InvariantViolation};
use crate::events::EventFamily;

/// The kind of money movement a receipt records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    Deposit,
    Reserve,
    Deduct,
    Release,
    Credit,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Deposit => "deposit",
            Operation::Reserve => "reserve",
            Operation::Deduct => "deduct",
            Operation::Release => "release",
            Operation::Credit => "credit",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one idempotency key did. The balance after is kept too, so a repeated
/// call gets the very answer the first one got, whatever happened since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub operation: Operation,
    /// None for a deposit, which belongs to no order.
    pub order_id: Option<Uuid>,
    /// The amount that moved (for a release: what was still reserved, maybe zero).
    pub amount: Decimal,
    pub available_after: Decimal,
    pub reserved_after: Decimal,
}

/// Receipts an account holds: the latest this many idempotency keys it applied.
///
/// Why a bound: an account lives as long as its user and applies about three
/// keys per order, so receipts kept for every key grow with every order for
/// ever, and the state (cached per account, copied when a commit is planned)
/// grows with them. Why this is still idempotent: the receipts are only the
/// fast answer to a repeat. Every money movement the saga can repeat is
/// appended under the command id derived from its key (`balance::embedded`),
/// which the store remembers for good, so the shell answers a repeat older
/// than the window from the log (the append is deduplicated, or a refusal is
/// checked against the store's command record, and the account is folded up to
/// the original append for its receipt). See `balance::embedded::EmbeddedLedger`.
/// Sized so that repeats within moments (a second process, a quick retry)
/// never touch the log: a busy account applies far fewer keys than this
/// between a call and its retry.
pub const RECEIPTS_MAX: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub user_id: Uuid,
    pub opened_at: DateTime<Utc>,
    /// Free to reserve.
    pub available: Decimal,
    /// Held per order. An order whose reservation reaches zero is removed.
    pub reserved: BTreeMap<Uuid, Decimal>,
    /// Running totals since opening: money in (deposits, credits) and out (deductions).
    pub deposited: Decimal,
    pub credited: Decimal,
    pub deducted: Decimal,
    /// The latest applied idempotency keys (at most [`RECEIPTS_MAX`]) and what
    /// each did, oldest first. A short list searched from the newest: cheaper
    /// to copy and to look up than a map at this size.
    pub receipts: VecDeque<(String, Receipt)>,
}

impl Account {
    fn new(user_id: Uuid, opened_at: DateTime<Utc>) -> Self {
        Self {
            user_id,
            opened_at,
            available: Decimal::ZERO,
            reserved: BTreeMap::new(),
            deposited: Decimal::ZERO,
            credited: Decimal::ZERO,
            deducted: Decimal::ZERO,
            receipts: VecDeque::with_capacity(RECEIPTS_MAX),
        }
    }

    /// Everything held for working orders.
    pub fn reserved_total(&self) -> Decimal {
        self.reserved.values().copied().sum()
    }

    /// What is held for one order; zero when nothing is.
    pub fn reserved_for(&self, order_id: Uuid) -> Decimal {
        self.reserved.get(&order_id).copied().unwrap_or(Decimal::ZERO)
    }

    /// What `idempotency_key` did, if it is among the latest [`RECEIPTS_MAX`]
    /// keys applied; None for a new key or an older one (the shell asks the log).
    pub fn receipt(&self, idempotency_key: &str) -> Option<&Receipt> {
        self.receipts
            .iter()
            .rev()
            .find(|(key, _)| key == idempotency_key)
            .map(|(_, receipt)| receipt)
    }

    /// Money is neither made nor lost inside the account: what it holds
    /// (available and reserved) is what came in less what went out.
    pub fn is_conserved(&self) -> bool {
        self.available + self.reserved_total() == self.deposited + self.credited - self.deducted
    }

    /// Available and every reservation are non-negative, and money is conserved.
    pub fn invariants_hold(&self) -> bool {
        self.available >= Decimal::ZERO && self.reserved.values().all(|r| *r >= Decimal::ZERO) && self.is_conserved()
    }

    fn set_reservation(&mut self, order_id: Uuid, amount: Decimal) {
        if amount.is_zero() {
            self.reserved.remove(&order_id);
        } else {
            self.reserved.insert(order_id, amount);
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AccountState {
    #[default]
    NotOpened,
    /// Shared, copied on write (`Arc::make_mut` in `try_evolve`): the shell
    /// keeps an account in its cache, in a planner and in a plan at once, and
    /// a copy of the state is then a count, not a copy of the account.
    Open(Arc<Account>),
}

impl AccountState {
    pub fn account(&self) -> Option<&Account> {
        match self {
            AccountState::NotOpened => None,
            AccountState::Open(account) => Some(account),
        }
    }
}

/// Applies an event `decide` produced; panics on a broken invariant (a bug in this core).
pub fn evolve(state: AccountState, event: &AccountEvent) -> AccountState {
    <super::AccountAggregate as crate::aggregate::Aggregate>::evolve(state, event)
}

/// Applies one event, or names the invariant it breaks (checked in every
/// build: money is never negative, a key held in the receipts is not applied
/// again, the books balance).
pub fn try_evolve(state: AccountState, event: &AccountEvent) -> Result<AccountState, InvariantViolation> {
    let mut shared = match (state, event) {
        (AccountState::NotOpened, AccountEvent::AccountOpened(e)) => {
            return Ok(AccountState::Open(Arc::new(Account::new(e.user_id, e.opened_at))))
        }
        (AccountState::Open(account), _) => account,
        (AccountState::NotOpened, other) => {
            return Err(InvariantViolation(format!(
                "{} before AccountOpened",
                other.event_type()
            )));
        }
    };
    // Copies the account only if another holder shares it (a cache, a planner).
    let account = Arc::make_mut(&mut shared);
    let (operation, order_id, amount, key) = match event {
        AccountEvent::AccountOpened(_) => {
            return Err(InvariantViolation(format!(
                "AccountOpened twice for {}",
                account.user_id
            )));
        }
        AccountEvent::FundsDeposited(e) => {
            account.available += e.amount;
            account.deposited += e.amount;
            (Operation::Deposit, None, e.amount, &e.idempotency_key)
        }
        AccountEvent::FundsReserved(e) => {
            account.available -= e.amount;
            let held = account.reserved_for(e.order_id) + e.amount;
            account.set_reservation(e.order_id, held);
            (Operation::Reserve, Some(e.order_id), e.amount, &e.idempotency_key)
        }
        AccountEvent::ReservationDeducted(e) => {
            let left = account.reserved_for(e.order_id) - e.amount;
            account.set_reservation(e.order_id, left);
            account.deducted += e.amount;
            (Operation::Deduct, Some(e.order_id), e.amount, &e.idempotency_key)
        }
        AccountEvent::ReservationReleased(e) => {
            // Subtract what the event says moved rather than clearing the entry,
            // so a log that disagrees with itself trips the checks below.
            let left = account.reserved_for(e.order_id) - e.amount;
            ensure(left.is_zero(), || {
                format!("release of {} left {left} reserved", e.order_id)
            })?;
            account.set_reservation(e.order_id, left);
            account.available += e.amount;
            (Operation::Release, Some(e.order_id), e.amount, &e.idempotency_key)
        }
        AccountEvent::FundsCredited(e) => {
            account.available += e.amount;
            account.credited += e.amount;
            (Operation::Credit, Some(e.order_id), e.amount, &e.idempotency_key)
        }
    };
    ensure(account.receipt(key).is_none(), || {
        format!("idempotency key {key:?} applied twice to account {}", account.user_id)
    })?;
    let receipt = Receipt {
        operation,
        order_id,
        amount,
        available_after: account.available,
        reserved_after: account.reserved_total(),
    };
    if account.receipts.len() == RECEIPTS_MAX {
        account.receipts.pop_front();
    }
    account.receipts.push_back((key.clone(), receipt));
    ensure(account.available >= Decimal::ZERO, || {
        format!("available {} < 0 on account {}", account.available, account.user_id)
    })?;
    ensure(account.reserved.values().all(|r| *r >= Decimal::ZERO), || {
        format!(
            "negative reservation in {:?} on account {}",
            account.reserved, account.user_id
        )
    })?;
    ensure(account.is_conserved(), || {
        format!(
            "money not conserved on account {}: available {} + reserved {} != deposited {} + credited {} - deducted {}",
            account.user_id,
            account.available,
            account.reserved_total(),
            account.deposited,
            account.credited,
            account.deducted
        )
    })?;
    Ok(AccountState::Open(shared))
}
