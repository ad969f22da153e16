//! PostgreSQL only: appends by one process wake tails in another through
//! LISTEN/NOTIFY, well before their poll interval.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestDb;
use order_engine::events::{EventMetadata, NewEvent, StreamId};
use order_engine::projections::LogTail;
use order_engine::store::{append, AppendRequest};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_in_one_process_wakes_a_tail_in_another() {
    // Proves cross-process wake-up: the tail's 30 s poll interval is never waited out.
    let Some(db) = TestDb::postgres("postgres_notify::an_append_in_one_process_wakes_a_tail_in_another").await else {
        return;
    };
    let (writer, reader) = (db.open(None).await, db.open(None).await);
    let mut tail = LogTail::new(Arc::clone(&reader.store), 0).with_poll_interval(Duration::from_secs(30));
    // Let the reader's listener subscribe before the append it must hear about.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waiter = tokio::spawn(async move {
        let started = Instant::now();
        let batch = tail.next_batch().await.unwrap();
        (batch.len(), started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let request = AppendRequest {
        stream_id: StreamId::new(format!("order-{}", Uuid::new_v4())).unwrap(),
        expected_version: 0,
        command_id: None,
        events: vec![NewEvent {
            event_id: Uuid::new_v4(),
            event_type: "Tested".into(),
            schema_version: 1,
            payload: serde_json::json!({}).into(),
            metadata: EventMetadata::default(),
        }],
        linked: false,
    };
    append(writer.store.as_ref(), request).await.unwrap().unwrap();
    let (count, waited) = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(count, 1);
    assert!(
        waited < Duration::from_secs(5),
        "the tail waited {waited:?}: NOTIFY did not reach it"
    );
}
