//! `vigie check`: one cluster's verdict as a Nagios / Centreon / Icinga check — one line with the
//! verdict and findings, perfdata after `|`, and the plugin exit code.

use serde_json::Value;

use super::{perf_label, plain};
use crate::model::ProbeId;

/// The longest any one agent-supplied text gets on the status line.
const MAX_TEXT: usize = 200;

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
            plain(
                &format!("{} {}", f["code"].as_str().unwrap_or("?"), nodes.join(",")),
                MAX_TEXT,
            )
            .trim()
            .to_string()
        })
        .collect();
    let mut text = format!(
        "VIGIE {state} - {} {}, leader {}",
        plain(d["cluster"].as_str().unwrap_or("?"), MAX_TEXT),
        plain(d["verdict"].as_str().unwrap_or("?"), MAX_TEXT),
        plain(d["leader"].as_str().unwrap_or("none"), MAX_TEXT)
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
        text.push_str(&format!("; blind: {}", plain(b, MAX_TEXT)));
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
    // The leader's count only: one label per metric, even with two primaries.
    let leader = d["leader"].as_str();
    for n in &nodes {
        let name = n["name"].as_str().unwrap_or("?");
        if leader == Some(name)
            && let Some(rep) = super::facts(n, ProbeId::PostgresReplication)
            && let Some(rep) = rep.postgres_replication()
            && let Some(e) = rep.expected
        {
            perf.push(format!("replicas_streaming={};;{e}:", rep.streaming));
        }
        let lag = lag_of(name);
        if let Some(b) = lag["lag_bytes"].as_u64() {
            perf.push(format!("{}={b}B", perf_label(&format!("lag_bytes_{name}"))));
        }
        if let Some(s) = lag["replay_lag_s"].as_f64() {
            perf.push(format!(
                "{}={s}s",
                perf_label(&format!("lag_seconds_{name}"))
            ));
        }
        if let Some(a) = n["age_s"].as_f64() {
            perf.push(format!(
                "{}={a:.1}s",
                perf_label(&format!("agent_age_{name}"))
            ));
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

    /// The plugin output grammar: one line, `TEXT | 'label'=value[UOM][;warn;crit;min;max] ...`.
    fn assert_plugin_grammar(line: &str) {
        assert!(
            !line.contains('\n') && !line.chars().any(char::is_control),
            "{line:?}"
        );
        let mut parts = line.splitn(2, '|');
        let text = parts.next().unwrap_or_default();
        assert!(!text.is_empty());
        let perf = parts.next().unwrap_or_default();
        assert!(!perf.contains('|'), "a second `|` in {line:?}");
        let mut labels = Vec::new();
        let mut rest = perf.trim();
        while !rest.is_empty() {
            let (label, after) = if let Some(quoted) = rest.strip_prefix('\'') {
                let mut end = 0;
                let b = quoted.as_bytes();
                while end < b.len() {
                    if b[end] == b'\'' && b.get(end + 1) == Some(&b'\'') {
                        end += 2;
                    } else if b[end] == b'\'' {
                        break;
                    } else {
                        end += 1;
                    }
                }
                (&quoted[..end], &quoted[end + 1..])
            } else {
                let end = rest.find('=').expect("a label ends at =");
                (&rest[..end], &rest[end..])
            };
            assert!(!label.contains('='), "{label:?}");
            let after = after.strip_prefix('=').expect("label=value");
            let value_end = after.find(' ').unwrap_or(after.len());
            let value = &after[..value_end];
            let number: String = value
                .split(';')
                .next()
                .unwrap_or_default()
                .chars()
                .take_while(|c| c.is_ascii_digit() || ".-".contains(*c))
                .collect();
            assert!(number.parse::<f64>().is_ok(), "value {value:?} in {line:?}");
            labels.push(label.to_string());
            rest = after[value_end..].trim_start();
        }
        let mut unique = labels.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), labels.len(), "a label twice: {labels:?}");
    }

    #[test]
    fn forged_names_never_reach_the_plugin_line() {
        let evil = "node1|x=1\nCRITICAL - forged";
        let d = serde_json::json!({
            "cluster": "demo", "verdict": "critical", "leader": evil,
            "findings": [{"code": "SPLIT_BRAIN", "nodes": [evil, "node2"]}],
            "blind_spots": ["a\nb|c"],
            "nodes": [
                {"name": evil, "age_s": 0.4, "results": {
                    "postgres.replication": {"facts": {"streaming": 1, "expected": 2}}}},
                {"name": "node2", "age_s": 0.5, "results": {
                    "postgres.replication": {"facts": {"streaming": 0, "expected": 2}}}},
                {"name": "it's", "age_s": 0.6},
            ],
            "replication": [{"node": evil, "lag_bytes": 1, "replay_lag_s": 0.5}]
        });
        let (line, code) = check_line(&d);
        assert_eq!(code, 2);
        assert_plugin_grammar(&line);
        assert!(
            line.starts_with(
                "VIGIE CRITICAL - demo critical, leader node1/x=1 CRITICAL - forged: SPLIT_BRAIN"
            ),
            "{line}"
        );
        assert_eq!(line.matches("replicas_streaming").count(), 1, "{line}");
        assert!(line.contains("'agent_age_it''s'=0.6s"), "{line}");
        // The normal line passes the same grammar.
        let (line, _) = check_line(
            &serde_json::json!({"cluster": "demo", "verdict": "healthy", "leader": "node1",
            "nodes": [{"name": "node1", "age_s": 1.0}]}),
        );
        assert_plugin_grammar(&line);
    }
}
