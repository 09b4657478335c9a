//! `--once` output: a table for people, JSON for machines.

use serde_json::json;

use crate::config::AgentConfig;
use crate::result::{ProbeResult, overall};

/// A table: one line per probe, worst first within the catalogue order it keeps.
pub fn table(cfg: &AgentConfig, results: &[ProbeResult]) -> String {
    let width = results.iter().map(|r| r.id.name().len()).max().unwrap_or(0);
    let mut out = format!(
        "vigie-agent {} — node {}, cluster {}: {} probes, {}\n\n",
        crate::VERSION,
        cfg.node,
        cfg.cluster,
        results.len(),
        overall(results).as_str().to_uppercase()
    );
    for r in results {
        out.push_str(&format!(
            "{:<8}  {:<width$}  {}  ({:.1} ms)\n",
            r.status.as_str().to_uppercase(),
            r.id.name(),
            r.message,
            r.duration_us as f64 / 1000.0,
        ));
    }
    out
}

/// One JSON document: the node, the overall status and every result with its facts.
pub fn json(cfg: &AgentConfig, results: &[ProbeResult]) -> String {
    let doc = json!({
        "node": cfg.node,
        "cluster": cfg.cluster,
        "agent_version": crate::VERSION,
        "components": crate::config::components(cfg),
        "status": overall(results),
        "results": results,
    });
    serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}
