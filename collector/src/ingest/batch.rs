//! A wire result batch turned into the collector's domain: each result keyed by its probe, its
//! typed facts kept as received (those of another probe's kind dropped), stamped with when it
//! was observed on the collector's clocks. Runs in the stream's handler, off the state task.

use std::sync::Arc;

use vigie_proto::v1;

use crate::clock::Now;
use crate::model::{Observation, ProbeId, Status};

/// The longest probe message kept (longer ones are cut).
const MAX_MESSAGE: usize = 4096;

/// A result batch converted at the ingest boundary (its facts parsed there, off this task).
#[derive(Debug)]
pub struct Batch {
    pub results: Vec<(ProbeId, Arc<Observation>)>,
    /// Batches the agent dropped since its previous one.
    pub dropped: u64,
    /// When the agent's cycle ended (agent clock), from its results.
    pub agent_end_ms: Option<i64>,
    /// Results named by text, as agents before the typed wire send them (their facts unread).
    pub untyped: usize,
}

impl Batch {
    /// Converts a wire batch received `at`. A result naming no probe this collector knows (from
    /// a newer agent) is left out; an older agent's, named by text, is read by its name.
    pub fn from_wire(batch: v1::ResultBatch, at: Now) -> Batch {
        let end_of = |r: &v1::ProbeResult| {
            r.started_unix_ms
                .saturating_add(i64::try_from(r.duration_us / 1000).unwrap_or(0))
        };
        let agent_end_ms = batch.results.iter().map(end_of).max();
        let untyped = batch
            .results
            .iter()
            .filter(|r| r.probe == ProbeId::Unspecified as i32 && !r.id.is_empty())
            .count();
        let results = batch
            .results
            .into_iter()
            .filter_map(|r| {
                let probe = match ProbeId::try_from(r.probe) {
                    Ok(ProbeId::Unspecified) => ProbeId::from_name(&r.id)?,
                    Ok(p) => p,
                    Err(_) => return None,
                };
                // Facts of another probe's kind are not this probe's facts.
                let facts = r.facts.filter(|f| probe.carries(f));
                // How long before the end of its batch the probe started, by the agent's clock
                // (which only has to be consistent with itself), within one minute.
                let before_end = agent_end_ms
                    .map_or(0, |end| end.saturating_sub(r.started_unix_ms))
                    .clamp(0, 60_000);
                let message = cut_message(r.message);
                let observation = Observation {
                    status: Status::from_wire(r.status),
                    message,
                    unanswered: r.unanswered,
                    facts,
                    started_ms: r.started_unix_ms,
                    duration_us: r.duration_us,
                    received_ms: at.wall_ms,
                    received_mono_ms: at.mono_ms,
                    observed_mono_ms: at.mono_ms - before_end,
                };
                Some((probe, Arc::new(observation)))
            })
            .collect();
        Batch {
            results,
            dropped: batch.dropped,
            agent_end_ms,
            untyped,
        }
    }
}

/// An agent's text kept at most [`MAX_MESSAGE`] bytes long (cut on a character, marked `…`).
fn cut_message(mut message: String) -> String {
    if message.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    message
}

/// A journal as the state task keeps it: every message and probe name cut like a batch's.
pub fn journal_from_wire(mut journal: v1::Journal) -> v1::Journal {
    for t in &mut journal.transitions {
        t.message = cut_message(std::mem::take(&mut t.message));
        t.probe_id = cut_message(std::mem::take(&mut t.probe_id));
    }
    journal
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ProbeResult` as agents before the typed wire encode it.
    #[derive(Clone, PartialEq, prost::Message)]
    struct OldProbeResult {
        #[prost(string, tag = "1")]
        id: String,
        #[prost(enumeration = "v1::Status", tag = "2")]
        status: i32,
        #[prost(string, tag = "3")]
        message: String,
        #[prost(int64, tag = "4")]
        started_unix_ms: i64,
        #[prost(uint64, tag = "5")]
        duration_us: u64,
        #[prost(string, tag = "6")]
        facts_json: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct OldResultBatch {
        #[prost(uint64, tag = "1")]
        seq: u64,
        #[prost(message, repeated, tag = "2")]
        results: Vec<OldProbeResult>,
        #[prost(uint64, tag = "3")]
        dropped: u64,
    }

    #[test]
    fn long_messages_are_cut_on_a_character() {
        let long = "é".repeat(MAX_MESSAGE);
        let cut = cut_message(long);
        assert!(cut.len() <= MAX_MESSAGE + '…'.len_utf8(), "{}", cut.len());
        assert!(cut.ends_with('…'));
        let j = journal_from_wire(v1::Journal {
            transitions: vec![v1::Transition {
                message: "x".repeat(3 * MAX_MESSAGE),
                ..Default::default()
            }],
            ..Default::default()
        });
        assert_eq!(j.transitions[0].message.len(), MAX_MESSAGE + '…'.len_utf8());
        assert_eq!(cut_message("short".into()), "short");
    }

    #[test]
    fn an_older_agents_batch_is_read_by_probe_name_without_facts() {
        use prost::Message;
        let old = OldResultBatch {
            seq: 1,
            results: vec![
                OldProbeResult {
                    id: "postgres.recovery".into(),
                    status: v1::Status::Critical as i32,
                    message: "PostgreSQL query failed".into(),
                    started_unix_ms: 1,
                    duration_us: 1,
                    facts_json: r#"{"in_recovery": false}"#.into(),
                },
                OldProbeResult {
                    id: "postgres.some_future_probe".into(),
                    ..Default::default()
                },
            ],
            dropped: 0,
        };
        let wire = v1::ResultBatch::decode(old.encode_to_vec().as_slice()).expect("decodes");
        let batch = Batch::from_wire(wire, Now::same(20));
        assert_eq!(batch.untyped, 2);
        assert_eq!(batch.results.len(), 1, "an unknown probe is left out");
        let (id, obs) = &batch.results[0];
        assert_eq!(*id, ProbeId::PostgresRecovery);
        assert_eq!(obs.status, Status::Critical);
        assert!(obs.facts.is_none());
    }
}
