//! The probe catalogue: each [`ProbeId`]'s dotted name and component, the [`Status`] ranking,
//! and which typed facts each probe carries (to read them back from JSON by probe).

use crate::v1::{self, ProbeId, Status, probe_result::Facts};

macro_rules! catalogue {
    ($($variant:ident => $name:literal, $component:literal, $facts:ident($message:ident);)*) => {
        impl ProbeId {
            /// Every probe, in catalogue order.
            pub const ALL: &'static [ProbeId] = &[$(ProbeId::$variant),*];

            /// The dotted name, e.g. `postgres.recovery` (`unspecified` for 0).
            pub fn name(self) -> &'static str {
                match self {
                    ProbeId::Unspecified => "unspecified",
                    $(ProbeId::$variant => $name),*
                }
            }

            /// The component the probe belongs to (a configuration section).
            pub fn component(self) -> &'static str {
                match self {
                    ProbeId::Unspecified => "unspecified",
                    $(ProbeId::$variant => $component),*
                }
            }

            /// The probe of a dotted name.
            pub fn from_name(name: &str) -> Option<ProbeId> {
                match name {
                    $($name => Some(ProbeId::$variant),)*
                    _ => None,
                }
            }

            /// Reads this probe's facts from their JSON form (the agent's `--format json`, the
            /// collector's API): `null` is none.
            pub fn facts_from_json(
                self,
                value: serde_json::Value,
            ) -> Result<Option<Facts>, serde_json::Error> {
                if value.is_null() {
                    return Ok(None);
                }
                Ok(Some(match self {
                    ProbeId::Unspecified => return Ok(None),
                    $(ProbeId::$variant => Facts::$facts(serde_json::from_value::<v1::$message>(value)?)),*
                }))
            }

            /// Whether `facts` are the kind this probe carries.
            pub fn carries(self, facts: &Facts) -> bool {
                match (self, facts) {
                    $((ProbeId::$variant, Facts::$facts(_)) => true,)*
                    _ => false,
                }
            }
        }
    };
}

catalogue! {
    HaproxyRwPort => "haproxy.rw_port", "haproxy", HaproxyPorts(HaproxyPortsFacts);
    HaproxyRoPort => "haproxy.ro_port", "haproxy", HaproxyPorts(HaproxyPortsFacts);
    HaproxyProcess => "haproxy.process", "haproxy", Process(ProcessFacts);
    HaproxyBackends => "haproxy.backends", "haproxy", HaproxyBackends(HaproxyBackendsFacts);
    EtcdClientPort => "etcd.client_port", "etcd", Port(PortFacts);
    EtcdPeerPort => "etcd.peer_port", "etcd", Port(PortFacts);
    EtcdProcess => "etcd.process", "etcd", Process(ProcessFacts);
    EtcdHealth => "etcd.health", "etcd", EtcdHealth(EtcdHealthFacts);
    PatroniApiPort => "patroni.api_port", "patroni", Port(PortFacts);
    PatroniHealth => "patroni.health", "patroni", PatroniHealth(PatroniHealthFacts);
    PatroniCluster => "patroni.cluster", "patroni", PatroniCluster(PatroniClusterFacts);
    PatroniProcess => "patroni.process", "patroni", Process(ProcessFacts);
    PatroniNode => "patroni.node", "patroni", PatroniNode(PatroniNodeFacts);
    SystemCpu => "system.cpu", "system", SystemCpu(SystemCpuFacts);
    SystemMemory => "system.memory", "system", SystemMemory(SystemMemoryFacts);
    SystemDisk => "system.disk", "system", SystemDisk(SystemDiskFacts);
    PostgresLocks => "postgres.locks", "postgres", PostgresLocks(PostgresLocksFacts);
    PostgresConnections => "postgres.connections", "postgres", PostgresConnections(PostgresConnectionsFacts);
    PostgresWalReceiver => "postgres.wal_receiver", "postgres", PostgresWalReceiver(PostgresWalReceiverFacts);
    PostgresRecovery => "postgres.recovery", "postgres", PostgresRecovery(PostgresRecoveryFacts);
    PostgresReplication => "postgres.replication", "postgres", PostgresReplication(PostgresReplicationFacts);
    PostgresReplicationLag => "postgres.replication_lag", "postgres", PostgresReplicationLag(PostgresReplicationLagFacts);
    PostgresAccept => "postgres.accept", "postgres", PostgresAccept(PostgresAcceptFacts);
    PostgresWalRetention => "postgres.wal_retention", "postgres", PostgresWalRetention(PostgresWalRetentionFacts);
    PostgresXminHorizon => "postgres.xmin_horizon", "postgres", PostgresXminHorizon(PostgresXminHorizonFacts);
    PatroniConfig => "patroni.config", "patroni", PatroniConfig(PatroniConfigFacts);
}

macro_rules! accessors {
    ($($method:ident => $variant:ident($message:ident);)*) => {
        /// Typed access to each kind of facts.
        impl Facts {
            $(
                pub fn $method(&self) -> Option<&v1::$message> {
                    match self {
                        Facts::$variant(f) => Some(f),
                        _ => None,
                    }
                }
            )*
        }
    };
}

accessors! {
    port => Port(PortFacts);
    haproxy_ports => HaproxyPorts(HaproxyPortsFacts);
    process => Process(ProcessFacts);
    haproxy_backends => HaproxyBackends(HaproxyBackendsFacts);
    etcd_health => EtcdHealth(EtcdHealthFacts);
    patroni_health => PatroniHealth(PatroniHealthFacts);
    patroni_node => PatroniNode(PatroniNodeFacts);
    patroni_cluster => PatroniCluster(PatroniClusterFacts);
    system_cpu => SystemCpu(SystemCpuFacts);
    system_memory => SystemMemory(SystemMemoryFacts);
    system_disk => SystemDisk(SystemDiskFacts);
    postgres_locks => PostgresLocks(PostgresLocksFacts);
    postgres_connections => PostgresConnections(PostgresConnectionsFacts);
    postgres_wal_receiver => PostgresWalReceiver(PostgresWalReceiverFacts);
    postgres_recovery => PostgresRecovery(PostgresRecoveryFacts);
    postgres_replication => PostgresReplication(PostgresReplicationFacts);
    postgres_replication_lag => PostgresReplicationLag(PostgresReplicationLagFacts);
    postgres_accept => PostgresAccept(PostgresAcceptFacts);
    postgres_wal_retention => PostgresWalRetention(PostgresWalRetentionFacts);
    postgres_xmin_horizon => PostgresXminHorizon(PostgresXminHorizonFacts);
    patroni_config => PatroniConfig(PatroniConfigFacts);
}

/// Transactions until PostgreSQL refuses new XIDs (wraparound protection): what
/// `frozen_xid_age` of `postgres.xmin_horizon` is judged against, on both sides.
pub const WRAPAROUND_XIDS: f64 = 2_147_483_648.0;

/// Renders a byte count for people: `0 B`, `12.0 KiB`, `3.4 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

impl std::fmt::Display for ProbeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Status {
    /// Nagios plugin exit code: 0 ok, 1 warning, 2 critical, 3 unknown.
    pub fn exit_code(self) -> i32 {
        match self {
            Status::Ok => 0,
            Status::Warning => 1,
            Status::Critical => 2,
            Status::Unknown | Status::Unspecified => 3,
        }
    }

    /// Rank for "worst of": critical > warning > unknown > ok (the Nagios convention).
    fn rank(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::Unknown | Status::Unspecified => 1,
            Status::Warning => 2,
            Status::Critical => 3,
        }
    }

    /// The worse of two statuses.
    pub fn worst(self, other: Status) -> Status {
        if other.rank() > self.rank() {
            other
        } else {
            self
        }
    }

    /// The word: `ok`, `warning`, `critical`, `unknown` (an unspecified status reads unknown).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warning => "warning",
            Status::Critical => "critical",
            Status::Unknown | Status::Unspecified => "unknown",
        }
    }

    /// A wire value; anything unspecified or unknown to this build reads `unknown`.
    pub fn from_wire(value: i32) -> Status {
        match Status::try_from(value) {
            Ok(Status::Unspecified) | Err(_) => Status::Unknown,
            Ok(s) => s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_prefixed_by_their_component_and_read_back() {
        let mut seen = HashSet::new();
        for id in ProbeId::ALL {
            assert!(seen.insert(id.name()), "duplicate {}", id.name());
            assert!(id.name().starts_with(&format!("{}.", id.component())));
            assert_eq!(ProbeId::from_name(id.name()), Some(*id));
        }
        // Every wire value but 0 is in the catalogue.
        let wire_values = (1..100).filter(|v| ProbeId::try_from(*v).is_ok()).count();
        assert_eq!(ProbeId::ALL.len(), wire_values);
    }

    #[test]
    fn worst_follows_the_nagios_ranking() {
        use Status::*;
        assert_eq!(Ok.worst(Warning), Warning);
        assert_eq!(Warning.worst(Unknown), Warning);
        assert_eq!(Unknown.worst(Ok), Unknown);
        assert_eq!(Critical.worst(Warning), Critical);
        assert_eq!(Unknown.worst(Critical), Critical);
        assert_eq!(Status::from_wire(42), Unknown);
    }

    #[test]
    fn human_bytes_picks_a_unit() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(16 * 1024 * 1024), "16.0 MiB");
    }

    #[test]
    fn facts_read_back_by_probe() {
        let f = ProbeId::PostgresRecovery
            .facts_from_json(serde_json::json!({"in_recovery": true, "timeline": 3}))
            .expect("reads")
            .expect("some");
        assert!(ProbeId::PostgresRecovery.carries(&f));
        assert!(!ProbeId::PostgresAccept.carries(&f));
        let Facts::PostgresRecovery(r) = f else {
            panic!("not recovery facts")
        };
        assert!(r.in_recovery);
        assert_eq!(r.timeline, Some(3));
        assert!(
            ProbeId::PostgresRecovery
                .facts_from_json(serde_json::Value::Null)
                .expect("json")
                .is_none()
        );
        // A fact of the wrong type is an error, not a default.
        assert!(
            ProbeId::PostgresRecovery
                .facts_from_json(serde_json::json!({"in_recovery": "yes"}))
                .is_err()
        );
    }
}
