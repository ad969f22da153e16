//! Turns an append batch into rows, given what the log already holds.
//!
//! Pure, and shared by every backend so the rules (expected versions, command
//! dedup, dense positions) are written once. Runs under the backend's write lock.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{AppendRequest, Appended, Conflict};
use crate::events::{NewEvent, StreamId};

/// One event row to insert.
pub(crate) struct PlannedRow<'a> {
    pub position: u64,
    pub stream_id: &'a StreamId,
    pub version: u64,
    pub event: &'a NewEvent,
    pub command_id: Option<Uuid>,
}

/// What the log held before the batch, read under the write lock.
pub(crate) struct LogSnapshot {
    pub head_position: u64,
    pub versions: HashMap<StreamId, u64>,
    pub commands: HashMap<(StreamId, Uuid), Appended>,
}

pub(crate) struct Plan<'a> {
    pub rows: Vec<PlannedRow<'a>>,
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
    let mut rows = Vec::with_capacity(requests.iter().map(|r| r.events.len()).sum());
    let mut commands = Vec::new();
    let mut results = Vec::with_capacity(requests.len());
    let mut head = log.head_position;
    for request in requests {
        let stream_id = &request.stream_id;
        if let Some(command_id) = request.command_id {
            if let Some(original) = log.commands.get(&(stream_id.clone(), command_id)) {
                results.push(Ok(Appended {
                    deduplicated: true,
                    ..original.clone()
                }));
                continue;
            }
        }
        let actual = log.versions.get(stream_id).copied().unwrap_or(0);
        if actual != request.expected_version {
            results.push(Err(Conflict {
                stream_id: stream_id.clone(),
                expected: request.expected_version,
                actual,
            }));
            continue;
        }
        let first_position = head + 1;
        for (offset, event) in (1_u64..).zip(&request.events) {
            rows.push(PlannedRow {
                position: head + offset,
                stream_id,
                version: actual + offset,
                event,
                command_id: request.command_id,
            });
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
        log.versions.insert(stream_id.clone(), actual + count);
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::events::EventMetadata;

    fn event() -> NewEvent {
        NewEvent {
            event_id: Uuid::new_v4(),
            event_type: "Tested".into(),
            schema_version: 1,
            payload: serde_json::json!({}),
            metadata: EventMetadata::default(),
        }
    }

    fn request(stream: &str, expected: u64, command: Option<Uuid>, n: usize) -> AppendRequest {
        AppendRequest {
            stream_id: StreamId::new(stream).unwrap(),
            expected_version: expected,
            command_id: command,
            events: (0..n).map(|_| event()).collect(),
        }
    }

    fn empty_log(head: u64) -> LogSnapshot {
        LogSnapshot {
            head_position: head,
            versions: HashMap::new(),
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
