//! The API's HTTP/1.1 server. axum's `serve` runs hyper without a timer, so hyper's header-read
//! timeout never fires and a client trickling its request headers holds a place for good; here
//! hyper has one: headers not complete within [`HEADER_READ`] close the connection. It ends
//! gracefully: once `stop` resolves it accepts nothing more and waits for the open connections
//! (the caller bounds that wait).

use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::limits::{Capped, CappedListener};

/// How long a client has to send a request's headers, counted from its first byte (and, on a
/// kept-alive connection, from the end of the previous response).
pub const HEADER_READ: Duration = Duration::from_secs(10);

/// Serves `router` on the connections `listener` admits until `stop` resolves, then waits for
/// the open ones to finish their requests.
pub async fn serve(
    mut listener: CappedListener,
    router: Router,
    stop: impl Future<Output = ()>,
    header_read: Duration,
) {
    let (closing_tx, closing) = watch::channel(false);
    let mut open = JoinSet::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            io = listener.next() => {
                open.spawn(connection(io, router.clone(), closing.clone(), header_read));
            }
            Some(_) = open.join_next(), if !open.is_empty() => {}
        }
    }
    drop(listener);
    let _ = closing_tx.send(true);
    while open.join_next().await.is_some() {}
}

async fn connection(
    io: Capped,
    router: Router,
    mut closing: watch::Receiver<bool>,
    header_read: Duration,
) {
    let gauge = io.gauge();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read);
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(router));
    tokio::pin!(conn);
    let ended = tokio::select! {
        ended = conn.as_mut() => ended,
        _ = async { drop(closing.wait_for(|c| *c).await) } => {
            // Finishes the request in flight, then closes.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    match ended {
        Err(e) if e.is_timeout() => {
            gauge.slow_headers_closed();
            tracing::debug!("API connection closed: its request headers came too slowly");
        }
        Err(e) => tracing::debug!(error = %e, "API connection ended with an error"),
        Ok(()) => {}
    }
}
