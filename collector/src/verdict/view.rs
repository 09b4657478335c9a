//! A read-only view of one cluster's snapshot for the rules: which nodes are fresh, and the
//! facts the rules correlate (who is writable, who Patroni names leader, …). Freshness is judged
//! per observation on the collector's monotonic clock: data from a stale agent, or a probe an
//! agent no longer sends, is never used as if it were current; a `Hello` vouches for nothing.

use std::collections::BTreeMap;

use super::{Evidence, Policy};
use crate::clock::Now;
pub use crate::model::wire::StateKind;
use crate::model::wire::{self, PatroniMember};
use crate::model::{ClusterSnapshot, Facts, NodeState, Observation, ProbeId, Status};

#[derive(Debug)]
pub struct View<'a> {
    /// Wall clock, for what is shown.
    pub now_ms: i64,
    /// Monotonic clock, for every age.
    pub now_mono_ms: i64,
    pub policy: &'a Policy,
    pub nodes: Vec<NodeView<'a>>,
    /// Read once from the fresh nodes: every rule asks.
    leader: Option<&'a str>,
    members: BTreeMap<&'a str, &'a PatroniMember>,
}

#[derive(Debug)]
pub struct NodeView<'a> {
    pub state: &'a NodeState,
    /// The agent delivered a result batch recently.
    pub fresh: bool,
    /// Connected (said `Hello`) recently but has not delivered a batch since.
    pub awaiting_batch: bool,
    /// Milliseconds since the agent's last result batch (or since it was first heard of).
    pub silent_ms: i64,
    /// How old an observation may be and still count.
    pub limit_ms: i64,
    now_mono_ms: i64,
}

impl<'a> NodeView<'a> {
    pub fn name(&self) -> &'a str {
        &self.state.name
    }

    /// A probe's latest observation, only while it is fresh itself and its agent too.
    pub fn result(&self, probe: ProbeId) -> Option<&'a Observation> {
        if !self.fresh {
            return None;
        }
        self.state
            .results
            .get(&probe)
            .map(|o| &**o)
            .filter(|o| self.now_mono_ms - o.received_mono_ms <= self.limit_ms)
    }

    /// Probes this node used to report that are no longer fresh while its agent is.
    pub fn dropped_probes(&self) -> Vec<(ProbeId, i64)> {
        if !self.fresh {
            return Vec::new();
        }
        self.state
            .results
            .iter()
            .filter(|(_, o)| self.now_mono_ms - o.received_mono_ms > self.limit_ms)
            .map(|(id, o)| (*id, self.now_mono_ms - o.received_mono_ms))
            .collect()
    }

    pub fn status(&self, probe: ProbeId) -> Option<Status> {
        self.result(probe).map(|o| o.status)
    }

    /// Evidence from one of this node's observations.
    pub fn evidence(&self, probe: ProbeId) -> Option<Evidence> {
        let o = self.result(probe)?;
        Some(Evidence {
            node: self.state.name.clone(),
            probe: probe.name().to_string(),
            observed: format!("{}: {}", o.status.as_str(), o.message),
            at_ms: o.received_ms,
        })
    }

    /// `pg_is_in_recovery()` as this node's last successful SQL snapshot says.
    pub fn in_recovery(&self) -> Option<bool> {
        Some(self.recovery()?.in_recovery)
    }

    /// Patroni's role for this node (`primary`, `replica`, …).
    pub fn patroni_role(&self) -> Option<&'a str> {
        Some(self.patroni_node()?.role.as_str())
    }

    pub fn is_db(&self) -> bool {
        self.state.has("postgres") || self.state.has("patroni")
    }
}

macro_rules! typed_facts {
    ($($method:ident => $probe:ident, $read:ident, $message:ident;)*) => {
        /// This node's fresh facts, by probe.
        impl<'a> NodeView<'a> {
            $(
                pub fn $method(&self) -> Option<&'a wire::$message> {
                    self.result(ProbeId::$probe)?.facts.as_ref()?.$read()
                }
            )*
        }
    };
}

typed_facts! {
    backends => HaproxyBackends, haproxy_backends, HaproxyBackendsFacts;
    etcd => EtcdHealth, etcd_health, EtcdHealthFacts;
    patroni_health => PatroniHealth, patroni_health, PatroniHealthFacts;
    patroni_node => PatroniNode, patroni_node, PatroniNodeFacts;
    patroni_cluster => PatroniCluster, patroni_cluster, PatroniClusterFacts;
    locks => PostgresLocks, postgres_locks, PostgresLocksFacts;
    connections => PostgresConnections, postgres_connections, PostgresConnectionsFacts;
    wal_receiver => PostgresWalReceiver, postgres_wal_receiver, PostgresWalReceiverFacts;
    recovery => PostgresRecovery, postgres_recovery, PostgresRecoveryFacts;
    replication => PostgresReplication, postgres_replication, PostgresReplicationFacts;
    lag => PostgresReplicationLag, postgres_replication_lag, PostgresReplicationLagFacts;
    accept => PostgresAccept, postgres_accept, PostgresAcceptFacts;
    wal_retention => PostgresWalRetention, postgres_wal_retention, PostgresWalRetentionFacts;
    xmin_horizon => PostgresXminHorizon, postgres_xmin_horizon, PostgresXminHorizonFacts;
    disk => SystemDisk, system_disk, SystemDiskFacts;
    patroni_config => PatroniConfig, patroni_config, PatroniConfigFacts;
}

impl<'a> View<'a> {
    pub fn new(cluster: &'a ClusterSnapshot, now: Now, policy: &'a Policy) -> View<'a> {
        let now_mono_ms = now.mono_ms;
        let nodes = cluster
            .nodes
            .iter()
            .map(|state| {
                let limit = (state.interval_ms as i64 * i64::from(policy.stale_intervals))
                    .max(policy.min_stale_ms);
                // Judged on time alone: a closed stream does not age the last results (an agent
                // restarting is back within an interval), silence does.
                let since_batch = state.last_batch_mono_ms.map(|t| now_mono_ms - t);
                let fresh = since_batch.is_some_and(|s| s <= limit);
                let since_hello = now_mono_ms - state.last_seen_mono_ms;
                NodeView {
                    state,
                    fresh,
                    awaiting_batch: !fresh
                        && state.connected
                        && since_hello <= limit
                        && since_batch.is_none_or(|s| s > since_hello),
                    silent_ms: since_batch.unwrap_or(since_hello),
                    limit_ms: limit,
                    now_mono_ms,
                }
            })
            .collect::<Vec<_>>();
        View {
            now_ms: now.wall_ms,
            now_mono_ms,
            policy,
            leader: leader_of(&nodes),
            members: members_of(&nodes),
            nodes,
        }
    }

    pub fn fresh(&self) -> impl Iterator<Item = &NodeView<'a>> {
        self.nodes.iter().filter(|n| n.fresh)
    }

    pub fn node(&self, name: &str) -> Option<&NodeView<'a>> {
        self.nodes.iter().find(|n| n.name() == name)
    }

    /// Fresh nodes whose SQL says they are writable (not in recovery).
    pub fn writable(&self) -> Vec<&NodeView<'a>> {
        self.fresh()
            .filter(|n| n.in_recovery() == Some(false))
            .collect()
    }

    /// The leader Patroni names, by majority of the fresh nodes' `/cluster` views; ties go to
    /// the most recent observation.
    pub fn patroni_leader(&self) -> Option<&'a str> {
        self.leader
    }

    /// Whether writes are (or should be) served by `name`: the writable node, or Patroni's
    /// leader while no other node has taken over. Findings there are critical.
    pub fn serves_writes(&self, name: &str) -> bool {
        let writable = self.writable();
        writable.iter().any(|w| w.name() == name)
            || (self.patroni_leader() == Some(name) && writable.iter().all(|w| w.name() == name))
    }

    /// What a database node is, in words: Patroni's leader, a replica, or a primary Patroni no
    /// longer names leader (the old primary after a failover, writable with nobody managing it).
    pub fn role_words(&self, name: &str) -> &'static str {
        let leader = self.patroni_leader();
        let writable = self.writable().iter().any(|w| w.name() == name);
        if leader == Some(name) {
            "leader"
        } else if writable && leader.is_some() {
            "old primary, still writable, unmanaged"
        } else if writable {
            "primary"
        } else {
            "replica"
        }
    }

    /// The cluster's WAL rate in bytes per second, from the writable node's position over the
    /// policy's window (see [`crate::model::LsnSeries::rate_bps`]).
    pub fn wal_rate_bps(&self) -> Option<f64> {
        let w = self.writable();
        let primary = w.first().filter(|_| w.len() == 1)?;
        primary
            .state
            .lsn_series
            .rate_bps(self.now_mono_ms, self.policy.wal_rate_window_ms)
    }

    /// Patroni's dynamic configuration (the same on every member): as the leader's agent
    /// reports it, else any fresh DB node's.
    pub fn patroni_config(&self) -> Option<&'a wire::PatroniConfigFacts> {
        let leader = self.patroni_leader();
        self.fresh()
            .filter(|n| Some(n.name()) == leader)
            .chain(self.fresh())
            .find_map(|n| n.patroni_config())
    }

    /// The member list Patroni publishes (from the freshest view), by name.
    pub fn patroni_members(&self) -> &BTreeMap<&'a str, &'a PatroniMember> {
        &self.members
    }

    /// A transition in progress that the fresh nodes show, said in words: a member starting,
    /// stopping, promoting or demoting, a scheduled switchover, HAProxy servers that changed
    /// state within the last interval. (A recent leader change is added by the history.)
    pub fn transition(&self) -> Option<String> {
        for n in self.fresh().filter(|n| n.is_db()) {
            if let Some(p) = n.patroni_node()
                && p.state_kind() == StateKind::Transitional
            {
                return Some(format!("Patroni on {} is {}", n.name(), p.state));
            }
            if let Some(role) = n.patroni_role()
                && TRANSITIONAL_ROLES.contains(&role)
            {
                return Some(format!("{} is {role}", n.name()));
            }
            if let Some(s) = n
                .patroni_cluster()
                .and_then(|c| c.scheduled_switchover.as_ref())
            {
                return Some(format!("a switchover is scheduled ({})", s.at));
            }
        }
        for (name, m) in self.patroni_members() {
            if m.state_kind() == StateKind::Transitional {
                return Some(format!("Patroni lists {name} as {}", m.state));
            }
        }
        for h in self.fresh().filter(|n| n.state.has("haproxy")) {
            let window_ms = h.state.interval_ms as i64 + 1_000;
            for p in h.backends().into_iter().flat_map(|b| &b.proxies) {
                for s in &p.servers {
                    if let Some(age) = s.lastchg_s
                        && (age as i64) * 1_000 < window_ms
                    {
                        return Some(format!(
                            "HAProxy on {}: {}/{} changed state {age}s ago",
                            h.name(),
                            p.proxy,
                            s.name
                        ));
                    }
                }
            }
        }
        None
    }

    /// One observation cycle of the slowest fresh agent, plus a second: how far apart two nodes'
    /// latest observations can be.
    pub fn observation_skew_ms(&self) -> i64 {
        self.fresh()
            .map(|n| n.state.interval_ms as i64)
            .max()
            .unwrap_or(0)
            + 1_000
    }
}

/// Patroni roles of a node changing sides (Patroni 4's `/patroni`).
pub const TRANSITIONAL_ROLES: [&str; 2] = ["demoted", "promoted"];

fn leader_of<'a>(nodes: &[NodeView<'a>]) -> Option<&'a str> {
    let mut votes: BTreeMap<&str, (usize, i64)> = BTreeMap::new();
    for n in nodes.iter().filter(|n| n.fresh) {
        if let Some(obs) = n.result(ProbeId::PatroniCluster)
            && let Some(leader) = obs
                .facts
                .as_ref()
                .and_then(Facts::patroni_cluster)
                .and_then(|c| c.leader.as_deref())
        {
            let e = votes.entry(leader).or_insert((0, 0));
            e.0 += 1;
            e.1 = e.1.max(obs.received_ms);
        }
    }
    votes
        .into_iter()
        .max_by_key(|(_, (count, at))| (*count, *at))
        .map(|(name, _)| name)
}

fn members_of<'a>(nodes: &[NodeView<'a>]) -> BTreeMap<&'a str, &'a PatroniMember> {
    let newest = nodes
        .iter()
        .filter(|n| n.fresh)
        .filter_map(|n| {
            let o = n.result(ProbeId::PatroniCluster)?;
            Some((o, o.facts.as_ref()?.patroni_cluster()?))
        })
        .max_by_key(|(o, _)| o.received_ms);
    newest
        .into_iter()
        .flat_map(|(_, c)| &c.members)
        .map(|m| (m.name.as_str(), m))
        .collect()
}
