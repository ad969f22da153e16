//! Many `orders` row changes folded into one batch of writes: an order
//! submitted and executed within the batch is one INSERT of its final row, and
//! several updates of one older order are one UPDATE. Pure; the live
//! projection (on PostgreSQL) and replay write a batch with a few bulk
//! statements instead of one statement per event.
//!
//! The result equals applying the changes one by one with the projection's
//! SQL (`COALESCE(new, old)` for optional columns, `updated_at` always set).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::order_rows::{OrderRow, OrderRowChange};
use crate::order::OrderStatus;

/// An update of a row that existed before the batch.
#[derive(Debug, Clone, PartialEq)]
pub struct RowUpdate {
    pub id: Uuid,
    pub status: Option<OrderStatus>,
    pub updated_at: DateTime<Utc>,
    pub executed_at: Option<DateTime<Utc>>,
    pub execution_price: Option<Decimal>,
    pub execution_value: Option<Decimal>,
    pub failure_reason: Option<String>,
}

/// Changes waiting to be written: new rows first, then updates of older rows.
#[derive(Debug, Default)]
pub struct RowBatch {
    inserts: Vec<OrderRow>,
    updates: Vec<RowUpdate>,
    inserted: HashMap<Uuid, usize>,
    updated: HashMap<Uuid, usize>,
}

/// The batch cannot take this change without changing the order of effects;
/// write the batch, then push the change into an empty one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushFirst;

impl RowBatch {
    pub fn is_empty(&self) -> bool {
        self.inserts.is_empty() && self.updates.is_empty()
    }

    /// Rows the batch will write (inserts plus updates).
    pub fn len(&self) -> usize {
        self.inserts.len() + self.updates.len()
    }

    pub fn inserts(&self) -> &[OrderRow] {
        &self.inserts
    }

    pub fn updates(&self) -> &[RowUpdate] {
        &self.updates
    }

    /// Folds one change in. A second insert of an id, or an insert after an
    /// update of the same id, must reach the database in order (it fails or
    /// no-ops there as it did for the live projection): `FlushFirst`.
    pub fn push(&mut self, change: OrderRowChange) -> Result<(), FlushFirst> {
        match change {
            OrderRowChange::Insert(row) => {
                if self.inserted.contains_key(&row.id) || self.updated.contains_key(&row.id) {
                    return Err(FlushFirst);
                }
                self.inserted.insert(row.id, self.inserts.len());
                self.inserts.push(*row);
            }
            OrderRowChange::Update {
                id,
                status,
                updated_at,
                executed_at,
                execution_price,
                execution_value,
                failure_reason,
            } => {
                let update = RowUpdate {
                    id,
                    status,
                    updated_at,
                    executed_at,
                    execution_price,
                    execution_value,
                    failure_reason,
                };
                if let Some(&at) = self.inserted.get(&id) {
                    apply(&mut self.inserts[at], update);
                } else if let Some(&at) = self.updated.get(&id) {
                    merge(&mut self.updates[at], update);
                } else {
                    self.updated.insert(id, self.updates.len());
                    self.updates.push(update);
                }
            }
        }
        Ok(())
    }
}

/// A page of changes as the batches to write, in order: one batch unless an
/// order is inserted again after a change in the same page (a corrupt log),
/// which must reach the database in order and fail there.
pub fn coalesce_page(changes: &[OrderRowChange]) -> Vec<RowBatch> {
    let mut batches = vec![RowBatch::default()];
    for change in changes {
        let Some(batch) = batches.last_mut() else {
            continue;
        };
        if let Err(FlushFirst) = batch.push(change.clone()) {
            let mut next = RowBatch::default();
            // An empty batch takes any change: `push` refuses only repeats.
            let _ = next.push(change.clone());
            batches.push(next);
        }
    }
    batches.retain(|batch| !batch.is_empty());
    batches
}

/// The projection's UPDATE, on a row in memory.
fn apply(row: &mut OrderRow, update: RowUpdate) {
    if let Some(status) = update.status {
        row.status = status;
    }
    row.updated_at = update.updated_at;
    row.executed_at = update.executed_at.or(row.executed_at);
    row.execution_price = update.execution_price.or(row.execution_price);
    row.execution_value = update.execution_value.or(row.execution_value);
    row.failure_reason = update.failure_reason.or(row.failure_reason.take());
}

/// Two UPDATEs in a row as one: the newer value where it has one.
fn merge(older: &mut RowUpdate, newer: RowUpdate) {
    older.status = newer.status.or(older.status);
    older.updated_at = newer.updated_at;
    older.executed_at = newer.executed_at.or(older.executed_at);
    older.execution_price = newer.execution_price.or(older.execution_price);
    older.execution_value = newer.execution_value.or(older.execution_value);
    older.failure_reason = newer.failure_reason.or(older.failure_reason.take());
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use chrono::TimeZone;
    use rust_decimal_macros::dec;

    use super::*;
    use crate::order::{OrderType, Side};

    fn at(second: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, second).unwrap()
    }

    fn row(id: Uuid) -> OrderRow {
        OrderRow {
            id,
            user_id: Uuid::nil(),
            symbol: "AAPL".into(),
            order_type: OrderType::Limit,
            order_side: Side::Buy,
            quantity: dec!(2),
            price: Some(dec!(10)),
            stop_price: None,
            status: OrderStatus::Pending,
            created_at: at(0),
            updated_at: at(0),
            executed_at: None,
            execution_price: None,
            execution_value: None,
            market_price_at_submission: None,
            market_data_timestamp: None,
            failure_reason: None,
        }
    }

    fn update(id: Uuid, status: Option<OrderStatus>, second: u32) -> OrderRowChange {
        OrderRowChange::Update {
            id,
            status,
            updated_at: at(second),
            executed_at: None,
            execution_price: None,
            execution_value: None,
            failure_reason: None,
        }
    }

    fn executed(id: Uuid, second: u32) -> OrderRowChange {
        OrderRowChange::Update {
            id,
            status: Some(OrderStatus::Executed),
            updated_at: at(second),
            executed_at: Some(at(second)),
            execution_price: Some(dec!(9.5)),
            execution_value: Some(dec!(19)),
            failure_reason: None,
        }
    }

    #[test]
    fn an_order_born_in_the_batch_is_one_insert_of_its_final_row() {
        let id = Uuid::from_u128(1);
        let mut batch = RowBatch::default();
        batch.push(OrderRowChange::Insert(Box::new(row(id)))).unwrap();
        batch.push(update(id, Some(OrderStatus::Processing), 1)).unwrap();
        batch.push(update(id, None, 2)).unwrap();
        batch.push(executed(id, 3)).unwrap();
        assert_eq!(batch.updates().len(), 0);
        let written = &batch.inserts()[0];
        assert_eq!(written.status, OrderStatus::Executed);
        assert_eq!(written.updated_at, at(3));
        assert_eq!(written.execution_value, Some(dec!(19)));
    }

    #[test]
    fn updates_of_an_older_row_merge_newest_first_and_keep_earlier_values() {
        let id = Uuid::from_u128(2);
        let mut batch = RowBatch::default();
        batch.push(executed(id, 3)).unwrap();
        // A later update without a status (a trigger) keeps EXECUTED and the execution columns.
        batch.push(update(id, None, 4)).unwrap();
        assert_eq!(batch.len(), 1);
        let merged = &batch.updates()[0];
        assert_eq!(merged.status, Some(OrderStatus::Executed));
        assert_eq!(merged.updated_at, at(4));
        assert_eq!(merged.execution_price, Some(dec!(9.5)));
    }

    #[test]
    fn an_insert_after_an_update_of_the_same_id_asks_for_a_flush() {
        let id = Uuid::from_u128(3);
        let mut batch = RowBatch::default();
        batch.push(update(id, Some(OrderStatus::Processing), 1)).unwrap();
        assert_eq!(batch.push(OrderRowChange::Insert(Box::new(row(id)))), Err(FlushFirst));
        let mut batch = RowBatch::default();
        batch.push(OrderRowChange::Insert(Box::new(row(id)))).unwrap();
        assert_eq!(batch.push(OrderRowChange::Insert(Box::new(row(id)))), Err(FlushFirst));
    }

    /// The projection's SQL, one change at a time, on a table in memory.
    fn apply_one_by_one(table: &mut HashMap<Uuid, OrderRow>, change: OrderRowChange) {
        match change {
            OrderRowChange::Insert(row) => {
                table.insert(row.id, *row);
            }
            OrderRowChange::Update {
                id,
                status,
                updated_at,
                executed_at,
                execution_price,
                execution_value,
                failure_reason,
            } => {
                if let Some(row) = table.get_mut(&id) {
                    apply(
                        row,
                        RowUpdate {
                            id,
                            status,
                            updated_at,
                            executed_at,
                            execution_price,
                            execution_value,
                            failure_reason,
                        },
                    );
                }
            }
        }
    }

    /// What the bulk statements do with a batch, on a table in memory.
    fn write(table: &mut HashMap<Uuid, OrderRow>, batch: &RowBatch) {
        for row in batch.inserts() {
            table.insert(row.id, row.clone());
        }
        for update in batch.updates() {
            if let Some(row) = table.get_mut(&update.id) {
                apply(row, update.clone());
            }
        }
    }

    fn change_strategy() -> impl proptest::strategy::Strategy<Value = OrderRowChange> {
        use proptest::prelude::*;
        let status = prop_oneof![
            Just(None),
            Just(Some(OrderStatus::Processing)),
            Just(Some(OrderStatus::Executed)),
            Just(Some(OrderStatus::Cancelled)),
        ];
        (
            0_u128..4,
            any::<bool>(),
            status,
            1_u32..59,
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(id, insert, status, second, price, reason)| {
                let id = Uuid::from_u128(id);
                if insert {
                    OrderRowChange::Insert(Box::new(row(id)))
                } else {
                    OrderRowChange::Update {
                        id,
                        status,
                        updated_at: at(second),
                        executed_at: price.then(|| at(second)),
                        execution_price: price.then(|| Decimal::from(second)),
                        execution_value: price.then(|| Decimal::from(second * 2)),
                        failure_reason: reason.then(|| format!("reason {second}")),
                    }
                }
            })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1_000))]

        /// Proves a coalesced batch, flushed when it asks, leaves the table as
        /// the projection's one-statement-per-change path does, whatever rows
        /// were there before.
        #[test]
        fn coalescing_equals_applying_changes_one_by_one(
            existing in proptest::collection::vec(0_u128..4, 0..3),
            changes in proptest::collection::vec(change_strategy(), 0..24),
        ) {
            let before: HashMap<Uuid, OrderRow> =
                existing.into_iter().map(|id| (Uuid::from_u128(id), row(Uuid::from_u128(id)))).collect();
            // Only an order's first event inserts its row: a second insert of
            // an id is a corrupt log, which fails the transaction either way.
            let mut born: std::collections::HashSet<Uuid> = before.keys().copied().collect();
            let changes: Vec<OrderRowChange> = changes
                .into_iter()
                .filter(|change| match change {
                    OrderRowChange::Insert(row) => born.insert(row.id),
                    OrderRowChange::Update { .. } => true,
                })
                .collect();
            let mut expected = before.clone();
            for change in changes.iter().cloned() {
                apply_one_by_one(&mut expected, change);
            }
            let mut got = before;
            for batch in coalesce_page(&changes) {
                write(&mut got, &batch);
            }
            proptest::prop_assert_eq!(got, expected);
        }
    }
}
