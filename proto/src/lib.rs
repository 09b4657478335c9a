//! The agent ↔ collector wire contract (`vigie.v1`), generated from `proto/vigie/v1/*.proto`.
//! Domain types live on each side and are converted at the boundary.

pub mod tls;

#[allow(missing_debug_implementations, clippy::unwrap_used)]
pub mod v1 {
    tonic::include_proto!("vigie.v1");
}
