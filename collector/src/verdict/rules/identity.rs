//! DUPLICATE_AGENT: a second agent kept trying to speak for a node whose stream was live, and
//! was refused (or, from the same host, kept taking turns with it). Two hosts configured with the
//! same `node =` is a real mistake: one of them is not monitored at all. One refused attempt is
//! not enough (an agent whose address changed may reconnect before its old stream is seen gone):
//! attempts must span two intervals. Said for ten minutes after the last attempt.

use crate::model::Impostor;
use crate::verdict::view::View;
use crate::verdict::{Code, Evidence, Finding, Severity};

/// How long a refused duplicate stays a finding after its last attempt (agents retry within an
/// interval, so a duplicate still configured keeps it open).
pub const REMEMBERED_MS: i64 = Impostor::REMEMBERED_MS;

pub fn check(view: &View<'_>, findings: &mut Vec<Finding>) {
    for n in &view.nodes {
        let Some(i) = &n.state.impostor else {
            continue;
        };
        let ago_ms = view.now_mono_ms - i.last_mono_ms;
        let interval = i64::try_from(n.state.interval_ms).unwrap_or(i64::MAX);
        let span = i.last_mono_ms.saturating_sub(i.first_mono_ms);
        if ago_ms > REMEMBERED_MS || i.attempts < 2 || span < interval.saturating_mul(2) {
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
        impostor(3, ago_ms, 60_000)
    }

    fn impostor(attempts: u64, ago_ms: i64, span_ms: i64) -> Lab {
        let mut lab = Lab::healthy();
        lab.node_mut("node2").impostor = Some(Impostor {
            peer: "127.0.0.99:40000".into(),
            attempts,
            last_ms: NOW - ago_ms,
            last_mono_ms: NOW - ago_ms,
            first_mono_ms: NOW - ago_ms - span_ms,
        });
        lab
    }

    #[test]
    fn one_refused_attempt_or_a_short_run_is_not_a_finding() {
        let interval =
            i64::try_from(Lab::healthy().node_mut("node2").interval_ms).expect("interval");
        let v = impostor(1, 1_000, 0).verdict();
        assert_eq!(v.health, Health::Healthy, "{:?}", v.findings);
        let v = impostor(2, 1_000, interval).verdict();
        assert_eq!(v.health, Health::Healthy, "{:?}", v.findings);
        let v = impostor(3, 1_000, 2 * interval).verdict();
        assert!(
            has(&v, Code::DuplicateAgent, &["node2"]),
            "{:?}",
            v.findings
        );
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
