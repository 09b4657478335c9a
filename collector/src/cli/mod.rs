//! The `vigie` CLI's logic that is worth testing without a terminal: the Nagios-mode check.

pub mod check;

use serde_json::Value;

use crate::model::{Facts, ProbeId};

/// A node's facts for `probe`, read from the API's JSON (`nodes[].results`) into their typed
/// message: what the CLI shows is read by field, like the rules read it.
pub fn facts(node: &Value, probe: ProbeId) -> Option<Facts> {
    probe
        .facts_from_json(node["results"][probe.name()]["facts"].clone())
        .ok()
        .flatten()
}
