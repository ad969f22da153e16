//! Runs a follower of the whole log only while this process leads its role.

use std::future::Future;

use tokio::sync::watch;

use super::view::ClusterView;

/// Runs `task` while this process holds `role`'s lease: started when the
/// lease is taken, told to stop (its receiver turns true) and awaited when
/// the lease is lost, started afresh (from its checkpoint) when taken again.
/// Returns at `shutdown`, or when the task ends on its own (a poison event:
/// it stays stopped, as it would standalone, and says why in its health).
/// A standalone process leads every role: the task runs once, until shutdown.
pub async fn lead<F, Fut>(view: ClusterView, role: &str, mut shutdown: watch::Receiver<bool>, mut task: F)
where
    F: FnMut(watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()>,
{
    if !view.is_clustered() {
        return task(shutdown).await;
    }
    let mut ownership = view.subscribe();
    loop {
        while !view.leads(role) {
            tokio::select! {
                _ = shutdown.changed() => return,
                changed = ownership.changed() => if changed.is_err() { return },
            }
        }
        tracing::info!(role, "leading: starting from the checkpoint");
        let (stop, stopped) = watch::channel(false);
        let run = task(stopped);
        tokio::pin!(run);
        let mut open = true;
        loop {
            tokio::select! {
                () = &mut run => return,
                _ = shutdown.changed() => {
                    let _ = stop.send(true);
                    return run.await;
                }
                changed = ownership.changed(), if open => {
                    // A closed watch (the membership stopped) never changes again.
                    open = changed.is_ok();
                    if open && !view.leads(role) {
                        tracing::info!(role, "no longer leading: stopping");
                        let _ = stop.send(true);
                        run.await;
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;
    use crate::cluster::{Ownership, Partitioning};

    #[tokio::test(start_paused = true)]
    async fn the_task_runs_only_while_the_role_is_held_and_restarts_when_it_comes_back() {
        let (tx, rx) = watch::channel(Ownership::nothing());
        let view = ClusterView::new(Partitioning::new(4), rx);
        let (shutdown_tx, shutdown) = watch::channel(false);
        let starts = Arc::new(AtomicUsize::new(0));
        let running = Arc::new(AtomicUsize::new(0));
        let (s, r) = (Arc::clone(&starts), Arc::clone(&running));
        let leader = tokio::spawn(lead(view, "projection.orders", shutdown, move |mut stop| {
            s.fetch_add(1, Ordering::SeqCst);
            let r = Arc::clone(&r);
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                let _ = stop.changed().await;
                r.fetch_sub(1, Ordering::SeqCst);
            }
        }));
        let leading = |yes: bool| {
            let roles = if yes {
                BTreeSet::from(["projection.orders".to_owned()])
            } else {
                BTreeSet::new()
            };
            Ownership::held(BTreeSet::new(), roles, Instant::now() + Duration::from_secs(60))
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(starts.load(Ordering::SeqCst), 0, "started without the role");
        tx.send(leading(true)).unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!((starts.load(Ordering::SeqCst), running.load(Ordering::SeqCst)), (1, 1));
        tx.send(leading(false)).unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(running.load(Ordering::SeqCst), 0, "still running after the role went");
        tx.send(leading(true)).unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!((starts.load(Ordering::SeqCst), running.load(Ordering::SeqCst)), (2, 1));
        shutdown_tx.send(true).unwrap();
        leader.await.unwrap();
        assert_eq!(running.load(Ordering::SeqCst), 0);
    }
}
