//! `patroni.health`: whether Patroni says PostgreSQL runs on this node — what its `GET /health`
//! answers (200 when `get_postgresql_status()` has state `running`, 503 otherwise: patroni/api.py),
//! judged from the `/patroni` document the node probe fetches, which is that same status. One REST
//! call (a connection, a Patroni thread and a Patroni-side query) fewer per cycle.

use serde_json::Value;

use vigie_proto::Facts;
use vigie_proto::v1::PatroniHealthFacts;

use super::{Outcome, ProbeId};
use crate::result::ProbeResult;

/// Judges the `/patroni` fetch of this cycle (pure: tested below).
pub fn judge(fetched: &Result<Value, String>) -> ProbeResult {
    let id = ProbeId::PatroniHealth;
    let doc = match fetched {
        Ok(doc) => doc,
        Err(e) => return id.critical(e.clone()),
    };
    match doc["state"].as_str() {
        Some("running") => id
            .ok("Patroni reports PostgreSQL running")
            .with(facts("running")),
        Some(state) => id
            .critical(format!(
                "Patroni reports PostgreSQL {state} (/health answers 503)"
            ))
            .with(facts(state)),
        None => id.critical("Patroni /patroni has no state"),
    }
}

fn facts(state: &str) -> Facts {
    Facts::PatroniHealth(PatroniHealthFacts {
        state: state.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::Status;
    use serde_json::json;

    #[test]
    fn running_is_ok_anything_else_critical() {
        assert_eq!(judge(&Ok(json!({"state": "running"}))).status, Status::Ok);
        let stopped = judge(&Ok(json!({"state": "stopped"})));
        assert_eq!(stopped.status, Status::Critical);
        assert!(stopped.message.contains("stopped"), "{}", stopped.message);
        assert_eq!(judge(&Ok(json!({}))).status, Status::Critical);
        assert_eq!(
            judge(&Err("connection refused".into())).status,
            Status::Critical
        );
    }
}
