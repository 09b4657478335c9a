//! `etcd.health`: the local etcd member's `/health`, its view of the leader and raft term
//! (`/v3/maintenance/status`) and the member list (`/v3/cluster/member/list`).

use serde_json::{Value, json};

use vigie_proto::Facts;
use vigie_proto::v1::{EtcdHealthFacts, EtcdMember};

use super::{Outcome, ProbeId};
use crate::http;
use crate::result::ProbeResult;

pub async fn probe(client: &reqwest::Client, base: &reqwest::Url) -> ProbeResult {
    let id = ProbeId::EtcdHealth;
    let health = match http::get(client, &http::endpoint(base, "health")).await {
        Ok(a) => a,
        // A health read that times out (as during an election) says nothing of the member.
        Err(e) if http::is_timeout(&e) => return id.critical(e).unanswered(),
        Err(e) => return id.critical(e),
    };
    let health_doc = match health.json() {
        Ok(v) => v,
        Err(e) => return id.critical(format!("etcd /health {e}")),
    };
    let (status_url, members_url) = (
        http::endpoint(base, "v3/maintenance/status"),
        http::endpoint(base, "v3/cluster/member/list"),
    );
    let empty = json!({});
    let (status_doc, members_doc) = tokio::join!(
        http::post_json(client, &status_url, &empty),
        http::post_json(client, &members_url, &empty),
    );
    let status_doc = status_doc.and_then(|a| a.json());
    let members_doc = members_doc.and_then(|a| a.json());
    judge(&health_doc, status_doc, members_doc)
}

/// Judges etcd's answers (pure). etcd's JSON gateway writes 64-bit ids as strings.
pub fn judge(
    health: &Value,
    status: Result<Value, String>,
    members: Result<Value, String>,
) -> ProbeResult {
    let id = ProbeId::EtcdHealth;
    let healthy = health["health"] == "true" || health["health"] == true;
    let id_of = |v: &Value| -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    let urls = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|u| u.as_str().map(str::to_string))
            .collect()
    };
    let member_list: Vec<EtcdMember> = members
        .as_ref()
        .ok()
        .and_then(|m| m["members"].as_array())
        .into_iter()
        .flatten()
        .map(|m| EtcdMember {
            id: id_of(&m["ID"]).unwrap_or_default(),
            name: m["name"].as_str().unwrap_or_default().to_string(),
            client_urls: urls(&m["clientURLs"]),
            peer_urls: urls(&m["peerURLs"]),
        })
        .collect();
    let (leader, term, member_id, version) = match &status {
        Ok(s) => (
            id_of(&s["leader"]).filter(|l| l != "0"),
            s["raftTerm"]
                .as_str()
                .and_then(|t| t.parse::<u64>().ok())
                .or(s["raftTerm"].as_u64()),
            id_of(&s["header"]["member_id"]),
            s["version"].as_str().map(str::to_string),
        ),
        Err(_) => (None, None, None, None),
    };
    let leader_name = leader.as_ref().and_then(|l| {
        member_list
            .iter()
            .find(|m| m.id == *l)
            .map(|m| m.name.clone())
    });
    let result = if !healthy {
        let reason = health["reason"]
            .as_str()
            .unwrap_or("no leader or no quorum");
        id.critical(format!("etcd member unhealthy: {reason}"))
    } else if let Err(e) = &status {
        id.warning(format!("etcd healthy, but its status is unreadable: {e}"))
    } else if leader.is_none() {
        id.critical("etcd member sees no leader")
    } else {
        id.ok(format!(
            "healthy, {} members, leader {}, term {}",
            member_list.len(),
            leader_name.as_deref().or(leader.as_deref()).unwrap_or("?"),
            term.map_or("?".to_string(), |t| t.to_string())
        ))
    };
    result.with(Facts::EtcdHealth(EtcdHealthFacts {
        healthy,
        leader_id: leader,
        leader_name,
        raft_term: term,
        member_id,
        version,
        members: member_list,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::Status;

    fn status(leader: &str) -> Result<Value, String> {
        Ok(
            json!({"header": {"member_id": "11"}, "leader": leader, "raftTerm": "4", "version": "3.4.23"}),
        )
    }

    fn members() -> Result<Value, String> {
        Ok(json!({"members": [{"ID": "11", "name": "etcd1"}, {"ID": "12", "name": "etcd2"}]}))
    }

    #[test]
    fn judge_table() {
        let ok = judge(&json!({"health": "true"}), status("12"), members());
        assert_eq!(ok.status, Status::Ok, "{}", ok.message);
        assert!(
            ok.message.contains("leader etcd2, term 4"),
            "{}",
            ok.message
        );
        let unhealthy = judge(
            &json!({"health": "false", "reason": "RAFT NO LEADER"}),
            status("0"),
            members(),
        );
        assert_eq!(unhealthy.status, Status::Critical);
        assert!(unhealthy.message.contains("RAFT NO LEADER"));
        let no_leader = judge(&json!({"health": "true"}), status("0"), members());
        assert_eq!(no_leader.status, Status::Critical);
        let blind = judge(
            &json!({"health": "true"}),
            Err("timed out".into()),
            members(),
        );
        assert_eq!(blind.status, Status::Warning);
        let garbage = judge(&json!([1, 2]), status("12"), Err("x".into()));
        assert_eq!(garbage.status, Status::Critical);
    }
}
