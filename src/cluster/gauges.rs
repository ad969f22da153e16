//! The cluster's gauges in `/metrics`, read from the membership's status at
//! scrape time. Labels come from fixed sets (the leader roles, `oldest` and
//! `newest`), never from partitions or node names.

use chrono::Utc;
use prometheus::{GaugeVec, IntGauge, IntGaugeVec, Opts, Registry};

use super::membership::ClusterStatus;
use super::partition::WorkItem;

pub const PARTITIONS_OWNED: &str = "order_engine_cluster_partitions_owned";
pub const LEADER: &str = "order_engine_cluster_leader";
pub const MEMBERS: &str = "order_engine_cluster_members";
pub const CLAIM_AGE_SECONDS: &str = "order_engine_cluster_claim_age_seconds";

pub struct ClusterGauges {
    partitions_owned: IntGauge,
    leader: IntGaugeVec,
    members: IntGauge,
    claim_age_seconds: GaugeVec,
    roles: Vec<String>,
}

impl ClusterGauges {
    pub fn register(registry: &Registry, roles: &[String]) -> Result<Self, prometheus::Error> {
        let partitions_owned = IntGauge::new(PARTITIONS_OWNED, "Partitions this process holds the lease of.")?;
        let leader = IntGaugeVec::new(
            Opts::new(
                LEADER,
                "1 for each follower of the log (by checkpoint) this process leads.",
            ),
            &["role"],
        )?;
        let members = IntGauge::new(MEMBERS, "Live members of the cluster as of the last heartbeat.")?;
        let claim_age_seconds = GaugeVec::new(
            Opts::new(
                CLAIM_AGE_SECONDS,
                "Seconds since this process took its oldest and its newest lease.",
            ),
            &["claim"],
        )?;
        registry.register(Box::new(partitions_owned.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        registry.register(Box::new(members.clone()))?;
        registry.register(Box::new(claim_age_seconds.clone()))?;
        Ok(Self {
            partitions_owned,
            leader,
            members,
            claim_age_seconds,
            roles: roles.to_vec(),
        })
    }

    pub fn observe(&self, status: &ClusterStatus) {
        let partitions = status
            .leases
            .keys()
            .filter(|name| matches!(WorkItem::from_lease_name(name), Some(WorkItem::Partition(_))))
            .count();
        self.partitions_owned.set(i64::try_from(partitions).unwrap_or(i64::MAX));
        for role in &self.roles {
            let held = status.leases.contains_key(&WorkItem::Leader(role.clone()).lease_name());
            self.leader.with_label_values(&[role]).set(i64::from(held));
        }
        self.members
            .set(i64::try_from(status.members.len()).unwrap_or(i64::MAX));
        let now = Utc::now();
        let ages: Vec<f64> = status.leases.values().map(|lease| lease.held_seconds(now)).collect();
        let oldest = ages.iter().copied().fold(0.0, f64::max);
        let newest = ages.iter().copied().reduce(f64::min).unwrap_or(0.0);
        self.claim_age_seconds.with_label_values(&["oldest"]).set(oldest);
        self.claim_age_seconds.with_label_values(&["newest"]).set(newest);
    }
}
