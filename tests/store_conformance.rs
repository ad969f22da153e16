//! The event store conformance suite: every test body here runs against every
//! backend (PostgreSQL, SQLite and the in-memory log), so they cannot drift
//! apart. The three bodies that reach behind the store with SQL (triggers, a
//! raw v1 row, a forged row) run on the SQL backends only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestDb;
use futures_util::future::{join_all, BoxFuture, FutureExt};
use order_engine::events::{decode, EventMetadata, NewEvent, StreamId, TraceContext};
use order_engine::order::{OrderEvent, OrderType};
use order_engine::projections::LogTail;
use order_engine::store::{
    append, append_atomic, read_stream_all, AppendRequest, Appended, BeforeCommitHook, ChainVerifier, ChainViolation,
    ChainedEvent, Conflict, EventStore, FaultInjected, StoreError, APPEND_EVENTS_MAX, READ_PAGE_MAX,
};
use rust_decimal_macros::dec;
use serde_json::json;
use tokio::sync::{oneshot, Mutex};
use uuid::Uuid;

on_every_backend!(
    with_group_commit:
    appended_events_read_back_in_order,
    a_stale_expected_version_is_a_conflict_and_writes_nothing,
    a_new_stream_must_be_expected_at_version_zero,
    a_batch_commits_every_stream_but_the_conflicting_one,
    a_linked_run_commits_all_or_nothing,
    a_repeated_command_returns_the_original_result,
    the_whole_log_reads_in_dense_pages,
    a_stream_reads_from_a_version,
    metadata_survives_storage,
    the_database_refuses_update_and_delete,
    invalid_appends_are_refused_before_any_write,
    a_version_one_event_loads_as_the_current_type,
    concurrent_writers_to_one_stream_never_both_win,
    a_reader_never_passes_an_uncommitted_append,
    a_rolled_back_append_leaves_no_gap_and_no_stall,
    a_tail_wakes_on_append,
    appends_are_hash_chained_and_verify,
    a_modified_event_breaks_the_chain,
    a_log_imports_verbatim_and_still_verifies,
    an_import_that_does_not_continue_the_log_writes_nothing,
    group_commit_merges_concurrent_appends_and_isolates_conflicts,
    an_append_its_caller_gave_up_on_holds_up_no_other,
);

on_memory_backend!(
    appended_events_read_back_in_order,
    a_stale_expected_version_is_a_conflict_and_writes_nothing,
    a_new_stream_must_be_expected_at_version_zero,
    a_batch_commits_every_stream_but_the_conflicting_one,
    a_linked_run_commits_all_or_nothing,
    a_repeated_command_returns_the_original_result,
    the_whole_log_reads_in_dense_pages,
    a_stream_reads_from_a_version,
    metadata_survives_storage,
    invalid_appends_are_refused_before_any_write,
    concurrent_writers_to_one_stream_never_both_win,
    a_reader_never_passes_an_uncommitted_append,
    a_rolled_back_append_leaves_no_gap_and_no_stall,
    a_tail_wakes_on_append,
    appends_are_hash_chained_and_verify,
    a_log_imports_verbatim_and_still_verifies,
    an_import_that_does_not_continue_the_log_writes_nothing,
    group_commit_merges_concurrent_appends_and_isolates_conflicts,
    an_append_its_caller_gave_up_on_holds_up_no_other,
);

fn stream(name: &str) -> StreamId {
    StreamId::new(format!("{name}-{}", Uuid::new_v4())).unwrap()
}

fn event(n: u64) -> NewEvent {
    NewEvent {
        event_id: Uuid::new_v4(),
        event_type: "Tested".into(),
        schema_version: 1,
        payload: json!({ "n": n, "amount": "1502.50" }).into(),
        metadata: EventMetadata::default(),
    }
}

fn request(stream_id: &StreamId, expected_version: u64, count: u64) -> AppendRequest {
    AppendRequest {
        stream_id: stream_id.clone(),
        expected_version,
        command_id: None,
        events: (1..=count).map(event).collect(),
        linked: false,
    }
}

async fn must_append(store: &Arc<dyn EventStore>, request: AppendRequest) -> Appended {
    append(store.as_ref(), request).await.unwrap().unwrap()
}

async fn appended_events_read_back_in_order(db: TestDb) {
    // Proves an append is readable with its versions, positions, payloads and event ids.
    let s = db.open_log(None).await;
    let id = stream("order");
    let req = request(&id, 0, 3);
    let sent: Vec<_> = req.events.clone();
    let appended = must_append(&s.store, req).await;
    assert_eq!((appended.first_version, appended.last_version), (1, 3));
    assert_eq!((appended.first_position, appended.last_position), (1, 3));
    assert!(!appended.deduplicated);

    let read = read_stream_all(s.store.as_ref(), &id, 1).await.unwrap();
    assert_eq!(read.len(), 3);
    for (i, (stored, sent)) in read.iter().zip(&sent).enumerate() {
        assert_eq!(stored.stream_version, i as u64 + 1);
        assert_eq!(stored.global_position, i as u64 + 1);
        assert_eq!(stored.event_id, sent.event_id);
        assert_eq!(stored.payload, sent.payload);
        assert_eq!(stored.event_type, "Tested");
    }
    assert_eq!(s.store.stream_version(&id).await.unwrap(), 3);
    assert_eq!(s.store.head_position().await.unwrap(), 3);
}

async fn a_stale_expected_version_is_a_conflict_and_writes_nothing(db: TestDb) {
    // Proves a writer that decided on an old version is told so and changes nothing.
    let s = db.open_log(None).await;
    let id = stream("order");
    must_append(&s.store, request(&id, 0, 2)).await;
    let outcome = append(s.store.as_ref(), request(&id, 1, 1)).await.unwrap();
    assert_eq!(
        outcome,
        Err(Conflict {
            stream_id: id.clone(),
            expected: 1,
            actual: 2
        })
    );
    assert_eq!(s.store.stream_version(&id).await.unwrap(), 2);
    assert_eq!(s.store.head_position().await.unwrap(), 2);
}

async fn a_new_stream_must_be_expected_at_version_zero(db: TestDb) {
    // Proves expecting events in an empty stream, or none in a full one, conflicts.
    let s = db.open_log(None).await;
    let id = stream("order");
    let outcome = append(s.store.as_ref(), request(&id, 4, 1)).await.unwrap();
    assert_eq!(outcome.err().map(|c| c.actual), Some(0));
    must_append(&s.store, request(&id, 0, 1)).await;
    let outcome = append(s.store.as_ref(), request(&id, 0, 1)).await.unwrap();
    assert_eq!(outcome.err().map(|c| (c.expected, c.actual)), Some((0, 1)));
}

async fn a_batch_commits_every_stream_but_the_conflicting_one(db: TestDb) {
    // Proves one transaction checks each stream on its own: one conflict fails only its stream.
    let s = db.open_log(None).await;
    let (a, b, c) = (stream("a"), stream("b"), stream("c"));
    must_append(&s.store, request(&b, 0, 1)).await;
    let results = s
        .store
        .append_batch(vec![request(&a, 0, 2), request(&b, 0, 1), request(&c, 0, 1)])
        .await
        .unwrap();
    assert_eq!(results.len(), 3);
    let first = results[0].as_ref().unwrap();
    assert_eq!((first.first_position, first.last_position), (2, 3));
    assert_eq!(results[1].as_ref().err().map(|c| c.actual), Some(1));
    let third = results[2].as_ref().unwrap();
    assert_eq!((third.first_position, third.first_version), (4, 1));
    assert_eq!(s.store.stream_version(&b).await.unwrap(), 1);
    let positions: Vec<u64> = s
        .store
        .read_all(0, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.global_position)
        .collect();
    assert_eq!(positions, vec![1, 2, 3, 4]);
}

async fn a_linked_run_commits_all_or_nothing(db: TestDb) {
    // A saga step, its ledger entry and the order command they cause are one
    // linked run: a conflict on any stream of it writes none of it, while
    // other requests of the same batch (other callers, merged by group
    // commit) still commit on their own.
    let s = db.open_log(None).await;
    let (order, saga, account, other) = (stream("order"), stream("saga"), stream("account"), stream("other"));
    must_append(&s.store, request(&account, 0, 1)).await;
    let mut stale = vec![request(&order, 0, 1), request(&saga, 0, 2), request(&account, 0, 1)];
    stale[1].linked = true;
    stale[2].linked = true;
    stale.push(request(&other, 0, 1));
    let results = s.store.append_batch(stale).await.unwrap();
    assert_eq!(results.len(), 4);
    for result in &results[..3] {
        let conflict = result.as_ref().expect_err("every request of the run fails");
        assert_eq!((&conflict.stream_id, conflict.actual), (&account, 1));
    }
    assert!(results[3].is_ok(), "a request outside the run commits on its own");
    assert_eq!(s.store.stream_version(&order).await.unwrap(), 0);
    assert_eq!(s.store.stream_version(&saga).await.unwrap(), 0);
    let positions: Vec<u64> = s
        .store
        .read_all(0, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.global_position)
        .collect();
    assert_eq!(positions, vec![1, 2], "the failed run left no gap");

    let fresh = vec![request(&order, 0, 1), request(&saga, 0, 2), request(&account, 1, 1)];
    let appended = append_atomic(s.store.as_ref(), fresh).await.unwrap().unwrap();
    let ranges: Vec<(u64, u64)> = appended.iter().map(|a| (a.first_position, a.last_position)).collect();
    assert_eq!(ranges, vec![(3, 3), (4, 5), (6, 6)]);

    // A run one of whose commands another writer applied alone is stale as a
    // whole: a conflict on that stream, and none of it is written.
    let command = Uuid::new_v4();
    let mut alone = request(&saga, 2, 1);
    alone.command_id = Some(command);
    must_append(&s.store, alone).await;
    let mut partly = vec![request(&order, 1, 1), request(&saga, 2, 1), request(&account, 2, 1)];
    partly[1].command_id = Some(command);
    let partial = append_atomic(s.store.as_ref(), partly).await.unwrap();
    assert_eq!(partial.err().map(|c| c.stream_id), Some(saga.clone()));
    assert_eq!(s.store.head_position().await.unwrap(), 7);
    assert_eq!(s.store.stream_version(&order).await.unwrap(), 1);

    let mut twice = vec![request(&order, 1, 1), request(&order, 1, 1)];
    twice[1].linked = true;
    assert!(matches!(
        s.store.append_batch(twice).await,
        Err(StoreError::InvalidAppend(_))
    ));
    let mut first_linked = vec![request(&order, 1, 1)];
    first_linked[0].linked = true;
    assert!(matches!(
        s.store.append_batch(first_linked).await,
        Err(StoreError::InvalidAppend(_))
    ));
    assert_eq!(s.store.head_position().await.unwrap(), 7);
}

async fn a_repeated_command_returns_the_original_result(db: TestDb) {
    // Proves a retried command (same id, e.g. after an unknown COMMIT outcome) is written once,
    // and its record is found by stream and command id.
    let s = db.open_log(None).await;
    let id = stream("order");
    let command_id = Uuid::new_v4();
    let mut first = request(&id, 0, 2);
    first.command_id = Some(command_id);
    let original = must_append(&s.store, first.clone()).await;

    let retried = must_append(&s.store, first).await;
    assert!(retried.deduplicated);
    assert_eq!(
        Appended {
            deduplicated: false,
            ..retried.clone()
        },
        original
    );
    // Even a retry that decided on a now-stale version gets the original answer.
    let mut stale = request(&id, 0, 1);
    stale.command_id = Some(command_id);
    assert_eq!(must_append(&s.store, stale).await, retried);
    assert_eq!(s.store.stream_version(&id).await.unwrap(), 2);
    assert_eq!(s.store.head_position().await.unwrap(), 2);
    // The record a retry is answered from can be asked for without appending.
    assert_eq!(s.store.command_record(&id, command_id).await.unwrap(), Some(retried));

    // The same command id on another stream is another command.
    let other = stream("order");
    assert_eq!(s.store.command_record(&other, command_id).await.unwrap(), None);
    let mut elsewhere = request(&other, 0, 1);
    elsewhere.command_id = Some(command_id);
    assert!(!must_append(&s.store, elsewhere).await.deduplicated);
    assert_eq!(s.store.command_record(&id, Uuid::new_v4()).await.unwrap(), None);
}

async fn the_whole_log_reads_in_dense_pages(db: TestDb) {
    // Proves paging the whole log returns every position once, in order.
    let s = db.open_log(None).await;
    for i in 0..5 {
        must_append(&s.store, request(&stream(&format!("s{i}")), 0, 5)).await;
    }
    let mut tail = LogTail::new(Arc::clone(&s.store), 0).with_page_size(7);
    let mut positions = Vec::new();
    while let Some(page) = tail.try_next_batch().await.unwrap() {
        assert!(page.len() <= 7);
        positions.extend(page.iter().map(|e| e.global_position));
    }
    assert_eq!(positions, (1..=25).collect::<Vec<u64>>());
    assert_eq!(tail.position(), 25);
}

async fn a_stream_reads_from_a_version(db: TestDb) {
    // Proves reading a stream from version k skips only what precedes k, and other streams.
    let s = db.open_log(None).await;
    let (a, b) = (stream("a"), stream("b"));
    must_append(&s.store, request(&a, 0, 3)).await;
    must_append(&s.store, request(&b, 0, 2)).await;
    must_append(&s.store, request(&a, 3, 2)).await;
    let read = s.store.read_stream(&a, 3, 100).await.unwrap();
    let versions: Vec<u64> = read.iter().map(|e| e.stream_version).collect();
    assert_eq!(versions, vec![3, 4, 5]);
    assert!(read.iter().all(|e| e.stream_id == a));
    assert_eq!(s.store.read_stream(&a, 2, 1).await.unwrap().len(), 1);
    assert!(s.store.read_stream(&stream("none"), 1, 10).await.unwrap().is_empty());
}

async fn metadata_survives_storage(db: TestDb) {
    // Proves correlation, causation, who, source, trace context and command id are kept.
    let s = db.open_log(None).await;
    let id = stream("order");
    let metadata = EventMetadata {
        correlation_id: Some(Uuid::new_v4()),
        causation_id: Some(Uuid::new_v4()),
        who: Some("user:0190".into()),
        source: Some("http".into()),
        trace: Some(TraceContext {
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            tracestate: Some("vendor=x".into()),
        }),
    };
    let command_id = Uuid::new_v4();
    let mut req = request(&id, 0, 1);
    req.events[0].metadata = metadata.clone();
    req.command_id = Some(command_id);
    must_append(&s.store, req).await;
    let stored = &s.store.read_stream(&id, 1, 1).await.unwrap()[0];
    assert_eq!(stored.metadata, metadata);
    assert_eq!(stored.command_id, Some(command_id));
    let age = chrono::Utc::now() - stored.recorded_at;
    assert!(
        age < chrono::Duration::seconds(60) && age > chrono::Duration::seconds(-60),
        "recorded_at {age}"
    );
}

async fn the_database_refuses_update_and_delete(db: TestDb) {
    // Proves the append-only rule is the database's, not only the code's.
    let s = db.open(None).await;
    let id = stream("order");
    let mut req = request(&id, 0, 1);
    req.command_id = Some(Uuid::new_v4());
    must_append(&s.store, req).await;
    for sql in [
        "UPDATE events SET event_type = 'Forged'",
        "DELETE FROM events",
        "UPDATE stream_commands SET last_version = 9",
        "DELETE FROM stream_commands",
    ] {
        let error = s.raw.execute(sql).await.expect_err(sql);
        assert!(error.contains("append-only"), "{sql}: {error}");
    }
    if let common::Raw::Postgres(_) = s.raw {
        let error = s.raw.execute("TRUNCATE events").await.expect_err("TRUNCATE");
        assert!(error.contains("append-only"), "TRUNCATE: {error}");
    }
    let stored = s.store.read_stream(&id, 1, 1).await.unwrap();
    assert_eq!(stored[0].event_type, "Tested");
}

async fn invalid_appends_are_refused_before_any_write(db: TestDb) {
    // Proves empty and oversized appends get a specific error and write nothing.
    let s = db.open_log(None).await;
    let id = stream("order");
    let empty = append(s.store.as_ref(), request(&id, 0, 0)).await;
    assert!(
        matches!(empty, Err(StoreError::InvalidAppend(ref m)) if m.contains("no events")),
        "{empty:?}"
    );
    let huge = append(s.store.as_ref(), request(&id, 0, APPEND_EVENTS_MAX as u64 + 1)).await;
    assert!(
        matches!(huge, Err(StoreError::InvalidAppend(ref m)) if m.contains("at most")),
        "{huge:?}"
    );
    assert_eq!(s.store.head_position().await.unwrap(), 0);
}

async fn a_version_one_event_loads_as_the_current_type(db: TestDb) {
    // Proves upcasting: a stored v1 OrderSubmitted (the seed's single `price`) loads as v2.
    let s = db.open(None).await;
    let order_id = Uuid::new_v4();
    let payload = json!({
        "order_id": order_id, "user_id": Uuid::new_v4(), "symbol": "AAPL", "side": "BUY",
        "order_type": "LIMIT", "quantity": "10", "price": "140.5",
        "market_price_at_submission": "150.25", "market_data_timestamp": "2025-11-04T10:00:00Z",
        "submitted_at": "2025-11-04T10:00:00Z"
    });
    let sql = format!(
        "INSERT INTO events (global_position, stream_id, stream_version, event_id, event_type, schema_version, \
                             payload, metadata, command_id, recorded_at) \
         VALUES (1, 'order-{order_id}', 1, '{}', 'OrderSubmitted', 1, '{payload}', '{{}}', NULL, \
                 '2025-11-04T10:00:00+00:00')",
        Uuid::new_v4()
    );
    s.raw.execute(&sql).await.unwrap();
    let stored = s.store.read_stream(&StreamId::order(order_id), 1, 1).await.unwrap();
    assert_eq!(stored[0].schema_version, 1);
    match decode::<OrderEvent>(&stored[0]).unwrap() {
        OrderEvent::OrderSubmitted(e) => {
            assert_eq!(e.order_type, OrderType::Limit);
            assert_eq!(e.limit_price, Some(dec!(140.5)));
            assert_eq!(e.stop_price, None);
            assert_eq!(e.order_id, order_id);
        }
        other => panic!("decoded as {other:?}"),
    }
}

async fn concurrent_writers_to_one_stream_never_both_win(db: TestDb) {
    // Proves two processes racing on one stream: exactly one append per version wins.
    let (a, b) = (db.open_log(None).await, db.open_log(None).await);
    let id = stream("order");
    let writers = [Arc::clone(&a.store), Arc::clone(&b.store)];
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = Arc::clone(&writers[w % 2]);
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            let mut wins = 0_u32;
            let mut conflicts = 0_u32;
            for _ in 0..10 {
                // Decide on the version just read, as an actor would; retry on conflict.
                let version = store.stream_version(&id).await.unwrap();
                match append(store.as_ref(), request(&id, version, 1)).await.unwrap() {
                    Ok(_) => wins += 1,
                    Err(conflict) => {
                        assert!(conflict.actual > version, "conflict without progress: {conflict:?}");
                        conflicts += 1;
                    }
                }
            }
            (wins, conflicts)
        }));
    }
    let results: Vec<(u32, u32)> = join_all(tasks).await.into_iter().map(Result::unwrap).collect();
    let wins: u32 = results.iter().map(|r| r.0).sum();
    let events = read_stream_all(a.store.as_ref(), &id, 1).await.unwrap();
    assert_eq!(events.len() as u32, wins);
    let versions: Vec<u64> = events.iter().map(|e| e.stream_version).collect();
    assert_eq!(versions, (1..=u64::from(wins)).collect::<Vec<_>>());
    let ids: HashSet<Uuid> = events.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), events.len());
}

/// A hook that parks appends to `held` until released, reporting when it parked.
fn holding_hook(held: StreamId, release: oneshot::Receiver<bool>, parked: oneshot::Sender<()>) -> BeforeCommitHook {
    let release = Arc::new(Mutex::new(Some(release)));
    let parked = Arc::new(std::sync::Mutex::new(Some(parked)));
    Arc::new(
        move |appended: &[Appended]| -> BoxFuture<'static, Result<(), FaultInjected>> {
            let ours = appended.iter().any(|a| a.stream_id == held);
            let release = Arc::clone(&release);
            let parked = parked.lock().unwrap().take().filter(|_| ours);
            async move {
                if !ours {
                    return Ok(());
                }
                if let Some(parked) = parked {
                    let _ = parked.send(());
                }
                let commit = match release.lock().await.take() {
                    Some(receiver) => receiver.await.unwrap_or(false),
                    None => true,
                };
                if commit {
                    Ok(())
                } else {
                    Err(FaultInjected("test rolled the append back".into()))
                }
            }
            .boxed()
        },
    )
}

async fn an_append_its_caller_gave_up_on_holds_up_no_other(db: TestDb) {
    // Proves an append whose caller gave up while its commit hung writes
    // nothing and holds up no later append: with group commit too, where the
    // writer drops a commit nobody waits for instead of waiting it out.
    let held = stream("held");
    // Never sent while the test runs: the held commit hangs until its caller gives up.
    let (_release, release_rx) = oneshot::channel();
    let (parked_tx, parked_rx) = oneshot::channel();
    let s = db
        .open_log(Some(holding_hook(held.clone(), release_rx, parked_tx)))
        .await;
    let hold_store = Arc::clone(&s.store);
    let held_req = request(&held, 0, 1);
    let caller = tokio::spawn(async move { append(hold_store.as_ref(), held_req).await });
    parked_rx.await.unwrap();
    caller.abort();
    let next = stream("next");
    let appended = tokio::time::timeout(Duration::from_secs(5), append(s.store.as_ref(), request(&next, 0, 1)))
        .await
        .expect("an append queued behind a commit nobody waits for was held up")
        .unwrap()
        .unwrap();
    assert_eq!(appended.first_version, 1);
    assert_eq!(s.store.stream_version(&held).await.unwrap(), 0);
}

const OTHERS: usize = 200;

async fn a_reader_never_passes_an_uncommitted_append(db: TestDb) {
    // Proves the gap-free read: while one append is held open before COMMIT,
    // 200 concurrent appends from another process cannot become visible past it,
    // and once it commits a tailing reader gets all 201 in order with nothing skipped.
    let held = stream("held");
    let (release_tx, release_rx) = oneshot::channel();
    let (parked_tx, parked_rx) = oneshot::channel();
    let holder = db
        .open_log(Some(holding_hook(held.clone(), release_rx, parked_tx)))
        .await;
    let other = db.open_log(None).await;
    must_append(&other.store, request(&stream("before"), 0, 1)).await;

    let hold_store = Arc::clone(&holder.store);
    let held_req = request(&held, 0, 1);
    let held_task = tokio::spawn(async move { append(hold_store.as_ref(), held_req).await });
    parked_rx.await.unwrap();

    let streams: Vec<StreamId> = (0..OTHERS).map(|i| stream(&format!("other{i}"))).collect();
    let others: Vec<_> = streams
        .iter()
        .map(|id| {
            let store = Arc::clone(&other.store);
            let req = request(id, 0, 1);
            tokio::spawn(async move { append(store.as_ref(), req).await })
        })
        .collect();

    // The reader, meanwhile, sees nothing past position 1.
    let watch_until = Instant::now() + Duration::from_millis(600);
    while Instant::now() < watch_until {
        let visible = other.store.read_all(1, 1_000).await.unwrap();
        assert!(
            visible.is_empty(),
            "a reader passed the held append: {:?}",
            visible[0].stream_id
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    release_tx.send(true).unwrap();
    let held_at = held_task.await.unwrap().unwrap().unwrap();
    assert_eq!(held_at.first_position, 2);
    for task in others {
        task.await.unwrap().unwrap().unwrap();
    }

    let mut tail = LogTail::new(Arc::clone(&other.store), 1);
    let mut seen = Vec::new();
    while seen.len() < OTHERS + 1 {
        let batch = tokio::time::timeout(Duration::from_secs(10), tail.next_batch())
            .await
            .unwrap()
            .unwrap();
        seen.extend(batch);
    }
    assert_eq!(
        seen[0].stream_id, held,
        "the held append must come first: it took its position first"
    );
    let positions: Vec<u64> = seen.iter().map(|e| e.global_position).collect();
    assert_eq!(positions, (2..=OTHERS as u64 + 2).collect::<Vec<_>>());
    let others_seen: HashSet<&StreamId> = seen[1..].iter().map(|e| &e.stream_id).collect();
    assert_eq!(others_seen, streams.iter().collect::<HashSet<_>>());
}

async fn a_rolled_back_append_leaves_no_gap_and_no_stall(db: TestDb) {
    // Proves a rolled-back append frees its position: later appends fill it and
    // a tailing reader goes on at once, with no gap to wait out.
    let held = stream("held");
    let (release_tx, release_rx) = oneshot::channel();
    let (parked_tx, parked_rx) = oneshot::channel();
    let holder = db
        .open_log(Some(holding_hook(held.clone(), release_rx, parked_tx)))
        .await;
    let other = db.open_log(None).await;

    let hold_store = Arc::clone(&holder.store);
    let held_task = tokio::spawn(async move { append(hold_store.as_ref(), request(&held, 0, 3)).await });
    parked_rx.await.unwrap();
    let others: Vec<_> = (0..OTHERS)
        .map(|i| {
            let store = Arc::clone(&other.store);
            let req = request(&stream(&format!("other{i}")), 0, 1);
            tokio::spawn(async move { append(store.as_ref(), req).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    release_tx.send(false).unwrap();
    let rolled_back = held_task.await.unwrap();
    assert!(matches!(rolled_back, Err(StoreError::Fault(_))), "{rolled_back:?}");

    let started = Instant::now();
    for task in others {
        task.await.unwrap().unwrap().unwrap();
    }
    let mut tail = LogTail::new(Arc::clone(&other.store), 0);
    let mut positions = Vec::new();
    while positions.len() < OTHERS {
        let batch = tokio::time::timeout(Duration::from_secs(10), tail.next_batch())
            .await
            .unwrap()
            .unwrap();
        positions.extend(batch.iter().map(|e| e.global_position));
    }
    assert_eq!(positions, (1..=OTHERS as u64).collect::<Vec<_>>());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "readers stalled for {:?}",
        started.elapsed()
    );
    assert_eq!(
        other
            .store
            .stream_version(&StreamId::new("held").unwrap())
            .await
            .unwrap(),
        0
    );
}

async fn a_tail_wakes_on_append(db: TestDb) {
    // Proves a caught-up tail is woken by an append rather than waiting out its poll interval.
    let s = db.open_log(None).await;
    let mut tail = LogTail::new(Arc::clone(&s.store), 0).with_poll_interval(Duration::from_secs(30));
    let waiter = tokio::spawn(async move {
        let started = Instant::now();
        let batch = tail.next_batch().await.unwrap();
        (batch.len(), started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    must_append(&s.store, request(&stream("order"), 0, 2)).await;
    let (count, waited) = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(count, 2);
    assert!(waited < Duration::from_secs(5), "woke after {waited:?}");
}

/// Appends a small log of three streams, two of them in one batch, with
/// command ids and full metadata, as the engine would.
async fn append_a_small_log(store: &dyn EventStore) {
    let (a, b, c) = (stream("order"), stream("saga"), stream("account"));
    let mut first = request(&a, 0, 2);
    first.command_id = Some(Uuid::new_v4());
    first.events[0].metadata = EventMetadata {
        correlation_id: Some(Uuid::new_v4()),
        causation_id: Some(Uuid::new_v4()),
        who: Some("user:42".into()),
        source: Some("http".into()),
        trace: Some(TraceContext {
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            tracestate: None,
        }),
    };
    let results = store
        .append_batch(vec![first, request(&b, 0, 1), request(&c, 0, 3)])
        .await
        .unwrap();
    assert!(results.iter().all(Result::is_ok));
    let mut later = request(&a, 2, 1);
    later.command_id = Some(Uuid::new_v4());
    append(store, later).await.unwrap().unwrap();
}

async fn whole_chain(store: &dyn EventStore) -> Vec<ChainedEvent> {
    let mut all = Vec::new();
    loop {
        let after = all.last().map_or(0, |c: &ChainedEvent| c.event.global_position);
        let page = store.read_chained(after, READ_PAGE_MAX).await.unwrap();
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

fn violations_in(log: &[ChainedEvent]) -> Vec<ChainViolation> {
    let mut verifier = ChainVerifier::new();
    log.iter().flat_map(|c| verifier.check(c)).collect()
}

async fn appends_are_hash_chained_and_verify(db: TestDb) {
    // Proves every append stores hashes that the verifier recomputes from the
    // events as read back, on this backend's JSON and time storage.
    let s = db.open_log(None).await;
    append_a_small_log(s.store.as_ref()).await;
    let log = whole_chain(s.store.as_ref()).await;
    assert_eq!(log.len(), 7);
    assert!(log.iter().all(|c| c.stream_hash.is_some() && c.log_hash.is_some()));
    assert_eq!(violations_in(&log), vec![]);
    let read = s.store.read_all(0, READ_PAGE_MAX).await.unwrap();
    let chained: Vec<_> = log.into_iter().map(|c| c.event).collect();
    assert_eq!(chained, read, "read_chained and read_all disagree on the events");
}

async fn a_modified_event_breaks_the_chain(db: TestDb) {
    // Proves an edit made behind the store's back (trigger disabled) is found.
    let s = db.open(None).await;
    append_a_small_log(s.store.as_ref()).await;
    let (disable, forge) = match s.raw {
        common::Raw::Postgres(_) => (
            "ALTER TABLE events DISABLE TRIGGER events_append_only",
            r#"UPDATE events SET payload = '{"n": 2, "amount": "9999.00"}'::jsonb WHERE global_position = 2"#,
        ),
        common::Raw::Sqlite(_) => (
            "DROP TRIGGER events_no_update",
            r#"UPDATE events SET payload = '{"n": 2, "amount": "9999.00"}' WHERE global_position = 2"#,
        ),
    };
    s.raw.execute(disable).await.unwrap();
    assert_eq!(s.raw.execute(forge).await.unwrap(), 1);
    let found = violations_in(&whole_chain(s.store.as_ref()).await);
    assert!(
        matches!(
            found.as_slice(),
            [ChainViolation::StreamHashMismatch { position: 2, .. }]
        ),
        "{found:?}"
    );
}

/// A second, empty database of the same backend as `db`.
async fn another_like(db: &TestDb) -> TestDb {
    match db {
        TestDb::Postgres { .. } => TestDb::postgres("import target").await.unwrap(),
        TestDb::Sqlite { .. } => TestDb::sqlite(),
        TestDb::Memory { .. } => TestDb::memory(),
    }
}

async fn a_log_imports_verbatim_and_still_verifies(db: TestDb) {
    // Proves an exported log keeps ids, versions, positions, times and hashes
    // in another store, whose command dedup still answers retried commands.
    let source = db.open_log(None).await;
    append_a_small_log(source.store.as_ref()).await;
    let exported = whole_chain(source.store.as_ref()).await;
    let target_db = another_like(&db).await;
    let target = target_db.open_log(None).await;
    // Split where a command's events are not cut in two.
    target.store.import_chained(exported[..3].to_vec()).await.unwrap();
    target.store.import_chained(exported[3..].to_vec()).await.unwrap();
    let imported = whole_chain(target.store.as_ref()).await;
    assert_eq!(imported, exported);
    assert_eq!(violations_in(&imported), vec![]);
    assert_eq!(target.store.head_position().await.unwrap(), 7);

    let first = &exported[0].event;
    let retried = AppendRequest {
        stream_id: first.stream_id.clone(),
        expected_version: 0,
        command_id: first.command_id,
        events: vec![event(1)],
        linked: false,
    };
    let answer = append(target.store.as_ref(), retried).await.unwrap().unwrap();
    assert!(answer.deduplicated, "the imported command record answers a retry");
    assert_eq!((answer.first_position, answer.last_position), (1, 2));

    // Appends after an import continue both chains.
    append(target.store.as_ref(), request(&first.stream_id, 3, 1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(violations_in(&whole_chain(target.store.as_ref()).await), vec![]);
}

async fn an_import_that_does_not_continue_the_log_writes_nothing(db: TestDb) {
    // Proves import refuses a file that skips positions or starts mid-log.
    let source = db.open_log(None).await;
    append_a_small_log(source.store.as_ref()).await;
    let exported = whole_chain(source.store.as_ref()).await;
    let target_db = another_like(&db).await;
    let target = target_db.open_log(None).await;
    let error = target.store.import_chained(exported[1..].to_vec()).await.unwrap_err();
    assert!(error.to_string().contains("continues at 1"), "{error}");
    let mut gapped = exported.clone();
    gapped.remove(4);
    let error = target.store.import_chained(gapped).await.unwrap_err();
    assert!(error.to_string().contains("continues at 5"), "{error}");
    assert_eq!(target.store.head_position().await.unwrap(), 0);
}

async fn group_commit_merges_concurrent_appends_and_isolates_conflicts(db: TestDb) {
    // Proves appends queued behind a slow commit go to the database together,
    // that each still gets its own answer, and that a stale one among them
    // fails alone.
    const CALLERS: usize = 64;
    let commits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&commits);
    let hook: BeforeCommitHook = Arc::new(move |_written| {
        let first = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
        async move {
            if first {
                // Holds the first transaction open while the others queue up.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(())
        }
        .boxed()
    });
    let db = db.with_group_commit();
    let s = db.open_log(Some(hook)).await;
    let existing = stream("existing");
    must_append(&s.store, request(&existing, 0, 1)).await;
    commits.store(0, std::sync::atomic::Ordering::SeqCst);

    let mut tasks = Vec::new();
    for i in 0..CALLERS {
        let store = Arc::clone(&s.store);
        // Caller 7 believes `existing` is new: the one stale request.
        let req = if i == 7 {
            request(&existing, 0, 1)
        } else {
            request(&stream(&format!("caller{i}")), 0, 2)
        };
        tasks.push(tokio::spawn(async move { append(store.as_ref(), req).await }));
    }
    let mut positions = HashSet::new();
    for (i, task) in tasks.into_iter().enumerate() {
        let answer = task.await.unwrap().unwrap();
        if i == 7 {
            let conflict = answer.unwrap_err();
            assert_eq!((conflict.expected, conflict.actual), (0, 1));
        } else {
            let appended = answer.unwrap();
            assert_eq!((appended.first_version, appended.last_version), (1, 2));
            assert!(positions.insert(appended.first_position));
        }
    }
    let transactions = commits.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        transactions < CALLERS / 4,
        "{CALLERS} concurrent appends took {transactions} transactions"
    );
    let head = s.store.head_position().await.unwrap();
    assert_eq!(head, 1 + 2 * (CALLERS as u64 - 1));
    assert_eq!(violations_in(&whole_chain(s.store.as_ref()).await), vec![]);
}
