//! `patroni.config`: Patroni's dynamic configuration (`GET /config`: the DCS's `config` key, from
//! Patroni's cache while it is valid) — what the cluster promises about synchronous replication
//! (`synchronous_mode`, `_strict`, `synchronous_node_count`), failover (`maximum_lag_on_failover`,
//! `ttl`, `loop_wait`, `retry_timeout`, `failsafe_mode`) and the permanent slots. The same on
//! every member; the collector judges it against what PostgreSQL does.

use serde_json::Value;
use vigie_proto::Facts;
use vigie_proto::v1::{PatroniConfigFacts, SyncMode};

use super::{Outcome, ProbeId};
use crate::http;
use crate::result::ProbeResult;

pub async fn probe(client: &reqwest::Client, base: &reqwest::Url) -> ProbeResult {
    let id = ProbeId::PatroniConfig;
    match http::get(client, &http::endpoint(base, "config")).await {
        Ok(a) if a.status != 200 => id.critical(format!(
            "Patroni /config answered {} (its DCS cache holds no configuration)",
            a.status
        )),
        Ok(a) => match a.json() {
            Ok(doc) => judge(&doc),
            Err(e) => id.critical(format!("Patroni /config {e}")),
        },
        Err(e) => id.critical(e),
    }
}

/// Judges a `/config` document (pure).
pub fn judge(doc: &Value) -> ProbeResult {
    let id = ProbeId::PatroniConfig;
    if !doc.is_object() {
        return id.critical("Patroni /config is not a JSON object");
    }
    let mode = sync_mode(&doc["synchronous_mode"]);
    let facts = PatroniConfigFacts {
        synchronous_mode: mode as i32,
        synchronous_mode_strict: truthy(&doc["synchronous_mode_strict"]),
        synchronous_node_count: small(&doc["synchronous_node_count"]).unwrap_or(1),
        permanent_slots: doc["slots"]
            .as_object()
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default(),
        maximum_lag_on_failover: doc["maximum_lag_on_failover"].as_u64(),
        ttl: small(&doc["ttl"]),
        loop_wait: small(&doc["loop_wait"]),
        retry_timeout: small(&doc["retry_timeout"]),
        failsafe_mode: truthy(&doc["failsafe_mode"]),
    };
    let message = match mode {
        SyncMode::Off | SyncMode::Unspecified => "asynchronous replication".to_string(),
        SyncMode::Unknown => format!(
            "synchronous_mode {} (a value this agent does not know)",
            doc["synchronous_mode"]
        ),
        m => format!(
            "synchronous_mode {}{}, {} sync standby(s)",
            if m == SyncMode::Quorum {
                "quorum"
            } else {
                "on"
            },
            if facts.synchronous_mode_strict {
                " (strict)"
            } else {
                ""
            },
            facts.synchronous_node_count
        ),
    };
    id.ok(message).with(Facts::PatroniConfig(facts))
}

/// Patroni reads `synchronous_mode` as a boolean or, since 4.0, the word `quorum`; YAML and
/// `patronictl edit-config` also leave words such as `on` or `"true"`.
fn sync_mode(v: &Value) -> SyncMode {
    match v {
        Value::Null => SyncMode::Off,
        Value::Bool(true) => SyncMode::On,
        Value::Bool(false) => SyncMode::Off,
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "on" | "true" | "yes" | "1" => SyncMode::On,
            "off" | "false" | "no" | "0" | "" => SyncMode::Off,
            "quorum" => SyncMode::Quorum,
            _ => SyncMode::Unknown,
        },
        _ => SyncMode::Unknown,
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
        Value::String(s) => matches!(s.to_ascii_lowercase().as_str(), "on" | "true" | "yes" | "1"),
        _ => false,
    }
}

/// A count as Patroni reads it: a number, or a number in a string (`"2"`, from YAML).
fn small(v: &Value) -> Option<u32> {
    match v {
        Value::String(s) => s.trim().parse().ok(),
        _ => v.as_u64().and_then(|n| u32::try_from(n).ok()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::result::Status;

    fn facts(doc: Value) -> PatroniConfigFacts {
        let r = judge(&doc);
        assert_eq!(r.status, Status::Ok, "{}", r.message);
        match r.facts {
            Some(Facts::PatroniConfig(f)) => f,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reads_the_synchronous_settings_in_every_spelling_patroni_accepts() {
        for (value, mode) in [
            (json!(true), SyncMode::On),
            (json!("on"), SyncMode::On),
            (json!(false), SyncMode::Off),
            (json!(null), SyncMode::Off),
            (json!("quorum"), SyncMode::Quorum),
            (json!("sometimes"), SyncMode::Unknown),
            (json!(3), SyncMode::Unknown),
        ] {
            let f = facts(json!({"synchronous_mode": value, "ttl": 30}));
            assert_eq!(f.synchronous_mode(), mode, "{value}");
        }
        let f = facts(json!({
            "ttl": 30, "loop_wait": 10, "retry_timeout": 10, "maximum_lag_on_failover": 1048576,
            "synchronous_mode": true, "synchronous_mode_strict": "true", "synchronous_node_count": 2,
            "slots": {"lab_forgotten": {"type": "physical"}}, "failsafe_mode": true
        }));
        assert!(f.synchronous_mode_strict && f.failsafe_mode);
        assert_eq!(f.synchronous_node_count, 2);
        assert_eq!(f.permanent_slots, ["lab_forgotten"]);
        assert_eq!(
            (f.ttl, f.loop_wait, f.retry_timeout),
            (Some(30), Some(10), Some(10))
        );
        assert_eq!(f.maximum_lag_on_failover, Some(1_048_576));
        // Patroni's default: one sync standby.
        assert_eq!(facts(json!({})).synchronous_node_count, 1);
        let f = facts(json!({"synchronous_mode_strict": 1, "synchronous_node_count": "2"}));
        assert!(f.synchronous_mode_strict);
        assert_eq!(f.synchronous_node_count, 2);
    }

    #[test]
    fn garbage_is_a_critical_result() {
        assert_eq!(judge(&json!([1, 2])).status, Status::Critical);
        assert_eq!(judge(&json!("x")).status, Status::Critical);
    }
}
