//! Group commit: appends that arrive together share one transaction.
//!
//! Every append to the log serialises on the log lock and pays one COMMIT
//! (one fsync), so a store fed one small append at a time by many actors is
//! bound by commit latency, not by the database's insert rate. This decorator
//! queues appends and has one writer hand everything queued so far to the
//! inner store as a single batch. Each request keeps its own expected-version
//! check inside that batch (see `plan_batch`), so one stream's conflict still
//! fails only that stream, and two requests for one stream are ordered as
//! they arrived.
//!
//! Reads pass straight through.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::error::validate_batch;
use super::{AppendRequest, Appended, Conflict, EventStore, StoreError, BATCH_STREAMS_MAX};

/// Appends waiting for the writer; callers wait for room beyond this, which is
/// how a slow database pushes back on the actors.
pub const GROUP_COMMIT_QUEUE_MAX: usize = 4_096;

type Reply = oneshot::Sender<Result<Vec<Result<Appended, Conflict>>, StoreError>>;

struct Job {
    requests: Vec<AppendRequest>,
    reply: Reply,
}

/// An [`EventStore`] whose appends are merged into shared transactions.
pub struct GroupCommitStore {
    inner: Arc<dyn EventStore>,
    queue: mpsc::Sender<Job>,
    writer: tokio::task::JoinHandle<()>,
}

impl Drop for GroupCommitStore {
    fn drop(&mut self) {
        self.writer.abort();
    }
}

impl GroupCommitStore {
    /// Starts the writer task; needs a Tokio runtime.
    pub fn new(inner: Arc<dyn EventStore>) -> Self {
        let (queue, jobs) = mpsc::channel(GROUP_COMMIT_QUEUE_MAX);
        let writer = tokio::spawn(write_groups(Arc::clone(&inner), jobs));
        Self { inner, queue, writer }
    }
}

/// Takes every job queued so far (up to the batch limit), appends them in one
/// batch, and answers each with its own slice of the results.
async fn write_groups(inner: Arc<dyn EventStore>, mut jobs: mpsc::Receiver<Job>) {
    let mut group: Vec<Job> = Vec::new();
    while let Some(first) = jobs.recv().await {
        let mut streams = first.requests.len();
        group.push(first);
        while streams < BATCH_STREAMS_MAX {
            match jobs.try_recv() {
                Ok(job) if streams + job.requests.len() <= BATCH_STREAMS_MAX => {
                    streams += job.requests.len();
                    group.push(job);
                }
                Ok(job) => {
                    // Too big to join this group: it leads the next one.
                    commit(inner.as_ref(), std::mem::take(&mut group)).await;
                    streams = job.requests.len();
                    group.push(job);
                }
                Err(_) => break,
            }
        }
        commit(inner.as_ref(), std::mem::take(&mut group)).await;
    }
}

async fn commit(inner: &dyn EventStore, mut group: Vec<Job>) {
    if group.len() == 1 {
        for job in group {
            append_alone(inner, job).await;
        }
        return;
    }
    let sizes: Vec<usize> = group.iter().map(|job| job.requests.len()).collect();
    let merged: Vec<AppendRequest> = group.iter().flat_map(|job| job.requests.iter().cloned()).collect();
    let replies = group.iter_mut().map(|job| &mut job.reply);
    let Some(appended) = unless_abandoned(replies, inner.append_batch(merged)).await else {
        return;
    };
    match appended {
        Ok(results) if results.len() == sizes.iter().sum::<usize>() => {
            let mut results = results.into_iter();
            for (job, size) in group.into_iter().zip(sizes) {
                // A caller that gave up (dropped its future) no longer listens.
                let _ = job.reply.send(Ok(results.by_ref().take(size).collect()));
            }
        }
        Ok(_) => {
            for job in group {
                let _ = job.reply.send(Err(StoreError::Internal(
                    "append_batch returned the wrong number of results",
                )));
            }
        }
        Err(error) => {
            // StoreError is not Clone, and one caller's failure should be its
            // own: each job is tried alone and gets its own answer.
            tracing::debug!(%error, jobs = group.len(), "group append failed; appending its jobs one by one");
            for job in group {
                append_alone(inner, job).await;
            }
        }
    }
}

/// One job's append in a transaction of its own, answered to its caller.
async fn append_alone(inner: &dyn EventStore, job: Job) {
    let Job { requests, mut reply } = job;
    if let Some(result) = unless_abandoned([&mut reply], inner.append_batch(requests)).await {
        let _ = reply.send(result);
    }
}

/// Runs `append` unless every caller waiting in `replies` gives up first (its
/// timeout passed): then the append is dropped and its transaction rolls
/// back, as a caller's own append would without group commit, so one commit
/// that hangs with nobody waiting for it does not hold up every append queued
/// behind it. None when it was dropped.
async fn unless_abandoned<'a, T>(
    replies: impl IntoIterator<Item = &'a mut Reply>,
    append: impl std::future::Future<Output = T>,
) -> Option<T> {
    let abandoned = futures_util::future::join_all(replies.into_iter().map(|reply| reply.closed()));
    tokio::select! {
        // In order, not at random: a commit that finished is answered even if
        // its callers have just gone, and a seeded simulation replays exactly.
        biased;
        result = append => Some(result),
        _ = abandoned => None,
    }
}

/// How long an append may wait for the writer before the caller hears it is
/// unavailable: the writer is stuck only if the database is.
const REPLY_TIMEOUT: Duration = Duration::from_secs(120);

crate::store_wrapper!(GroupCommitStore {
    async fn append_batch(&self, requests: Vec<AppendRequest>) -> Result<Vec<Result<Appended, Conflict>>, StoreError> {
        // Refused here, alone, so a malformed request cannot fail a group.
        validate_batch(&requests)?;
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job { requests, reply })
            .await
            .map_err(|_| StoreError::Internal("the group-commit writer has stopped"))?;
        match tokio::time::timeout(REPLY_TIMEOUT, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(StoreError::Internal("the group-commit writer dropped an append")),
            Err(_) => Err(StoreError::Internal("the group-commit writer did not answer in time")),
        }
    }

    async fn save_checkpoint(&self, name: &str, position: u64) -> Result<(), StoreError> {
        self.inner.save_checkpoint(name, position).await
    }
});
