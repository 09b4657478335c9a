//! The HTTP API (JSON, versioned under `/api/v1`): clusters with their verdicts, one cluster in
//! detail with every node's latest probe results and freshness, the event log, and `/healthz`.
//! Errors are JSON with a status code.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::state::{ClusterEntry, Readers, now_ms};

pub fn router(readers: Readers, access: crate::http::auth::Access) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/v1/clusters", get(clusters))
        .route("/api/v1/clusters/{scope}", get(cluster))
        .route("/api/v1/clusters/{scope}/probe", post(probe_now))
        .route(
            "/api/v1/clusters/{scope}/nodes/{node}",
            axum::routing::delete(forget_node),
        )
        .route("/api/v1/events", get(events))
        .route("/api/v1/events/stream", get(event_stream))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .with_state(readers)
        .layer(axum::middleware::from_fn_with_state(
            access,
            crate::http::auth::require,
        ))
        .layer(axum::middleware::from_fn(request_timeout))
        .layer(axum::middleware::from_fn(json_errors))
}

/// How long a request may take to be answered (an SSE stream is answered at once, then streams).
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Answers 503 to a request not answered within [`REQUEST_TIMEOUT`] (a slow event-log read
/// never holds a connection, or `vigie check`, longer than that).
async fn request_timeout(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(resp) => resp,
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not answered within {}s", REQUEST_TIMEOUT.as_secs()),
        ),
    }
}

/// Every error answered as the documented JSON (`{"error", "status"}`), also those axum writes
/// itself as text (a query string that does not parse, a method not allowed): their text becomes
/// the message, their headers (`Allow`, `Retry-After`, …) are kept.
async fn json_errors(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
    let resp = next.run(request).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 16 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let message = match text.trim() {
        "" => status.canonical_reason().unwrap_or("error").to_string(),
        t => t.to_string(),
    };
    let mut out = error(status, message);
    for (name, value) in &parts.headers {
        if name != CONTENT_TYPE && name != CONTENT_LENGTH {
            out.headers_mut().append(name.clone(), value.clone());
        }
    }
    out
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": message.into(), "status": status.as_u16()})),
    )
        .into_response()
}

/// `ok`; `degraded` when the event store failed to write (the verdict goes on); `failed`, with
/// 503, once the state task is gone (nothing is judged any more; the process is exiting).
async fn healthz(State(r): State<Readers>) -> Response {
    let p = r.published.borrow().clone();
    let store = r.store.report();
    let (status, code) = if !r.state_running() {
        ("failed", StatusCode::SERVICE_UNAVAILABLE)
    } else if !store.ok() {
        ("degraded", StatusCode::OK)
    } else {
        ("ok", StatusCode::OK)
    };
    let body = Json(json!({
        "status": status,
        "state_task": if r.state_running() { "running" } else { "stopped" },
        "event_store": store,
        "version": crate::VERSION,
        "clusters": p.clusters.len(),
        "agents_connected": p.agents_connected,
        "batches_received": p.batches_received,
        "connections": r.ports.as_ref().map(|p| json!({
            "fd_limit": p.fd_limit,
            "grpc": p.grpc.report(),
            "http": p.http.report(),
        })),
        "agents_refused": r.refused.total(),
        "agents_refused_by_reason": r.refused.by_reason().map(|(k, n)| (k.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "batches_rate_dropped": r.refused.rate_dropped(),
        "sse_clients": r.sse.open(),
        "published_ms": p.published_ms,
    }));
    (code, body).into_response()
}

async fn metrics(State(r): State<Readers>) -> Response {
    let p = r.published.borrow().clone();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::http::metrics::render(&p, now_ms(), &r.refused)
            + &crate::http::metrics::render_health(&r.store.report(), r.state_running())
            + &r.ports
                .as_ref()
                .map(|p| crate::http::metrics::render_ports(p))
                .unwrap_or_default(),
    )
        .into_response()
}

fn summary(entry: &ClusterEntry) -> Value {
    let v = &entry.verdict;
    json!({
        "cluster": v.cluster,
        "verdict": v.health,
        "leader": v.leader,
        "findings": v.findings.iter().map(|f| json!({"code": f.code, "severity": f.severity, "nodes": f.nodes, "pending": f.pending})).collect::<Vec<_>>(),
        "nodes": entry.snapshot.nodes.len(),
        "evaluated_ms": v.evaluated_ms,
    })
}

async fn clusters(State(r): State<Readers>) -> Json<Value> {
    let p = r.published.borrow().clone();
    Json(json!({"clusters": p.clusters.values().map(|e| summary(e)).collect::<Vec<_>>()}))
}

async fn cluster(State(r): State<Readers>, Path(scope): Path<String>) -> Response {
    let p = r.published.borrow().clone();
    let Some(entry) = p.clusters.get(&scope).cloned() else {
        return error(StatusCode::NOT_FOUND, format!("unknown cluster `{scope}`"));
    };
    // The verdict is served even when the event store cannot be read.
    let recent = r
        .events
        .query(Some(scope.clone()), 0, 50)
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "Cannot read recent events");
            Vec::new()
        });
    Json(detail(&entry, recent, now_ms())).into_response()
}

/// The full view of one cluster, serialized straight from the published snapshot (fields in
/// alphabetical order, as the API has always listed them).
#[derive(Debug, Serialize)]
pub struct Detail<'a> {
    blind_spots: &'a [String],
    cluster: &'a str,
    evaluated_ms: i64,
    findings: &'a [crate::verdict::Finding],
    leader: Option<&'a str>,
    nodes: Vec<NodeDetail<'a>>,
    recent_events: Vec<Value>,
    replication: &'a [crate::verdict::rules::replication::ReplicaLag],
    transition: Option<&'a str>,
    verdict: crate::verdict::Health,
}

/// One node of [`Detail`].
#[derive(Debug, Serialize)]
struct NodeDetail<'a> {
    age_s: f64,
    agent_version: &'a str,
    clock_offset_ms: Option<i64>,
    components: &'a [String],
    connected: bool,
    dropped_batches: u64,
    interval_ms: u64,
    last_seen_ms: i64,
    name: &'a str,
    #[serde(serialize_with = "results_by_name")]
    results: &'a crate::model::Results,
    untyped_facts: bool,
}

fn results_by_name<S: serde::Serializer>(
    results: &&crate::model::Results,
    s: S,
) -> Result<S::Ok, S::Error> {
    crate::model::results_by_name(results, s)
}

pub fn detail(entry: &ClusterEntry, recent_events: Vec<Value>, now: i64) -> Detail<'_> {
    let v = &entry.verdict;
    let nodes = entry
        .snapshot
        .nodes
        .iter()
        .map(|n| NodeDetail {
            age_s: (now - n.last_seen_ms) as f64 / 1000.0,
            agent_version: &n.agent_version,
            clock_offset_ms: n.clock_offset_ms,
            components: &n.components,
            connected: n.connected,
            dropped_batches: n.dropped_batches,
            interval_ms: n.interval_ms,
            last_seen_ms: n.last_seen_ms,
            name: &n.name,
            results: &n.results,
            untyped_facts: n.untyped_facts,
        })
        .collect();
    Detail {
        blind_spots: &v.blind_spots,
        cluster: &v.cluster,
        evaluated_ms: v.evaluated_ms,
        findings: &v.findings,
        leader: v.leader.as_deref(),
        nodes,
        recent_events,
        replication: &v.replication,
        transition: v.transition.as_deref(),
        verdict: v.health,
    }
}

/// Asks every connected agent of the cluster to run a probe cycle now.
async fn probe_now(State(r): State<Readers>, Path(scope): Path<String>) -> Response {
    let (reply, asked) = tokio::sync::oneshot::channel();
    let cmd = crate::state::Command::ProbeNow {
        cluster: scope.clone(),
        reply,
    };
    if r.commands.send(cmd).await.is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "collector shutting down");
    }
    match asked.await {
        Ok(Ok(0)) => error(
            StatusCode::NOT_FOUND,
            format!("no connected agent in cluster `{scope}`"),
        ),
        Ok(Ok(n)) => (
            StatusCode::ACCEPTED,
            Json(json!({"cluster": scope, "agents_asked": n})),
        )
            .into_response(),
        Ok(Err(wait)) => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "cluster `{scope}` was asked for a cycle less than {}s ago",
                    crate::state::PROBE_NOW_EVERY.as_secs()
                ),
            );
            let secs = wait.as_secs_f64().ceil().max(1.0).to_string();
            if let Ok(v) = axum::http::HeaderValue::from_str(&secs) {
                r.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
            }
            r
        }
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "collector shutting down"),
    }
}

/// Forgets a node whose agent is gone for good (decommissioned, renamed): `204`, `404` unknown,
/// `409` while its agent is connected (it would be back with its next batch).
async fn forget_node(
    State(r): State<Readers>,
    Path((scope, node)): Path<(String, String)>,
) -> Response {
    use crate::state::Unforgettable;
    let (reply, answer) = tokio::sync::oneshot::channel();
    let cmd = crate::state::Command::Forget {
        cluster: scope.clone(),
        node: node.clone(),
        reply,
    };
    if r.commands.send(cmd).await.is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "collector shutting down");
    }
    match answer.await {
        Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(Unforgettable::Unknown)) => error(
            StatusCode::NOT_FOUND,
            format!("no node `{node}` in cluster `{scope}`"),
        ),
        Ok(Err(Unforgettable::Connected)) => error(
            StatusCode::CONFLICT,
            format!("`{node}` of `{scope}` has a connected agent: stop it first"),
        ),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "collector shutting down"),
    }
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    cluster: Option<String>,
    #[serde(default)]
    since: i64,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    500
}

async fn events(State(r): State<Readers>, Query(q): Query<EventsQuery>) -> Response {
    match r
        .events
        .query(q.cluster, q.since, q.limit.min(10_000))
        .await
    {
        Ok(events) => Json(json!({"events": events})).into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("event log unavailable: {e}"),
        ),
    }
}

#[derive(Debug, Deserialize)]
struct StreamQuery {
    cluster: Option<String>,
    /// Resume after this event id (as `Last-Event-ID`, which wins).
    since: Option<i64>,
}

/// Server-Sent Events (see [`crate::http::sse`]): `event: vigie` with the event as JSON and its
/// id as the SSE id, optionally of one cluster, resumed after `Last-Event-ID` or `?since=`.
async fn event_stream(
    State(r): State<Readers>,
    Query(q): Query<StreamQuery>,
    headers: axum::http::HeaderMap,
) -> Response {
    // The stream ends with the state task (shutdown, or its death): no SSE client holds the
    // collector up.
    let Some(rx) = r.live.upgrade().map(|tx| tx.subscribe()) else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "collector shutting down");
    };
    let Some(place) = r.sse.take() else {
        let mut resp = error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} event streams are open already",
                crate::http::sse::MAX_CLIENTS
            ),
        );
        resp.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("10"),
        );
        return resp;
    };
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    let ask = crate::http::sse::Ask {
        cluster: q.cluster,
        after: resume.or(q.since),
        // Read after subscribing: every later event comes live.
        sent_before: r.live_sent.load(std::sync::atomic::Ordering::Acquire),
    };
    let log = crate::http::sse::Log {
        reader: r.events.clone(),
        writer: r.store.clone(),
    };
    crate::http::sse::stream(rx, log, ask, place)
}
