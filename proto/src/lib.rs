//! The agent ↔ collector wire contract (`vigie.v1`), generated from `proto/vigie/v1/*.proto`:
//! the stream's messages, the probe catalogue, and each probe's typed facts. Both sides read and
//! write these types; [`probes`] names the probes and says which facts each one carries.

pub mod probes;
pub mod tls;
pub mod words;

#[allow(missing_debug_implementations, clippy::unwrap_used, clippy::all)]
pub mod v1 {
    tonic::include_proto!("vigie.v1");
}

pub use v1::probe_result::Facts;
pub use v1::{ProbeId, Status};
