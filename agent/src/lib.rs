//! vigie-agent: the sidecar that runs the supervision procedure's probes on one host.

/// Agent version, sent to the collector in `Hello`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
