//! `order-engine cluster status`: the members and who owns what, as the
//! database says now (an operator's view, from any machine with the URL).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::leases::{LeaseRow, MemberRow};

/// The report as text: one line per member (live or lapsed), then each
/// live member's partitions and leader roles, then leases nobody holds.
pub fn render_status(members: &[MemberRow], leases: &[LeaseRow], now: DateTime<Utc>) -> String {
    let seconds = |at: DateTime<Utc>| (now - at).num_milliseconds() as f64 / 1000.0;
    let mut out = String::new();
    let live = members.iter().filter(|m| m.live).count();
    let _ = writeln!(out, "members: {live} live, {} lapsed", members.len() - live);
    let mut held: BTreeMap<&str, Vec<&LeaseRow>> = BTreeMap::new();
    let mut free = Vec::new();
    for lease in leases {
        if lease.live {
            held.entry(lease.node.as_str()).or_default().push(lease);
        } else {
            free.push(lease.name.as_str());
        }
    }
    for member in members {
        let _ = writeln!(
            out,
            "  {} [{}] version {} partitions {} up {:.0}s, heartbeat {:.1}s ago",
            member.node,
            if member.live { "live" } else { "lapsed" },
            member.version,
            member.partitions,
            seconds(member.started_at),
            seconds(member.heartbeat_at),
        );
        let owned = held.remove(member.node.as_str()).unwrap_or_default();
        let partitions: Vec<&str> = owned.iter().filter_map(|l| l.name.strip_prefix("partition.")).collect();
        let roles: Vec<&str> = owned.iter().filter_map(|l| l.name.strip_prefix("leader.")).collect();
        let oldest = owned.iter().map(|l| seconds(l.acquired_at)).fold(0.0, f64::max);
        let _ = writeln!(
            out,
            "    partitions ({}): {}",
            partitions.len(),
            if partitions.is_empty() {
                "-".to_owned()
            } else {
                partitions.join(" ")
            }
        );
        let _ = writeln!(
            out,
            "    leads: {}",
            if roles.is_empty() {
                "-".to_owned()
            } else {
                roles.join(", ")
            }
        );
        if !owned.is_empty() {
            let _ = writeln!(out, "    oldest claim: {oldest:.0}s");
        }
    }
    // Held by a node with no member row (it left while a lease was live).
    for (node, owned) in held {
        let names: Vec<&str> = owned.iter().map(|l| l.name.as_str()).collect();
        let _ = writeln!(out, "  {node} [no membership] holds: {}", names.join(" "));
    }
    let _ = writeln!(
        out,
        "unowned: {}",
        if free.is_empty() {
            "-".to_owned()
        } else {
            free.join(" ")
        }
    );
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn member(node: &str, live: bool, now: DateTime<Utc>) -> MemberRow {
        MemberRow {
            node: node.into(),
            incarnation: Uuid::nil(),
            partitions: 4,
            version: "0.1.0".into(),
            started_at: now - chrono::Duration::seconds(60),
            heartbeat_at: now - chrono::Duration::milliseconds(500),
            expires_at: now + chrono::Duration::seconds(5),
            live,
        }
    }

    fn lease(name: &str, node: &str, live: bool, now: DateTime<Utc>) -> LeaseRow {
        LeaseRow {
            name: name.into(),
            node: node.into(),
            incarnation: Uuid::nil(),
            token: 3,
            acquired_at: now - chrono::Duration::seconds(30),
            renewed_at: now,
            expires_at: now,
            live,
        }
    }

    #[test]
    fn the_report_names_each_members_partitions_roles_and_the_unowned_work() {
        let now = Utc::now();
        let text = render_status(
            &[member("a:8080", true, now), member("b:8080", false, now)],
            &[
                lease("partition.p000", "a:8080", true, now),
                lease("partition.p001", "a:8080", true, now),
                lease("leader.projection.orders", "a:8080", true, now),
                lease("partition.p002", "b:8080", false, now),
            ],
            now,
        );
        assert!(text.starts_with("members: 1 live, 1 lapsed\n"), "{text}");
        assert!(text.contains("a:8080 [live]"), "{text}");
        assert!(text.contains("partitions (2): p000 p001"), "{text}");
        assert!(text.contains("leads: projection.orders"), "{text}");
        assert!(text.contains("oldest claim: 30s"), "{text}");
        assert!(text.contains("b:8080 [lapsed]"), "{text}");
        assert!(text.contains("unowned: partition.p002"), "{text}");
    }
}
