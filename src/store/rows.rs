//! Row decoding both backends share: the hash columns beside each event, and
//! the command records a retry is answered from.

use sqlx::Row;

use super::chain::{ChainedEvent, EventHash};
use super::{Appended, StoreError};
use crate::events::{RecordedEvent, StreamId};

/// A stored hash: NULL before the chain existed, 32 bytes after.
pub(crate) fn hash_of<'r, R>(row: &'r R, column: &str, position: i64) -> Result<Option<EventHash>, StoreError>
where
    R: Row,
    Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
{
    let bytes: Option<Vec<u8>> = row.try_get(column).map_err(StoreError::from_sqlx)?;
    bytes
        .map(|b| {
            EventHash::from_slice(&b).ok_or_else(|| StoreError::Corrupt {
                position,
                reason: format!("{column} has {} bytes, not 32", b.len()),
            })
        })
        .transpose()
}

/// `event`, decoded from `row`, with the hashes stored beside it.
pub(crate) fn chained<'r, R>(row: &'r R, event: RecordedEvent) -> Result<ChainedEvent, StoreError>
where
    R: Row,
    Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
{
    let position = i64::try_from(event.global_position).unwrap_or(i64::MAX);
    Ok(ChainedEvent {
        stream_hash: hash_of(row, "stream_hash", position)?,
        log_hash: hash_of(row, "log_hash", position)?,
        event,
    })
}

/// A `stream_commands` row of `stream_id`: where the command's append landed,
/// marked deduplicated (whoever reads it is retrying that command).
pub(crate) fn command_record<'r, R>(row: &'r R, stream_id: &StreamId) -> Result<Appended, StoreError>
where
    R: Row,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
{
    let column = |name: &str| -> Result<u64, StoreError> {
        let value: i64 = row.try_get(name).map_err(StoreError::from_sqlx)?;
        Ok(u64::try_from(value).unwrap_or(0))
    };
    Ok(Appended {
        stream_id: stream_id.clone(),
        first_version: column("first_version")?,
        last_version: column("last_version")?,
        first_position: column("first_position")?,
        last_position: column("last_position")?,
        deduplicated: true,
    })
}
