//! The probe catalogue: one stable id per row of the supervision procedure (and a few beyond it),
//! one file per probe kind. This enum is the single registry of ids; everything else derives
//! from it.

pub mod etcd_health;
pub mod haproxy_backends;
pub mod haproxy_port;
pub mod patroni_cluster;
pub mod patroni_health;
pub mod patroni_node;
pub mod patroni_words;
pub mod postgres_accept;
pub mod postgres_connections;
pub mod postgres_locks;
pub mod postgres_recovery;
pub mod postgres_replication;
pub mod postgres_replication_lag;
pub mod postgres_session;
pub mod postgres_wal_receiver;
pub mod process;
pub mod system_cpu;
pub mod system_disk;
pub mod system_memory;
pub mod tcp;

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::result::ProbeResult;

macro_rules! probe_ids {
    ($($variant:ident => $id:literal, $component:literal;)*) => {
        /// Stable probe ids.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ProbeId { $($variant),* }

        impl ProbeId {
            /// Every probe, in catalogue order.
            pub const ALL: &'static [ProbeId] = &[$(ProbeId::$variant),*];

            /// The stable id, e.g. `postgres.recovery`.
            pub fn as_str(self) -> &'static str {
                match self { $(ProbeId::$variant => $id),* }
            }

            /// The component the probe belongs to (a configuration section).
            pub fn component(self) -> &'static str {
                match self { $(ProbeId::$variant => $component),* }
            }
        }
    };
}

probe_ids! {
    HaproxyRwPort => "haproxy.rw_port", "haproxy";
    HaproxyRoPort => "haproxy.ro_port", "haproxy";
    HaproxyProcess => "haproxy.process", "haproxy";
    HaproxyBackends => "haproxy.backends", "haproxy";
    EtcdClientPort => "etcd.client_port", "etcd";
    EtcdPeerPort => "etcd.peer_port", "etcd";
    EtcdProcess => "etcd.process", "etcd";
    EtcdHealth => "etcd.health", "etcd";
    PatroniApiPort => "patroni.api_port", "patroni";
    PatroniHealth => "patroni.health", "patroni";
    PatroniCluster => "patroni.cluster", "patroni";
    PatroniProcess => "patroni.process", "patroni";
    PatroniNode => "patroni.node", "patroni";
    SystemCpu => "system.cpu", "system";
    SystemMemory => "system.memory", "system";
    SystemDisk => "system.disk", "system";
    PostgresLocks => "postgres.locks", "postgres";
    PostgresConnections => "postgres.connections", "postgres";
    PostgresWalReceiver => "postgres.wal_receiver", "postgres";
    PostgresRecovery => "postgres.recovery", "postgres";
    PostgresReplication => "postgres.replication", "postgres";
    PostgresReplicationLag => "postgres.replication_lag", "postgres";
    PostgresAccept => "postgres.accept", "postgres";
}

impl ProbeId {
    pub fn ok(self, message: impl Into<String>) -> ProbeResult {
        ProbeResult::ok(self.as_str(), message)
    }
    pub fn warning(self, message: impl Into<String>) -> ProbeResult {
        ProbeResult::warning(self.as_str(), message)
    }
    pub fn critical(self, message: impl Into<String>) -> ProbeResult {
        ProbeResult::critical(self.as_str(), message)
    }
    pub fn unknown(self, message: impl Into<String>) -> ProbeResult {
        ProbeResult::unknown(self.as_str(), message)
    }
}

/// Human form of a timeout: `2s`, `500ms`.
pub fn fmt_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Runs a probe future under `timeout`: a probe that does not answer in time is `critical`
/// ("timed out after …"), and every result is stamped with its start and duration.
pub async fn timed<F>(id: ProbeId, timeout: Duration, probe: F) -> ProbeResult
where
    F: std::future::Future<Output = ProbeResult>,
{
    let started = SystemTime::now();
    let t0 = Instant::now();
    let result = match tokio::time::timeout(timeout, probe).await {
        Ok(r) => r,
        Err(_) => id
            .critical(format!("timed out after {}", fmt_duration(timeout)))
            .fact("unanswered", true),
    };
    result.timed(started, t0.elapsed())
}

/// Stamps a synchronous probe's result.
pub fn timed_sync(probe: impl FnOnce() -> ProbeResult) -> ProbeResult {
    let started = SystemTime::now();
    let t0 = Instant::now();
    let result = probe();
    result.timed(started, t0.elapsed())
}

/// The first `max` characters of a peer's answer, for messages about garbage.
pub fn excerpt(text: &str, max: usize) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    if text.chars().count() > max {
        format!("{cleaned}…")
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_unique_and_prefixed_by_their_component() {
        let mut seen = HashSet::new();
        for id in ProbeId::ALL {
            assert!(seen.insert(id.as_str()), "duplicate {}", id.as_str());
            assert!(id.as_str().starts_with(&format!("{}.", id.component())));
        }
        assert_eq!(ProbeId::ALL.len(), 23);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_hangs_is_critical_on_time() {
        let r = timed(ProbeId::PatroniHealth, Duration::from_secs(2), async {
            std::future::pending::<()>().await;
            ProbeId::PatroniHealth.ok("never")
        })
        .await;
        assert_eq!(r.status, crate::result::Status::Critical);
        assert_eq!(r.message, "timed out after 2s");
    }

    #[test]
    fn excerpt_cuts_and_cleans() {
        assert_eq!(excerpt("a\nb", 10), "a b");
        assert_eq!(excerpt("abcdef", 3), "abc…");
    }
}
