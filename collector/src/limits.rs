//! What the collector's ports let in: at most so many open connections per port (one more is
//! accepted and closed at once, and counted), and the process's file-descriptor limit raised to
//! its hard limit at start, so that a flood of idle connections is refused by a cap the
//! collector chose rather than by running out of descriptors, which would also stop `/healthz`
//! and every new agent.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// Descriptors kept for everything but client connections (the event store, outgoing
/// notifications, the listening sockets, the runtime).
const RESERVED_FDS: u64 = 256;

/// Raises the soft file-descriptor limit to the hard one; returns the limit now in force.
pub fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(error = %e, "Cannot raise the file-descriptor limit");
        }
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// The connection caps for `fd_limit`: the configured ones, lowered to fit in the limit (agents
/// get what the API's cap and the reserve leave).
pub fn fit(fd_limit: u64, grpc: usize, http: usize) -> (usize, usize) {
    let usable = fd_limit.saturating_sub(RESERVED_FDS);
    let http = (http as u64).min(usable / 4).max(1);
    let grpc = (grpc as u64).min(usable.saturating_sub(http)).max(1);
    (grpc as usize, http as usize)
}

/// Open connections allowed on the agents' gRPC port and on the API's HTTP port (lowered to fit
/// in the descriptor limit, see [`fit`]).
pub const MAX_AGENT_CONNECTIONS: usize = 20_000;
pub const MAX_HTTP_CONNECTIONS: usize = 1_000;

/// Both ports' gauges and the descriptor limit, for `/healthz` and `/metrics`.
#[derive(Debug)]
pub struct Ports {
    pub fd_limit: u64,
    pub grpc: Arc<PortGauge>,
    pub http: Arc<PortGauge>,
}

/// One port's connections: open now, the cap, refused over it.
#[derive(Debug)]
pub struct PortGauge {
    permits: Arc<Semaphore>,
    cap: usize,
    refused: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PortReport {
    pub open: usize,
    pub cap: usize,
    pub refused: u64,
}

impl PortGauge {
    pub fn new(cap: usize) -> Arc<PortGauge> {
        Arc::new(PortGauge {
            permits: Arc::new(Semaphore::new(cap)),
            cap,
            refused: AtomicU64::new(0),
        })
    }

    pub fn report(&self) -> PortReport {
        PortReport {
            open: self.cap - self.permits.available_permits(),
            cap: self.cap,
            refused: self.refused.load(Ordering::Relaxed),
        }
    }
}

/// An accepted connection holding its place under the port's cap until it is dropped.
#[derive(Debug)]
pub struct Capped {
    io: TcpStream,
    _permit: OwnedSemaphorePermit,
}

/// Accepts on `listener` into a channel, each connection under `gauge`'s cap: the accepted
/// connections for tonic's `serve_with_incoming` or axum's [`CappedListener`].
pub fn accept(
    listener: TcpListener,
    gauge: Arc<PortGauge>,
    port: &'static str,
) -> mpsc::Receiver<std::io::Result<Capped>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let io = tokio::select! {
                _ = tx.closed() => return,
                accepted = listener.accept() => match accepted {
                    Ok((io, _)) => io,
                    Err(e) => {
                        // Out of descriptors (or another transient error): wait, never spin.
                        tracing::warn!(port, error = %e, "Cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            match gauge.permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    let _ = io.set_nodelay(true);
                    if tx
                        .send(Ok(Capped {
                            io,
                            _permit: permit,
                        }))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Err(_) => {
                    if gauge
                        .refused
                        .fetch_add(1, Ordering::Relaxed)
                        .is_multiple_of(1000)
                    {
                        tracing::warn!(
                            port,
                            cap = gauge.cap,
                            "Connection cap reached: closing new connections"
                        );
                    }
                    drop(io);
                }
            }
        }
    });
    rx
}

/// axum's side of [`accept`].
#[derive(Debug)]
pub struct CappedListener {
    pub rx: mpsc::Receiver<std::io::Result<Capped>>,
    pub local: SocketAddr,
}

impl axum::serve::Listener for CappedListener {
    type Io = Capped;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Capped, SocketAddr) {
        loop {
            match self.rx.recv().await {
                Some(Ok(c)) => {
                    let peer = c.io.peer_addr().unwrap_or(self.local);
                    return (c, peer);
                }
                Some(Err(_)) => continue,
                None => std::future::pending().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

impl tonic::transport::server::Connected for Capped {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl AsyncRead for Capped {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Capped {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_fit_in_the_descriptor_limit() {
        assert_eq!(fit(1_048_576, 20_000, 1_000), (20_000, 1_000));
        // 1,024 descriptors: the API keeps a quarter of what the reserve leaves.
        assert_eq!(fit(1_024, 20_000, 1_000), (576, 192));
        assert_eq!(fit(100, 20_000, 1_000), (1, 1));
    }

    #[tokio::test]
    async fn a_connection_over_the_cap_is_closed_and_counted_and_a_freed_place_is_reused() {
        use tokio::io::AsyncReadExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let gauge = PortGauge::new(2);
        let mut rx = accept(listener, gauge.clone(), "test");
        let a = TcpStream::connect(addr).await.expect("a");
        let first = rx.recv().await.expect("first").expect("ok");
        let _b = TcpStream::connect(addr).await.expect("b");
        let _second = rx.recv().await.expect("second").expect("ok");
        assert_eq!(gauge.report().open, 2);
        // The third is accepted by the kernel, then closed by the cap: it reads end of file.
        let mut c = TcpStream::connect(addr).await.expect("c");
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf))
            .await
            .expect("closed in time")
            .unwrap_or(0);
        assert_eq!(n, 0);
        assert_eq!(gauge.report().refused, 1);
        drop((first, a));
        let _d = TcpStream::connect(addr).await.expect("d");
        let _fourth = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a freed place is reused")
            .expect("fourth")
            .expect("ok");
        assert_eq!(
            gauge.report(),
            PortReport {
                open: 2,
                cap: 2,
                refused: 1
            }
        );
    }
}
