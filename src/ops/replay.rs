//! `order-engine replay`: rebuilds a read model from the log into a scratch
//! table and swaps it in, so readers never see a half-built model.
//!
//! 1. Fold the log into `<table>_rebuild` page by page (a reader task keeps
//!    one bounded queue of pages ahead of the writer), until within
//!    [`ReplayOptions::swap_gap`] events of the head.
//! 2. Swap in one transaction ([`OpsDb::swap`]): lock the live table, apply
//!    the last events up to the live projection's checkpoint, drop the old
//!    table, rename the new one, set the checkpoint.
//!
//! A `serve` running meanwhile keeps working: its readers wait for the swap's
//! lock (milliseconds) and then read the new table; its projection's next
//! commit waits too and then continues from its own checkpoint, which is
//! exactly where the new table stands. If its projection is behind the
//! rebuild, the swap waits for it to catch up (swapping then would make it
//! apply again events the new table holds). When no projection is running
//! the swap sets the checkpoint to the rebuild's position at once: on
//! PostgreSQL when no engine session is connected to the database (see
//! `OpsDb::swap`); otherwise, and on SQLite, once the checkpoint has not
//! moved for [`ReplayOptions::stall`], counted from the replay's start.
//!
//! `--from POSITION` rebuilds only what changed after POSITION: the live rows
//! are copied, every order with an event after POSITION is rebuilt from its
//! whole stream, and the rest of the log is folded as usual. It needs the
//! live model to have reached POSITION (its rows are what is kept).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use indicatif::ProgressBar;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::database::{fold_page, OpsDb, SwapOutcome};
use super::{check_dense, OpsError};
use crate::events::{RecordedEvent, StreamId};
use crate::projections::coalesce::RowBatch;
use crate::projections::ORDERS_PROJECTION;
use crate::store::{read_stream_all, EventStore, READ_PAGE_MAX};

/// Rows coalesced in memory before one bulk write.
pub const WRITE_BATCH_ROWS: usize = 5_000;
/// Pages read ahead of the writer.
const READ_AHEAD_PAGES: usize = 8;
/// Pages being read at once.
const READ_CONCURRENCY: usize = 4;
/// Pause between looks at a live projection that is behind the rebuild.
const WAIT_FOR_LIVE: Duration = Duration::from_millis(200);

/// A read model replay knows how to rebuild.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Projection {
    /// The `orders` table (order status and history), checkpoint `projection.orders`.
    Orders,
}

impl Projection {
    pub const ALL: [Projection; 1] = [Projection::Orders];

    pub fn name(self) -> &'static str {
        match self {
            Projection::Orders => "orders",
        }
    }

    pub fn table(self) -> &'static str {
        match self {
            Projection::Orders => "orders",
        }
    }

    pub fn checkpoint(self) -> &'static str {
        match self {
            Projection::Orders => ORDERS_PROJECTION,
        }
    }

    /// By name (`orders`) or checkpoint name (`projection.orders`).
    pub fn parse(name: &str) -> Result<Self, OpsError> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == name || p.checkpoint() == name)
            .ok_or_else(|| OpsError::UnknownProjection {
                name: name.to_owned(),
                known: Self::ALL.map(Self::name).join(", "),
            })
    }
}

#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Rebuild only orders changed after this position (see the module docs).
    pub from: Option<u64>,
    /// At most this many events are left for the swap's transaction to apply.
    pub swap_gap: u64,
    /// A live checkpoint that has not moved for this long belongs to no running
    /// projection. Only waited for while an engine may be running (always on
    /// SQLite, which cannot tell; on PostgreSQL when an engine is connected).
    pub stall: Duration,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        Self {
            from: None,
            swap_gap: 1_000,
            stall: Duration::from_secs(5),
        }
    }
}

/// What a replay did.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayReport {
    pub projection: &'static str,
    /// Events folded (read from the log and mapped to rows).
    pub events: u64,
    /// The position the swapped-in table and its checkpoint stand at.
    pub position: u64,
    /// Orders rebuilt from their streams because of `--from` (0 without it).
    pub orders_reread: u64,
    pub elapsed: Duration,
}

impl ReplayReport {
    pub fn events_per_second(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.events as f64 / seconds
        } else {
            0.0
        }
    }
}

/// Rebuilds `projection` and swaps it in; `bar` shows progress (hidden in tests).
pub async fn replay(
    store: Arc<dyn EventStore>,
    db: &OpsDb,
    projection: Projection,
    options: &ReplayOptions,
    bar: &ProgressBar,
) -> Result<ReplayReport, OpsError> {
    let scratch = format!("{}_rebuild", projection.table());
    let result = rebuild_and_swap(store, db, projection, &scratch, options, bar).await;
    if result.is_err() {
        // Best effort: a leftover is dropped by the next run anyway.
        let _ = db.drop_table(&scratch).await;
    }
    result
}

async fn rebuild_and_swap(
    store: Arc<dyn EventStore>,
    db: &OpsDb,
    projection: Projection,
    scratch: &str,
    options: &ReplayOptions,
    bar: &ProgressBar,
) -> Result<ReplayReport, OpsError> {
    let started = Instant::now();
    let head = store.head_position().await?;
    let live = db.checkpoint(projection.checkpoint()).await?;
    if let Some(from) = options.from {
        check_from(from, head, live)?;
    }
    db.create_scratch(projection.table(), scratch).await?;
    let (mut rebuilt, orders_reread) = match options.from {
        Some(from) if from > 0 => seed_from(store.as_ref(), db, projection, scratch, from).await?,
        _ => (0, 0),
    };
    let start = rebuilt;
    bar.set_length(head.saturating_sub(start));
    bar.set_position(0);
    loop {
        let head = store.head_position().await?;
        bar.set_length(head.saturating_sub(start));
        if head.saturating_sub(rebuilt) <= options.swap_gap {
            break;
        }
        rebuilt = fold_into(Arc::clone(&store), db, scratch, rebuilt, head, bar).await?;
    }
    db.index_scratch(projection.table(), scratch).await?;
    // The checkpoint as first seen: if it has not moved during the whole rebuild,
    // no projection is running and the swap need not wait `stall` again.
    let mut live_seen: Option<(u64, Instant)> = Some((live, started));
    loop {
        let stalled = live_seen
            .filter(|(_, since)| since.elapsed() >= options.stall)
            .map(|(position, _)| position);
        match db
            .swap(
                store.as_ref(),
                projection.table(),
                scratch,
                projection.checkpoint(),
                rebuilt,
                stalled,
            )
            .await?
        {
            SwapOutcome::Swapped {
                position,
                applied_in_swap,
            } => {
                bar.inc(applied_in_swap);
                return Ok(ReplayReport {
                    projection: projection.name(),
                    events: position - start,
                    position,
                    orders_reread,
                    elapsed: started.elapsed(),
                });
            }
            SwapOutcome::LiveBehind { live } => {
                if live_seen.map(|(seen, _)| seen) != Some(live) {
                    live_seen = Some((live, Instant::now()));
                }
                bar.set_message(format!(
                    "waiting for the running projection (at {live}) to reach {rebuilt}"
                ));
                tokio::time::sleep(WAIT_FOR_LIVE).await;
            }
        }
    }
}

/// `--from` needs rows to keep: the live model must have reached it.
fn check_from(from: u64, head: u64, live: u64) -> Result<(), OpsError> {
    if from > head {
        return Err(OpsError::InvalidRange(format!(
            "--from {from} is past the log's head ({head})"
        )));
    }
    if from > live {
        return Err(OpsError::InvalidRange(format!(
            "--from {from} is past the live model's checkpoint ({live}): it has no rows to keep for \
             events up to {from}; run replay without --from"
        )));
    }
    Ok(())
}

/// Folds the log (after, to] into `scratch`; returns the last position folded.
pub(crate) async fn fold_into(
    store: Arc<dyn EventStore>,
    db: &OpsDb,
    scratch: &str,
    after: u64,
    to: u64,
    bar: &ProgressBar,
) -> Result<u64, OpsError> {
    let (pages_tx, mut pages) = mpsc::channel::<Result<Vec<RecordedEvent>, OpsError>>(READ_AHEAD_PAGES);
    // Reading the next pages (several at once: the database works on them in
    // parallel) overlaps with writing this batch. Positions are dense, so page
    // i is exactly the positions after + i·PAGE + 1 ..= its end.
    let page_size = READ_PAGE_MAX as u64;
    let reader = tokio::spawn(async move {
        let starts = (after..to).step_by(READ_PAGE_MAX);
        let mut reads = futures_util::stream::iter(starts)
            .map(|start| {
                let store = Arc::clone(&store);
                async move {
                    let want = (to - start).min(page_size);
                    let page = store.read_all(start, want as usize).await?;
                    if (page.len() as u64) < want {
                        let end = page.last().map_or(start, |e| e.global_position);
                        return Err(OpsError::InvalidRange(format!(
                            "the log ends at position {end}, before {to}"
                        )));
                    }
                    check_dense(start, &page)?;
                    Ok(page)
                }
            })
            .buffered(READ_CONCURRENCY);
        while let Some(page) = reads.next().await {
            let failed = page.is_err();
            if pages_tx.send(page).await.is_err() || failed {
                return;
            }
        }
    });
    let mut position = after;
    let mut batch = RowBatch::default();
    while let Some(page) = pages.recv().await {
        let page = match page {
            Ok(page) => page,
            Err(error) => {
                reader.abort();
                return Err(error);
            }
        };
        for full in fold_page(&page, &mut batch)? {
            db.write(scratch, &full).await?;
        }
        if batch.len() >= WRITE_BATCH_ROWS {
            db.write(scratch, &std::mem::take(&mut batch)).await?;
        }
        position = page.last().map_or(position, |e| e.global_position);
        bar.inc(page.len() as u64);
    }
    db.write(scratch, &batch).await?;
    Ok(position)
}

/// `--from`: the live rows, with every order touched after `from` rebuilt
/// from its whole stream. Returns the position the scratch table stands at
/// and how many orders were rebuilt.
async fn seed_from(
    store: &dyn EventStore,
    db: &OpsDb,
    projection: Projection,
    scratch: &str,
    from: u64,
) -> Result<(u64, u64), OpsError> {
    let at = db
        .copy_rows(projection.table(), scratch, projection.checkpoint())
        .await?;
    let mut touched: HashSet<Uuid> = HashSet::new();
    let mut position = from;
    while position < at {
        let want = usize::try_from(at - position)
            .unwrap_or(READ_PAGE_MAX)
            .min(READ_PAGE_MAX);
        let page = store.read_all(position, want).await?;
        if page.is_empty() {
            break;
        }
        check_dense(position, &page)?;
        position = page.last().map_or(position, |e| e.global_position);
        touched.extend(page.iter().filter_map(|e| e.stream_id.uuid_in("order")));
    }
    let ids: Vec<Uuid> = touched.into_iter().collect();
    for chunk in ids.chunks(WRITE_BATCH_ROWS) {
        db.delete_rows(scratch, chunk).await?;
        let mut batch = RowBatch::default();
        for id in chunk {
            let events: Vec<RecordedEvent> = read_stream_all(store, &StreamId::order(*id), 1)
                .await?
                .into_iter()
                .filter(|e| e.global_position <= at)
                .collect();
            for full in fold_page(&events, &mut batch)? {
                db.write(scratch, &full).await?;
            }
        }
        db.write(scratch, &batch).await?;
    }
    Ok((at, ids.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projections_are_found_by_name_and_an_unknown_one_lists_the_known() {
        assert_eq!(Projection::parse("orders").ok(), Some(Projection::Orders));
        assert_eq!(Projection::parse("projection.orders").ok(), Some(Projection::Orders));
        let message = Projection::parse("positions")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            message.contains("\"positions\"") && message.contains("known projections: orders"),
            "{message}"
        );
    }

    #[test]
    fn from_is_refused_past_the_head_or_past_the_live_model() {
        assert!(check_from(5, 10, 10).is_ok());
        let past_head = check_from(11, 10, 10).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(past_head.contains("past the log's head (10)"), "{past_head}");
        let past_live = check_from(8, 10, 6).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(past_live.contains("checkpoint (6)"), "{past_live}");
    }
}
