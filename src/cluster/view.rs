//! What this process owns right now, as the membership task last saw it:
//! the one thing the reactor, the sagas and the log's followers consult
//! before acting. Cheap to read (a watch) and to clone.

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

use super::partition::{Partition, Partitioning};

/// The work this process holds leases for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ownership {
    /// None: not clustered (SQLite, or clustering off); every partition and
    /// every role is this process's, for good.
    held: Option<Held>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    partitions: Arc<BTreeSet<Partition>>,
    roles: Arc<BTreeSet<String>>,
    /// Past this instant (the runtime's monotonic clock, which runs on while
    /// the process is stopped) the leases may have been taken over, whatever
    /// the membership task has or has not noticed yet.
    valid_until: Instant,
}

impl Ownership {
    /// Everything, for good: a process that is the whole cluster.
    pub fn everything() -> Self {
        Self { held: None }
    }

    /// Nothing: not joined yet, or the leases lapsed.
    pub fn nothing() -> Self {
        Self::held(BTreeSet::new(), BTreeSet::new(), Instant::now())
    }

    pub fn held(partitions: BTreeSet<Partition>, roles: BTreeSet<String>, valid_until: Instant) -> Self {
        Self {
            held: Some(Held {
                partitions: Arc::new(partitions),
                roles: Arc::new(roles),
                valid_until,
            }),
        }
    }

    pub fn is_clustered(&self) -> bool {
        self.held.is_some()
    }

    /// The partitions held (None when not clustered: all of them).
    pub fn partitions(&self) -> Option<&BTreeSet<Partition>> {
        self.held.as_ref().map(|h| h.partitions.as_ref())
    }

    pub fn roles(&self) -> Option<&BTreeSet<String>> {
        self.held.as_ref().map(|h| h.roles.as_ref())
    }

    /// Whether the leases were renewed recently enough to still be ours.
    pub fn is_valid(&self, now: Instant) -> bool {
        self.held.as_ref().is_none_or(|h| now < h.valid_until)
    }

    pub fn owns(&self, partition: Partition, now: Instant) -> bool {
        match &self.held {
            None => true,
            Some(h) => now < h.valid_until && h.partitions.contains(&partition),
        }
    }

    pub fn leads(&self, role: &str, now: Instant) -> bool {
        match &self.held {
            None => true,
            Some(h) => now < h.valid_until && h.roles.contains(role),
        }
    }

    /// Same partitions and roles (a renewal changes only the deadline).
    pub fn same_work(&self, other: &Ownership) -> bool {
        match (&self.held, &other.held) {
            (None, None) => true,
            (Some(a), Some(b)) => a.partitions == b.partitions && a.roles == b.roles,
            _ => false,
        }
    }
}

/// A process's view of its ownership, shared by everything that acts on it.
#[derive(Debug, Clone)]
pub struct ClusterView {
    partitioning: Partitioning,
    ownership: watch::Receiver<Ownership>,
}

impl ClusterView {
    /// A process that is the whole cluster: owns everything and never changes.
    pub fn standalone(partitioning: Partitioning) -> Self {
        let (tx, ownership) = watch::channel(Ownership::everything());
        // The receiver keeps the last value after the sender goes.
        drop(tx);
        Self {
            partitioning,
            ownership,
        }
    }

    pub(crate) fn new(partitioning: Partitioning, ownership: watch::Receiver<Ownership>) -> Self {
        Self {
            partitioning,
            ownership,
        }
    }

    pub fn partitioning(&self) -> Partitioning {
        self.partitioning
    }

    pub fn current(&self) -> Ownership {
        self.ownership.borrow().clone()
    }

    pub fn is_clustered(&self) -> bool {
        self.ownership.borrow().is_clustered()
    }

    pub fn owns_user(&self, user_id: Uuid) -> bool {
        self.ownership
            .borrow()
            .owns(self.partitioning.of_user(user_id), Instant::now())
    }

    pub fn leads(&self, role: &str) -> bool {
        self.ownership.borrow().leads(role, Instant::now())
    }

    /// Whether the leases are still ours at all; a process stopped past its
    /// lease time finds this false before the membership task runs again.
    pub fn is_valid(&self) -> bool {
        self.ownership.borrow().is_valid(Instant::now())
    }

    /// A receiver to wait on for changes.
    pub fn subscribe(&self) -> watch::Receiver<Ownership> {
        self.ownership.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_standalone_process_owns_every_user_and_every_role() {
        let view = ClusterView::standalone(Partitioning::new(16));
        assert!(view.owns_user(Uuid::new_v4()));
        assert!(view.leads("projection.orders"));
        assert!(view.is_valid());
    }

    #[tokio::test(start_paused = true)]
    async fn ownership_lapses_at_its_deadline_whatever_the_membership_task_did() {
        let now = Instant::now();
        let ownership = Ownership::held(
            BTreeSet::from([Partition(3)]),
            BTreeSet::from(["projection.orders".to_owned()]),
            now + Duration::from_secs(5),
        );
        assert!(ownership.owns(Partition(3), now));
        assert!(!ownership.owns(Partition(4), now));
        assert!(ownership.leads("projection.orders", now));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!ownership.owns(Partition(3), Instant::now()));
        assert!(!ownership.leads("projection.orders", Instant::now()));
        assert!(!ownership.is_valid(Instant::now()));
    }
}
