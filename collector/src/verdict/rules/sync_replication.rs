//! WRITES_BLOCKED_SYNCREP, SYNC_STANDBY_MISSING: synchronous replication as Patroni promises it
//! (`patroni.config`: `synchronous_mode`, `_strict`, `synchronous_node_count`; `/cluster`'s
//! `sync_standby` members) against what PostgreSQL does (`postgres.replication`: its
//! `synchronous_standby_names`, the walsenders' `sync_state`, the sessions waiting on `SyncRep`).
//!
//! Commits waiting longer than `syncrep_wait_critical` for a standby that does not confirm are
//! hanging applications: critical on that node, whoever configured it (Patroni, or a
//! `synchronous_standby_names` set by hand). Synchronous mode on with fewer sync standbys than
//! configured — or Patroni naming a sync standby that PostgreSQL does not wait for — is
//! degraded: a failover now may lose confirmed commits, or find no candidate it may promote.

use std::collections::BTreeSet;

use crate::model::ProbeId;
use crate::model::wire::{PostgresReplicationFacts, SyncMode};
use crate::verdict::view::View;
use crate::verdict::{Code, Finding, Severity};

pub fn check(view: &View<'_>, findings: &mut Vec<Finding>, blind: &mut Vec<String>) {
    blocked(view, findings);
    missing(view, findings, blind);
}

/// Standbys whose commits PostgreSQL waits for now: streaming, `sync` or `quorum`.
fn confirming(f: &PostgresReplicationFacts) -> Vec<&str> {
    let mut names: Vec<&str> = f
        .senders
        .iter()
        .filter(|s| s.state.as_deref() == Some("streaming"))
        .filter(|s| matches!(s.sync_state.as_deref(), Some("sync" | "quorum")))
        .filter_map(|s| s.application_name.as_deref())
        .collect();
    names.sort_unstable();
    names
}

fn listed(names: &[&str]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

fn blocked(view: &View<'_>, findings: &mut Vec<Finding>) {
    let limit = view.policy.syncrep_wait_critical_s;
    for n in view.fresh().filter(|n| n.is_db()) {
        let Some(f) = n.replication() else {
            continue;
        };
        let (Some(waiters), Some(longest)) = (f.sync_waiters, f.longest_sync_wait_s) else {
            continue;
        };
        if waiters == 0 || longest < limit {
            continue;
        }
        let name = n.name();
        let names = f.synchronous_standby_names.as_deref().unwrap_or("?");
        let sync = confirming(f);
        let why = if names.trim() == "*" && sync.is_empty() {
            "strict synchronous mode with no standby left: bring a replica back (or, accepting the risk, turn synchronous_mode_strict off)"
        } else if sync.is_empty() {
            "no standby is synchronous now: bring one back, or take it out of synchronous_standby_names"
        } else {
            "the synchronous standby does not confirm (frozen, disk or network stall); Patroni replaces it only once its walsender ends (wal_sender_timeout)"
        };
        let text = format!(
            "{name} ({}): {waiters} session(s) wait for a synchronous standby to confirm their commit, the longest for {longest:.0}s: writes hang; synchronous_standby_names = '{names}', synchronous now: {}; {why}",
            view.role_words(name),
            listed(&sync),
        );
        findings.push(
            Finding::new(
                Code::WritesBlockedSyncrep,
                Severity::Critical,
                vec![name.to_string()],
                text,
            )
            .with_all(n.evidence(ProbeId::PostgresReplication)),
        );
    }
}

fn missing(view: &View<'_>, findings: &mut Vec<Finding>, blind: &mut Vec<String>) {
    let Some(cfg) = view.patroni_config() else {
        // Patroni answers but its configuration is unread: whether commits are promised a sync
        // standby is unknown.
        if let Some((name, o)) = view
            .fresh()
            .find_map(|n| Some((n.name(), n.result(ProbeId::PatroniConfig)?)))
        {
            blind.push(format!(
                "Patroni's configuration is unread (patroni.config on {name}: {}): synchronous replication is unjudged",
                o.message
            ));
        }
        return;
    };
    let mode = cfg.synchronous_mode();
    if matches!(mode, SyncMode::Off | SyncMode::Unspecified) {
        return;
    }
    // Without a leader (or its fresh facts) other rules say what is wrong.
    let Some(leader) = view.patroni_leader() else {
        return;
    };
    let Some(n) = view.node(leader).filter(|n| n.fresh) else {
        return;
    };
    let Some(f) = n.replication() else {
        return;
    };
    let Some(names) = f.synchronous_standby_names.as_deref() else {
        blind.push(format!(
            "synchronous mode is on, but the agent on {leader} (version {}) does not report synchronous_standby_names: sync standbys are unwatched; upgrade it",
            n.state.agent_version
        ));
        return;
    };
    let strict = cfg.synchronous_mode_strict;
    let mode_words = format!(
        "synchronous_mode {}{}",
        if mode == SyncMode::Quorum {
            "quorum"
        } else {
            "on"
        },
        if strict { " (strict)" } else { "" }
    );
    let want = cfg.synchronous_node_count.max(1) as usize;
    let sync = confirming(f);
    let evidence = || {
        n.evidence(ProbeId::PostgresReplication)
            .into_iter()
            .chain(n.evidence(ProbeId::PatroniConfig))
    };
    if sync.len() < want {
        let consequence = if strict {
            "commits wait until a standby confirms"
        } else {
            "commits no longer wait for a standby: a failover now may lose confirmed transactions"
        };
        findings.push(
            Finding::new(
                Code::SyncStandbyMissing,
                Severity::Warning,
                vec![leader.to_string()],
                format!(
                    "{leader} (leader): {mode_words} asks for {want} synchronous standby(s), PostgreSQL has {} ({}); synchronous_standby_names = '{names}'; {consequence}",
                    sync.len(),
                    listed(&sync),
                ),
            )
            .with_all(evidence()),
        );
        return;
    }
    // Quorum commit makes every candidate `quorum` in PostgreSQL: Patroni's list is not comparable.
    // While Patroni changes its sync standby (PostgreSQL first, then the DCS: a loop or two), the
    // lists differ for real: no failover is possible to the new one yet.
    if mode != SyncMode::On {
        return;
    }
    let patroni: BTreeSet<&str> = view
        .patroni_members()
        .iter()
        .filter(|(_, m)| m.sync_standby)
        .map(|(name, _)| *name)
        .collect();
    let postgres: BTreeSet<&str> = sync.iter().copied().collect();
    if patroni == postgres {
        return;
    }
    let unconfirmed: Vec<&str> = patroni.difference(&postgres).copied().collect();
    let consequence = if unconfirmed.is_empty() {
        "Patroni would refuse to fail over to the standbys that do confirm".to_string()
    } else {
        format!(
            "a failover to {} would lose commits it never confirmed",
            unconfirmed.join(", ")
        )
    };
    findings.push(
        Finding::new(
            Code::SyncStandbyMissing,
            Severity::Warning,
            vec![leader.to_string()],
            format!(
                "{leader} (leader): Patroni names {} sync standby, but PostgreSQL waits for {} (synchronous_standby_names = '{names}'): {consequence}",
                listed(&patroni.iter().copied().collect::<Vec<_>>()),
                listed(&sync),
            ),
        )
        .with_all(evidence())
        .confirmed_later(),
    );
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::model::Status;
    use crate::verdict::testkit::{Lab, has, message};
    use crate::verdict::{Code, Health};

    /// The lab with Patroni's synchronous mode as given on every node.
    fn sync_mode(mut lab: Lab, mode: &str, strict: bool) -> Lab {
        for n in ["node1", "node2", "node3"] {
            lab = lab.patch(
                n,
                "patroni.config",
                Status::Ok,
                json!({"synchronous_mode": mode, "synchronous_mode_strict": strict, "synchronous_node_count": 1}),
            );
        }
        lab
    }

    /// node1's walsenders with these sync states, its settings and commit waiters.
    fn leader(lab: Lab, states: &[(&str, &str)], names: &str, waiters: u32, longest: f64) -> Lab {
        let senders: Vec<_> = states
            .iter()
            .map(|(n, s)| json!({"application_name": n, "state": "streaming", "sync_state": s}))
            .collect();
        let longest = (waiters > 0).then_some(longest);
        lab.patch(
            "node1",
            "postgres.replication",
            Status::Ok,
            json!({"senders": senders, "synchronous_standby_names": names,
                   "sync_waiters": waiters, "longest_sync_wait_s": longest}),
        )
    }

    fn patroni_sync(lab: Lab, sync: &str) -> Lab {
        lab.edit_members(&["node1", "node2", "node3"], |m| {
            if m.name == sync {
                m.sync_standby = true;
            }
        })
    }

    #[test]
    fn the_recorded_lab_is_asynchronous_and_quiet() {
        let v = Lab::healthy().verdict();
        assert_eq!(v.health, Health::Healthy, "{:?}", v.findings);
    }

    #[test]
    fn a_sync_standby_that_confirms_and_patroni_agrees_is_quiet() {
        let lab = sync_mode(Lab::healthy(), "on", false);
        let lab = patroni_sync(
            leader(
                lab,
                &[("node2", "sync"), ("node3", "async")],
                "\"node2\"",
                0,
                0.0,
            ),
            "node2",
        );
        let v = lab.verdict();
        assert_eq!(v.health, Health::Healthy, "{:?}", v.findings);
    }

    #[test]
    fn commits_waiting_past_the_threshold_are_critical_on_that_node_only() {
        for (waiters, longest, expected) in [(3, 12.0, true), (3, 0.2, false), (0, 0.0, false)] {
            let lab = sync_mode(Lab::healthy(), "on", false);
            let lab = patroni_sync(
                leader(
                    lab,
                    &[("node2", "sync"), ("node3", "async")],
                    "\"node2\"",
                    waiters,
                    longest,
                ),
                "node2",
            );
            let v = lab.verdict();
            assert_eq!(
                has(&v, Code::WritesBlockedSyncrep, &["node1"]),
                expected,
                "{waiters} {longest}: {:?}",
                v.findings
            );
            if expected {
                assert_eq!(v.health, Health::Critical);
                let f = message(&v, Code::WritesBlockedSyncrep);
                assert!(
                    f.contains("3 session(s) wait")
                        && f.contains("12s")
                        && f.contains("synchronous now: node2"),
                    "{f}"
                );
            }
        }
    }

    #[test]
    fn strict_mode_with_no_standby_left_is_blocked_and_missing() {
        let lab = sync_mode(Lab::healthy(), "on", true);
        let v = leader(lab, &[], "*", 4, 30.0).verdict();
        assert!(
            has(&v, Code::WritesBlockedSyncrep, &["node1"]),
            "{:?}",
            v.findings
        );
        assert!(
            has(&v, Code::SyncStandbyMissing, &["node1"]),
            "{:?}",
            v.findings
        );
        let blocked = message(&v, Code::WritesBlockedSyncrep);
        assert!(blocked.contains("strict synchronous mode"), "{blocked}");
        let missing = message(&v, Code::SyncStandbyMissing);
        assert!(
            missing.contains("(strict) asks for 1") && missing.contains("commits wait"),
            "{missing}"
        );
    }

    #[test]
    fn sync_mode_without_a_sync_standby_is_degraded_and_says_what_a_failover_would_lose() {
        let lab = sync_mode(Lab::healthy(), "on", false);
        let v = leader(lab, &[("node2", "async"), ("node3", "async")], "", 0, 0.0).verdict();
        assert!(
            has(&v, Code::SyncStandbyMissing, &["node1"]),
            "{:?}",
            v.findings
        );
        assert!(!has(&v, Code::WritesBlockedSyncrep, &["node1"]));
        assert_eq!(v.health, Health::Degraded);
        let m = message(&v, Code::SyncStandbyMissing);
        assert!(
            m.contains("PostgreSQL has 0 (none)") && m.contains("may lose"),
            "{m}"
        );
        // Asynchronous replication: nobody promised a sync standby.
        let lab = sync_mode(Lab::healthy(), "off", false);
        let v = leader(lab, &[("node2", "async")], "", 0, 0.0).verdict();
        assert!(
            !has(&v, Code::SyncStandbyMissing, &["node1"]),
            "{:?}",
            v.findings
        );
    }

    #[test]
    fn patroni_naming_a_sync_standby_postgres_does_not_wait_for_is_missing() {
        let lab = sync_mode(Lab::healthy(), "on", false);
        let lab = patroni_sync(
            leader(
                lab,
                &[("node2", "async"), ("node3", "sync")],
                "\"node3\"",
                0,
                0.0,
            ),
            "node2",
        );
        let v = lab.verdict();
        let m = message(&v, Code::SyncStandbyMissing);
        assert!(
            m.contains("Patroni names node2 sync standby, but PostgreSQL waits for node3")
                && m.contains("a failover to node2 would lose commits"),
            "{m}"
        );
    }

    #[test]
    fn an_unread_patroni_configuration_is_a_blind_spot() {
        let mut lab = Lab::healthy();
        for n in ["node1", "node2", "node3"] {
            lab = lab.set(
                n,
                "patroni.config",
                Status::Critical,
                serde_json::Value::Null,
            );
        }
        let v = lab.verdict();
        assert_eq!(v.health, Health::Unknown, "{:?}", v.findings);
        assert!(
            v.blind_spots
                .iter()
                .any(|b| b.contains("Patroni's configuration is unread")),
            "{:?}",
            v.blind_spots
        );
    }

    #[test]
    fn an_older_agent_without_the_sync_facts_is_a_blind_spot_only_in_sync_mode() {
        let lab = sync_mode(Lab::healthy(), "on", false);
        let lab = lab.patch(
            "node1",
            "postgres.replication",
            Status::Ok,
            json!({"synchronous_standby_names": null, "sync_waiters": null}),
        );
        let v = lab.verdict();
        assert!(
            v.blind_spots
                .iter()
                .any(|b| b.contains("synchronous_standby_names")),
            "{:?}",
            v.blind_spots
        );
        assert_eq!(v.health, Health::Unknown);
    }
}
