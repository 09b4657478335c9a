//! Snapshot builder for the rules' table tests: a healthy lab-shaped cluster (node1 leader,
//! node2 and node3 replicas, a HAProxy host) that each test bends into the case it needs.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::model::{ClusterSnapshot, NodeState, Observation, Status};

pub const NOW: i64 = 1_000_000;
pub const INTERVAL: u64 = 5_000;

#[derive(Debug, Clone)]
pub struct Lab {
    pub snap: ClusterSnapshot,
}

fn obs(status: Status, facts: Value) -> Arc<Observation> {
    Arc::new(Observation {
        status,
        message: format!("{} (test)", status.as_str()),
        facts,
        started_ms: NOW - 1_100,
        duration_us: 1_000,
        received_ms: NOW - 1_000,
        received_mono_ms: NOW - 1_000,
        observed_mono_ms: NOW - 1_000,
    })
}

fn node(name: &str, components: &[&str]) -> NodeState {
    NodeState {
        name: name.to_string(),
        cluster: "demo".to_string(),
        components: components.iter().map(|c| c.to_string()).collect(),
        agent_version: "test".to_string(),
        interval_ms: INTERVAL,
        connected: true,
        last_seen_ms: NOW - 1_000,
        last_seen_mono_ms: NOW - 1_000,
        last_batch_mono_ms: Some(NOW - 1_000),
        clock_offset_ms: Some(5),
        dropped_batches: 0,
        results: Default::default(),
        last_known: Default::default(),
        lsn_series: Default::default(),
    }
}

pub fn host(n: u8) -> String {
    format!("127.0.0.1{n}")
}

impl Lab {
    /// A healthy cluster with `leader` as Patroni's leader.
    pub fn healthy_with_leader(leader: u8) -> Lab {
        let members: Vec<Value> = (1..=3u8)
            .map(|n| {
                json!({"name": format!("node{n}"), "host": host(n),
                       "role": if n == leader { "leader" } else { "replica" }, "role_known": true,
                       "state": "running", "state_kind": "running", "timeline": 1, "lag_bytes": if n == leader { Value::Null } else { json!(0) }})
            })
            .collect();
        let mut nodes = Vec::new();
        for n in 1..=3u8 {
            let mut s = node(
                &format!("node{n}"),
                &["patroni", "postgres", "etcd", "system"],
            );
            let primary = n == leader;
            let role = if primary { "primary" } else { "replica" };
            let ok = |facts: Value| obs(Status::Ok, facts);
            let r = &mut s.results;
            r.insert("patroni.node".into(), ok(json!({"role": role, "role_known": true, "state": "running", "state_kind": "running", "timeline": 1, "pending_restart": false, "paused": false})));
            r.insert(
                "patroni.cluster".into(),
                ok(json!({"leader": format!("node{leader}"), "members": members, "paused": false})),
            );
            r.insert("patroni.health".into(), ok(json!({"http_status": 200})));
            r.insert("patroni.api_port".into(), ok(json!({})));
            r.insert("patroni.process".into(), ok(json!({"pid": 100 + n})));
            r.insert(
                "postgres.recovery".into(),
                ok(json!({"in_recovery": !primary, "patroni_role": role, "timeline": 1})),
            );
            r.insert(
                "postgres.wal_receiver".into(),
                if primary {
                    ok(json!({"present": false}))
                } else {
                    ok(json!({"present": true, "status": "streaming", "sender_host": host(leader), "sender_port": 5432, "received_tli": 1, "last_msg_age_s": 0.5}))
                },
            );
            r.insert(
                "postgres.replication".into(),
                if primary {
                    ok(json!({"expected": 2, "streaming": 2, "missing": []}))
                } else {
                    ok(json!({"streaming": 0}))
                },
            );
            r.insert(
                "postgres.replication_lag".into(),
                if primary {
                    ok(json!({"current_lsn_bytes": 50_000_000u64, "current_lsn": "0/2FAF080"}))
                } else {
                    ok(json!({"lag_bytes": 0, "lag_seconds": 0.0, "replay_lsn_bytes": 50_000_000u64, "receive_lsn_bytes": 50_000_000u64, "streaming": true}))
                },
            );
            if primary {
                // The leader has been at its position for a minute (idle).
                std::sync::Arc::make_mut(&mut s.lsn_series).record(NOW - 60_000, 50_000_000);
            }
            r.insert("postgres.locks".into(), ok(json!({"waiting_sessions": 0})));
            r.insert("postgres.accept".into(), ok(json!({})));
            r.insert(
                "postgres.connections".into(),
                ok(json!({"client_backends": 6, "usable": 97, "free": 91, "used_percent": 6.2})),
            );
            for id in ["etcd.client_port", "etcd.peer_port", "etcd.process"] {
                r.insert(id.into(), ok(json!({})));
            }
            r.insert("etcd.health".into(), ok(json!({"healthy": true, "members": [{"name": "etcd1"}, {"name": "etcd2"}, {"name": "etcd3"}], "leader_name": "etcd1"})));
            for id in ["system.cpu", "system.memory", "system.disk"] {
                r.insert(id.into(), ok(json!({})));
            }
            nodes.push(s);
        }
        let mut h = node("haproxy", &["haproxy", "system"]);
        let replicas: Vec<String> = (1..=3u8)
            .filter(|&n| n != leader)
            .map(|n| format!("node{n}"))
            .collect();
        for id in [
            "haproxy.rw_port",
            "haproxy.ro_port",
            "haproxy.process",
            "system.cpu",
            "system.memory",
            "system.disk",
        ] {
            h.results.insert(id.into(), obs(Status::Ok, json!({})));
        }
        h.results.insert(
            "haproxy.backends".into(),
            obs(Status::Ok, json!({"proxies": [
                {"application": "demo", "proxy": "demo_rw", "kind": "rw", "up": [format!("node{leader}")],
                 "servers": (1..=3u8).map(|n| json!({"name": format!("node{n}"), "address": format!("{}:5432", host(n)),
                     "status": if n == leader { "UP" } else { "DOWN" }, "check_status": if n == leader { "L7OK" } else { "L7STS" }})).collect::<Vec<_>>()},
                {"application": "demo", "proxy": "demo_ro", "kind": "ro", "up": replicas, "servers": []},
            ]})),
        );
        nodes.push(h);
        Lab {
            snap: ClusterSnapshot {
                scope: "demo".to_string(),
                nodes,
            },
        }
    }

    pub fn healthy() -> Lab {
        Lab::healthy_with_leader(1)
    }

    pub fn node_mut(&mut self, name: &str) -> &mut NodeState {
        self.snap
            .nodes
            .iter_mut()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// Edits every member Patroni's `/cluster` lists, as seen by each of `observers`.
    pub fn edit_members(mut self, observers: &[&str], mut edit: impl FnMut(&mut Value)) -> Lab {
        for n in observers {
            let o = self
                .node_mut(n)
                .results
                .get_mut("patroni.cluster")
                .map(Arc::make_mut)
                .expect("patroni.cluster");
            for m in o.facts["members"].as_array_mut().into_iter().flatten() {
                edit(m);
            }
        }
        self
    }

    /// Replaces a probe's result on a node.
    pub fn set(mut self, node: &str, probe: &str, status: Status, facts: Value) -> Lab {
        self.node_mut(node)
            .results
            .insert(probe.to_string(), obs(status, facts));
        self
    }

    /// Changes some facts of a probe (keeping the others) and its status.
    pub fn patch(mut self, node: &str, probe: &str, status: Status, facts: Value) -> Lab {
        let o = self
            .node_mut(node)
            .results
            .get_mut(probe)
            .map(Arc::make_mut)
            .unwrap_or_else(|| panic!("no {probe} on {node}"));
        o.status = status;
        if let (Some(map), Some(extra)) = (o.facts.as_object_mut(), facts.as_object()) {
            for (k, v) in extra {
                map.insert(k.clone(), v.clone());
            }
        }
        self
    }

    /// The agent of `node` went silent `silent_ms` ago (its results are as old).
    pub fn silent(mut self, node: &str, silent_ms: i64) -> Lab {
        let n = self.node_mut(node);
        n.last_seen_ms = NOW - silent_ms;
        n.last_seen_mono_ms = NOW - silent_ms;
        n.last_batch_mono_ms = Some(NOW - silent_ms);
        n.connected = false;
        for o in n.results.values_mut() {
            let o = Arc::make_mut(o);
            o.received_ms = NOW - silent_ms;
            o.received_mono_ms = NOW - silent_ms;
            o.observed_mono_ms = NOW - silent_ms;
        }
        self
    }

    /// The leader's WAL positions over time: `(ms before NOW, lsn)`, oldest first; the last one
    /// is also its current position.
    pub fn leader_positions(mut self, leader: &str, positions: &[(i64, u64)]) -> Lab {
        let n = self.node_mut(leader);
        let mut series = crate::model::LsnSeries::default();
        for &(ago, lsn) in positions {
            series.record(NOW - ago, lsn);
        }
        n.lsn_series = Arc::new(series);
        if let Some(&(_, lsn)) = positions.last() {
            self = self.patch(
                leader,
                "postgres.replication_lag",
                Status::Ok,
                json!({"current_lsn_bytes": lsn}),
            );
        }
        self
    }

    /// The SQL snapshot of `node` failed (PostgreSQL down or unreachable).
    pub fn sql_failed(mut self, node: &str, why: &str) -> Lab {
        for id in [
            "postgres.recovery",
            "postgres.wal_receiver",
            "postgres.replication",
            "postgres.replication_lag",
            "postgres.locks",
            "postgres.connections",
        ] {
            self = self.set(node, id, Status::Critical, json!({}));
            if let Some(o) = self.node_mut(node).results.get_mut(id).map(Arc::make_mut) {
                o.message = format!("PostgreSQL query failed: {why}");
            }
        }
        self
    }

    pub fn verdict(&self) -> super::Verdict {
        super::evaluate(&self.snap, NOW, &super::Policy::default())
    }
}

/// The codes of a verdict's findings, with the nodes they name.
pub fn codes(v: &super::Verdict) -> Vec<(String, Vec<String>)> {
    v.findings
        .iter()
        .map(|f| (f.code.as_str().to_string(), f.nodes.clone()))
        .collect()
}

/// Whether the verdict has `code` about exactly `nodes`.
pub fn has(v: &super::Verdict, code: super::Code, nodes: &[&str]) -> bool {
    v.findings
        .iter()
        .any(|f| f.code == code && f.nodes.iter().map(String::as_str).eq(nodes.iter().copied()))
}

/// One table case: name, snapshot, expected health, and a finding expected on given nodes.
pub type Case<'a> = (
    &'a str,
    Lab,
    super::Health,
    Option<super::Code>,
    &'a [&'a str],
);

/// Evaluates every case and checks its health and expected finding.
pub fn check_cases<'a>(cases: impl IntoIterator<Item = Case<'a>>) {
    for (name, lab, health, code, nodes) in cases {
        let v = lab.verdict();
        assert_eq!(v.health, health, "{name}: {:?}", v.findings);
        if let Some(code) = code {
            assert!(has(&v, code, nodes), "{name}: {:?}", v.findings);
        }
    }
}
