//! `order-engine export` / `import`: a log written by a real engine on SQLite
//! moves to PostgreSQL unchanged (ids, versions, positions, hashes) and
//! verifies there; import refuses what would not continue the log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Cursor;
use std::process::Command;

use common::ops::{live_log, ops_db};
use common::TestDb;
use indicatif::ProgressBar;
use order_engine::ops::{self, ExportRange, VerifyOptions};
use order_engine::store::{ChainedEvent, EventStore};

async fn whole_log(store: &dyn EventStore) -> Vec<ChainedEvent> {
    let mut events = Vec::new();
    loop {
        let page = store.read_chained(events.len() as u64, 1000).await.unwrap();
        if page.is_empty() {
            return events;
        }
        events.extend(page);
    }
}

async fn export_all(store: &dyn EventStore, range: ExportRange) -> Vec<u8> {
    let mut out = Vec::new();
    ops::export(store, range, &mut out, &ProgressBar::hidden())
        .await
        .unwrap();
    out
}

async fn import(store: &dyn EventStore, bytes: &[u8]) -> Result<u64, String> {
    ops::import(store, &mut Cursor::new(bytes), &ProgressBar::hidden())
        .await
        .map_err(|e| e.to_string())
}

#[actix_rt::test]
async fn a_sqlite_log_moves_to_postgres_unchanged_and_verifies_there() {
    // Proves export → import keeps every field and both hashes (the two logs are equal),
    // the imported log verifies on PostgreSQL, and a file continuing the head is accepted
    // while one that does not is refused with the line named.
    let Some(target) = TestDb::postgres("a_sqlite_log_moves_to_postgres_unchanged_and_verifies_there").await else {
        return;
    };
    let source = TestDb::sqlite();
    let log = live_log(&source).await;
    let t = log.stop_projection().await;
    let head = t.store.store.head_position().await.unwrap();
    // Near the middle, between two streams: a command's events on one stream
    // are imported in one batch, so a half may not end inside them.
    let events = t.store.store.read_all(0, head as usize + 1).await.unwrap();
    let split = (1..(head / 2).min(events.len() as u64))
        .rev()
        .find(|p| events[*p as usize - 1].stream_id != events[*p as usize].stream_id)
        .unwrap();
    let first = export_all(
        t.store.store.as_ref(),
        ExportRange {
            from: None,
            to: Some(split),
        },
    )
    .await;
    let rest = export_all(
        t.store.store.as_ref(),
        ExportRange {
            from: Some(split + 1),
            to: None,
        },
    )
    .await;
    assert_eq!(first.iter().filter(|b| **b == b'\n').count() as u64, split);

    let (store, db) = ops_db(&target).await;
    // The second half first: an empty store takes only a file starting at position 1.
    let refused = import(store.as_ref(), &rest).await.unwrap_err();
    assert!(
        refused.contains("line 1") && refused.contains("needs position 1"),
        "{refused}"
    );
    assert_eq!(import(store.as_ref(), &first).await.unwrap(), split);
    // The first half again does not continue the head.
    let refused = import(store.as_ref(), &first).await.unwrap_err();
    assert!(refused.contains("not empty"), "{refused}");
    assert_eq!(import(store.as_ref(), &rest).await.unwrap(), head - split);

    assert_eq!(whole_log(store.as_ref()).await, whole_log(t.store.store.as_ref()).await);
    let report = ops::verify(store, &db, &VerifyOptions::default(), &ProgressBar::hidden())
        .await
        .unwrap();
    assert!(report.is_healthy(), "{:#?}", report.violations);
    assert_eq!(report.chain.as_ref().map(|c| c.unhashed_prefix), Some(0));
}

#[actix_rt::test]
async fn a_bad_line_is_named_by_its_number() {
    // Proves import stops at an unreadable line and names it, after nothing or whole batches.
    let db = TestDb::sqlite();
    let (store, _) = ops_db(&db).await;
    let error = import(store.as_ref(), b"\n\n{\"global_position\": 1, \"stream_id\"\n")
        .await
        .unwrap_err();
    assert!(error.starts_with("line 3: "), "{error}");
    assert_eq!(store.head_position().await.unwrap(), 0);
}

#[actix_rt::test]
async fn the_commands_move_a_log_through_a_file() {
    // Proves the binaries: export --output from SQLite, import --input into PostgreSQL,
    // then verify there exits 0.
    let Some(target) = TestDb::postgres("the_commands_move_a_log_through_a_file").await else {
        return;
    };
    let source = TestDb::sqlite();
    let log = live_log(&source).await;
    let t = log.stop_projection().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("log.jsonl");
    let run = |url: &str, args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_order-engine"))
            .args(args)
            .env("DATABASE_URL", url)
            .env_remove("AMQP_URL")
            .env("RUST_LOG", "error")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let path = file.to_str().unwrap();
    run(source.url(), &["export", "--output", path]);
    let head = t.store.store.head_position().await.unwrap();
    let imported = run(target.url(), &["import", "--input", path]);
    assert!(imported.contains(&format!("imported {head} events")), "{imported}");
    let verified = run(target.url(), &["verify"]);
    assert!(verified.contains("no violations"), "{verified}");
}
