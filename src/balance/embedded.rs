//! The embedded ledger: [`BalanceService`] over account streams
//! (`account-<user id>`) in the same event log as orders. The pure rules live
//! in `crate::account`; this file is their shell (load, decide, append, retry).
//!
//! Never writes to an account except through `decide` with an expected
//! version, and never writes when reading.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use rust_decimal::Decimal;
use uuid::{uuid, Uuid};

use super::{Balance, BalanceError, BalanceOp, BalanceReceipt, BalanceService, ReleaseOp};
use crate::account::{
    answers, AccountAggregate, AccountCommand, AccountEvent, AccountRejection, AccountState, Receipt,
};
use crate::aggregate::{Aggregate, InvariantViolation};
use crate::clock::Clock;
use crate::events::{encode, DecodeError, EventMetadata, NewEvent, StreamId};
use crate::order::check_positive_amount;
use crate::store::{
    event_id, execute, fold_stream_until, AppendRequest, Appended, Around, EventStore, ExecuteError, Executed,
    FoldError, Freshness, Hydrated, Policy, StoreError,
};

/// Command ids of ledger appends are UUIDv5 of the idempotency key in this
/// namespace, so every process derives the same id for the same request and
/// the store writes it once. Fixed forever: changing it breaks dedup of retries.
pub const LEDGER_NAMESPACE: Uuid = uuid!("6b1f2c1e-1d0a-5c55-9d8e-4c6564676572");

/// The key of the embedded default's funding deposit, the same in every process.
pub const DEMO_FUNDING_KEY: &str = "demo-funding";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerConfig {
    /// Deposited into every account when it is first used; zero opens it empty.
    pub demo_balance: Decimal,
    /// How many times one call reloads and decides again after losing a race
    /// for the account's stream version (each after a jittered, growing
    /// pause), before answering `Contended`. Within one process calls on an
    /// account take turns and never race; these races are with other processes.
    pub conflict_retries_max: u32,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            demo_balance: Decimal::new(10_000, 0),
            conflict_retries_max: CONFLICT_RETRIES_MAX,
        }
    }
}

/// Default bound on lost races per call: with the pauses below, about five
/// seconds of another process writing the same account without a pause.
pub const CONFLICT_RETRIES_MAX: u32 = 32;
/// The first pause after a lost race; it doubles up to the maximum, and each
/// is jittered so that two processes that collided do not collide again in step.
const CONFLICT_BACKOFF_MIN: Duration = Duration::from_millis(2);
const CONFLICT_BACKOFF_MAX: Duration = Duration::from_millis(200);

/// Stripes of the in-process write lock: calls on one account take turns
/// (they would otherwise race for the same stream version and all but one
/// lose), while calls on different accounts rarely share a stripe. A fixed
/// array: bounded memory, nothing to evict.
const ACCOUNT_WRITE_STRIPES: usize = 1_024;

/// Accounts whose folded state is kept between calls; past it the cache is
/// emptied (cheaper than LRU bookkeeping; a miss costs one full read).
const ACCOUNT_CACHE_MAX: usize = 10_000;

/// The embedded balance service: accounts as event-sourced streams.
pub struct EmbeddedLedger {
    store: Arc<dyn EventStore>,
    clock: Arc<dyn Clock>,
    config: LedgerConfig,
    /// Each account as last folded. An account stream grows with every order,
    /// so each call reads only the events after the cached version; the log is
    /// append-only, so a cached state is never wrong, only possibly behind.
    accounts: Mutex<HashMap<Uuid, Loaded>>,
    /// Held from load to append by each mutating call, by account stripe.
    writers: Box<[tokio::sync::Mutex<()>]>,
}

/// An account as folded from its stream, with the version it was read at.
type Loaded = Hydrated<FundedAccount>;

/// The account as the embedded ledger writes it: a money movement on an
/// account never used opens it and funds it with the demo balance in the same
/// append, at expected version 0, so of two processes opening one account at
/// once exactly one append lands and the demo funding happens once; and a
/// refused first command writes nothing, not even the opening. Pure: the rest
/// is the account's own core.
pub struct FundedAccount;

/// A command to an account, with what opening it would need.
#[derive(Debug, Clone)]
pub struct FundedCommand {
    pub user_id: Uuid,
    /// Deposited when the command opens the account; zero opens it empty.
    pub demo_balance: Decimal,
    pub command: AccountCommand,
}

impl Aggregate for FundedAccount {
    type State = AccountState;
    type Command = FundedCommand;
    type Event = AccountEvent;
    type Rejection = AccountRejection;

    fn decide(state: &AccountState, command: &FundedCommand) -> Result<Vec<AccountEvent>, AccountRejection> {
        decide_funded(state, command.user_id, command.demo_balance, &command.command)
    }

    fn try_evolve(state: AccountState, event: &AccountEvent) -> Result<AccountState, InvariantViolation> {
        AccountAggregate::try_evolve(state, event)
    }
}

/// [`FundedAccount`]'s rule, for callers that hold the command by reference
/// (a planner answering a saga's call).
fn decide_funded(
    state: &AccountState,
    user_id: Uuid,
    demo_balance: Decimal,
    command: &AccountCommand,
) -> Result<Vec<AccountEvent>, AccountRejection> {
    if let AccountState::Open(_) = state {
        return AccountAggregate::decide(state, command);
    }
    let mut events = opening(user_id, demo_balance, command.at())?;
    let opened = AccountAggregate::fold(AccountState::NotOpened, &events);
    events.extend(AccountAggregate::decide(&opened, command)?);
    Ok(events)
}

impl EmbeddedLedger {
    pub fn new(store: Arc<dyn EventStore>, clock: Arc<dyn Clock>, config: LedgerConfig) -> Self {
        Self {
            store,
            clock,
            config,
            accounts: Mutex::new(HashMap::new()),
            writers: (0..ACCOUNT_WRITE_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }

    fn writer(&self, user_id: Uuid) -> &tokio::sync::Mutex<()> {
        // UUIDs' low bits are random (v4 and v7 alike): a fair spread over stripes.
        let stripe = (user_id.as_u128() % ACCOUNT_WRITE_STRIPES as u128) as usize;
        &self.writers[stripe]
    }

    pub fn config(&self) -> &LedgerConfig {
        &self.config
    }

    /// Adds money to an account (operators, tests). Idempotent by key.
    pub async fn deposit(
        &self,
        user_id: Uuid,
        amount: Decimal,
        idempotency_key: &str,
    ) -> Result<BalanceReceipt, BalanceError> {
        let command = AccountCommand::Deposit {
            amount,
            idempotency_key: idempotency_key.to_owned(),
            at: self.clock.now(),
        };
        self.execute(user_id, None, "operator", command).await
    }

    /// The account's full state folded from its stream, for audits and tests.
    /// `NotOpened` for an account never written; reading opens nothing.
    pub async fn account_state(&self, user_id: Uuid) -> Result<AccountState, BalanceError> {
        Ok(self.load(user_id).await?.state)
    }

    fn cached(&self, user_id: Uuid) -> Option<Loaded> {
        self.accounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&user_id)
            .cloned()
    }

    async fn load(&self, user_id: Uuid) -> Result<Loaded, BalanceError> {
        let mut loaded = self.cached(user_id).unwrap_or_default();
        loaded
            .catch_up(self.store.as_ref(), &StreamId::account(user_id))
            .await
            .map_err(fold_error)?;
        self.cache(user_id, &loaded);
        Ok(loaded)
    }

    /// Keeps `loaded` as the account's cached state, unless a concurrent call
    /// cached a newer version. A copy of the state is a reference count.
    fn cache(&self, user_id: Uuid, loaded: &Loaded) {
        let mut accounts = self.accounts.lock().unwrap_or_else(PoisonError::into_inner);
        if accounts.len() >= ACCOUNT_CACHE_MAX {
            accounts.clear();
        }
        let newer = accounts.get(&user_id).is_some_and(|c| c.version > loaded.version);
        if !newer {
            accounts.insert(user_id, loaded.clone());
        }
    }

    /// The answer a request got when its append landed at `original`: the
    /// account folded from its start up to that append holds the key's
    /// receipt (it is the newest there). For a repeat older than the receipts
    /// an account keeps (`RECEIPTS_MAX`); it reads the stream that far, which
    /// only such a repeat pays.
    async fn answer_from_log(
        &self,
        user_id: Uuid,
        key: &str,
        command: &AccountCommand,
        original: &Appended,
    ) -> Result<BalanceReceipt, BalanceError> {
        let (mut state, mut version) = (AccountState::default(), 0);
        fold_stream_until::<AccountAggregate>(
            self.store.as_ref(),
            &StreamId::account(user_id),
            &mut state,
            &mut version,
            original.last_version,
        )
        .await
        .map_err(fold_error)?;
        // The same key for another request is refused, as `decide` refuses it
        // while the receipt is held.
        if let Some(receipt) = state.account().and_then(|a| a.receipt(key)) {
            if !answers(receipt, command) {
                return Err(rejection(AccountRejection::KeyReused {
                    key: key.to_owned(),
                    original: receipt.operation,
                }));
            }
        }
        answer(user_id, &state, key)
    }

    /// Where the request named `command_id` was appended to the account, if
    /// it was. Asked only when `decide` refused a key the account holds no
    /// receipt for: a refusal of a request applied long ago (a deduction
    /// repeated after its reservation was used up) must get the first answer.
    async fn applied_before(&self, user_id: Uuid, command_id: Uuid) -> Result<Option<Appended>, BalanceError> {
        self.store
            .command_record(&StreamId::account(user_id), command_id)
            .await
            .map_err(store_error)
    }

    /// Takes the account's writer turn and loads it, for a commit that writes
    /// the account together with other streams (a saga step, an order). The
    /// turn is held until the planner is dropped: calls on the account through
    /// [`BalanceService`] wait meanwhile, as they wait for each other.
    pub async fn turn(&self, user_id: Uuid) -> Result<AccountTurn<'_>, BalanceError> {
        let guard = self.writer(user_id).lock().await;
        // The cached state as it is, without a read: the commit expects its
        // version, so if another process wrote since, the commit conflicts
        // and `reload` reads.
        let loaded = match self.cached(user_id) {
            Some(loaded) => loaded,
            None => self.load(user_id).await?,
        };
        Ok(AccountTurn {
            ledger: self,
            _guard: guard,
            planner: AccountPlanner {
                user_id,
                state: loaded.state,
                version: loaded.version,
                demo_balance: self.config.demo_balance,
            },
        })
    }

    /// Runs the command through the store's `execute`: catch up with the
    /// account (from the cached version), decide, append at that version; when
    /// another process got there first, reload and decide again after a
    /// jittered pause, a bounded number of times. Answers from the key's
    /// receipt, or from the log for a key older than the receipts held. A lost
    /// race is never reported as the service being unavailable: it is `Contended`.
    async fn execute(
        &self,
        user_id: Uuid,
        order_id: Option<Uuid>,
        source: &str,
        command: AccountCommand,
    ) -> Result<BalanceReceipt, BalanceError> {
        let key = command
            .idempotency_key()
            .ok_or_else(|| BalanceError::Rejected("a money movement needs an idempotency key".into()))?
            .to_owned();
        let stream = StreamId::account(user_id);
        let command_id = ledger_command_id(&key);
        let metadata = EventMetadata {
            correlation_id: order_id,
            causation_id: Some(command_id),
            who: None,
            source: Some(source.to_owned()),
            trace: None,
        };
        let policy = Policy {
            // The cache may be behind another process: read what it missed first.
            freshness: Freshness::CatchUp,
            conflict_retries_max: self.config.conflict_retries_max,
        };
        let funded = FundedCommand {
            user_id,
            demo_balance: self.config.demo_balance,
            command,
        };
        let _turn = self.writer(user_id).lock().await;
        let mut account = self.cached(user_id).unwrap_or_default();
        let mut backoff = Backoff::new(user_id, command_id);
        let executed = execute(
            self.store.as_ref(),
            &stream,
            &mut account,
            &funded,
            command_id,
            &metadata,
            policy,
            &mut backoff,
        )
        .await;
        let command = funded.command;
        let held = |account: &Loaded| account.state.account().is_some_and(|a| a.receipt(&key).is_some());
        match executed {
            // Written now, or absorbed by a receipt held: the receipt answers.
            Ok(Executed::Written { .. } | Executed::Unchanged) => {
                self.cache(user_id, &account);
                answer(user_id, &account.state, &key)
            }
            // Applied before: by another process since we read (its receipt is
            // in the log now), or longer ago than the receipts the account
            // keeps (the store remembers the command for good).
            Ok(Executed::Repeated { appended, .. }) => {
                self.cache(user_id, &account);
                if held(&account) {
                    answer(user_id, &account.state, &key)
                } else {
                    self.answer_from_log(user_id, &key, &command, &appended).await
                }
            }
            Err(ExecuteError::Rejected(refused)) => {
                self.cache(user_id, &account);
                // A key the account holds no receipt for may still have been
                // applied, before the latest `RECEIPTS_MAX` keys.
                if !held(&account) && may_refuse_a_repeat(&refused) {
                    if let Some(original) = self.applied_before(user_id, command_id).await? {
                        return self.answer_from_log(user_id, &key, &command, &original).await;
                    }
                }
                Err(rejection(refused))
            }
            Err(ExecuteError::Contended { attempts, .. }) => {
                tracing::warn!(%user_id, %key, attempts, "ledger gave up on a contended account");
                Err(BalanceError::Contended { user_id, attempts })
            }
            Err(ExecuteError::Fold(error)) => Err(fold_error(error)),
            Err(ExecuteError::Store(error)) => Err(store_error(error)),
            Err(
                error @ (ExecuteError::Encode(_) | ExecuteError::CoWriteConflict(_) | ExecuteError::CoWriteRefused(_)),
            ) => Err(BalanceError::Rejected(format!("account {user_id}: {error}"))),
            Err(ExecuteError::Halted(never)) => match never {},
        }
    }

    fn balance(&self, user_id: Uuid, state: &AccountState) -> Balance {
        match state.account() {
            Some(account) => Balance {
                user_id,
                available: account.available,
                reserved: account.reserved_total(),
            },
            // Not opened yet: what the first write will open it with.
            None => Balance {
                user_id,
                available: self.config.demo_balance.max(Decimal::ZERO),
                reserved: Decimal::ZERO,
            },
        }
    }
}

#[async_trait]
impl BalanceService for EmbeddedLedger {
    /// An unknown account reads as the demo balance it would be opened with,
    /// and nothing is written: reads must stay safe to repeat and to expose
    /// (probing random ids must not grow the log), and the first write opens
    /// the account with exactly this balance, so the answer stays true.
    async fn get_balance(&self, user_id: Uuid) -> Result<Balance, BalanceError> {
        let loaded = self.load(user_id).await?;
        Ok(self.balance(user_id, &loaded.state))
    }

    async fn reserve(&self, op: BalanceOp) -> Result<BalanceReceipt, BalanceError> {
        let command = AccountCommand::Reserve {
            order_id: op.order_id,
            amount: op.amount,
            idempotency_key: op.idempotency_key,
            at: self.clock.now(),
        };
        self.execute(op.user_id, Some(op.order_id), "saga", command).await
    }

    async fn deduct(&self, op: BalanceOp) -> Result<BalanceReceipt, BalanceError> {
        let command = AccountCommand::Deduct {
            order_id: op.order_id,
            amount: op.amount,
            idempotency_key: op.idempotency_key,
            at: self.clock.now(),
        };
        self.execute(op.user_id, Some(op.order_id), "saga", command).await
    }

    async fn credit(&self, op: BalanceOp) -> Result<BalanceReceipt, BalanceError> {
        let command = AccountCommand::Credit {
            order_id: op.order_id,
            amount: op.amount,
            idempotency_key: op.idempotency_key,
            at: self.clock.now(),
        };
        self.execute(op.user_id, Some(op.order_id), "saga", command).await
    }

    async fn release(&self, op: ReleaseOp) -> Result<BalanceReceipt, BalanceError> {
        let command = AccountCommand::Release {
            order_id: op.order_id,
            idempotency_key: op.idempotency_key,
            at: self.clock.now(),
        };
        self.execute(op.user_id, Some(op.order_id), "saga", command).await
    }

    fn colocated(&self) -> Option<&EmbeddedLedger> {
        Some(self)
    }

    async fn sufficient_funds(&self, user_id: Uuid, amount: Decimal) -> Result<bool, BalanceError> {
        check_positive_amount(amount).map_err(|reason| BalanceError::Rejected(format!("amount {amount} {reason}")))?;
        Ok(self.get_balance(user_id).await?.available >= amount)
    }
}

/// The command id of the ledger append a key names (see [`LEDGER_NAMESPACE`]).
fn ledger_command_id(key: &str) -> Uuid {
    Uuid::new_v5(&LEDGER_NAMESPACE, key.as_bytes())
}

/// The pauses between lost races on an account: doubling, jittered (seeded
/// from the command, so a run replays the same) so that two processes that
/// collided do not collide again in step.
struct Backoff {
    user_id: Uuid,
    pauses: ExponentialBackoff,
}

impl Backoff {
    fn new(user_id: Uuid, command_id: Uuid) -> Self {
        Self {
            user_id,
            pauses: ExponentialBuilder::new()
                .with_min_delay(CONFLICT_BACKOFF_MIN)
                .with_max_delay(CONFLICT_BACKOFF_MAX)
                .with_factor(2.0)
                .with_jitter()
                .with_jitter_seed(crate::clock::jitter_seed(command_id))
                .without_max_times()
                .build(),
        }
    }
}

impl Around<FundedAccount> for Backoff {
    type Halt = std::convert::Infallible;

    fn pause_after_conflict(&mut self, conflicts: u32) -> Duration {
        let pause = self.pauses.next().unwrap_or(CONFLICT_BACKOFF_MAX);
        tracing::debug!(user_id = %self.user_id, conflicts, pause_ms = pause.as_millis() as u64, "ledger append lost a race; reloading");
        pause
    }
}

/// The events that open an account the first time it is used: opened, then
/// funded with the demo balance under a fixed key.
fn opening(
    user_id: Uuid,
    demo_balance: Decimal,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<AccountEvent>, AccountRejection> {
    let mut commands = vec![AccountCommand::Open { user_id, at }];
    if demo_balance > Decimal::ZERO {
        commands.push(AccountCommand::Deposit {
            amount: demo_balance,
            idempotency_key: DEMO_FUNDING_KEY.to_owned(),
            at,
        });
    }
    let mut state = AccountState::default();
    let mut events = Vec::new();
    for command in &commands {
        let (next, new) = AccountAggregate::handle(&state, command)?;
        state = next;
        events.extend(new);
    }
    Ok(events)
}

fn envelopes(
    user_id: Uuid,
    events: &[AccountEvent],
    order_id: Option<Uuid>,
    command_id: Uuid,
    source: &str,
) -> Result<Vec<NewEvent>, BalanceError> {
    let metadata = EventMetadata {
        correlation_id: order_id,
        causation_id: Some(command_id),
        who: None,
        source: Some(source.to_owned()),
        trace: None,
    };
    // Event ids from the command id, as `execute` derives them for every stream.
    let stream = StreamId::account(user_id);
    events
        .iter()
        .enumerate()
        .map(|(i, event)| encode(event, event_id(command_id, &stream, i), metadata.clone()).map_err(decode_error))
        .collect()
}

/// An account's state at a known version, and the rules to move its money
/// without touching the store: what a commit that writes the account together
/// with other streams appends. Pure, so it can be planned again after a reload.
#[derive(Debug, Clone)]
pub struct AccountPlanner {
    pub user_id: Uuid,
    pub state: AccountState,
    pub version: u64,
    demo_balance: Decimal,
}

/// Money movements planned on an account: its receipts, its state after, and
/// the events (with the opening, for an account never used) still to append.
#[derive(Debug, Clone, Default)]
pub struct AccountPlan {
    pub state: AccountState,
    pub events: Vec<AccountEvent>,
}

impl AccountPlanner {
    /// An account at `version` in `state`; `demo_balance` funds it if it was never opened.
    pub fn new(user_id: Uuid, state: AccountState, version: u64, demo_balance: Decimal) -> Self {
        Self {
            user_id,
            state,
            version,
            demo_balance,
        }
    }

    /// Applies `command` to `plan` (started from [`AccountPlanner::start`]),
    /// answering as the ledger would: a refusal moves nothing, a key applied
    /// before answers from its receipt.
    pub fn apply(&self, plan: &mut AccountPlan, command: &AccountCommand) -> Result<BalanceReceipt, BalanceError> {
        let key = command
            .idempotency_key()
            .ok_or_else(|| BalanceError::Rejected("a money movement needs an idempotency key".into()))?;
        // The ledger's own rule (`FundedAccount`), decided on the plan's state
        // in place; folding copies the account at most once per plan (the
        // planner and the cache share it until then).
        let decided = decide_funded(&plan.state, self.user_id, self.demo_balance, command).map_err(rejection)?;
        if decided.is_empty() {
            // Applied before: the plan moves nothing and answers from the receipt.
            return answer(self.user_id, &plan.state, key);
        }
        plan.state = AccountAggregate::fold(std::mem::take(&mut plan.state), &decided);
        plan.events.extend(decided);
        answer(self.user_id, &plan.state, key)
    }

    /// An empty plan over the loaded state.
    pub fn start(&self) -> AccountPlan {
        AccountPlan {
            state: self.state.clone(),
            events: Vec::new(),
        }
    }

    /// The append for `plan`, or None when it moves nothing.
    pub fn request(
        &self,
        plan: &AccountPlan,
        key: &str,
        order_id: Uuid,
    ) -> Result<Option<AppendRequest>, BalanceError> {
        if plan.events.is_empty() {
            return Ok(None);
        }
        let command_id = ledger_command_id(key);
        Ok(Some(AppendRequest {
            stream_id: StreamId::account(self.user_id),
            expected_version: self.version,
            command_id: Some(command_id),
            events: envelopes(self.user_id, &plan.events, Some(order_id), command_id, "saga")?,
            linked: false,
        }))
    }
}

/// An account held for one commit that writes it with other streams: the
/// writer turn and the account as loaded under it.
pub struct AccountTurn<'a> {
    ledger: &'a EmbeddedLedger,
    _guard: tokio::sync::MutexGuard<'a, ()>,
    pub planner: AccountPlanner,
}

impl AccountTurn<'_> {
    /// Reads what other processes appended since the load (after a lost race).
    pub async fn reload(&mut self) -> Result<(), BalanceError> {
        let loaded = self.ledger.load(self.planner.user_id).await?;
        self.planner.state = loaded.state;
        self.planner.version = loaded.version;
        Ok(())
    }

    /// The commit holding `plan` landed at `version`: the next call starts there.
    pub fn committed(&mut self, plan: AccountPlan, version: u64) {
        self.planner.state = plan.state;
        self.planner.version = version;
        self.ledger.cache(
            self.planner.user_id,
            &Loaded {
                state: self.planner.state.clone(),
                version,
            },
        );
    }
}

/// The caller's answer, read from the key's receipt in the state.
fn answer(user_id: Uuid, state: &AccountState, key: &str) -> Result<BalanceReceipt, BalanceError> {
    let receipt: &Receipt = state
        .account()
        .and_then(|account| account.receipt(key))
        .ok_or_else(|| {
            BalanceError::Rejected(format!(
                "account {user_id} has no receipt for key {key:?} after applying it; the log disagrees with itself"
            ))
        })?;
    Ok(BalanceReceipt {
        idempotency_key: key.to_owned(),
        amount: receipt.amount,
        balance: Balance {
            user_id,
            available: receipt.available_after,
            reserved: receipt.reserved_after,
        },
    })
}

fn rejection(rejection: AccountRejection) -> BalanceError {
    match rejection {
        AccountRejection::InsufficientFunds { available, requested } => {
            BalanceError::InsufficientFunds { available, requested }
        }
        AccountRejection::NoReservation { order_id } => BalanceError::NoReservation { order_id },
        AccountRejection::ExceedsReservation {
            order_id,
            reserved,
            requested,
        } => BalanceError::ExceedsReservation {
            order_id,
            reserved,
            requested,
        },
        other @ (AccountRejection::NotOpened
        | AccountRejection::InvalidAmount { .. }
        | AccountRejection::InvalidIdempotencyKey { .. }
        | AccountRejection::KeyReused { .. }) => BalanceError::Rejected(other.to_string()),
    }
}

/// Whether `decide` may refuse a request that was applied before its receipt
/// left the account: a reservation repeated after the money moved on, a
/// deduction repeated after the reservation was used up. Other refusals
/// (amounts, keys) refuse the first request alike, and nothing else refuses.
fn may_refuse_a_repeat(refused: &AccountRejection) -> bool {
    matches!(
        refused,
        AccountRejection::InsufficientFunds { .. }
            | AccountRejection::NoReservation { .. }
            | AccountRejection::ExceedsReservation { .. }
    )
}

fn fold_error(error: FoldError) -> BalanceError {
    match error {
        FoldError::Store(error) => store_error(error),
        other => BalanceError::Rejected(format!("account stream unreadable: {other}")),
    }
}

fn store_error(error: StoreError) -> BalanceError {
    if error.is_transient() {
        BalanceError::Unavailable(error.to_string())
    } else {
        BalanceError::Rejected(error.to_string())
    }
}

/// An unreadable account event is not the caller's fault, but no retry fixes
/// it either; it is permanent and says so.
fn decode_error(error: DecodeError) -> BalanceError {
    BalanceError::Rejected(format!("account stream unreadable: {error}"))
}
