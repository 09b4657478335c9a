//! vigie-collector: ingests agent streams and turns them into one verdict per cluster.

pub mod model;
pub mod verdict;

/// Collector version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
