//! The membership task: every heartbeat it renews this process's membership
//! and leases, reads who else is alive, works out its share (the same
//! round-robin every member computes), gives up what is no longer its share,
//! takes what is free, and publishes the result to the `ClusterView`.
//!
//! Giving up comes before taking: a process first publishes that it no
//! longer owns a partition (its reactor restarts without it), then expires
//! the lease. A new owner may still overlap the old one briefly (a process
//! stopped mid-step); every write carries its stream's expected version, so
//! the overlap costs a conflict, never money (ADR 0003).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

use super::leases::{Heartbeat, Leases, Me};
use super::partition::{plan_round, work_items, Partitioning, WorkItem};
use super::view::{ClusterView, Ownership};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot join the cluster: the database refused or could not be reached: {0}")]
    Store(#[from] StoreError),
    #[error(
        "cannot join the cluster with {mine} partitions: live member {node} runs with {theirs}; \
         every member of one database must use the same ORDER_ENGINE_PARTITIONS (stop them all to change it)"
    )]
    PartitionsDisagree { mine: u16, node: String, theirs: i32 },
}

/// How this process is doing in the cluster, for `/health/ready` and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterStatus {
    pub node: String,
    pub incarnation: Uuid,
    /// Live members as of the last heartbeat, this one included.
    pub members: Vec<String>,
    /// Each lease held: its name, fencing token, and when this process took it.
    pub leases: BTreeMap<String, HeldLease>,
    pub last_beat: Option<DateTime<Utc>>,
    /// Why the last heartbeat failed, when it did.
    pub last_error: Option<String>,
    /// A newer process started under this node name; this one acts no more.
    pub replaced: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HeldLease {
    pub token: i64,
    pub acquired: DateTime<Utc>,
}

impl HeldLease {
    /// Seconds this process has held the lease, as of `now` (for health and metrics).
    pub fn held_seconds(&self, now: DateTime<Utc>) -> f64 {
        (now - self.acquired).num_milliseconds().max(0) as f64 / 1000.0
    }
}

/// What the membership task needs to know.
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    pub node: String,
    pub partitioning: Partitioning,
    /// The followers that run once in the cluster; the same list on every member.
    pub roles: Vec<String>,
    pub lease_ttl: Duration,
    pub heartbeat: Duration,
}

/// A running membership: the view the engine reads, and the task behind it.
pub struct Cluster {
    view: ClusterView,
    status: Arc<Mutex<ClusterStatus>>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
    leases: Arc<Leases>,
    me: Me,
    gauges: Mutex<Option<super::gauges::ClusterGauges>>,
    roles: Vec<String>,
}

impl Cluster {
    /// Joins: one heartbeat (taking over an older incarnation of this node)
    /// and one round of claims before returning, so a lone process owns its
    /// work as soon as it starts; then the task keeps it up.
    pub async fn join(pool: PgPool, config: MembershipConfig) -> Result<Self, ClusterError> {
        let me = Me {
            node: config.node.clone(),
            incarnation: Uuid::new_v4(),
            partitions: config.partitioning.count(),
            version: env!("CARGO_PKG_VERSION"),
        };
        let leases = Arc::new(Leases::new(pool, config.lease_ttl));
        if let Some((node, theirs)) = leases.disagreeing(&me).await?.into_iter().next() {
            return Err(ClusterError::PartitionsDisagree {
                mine: me.partitions,
                node,
                theirs,
            });
        }
        let (tx, rx) = watch::channel(Ownership::nothing());
        let status = Arc::new(Mutex::new(ClusterStatus {
            node: me.node.clone(),
            incarnation: me.incarnation,
            ..ClusterStatus::default()
        }));
        let mut task = Task {
            leases: Arc::clone(&leases),
            me: me.clone(),
            items: work_items(
                config.partitioning,
                &config.roles.iter().map(String::as_str).collect::<Vec<_>>(),
            ),
            config: config.clone(),
            tx,
            status: Arc::clone(&status),
            held: BTreeMap::new(),
            valid_until: Instant::now(),
        };
        task.round(true).await?;
        let (stop, stop_rx) = watch::channel(false);
        let handle = tokio::spawn(task.run(stop_rx));
        tracing::info!(node = %me.node, incarnation = %me.incarnation, partitions = me.partitions, "joined the cluster");
        Ok(Self {
            view: ClusterView::new(config.partitioning, rx),
            status,
            stop,
            task: Mutex::new(Some(handle)),
            leases,
            me,
            gauges: Mutex::new(None),
            roles: config.roles,
        })
    }

    pub fn view(&self) -> ClusterView {
        self.view.clone()
    }

    pub fn status(&self) -> ClusterStatus {
        self.status.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Adds the cluster's gauges to `registry` (the engine's `/metrics`).
    pub fn register_metrics(&self, registry: &prometheus::Registry) -> Result<(), prometheus::Error> {
        let gauges = super::gauges::ClusterGauges::register(registry, &self.roles)?;
        *self.gauges.lock().unwrap_or_else(PoisonError::into_inner) = Some(gauges);
        Ok(())
    }

    /// Brings the gauges up to date (at scrape time).
    pub fn observe_metrics(&self) {
        let status = self.status();
        if let Some(gauges) = self.gauges.lock().unwrap_or_else(PoisonError::into_inner).as_ref() {
            gauges.observe(&status);
        }
    }

    /// Stops the heartbeat without handing anything back, as a process that
    /// died would: its leases run out on their own (tests of the hand-over).
    #[doc(hidden)]
    pub async fn abandon(&self) {
        let _ = self.stop.send(true);
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// Stops the heartbeat and hands every lease back at once (a graceful
    /// stop: the others take the work over at their next beat, not at expiry).
    pub async fn leave(&self) {
        let _ = self.stop.send(true);
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(task) = task {
            let _ = task.await;
        }
        match self.leases.leave(&self.me).await {
            Ok(()) => {
                tracing::info!(node = %self.me.node, "left the cluster; its work moves at the others' next heartbeat")
            }
            Err(error) => {
                tracing::warn!(node = %self.me.node, %error, "could not leave the cluster; its leases expire on their own")
            }
        }
    }
}

struct Task {
    leases: Arc<Leases>,
    me: Me,
    items: Vec<WorkItem>,
    config: MembershipConfig,
    tx: watch::Sender<Ownership>,
    status: Arc<Mutex<ClusterStatus>>,
    held: BTreeMap<String, HeldLease>,
    valid_until: Instant,
}

impl Task {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut beat = tokio::time::interval(self.config.heartbeat);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        beat.tick().await;
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = beat.tick() => {}
            }
            if Instant::now() >= self.valid_until && !self.held.is_empty() {
                // Stopped or cut off past the lease time: whatever the database
                // says next, nothing may be acted on until it says so.
                tracing::warn!(node = %self.me.node, "leases lapsed before they could be renewed; acting on nothing until claimed again");
                self.held.clear();
                self.publish();
            }
            match self.round(false).await {
                Ok(Heartbeat::Alive) => {}
                Ok(Heartbeat::Replaced) => {
                    tracing::error!(
                        node = %self.me.node,
                        incarnation = %self.me.incarnation,
                        "a newer process started under this node name; this one owns nothing from now on"
                    );
                    self.held.clear();
                    self.publish();
                    self.update_status(|s| s.replaced = true);
                    return;
                }
                Err(error) => {
                    tracing::warn!(node = %self.me.node, %error, "cluster heartbeat failed; retrying at the next beat");
                    self.update_status(|s| s.last_error = Some(error.to_string()));
                }
            }
        }
    }

    async fn round(&mut self, first: bool) -> Result<Heartbeat, StoreError> {
        let started = Instant::now();
        if self.leases.beat(&self.me, first).await? == Heartbeat::Replaced {
            return Ok(Heartbeat::Replaced);
        }
        let renewed: BTreeMap<String, i64> = self.leases.renew(&self.me).await?.into_iter().collect();
        // Lost: expired or taken while this process was not looking.
        self.held.retain(|name, _| renewed.contains_key(name));
        let now = Utc::now();
        for (name, token) in &renewed {
            // A first beat's takeover hands over the previous incarnation's leases.
            self.held.entry(name.clone()).or_insert(HeldLease {
                token: *token,
                acquired: now,
            });
        }
        let members: BTreeSet<String> = self
            .leases
            .members()
            .await?
            .into_iter()
            .filter(|m| m.live)
            .map(|m| m.node)
            .collect();
        let leases: BTreeMap<WorkItem, String> = self
            .leases
            .leases()
            .await?
            .into_iter()
            .filter(|lease| lease.live)
            .filter_map(|lease| WorkItem::from_lease_name(&lease.name).map(|item| (item, lease.node)))
            .collect();
        let plan = plan_round(&self.me.node, &members, &self.items, &leases);
        if !plan.release.is_empty() {
            for item in &plan.release {
                self.held.remove(&item.lease_name());
            }
            // Published before the leases go: this process stops first.
            self.publish();
            for item in &plan.release {
                self.leases.release(&self.me, &item.lease_name()).await?;
                tracing::info!(node = %self.me.node, lease = %item.lease_name(), "handed over to rebalance");
            }
        }
        for item in &plan.acquire {
            let name = item.lease_name();
            if let Some(token) = self.leases.acquire(&self.me, &name).await? {
                tracing::info!(node = %self.me.node, lease = %name, token, "claimed");
                self.held.insert(
                    name,
                    HeldLease {
                        token,
                        acquired: Utc::now(),
                    },
                );
            }
        }
        // A tenth of the lease kept in hand for the clocks' rates and the round trip.
        self.valid_until = started + self.config.lease_ttl.mul_f64(0.9);
        self.publish();
        self.update_status(|s| {
            s.members = members.into_iter().collect();
            s.last_beat = Some(now);
            s.last_error = None;
        });
        Ok(Heartbeat::Alive)
    }

    fn publish(&mut self) {
        let mut partitions = BTreeSet::new();
        let mut roles = BTreeSet::new();
        for name in self.held.keys() {
            match WorkItem::from_lease_name(name) {
                Some(WorkItem::Partition(p)) => {
                    partitions.insert(p);
                }
                Some(WorkItem::Leader(role)) => {
                    roles.insert(role);
                }
                None => {}
            }
        }
        let ownership = Ownership::held(partitions, roles, self.valid_until);
        self.tx.send_if_modified(|current| {
            let changed = *current != ownership;
            *current = ownership;
            changed
        });
        let held = self.held.clone();
        self.update_status(|s| s.leases = held);
    }

    fn update_status(&self, f: impl FnOnce(&mut ClusterStatus)) {
        f(&mut self.status.lock().unwrap_or_else(PoisonError::into_inner));
    }
}
