//! `patroni.node`: Patroni's `GET /patroni` for this node — role, state, timeline, WAL
//! positions, pending restart, when it last reached the DCS. The role found here is what the
//! role-dependent PostgreSQL probes judge against.

use serde_json::Value;

use vigie_proto::Facts;
use vigie_proto::v1::PatroniNodeFacts;

pub use super::patroni_words::Role;
use super::patroni_words::{StateKind, state_kind};
use super::{Outcome, ProbeId};
use crate::http;
use crate::result::ProbeResult;

/// Patroni's last DCS contact older than this is a warning (a leader demotes itself after `ttl`).
const DCS_STALE_SECS: i64 = 30;

/// What the other probes need from `/patroni`.
#[derive(Debug, Clone)]
pub struct NodeView {
    pub role: Role,
    pub state: String,
    pub timeline: Option<u64>,
    pub paused: bool,
}

/// Fetches this node's `/patroni` document (a JSON object, or why not).
pub async fn fetch(client: &reqwest::Client, base: &reqwest::Url) -> Result<Value, String> {
    let answer = http::get(client, &http::endpoint(base, "patroni")).await?;
    match answer.json() {
        Ok(v) if v.is_object() => Ok(v),
        Ok(_) => Err("Patroni /patroni is not a JSON object".to_string()),
        Err(e) => Err(format!("Patroni /patroni {e}")),
    }
}

/// Judges the fetch of this cycle: a failed fetch is critical.
pub fn judge_fetched(
    fetched: &Result<Value, String>,
    now_unix: i64,
) -> (ProbeResult, Option<NodeView>) {
    match fetched {
        Ok(doc) => judge(doc, now_unix),
        Err(e) => (ProbeId::PatroniNode.critical(e.clone()), None),
    }
}

/// Judges a `/patroni` document (pure: table-tested below).
pub fn judge(doc: &Value, now_unix: i64) -> (ProbeResult, Option<NodeView>) {
    let id = ProbeId::PatroniNode;
    let Some(role_text) = doc["role"].as_str() else {
        return (
            id.critical(format!(
                "Patroni /patroni has no role: {}",
                super::excerpt(&doc.to_string(), 200)
            )),
            None,
        );
    };
    let role = Role::parse(role_text);
    let state = doc["state"].as_str().unwrap_or("unknown").to_string();
    let timeline = doc["timeline"].as_u64();
    let paused = doc["pause"].as_bool().unwrap_or(false);
    let pending_restart = doc["pending_restart"].as_bool().unwrap_or(false);
    let dcs_age = doc["dcs_last_seen"].as_i64().map(|t| now_unix - t);

    let kind = state_kind(&state);
    let mut result = if kind == StateKind::Unknown {
        id.critical(format!(
            "{} is in a state this agent does not know: {state:?}",
            role.as_str()
        ))
    } else if kind == StateKind::ArchiveRecovery {
        id.warning(format!(
            "{} is {state}: replaying from the WAL archive, not streaming",
            role.as_str()
        ))
    } else if kind != StateKind::Running {
        id.critical(format!("{} is {state}", role.as_str()))
    } else if !role.known() {
        id.warning(format!(
            "{state}, in a role this agent does not know: {:?}",
            role.as_str()
        ))
    } else if dcs_age.is_some_and(|a| a > DCS_STALE_SECS) {
        id.warning(format!(
            "{} {state}, but Patroni last reached the DCS {}s ago",
            role.as_str(),
            dcs_age.unwrap_or_default()
        ))
    } else if pending_restart {
        id.warning(format!(
            "{} {state}, restart pending to apply settings",
            role.as_str()
        ))
    } else {
        id.ok(format!(
            "{} {state}{}",
            role.as_str(),
            timeline
                .map(|t| format!(" on timeline {t}"))
                .unwrap_or_default()
        ))
    };
    let text = |key: &str| doc[key].as_str().map(str::to_string);
    let xlog = &doc["xlog"];
    result = result.with(Facts::PatroniNode(PatroniNodeFacts {
        role: role.as_str().to_string(),
        role_known: role.known(),
        state: state.clone(),
        state_kind: kind as i32,
        pending_restart,
        paused,
        timeline,
        dcs_last_seen_age_s: dcs_age,
        postmaster_start_time: text("postmaster_start_time"),
        server_version: doc["server_version"]
            .as_u64()
            .and_then(|v| u32::try_from(v).ok()),
        patroni_version: doc["patroni"]["version"].as_str().map(str::to_string),
        replication_state: text("replication_state"),
        wal_location: xlog["location"].as_u64(),
        wal_received_location: xlog["received_location"].as_u64(),
        wal_replayed_location: xlog["replayed_location"].as_u64(),
    }));
    let view = NodeView {
        role,
        state,
        timeline,
        paused,
    };
    (result, Some(view))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::Status;
    use serde_json::json;

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn judge_table() {
        let table = [
            (
                json!({"role": "master", "state": "running", "timeline": 3, "dcs_last_seen": NOW - 2}),
                Status::Ok,
                Some(Role::Primary),
            ),
            (
                json!({"role": "primary", "state": "running"}),
                Status::Ok,
                Some(Role::Primary),
            ),
            (
                json!({"role": "replica", "state": "streaming"}),
                Status::Ok,
                Some(Role::Replica),
            ),
            (
                json!({"role": "replica", "state": "starting"}),
                Status::Critical,
                Some(Role::Replica),
            ),
            (
                json!({"role": "replica", "state": "running", "dcs_last_seen": NOW - 100}),
                Status::Warning,
                Some(Role::Replica),
            ),
            (
                json!({"role": "replica", "state": "running", "pending_restart": true}),
                Status::Warning,
                Some(Role::Replica),
            ),
            (json!({"state": "running"}), Status::Critical, None),
            // Patroni 4's words: all parse, none is silently fine.
            (
                json!({"role": "quorum_standby", "state": "running"}),
                Status::Ok,
                Some(Role::Replica),
            ),
            (
                json!({"role": "promoted", "state": "running"}),
                Status::Ok,
                Some(Role::Promoted),
            ),
            (
                json!({"role": "demoted", "state": "stopping"}),
                Status::Critical,
                Some(Role::Demoted),
            ),
            (
                json!({"role": "standby_leader", "state": "running"}),
                Status::Ok,
                Some(Role::StandbyLeader),
            ),
            (
                json!({"role": "replica", "state": "in archive recovery"}),
                Status::Warning,
                Some(Role::Replica),
            ),
            (
                json!({"role": "replica", "state": "start failed"}),
                Status::Critical,
                Some(Role::Replica),
            ),
            (
                json!({"role": "replica", "state": "hibernating"}),
                Status::Critical,
                Some(Role::Replica),
            ),
            (
                json!({"role": "archiver", "state": "running"}),
                Status::Warning,
                Some(Role::Other("archiver".into())),
            ),
        ];
        for (doc, status, role) in table {
            let (r, view) = judge(&doc, NOW);
            assert_eq!(r.status, status, "{doc}: {}", r.message);
            assert_eq!(view.map(|v| v.role), role, "{doc}");
        }
    }

    #[test]
    fn roles_old_and_new_names() {
        assert_eq!(Role::parse("master"), Role::Primary);
        assert_eq!(Role::parse("primary"), Role::Primary);
        assert_eq!(Role::Primary.expects_recovery(), Some(false));
        assert_eq!(Role::parse("replica").expects_recovery(), Some(true));
        assert_eq!(Role::parse("uninitialized").expects_recovery(), None);
    }
}
