//! The simulation's books: the log folded as it grows, checked after every
//! step, and the end-of-run checks (settlement, verify's log checks, the hash
//! chain, what the publishers would send).
//!
//! Must only read the log: it is the truth the checks hold the engine to.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use order_engine::account::{evolve, AccountEvent, AccountState};
use order_engine::amqp::wire::OrderDetails;
use order_engine::amqp::{derive, Route};
use order_engine::events::{decode, RecordedEvent};
use order_engine::ops::verify::LogChecks;
use order_engine::order::{evolve as order_evolve, OrderEvent, OrderState, OrderStatus, Side};
use order_engine::store::{ChainVerifier, EventStore, MemoryStore, READ_PAGE_MAX};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::workload::Workload;

/// One order as the order core's own fold sees it, and how often it ended.
#[derive(Debug, Clone, Default)]
struct OrderFacts {
    state: OrderState,
    /// Terminal events seen (executed, cancelled, failed): at most one.
    finals: u32,
}

impl OrderFacts {
    fn status(&self) -> OrderStatus {
        self.state.status().unwrap_or(OrderStatus::Pending)
    }

    fn side(&self) -> Option<Side> {
        self.state.order().map(|o| o.side)
    }

    fn user_id(&self) -> Option<Uuid> {
        self.state.order().map(|o| o.user_id)
    }

    fn executed_value(&self) -> Option<Decimal> {
        self.state
            .order()
            .and_then(|o| o.execution.as_ref())
            .map(|e| e.total_value)
    }
}

pub struct Books {
    opening: Decimal,
    cursor: u64,
    events: u64,
    /// Each account as the ledger's own fold sees it.
    accounts: BTreeMap<Uuid, AccountState>,
    /// The same money summed from the entries, independently of the fold.
    available: BTreeMap<Uuid, Decimal>,
    reserved: BTreeMap<Uuid, Decimal>,
    reserved_by_account: BTreeMap<Uuid, Decimal>,
    deducted_for: BTreeMap<Uuid, Decimal>,
    credited_for: BTreeMap<Uuid, Decimal>,
    deposited: Decimal,
    credited: Decimal,
    deducted: Decimal,
    moves: BTreeMap<(Uuid, &'static str), u32>,
    orders: BTreeMap<Uuid, OrderFacts>,
    sagas_completed: BTreeSet<Uuid>,
    /// Broken rules found while folding (unreadable events, money before an order).
    problems: Vec<String>,
}

impl Books {
    pub fn new(opening: Decimal) -> Self {
        Self {
            opening,
            cursor: 0,
            events: 0,
            accounts: BTreeMap::new(),
            available: BTreeMap::new(),
            reserved: BTreeMap::new(),
            reserved_by_account: BTreeMap::new(),
            deducted_for: BTreeMap::new(),
            credited_for: BTreeMap::new(),
            deposited: Decimal::ZERO,
            credited: Decimal::ZERO,
            deducted: Decimal::ZERO,
            moves: BTreeMap::new(),
            orders: BTreeMap::new(),
            sagas_completed: BTreeSet::new(),
            problems: Vec::new(),
        }
    }

    pub fn events(&self) -> u64 {
        self.events
    }

    pub fn executed(&self) -> u64 {
        self.orders
            .values()
            .filter(|o| o.status() == OrderStatus::Executed)
            .count() as u64
    }

    /// Folds the events appended since the last call.
    pub async fn catch_up(&mut self, log: &MemoryStore) -> Result<(), String> {
        loop {
            let page = log
                .read_all(self.cursor, READ_PAGE_MAX)
                .await
                .map_err(|e| format!("the surviving log cannot be read: {e}"))?;
            for event in &page {
                self.absorb(event);
                self.cursor = event.global_position;
            }
            if page.len() < READ_PAGE_MAX {
                return Ok(());
            }
        }
    }

    fn absorb(&mut self, event: &RecordedEvent) {
        self.events += 1;
        let at = event.global_position;
        let outcome = match event.stream_id.category() {
            "account" => self.account(event),
            "order" => self.order(event),
            "saga" => {
                if event.event_type == "SagaCompleted" {
                    if let Some(order_id) = event.stream_id.uuid_in("saga") {
                        self.sagas_completed.insert(order_id);
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        };
        if let Err(problem) = outcome {
            self.problems
                .push(format!("position {at} ({}): {problem}", event.event_type));
        }
    }

    fn account(&mut self, event: &RecordedEvent) -> Result<(), String> {
        let user = event
            .stream_id
            .uuid_in("account")
            .ok_or("an account stream without a user id")?;
        let decoded: AccountEvent = decode(event).map_err(|e| e.to_string())?;
        let state = self.accounts.remove(&user).unwrap_or_default();
        self.accounts.insert(user, evolve(state, &decoded));
        let available = self.available.entry(user).or_default();
        match &decoded {
            AccountEvent::AccountOpened(_) => {}
            AccountEvent::FundsDeposited(e) => {
                *available += e.amount;
                self.deposited += e.amount;
            }
            AccountEvent::FundsReserved(e) => {
                *available -= e.amount;
                *self.reserved.entry(e.order_id).or_default() += e.amount;
                *self.reserved_by_account.entry(user).or_default() += e.amount;
                *self.moves.entry((e.order_id, "reserve")).or_default() += 1;
            }
            AccountEvent::ReservationDeducted(e) => {
                *self.reserved.entry(e.order_id).or_default() -= e.amount;
                *self.reserved_by_account.entry(user).or_default() -= e.amount;
                *self.deducted_for.entry(e.order_id).or_default() += e.amount;
                self.deducted += e.amount;
                *self.moves.entry((e.order_id, "deduct")).or_default() += 1;
            }
            AccountEvent::ReservationReleased(e) => {
                *available += e.amount;
                *self.reserved.entry(e.order_id).or_default() -= e.amount;
                *self.reserved_by_account.entry(user).or_default() -= e.amount;
                *self.moves.entry((e.order_id, "release")).or_default() += 1;
            }
            AccountEvent::FundsCredited(e) => {
                *available += e.amount;
                *self.credited_for.entry(e.order_id).or_default() += e.amount;
                self.credited += e.amount;
                *self.moves.entry((e.order_id, "credit")).or_default() += 1;
            }
        }
        Ok(())
    }

    fn order(&mut self, event: &RecordedEvent) -> Result<(), String> {
        let order_id = event
            .stream_id
            .uuid_in("order")
            .ok_or("an order stream without an order id")?;
        let decoded: OrderEvent = decode(event).map_err(|e| e.to_string())?;
        let facts = self.orders.entry(order_id).or_default();
        match (&decoded, facts.state.order()) {
            (OrderEvent::OrderSubmitted(_), Some(_)) => return Err(format!("order {order_id} submitted twice")),
            (OrderEvent::OrderSubmitted(_), None) => {}
            (_, None) => return Err(format!("order {order_id} has events before its submission")),
            (_, Some(_)) => {}
        }
        if matches!(
            decoded,
            OrderEvent::OrderExecuted(_) | OrderEvent::OrderCancelled(_) | OrderEvent::OrderFailed(_)
        ) {
            facts.finals += 1;
            if facts.finals > 1 {
                // The fold refuses a second ending; count it and keep the first.
                return Ok(());
            }
        }
        facts.state = order_evolve(std::mem::take(&mut facts.state), &decoded);
        Ok(())
    }

    /// The rules that hold after every step, whatever is still in flight.
    pub fn check(&self) -> Result<(), String> {
        if let Some(problem) = self.problems.first() {
            return Err(problem.clone());
        }
        let mut held = Decimal::ZERO;
        for (user, state) in &self.accounts {
            let Some(account) = state.account() else {
                return Err(format!("account {user} has entries but was never opened"));
            };
            let available = self.available.get(user).copied().unwrap_or_default();
            let reserved = self.reserved_by_account.get(user).copied().unwrap_or_default();
            if !account.invariants_hold() {
                return Err(format!("account {user} breaks its invariants: {account:?}"));
            }
            if available < Decimal::ZERO {
                return Err(format!("account {user} is overdrawn: {available} available"));
            }
            if (account.available, account.reserved_total()) != (available, reserved) {
                return Err(format!(
                    "account {user}: the fold holds {} available and {} reserved, the entries sum to {available} and {reserved}",
                    account.available,
                    account.reserved_total()
                ));
            }
            if account.deposited != self.opening {
                return Err(format!(
                    "account {user} was funded with {}, not the opening {}",
                    account.deposited, self.opening
                ));
            }
            held += available + reserved;
        }
        let entries = self.deposited + self.credited - self.deducted;
        if held != entries {
            return Err(format!(
                "money not conserved: accounts hold {held}, deposits {} + credits {} - deductions {} = {entries}",
                self.deposited, self.credited, self.deducted
            ));
        }
        for (order_id, amount) in &self.reserved {
            if *amount < Decimal::ZERO {
                return Err(format!(
                    "order {order_id} has {amount} reserved: more left than came in"
                ));
            }
        }
        for ((order_id, kind), count) in &self.moves {
            if *count > 1 {
                return Err(format!("order {order_id}: {kind} happened {count} times"));
            }
        }
        for (order_id, facts) in &self.orders {
            if facts.finals > 1 {
                return Err(format!("order {order_id} ended {} times", facts.finals));
            }
        }
        for (order_id, amount) in self.deducted_for.iter().chain(&self.credited_for) {
            let Some(facts) = self.orders.get(order_id) else {
                return Err(format!(
                    "{amount} moved for order {order_id}, which was never submitted"
                ));
            };
            match facts.executed_value() {
                Some(value) if *amount <= value => {}
                Some(value) => {
                    return Err(format!("{amount} moved for order {order_id}, worth only {value}"));
                }
                None => {
                    return Err(format!(
                        "{amount} deducted or credited for order {order_id}, which is {} and never executed",
                        facts.status()
                    ));
                }
            }
        }
        Ok(())
    }

    /// Orders in the log not yet terminal with their saga complete.
    pub fn unsettled(&self) -> Vec<Uuid> {
        self.orders
            .iter()
            .filter(|(id, facts)| !facts.status().is_terminal() || !self.sagas_completed.contains(id))
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn describe_unsettled(&self) -> String {
        self.unsettled()
            .iter()
            .map(|id| {
                let status = self.orders.get(id).map(|f| f.status().to_string()).unwrap_or_default();
                format!(
                    "{id} is {status}, saga {}",
                    if self.sagas_completed.contains(id) {
                        "complete"
                    } else {
                        "not complete"
                    }
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The end of a run: everything settled to the cent, verify's checks and
    /// the chain clean, and every execution published exactly once.
    pub async fn finish(&self, log: &MemoryStore, workload: &Workload) -> Result<(), String> {
        if !self.unsettled().is_empty() {
            return Err(format!("unsettled at the end: {}", self.describe_unsettled()));
        }
        for (order_id, facts) in &self.orders {
            if !workload.orders.iter().any(|o| o.order_id == *order_id) {
                return Err(format!("order {order_id} is in the log but nobody submitted it"));
            }
            let reserved = self.reserved.get(order_id).copied().unwrap_or_default();
            if !reserved.is_zero() {
                return Err(format!(
                    "order {order_id} is {} with {reserved} still reserved",
                    facts.status()
                ));
            }
            let value = facts.executed_value().unwrap_or_default();
            let (moved, what) = match facts.side() {
                Some(Side::Buy) => (self.deducted_for.get(order_id), "deducted"),
                _ => (self.credited_for.get(order_id), "credited"),
            };
            let moved = moved.copied().unwrap_or_default();
            if moved != value {
                return Err(format!(
                    "order {order_id} ({:?}, {}) is worth {value} but {moved} was {what}",
                    facts.side(),
                    facts.status()
                ));
            }
            let account_moved = facts.user_id().is_some_and(|user| self.accounts.contains_key(&user));
            if facts.executed_value().is_some() && !account_moved {
                return Err(format!("order {order_id} executed without its account ever moving"));
            }
        }
        let log_events = whole_log(log).await?;
        let mut checks = LogChecks::default();
        let mut chain = ChainVerifier::new();
        for chained in &log_events {
            checks.check(&chained.event);
            if let Some(violation) = chain.check(chained).into_iter().next() {
                return Err(format!("hash chain: {violation}"));
            }
        }
        let (violations, executions) = checks.finish();
        if let Some(violation) = violations.first() {
            return Err(format!("verify: {violation}"));
        }
        let events: Vec<RecordedEvent> = log_events.into_iter().map(|c| c.event).collect();
        published_once(&events, executions.iter().map(|e| e.order_id).collect())
    }
}

async fn whole_log(log: &MemoryStore) -> Result<Vec<order_engine::store::ChainedEvent>, String> {
    let mut all = Vec::new();
    loop {
        let after = all
            .last()
            .map_or(0, |c: &order_engine::store::ChainedEvent| c.event.global_position);
        let page = log
            .read_chained(after, READ_PAGE_MAX)
            .await
            .map_err(|e| format!("the surviving log cannot be read: {e}"))?;
        if page.is_empty() {
            return Ok(all);
        }
        all.extend(page);
    }
}

/// What `positions.updates` would carry: the log published once, then again
/// from its middle (a publisher that crashed before saving its checkpoint),
/// deduplicated by message id as a consumer does. Each execution must come
/// out exactly once, and a republished message must be byte for byte the same.
fn published_once(events: &[RecordedEvent], executed: BTreeSet<Uuid>) -> Result<(), String> {
    let mut details: HashMap<Uuid, OrderDetails> = HashMap::new();
    let mut outbound = Vec::new();
    for event in events.iter().chain(&events[events.len() / 2..]) {
        let Some(order_id) = event.stream_id.uuid_in("order") else {
            continue;
        };
        let decoded: OrderEvent = decode(event).map_err(|e| e.to_string())?;
        if let OrderEvent::OrderSubmitted(submitted) = &decoded {
            details.insert(order_id, OrderDetails::from(submitted));
        }
        let messages = derive(Route::Positions, event, order_id, &decoded, details.get(&order_id))
            .map_err(|e| format!("position update of order {order_id} cannot be encoded: {e}"))?;
        outbound.extend(messages);
    }
    let mut by_message: BTreeMap<Uuid, &order_engine::amqp::Outbound> = BTreeMap::new();
    for message in &outbound {
        if let Some(first) = by_message.insert(message.message_id, message) {
            if first.body != message.body {
                return Err(format!(
                    "message {} was republished with other bytes",
                    message.message_id
                ));
            }
        }
    }
    let mut per_order: BTreeMap<Uuid, u32> = BTreeMap::new();
    for message in by_message.values() {
        *per_order.entry(message.correlation_id).or_default() += 1;
    }
    let published: BTreeSet<Uuid> = per_order.keys().copied().collect();
    if published != executed {
        return Err(format!(
            "position updates for {published:?} but executions of {executed:?}"
        ));
    }
    if let Some((order_id, count)) = per_order.iter().find(|(_, count)| **count != 1) {
        return Err(format!("order {order_id} has {count} distinct position updates"));
    }
    Ok(())
}
