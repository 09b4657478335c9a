//! DUPLICATE_AGENT: a second agent tried to speak for a node whose stream was live, and was
//! refused. Two hosts configured with the same `node =` is a real mistake: one of them is not
//! monitored at all. Said for ten minutes after the last refused attempt.

use crate::verdict::view::View;
use crate::verdict::{Code, Evidence, Finding, Severity};

/// How long a refused duplicate stays a finding after its last attempt (agents retry within an
/// interval, so a duplicate still configured keeps it open).
pub const REMEMBERED_MS: i64 = 10 * 60 * 1000;

pub fn check(view: &View<'_>, findings: &mut Vec<Finding>) {
    for n in &view.nodes {
        let Some(i) = &n.state.impostor else {
            continue;
        };
        let ago_ms = view.now_mono_ms - i.last_mono_ms;
        if ago_ms > REMEMBERED_MS {
            continue;
        }
        let name = n.name();
        findings.push(Finding {
            evidence: vec![Evidence {
                node: name.to_string(),
                probe: "ingest".to_string(),
                observed: format!("second stream from {} refused", i.peer),
                at_ms: i.last_ms,
            }],
            ..Finding::new(
                Code::DuplicateAgent,
                Severity::Warning,
                vec![name.to_string()],
                format!(
                    "a second agent claims to be {name} ({} refused attempt(s), the last from {} {}s ago): two hosts configured with the same `node`? The first agent's stream is kept; the other host is not monitored",
                    i.attempts,
                    i.peer,
                    ago_ms / 1000
                ),
            )
        });
    }
}

#[cfg(test)]
mod tests {
    use crate::model::Impostor;
    use crate::verdict::testkit::{Lab, NOW, has};
    use crate::verdict::{Code, Health};

    fn with_impostor(ago_ms: i64) -> Lab {
        let mut lab = Lab::healthy();
        lab.node_mut("node2").impostor = Some(Impostor {
            peer: "127.0.0.99:40000".into(),
            attempts: 3,
            last_ms: NOW - ago_ms,
            last_mono_ms: NOW - ago_ms,
        });
        lab
    }

    #[test]
    fn a_refused_duplicate_is_a_finding_until_it_stops() {
        let v = with_impostor(5_000).verdict();
        assert!(
            has(&v, Code::DuplicateAgent, &["node2"]),
            "{:?}",
            v.findings
        );
        assert_eq!(v.health, Health::Degraded);
        let f = &v.findings[0];
        assert!(f.message.contains("127.0.0.99:40000"), "{}", f.message);
        assert!(f.message.contains("3 refused attempt(s)"), "{}", f.message);

        let v = with_impostor(super::REMEMBERED_MS + 1_000).verdict();
        assert_eq!(v.health, Health::Healthy, "{:?}", v.findings);
    }
}
