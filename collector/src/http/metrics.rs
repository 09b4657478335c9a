//! `GET /metrics`: the verdicts and the collector's own health in Prometheus' text format.
//! Names follow Prometheus conventions and are stable; label values are bounded by the fleet
//! (clusters, nodes, finding codes), never by messages.

use std::fmt::Write;

use crate::model::ProbeId;
use crate::model::Status;
use crate::state::Published;
use crate::verdict::rules::replication::ReplicaLag;
use crate::verdict::{Code, Health};

const HEALTHS: [Health; 4] = [
    Health::Healthy,
    Health::Degraded,
    Health::Critical,
    Health::Unknown,
];

/// Escapes a label value.
/// A replica lag family: name, help, and the figure it exports.
type LagFamily = (&'static str, &'static str, fn(&ReplicaLag) -> Option<f64>);

fn family(name: &str, kind: &str, help: &str, out: &mut String) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders every metric of a published snapshot (`now` for ages; `refused` counted by ingest).
pub fn render(p: &Published, now_ms: i64, refused: &crate::ingest::Refusals) -> String {
    let mut out = String::with_capacity(4096);
    family(
        "vigie_build_info",
        "gauge",
        "The collector's version.",
        &mut out,
    );
    let _ = writeln!(out, "vigie_build_info{{version=\"{}\"}} 1", crate::VERSION);

    family(
        "vigie_cluster_verdict",
        "gauge",
        "1 for the cluster's current verdict, 0 for the others.",
        &mut out,
    );
    for entry in p.clusters.values() {
        let c = label(&entry.verdict.cluster);
        for h in HEALTHS {
            let v = u8::from(entry.verdict.health == h);
            let _ = writeln!(
                out,
                "vigie_cluster_verdict{{cluster=\"{c}\",verdict=\"{}\"}} {v}",
                h.as_str()
            );
        }
    }
    family(
        "vigie_cluster_findings",
        "gauge",
        "Open findings by code and severity (pending ones included).",
        &mut out,
    );
    for entry in p.clusters.values() {
        let c = label(&entry.verdict.cluster);
        for code in Code::ALL {
            for (sev, name) in [
                (crate::verdict::Severity::Warning, "warning"),
                (crate::verdict::Severity::Critical, "critical"),
            ] {
                let n = entry
                    .verdict
                    .findings
                    .iter()
                    .filter(|f| f.code == *code && f.severity == sev)
                    .count();
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "vigie_cluster_findings{{cluster=\"{c}\",code=\"{}\",severity=\"{name}\"}} {n}",
                        code.as_str()
                    );
                }
            }
        }
    }
    family(
        "vigie_cluster_leader",
        "gauge",
        "1 for the node Patroni names leader.",
        &mut out,
    );
    for entry in p.clusters.values() {
        if let Some(l) = &entry.verdict.leader {
            let _ = writeln!(
                out,
                "vigie_cluster_leader{{cluster=\"{}\",node=\"{}\"}} 1",
                label(&entry.verdict.cluster),
                label(l)
            );
        }
    }

    family(
        "vigie_node_role",
        "gauge",
        "1 for each node's role as Patroni reports it.",
        &mut out,
    );
    for entry in p.clusters.values() {
        let c = label(&entry.verdict.cluster);
        for n in &entry.snapshot.nodes {
            if let Some(role) = n
                .results
                .get(&ProbeId::PatroniNode)
                .and_then(|o| o.facts.as_ref()?.patroni_node())
                .map(|p| p.role.as_str())
            {
                let _ = writeln!(
                    out,
                    "vigie_node_role{{cluster=\"{c}\",node=\"{}\",role=\"{}\"}} 1",
                    label(&n.name),
                    label(role)
                );
            }
        }
    }
    // Connection slots of each database node, as its agent's session counts them.
    type Slots = fn(&crate::model::wire::PostgresConnectionsFacts) -> i64;
    let families: [(&str, &str, Slots); 2] = [
        (
            "vigie_postgres_connections_used",
            "Client sessions on the node (what ordinary roles' slots are taken by).",
            |c| c.client_backends,
        ),
        (
            "vigie_postgres_connections_usable",
            "Connection slots ordinary roles may use: max_connections minus the reserved ones.",
            |c| c.usable,
        ),
    ];
    for (name, help, value) in families {
        family(name, "gauge", help, &mut out);
        for entry in p.clusters.values() {
            let c = label(&entry.verdict.cluster);
            for n in &entry.snapshot.nodes {
                if let Some(v) = n
                    .results
                    .get(&ProbeId::PostgresConnections)
                    .and_then(|o| o.facts.as_ref()?.postgres_connections())
                    .map(value)
                {
                    let _ = writeln!(
                        out,
                        "{name}{{cluster=\"{c}\",node=\"{}\"}} {v}",
                        label(&n.name)
                    );
                }
            }
        }
    }
    // Lag measured across nodes by the verdict: the leader's position against what each
    // replica received and replayed, in bytes and in true seconds.
    let lag_families: [LagFamily; 5] = [
        (
            "vigie_replication_lag_bytes",
            "Leader's current WAL position minus the replica's replay position, in bytes.",
            |l| l.lag_bytes.map(|b| b as f64),
        ),
        (
            "vigie_replication_lag_seconds",
            "How long ago the leader was where the replica's replay is (true time lag).",
            |l| l.replay_lag_s,
        ),
        (
            "vigie_replication_receive_lag_bytes",
            "Leader's current WAL position minus what the replica has received, in bytes.",
            |l| l.receive_lag_bytes.map(|b| b as f64),
        ),
        (
            "vigie_replication_receive_lag_seconds",
            "How long ago the leader was where the replica's received WAL ends.",
            |l| l.receive_lag_s,
        ),
        (
            "vigie_replication_last_message_age_seconds",
            "Age of the last message the replica's WAL receiver got from its sender.",
            |l| l.last_msg_age_s,
        ),
    ];
    for (name, help, value) in lag_families {
        family(name, "gauge", help, &mut out);
        for entry in p.clusters.values() {
            let c = label(&entry.verdict.cluster);
            for l in &entry.verdict.replication {
                if let Some(v) = value(l) {
                    let _ = writeln!(
                        out,
                        "{name}{{cluster=\"{c}\",node=\"{}\"}} {v}",
                        label(&l.node)
                    );
                }
            }
        }
    }

    family(
        "vigie_probe_ok",
        "gauge",
        "1 when a probe's latest status is ok, else 0.",
        &mut out,
    );
    for entry in p.clusters.values() {
        let c = label(&entry.verdict.cluster);
        for n in &entry.snapshot.nodes {
            for (id, o) in &n.results {
                let _ = writeln!(
                    out,
                    "vigie_probe_ok{{cluster=\"{c}\",node=\"{}\",probe=\"{}\"}} {}",
                    label(&n.name),
                    label(id.name()),
                    u8::from(o.status == Status::Ok)
                );
            }
        }
    }
    family(
        "vigie_agent_last_seen_age_seconds",
        "gauge",
        "Seconds since each agent was last heard from.",
        &mut out,
    );
    let mut connected = String::new();
    for entry in p.clusters.values() {
        let c = label(&entry.verdict.cluster);
        for n in &entry.snapshot.nodes {
            let age = (now_ms - n.last_seen_ms).max(0) as f64 / 1000.0;
            let _ = writeln!(
                out,
                "vigie_agent_last_seen_age_seconds{{cluster=\"{c}\",node=\"{}\"}} {age}",
                label(&n.name)
            );
            let _ = writeln!(
                connected,
                "vigie_agent_connected{{cluster=\"{c}\",node=\"{}\"}} {}",
                label(&n.name),
                u8::from(n.connected)
            );
        }
    }
    family(
        "vigie_agent_connected",
        "gauge",
        "1 while the agent's stream is open.",
        &mut out,
    );
    out.push_str(&connected);

    family(
        "vigie_collector_agents_connected",
        "gauge",
        "Agent streams open now.",
        &mut out,
    );
    let _ = writeln!(
        out,
        "vigie_collector_agents_connected {}",
        p.agents_connected
    );
    family(
        "vigie_collector_batches_received_total",
        "counter",
        "Result batches received from agents.",
        &mut out,
    );
    let _ = writeln!(
        out,
        "vigie_collector_batches_received_total {}",
        p.batches_received
    );
    family(
        "vigie_collector_agent_batches_dropped_total",
        "counter",
        "Batches agents reported dropped before sending.",
        &mut out,
    );
    let _ = writeln!(
        out,
        "vigie_collector_agent_batches_dropped_total {}",
        p.batches_dropped_by_agents
    );
    family(
        "vigie_collector_agents_refused_total",
        "counter",
        "Agent streams refused at Hello or cut, by reason (hello, certificate, duplicate, limits, idle).",
        &mut out,
    );
    for (reason, n) in refused.by_reason() {
        let _ = writeln!(
            out,
            "vigie_collector_agents_refused_total{{reason=\"{reason}\"}} {n}"
        );
    }
    family(
        "vigie_collector_batches_rate_dropped_total",
        "counter",
        "Batches dropped for coming faster than 10 per second on one stream (the stream is kept).",
        &mut out,
    );
    let _ = writeln!(
        out,
        "vigie_collector_batches_rate_dropped_total {}",
        refused.rate_dropped()
    );
    family(
        "vigie_collector_published_age_seconds",
        "gauge",
        "Age of the verdicts served (refresh delay).",
        &mut out,
    );
    let _ = writeln!(
        out,
        "vigie_collector_published_age_seconds {}",
        (now_ms - p.published_ms).max(0) as f64 / 1000.0
    );
    out
}

/// The collector's own health: its event store and its state task.
pub fn render_health(store: &crate::store::StoreReport, state_running: bool) -> String {
    let mut out = String::new();
    for (name, kind, help, value) in [
        (
            "vigie_collector_state_up",
            "gauge",
            "1 while the state task (ingest, verdicts) runs.",
            u64::from(state_running),
        ),
        (
            "vigie_collector_store_transactions_total",
            "counter",
            "Event store transactions committed (one per tick with writes).",
            store.transactions,
        ),
        (
            "vigie_collector_store_write_errors_total",
            "counter",
            "Event store transactions that failed (disk full, I/O error).",
            store.write_errors,
        ),
        (
            "vigie_collector_store_dropped_writes_total",
            "counter",
            "Event store writes dropped because the writer could not keep up.",
            store.dropped_writes,
        ),
    ] {
        family(name, kind, help, &mut out);
        let _ = writeln!(out, "{name} {value}");
    }
    out
}

/// The ports' connections against their caps, and the descriptor limit.
pub fn render_ports(p: &crate::limits::Ports) -> String {
    type Read = fn(&crate::limits::PortReport) -> u64;
    let series: [(&str, &str, &str, Read); 6] = [
        (
            "open",
            "gauge",
            "Open connections per port (grpc: agents, http: the API).",
            |r| r.open as u64,
        ),
        ("cap", "gauge", "Connections allowed per port.", |r| {
            r.cap as u64
        }),
        (
            "refused_total",
            "counter",
            "Connections closed at accept because the port's cap was reached.",
            |r| r.refused,
        ),
        (
            "idle_closed_total",
            "counter",
            "Connections closed as idle (grpc: no stream open for 20 s; http: no traffic for 60 s).",
            |r| r.idle_closed,
        ),
        (
            "evicted_total",
            "counter",
            "Idle connections closed at the cap to make room for a new one.",
            |r| r.evicted,
        ),
        (
            "slow_headers_total",
            "counter",
            "API connections closed because a request's headers were not complete within 10 s.",
            |r| r.slow_headers,
        ),
    ];
    let mut out = String::new();
    for (suffix, kind, help, read) in series {
        let name = format!("vigie_collector_connections_{suffix}");
        family(&name, kind, help, &mut out);
        for (port, g) in [("grpc", &p.grpc), ("http", &p.http)] {
            let _ = writeln!(out, "{name}{{port=\"{port}\"}} {}", read(&g.report()));
        }
    }
    family(
        "vigie_collector_fd_limit",
        "gauge",
        "The process's file-descriptor limit (raised to its hard limit at start).",
        &mut out,
    );
    let _ = writeln!(out, "vigie_collector_fd_limit {}", p.fd_limit);
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::state::ClusterEntry;
    use crate::verdict::testkit::{Lab, NOW};

    #[test]
    fn verdict_roles_lag_and_freshness_are_exported() {
        // node2 has replayed to a position the leader passed 4.5 s before node2 was observed.
        let lab = Lab::healthy()
            .leader_positions("node1", &[(6_000, 49_999_000), (5_500, 50_000_000)])
            .patch(
                "node2",
                "postgres.replication_lag",
                Status::Ok,
                serde_json::json!({"replay_lsn": 49_999_877u64, "lag_bytes": 0}),
            )
            .patch(
                "node1",
                "postgres.connections",
                Status::Ok,
                serde_json::json!({"client_backends": 6, "usable": 97}),
            );
        let verdict = lab.verdict();
        let mut p = Published {
            published_ms: NOW,
            ..Default::default()
        };
        p.clusters.insert(
            "demo".into(),
            Arc::new(ClusterEntry {
                snapshot: lab.snap.clone(),
                verdict,
            }),
        );
        let refused = crate::ingest::Refusals::default();
        refused.count(crate::ingest::Reason::Duplicate);
        refused.count(crate::ingest::Reason::Duplicate);
        let text = render(&p, NOW, &refused);
        for line in [
            "vigie_cluster_verdict{cluster=\"demo\",verdict=\"healthy\"} 1",
            "vigie_cluster_verdict{cluster=\"demo\",verdict=\"critical\"} 0",
            "vigie_cluster_leader{cluster=\"demo\",node=\"node1\"} 1",
            "vigie_node_role{cluster=\"demo\",node=\"node2\",role=\"replica\"} 1",
            "vigie_replication_lag_bytes{cluster=\"demo\",node=\"node2\"} 123",
            "vigie_replication_lag_seconds{cluster=\"demo\",node=\"node2\"} 4.5",
            "vigie_agent_last_seen_age_seconds{cluster=\"demo\",node=\"node3\"} 1",
            "vigie_collector_agents_refused_total{reason=\"duplicate\"} 2",
            "vigie_collector_agents_refused_total{reason=\"hello\"} 0",
            "vigie_postgres_connections_used{cluster=\"demo\",node=\"node1\"} 6",
            "vigie_postgres_connections_usable{cluster=\"demo\",node=\"node1\"} 97",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in:\n{text}"
            );
        }
        // Every sample belongs to a declared family.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap_or("");
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} undeclared"
            );
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
