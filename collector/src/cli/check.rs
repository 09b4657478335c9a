//! `vigie check`: one cluster's verdict as a Nagios / Centreon / Icinga check — one line with the
//! verdict and findings, perfdata after `|`, and the plugin exit code.

use serde_json::Value;

use crate::model::ProbeId;

/// The check's output line and exit code for one cluster document.
pub fn check_line(d: &Value) -> (String, u8) {
    let (state, code) = match d["verdict"].as_str() {
        Some("healthy") => ("OK", 0),
        Some("degraded") => ("WARNING", 1),
        Some("critical") => ("CRITICAL", 2),
        _ => ("UNKNOWN", 3),
    };
    let findings: Vec<String> = d["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            let nodes: Vec<&str> = f["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            format!("{} {}", f["code"].as_str().unwrap_or("?"), nodes.join(","))
                .trim()
                .to_string()
        })
        .collect();
    let mut text = format!(
        "VIGIE {state} - {} {}, leader {}",
        d["cluster"].as_str().unwrap_or("?"),
        d["verdict"].as_str().unwrap_or("?"),
        d["leader"].as_str().unwrap_or("none")
    );
    if !findings.is_empty() {
        text.push_str(&format!(": {}", findings.join("; ")));
    }
    for b in d["blind_spots"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        text.push_str(&format!("; blind: {b}"));
    }
    // Perfdata: members, replicas streaming from the leader, each replica's lag (measured
    // across nodes by the collector), agent ages.
    let nodes = d["nodes"].as_array().cloned().unwrap_or_default();
    let lag_of = |name: &str| {
        d["replication"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["node"] == name)
            .cloned()
            .unwrap_or_default()
    };
    let mut perf = Vec::new();
    let members = nodes.iter().find_map(|n| {
        super::facts(n, ProbeId::PatroniCluster)?
            .patroni_cluster()
            .map(|c| c.members.len())
    });
    if let Some(m) = members {
        perf.push(format!("members={m}"));
    }
    for n in &nodes {
        let name = n["name"].as_str().unwrap_or("?");
        if let Some(rep) = super::facts(n, ProbeId::PostgresReplication)
            && let Some(rep) = rep.postgres_replication()
            && let Some(e) = rep.expected
        {
            perf.push(format!("replicas_streaming={};;{e}:", rep.streaming));
        }
        let lag = lag_of(name);
        if let Some(b) = lag["lag_bytes"].as_u64() {
            perf.push(format!("lag_bytes_{name}={b}B"));
        }
        if let Some(s) = lag["replay_lag_s"].as_f64() {
            perf.push(format!("lag_seconds_{name}={s}s"));
        }
        if let Some(a) = n["age_s"].as_f64() {
            perf.push(format!("agent_age_{name}={a:.1}s"));
        }
    }
    if !perf.is_empty() {
        text.push_str(&format!(" | {}", perf.join(" ")));
    }
    (text, code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_line_has_verdict_findings_perfdata_and_exit_code() {
        let d = serde_json::json!({
            "cluster": "demo", "verdict": "critical", "leader": "node2",
            "findings": [{"code": "SPLIT_BRAIN", "nodes": ["node1", "node2"]}],
            "blind_spots": [],
            "nodes": [
                {"name": "node2", "age_s": 0.4, "results": {
                    "patroni.cluster": {"facts": {"members": [{}, {}, {}]}},
                    "postgres.replication": {"facts": {"streaming": 1, "expected": 2}}}},
                {"name": "node3", "age_s": 1.2, "results": {
                    "postgres.replication_lag": {"facts": {"lag_bytes": 0, "lag_seconds": 0.0}}}},
            ],
            "replication": [{"node": "node3", "lag_bytes": 2048, "replay_lag_s": 1.5}]
        });
        let (line, code) = check_line(&d);
        assert_eq!(code, 2);
        assert_eq!(
            line,
            "VIGIE CRITICAL - demo critical, leader node2: SPLIT_BRAIN node1,node2 | members=3 replicas_streaming=1;;2: agent_age_node2=0.4s lag_bytes_node3=2048B lag_seconds_node3=1.5s agent_age_node3=1.2s"
        );
        let (_, code) = check_line(&serde_json::json!({"verdict": "unknown"}));
        assert_eq!(code, 3);
    }
}
