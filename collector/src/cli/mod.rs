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

/// Text from the collector (names, messages, errors: agents and Patroni supply much of it) made
/// safe for one line of terminal or plugin output: control characters (newlines, escapes) become
/// spaces, `|` (the plugin output's perfdata separator) becomes `/`, at most `max` characters.
pub fn plain(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .map(|c| match c {
            '|' => '/',
            c if c.is_control() => ' ',
            c => c,
        })
        .take(max)
        .collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}

/// A perfdata label per the monitoring plugins guidelines: as it is when it is a plain word,
/// else quoted with its quotes doubled; never an `=` (the label's end) nor what [`plain`] removes.
pub fn perf_label(s: &str) -> String {
    // Node names are at most 253 characters (checked at Hello): cut no shorter, or two labels
    // could become one.
    let word = plain(s, 300).replace('=', "_");
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    {
        word
    } else {
        format!("'{}'", word.replace('\'', "''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forged_text_cannot_break_a_line_or_start_perfdata() {
        assert_eq!(plain("node1|x=1\nOK\x1b[2J", 100), "node1/x=1 OK [2J");
        assert_eq!(plain("abcdef", 3), "abc…");
        assert_eq!(perf_label("lag_bytes_no'de=1|"), "'lag_bytes_no''de_1/'");
        assert_eq!(perf_label("lag_bytes_node3"), "lag_bytes_node3");
        assert_eq!(perf_label("agent_age_node 3"), "'agent_age_node 3'");
    }
}
