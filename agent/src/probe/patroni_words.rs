//! Patroni's vocabulary: the roles and states its REST API reports (`/patroni`, `/cluster`), as
//! Patroni 3 and 4 spell them (Patroni 4.1's `PostgresqlRole` and `PostgresqlState`, plus the
//! replica states `/cluster` derives from `replication_state`). A word not listed here is kept
//! verbatim and judged as not healthy: a new Patroni must never be read as "fine" by default.

pub use vigie_proto::v1::StateKind;

/// A node's role; `master` (Patroni < 4), `primary` and `/cluster`'s `leader` are the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Primary,
    /// `replica`, `sync_standby`, `quorum_standby` (Patroni 4's quorum commit).
    Replica,
    StandbyLeader,
    /// Promotion asked of PostgreSQL, not yet confirmed by Patroni's next cycle.
    Promoted,
    /// Demoted from primary; PostgreSQL is stopping or restarting as a replica.
    Demoted,
    /// No data directory yet (bootstrap or replica creation pending).
    Uninitialized,
    /// A word this agent does not know, verbatim.
    Other(String),
}

impl Role {
    pub fn parse(text: &str) -> Role {
        match text {
            "master" | "primary" | "leader" => Role::Primary,
            "replica" | "sync_standby" | "quorum_standby" | "standby" => Role::Replica,
            "standby_leader" => Role::StandbyLeader,
            "promoted" => Role::Promoted,
            "demoted" => Role::Demoted,
            "uninitialized" => Role::Uninitialized,
            other => Role::Other(other.to_string()),
        }
    }

    /// Whether PostgreSQL on a node with this role must be in recovery (read-only); `None` while
    /// the role is changing or unknown.
    pub fn expects_recovery(&self) -> Option<bool> {
        match self {
            Role::Primary => Some(false),
            Role::Replica | Role::StandbyLeader => Some(true),
            Role::Promoted | Role::Demoted | Role::Uninitialized | Role::Other(_) => None,
        }
    }

    /// Whether the word is one Patroni documents.
    pub fn known(&self) -> bool {
        !matches!(self, Role::Other(_))
    }

    pub fn as_str(&self) -> &str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
            Role::StandbyLeader => "standby_leader",
            Role::Promoted => "promoted",
            Role::Demoted => "demoted",
            Role::Uninitialized => "uninitialized",
            Role::Other(s) => s,
        }
    }
}

/// What a Patroni state word means for the node (the wire's `state_kind`): `running` and a
/// replica's `streaming` run; a replica replaying from the archive; starting, stopping,
/// restarting or building; stopped; a failed start, restart, stop, initdb or bootstrap, or a
/// crash; or a word this agent does not know.
pub fn state_kind(state: &str) -> StateKind {
    match state {
        "running" | "streaming" => StateKind::Running,
        "in archive recovery" => StateKind::ArchiveRecovery,
        "starting"
        | "stopping"
        | "restarting"
        | "creating replica"
        | "initializing new cluster"
        | "running custom bootstrap script"
        | "starting after custom bootstrap" => StateKind::Transitional,
        "stopped" => StateKind::Stopped,
        "start failed"
        | "restart failed"
        | "stop failed"
        | "initdb failed"
        | "custom bootstrap failed"
        | "crashed" => StateKind::Failed,
        _ => StateKind::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_of_patroni_4_parses() {
        for (word, role, recovery) in [
            ("master", Role::Primary, Some(false)),
            ("primary", Role::Primary, Some(false)),
            ("leader", Role::Primary, Some(false)),
            ("replica", Role::Replica, Some(true)),
            ("sync_standby", Role::Replica, Some(true)),
            ("quorum_standby", Role::Replica, Some(true)),
            ("standby_leader", Role::StandbyLeader, Some(true)),
            ("promoted", Role::Promoted, None),
            ("demoted", Role::Demoted, None),
            ("uninitialized", Role::Uninitialized, None),
        ] {
            let r = Role::parse(word);
            assert_eq!(r, role, "{word}");
            assert!(r.known(), "{word}");
            assert_eq!(r.expects_recovery(), recovery, "{word}");
        }
        let odd = Role::parse("archiver");
        assert!(!odd.known());
        assert_eq!(odd.as_str(), "archiver", "unknown words are kept verbatim");
        assert_eq!(odd.expects_recovery(), None);
    }

    #[test]
    fn every_state_of_patroni_4_has_a_kind() {
        for (word, kind) in [
            ("running", StateKind::Running),
            ("streaming", StateKind::Running),
            ("in archive recovery", StateKind::ArchiveRecovery),
            ("starting", StateKind::Transitional),
            ("stopping", StateKind::Transitional),
            ("restarting", StateKind::Transitional),
            ("creating replica", StateKind::Transitional),
            ("initializing new cluster", StateKind::Transitional),
            ("running custom bootstrap script", StateKind::Transitional),
            ("starting after custom bootstrap", StateKind::Transitional),
            ("stopped", StateKind::Stopped),
            ("start failed", StateKind::Failed),
            ("restart failed", StateKind::Failed),
            ("stop failed", StateKind::Failed),
            ("initdb failed", StateKind::Failed),
            ("custom bootstrap failed", StateKind::Failed),
            ("crashed", StateKind::Failed),
            ("hibernating", StateKind::Unknown),
            ("", StateKind::Unknown),
        ] {
            assert_eq!(state_kind(word), kind, "{word:?}");
        }
    }
}
