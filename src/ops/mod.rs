//! The operator's tools over the log: `replay` (rebuild read models and swap
//! them in), `verify` (check the log's invariants), `export` / `import` (move a
//! log between databases as JSON lines).
//!
//! Reads the log through [`EventStore`]; writes only read-model tables (and,
//! for `import`, an empty log through `EventStore::import_chained`).

mod database;
pub mod export;
pub mod progress;
pub mod replay;
pub mod verify;

use std::sync::Arc;

pub use crate::projections::coalesce::RowBatch;
pub use database::{OpsDb, RowDiff, RowDiffKind, SwapOutcome};
pub use export::{export, import, ExportRange};
pub use replay::{replay, Projection, ReplayOptions, ReplayReport};
pub use verify::{verify, VerifyOptions, VerifyReport, Violation};

use crate::events::DecodeError;
use crate::store::{EventStore, PostgresConfig, PostgresStore, SqliteStore, StoreConfig, StoreError};

/// What can stop an operator command before it finishes.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("unknown projection {name:?}; known projections: {known}")]
    UnknownProjection { name: String, known: String },
    #[error("{0}")]
    InvalidRange(String),
    /// `event` names the event: id, position, type and stream.
    #[error("{event} cannot be projected: {source}")]
    Poison { event: String, source: Box<DecodeError> },
    #[error("the log jumps from position {after} to {found}: events are missing; run `order-engine verify`")]
    Gap { after: u64, found: u64 },
    #[error("line {line}: {reason}")]
    BadLine { line: usize, reason: String },
    #[error("writing JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("I/O: {0}")]
    Io(#[source] std::io::Error),
    #[error("the read-model table {table} has no definition in the database; were the migrations applied?")]
    MissingTable { table: String },
}

impl From<sqlx::Error> for OpsError {
    fn from(error: sqlx::Error) -> Self {
        Self::Store(StoreError::from(error))
    }
}

/// Opens the log and the raw access the operator tools need to its database.
pub async fn open(config: &StoreConfig) -> Result<(Arc<dyn EventStore>, OpsDb), StoreError> {
    Ok(match config {
        StoreConfig::Postgres(pg) => {
            // Named apart from the engine's sessions: replay's swap looks for those.
            let store = PostgresStore::open(PostgresConfig {
                application_name: PostgresConfig::OPS_APPLICATION_NAME.to_owned(),
                ..pg.clone()
            })
            .await?;
            let db = OpsDb::Postgres(store.writer_pool().clone());
            (Arc::new(store), db)
        }
        StoreConfig::Sqlite(lite) => {
            let store = SqliteStore::open(lite.clone()).await?;
            let db = OpsDb::Sqlite(store.writer_pool().clone());
            (Arc::new(store), db)
        }
    })
}

/// Events checked against the log's density as they are read: a hole means
/// rows were removed behind the engine's back.
pub(crate) fn check_dense(after: u64, events: &[crate::events::RecordedEvent]) -> Result<(), OpsError> {
    for (expected, event) in (after + 1..).zip(events) {
        if event.global_position != expected {
            return Err(OpsError::Gap {
                after: expected - 1,
                found: event.global_position,
            });
        }
    }
    Ok(())
}
