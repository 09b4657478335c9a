//! `patroni.health`: Patroni's `GET /health` — 200 while PostgreSQL runs on this node (leader and
//! replicas alike), 503 otherwise.

use super::ProbeId;
use crate::http;
use crate::result::ProbeResult;

pub async fn probe(client: &reqwest::Client, base: &reqwest::Url) -> ProbeResult {
    let id = ProbeId::PatroniHealth;
    let url = http::endpoint(base, "health");
    let answer = match http::get(client, &url).await {
        Ok(a) => a,
        Err(e) => return id.critical(e),
    };
    let state = answer
        .json()
        .ok()
        .and_then(|v| v["state"].as_str().map(str::to_string));
    let result = match answer.status {
        200 => id.ok(format!(
            "Patroni reports PostgreSQL {}",
            state.as_deref().unwrap_or("running")
        )),
        503 => id.critical(format!(
            "Patroni /health is 503: PostgreSQL is {}",
            state.as_deref().unwrap_or("not running")
        )),
        other => id.critical(format!("Patroni /health answered HTTP {other}")),
    };
    let result = result.fact("http_status", answer.status);
    match state {
        Some(s) => result.fact("state", s),
        None => result,
    }
}
