//! vigie-collector: ingests agent streams and turns them into one verdict per cluster.

pub mod api;
pub mod auth;
pub mod check;
pub mod clock;
pub mod config;
pub mod events;
pub mod ingest;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod server;
pub mod state;
pub mod store;
pub mod verdict;
pub mod webhook;

/// Collector version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
