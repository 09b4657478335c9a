//! The probes: one file per probe kind, one stable id per row of the supervision procedure (and
//! a few beyond it). The ids, and the typed facts each probe reports, are the wire's
//! (`vigie_proto::probes`): the single registry both sides read.

pub mod blocking;
pub mod etcd_health;
pub mod haproxy_backends;
pub mod haproxy_port;
pub mod patroni_cluster;
pub mod patroni_config;
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
pub mod postgres_wal_retention;
pub mod postgres_xmin_horizon;
pub mod process;
pub mod system_cpu;
pub mod system_disk;
pub mod system_memory;
pub mod tcp;

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::result::ProbeResult;
pub use crate::result::{Outcome, ProbeId};

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
            .unanswered(),
    };
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
