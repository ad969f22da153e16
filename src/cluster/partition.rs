//! Which partition a user's work falls in, and what a member claims or gives
//! up each heartbeat. Pure: the membership task feeds it what the leases
//! table says; the table's row locks settle any race between members.

use std::collections::BTreeSet;
use std::fmt;

use uuid::Uuid;

/// The fewest and most partitions a cluster may be split into.
pub const PARTITIONS_MIN: u16 = 1;
pub const PARTITIONS_MAX: u16 = 1_024;

/// A partition index, `0..count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Partition(pub u16);

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{:03}", self.0)
    }
}

/// How the work is split: a fixed number of partitions by user id. Fixed for
/// the life of a cluster's database (members refuse to join with another
/// count): partition-scoped checkpoints and leases are named by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partitioning {
    count: u16,
}

impl Partitioning {
    /// `count` clamped to `PARTITIONS_MIN..=PARTITIONS_MAX`.
    pub fn new(count: u16) -> Self {
        Self {
            count: count.clamp(PARTITIONS_MIN, PARTITIONS_MAX),
        }
    }

    pub fn count(self) -> u16 {
        self.count
    }

    /// The user's partition. The low 64 bits of the id: random in v4 and v7
    /// ids (v7 puts its timestamp in the high bits), and stable across
    /// releases and platforms, unlike a `Hash` of the id.
    pub fn of_user(self, user_id: Uuid) -> Partition {
        let low = user_id.as_u128() as u64;
        Partition((low % u64::from(self.count)) as u16)
    }

    pub fn all(self) -> impl Iterator<Item = Partition> {
        (0..self.count).map(Partition)
    }
}

/// A piece of work one member owns at a time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WorkItem {
    /// A partition's sagas, resting orders and matching.
    Partition(Partition),
    /// A follower of the whole log that must run once in the cluster: a
    /// projection or a publisher, by its checkpoint name.
    Leader(String),
}

impl WorkItem {
    /// The lease's name in `cluster_leases`.
    pub fn lease_name(&self) -> String {
        match self {
            WorkItem::Partition(p) => format!("partition.{p}"),
            WorkItem::Leader(role) => format!("leader.{role}"),
        }
    }

    pub fn from_lease_name(name: &str) -> Option<Self> {
        if let Some(index) = name.strip_prefix("partition.p") {
            return index.parse().ok().map(|i| WorkItem::Partition(Partition(i)));
        }
        name.strip_prefix("leader.")
            .map(|role| WorkItem::Leader(role.to_owned()))
    }
}

/// Every piece of work of a cluster: the partitions, then the leader roles.
pub fn work_items(partitioning: Partitioning, roles: &[&str]) -> Vec<WorkItem> {
    partitioning
        .all()
        .map(WorkItem::Partition)
        .chain(roles.iter().map(|role| WorkItem::Leader((*role).to_owned())))
        .collect()
}

/// What one member does in one heartbeat: which of its leases to give up and
/// which free leases to try to take.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoundPlan {
    pub release: Vec<WorkItem>,
    pub acquire: Vec<WorkItem>,
}

/// Plans `me`'s round, least movement first (Akka's least-shard allocation):
/// a member keeps what it holds up to its fair share, takes free work until
/// it reaches the share, and gives up only what is above it. The share is
/// the ceiling of items per live member, or the floor while another live
/// member holds less than the floor (a newcomer): then those above the floor
/// give up one each round until it has caught up. Only a dead member's work
/// moves when one dies; only what the newcomer needs moves when one joins.
///
/// `held` maps each live lease to its holder; `members` is the live members.
pub fn plan_round(
    me: &str,
    members: &BTreeSet<String>,
    items: &[WorkItem],
    held: &std::collections::BTreeMap<WorkItem, String>,
) -> RoundPlan {
    if !members.contains(me) || members.is_empty() {
        return RoundPlan::default();
    }
    let (n, m) = (items.len(), members.len());
    let floor = n / m;
    let ceil = floor + usize::from(n % m != 0);
    let count = |node: &str| held.values().filter(|holder| holder.as_str() == node).count();
    let starved = members.iter().any(|other| other != me && count(other) < floor);
    let mine: Vec<&WorkItem> = items
        .iter()
        .filter(|item| held.get(*item).is_some_and(|h| h == me))
        .collect();
    // While another member is below the floor, take nothing past the floor
    // and give up one above it (all above the ceiling at once).
    let limit = if starved {
        floor.max(mine.len().saturating_sub(1).min(ceil))
    } else {
        ceil
    };
    let release: Vec<WorkItem> = mine.iter().skip(limit).map(|item| (*item).clone()).collect();
    let keep = mine.len() - release.len();
    let acquire = items
        .iter()
        .filter(|item| !held.contains_key(*item))
        .take(limit.saturating_sub(keep))
        .cloned()
        .collect();
    RoundPlan { release, acquire }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn members(n: usize) -> BTreeSet<String> {
        (0..n).map(|i| format!("node-{i}")).collect()
    }

    #[test]
    fn a_user_is_always_in_the_same_partition_whatever_the_platform() {
        let user: Uuid = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".parse().unwrap();
        // Pinned: a change here moves users between owners of a running cluster.
        assert_eq!(Partitioning::new(16).of_user(user), Partition(0x5b % 16));
        assert_eq!(Partitioning::new(64).of_user(user), Partition(0x5b % 64));
    }

    #[test]
    fn lease_names_round_trip() {
        for item in [
            WorkItem::Partition(Partition(7)),
            WorkItem::Leader("projection.orders".into()),
        ] {
            assert_eq!(WorkItem::from_lease_name(&item.lease_name()), Some(item));
        }
        assert_eq!(WorkItem::Partition(Partition(7)).lease_name(), "partition.p007");
    }

    /// Runs rounds of every member in turn (a release frees a lease at once,
    /// an acquire takes it if still free) until nothing changes.
    fn converge(
        members: &BTreeSet<String>,
        items: &[WorkItem],
        held: &mut BTreeMap<WorkItem, String>,
        order: &[usize],
    ) -> usize {
        let list: Vec<&String> = members.iter().collect();
        for round in 0..50 {
            let before = held.clone();
            for &i in order {
                let me = list[i % list.len()];
                let plan = plan_round(me, members, items, held);
                for item in plan.release {
                    held.remove(&item);
                }
                for item in plan.acquire {
                    held.entry(item).or_insert_with(|| me.clone());
                }
            }
            if *held == before {
                return round;
            }
        }
        panic!("no convergence in 50 rounds: {held:?}");
    }

    fn shares(members: &BTreeSet<String>, held: &BTreeMap<WorkItem, String>) -> Vec<usize> {
        members
            .iter()
            .map(|m| held.values().filter(|h| *h == m).count())
            .collect()
    }

    proptest! {
        #[test]
        fn members_converge_to_one_owner_per_item_and_shares_within_one(
            n in 1usize..8, partitions in 1u16..80, order in proptest::collection::vec(0usize..8, 1..16)
        ) {
            let all = members(n);
            let items = work_items(Partitioning::new(partitions), &["projection.orders", "amqp.orders.status"]);
            let mut held = BTreeMap::new();
            converge(&all, &items, &mut held, &order.iter().copied().chain(0..n).collect::<Vec<_>>());
            prop_assert_eq!(held.len(), items.len());
            let s = shares(&all, &held);
            prop_assert!(s.iter().max().unwrap() - s.iter().min().unwrap() <= 1, "{:?}", s);
        }

        #[test]
        fn when_a_member_dies_only_its_work_moves(n in 2usize..8, partitions in 1u16..80) {
            let all = members(n);
            let items = work_items(Partitioning::new(partitions), &["projection.orders"]);
            let mut held = BTreeMap::new();
            converge(&all, &items, &mut held, &(0..n).collect::<Vec<_>>());
            let dead = all.iter().next_back().unwrap().clone();
            let before = held.clone();
            held.retain(|_, holder| *holder != dead);
            let survivors: BTreeSet<String> = all.iter().filter(|m| **m != dead).cloned().collect();
            converge(&survivors, &items, &mut held, &(0..n).collect::<Vec<_>>());
            prop_assert_eq!(held.len(), items.len());
            for (item, holder) in &before {
                if *holder != dead {
                    prop_assert_eq!(held.get(item), Some(holder), "a survivor's item moved");
                }
            }
        }

        #[test]
        fn users_spread_over_every_partition(partitions in 1u16..64) {
            let partitioning = Partitioning::new(partitions);
            let seen: BTreeSet<Partition> = (0..partitions as u32 * 64).map(|_| partitioning.of_user(Uuid::new_v4())).collect();
            // 64 users per partition: missing one has probability < count * (1-1/count)^(64 count).
            prop_assert_eq!(seen.len(), usize::from(partitions));
        }
    }

    #[test]
    fn a_newcomer_gets_its_share_from_members_above_the_floor() {
        let items = work_items(Partitioning::new(4), &[]);
        let two = members(2);
        let mut held = BTreeMap::new();
        converge(&two, &items, &mut held, &[0, 1]);
        assert_eq!(shares(&two, &held), vec![2, 2]);
        let three = members(3);
        converge(&three, &items, &mut held, &[0, 1, 2]);
        let s = shares(&three, &held);
        assert_eq!(s.iter().sum::<usize>(), 4);
        assert!(s.iter().all(|n| (1..=2).contains(n)), "{s:?}");
    }

    #[test]
    fn a_member_outside_the_list_plans_nothing() {
        let items = work_items(Partitioning::new(4), &[]);
        assert_eq!(
            plan_round("stranger", &members(2), &items, &BTreeMap::new()),
            RoundPlan::default()
        );
    }
}
