//! vigie-agent: the sidecar that runs the supervision procedure's probes on one host.

pub mod agent;
pub mod config;
pub mod http;
pub mod output;
pub mod probe;
pub mod procfs;
pub mod result;
pub mod run;
pub mod sockdiag;
pub mod tls;
pub mod uplink;

/// Agent version, sent to the collector in `Hello`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
