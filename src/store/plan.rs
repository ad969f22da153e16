//! Turns an append batch into rows, given what the log already holds.
//!
//! Pure, and shared by every backend so the rules (expected versions, command
//! dedup, dense positions) are written once. Runs under the backend's write lock.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::chain::ChainedEvent;
pub(crate) use super::chain::EventRow;
use super::chain::{link_fields, log_link, storable_time, EventHash};
use super::{AppendRequest, Appended, Conflict, StoreError};
use crate::events::StreamId;

/// What a backend reads before planning: the streams touched and the
/// (stream, command) pairs that may have been applied already.
pub(crate) struct Keys<'a> {
    pub streams: Vec<&'a StreamId>,
    pub commands: Vec<(&'a StreamId, Uuid)>,
}

impl<'a> Keys<'a> {
    pub(crate) fn of_requests(requests: &'a [AppendRequest]) -> Self {
        Self {
            streams: requests.iter().map(|r| &r.stream_id).collect(),
            commands: requests
                .iter()
                .filter_map(|r| r.command_id.map(|c| (&r.stream_id, c)))
                .collect(),
        }
    }

    pub(crate) fn of_events(events: &'a [ChainedEvent]) -> Self {
        Self {
            streams: events.iter().map(|e| &e.event.stream_id).collect(),
            commands: events
                .iter()
                .filter_map(|e| e.event.command_id.map(|c| (&e.event.stream_id, c)))
                .collect(),
        }
    }
}

/// A stream's last event, as the batch finds it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StreamHead {
    pub version: u64,
    /// None for a new stream, or one whose last event predates the chain.
    pub hash: Option<EventHash>,
}

/// What the log held before the batch, read under the write lock.
pub(crate) struct LogSnapshot {
    pub head_position: u64,
    pub head_hash: Option<EventHash>,
    pub streams: HashMap<StreamId, StreamHead>,
    pub commands: HashMap<(StreamId, Uuid), Appended>,
}

pub(crate) struct Plan<'a> {
    pub rows: Vec<EventRow<'a>>,
    /// New command records: (command id, where its events landed).
    pub commands: Vec<(Uuid, Appended)>,
    pub results: Vec<Result<Appended, Conflict>>,
    pub recorded_at: DateTime<Utc>,
}

impl Plan<'_> {
    pub(crate) fn written(&self) -> Vec<Appended> {
        self.results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .filter(|a| !a.deduplicated)
            .cloned()
            .collect()
    }

    pub(crate) fn last_position(&self) -> Option<u64> {
        self.rows.last().map(|row| row.position)
    }
}

pub(crate) fn plan_batch(requests: &[AppendRequest], mut log: LogSnapshot, recorded_at: DateTime<Utc>) -> Plan<'_> {
    let recorded_at = storable_time(recorded_at);
    let mut log_hash = log.head_hash.unwrap_or(EventHash::GENESIS);
    let mut rows = Vec::with_capacity(requests.iter().map(|r| r.events.len()).sum());
    let mut commands = Vec::new();
    let mut results = Vec::with_capacity(requests.len());
    let mut head = log.head_position;
    // Runs of linked requests commit together or not at all: a run is checked
    // whole before any of it is planned, and one conflict fails every request
    // of it that would have written.
    let mut failed_run: Option<Conflict> = None;
    for (index, request) in requests.iter().enumerate() {
        if !request.linked {
            // A lone request gets the same answer from the checks below.
            let run_follows = requests.get(index + 1).is_some_and(|next| next.linked);
            failed_run = if run_follows {
                run_conflict(&requests[index..], &log)
            } else {
                None
            };
        }
        let stream_id = &request.stream_id;
        if let Some(conflict) = &failed_run {
            results.push(Err(conflict.clone()));
            continue;
        }
        if let Some(command_id) = request.command_id {
            if let Some(original) = log.commands.get(&(stream_id.clone(), command_id)) {
                results.push(Ok(Appended {
                    deduplicated: true,
                    ..original.clone()
                }));
                continue;
            }
        }
        let head_of_stream = log.streams.get(stream_id).copied().unwrap_or_default();
        let actual = head_of_stream.version;
        if actual != request.expected_version {
            results.push(Err(Conflict {
                stream_id: stream_id.clone(),
                expected: request.expected_version,
                actual,
            }));
            continue;
        }
        let first_position = head + 1;
        let mut stream_hash = head_of_stream.hash.unwrap_or(EventHash::GENESIS);
        for (offset, event) in (1_u64..).zip(&request.events) {
            let mut row = EventRow {
                position: head + offset,
                stream_id,
                version: actual + offset,
                event_id: event.event_id,
                event_type: &event.event_type,
                schema_version: event.schema_version,
                payload: &event.payload,
                metadata: &event.metadata,
                command_id: request.command_id,
                recorded_at,
                stream_hash: None,
                log_hash: None,
            };
            stream_hash = link_fields(&stream_hash, &row);
            log_hash = log_link(&log_hash, row.position, &stream_hash);
            row.stream_hash = Some(stream_hash);
            row.log_hash = Some(log_hash);
            rows.push(row);
        }
        let count = request.events.len() as u64;
        head += count;
        let appended = Appended {
            stream_id: stream_id.clone(),
            first_version: actual + 1,
            last_version: actual + count,
            first_position,
            last_position: head,
            deduplicated: false,
        };
        log.streams.insert(
            stream_id.clone(),
            StreamHead {
                version: actual + count,
                hash: Some(stream_hash),
            },
        );
        if let Some(command_id) = request.command_id {
            log.commands.insert((stream_id.clone(), command_id), appended.clone());
            commands.push((command_id, appended.clone()));
        }
        results.push(Ok(appended));
    }
    Plan {
        rows,
        commands,
        results,
        recorded_at,
    }
}

/// The first conflict of the linked run that starts at `run[0]`, checked
/// against the log as the batch has left it so far; None when the whole run
/// can be written, or was written before (every request's command applied:
/// a retry, answered from the records). A run that was applied in part is a
/// conflict on a stream whose command was applied: the caller's picture of
/// that stream is stale (another writer recorded the same command alone),
/// and writing the rest would split what must commit together. A run's
/// streams are distinct (`validate_batch`).
fn run_conflict(run: &[AppendRequest], log: &LogSnapshot) -> Option<Conflict> {
    let length = 1 + run.iter().skip(1).take_while(|r| r.linked).count();
    let run = &run[..length];
    let applied = |request: &AppendRequest| {
        request
            .command_id
            .is_some_and(|c| log.commands.contains_key(&(request.stream_id.clone(), c)))
    };
    if run.iter().all(applied) {
        return None;
    }
    run.iter().find_map(|request| {
        let actual = log.streams.get(&request.stream_id).map_or(0, |h| h.version);
        (applied(request) || actual != request.expected_version).then(|| Conflict {
            stream_id: request.stream_id.clone(),
            expected: request.expected_version,
            actual,
        })
    })
}

/// Checks events to import verbatim against the log they continue, and
/// derives the command records their command ids imply.
pub(crate) fn plan_import(events: &[ChainedEvent], mut log: LogSnapshot) -> Result<Vec<(Uuid, Appended)>, StoreError> {
    let mut head = log.head_position;
    let mut commands: Vec<(Uuid, Appended)> = Vec::new();
    for chained in events {
        let event = &chained.event;
        if event.global_position != head + 1 {
            return Err(StoreError::InvalidAppend(format!(
                "imported event {} has position {} but the log continues at {}",
                event.event_id,
                event.global_position,
                head + 1
            )));
        }
        head = event.global_position;
        let stream = log.streams.entry(event.stream_id.clone()).or_default();
        if event.stream_version != stream.version + 1 {
            return Err(StoreError::InvalidAppend(format!(
                "imported event at position {} is version {} of {} but that stream continues at {}",
                event.global_position,
                event.stream_version,
                event.stream_id,
                stream.version + 1
            )));
        }
        stream.version = event.stream_version;
        let Some(command_id) = event.command_id else {
            continue;
        };
        let key = (event.stream_id.clone(), command_id);
        if log.commands.contains_key(&key) {
            return Err(StoreError::InvalidAppend(format!(
                "command {command_id} of {} is already recorded: import a command's events in one batch",
                event.stream_id
            )));
        }
        // A command's events are contiguous in its stream and in the log.
        match commands.last_mut() {
            Some((last_command, appended))
                if *last_command == command_id
                    && appended.stream_id == event.stream_id
                    && appended.last_position + 1 == event.global_position =>
            {
                appended.last_version = event.stream_version;
                appended.last_position = event.global_position;
            }
            _ => {
                if commands
                    .iter()
                    .any(|(c, a)| *c == command_id && a.stream_id == event.stream_id)
                {
                    return Err(StoreError::InvalidAppend(format!(
                        "command {command_id} of {} appears twice, apart: the file is not a log export",
                        event.stream_id
                    )));
                }
                commands.push((
                    command_id,
                    Appended {
                        stream_id: event.stream_id.clone(),
                        first_version: event.stream_version,
                        last_version: event.stream_version,
                        first_position: event.global_position,
                        last_position: event.global_position,
                        deduplicated: false,
                    },
                ));
            }
        }
    }
    Ok(commands)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::events::{EventMetadata, NewEvent};

    fn event() -> NewEvent {
        NewEvent {
            event_id: Uuid::new_v4(),
            event_type: "Tested".into(),
            schema_version: 1,
            payload: serde_json::json!({}).into(),
            metadata: EventMetadata::default(),
        }
    }

    fn request(stream: &str, expected: u64, command: Option<Uuid>, n: usize) -> AppendRequest {
        AppendRequest {
            stream_id: StreamId::new(stream).unwrap(),
            expected_version: expected,
            command_id: command,
            events: (0..n).map(|_| event()).collect(),
            linked: false,
        }
    }

    fn empty_log(head: u64) -> LogSnapshot {
        LogSnapshot {
            head_position: head,
            head_hash: None,
            streams: HashMap::new(),
            commands: HashMap::new(),
        }
    }

    #[test]
    fn positions_continue_from_the_head_and_versions_from_each_stream() {
        // Proves a batch gets dense positions after the head and per-stream versions.
        let requests = [
            request("a", 0, None, 2),
            request("b", 0, None, 1),
            request("a", 2, None, 1),
        ];
        let plan = plan_batch(&requests, empty_log(10), Utc::now());
        let got: Vec<_> = plan
            .rows
            .iter()
            .map(|r| (r.position, r.stream_id.as_str(), r.version))
            .collect();
        assert_eq!(got, vec![(11, "a", 1), (12, "a", 2), (13, "b", 1), (14, "a", 3)]);
        assert_eq!(plan.last_position(), Some(14));
    }

    #[test]
    fn a_stale_stream_conflicts_alone() {
        // Proves one stream's conflict leaves the other streams in the batch written.
        let requests = [request("a", 5, None, 1), request("b", 0, None, 1)];
        let plan = plan_batch(&requests, empty_log(0), Utc::now());
        assert_eq!(plan.results[0].as_ref().err().map(|c| c.actual), Some(0));
        assert_eq!(plan.rows.len(), 1);
        assert_eq!(plan.rows[0].position, 1);
    }

    #[test]
    fn planned_hashes_form_a_chain_the_verifier_accepts() {
        // Proves the hashes written at append are the ones verify recomputes,
        // across two batches (the second continuing from the first's heads).
        use crate::store::chain::{ChainVerifier, ChainedEvent};
        let first = [request("a", 0, None, 2), request("b", 0, None, 1)];
        let plan = plan_batch(&first, empty_log(0), Utc::now());
        let mut chained = chained_rows(&plan);
        let mut log = empty_log(plan.last_position().unwrap());
        log.head_hash = chained.last().and_then(|c| c.log_hash);
        for c in &chained {
            log.streams.insert(
                c.event.stream_id.clone(),
                StreamHead {
                    version: c.event.stream_version,
                    hash: c.stream_hash,
                },
            );
        }
        let second = [request("a", 2, None, 1)];
        chained.extend(chained_rows(&plan_batch(&second, log, Utc::now())));
        let mut verifier = ChainVerifier::new();
        for c in &chained {
            assert_eq!(verifier.check(c), vec![]);
        }
        assert_eq!(verifier.finish().events, 4);

        fn chained_rows(plan: &Plan<'_>) -> Vec<ChainedEvent> {
            plan.rows.iter().map(EventRow::to_chained).collect()
        }
    }

    #[test]
    fn an_import_must_continue_the_log_and_its_streams() {
        let recorded = |stream: &str, version, position, command| ChainedEvent {
            event: crate::events::RecordedEvent {
                global_position: position,
                stream_id: StreamId::new(stream).unwrap(),
                stream_version: version,
                event_id: Uuid::new_v4(),
                event_type: "Tested".into(),
                schema_version: 1,
                payload: serde_json::json!({}).into(),
                metadata: EventMetadata::default(),
                command_id: command,
                recorded_at: Utc::now(),
            },
            stream_hash: None,
            log_hash: None,
        };
        let command = Uuid::new_v4();
        let events = [
            recorded("a", 1, 1, Some(command)),
            recorded("a", 2, 2, Some(command)),
            recorded("b", 1, 3, None),
        ];
        let commands = plan_import(&events, empty_log(0)).unwrap();
        assert_eq!(commands.len(), 1);
        assert_eq!((commands[0].1.first_position, commands[0].1.last_position), (1, 2));

        let err = plan_import(&events, empty_log(5)).unwrap_err().to_string();
        assert!(err.contains("continues at 6"), "{err}");
        let skipping = [recorded("a", 2, 1, None)];
        let err = plan_import(&skipping, empty_log(0)).unwrap_err().to_string();
        assert!(err.contains("version 2 of a"), "{err}");
    }

    #[test]
    fn a_repeated_command_in_one_batch_is_written_once() {
        // Proves the same command id twice in one batch dedups against the first.
        let command = Uuid::new_v4();
        let requests = [request("a", 0, Some(command), 1), request("a", 0, Some(command), 1)];
        let plan = plan_batch(&requests, empty_log(0), Utc::now());
        assert_eq!(plan.rows.len(), 1);
        let second = plan.results[1].as_ref().unwrap();
        assert!(second.deduplicated);
        assert_eq!(second.first_position, 1);
    }
}
