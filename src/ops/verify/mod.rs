//! `order-engine verify`: checks the log's invariants and names every
//! violation. Read-only for the log; the shadow replay writes a scratch
//! table (`orders_verify_<pid>`) and drops it.
//!
//! Checks, each a [`Violation`] kind:
//! - `positions`: global positions dense from 1 (nothing removed);
//! - `stream-versions`: each stream's versions contiguous from 1, in position order;
//! - `chain`: every event matches its stream hash and log hash (nothing
//!   modified, removed or reordered behind the engine's back; see `store::chain`);
//! - `undecodable`: every order, saga and account event reads as its type;
//! - `read-model`: each read model equals a fresh fold of the log, row by row;
//! - `ledger`: every account's entries are sound (nothing reserved, deducted
//!   or released that was not there, keys applied once), the aggregate's fold
//!   agrees with the sums of the entries, available + reserved = deposits +
//!   credits − deductions per account and in total, and each settled order
//!   moved exactly its executed value;
//! - `reservation`: no finished, settled order still has money reserved;
//! - `publication` (when a broker is configured): every executed order is
//!   behind each RabbitMQ publisher's checkpoint.

mod log_checks;

use std::fmt;
use std::sync::Arc;

use indicatif::ProgressBar;
use rust_decimal::Decimal;
use uuid::Uuid;

use super::database::{OpsDb, RowDiff, RowDiffKind};
use super::replay::{fold_into, Projection};
use super::OpsError;
use crate::amqp::Route;
use crate::order::OrderStatus;
use crate::store::{ChainSummary, ChainVerifier, ChainViolation, EventStore, READ_PAGE_MAX};

pub use log_checks::{Execution, LogChecks, SETTLE_GRACE};

/// Most differing rows named per read model; the rest are counted.
pub const DIFF_ROWS_SHOWN: usize = 50;

#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Check the RabbitMQ publishers' checkpoints (a broker is configured).
    pub publication: bool,
}

/// One broken invariant.
#[derive(Debug, Clone, PartialEq)]
pub enum Violation {
    /// Positions, versions and hashes, as the store's chain verifier names them.
    Chain(ChainViolation),
    Undecodable {
        position: u64,
        stream: String,
        reason: String,
    },
    ReadModel {
        model: &'static str,
        detail: String,
    },
    Ledger {
        account: Uuid,
        detail: String,
    },
    LedgerTotal {
        detail: String,
    },
    Reserved {
        order_id: Uuid,
        status: OrderStatus,
        amount: Decimal,
    },
    Unpublished {
        order_id: Uuid,
        position: u64,
        publisher: &'static str,
        checkpoint: u64,
    },
}

impl Violation {
    /// The invariant's name, printed first on each line.
    pub fn kind(&self) -> &'static str {
        match self {
            Violation::Chain(ChainViolation::PositionGap { .. }) => "positions",
            Violation::Chain(ChainViolation::VersionGap { .. }) => "stream-versions",
            Violation::Chain(_) => "chain",
            Violation::Undecodable { .. } => "undecodable",
            Violation::ReadModel { .. } => "read-model",
            Violation::Ledger { .. } | Violation::LedgerTotal { .. } => "ledger",
            Violation::Reserved { .. } => "reservation",
            Violation::Unpublished { .. } => "publication",
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.kind())?;
        match self {
            Violation::Chain(violation) => write!(f, "{violation}"),
            Violation::Undecodable {
                position,
                stream,
                reason,
            } => {
                write!(f, "event at position {position} on {stream} is unreadable: {reason}")
            }
            Violation::ReadModel { model, detail } => write!(f, "{model}: {detail}"),
            Violation::Ledger { account, detail } => write!(f, "account {account}: {detail}"),
            Violation::LedgerTotal { detail } => write!(f, "all accounts: {detail}"),
            Violation::Reserved {
                order_id,
                status,
                amount,
            } => write!(f, "order {order_id} is {status} but {amount} is still reserved for it"),
            Violation::Unpublished {
                order_id,
                position,
                publisher,
                checkpoint,
            } => write!(
                f,
                "order {order_id} executed at position {position}, but publisher {publisher} is at {checkpoint}"
            ),
        }
    }
}

/// What verify found.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Events read in the log pass.
    pub events: u64,
    /// The head when the log pass started.
    pub head: u64,
    /// What the chain check saw, with the head's log hash: record it outside
    /// the database to detect a log rewritten from some point on.
    pub chain: Option<ChainSummary>,
    /// Read-model rows compared, per model: (model, checkpoint compared at).
    pub models_compared: Vec<(&'static str, u64)>,
    pub violations: Vec<Violation>,
}

impl VerifyReport {
    pub fn is_healthy(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Runs every check; `bar` shows the log pass (hidden in tests).
pub async fn verify(
    store: Arc<dyn EventStore>,
    db: &OpsDb,
    options: &VerifyOptions,
    bar: &ProgressBar,
) -> Result<VerifyReport, OpsError> {
    let head = store.head_position().await?;
    bar.set_length(head);
    let mut checks = LogChecks::default();
    let mut chain = ChainVerifier::new();
    let mut chain_violations = Vec::new();
    let mut position = 0;
    while position < head {
        let want = usize::try_from(head - position)
            .unwrap_or(READ_PAGE_MAX)
            .min(READ_PAGE_MAX);
        let page = store.read_chained(position, want).await?;
        let Some(last) = page.last() else { break };
        position = last.event.global_position;
        for chained in &page {
            chain_violations.extend(chain.check(chained).into_iter().map(Violation::Chain));
            checks.check(&chained.event);
        }
        bar.inc(page.len() as u64);
    }
    let events = checks.events();
    let (log_violations, executions) = checks.finish();
    let mut violations = chain_violations;
    violations.extend(log_violations);
    let mut models_compared = Vec::new();
    for projection in Projection::ALL {
        match shadow_replay(Arc::clone(&store), db, projection).await {
            Ok((at, count, diffs)) => {
                models_compared.push((projection.name(), at));
                violations.extend(diffs.iter().map(|d| read_model_violation(projection.name(), d)));
                if count > diffs.len() as u64 {
                    violations.push(Violation::ReadModel {
                        model: projection.name(),
                        detail: format!(
                            "{} more rows differ (first {} shown)",
                            count - diffs.len() as u64,
                            diffs.len()
                        ),
                    });
                }
            }
            Err(error) => violations.push(Violation::ReadModel {
                model: projection.name(),
                detail: format!("the log cannot be folded into a fresh model: {error}"),
            }),
        }
    }
    if options.publication {
        violations.extend(unpublished(db, &executions).await?);
    }
    Ok(VerifyReport {
        events,
        head,
        chain: Some(chain.finish()),
        models_compared,
        violations,
    })
}

/// Folds the log into a scratch table and compares it with the live one at
/// the live checkpoint; returns (checkpoint, rows differing, first rows).
async fn shadow_replay(
    store: Arc<dyn EventStore>,
    db: &OpsDb,
    projection: Projection,
) -> Result<(u64, u64, Vec<RowDiff>), OpsError> {
    let scratch = format!("{}_verify_{}", projection.table(), std::process::id());
    db.create_scratch(projection.table(), &scratch).await?;
    let result = async {
        let live = db.checkpoint(projection.checkpoint()).await?;
        let folded = fold_into(Arc::clone(&store), db, &scratch, 0, live, &ProgressBar::hidden()).await?;
        db.catch_up_and_diff(
            store.as_ref(),
            projection.table(),
            &scratch,
            projection.checkpoint(),
            folded,
            DIFF_ROWS_SHOWN,
        )
        .await
    }
    .await;
    db.drop_table(&scratch).await?;
    result
}

fn read_model_violation(model: &'static str, diff: &RowDiff) -> Violation {
    let detail = match &diff.kind {
        RowDiffKind::OnlyLive => format!("row {} is in the table but no event made it", diff.id),
        RowDiffKind::OnlyFresh => format!("row {} is missing from the table", diff.id),
        RowDiffKind::Columns(columns) => {
            let named: Vec<String> = columns
                .iter()
                .map(|(column, live, fresh)| {
                    format!(
                        "{column} is {} where the log gives {}",
                        live.as_deref().unwrap_or("NULL"),
                        fresh.as_deref().unwrap_or("NULL")
                    )
                })
                .collect();
            format!("row {}: {}", diff.id, named.join("; "))
        }
    };
    Violation::ReadModel { model, detail }
}

/// Executions not yet behind each publisher's checkpoint.
async fn unpublished(db: &OpsDb, executions: &[Execution]) -> Result<Vec<Violation>, OpsError> {
    let mut violations = Vec::new();
    for route in Route::ALL {
        let checkpoint = db.checkpoint(route.checkpoint()).await?;
        violations.extend(
            executions
                .iter()
                .filter(|e| e.position > checkpoint)
                .map(|e| Violation::Unpublished {
                    order_id: e.order_id,
                    position: e.position,
                    publisher: route.checkpoint(),
                    checkpoint,
                }),
        );
    }
    Ok(violations)
}
