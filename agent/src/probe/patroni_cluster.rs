//! `patroni.cluster`: Patroni's `GET /cluster` — members with their roles, states, timelines and
//! lag, maintenance mode, scheduled actions. Judged as this node sees it; the collector
//! correlates every node's view.

use serde_json::Value;
use vigie_proto::Facts;
use vigie_proto::v1::{PatroniClusterFacts, PatroniMember, ScheduledSwitchover};

use super::patroni_node::Role;
use super::patroni_words::{StateKind, state_kind};
use super::{Outcome, ProbeId};
use crate::http;
use crate::result::{ProbeResult, Status, human_bytes};

/// One member as `/cluster` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub name: String,
    /// PostgreSQL address Patroni publishes for the member.
    pub host: Option<String>,
    pub role: Role,
    pub state: String,
    pub timeline: Option<u64>,
    /// Bytes behind the leader as Patroni computes it (`None` for the leader or "unknown").
    pub lag: Option<u64>,
    /// Listed as `sync_standby` (or `quorum_standby`).
    pub sync_standby: bool,
}

/// What the other probes need from `/cluster`.
#[derive(Debug, Clone)]
pub struct ClusterView {
    pub members: Vec<Member>,
    pub paused: bool,
}

impl ClusterView {
    /// Members other than `node`.
    pub fn others<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a Member> + 'a {
        self.members.iter().filter(move |m| m.name != node)
    }

    pub fn leader(&self) -> Option<&Member> {
        self.members
            .iter()
            .find(|m| matches!(m.role, Role::Primary | Role::StandbyLeader))
    }
}

pub async fn probe(
    client: &reqwest::Client,
    base: &reqwest::Url,
    node: &str,
    lag_warning_bytes: u64,
) -> (ProbeResult, Option<ClusterView>) {
    let id = ProbeId::PatroniCluster;
    let answer = match http::get(client, &http::endpoint(base, "cluster")).await {
        Ok(a) => a,
        Err(e) => return (id.critical(e), None),
    };
    match answer.json() {
        Ok(doc) if doc["members"].is_array() => judge(&doc, node, lag_warning_bytes),
        Ok(_) => (id.critical("Patroni /cluster has no member list"), None),
        Err(e) => (id.critical(format!("Patroni /cluster {e}")), None),
    }
}

/// Judges a `/cluster` document (pure).
pub fn judge(
    doc: &Value,
    node: &str,
    lag_warning_bytes: u64,
) -> (ProbeResult, Option<ClusterView>) {
    let id = ProbeId::PatroniCluster;
    let members: Vec<Member> = doc["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            Some(Member {
                name: m["name"].as_str()?.to_string(),
                host: m["host"].as_str().map(str::to_string),
                role: Role::parse(m["role"].as_str().unwrap_or("unknown")),
                state: m["state"].as_str().unwrap_or("unknown").to_string(),
                timeline: m["timeline"].as_u64(),
                lag: m["lag"].as_u64(),
                sync_standby: matches!(m["role"].as_str(), Some("sync_standby" | "quorum_standby")),
            })
        })
        .collect();
    let paused = doc["pause"].as_bool().unwrap_or(false);
    let leaders: Vec<&Member> = members
        .iter()
        .filter(|m| matches!(m.role, Role::Primary | Role::StandbyLeader))
        .collect();

    let mut status = Status::Ok;
    let mut problems: Vec<String> = Vec::new();
    let mut raise = |s: Status, p: String| {
        status = status.worst(s);
        problems.push(p);
    };
    match leaders.len() {
        0 => raise(Status::Critical, "no leader".to_string()),
        1 => {}
        n => raise(
            Status::Critical,
            format!(
                "{n} leaders: {}",
                leaders
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
    }
    for m in &members {
        match state_kind(&m.state) {
            StateKind::Running => {}
            StateKind::Unknown => raise(
                Status::Warning,
                format!(
                    "{} is in a state this agent does not know: {:?}",
                    m.name, m.state
                ),
            ),
            _ => raise(Status::Warning, format!("{} is {}", m.name, m.state)),
        }
        if !m.role.known() {
            raise(
                Status::Warning,
                format!(
                    "{} has a role this agent does not know: {:?}",
                    m.name,
                    m.role.as_str()
                ),
            );
        }
        if let Some(lag) = m.lag.filter(|&l| l > lag_warning_bytes) {
            raise(
                Status::Warning,
                format!("{} lags {}", m.name, human_bytes(lag)),
            );
        }
    }
    if !members.iter().any(|m| m.name == node) {
        raise(
            Status::Warning,
            format!("this node ({node}) is not a member"),
        );
    }
    if paused {
        raise(
            Status::Warning,
            "maintenance mode: Patroni will not fail over".to_string(),
        );
    }

    let summary = format!(
        "{} members, leader {}",
        members.len(),
        leaders.first().map_or("none", |m| m.name.as_str())
    );
    let message = if problems.is_empty() {
        summary
    } else {
        format!("{summary}: {}", problems.join("; "))
    };
    let member_facts: Vec<PatroniMember> = members
        .iter()
        .map(|m| PatroniMember {
            name: m.name.clone(),
            host: m.host.clone(),
            role: m.role.as_str().to_string(),
            role_known: m.role.known(),
            state: m.state.clone(),
            state_kind: state_kind(&m.state) as i32,
            timeline: m.timeline,
            lag_bytes: m.lag,
            sync_standby: m.sync_standby,
        })
        .collect();
    let switchover = &doc["scheduled_switchover"];
    let scheduled_switchover = (!switchover.is_null()).then(|| ScheduledSwitchover {
        at: match &switchover["at"] {
            Value::String(at) => at.clone(),
            Value::Null => switchover.to_string(),
            other => other.to_string(),
        },
        from: switchover["from"].as_str().map(str::to_string),
        to: switchover["to"].as_str().map(str::to_string),
    });
    let result =
        ProbeResult::new(id, status, message).with(Facts::PatroniCluster(PatroniClusterFacts {
            members: member_facts,
            leader: leaders.first().map(|m| m.name.clone()),
            paused,
            scheduled_switchover,
        }));
    (result, Some(ClusterView { members, paused }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(members: Value, pause: bool) -> Value {
        json!({"members": members, "pause": pause})
    }

    #[test]
    fn judge_table() {
        let healthy = json!([
            {"name": "node1", "role": "leader", "state": "running", "timeline": 2},
            {"name": "node2", "role": "replica", "state": "running", "timeline": 2, "lag": 0},
            {"name": "node3", "role": "replica", "state": "running", "timeline": 2, "lag": 0},
        ]);
        let no_leader = json!([
            {"name": "node2", "role": "replica", "state": "running", "lag": 0},
        ]);
        let two_leaders = json!([
            {"name": "node1", "role": "leader", "state": "running"},
            {"name": "node2", "role": "standby_leader", "state": "running"},
        ]);
        let stopped = json!([
            {"name": "node1", "role": "leader", "state": "running"},
            {"name": "node2", "role": "replica", "state": "stopped", "lag": "unknown"},
        ]);
        let lagging = json!([
            {"name": "node1", "role": "leader", "state": "running"},
            {"name": "node2", "role": "replica", "state": "running", "lag": 999_999_999u64},
        ]);
        let patroni4 = json!([
            {"name": "node1", "role": "leader", "state": "running", "timeline": 2},
            {"name": "node2", "role": "quorum_standby", "state": "streaming", "timeline": 2, "lag": 0},
            {"name": "node3", "role": "sync_standby", "state": "streaming", "timeline": 2, "lag": 0},
        ]);
        let archive = json!([
            {"name": "node1", "role": "leader", "state": "running"},
            {"name": "node2", "role": "replica", "state": "in archive recovery", "lag": 0},
        ]);
        let odd = json!([
            {"name": "node1", "role": "leader", "state": "running"},
            {"name": "node2", "role": "replica", "state": "hibernating", "lag": 0},
        ]);
        let table = [
            (
                doc(healthy.clone(), false),
                Status::Ok,
                "3 members, leader node1",
            ),
            (doc(healthy, true), Status::Warning, "maintenance mode"),
            (doc(no_leader, false), Status::Critical, "no leader"),
            (
                doc(two_leaders, false),
                Status::Critical,
                "2 leaders: node1, node2",
            ),
            (doc(stopped, false), Status::Warning, "node2 is stopped"),
            (doc(lagging, false), Status::Warning, "node2 lags"),
            (doc(patroni4, false), Status::Ok, "3 members, leader node1"),
            (
                doc(archive, false),
                Status::Warning,
                "node2 is in archive recovery",
            ),
            (
                doc(odd, false),
                Status::Warning,
                "node2 is in a state this agent does not know: \"hibernating\"",
            ),
        ];
        for (d, status, text) in table {
            let (r, _) = judge(&d, "node1", 16 << 20);
            assert_eq!(r.status, status, "{d}: {}", r.message);
            assert!(r.message.contains(text), "{}", r.message);
        }
    }

    #[test]
    fn node_missing_from_members_is_a_warning() {
        let d = doc(
            json!([{"name": "node1", "role": "leader", "state": "running"}]),
            false,
        );
        let (r, view) = judge(&d, "node9", 1);
        assert_eq!(r.status, Status::Warning);
        assert_eq!(view.expect("view").others("node9").count(), 1);
    }
}
