//! `decide` for accounts: the money rules. A repeated idempotency key is
//! absorbed (no events), because callers retry after timeouts and crashes.
//! Only the latest keys' receipts are held (`RECEIPTS_MAX`): a key older than
//! that decides as new here, and the shell recognises it from the log, where
//! the append it names is recorded for good (`balance::embedded`).

use rust_decimal::Decimal;
use uuid::Uuid;

use super::command::AccountCommand;
use super::event::{
    AccountEvent, AccountOpened, FundsCredited, FundsDeposited, FundsReserved, ReservationDeducted, ReservationReleased,
};
use super::rejection::{AccountRejection, IDEMPOTENCY_KEY_LEN_MAX};
use super::state::{AccountState, Operation, Receipt};
use crate::order::check_positive_amount;

pub fn decide(state: &AccountState, command: &AccountCommand) -> Result<Vec<AccountEvent>, AccountRejection> {
    let account = match (state, command) {
        (AccountState::NotOpened, AccountCommand::Open { user_id, at }) => {
            return Ok(vec![AccountEvent::AccountOpened(AccountOpened {
                user_id: *user_id,
                opened_at: *at,
            })])
        }
        (AccountState::NotOpened, _) => return Err(AccountRejection::NotOpened),
        // The shell opens defensively; a second opening is a no-op, not an error.
        (AccountState::Open(_), AccountCommand::Open { .. }) => return Ok(vec![]),
        (AccountState::Open(account), _) => account,
    };
    let key = command.idempotency_key().unwrap_or_default();
    check_key(key)?;
    if let Some(receipt) = account.receipt(key) {
        // The same request again: it already happened, the caller reads the receipt.
        // The same key for another request is a caller bug; answering it with
        // the first request's receipt would hide that, so it is refused.
        return if answers(receipt, command) {
            Ok(vec![])
        } else {
            Err(AccountRejection::KeyReused {
                key: key.to_owned(),
                original: receipt.operation,
            })
        };
    }
    let idempotency_key = key.to_owned();
    let event = match command {
        AccountCommand::Open { .. } => return Ok(vec![]),
        AccountCommand::Deposit { amount, at, .. } => {
            check_amount(*amount)?;
            AccountEvent::FundsDeposited(FundsDeposited {
                amount: *amount,
                idempotency_key,
                at: *at,
            })
        }
        AccountCommand::Reserve {
            order_id, amount, at, ..
        } => {
            check_amount(*amount)?;
            if account.available < *amount {
                return Err(AccountRejection::InsufficientFunds {
                    available: account.available,
                    requested: *amount,
                });
            }
            AccountEvent::FundsReserved(FundsReserved {
                order_id: *order_id,
                amount: *amount,
                idempotency_key,
                at: *at,
            })
        }
        AccountCommand::Deduct {
            order_id, amount, at, ..
        } => {
            check_amount(*amount)?;
            let Some(&reserved) = account.reserved.get(order_id) else {
                return Err(AccountRejection::NoReservation { order_id: *order_id });
            };
            if reserved < *amount {
                return Err(AccountRejection::ExceedsReservation {
                    order_id: *order_id,
                    reserved,
                    requested: *amount,
                });
            }
            AccountEvent::ReservationDeducted(ReservationDeducted {
                order_id: *order_id,
                amount: *amount,
                idempotency_key,
                at: *at,
            })
        }
        // Nothing reserved releases zero: the saga releases defensively after
        // failures, when it cannot know whether the reservation ever happened.
        AccountCommand::Release { order_id, at, .. } => AccountEvent::ReservationReleased(ReservationReleased {
            order_id: *order_id,
            amount: account.reserved_for(*order_id),
            idempotency_key,
            at: *at,
        }),
        AccountCommand::Credit {
            order_id, amount, at, ..
        } => {
            check_amount(*amount)?;
            AccountEvent::FundsCredited(FundsCredited {
                order_id: *order_id,
                amount: *amount,
                idempotency_key,
                at: *at,
            })
        }
    };
    Ok(vec![event])
}

/// Whether a stored receipt is the answer to this command: same operation, same
/// order, same amount (a release names no amount). Time is not compared: a
/// retry is made later than the original by definition.
pub fn answers(receipt: &Receipt, command: &AccountCommand) -> bool {
    let (operation, order_id, amount): (Operation, Option<Uuid>, Option<Decimal>) = match command {
        AccountCommand::Open { .. } => return false,
        AccountCommand::Deposit { amount, .. } => (Operation::Deposit, None, Some(*amount)),
        AccountCommand::Reserve { order_id, amount, .. } => (Operation::Reserve, Some(*order_id), Some(*amount)),
        AccountCommand::Deduct { order_id, amount, .. } => (Operation::Deduct, Some(*order_id), Some(*amount)),
        AccountCommand::Release { order_id, .. } => (Operation::Release, Some(*order_id), None),
        AccountCommand::Credit { order_id, amount, .. } => (Operation::Credit, Some(*order_id), Some(*amount)),
    };
    receipt.operation == operation && receipt.order_id == order_id && amount.is_none_or(|a| a == receipt.amount)
}

fn check_amount(amount: Decimal) -> Result<(), AccountRejection> {
    check_positive_amount(amount).map_err(|reason| AccountRejection::InvalidAmount { amount, reason })
}

fn check_key(key: &str) -> Result<(), AccountRejection> {
    let length = key.chars().count();
    if length == 0 || length > IDEMPOTENCY_KEY_LEN_MAX || key.chars().any(char::is_control) {
        return Err(AccountRejection::InvalidIdempotencyKey { key: key.to_owned() });
    }
    Ok(())
}
