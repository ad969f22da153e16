//! The saga with the embedded ledger in the same log: a saga step and its
//! ledger entry need no call across a network, so they are planned in memory
//! and committed with the order command they lead to, all or nothing.
//!
//! `stage` runs the saga's own rules (`next_actions`, `decide`) forward
//! against an account planned in memory, exactly as the shell would run them
//! one call at a time, and stops where the order must act (accept, fail) or
//! the saga ends. What it staged becomes one linked append with the order's
//! events, so a MARKET BUY is three commits: the submission; reserve and
//! accept; execute, deduct, release and complete. Nothing here touches the
//! store: the shell (`saga_runner`) commits, and falls back to the one-step-
//! at-a-time path whenever the staged run cannot be committed as planned.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::account::AccountCommand;
use crate::aggregate::Aggregate;
use crate::balance::embedded::{AccountPlan, AccountPlanner};
use crate::balance::BalanceError;
use crate::events::{encode, EventMetadata, NewEvent, StreamId, TraceContext};
use crate::saga::{next_actions, Action, SagaAggregate, SagaCommand, SagaEvent, SagaState, Step, StepOutcome};
use crate::store::{event_id, AppendRequest};

/// Where a staged run stopped.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Stop {
    /// The order must be told its funds are in place.
    Accept { reserved_amount: Decimal },
    /// The order must be told it failed.
    Fail { reason: String },
    /// The saga recorded its end.
    Completed,
    /// Nothing more to do now (a retry is due later, or the order must move).
    Waiting,
}

/// A saga run forward in memory: the events to append to its stream, the
/// state after them, the account's plan, and where it stopped.
#[derive(Debug, Clone)]
pub(crate) struct Staged {
    pub events: Vec<SagaEvent>,
    pub state: SagaState,
    pub account: AccountPlan,
    /// The idempotency key of the first money movement, naming the ledger append.
    pub ledger_key: Option<String>,
    pub stop: Stop,
}

/// A bound on the steps one staged run takes: a saga has at most a handful
/// (start, observe, two per money step, complete); more is a bug.
const STAGED_STEPS_MAX: usize = 32;

/// Applies `inputs` and then whatever `next_actions` asks, with each balance
/// call answered by `planner`, until the order must act or nothing is left.
pub(crate) fn stage(
    state: SagaState,
    inputs: Vec<SagaCommand>,
    planner: &AccountPlanner,
    retry_delays: &[Duration],
    now: DateTime<Utc>,
) -> Result<Staged, String> {
    let mut staged = Staged {
        events: Vec::new(),
        state,
        account: planner.start(),
        ledger_key: None,
        stop: Stop::Waiting,
    };
    for input in inputs {
        record(&mut staged, &input);
    }
    // Steps whose first attempt this run records: their key is new.
    let mut attempted_here: Vec<Step> = Vec::new();
    for _ in 0..STAGED_STEPS_MAX {
        let Some(action) = next_actions(&staged.state, now).into_iter().next() else {
            return Ok(staged);
        };
        match action {
            Action::Attempt { step, amount } => {
                if !record(&mut staged, &SagaCommand::Attempt { step, amount, at: now }) {
                    return Ok(staged);
                }
                attempted_here.push(step);
            }
            Action::Call {
                step,
                attempt,
                amount,
                idempotency_key,
            } => {
                let saga = staged.state.saga().ok_or("a call before the saga started")?;
                // A call that may have been made before (an attempt left in
                // flight, or a later attempt under the same key) is answered
                // from the account's receipt; with none held, it may predate
                // the receipts the account keeps, and only the ledger's own
                // path asks the log (planned anew, it could move money twice
                // in the plan or refuse what once succeeded).
                let new_key = attempt == 1 && attempted_here.contains(&step);
                let held = staged
                    .account
                    .state
                    .account()
                    .is_some_and(|a| a.receipt(&idempotency_key).is_some());
                if !new_key && !held {
                    return Err(format!(
                        "step {step} may have been called before under {idempotency_key:?} and the account holds no receipt for it"
                    ));
                }
                let command = account_command(step, saga.order_id, amount, idempotency_key.clone(), now)?;
                let outcome = match planner.apply(&mut staged.account, &command) {
                    Ok(receipt) => {
                        staged.ledger_key.get_or_insert(idempotency_key);
                        StepOutcome::Succeeded { amount: receipt.amount }
                    }
                    Err(error) => StepOutcome::Failed {
                        reason: error.to_string(),
                        transient: error.is_transient(),
                    },
                };
                let command = SagaCommand::RecordOutcome {
                    step,
                    outcome,
                    retry_delays: retry_delays.to_vec(),
                    at: now,
                };
                if !record(&mut staged, &command) {
                    return Ok(staged);
                }
            }
            Action::WaitUntil { .. } => return Ok(staged),
            Action::AcceptOrder { reserved_amount } => {
                staged.stop = Stop::Accept { reserved_amount };
                return Ok(staged);
            }
            Action::FailOrder { reason } => {
                staged.stop = Stop::Fail { reason };
                return Ok(staged);
            }
            Action::Complete => {
                record(&mut staged, &SagaCommand::Complete { at: now });
                staged.stop = Stop::Completed;
                return Ok(staged);
            }
        }
    }
    Err(format!("the saga took more than {STAGED_STEPS_MAX} steps in one run"))
}

/// Decides and folds one command; false when it changes nothing (a repeat,
/// or not applicable), as the shell's `record` treats it.
fn record(staged: &mut Staged, command: &SagaCommand) -> bool {
    match SagaAggregate::decide(&staged.state, command) {
        Ok(events) if !events.is_empty() => {
            staged.state = SagaAggregate::fold(std::mem::take(&mut staged.state), &events);
            staged.events.extend(events);
            true
        }
        _ => false,
    }
}

fn account_command(
    step: Step,
    order_id: Uuid,
    amount: Option<Decimal>,
    idempotency_key: String,
    at: DateTime<Utc>,
) -> Result<AccountCommand, String> {
    let amount = || amount.ok_or_else(|| format!("step {step} needs an amount"));
    Ok(match step {
        Step::Reserve => AccountCommand::Reserve {
            order_id,
            amount: amount()?,
            idempotency_key,
            at,
        },
        Step::Deduct => AccountCommand::Deduct {
            order_id,
            amount: amount()?,
            idempotency_key,
            at,
        },
        Step::Credit => AccountCommand::Credit {
            order_id,
            amount: amount()?,
            idempotency_key,
            at,
        },
        Step::Release => AccountCommand::Release {
            order_id,
            idempotency_key,
            at,
        },
    })
}

/// The appends a staged run makes: the saga's stream at `saga_version` under
/// `command_id` (event ids derived from it, as `record` derives them), then
/// the account's when money moved; `trace` is the context they are written
/// under (the saga step's span when traces are exported).
pub(crate) fn requests(
    staged: &Staged,
    order_id: Uuid,
    saga_version: u64,
    command_id: Uuid,
    planner: &AccountPlanner,
    trace: Option<TraceContext>,
) -> Result<Vec<AppendRequest>, String> {
    let metadata = EventMetadata {
        correlation_id: Some(order_id),
        causation_id: Some(command_id),
        who: Some("saga".into()),
        source: Some("saga".into()),
        trace,
    };
    let stream = StreamId::saga(order_id);
    let events = staged
        .events
        .iter()
        .enumerate()
        .map(|(i, e)| encode(e, event_id(command_id, &stream, i), metadata.clone()))
        .collect::<Result<Vec<NewEvent>, _>>()
        .map_err(|e| e.to_string())?;
    let mut requests = Vec::with_capacity(2);
    if !events.is_empty() {
        requests.push(AppendRequest {
            stream_id: stream,
            expected_version: saga_version,
            command_id: Some(command_id),
            events,
            linked: false,
        });
    }
    if let Some(key) = &staged.ledger_key {
        if let Some(request) = planner
            .request(&staged.account, key, order_id)
            .map_err(|e: BalanceError| e.to_string())?
        {
            requests.push(request);
        }
    }
    Ok(requests)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use rust_decimal_macros::dec;

    use super::*;
    use crate::account::AccountState;
    use crate::order::Side;
    use crate::saga::ObservedOrder;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    fn start(side: Side, reserve_amount: Decimal) -> SagaCommand {
        SagaCommand::Start {
            order_id: Uuid::from_u128(7),
            user_id: Uuid::from_u128(9),
            side,
            reserve_amount,
            at: now(),
        }
    }

    fn available(plan: &AccountPlan) -> Decimal {
        plan.state.account().map(|a| a.available).unwrap_or_default()
    }

    #[test]
    fn a_buy_is_reserved_then_settled_in_two_runs() {
        let planner = AccountPlanner::new(Uuid::from_u128(9), AccountState::NotOpened, 0, dec!(1000));
        let delays = [Duration::from_secs(300)];
        let reserved = stage(
            SagaState::default(),
            vec![start(Side::Buy, dec!(105))],
            &planner,
            &delays,
            now(),
        )
        .unwrap();
        assert_eq!(
            reserved.stop,
            Stop::Accept {
                reserved_amount: dec!(105)
            }
        );
        assert_eq!(available(&reserved.account), dec!(895));
        assert_eq!(
            reserved.ledger_key.as_deref(),
            Some("00000000-0000-0000-0000-000000000007:reserve")
        );

        let planner = AccountPlanner::new(Uuid::from_u128(9), reserved.account.state.clone(), 3, dec!(1000));
        let observe = SagaCommand::Observe {
            event_id: Uuid::from_u128(1),
            order: ObservedOrder::Executed { total_value: dec!(100) },
            at: now(),
        };
        let settled = stage(reserved.state, vec![observe], &planner, &delays, now()).unwrap();
        assert_eq!(settled.stop, Stop::Completed);
        let account = settled.account.state.account().unwrap();
        assert_eq!((account.available, account.reserved_total()), (dec!(900), dec!(0)));
        assert!(settled.state.saga().unwrap().completed);
    }

    #[test]
    fn insufficient_funds_stops_at_failing_the_order_and_moves_nothing() {
        let planner = AccountPlanner::new(Uuid::from_u128(9), AccountState::NotOpened, 0, dec!(10));
        let staged = stage(
            SagaState::default(),
            vec![start(Side::Buy, dec!(105))],
            &planner,
            &[],
            now(),
        )
        .unwrap();
        assert!(matches!(staged.stop, Stop::Fail { .. }), "{:?}", staged.stop);
        assert!(staged.account.events.is_empty());
        assert!(staged.ledger_key.is_none());
    }

    #[test]
    fn a_sell_is_accepted_at_once_without_touching_the_account() {
        let planner = AccountPlanner::new(Uuid::from_u128(9), AccountState::NotOpened, 0, dec!(10));
        let staged = stage(
            SagaState::default(),
            vec![start(Side::Sell, dec!(0))],
            &planner,
            &[],
            now(),
        )
        .unwrap();
        assert_eq!(
            staged.stop,
            Stop::Accept {
                reserved_amount: dec!(0)
            }
        );
        assert!(staged.account.events.is_empty());
    }
}
