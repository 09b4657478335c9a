//! A read-only view of one cluster's snapshot for the rules: which nodes are fresh, and the
//! facts the rules correlate (who is writable, who Patroni names leader, …). Data from a stale
//! agent is never used as if it were current.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Evidence, Policy};
use crate::model::{ClusterSnapshot, NodeState, Observation, Status};

#[derive(Debug)]
pub struct View<'a> {
    pub now_ms: i64,
    pub policy: &'a Policy,
    pub nodes: Vec<NodeView<'a>>,
}

#[derive(Debug)]
pub struct NodeView<'a> {
    pub state: &'a NodeState,
    pub fresh: bool,
    /// Milliseconds since the agent was last heard from.
    pub silent_ms: i64,
}

impl<'a> NodeView<'a> {
    pub fn name(&self) -> &'a str {
        &self.state.name
    }

    /// A probe's latest observation, only while the agent is fresh.
    pub fn result(&self, probe: &str) -> Option<&'a Observation> {
        if self.fresh {
            self.state.results.get(probe).map(|o| &**o)
        } else {
            None
        }
    }

    pub fn status(&self, probe: &str) -> Option<Status> {
        self.result(probe).map(|o| o.status)
    }

    pub fn fact(&self, probe: &str, key: &str) -> Option<&'a Value> {
        self.result(probe)
            .map(|o| o.fact(key))
            .filter(|v| !v.is_null())
    }

    /// Evidence from one of this node's observations.
    pub fn evidence(&self, probe: &str) -> Option<Evidence> {
        let o = self.result(probe)?;
        Some(Evidence {
            node: self.state.name.clone(),
            probe: probe.to_string(),
            observed: format!("{}: {}", o.status.as_str(), o.message),
            at_ms: o.received_ms,
        })
    }

    /// `pg_is_in_recovery()` as this node's last successful SQL snapshot says.
    pub fn in_recovery(&self) -> Option<bool> {
        self.fact("postgres.recovery", "in_recovery")?.as_bool()
    }

    /// Patroni's role for this node (`primary`, `replica`, …).
    pub fn patroni_role(&self) -> Option<&'a str> {
        self.fact("patroni.node", "role")?.as_str()
    }

    pub fn is_db(&self) -> bool {
        self.state.has("postgres") || self.state.has("patroni")
    }
}

impl<'a> View<'a> {
    pub fn new(cluster: &'a ClusterSnapshot, now_ms: i64, policy: &'a Policy) -> View<'a> {
        let nodes = cluster
            .nodes
            .iter()
            .map(|state| {
                let silent_ms = now_ms - state.last_seen_ms;
                let limit = (state.interval_ms as i64 * i64::from(policy.stale_intervals))
                    .max(policy.min_stale_ms);
                // Judged on time alone: a closed stream does not age the last results (an agent
                // restarting is back within an interval), silence does.
                NodeView {
                    state,
                    fresh: silent_ms <= limit,
                    silent_ms,
                }
            })
            .collect();
        View {
            now_ms,
            policy,
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
    pub fn patroni_leader(&self) -> Option<String> {
        let mut votes: BTreeMap<&str, (usize, i64)> = BTreeMap::new();
        for n in self.fresh() {
            if let Some(obs) = n.result("patroni.cluster")
                && let Some(leader) = obs.fact("leader").as_str()
            {
                let e = votes.entry(leader).or_insert((0, 0));
                e.0 += 1;
                e.1 = e.1.max(obs.received_ms);
            }
        }
        votes
            .into_iter()
            .max_by_key(|(_, (count, at))| (*count, *at))
            .map(|(name, _)| name.to_string())
    }

    /// The member list Patroni publishes (from the freshest view), by name.
    pub fn patroni_members(&self) -> BTreeMap<String, Value> {
        let newest = self
            .fresh()
            .filter_map(|n| n.result("patroni.cluster"))
            .max_by_key(|o| o.received_ms);
        let mut out = BTreeMap::new();
        if let Some(obs) = newest
            && let Some(members) = obs.fact("members").as_array()
        {
            for m in members {
                if let Some(name) = m["name"].as_str() {
                    out.insert(name.to_string(), m.clone());
                }
            }
        }
        out
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
