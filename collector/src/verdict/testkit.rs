//! Snapshot builder for the rules' table tests: a healthy lab-shaped cluster (node1 leader,
//! node2 and node3 replicas, a HAProxy host) that each test bends into the case it needs. The
//! observations are the batches the real agents sent on the lab (`bench/fixtures/
//! lab-batches.json`, recorded by `bench/record-batches.sh`), read into the wire's typed facts —
//! never a hand-kept copy. Edits are JSON patches checked against the typed messages: a patch
//! naming a fact the wire does not have fails the test.

use std::sync::{Arc, LazyLock};

use serde_json::{Value, json};

use crate::model::{ClusterSnapshot, Facts, NodeState, Observation, ProbeId, Status};

pub const NOW: i64 = 1_000_000;
pub const INTERVAL: u64 = 5_000;
/// Every node's WAL position in the healthy lab.
pub const LSN: u64 = 50_000_000;

const FIXTURE: &str = include_str!("../../../bench/fixtures/lab-batches.json");

#[derive(Debug, Clone)]
pub struct Lab {
    pub snap: ClusterSnapshot,
}

fn obs(status: Status, facts: Option<Facts>) -> Arc<Observation> {
    Arc::new(Observation {
        status,
        message: format!("{} (test)", status.as_str()),
        unanswered: false,
        facts,
        started_ms: NOW - 1_100,
        duration_us: 1_000,
        received_ms: NOW - 1_000,
        received_mono_ms: NOW - 1_000,
        observed_mono_ms: NOW - 1_000,
    })
}

fn node(name: &str, components: &[String]) -> NodeState {
    NodeState {
        name: name.to_string(),
        cluster: "demo".to_string(),
        components: components.to_vec(),
        agent_version: "test".to_string(),
        interval_ms: INTERVAL,
        connected: true,
        last_seen_ms: NOW - 1_000,
        last_seen_mono_ms: NOW - 1_000,
        last_batch_mono_ms: Some(NOW - 1_000),
        clock_offset_ms: Some(5),
        dropped_batches: 0,
        untyped_facts: false,
        results: Default::default(),
        lsn_series: Default::default(),
        impostor: None,
    }
}

pub fn host(n: u8) -> String {
    format!("127.0.0.1{n}")
}

fn probe(name: &str) -> ProbeId {
    ProbeId::from_name(name).unwrap_or_else(|| panic!("no probe {name}"))
}

/// Reads a probe's facts from JSON, failing on any field the typed message does not keep.
pub fn typed(probe: ProbeId, facts: Value) -> Option<Facts> {
    let read = probe
        .facts_from_json(facts.clone())
        .unwrap_or_else(|e| panic!("{probe} facts {facts}: {e}"));
    let back = serde_json::to_value(&read).expect("facts serialize");
    assert!(
        contains(&back, &facts),
        "{probe}: the wire has no such facts: {facts} (it keeps {back})"
    );
    read
}

/// Whether `whole` holds every field of `part` with the same value (numbers compared as such).
fn contains(whole: &Value, part: &Value) -> bool {
    match (whole, part) {
        (Value::Object(w), Value::Object(p)) => p
            .iter()
            .all(|(k, v)| w.get(k).is_some_and(|wv| contains(wv, v))),
        (Value::Array(w), Value::Array(p)) => {
            w.len() == p.len() && w.iter().zip(p).all(|(a, b)| contains(a, b))
        }
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (a, b) => a == b,
    }
}

/// The recorded lab batches, as recorded.
pub fn fixture() -> &'static Value {
    static DOC: LazyLock<Value> =
        LazyLock::new(|| serde_json::from_str(FIXTURE).expect("fixture is JSON"));
    &DOC
}

/// Each result the fixture `doc` holds for `node`: its probe, status and typed facts.
pub fn recorded_results(doc: &Value, node: &str) -> Vec<(ProbeId, Status, Option<Facts>)> {
    doc["results"][node]
        .as_array()
        .unwrap_or_else(|| panic!("the fixture has no results for {node}"))
        .iter()
        .map(|r| {
            let id = probe(r["id"].as_str().expect("id"));
            let status: Status = serde_json::from_value(r["status"].clone()).expect("status");
            let facts = id
                .facts_from_json(r["facts"].clone())
                .unwrap_or_else(|e| panic!("{node} {id}: re-record the fixture: {e}"));
            (id, status, facts)
        })
        .collect()
}

/// The recorded lab batches, with Patroni's recorded leader renamed `node{leader}`.
fn recorded(leader: u8) -> Value {
    let doc = fixture();
    let recorded_leader = doc["results"]["node1"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["id"] == "patroni.cluster")
        .and_then(|r| r["facts"]["leader"].as_str())
        .and_then(|l| l.strip_prefix("node"))
        .and_then(|n| n.parse::<u8>().ok())
        .expect("the fixture names a leader");
    if recorded_leader == leader {
        return doc.clone();
    }
    let mut text = doc.to_string();
    for (a, b) in [
        (format!("node{recorded_leader}"), format!("node{leader}")),
        (host(recorded_leader), host(leader)),
    ] {
        text = text
            .replace(&a, "\u{1}swap")
            .replace(&b, &a)
            .replace("\u{1}swap", &b);
    }
    serde_json::from_str(&text).expect("renamed fixture is JSON")
}

impl Lab {
    /// A healthy cluster with `leader` as Patroni's leader, every node at [`LSN`], idle.
    pub fn healthy_with_leader(leader: u8) -> Lab {
        let doc = recorded(leader);
        let mut nodes = Vec::new();
        for name in ["node1", "node2", "node3", "haproxy"] {
            let components: Vec<String> =
                serde_json::from_value(doc["components"][name].clone()).expect("components");
            let mut s = node(name, &components);
            for (id, status, facts) in recorded_results(&doc, name) {
                assert_eq!(
                    status,
                    Status::Ok,
                    "{name} {id}: the fixture must be healthy"
                );
                s.results.insert(id, obs(status, facts));
            }
            nodes.push(Arc::new(s));
        }
        let mut lab = Lab {
            snap: ClusterSnapshot {
                scope: "demo".to_string(),
                nodes,
            },
        };
        for n in 1..=3u8 {
            let name = format!("node{n}");
            let lsns = if n == leader {
                json!({"current_lsn": LSN})
            } else {
                json!({"receive_lsn": LSN, "replay_lsn": LSN, "lag_bytes": 0, "lag_seconds": 0.0})
            };
            lab = lab.patch(&name, "postgres.replication_lag", Status::Ok, lsns);
            if n != leader {
                // Just heard from the leader.
                lab = lab.patch(
                    &name,
                    "postgres.wal_receiver",
                    Status::Ok,
                    json!({"last_msg_age_s": 0.5}),
                );
            }
        }
        // HAProxy's servers have been in their states for an hour (recorded just after `up`).
        let backends = lab
            .node_mut("haproxy")
            .results
            .get_mut(&ProbeId::HaproxyBackends)
            .map(Arc::make_mut)
            .and_then(|o| match &mut o.facts {
                Some(Facts::HaproxyBackends(b)) => Some(b),
                _ => None,
            })
            .expect("the fixture has HAProxy's backends");
        for s in backends.proxies.iter_mut().flat_map(|p| &mut p.servers) {
            s.lastchg_s = Some(3_600);
        }
        // The leader has been at its position for a minute (idle).
        Arc::make_mut(&mut lab.node_mut(&format!("node{leader}")).lsn_series)
            .record(NOW - 60_000, LSN);
        lab
    }

    pub fn healthy() -> Lab {
        Lab::healthy_with_leader(1)
    }

    pub fn node_mut(&mut self, name: &str) -> &mut NodeState {
        self.snap
            .nodes
            .iter_mut()
            .find(|n| n.name == name)
            .map(Arc::make_mut)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// Edits every member Patroni's `/cluster` lists, as seen by each of `observers`.
    pub fn edit_members(
        mut self,
        observers: &[&str],
        mut edit: impl FnMut(&mut crate::model::wire::PatroniMember),
    ) -> Lab {
        for n in observers {
            let o = self
                .node_mut(n)
                .results
                .get_mut(&ProbeId::PatroniCluster)
                .map(Arc::make_mut)
                .expect("patroni.cluster");
            let Some(Facts::PatroniCluster(c)) = &mut o.facts else {
                panic!("{n}: no /cluster facts");
            };
            c.members.iter_mut().for_each(&mut edit);
        }
        self
    }

    /// Replaces a probe's result on a node (`facts` as JSON, `null` for none).
    pub fn set(mut self, node: &str, probe_name: &str, status: Status, facts: Value) -> Lab {
        let id = probe(probe_name);
        self.node_mut(node)
            .results
            .insert(id, obs(status, typed(id, facts)));
        self
    }

    /// Changes some facts of a probe (keeping the others) and its status.
    pub fn patch(mut self, node: &str, probe_name: &str, status: Status, facts: Value) -> Lab {
        let id = probe(probe_name);
        let o = self
            .node_mut(node)
            .results
            .get_mut(&id)
            .map(Arc::make_mut)
            .unwrap_or_else(|| panic!("no {probe_name} on {node}"));
        o.status = status;
        let mut merged = serde_json::to_value(&o.facts).expect("facts serialize");
        if merged.is_null() {
            merged = serde_json::Value::Null;
        }
        if let (Some(map), Some(extra)) = (merged.as_object_mut(), facts.as_object()) {
            for (k, v) in extra {
                map.insert(k.clone(), v.clone());
            }
        }
        o.facts = typed(id, merged);
        self
    }

    /// Marks a probe's result as not answered within its timeout.
    pub fn unanswered(mut self, node: &str, probe_name: &str) -> Lab {
        let id = probe(probe_name);
        if let Some(o) = self.node_mut(node).results.get_mut(&id).map(Arc::make_mut) {
            o.unanswered = true;
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
                json!({"current_lsn": lsn}),
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
            self = self.set(node, id, Status::Critical, Value::Null);
            if let Some(o) = self
                .node_mut(node)
                .results
                .get_mut(&probe(id))
                .map(Arc::make_mut)
            {
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
/// The message of the verdict's first finding with `code` (panics when there is none).
pub fn message(v: &super::Verdict, code: super::Code) -> &str {
    v.findings
        .iter()
        .find(|f| f.code == code)
        .map(|f| f.message.as_str())
        .unwrap_or_else(|| panic!("no {} in {:?}", code.as_str(), v.findings))
}

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
