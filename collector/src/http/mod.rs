//! What the collector serves over HTTP: the JSON API and SSE stream, `/metrics` and `/healthz`,
//! behind the API's access control. Reads only what the state task publishes.

pub mod api;
pub mod auth;
pub mod metrics;
pub mod serve;
pub mod sse;
