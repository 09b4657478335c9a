//! Detection times: the scenario suite's JSON lines (one per scenario run, see
//! `vigie_tests::scenario`) grouped by scenario and agent interval — median and max of the time
//! from the fault to the verdict change, beside when HAProxy's own checks and Patroni's `/cluster`
//! changed in the same runs.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::report::{Table, median_max, publish};

fn fmt(values: &[f64]) -> String {
    match median_max(values) {
        Some((med, max)) => format!("{med:.2} s / {max:.2} s"),
        None => "-".into(),
    }
}

/// Groups lines by (scenario, interval); keeps the order scenarios first appear in.
fn group(text: &str) -> Vec<((String, f64), Vec<Value>)> {
    let mut order: Vec<(String, f64)> = Vec::new();
    let mut groups: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            eprintln!("detection: skipping an unreadable line: {line}");
            continue;
        };
        let key = (
            v["scenario"].as_str().unwrap_or("?").to_string(),
            v["interval_s"].as_f64().unwrap_or(0.0),
        );
        let k = format!("{}@{}", key.0, key.1);
        if !groups.contains_key(&k) {
            order.push(key);
        }
        groups.entry(k).or_default().push(v);
    }
    order.sort_by(|a, b| a.1.total_cmp(&b.1));
    order
        .into_iter()
        .map(|key| {
            let k = format!("{}@{}", key.0, key.1);
            let runs = groups.remove(&k).unwrap_or_default();
            (key, runs)
        })
        .collect()
}

fn field(runs: &[Value], name: &str) -> Vec<f64> {
    runs.iter().filter_map(|r| r[name].as_f64()).collect()
}

pub fn table(text: &str) -> String {
    let mut t = Table::new(&[
        "scenario",
        "interval",
        "runs",
        "verdict changed (median / max)",
        "interval + 1 s",
        "HAProxy checks changed",
        "Patroni /cluster changed",
        "Patroni new leader",
        "healthy after repair",
    ]);
    for ((scenario, interval), runs) in group(text) {
        let detected = field(&runs, "detected_s");
        t.row(&[
            scenario,
            format!("{interval} s"),
            format!("{} ({} detected)", runs.len(), detected.len()),
            fmt(&detected),
            format!("{:.0} s", interval + 1.0),
            fmt(&field(&runs, "haproxy_changed_s")),
            fmt(&field(&runs, "patroni_changed_s")),
            fmt(&field(&runs, "patroni_leader_changed_s")),
            fmt(&field(&runs, "recovered_s")),
        ]);
    }
    t.render()
}

pub fn run(times: &Path, command: &str) {
    let text =
        std::fs::read_to_string(times).unwrap_or_else(|e| panic!("read {}: {e}", times.display()));
    let body = format!(
        "{}\n\nTimes from the fault command (`lab.sh fault …`) to the first verdict from the \
         collector's API that shows it, polled every 200 ms; the lab runs Patroni's fast profile \
         (`VIGIE_LAB_PROFILE=fast`). HAProxy and Patroni columns are the same runs' reference \
         clocks: the first change of HAProxy's server states (`show stat`) and of Patroni's \
         `/cluster` (any member's role or state; a new leader), polled every 100 ms. `-` means it \
         did not change before the repair.",
        table(&text)
    );
    publish("detection", "Detection time per scenario", command, &body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_runs_by_scenario_and_interval() {
        let text = r#"{"scenario":"a","interval_s":1.0,"detected_s":1.0,"recovered_s":2.0}
{"scenario":"a","interval_s":1.0,"detected_s":3.0,"haproxy_changed_s":0.5}
{"scenario":"a","interval_s":5.0,"detected_s":6.0}
not json
{"scenario":"b","interval_s":1.0,"detected_s":null}"#;
        let out = table(text);
        assert!(out.contains("| a | 1 s | 2 (2 detected) | 2.00 s / 3.00 s | 2 s | 0.50 s / 0.50 s | - | - | 2.00 s / 2.00 s |"), "{out}");
        assert!(
            out.contains("| a | 5 s | 1 (1 detected) | 6.00 s / 6.00 s | 6 s |"),
            "{out}"
        );
        assert!(out.contains("| b | 1 s | 1 (0 detected) | - |"), "{out}");
    }
}
