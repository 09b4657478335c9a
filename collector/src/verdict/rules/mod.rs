//! The verdict rules, one small function per concern. Each pushes findings (and, when fresh data
//! is missing to exclude a critical condition, blind spots).

mod agents;
mod archiving;
mod components;
mod connections;
mod dcs;
mod haproxy;
mod host;
mod identity;
mod leader;
mod maintenance;
mod patroni_words;
pub mod replication;
mod skew;
mod sync_replication;
mod wal_retention;
mod wraparound;
mod xmin_horizon;

use super::Finding;
use super::view::View;

pub fn run_all(view: &View<'_>, findings: &mut Vec<Finding>, blind: &mut Vec<String>) {
    agents::check(view, findings, blind);
    leader::check(view, findings, blind);
    haproxy::check(view, findings, blind);
    components::check(view, findings, blind);
    connections::check(view, findings);
    replication::check(view, findings);
    dcs::check(view, findings, blind);
    maintenance::check(view, findings);
    patroni_words::check(view, findings);
    host::check(view, findings);
    identity::check(view, findings);
    wal_retention::check(view, findings);
    archiving::check(view, findings);
    xmin_horizon::check(view, findings);
    wraparound::check(view, findings);
    sync_replication::check(view, findings, blind);
    skew::check(view, blind);
}
