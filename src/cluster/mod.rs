//! Scale-out (issue 13, ADR 0003): several engine processes on one
//! PostgreSQL, each piece of work with one owner at a time. The work is split
//! into a fixed number of partitions by user id (a user's sagas, resting
//! orders and matching) plus one leader role per follower of the whole log
//! (the orders projection, each publisher). Ownership is a lease in
//! PostgreSQL with a fencing token, renewed every heartbeat; a process that
//! dies loses its leases within the lease time and the survivors take them
//! over. No consensus of our own: the database's row locks and clock decide.
//!
//! On SQLite, or with `ORDER_ENGINE_CLUSTER=off`, a process is the whole
//! cluster: `ClusterView::standalone` owns everything.

mod fence;
mod gauges;
mod lead;
mod leases;
mod membership;
mod partition;
mod report;
mod view;

pub use fence::FencedStore;
pub use gauges::{ClusterGauges, CLAIM_AGE_SECONDS, LEADER, MEMBERS, PARTITIONS_OWNED};
pub use lead::lead;
pub use leases::{LeaseRow, Leases, MemberRow};
pub use membership::{Cluster, ClusterError, ClusterStatus, HeldLease, MembershipConfig};
pub use partition::{
    plan_round, work_items, Partition, Partitioning, RoundPlan, WorkItem, PARTITIONS_MAX, PARTITIONS_MIN,
};
pub use report::render_status;
pub use view::{ClusterView, Ownership};
