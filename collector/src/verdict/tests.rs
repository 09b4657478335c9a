//! Properties of the whole engine over generated snapshots.

use std::sync::Arc;

use proptest::prelude::*;

use super::testkit::{Lab, NOW};
use super::{Health, Policy, evaluate};
use crate::model::Status;

const NODES: [&str; 4] = ["node1", "node2", "node3", "haproxy"];

fn status() -> impl Strategy<Value = Status> {
    prop_oneof![
        Just(Status::Ok),
        Just(Status::Warning),
        Just(Status::Critical),
        Just(Status::Unknown)
    ]
}

/// A healthy lab with some probes' statuses changed (facts kept).
fn mutated() -> impl Strategy<Value = Lab> {
    prop::collection::vec((0..NODES.len(), 0..20usize, status()), 0..6).prop_map(|muts| {
        let mut lab = Lab::healthy();
        for (n, p, s) in muts {
            let node = lab.node_mut(NODES[n]);
            let ids: Vec<_> = node.results.keys().copied().collect();
            let id = &ids[p % ids.len()];
            if let Some(o) = node.results.get_mut(id).map(Arc::make_mut) {
                o.status = s;
            }
        }
        lab
    })
}

proptest! {
    #[test]
    fn all_stale_is_never_healthy(lab in mutated(), silent_for in 16_000i64..10_000_000) {
        let mut lab = lab;
        for n in NODES {
            lab = lab.silent(n, silent_for);
        }
        let v = evaluate(&lab.snap, NOW, &Policy::default());
        prop_assert_ne!(v.health, Health::Healthy);
    }

    #[test]
    fn a_failing_probe_never_makes_the_verdict_better(lab in mutated(), n in 0..NODES.len(), p in 0..20usize) {
        let policy = Policy::default();
        let before = evaluate(&lab.snap, NOW, &policy);
        let mut lab = lab;
        let node = lab.node_mut(NODES[n]);
        let ids: Vec<_> = node.results.keys().copied().collect();
        let id = ids[p % ids.len()];
        if let Some(o) = node.results.get_mut(&id).map(Arc::make_mut) {
            o.status = Status::Critical;
        }
        let after = evaluate(&lab.snap, NOW, &policy);
        prop_assert!(after.health.rank() >= before.health.rank(),
            "{} on {} failing: {:?} -> {:?}\n{:?}", id, NODES[n], before.health, after.health, after.findings);
    }

    #[test]
    fn one_silent_agent_is_never_healthy(lab in mutated(), n in 0..NODES.len()) {
        let lab = lab.silent(NODES[n], 60_000);
        let v = evaluate(&lab.snap, NOW, &Policy::default());
        prop_assert_ne!(v.health, Health::Healthy);
    }
}

#[test]
fn healthy_lab_is_healthy_with_no_finding() {
    let v = Lab::healthy().verdict();
    assert_eq!(v.health, Health::Healthy, "{:?}", v.findings);
    assert!(v.findings.is_empty());
    assert_eq!(v.leader.as_deref(), Some("node1"));
}
