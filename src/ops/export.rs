//! `order-engine export` / `import`: the log as JSON lines, one
//! [`ChainedEvent`] per line (every stored field, flat, and both hashes), so
//! a log moves between databases (SQLite → PostgreSQL) unchanged and
//! verifies there.
//!
//! Both directions stream in pages: neither the log nor the file is ever
//! held in memory whole.

use std::io::{BufRead, Write};

use indicatif::ProgressBar;

use super::OpsError;
use crate::store::chain::log_link;
use crate::store::{ChainedEvent, EventStore, READ_PAGE_MAX};

/// Events handed to the store per import call.
pub const IMPORT_BATCH: usize = READ_PAGE_MAX;
/// Longest line import accepts; a longer one is refused, not buffered.
pub const LINE_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Which positions to export, both ends inclusive.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExportRange {
    pub from: Option<u64>,
    pub to: Option<u64>,
}

/// Writes the log's events in `range` as JSON lines; returns how many.
pub async fn export(
    store: &dyn EventStore,
    range: ExportRange,
    out: &mut dyn Write,
    bar: &ProgressBar,
) -> Result<u64, OpsError> {
    let head = store.head_position().await?;
    let first = range.from.unwrap_or(1).max(1);
    let last = range.to.unwrap_or(head).min(head);
    if let (Some(from), Some(to)) = (range.from, range.to) {
        if from > to {
            return Err(OpsError::InvalidRange(format!("--from {from} is after --to {to}")));
        }
    }
    bar.set_length(last.saturating_sub(first - 1));
    let mut after = first - 1;
    let mut written = 0;
    while after < last {
        let want = usize::try_from(last - after)
            .unwrap_or(READ_PAGE_MAX)
            .min(READ_PAGE_MAX);
        let page = store.read_chained(after, want).await?;
        let Some(end) = page.last().map(|c| c.event.global_position) else {
            break;
        };
        let count = page.len() as u64;
        for chained in page {
            serde_json::to_writer(&mut *out, &chained).map_err(OpsError::Json)?;
            out.write_all(b"\n").map_err(OpsError::Io)?;
        }
        written += count;
        after = end;
        bar.inc(count);
    }
    out.flush().map_err(OpsError::Io)?;
    Ok(written)
}

/// Loads JSON lines into the store: it must be empty, or the file must
/// continue its head exactly (next position, and the log hash chained to the
/// stored head's). Returns how many events were imported.
pub async fn import(store: &dyn EventStore, input: &mut dyn BufRead, bar: &ProgressBar) -> Result<u64, OpsError> {
    let head = store.head_position().await?;
    let mut batch: Vec<ChainedEvent> = Vec::with_capacity(IMPORT_BATCH);
    let mut line_no = 0usize;
    let mut imported = 0u64;
    let mut line = String::new();
    loop {
        line.clear();
        // A line is read through a limit, so a file without newlines cannot fill memory.
        let read = std::io::Read::take(&mut *input, LINE_BYTES_MAX as u64 + 1)
            .read_line(&mut line)
            .map_err(|e| OpsError::BadLine {
                line: line_no + 1,
                reason: e.to_string(),
            })?;
        if read == 0 {
            break;
        }
        line_no += 1;
        if read > LINE_BYTES_MAX {
            return Err(OpsError::BadLine {
                line: line_no,
                reason: format!("longer than {LINE_BYTES_MAX} bytes"),
            });
        }
        if line.trim().is_empty() {
            continue;
        }
        let parsed: ChainedEvent = serde_json::from_str(&line).map_err(|e| OpsError::BadLine {
            line: line_no,
            reason: e.to_string(),
        })?;
        if imported == 0 && batch.is_empty() {
            check_continues(store, head, &parsed, line_no).await?;
        }
        batch.push(parsed);
        if batch.len() == IMPORT_BATCH {
            imported += flush(store, &mut batch, line_no, bar).await?;
        }
    }
    imported += flush(store, &mut batch, line_no, bar).await?;
    Ok(imported)
}

async fn flush(
    store: &dyn EventStore,
    batch: &mut Vec<ChainedEvent>,
    line_no: usize,
    bar: &ProgressBar,
) -> Result<u64, OpsError> {
    if batch.is_empty() {
        return Ok(0);
    }
    let count = batch.len();
    let first_line = line_no + 1 - count;
    store
        .import_chained(std::mem::take(batch))
        .await
        .map_err(|e| OpsError::BadLine {
            line: first_line,
            reason: format!("the store refused lines {first_line}..={line_no}: {e}"),
        })?;
    bar.inc(count as u64);
    Ok(count as u64)
}

/// An empty store takes a file from position 1; a non-empty one only the
/// file that picks up where it ends.
async fn check_continues(store: &dyn EventStore, head: u64, first: &ChainedEvent, line: usize) -> Result<(), OpsError> {
    if first.event.global_position != head + 1 {
        return Err(OpsError::BadLine {
            line,
            reason: if head == 0 {
                format!(
                    "the file starts at position {}, an empty store needs position 1",
                    first.event.global_position
                )
            } else {
                format!(
                    "the store is not empty (head {head}) and the file starts at position {}, not {}; \
                     import into an empty database or export from --from {}",
                    first.event.global_position,
                    head + 1,
                    head + 1
                )
            },
        });
    }
    if head == 0 {
        return Ok(());
    }
    let stored = store.read_chained(head - 1, 1).await?;
    let previous = stored.first().and_then(|c| c.log_hash);
    if let (Some(previous), Some(stream_hash), Some(log_hash)) = (previous, first.stream_hash, first.log_hash) {
        if log_link(&previous, first.event.global_position, &stream_hash) != log_hash {
            return Err(OpsError::BadLine {
                line,
                reason: format!(
                    "the file's event at position {} does not chain to the store's head {head}: \
                     it continues another log",
                    first.event.global_position
                ),
            });
        }
    }
    Ok(())
}
