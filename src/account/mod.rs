//! The account aggregate: the pure core of the embedded ledger, whose shell is
//! `balance::embedded`. An account is the stream `account-<user id>`; its
//! state is a fold of money movements.
//!
//! Must never import sqlx, actix, lapin or tokio, read the clock or make ids:
//! `tests/pure_core_boundary.rs` fails the build's tests if it does.

mod command;
mod decide;
mod event;
mod rejection;
mod state;

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;

pub use command::AccountCommand;
pub use decide::{answers, decide};
pub use event::{
    AccountEvent, AccountOpened, FundsCredited, FundsDeposited, FundsReserved, ReservationDeducted, ReservationReleased,
};
pub use rejection::{AccountRejection, IDEMPOTENCY_KEY_LEN_MAX};
pub use state::{evolve, try_evolve, Account, AccountState, Operation, Receipt, RECEIPTS_MAX};

/// The account as an [`Aggregate`](crate::aggregate::Aggregate).
#[derive(Debug, Clone, Copy, Default)]
pub struct AccountAggregate;

impl crate::aggregate::Aggregate for AccountAggregate {
    type State = AccountState;
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Rejection = AccountRejection;

    fn decide(state: &AccountState, command: &AccountCommand) -> Result<Vec<AccountEvent>, AccountRejection> {
        decide(state, command)
    }

    fn try_evolve(
        state: AccountState,
        event: &AccountEvent,
    ) -> Result<AccountState, crate::aggregate::InvariantViolation> {
        try_evolve(state, event)
    }
}
