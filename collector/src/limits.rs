//! What the collector's ports let in: at most so many open connections per port (one more is
//! accepted and closed at once, and counted), idle connections closed (on the agents' port one
//! with no gRPC stream open, on the API's one with no byte either way, for a while), and the
//! process's file-descriptor limit raised to its hard limit at start, so that a flood of idle
//! connections is refused by a cap the collector chose and then evicted, rather than running
//! the process out of descriptors, which would also stop `/healthz` and every new agent.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::Waker;
use std::task::{Context, Poll};
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::{Instant, Sleep};

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

/// Connections looked at per eviction, and how long a new one waits for an evicted one's place.
const EVICTION_SCAN: usize = 256;
const EVICTION_WAIT: Duration = Duration::from_secs(2);
const EVICTION_GRACE: Duration = Duration::from_secs(2);

/// Both ports' gauges and the descriptor limit, for `/healthz` and `/metrics`.
#[derive(Debug)]
pub struct Ports {
    pub fd_limit: u64,
    pub grpc: Arc<PortGauge>,
    pub http: Arc<PortGauge>,
}

/// When a port's connection is idle, and closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idle {
    /// No gRPC stream open for this long (HTTP/2 pings are traffic; a connection that holds no
    /// agent's stream is of no use). Streams are counted by [`Activity::stream`].
    NoStream(Duration),
    /// Not a byte read or written for this long (an SSE stream writes a keep-alive comment every
    /// 15 s, a request in flight is answered well within it).
    Silent(Duration),
}

impl Idle {
    /// How long a connection may stay idle.
    pub fn after(self) -> Duration {
        match self {
            Idle::NoStream(d) | Idle::Silent(d) => d,
        }
    }
}

/// An agent must open its stream within this long of connecting, and a connection whose
/// streams have all ended is closed after as long.
pub const GRPC_IDLE: Idle = Idle::NoStream(Duration::from_secs(20));
/// An API connection with no traffic for a minute is closed (a kept-alive client reconnects).
pub const HTTP_IDLE: Idle = Idle::Silent(Duration::from_secs(60));

/// One port's connections: open now, the cap, refused over it, closed as idle.
#[derive(Debug)]
pub struct PortGauge {
    permits: Arc<Semaphore>,
    cap: usize,
    idle: Idle,
    refused: AtomicU64,
    idle_closed: AtomicU64,
    evicted: AtomicU64,
    slow_headers: AtomicU64,
    /// The port's connections, oldest first, for eviction at the cap (see [`PortGauge::evict`]).
    conns: Mutex<VecDeque<Weak<Activity>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PortReport {
    pub open: usize,
    pub cap: usize,
    pub refused: u64,
    pub idle_closed: u64,
    pub evicted: u64,
    /// HTTP connections closed because a request's headers took longer than the header-read
    /// timeout (a client trickling them).
    pub slow_headers: u64,
}

impl PortGauge {
    pub fn new(cap: usize, idle: Idle) -> Arc<PortGauge> {
        Arc::new(PortGauge {
            permits: Arc::new(Semaphore::new(cap)),
            cap,
            idle,
            refused: AtomicU64::new(0),
            idle_closed: AtomicU64::new(0),
            slow_headers: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            conns: Mutex::new(VecDeque::new()),
        })
    }

    /// At the cap: closes the oldest connection that is idle now — on the agents' port one that
    /// holds no stream, on the API's one silent for a second or more — so that a flood of idle
    /// connections gives way to a new agent (which opens its stream at once) or a new request.
    /// Looks at a bounded number of connections per call. Whether one was told to close.
    fn evict(&self) -> bool {
        let now = elapsed_ms();
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        for _ in 0..conns.len().min(EVICTION_SCAN) {
            let Some(weak) = conns.pop_front() else {
                break;
            };
            let Some(a) = weak.upgrade() else {
                continue; // closed already
            };
            let idle = match self.idle {
                // A new connection gets two seconds to open its stream (TLS, HTTP/2 preface).
                Idle::NoStream(_) => {
                    a.streams.load(Ordering::Acquire) == 0
                        && a.idle_deadline(EVICTION_GRACE)
                            .is_some_and(|at| at <= Instant::now())
                }
                Idle::Silent(_) => {
                    now.saturating_sub(a.last_io_ms.load(Ordering::Relaxed)) >= 1_000
                }
            };
            if idle && !a.evicted.swap(true, Ordering::AcqRel) {
                if let Some(w) = a.waker.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    w.wake();
                }
                return true;
            }
            conns.push_back(weak);
        }
        false
    }

    fn register(&self, a: &Arc<Activity>) {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        if conns.len() >= 2 * self.cap {
            conns.retain(|w| w.strong_count() > 0);
        }
        conns.push_back(Arc::downgrade(a));
    }

    pub fn report(&self) -> PortReport {
        PortReport {
            open: self.cap - self.permits.available_permits(),
            cap: self.cap,
            refused: self.refused.load(Ordering::Relaxed),
            idle_closed: self.idle_closed.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
            slow_headers: self.slow_headers.load(Ordering::Relaxed),
        }
    }

    /// Counts a connection closed for headers slower than the header-read timeout.
    pub fn slow_headers_closed(&self) {
        self.slow_headers.fetch_add(1, Ordering::Relaxed);
    }
}

/// A connection's gRPC streams, shared between it and its streams' handlers.
#[derive(Debug)]
pub struct Activity {
    streams: AtomicUsize,
    /// When the last stream ended (or the connection opened).
    idle_since: std::sync::Mutex<Instant>,
    /// Told to close to make room (see [`PortGauge::evict`]); its reader's waker, to tell it.
    evicted: AtomicBool,
    waker: Mutex<Option<Waker>>,
    /// The last byte read or written, in ms since the process's first connection.
    last_io_ms: AtomicU64,
}

/// Milliseconds since the first call (a clock for [`Activity::last_io_ms`]).
fn elapsed_ms() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            streams: AtomicUsize::new(0),
            idle_since: std::sync::Mutex::new(Instant::now()),
            evicted: AtomicBool::new(false),
            waker: Mutex::new(None),
            last_io_ms: AtomicU64::new(elapsed_ms()),
        })
    }

    /// Counts a stream open on this connection until the guard is dropped.
    pub fn stream(self: &Arc<Self>) -> StreamGuard {
        self.streams.fetch_add(1, Ordering::AcqRel);
        StreamGuard(self.clone())
    }

    /// When the connection will have been without a stream for `d`, or `None` while one is open.
    fn idle_deadline(&self, d: Duration) -> Option<Instant> {
        if self.streams.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = *self.idle_since.lock().unwrap_or_else(|e| e.into_inner());
        Some(since + d)
    }
}

/// One open stream of a connection (see [`Activity::stream`]).
#[derive(Debug)]
pub struct StreamGuard(Arc<Activity>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        *self.0.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a request learns of its connection: its peer, and its streams' count.
#[derive(Debug, Clone)]
pub struct CappedInfo {
    pub tcp: tonic::transport::server::TcpConnectInfo,
    pub activity: Arc<Activity>,
}

/// An accepted connection holding its place under the port's cap until it is dropped, and
/// closed (its reads fail) once idle.
#[derive(Debug)]
pub struct Capped {
    io: TcpStream,
    _permit: OwnedSemaphorePermit,
    gauge: Arc<PortGauge>,
    activity: Arc<Activity>,
    /// Checks idleness when it fires; reset to the next instant the connection could be idle.
    timer: Pin<Box<Sleep>>,
    /// Closed as idle or evicted (counted once).
    closed: bool,
}

impl Capped {
    /// The gauge of the port this connection came in on.
    pub fn gauge(&self) -> Arc<PortGauge> {
        self.gauge.clone()
    }

    fn new(io: TcpStream, permit: OwnedSemaphorePermit, gauge: Arc<PortGauge>) -> Capped {
        let now = Instant::now();
        let first = now + gauge.idle.after();
        let activity = Activity::new();
        gauge.register(&activity);
        Capped {
            io,
            _permit: permit,
            gauge,
            activity,
            timer: Box::pin(tokio::time::sleep_until(first)),
            closed: false,
        }
    }

    /// When a byte was last read or written.
    fn last_io(&self) -> Instant {
        let ago = elapsed_ms().saturating_sub(self.activity.last_io_ms.load(Ordering::Relaxed));
        Instant::now()
            .checked_sub(Duration::from_millis(ago))
            .unwrap_or_else(Instant::now)
    }

    fn touched(&self) {
        self.activity
            .last_io_ms
            .store(elapsed_ms(), Ordering::Relaxed);
    }

    /// Whether the connection is idle by its port's rule; else the timer is set to look again.
    fn idle(&mut self, cx: &mut Context<'_>) -> bool {
        if self.closed {
            return true;
        }
        // Told to make room, unless a stream opened since.
        if self.activity.evicted.load(Ordering::Acquire)
            && self.activity.streams.load(Ordering::Acquire) == 0
        {
            self.closed = true;
            self.gauge.evicted.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        {
            let mut waker = self
                .activity
                .waker
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *waker = Some(cx.waker().clone());
            }
        }
        while self.timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            let deadline = match self.gauge.idle {
                Idle::Silent(d) => Some(self.last_io() + d),
                Idle::NoStream(d) => self.activity.idle_deadline(d),
            };
            match deadline {
                Some(at) if at <= now => {
                    self.closed = true;
                    self.gauge.idle_closed.fetch_add(1, Ordering::Relaxed);
                    return true;
                }
                Some(at) => self.timer.as_mut().reset(at),
                None => {
                    self.timer.as_mut().reset(now + self.gauge.idle.after());
                }
            }
        }
        false
    }
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
            let permit = match gauge.permits.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                // Room made by closing an idle connection: its place is free once it is dropped.
                Err(_) if gauge.evict() => {
                    tokio::time::timeout(EVICTION_WAIT, gauge.permits.clone().acquire_owned())
                        .await
                        .ok()
                        .and_then(Result::ok)
                }
                Err(_) => None,
            };
            match permit {
                Some(permit) => {
                    let _ = io.set_nodelay(true);
                    if tx
                        .send(Ok(Capped::new(io, permit, gauge.clone())))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                None => {
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

/// The API server's side of [`accept`] (`http::serve`).
#[derive(Debug)]
pub struct CappedListener {
    pub rx: mpsc::Receiver<std::io::Result<Capped>>,
}

impl CappedListener {
    /// The next admitted connection; pending for good once the accept task has ended.
    pub async fn next(&mut self) -> Capped {
        loop {
            match self.rx.recv().await {
                Some(Ok(c)) => return c,
                Some(Err(_)) => continue,
                None => std::future::pending().await,
            }
        }
    }
}

impl tonic::transport::server::Connected for Capped {
    type ConnectInfo = CappedInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        CappedInfo {
            tcp: self.io.connect_info(),
            activity: self.activity.clone(),
        }
    }
}

impl AsyncRead for Capped {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Pending if this.idle(cx) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "idle connection closed",
            ))),
            Poll::Pending => Poll::Pending,
            ready => {
                this.touched();
                ready
            }
        }
    }
}

impl AsyncWrite for Capped {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let written = Pin::new(&mut this.io).poll_write(cx, buf);
        if written.is_ready() {
            this.touched();
        }
        written
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
        let this = &mut *self;
        let written = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if written.is_ready() {
            this.touched();
        }
        written
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

    /// A served connection: read by a task as a server would, until it fails or ends.
    fn serve(mut c: Capped) -> tokio::task::JoinHandle<std::io::Result<usize>> {
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut buf = [0u8; 64];
            let mut total = 0;
            loop {
                match c.read(&mut buf).await? {
                    0 => return Ok(total),
                    n => {
                        total += n;
                        c.write_all(&buf[..n]).await?;
                    }
                }
            }
        })
    }

    const SHORT: Duration = Duration::from_millis(500);

    #[tokio::test]
    async fn a_silent_connection_is_closed_and_one_that_talks_is_kept() {
        use tokio::io::AsyncWriteExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let gauge = PortGauge::new(4, Idle::Silent(SHORT));
        let mut rx = accept(listener, gauge.clone(), "test");
        let _quiet = TcpStream::connect(addr).await.expect("quiet");
        let mut quiet = serve(rx.recv().await.expect("quiet").expect("ok"));
        let mut talker = TcpStream::connect(addr).await.expect("talker");
        let talking = serve(rx.recv().await.expect("talker").expect("ok"));
        // The talker writes every 100 ms until the quiet one is closed (or 10 s).
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                tokio::select! {
                    joined = &mut quiet => return joined,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {
                        talker.write_all(b"x").await.expect("write");
                    }
                }
            }
        })
        .await
        .expect("the quiet connection is closed in time");
        let err = closed.expect("joined").expect_err("closed as idle");
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(!talking.is_finished(), "the talking connection is kept");
        assert_eq!(gauge.report().idle_closed, 1);
    }

    #[tokio::test]
    async fn a_connection_without_a_stream_is_closed_and_one_holding_a_stream_is_kept() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let gauge = PortGauge::new(4, Idle::NoStream(SHORT));
        let mut rx = accept(listener, gauge.clone(), "test");
        let _idle = TcpStream::connect(addr).await.expect("idle");
        let idle = serve(rx.recv().await.expect("idle").expect("ok"));
        let _agent = TcpStream::connect(addr).await.expect("agent");
        let agent = rx.recv().await.expect("agent").expect("ok");
        let stream = agent.activity.stream();
        let mut agent = serve(agent);
        let err = tokio::time::timeout(Duration::from_secs(10), idle)
            .await
            .expect("closed in time")
            .expect("joined")
            .expect_err("closed as idle");
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        // Held well past the idle time while its stream is open.
        let held = tokio::time::timeout(4 * SHORT, &mut agent).await;
        assert!(held.is_err(), "a connection with a stream open is kept");
        // Its stream ended: closed soon after.
        drop(stream);
        let err = tokio::time::timeout(Duration::from_secs(10), agent)
            .await
            .expect("closed in time")
            .expect("joined")
            .expect_err("closed as idle");
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(gauge.report().idle_closed, 2);
    }

    #[tokio::test]
    async fn at_the_cap_the_oldest_connection_without_a_stream_makes_room() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let gauge = PortGauge::new(2, Idle::NoStream(Duration::from_secs(60)));
        let mut rx = accept(listener, gauge.clone(), "test");
        let _idle = TcpStream::connect(addr).await.expect("idle");
        let idle = serve(rx.recv().await.expect("idle").expect("ok"));
        let _agent = TcpStream::connect(addr).await.expect("agent");
        let agent = rx.recv().await.expect("agent").expect("ok");
        let _stream = agent.activity.stream();
        let agent = serve(agent);
        // A new agent at the cap: once the idle connection is past its grace to open a stream,
        // it gives way; the one with a stream stays. (Tried until admitted: before that, refused.)
        let deadline = Instant::now() + Duration::from_secs(10);
        let (_new, new) = loop {
            let c = TcpStream::connect(addr).await.expect("new");
            if let Ok(Some(Ok(admitted))) =
                tokio::time::timeout(Duration::from_millis(500), rx.recv()).await
            {
                break (c, admitted);
            }
            assert!(Instant::now() < deadline, "never admitted");
        };
        let err = idle.await.expect("joined").expect_err("evicted");
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(!agent.is_finished());
        let _stream2 = new.activity.stream();
        // Every place holds a stream: the next one is refused.
        let refused = gauge.report().refused;
        let _over = TcpStream::connect(addr).await.expect("over");
        let deadline = Instant::now() + Duration::from_secs(10);
        while gauge.report().refused == refused {
            assert!(Instant::now() < deadline, "never refused");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!((gauge.report().evicted, gauge.report().open), (1, 2));
        drop(new);
    }

    #[tokio::test]
    async fn a_connection_over_the_cap_is_closed_and_counted_and_a_freed_place_is_reused() {
        use tokio::io::AsyncReadExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let gauge = PortGauge::new(2, HTTP_IDLE);
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
                refused: 1,
                idle_closed: 0,
                evicted: 0,
                slow_headers: 0,
            }
        );
    }
}
