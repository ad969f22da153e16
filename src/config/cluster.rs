//! The scale-out settings (`ORDER_ENGINE_CLUSTER`, `_NODE_ID`, `_PARTITIONS`,
//! `_LEASE_TTL`, `_HEARTBEAT`): how a process finds its share of the work.

use std::time::Duration;

use super::{parse_duration, ConfigError};
use crate::cluster::{PARTITIONS_MAX, PARTITIONS_MIN};

pub const DEFAULT_PARTITIONS: u16 = 16;
/// A dead process's work moves to the survivors within about this long
/// (plus one heartbeat): issue 13's target is 10 s.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(6);
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterMode {
    /// Clustered on PostgreSQL (processes on one database share the work),
    /// standalone on SQLite (one process is the whole engine).
    Auto,
    /// Standalone whatever the database: this process drives every saga and
    /// runs every follower. Only for one process per database.
    Off,
}

/// Where a submission taken from `orders.submit` by a process that does not
/// own its user's partition goes (docs/adr/0005-submissions-to-the-owner.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitRouting {
    /// Recorded by the receiver (the order stream's expected version
    /// decides); the owner starts its saga from its log tail.
    Log,
    /// Moved (confirmed) to the partition's own queue, which only the
    /// owner consumes; the owner records it and starts its saga at once.
    Forward,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    pub mode: ClusterMode,
    /// This process's stable name in the cluster; a restart under the same
    /// name takes its predecessor's leases over at once. `host:http-port` by default.
    pub node_id: Option<String>,
    pub partitions: u16,
    pub lease_ttl: Duration,
    pub heartbeat: Duration,
    pub submit_routing: SubmitRouting,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            mode: ClusterMode::Auto,
            node_id: None,
            partitions: DEFAULT_PARTITIONS,
            lease_ttl: DEFAULT_LEASE_TTL,
            heartbeat: DEFAULT_HEARTBEAT,
            submit_routing: SubmitRouting::Log,
        }
    }
}

pub(super) fn cluster(lookup: &impl Fn(&str) -> Option<String>) -> Result<ClusterSettings, ConfigError> {
    let error = |variable: &'static str, value: String, expected: String| ConfigError {
        variable,
        value,
        expected,
    };
    let mode = match lookup("ORDER_ENGINE_CLUSTER").as_deref() {
        None | Some("auto") => ClusterMode::Auto,
        Some("off") => ClusterMode::Off,
        Some(other) => {
            return Err(error(
                "ORDER_ENGINE_CLUSTER",
                other.to_owned(),
                "auto (clustered on PostgreSQL) or off".into(),
            ))
        }
    };
    let partitions_expected = format!("a whole number from {PARTITIONS_MIN} to {PARTITIONS_MAX}");
    let partitions = match lookup("ORDER_ENGINE_PARTITIONS") {
        None => DEFAULT_PARTITIONS,
        Some(value) => match value.trim().parse::<u16>() {
            Ok(n) if (PARTITIONS_MIN..=PARTITIONS_MAX).contains(&n) => n,
            _ => return Err(error("ORDER_ENGINE_PARTITIONS", value, partitions_expected)),
        },
    };
    let duration = |variable: &'static str, default: Duration| match lookup(variable) {
        None => Ok(default),
        Some(value) => parse_duration(&value).map_err(|expected| error(variable, value, expected)),
    };
    let lease_ttl = duration("ORDER_ENGINE_LEASE_TTL", DEFAULT_LEASE_TTL)?;
    let heartbeat = duration("ORDER_ENGINE_HEARTBEAT", DEFAULT_HEARTBEAT)?;
    // Three beats per lease: one slow beat must not cost a process its work.
    if heartbeat.is_zero() || heartbeat.saturating_mul(3) > lease_ttl {
        return Err(error(
            "ORDER_ENGINE_HEARTBEAT",
            format!("{heartbeat:?}"),
            format!("a beat above zero and at most a third of ORDER_ENGINE_LEASE_TTL ({lease_ttl:?})"),
        ));
    }
    let submit_routing = match lookup("ORDER_ENGINE_SUBMIT_ROUTING").as_deref().map(str::trim) {
        None | Some("log") => SubmitRouting::Log,
        Some("forward") => SubmitRouting::Forward,
        Some(other) => {
            return Err(error(
                "ORDER_ENGINE_SUBMIT_ROUTING",
                other.to_owned(),
                "log (the receiver records it, the owner drives it from the log) or forward (to the owner's partition queue)".into(),
            ))
        }
    };
    let node_id = lookup("ORDER_ENGINE_NODE_ID").map(|v| v.trim().to_owned());
    if let Some(node) = &node_id {
        if node.is_empty() || node.len() > 200 || node.chars().any(char::is_control) {
            return Err(error(
                "ORDER_ENGINE_NODE_ID",
                node.clone(),
                "a name of 1 to 200 printable characters".into(),
            ));
        }
    }
    Ok(ClusterSettings {
        mode,
        node_id,
        partitions,
        lease_ttl,
        heartbeat,
        submit_routing,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn read(pairs: &[(&str, &str)]) -> Result<ClusterSettings, ConfigError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        cluster(&|name: &str| map.get(name).cloned())
    }

    #[test]
    fn defaults_cluster_on_postgres_with_sixteen_partitions() {
        assert_eq!(read(&[]).unwrap(), ClusterSettings::default());
    }

    #[test]
    fn each_bad_value_names_its_variable() {
        for (pairs, variable) in [
            (vec![("ORDER_ENGINE_CLUSTER", "yes")], "ORDER_ENGINE_CLUSTER"),
            (vec![("ORDER_ENGINE_PARTITIONS", "0")], "ORDER_ENGINE_PARTITIONS"),
            (vec![("ORDER_ENGINE_PARTITIONS", "5000")], "ORDER_ENGINE_PARTITIONS"),
            (vec![("ORDER_ENGINE_LEASE_TTL", "soon")], "ORDER_ENGINE_LEASE_TTL"),
            (vec![("ORDER_ENGINE_HEARTBEAT", "3s")], "ORDER_ENGINE_HEARTBEAT"),
            (vec![("ORDER_ENGINE_NODE_ID", "a\nb")], "ORDER_ENGINE_NODE_ID"),
            (
                vec![("ORDER_ENGINE_SUBMIT_ROUTING", "owner")],
                "ORDER_ENGINE_SUBMIT_ROUTING",
            ),
        ] {
            assert_eq!(read(&pairs).unwrap_err().variable, variable, "{pairs:?}");
        }
    }

    #[test]
    fn every_setting_is_read() {
        let settings = read(&[
            ("ORDER_ENGINE_CLUSTER", "off"),
            ("ORDER_ENGINE_NODE_ID", "engine-a"),
            ("ORDER_ENGINE_PARTITIONS", "64"),
            ("ORDER_ENGINE_LEASE_TTL", "9s"),
            ("ORDER_ENGINE_HEARTBEAT", "3s"),
            ("ORDER_ENGINE_SUBMIT_ROUTING", "forward"),
        ])
        .unwrap();
        assert_eq!(settings.mode, ClusterMode::Off);
        assert_eq!(settings.node_id.as_deref(), Some("engine-a"));
        assert_eq!(settings.partitions, 64);
        assert_eq!(settings.lease_ttl, Duration::from_secs(9));
        assert_eq!(settings.heartbeat, Duration::from_secs(3));
        assert_eq!(settings.submit_routing, SubmitRouting::Forward);
    }
}
