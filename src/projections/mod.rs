//! Readers of the whole log: the tail, the feed that shares one reader among
//! the process's followers, and the read models built from it
//! (the `orders` table, history, HTTP idempotency keys) with their runner.
//!
//! Never writes to the log.

pub mod coalesce;
mod feed;
mod order_rows;
mod read_models;
mod runner;
mod sql_common;
mod sql_postgres;
mod sql_sqlite;
mod tail;

use std::sync::Arc;

pub use feed::{FeedBatch, FeedEvent, FeedTail, LogFeed, FEED_PAGES_MAX, FEED_PAGE_MAX};
pub use order_rows::{order_row_change, order_row_change_of, OrderRow, OrderRowChange};
pub use read_models::{
    HistoryPage, IdempotencyClaim, IdempotencyRecord, ReadModels, HISTORY_LIMIT_MAX, IDEMPOTENCY_IN_FLIGHT,
};
pub use runner::{
    describe_poison, pause_or_shutdown, run_orders_projection, ProjectionHealth, ProjectionState, ORDERS_PROJECTION,
};
pub use sql_postgres::{write_batch as write_batch_postgres, PostgresReadModels};
pub use sql_sqlite::{write_batch as write_batch_sqlite, SqliteReadModels};
pub use tail::{LogTail, TAIL_POLL_INTERVAL};

use crate::store::{EventStore, PostgresStore, SqliteStore, StoreConfig, StoreError};

/// Opens the log and the read models beside it (same database, same migrations).
pub async fn open(config: &StoreConfig) -> Result<(Arc<dyn EventStore>, Arc<dyn ReadModels>), StoreError> {
    Ok(match config {
        StoreConfig::Postgres(pg) => {
            let store = PostgresStore::open(pg.clone()).await?;
            let models = PostgresReadModels::new(store.reader_pool().clone());
            (Arc::new(store), Arc::new(models))
        }
        StoreConfig::Sqlite(lite) => {
            let store = SqliteStore::open(lite.clone()).await?;
            let models = SqliteReadModels::new(store.writer_pool().clone(), store.reader_pool().clone());
            (Arc::new(store), Arc::new(models))
        }
    })
}
