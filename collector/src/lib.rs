//! vigie-collector: ingests agent streams and turns them into one verdict per cluster.

//! Data flows in this order: `ingest` (the gRPC stream; wire messages stop there) → `state` (the
//! one task owning what is known, in memory) → `verdict` (pure rules over typed facts) → `events`,
//! `store` (the only SQLite module, its own writer task), `notify` (Alertmanager, webhooks) and
//! `http` (API, metrics, health); `cli` is the `vigie` binary's testable part. `limits` caps the ports' connections; `server` wires
//! them; `model` is the domain the stages share.

pub mod ingest;
pub mod model;
pub mod state;
pub mod verdict;

pub mod events;
pub mod notify;
pub mod store;

pub mod cli;
pub mod http;

pub mod clock;
pub mod config;
pub mod limits;
pub mod server;

/// Collector version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
