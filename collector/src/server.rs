//! `run`: the collector's whole runtime on listeners the caller bound (tests bind `127.0.0.1:0`),
//! until `shutdown` resolves — the same code path in tests and production.

use std::future::Future;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use vigie_proto::v1::ingest_server::IngestServer;

use crate::config::CollectorConfig;
use crate::ingest::IngestService;
use crate::{http::api, state};

/// How long open connections may take to finish once the collector is asked to stop.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("API tokens: {0}")]
    Tokens(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("the state task stopped unexpectedly: the collector cannot judge anything any more")]
    StateTask,
    #[error("{field}: {source}")]
    Tls {
        field: String,
        source: vigie_proto::tls::TlsError,
    },
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, RunError> {
    std::fs::read(path).map_err(|source| RunError::Read {
        path: path.display().to_string(),
        source,
    })
}

pub async fn run(
    cfg: CollectorConfig,
    grpc: TcpListener,
    http: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    vigie_proto::tls::install_crypto_provider();
    let access = crate::http::auth::Access::from_config(&cfg.api).map_err(RunError::Tokens)?;
    if cfg.api.auth == crate::config::ApiAuth::None && !cfg.http_listen.ip().is_loopback() {
        tracing::warn!(http = %cfg.http_listen, "The HTTP API is open (api.auth = none) on a non-loopback address");
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_tx = std::sync::Arc::new(stop_tx);
    let stop = stop_tx.clone();
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let receiver_client = |field: String, files: vigie_proto::tls::TlsFiles| {
        crate::config::http_client(std::time::Duration::from_secs(10), &files)
            .map_err(|source| RunError::Tls { field, source })
    };
    let alertmanager = match &cfg.alertmanager {
        Some(am) => Some((am, receiver_client("alertmanager".into(), am.tls_files())?)),
        None => None,
    };
    // Everything that can fail on bad input (files, certificates) is read before the store is
    // opened and the state task started.
    let mut targets = Vec::new();
    for (i, w) in cfg.webhooks.iter().enumerate() {
        let client = receiver_client(format!("webhooks[{i}]"), w.tls_files())?;
        let secret = read(&w.secret_file)?;
        let secret = String::from_utf8_lossy(&secret)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .as_bytes()
            .to_vec();
        targets.push(crate::notify::webhook::Target {
            url: w.url.clone(),
            secret,
            client,
        });
    }
    let mut builder = Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(5)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(5)))
        .tcp_keepalive(Some(std::time::Duration::from_secs(10)))
        // An agent uses one stream; more on one connection are only a way to hold resources.
        .max_concurrent_streams(Some(8));
    let mut require_client_cert = false;
    if let Some(tls) = &cfg.tls {
        let identity = Identity::from_pem(read(&tls.cert)?, read(&tls.key)?);
        let mut tls_cfg = ServerTlsConfig::new().identity(identity);
        if let Some(ca) = &tls.client_ca {
            tls_cfg = tls_cfg.client_ca_root(Certificate::from_pem(read(ca)?));
            require_client_cert = true;
        }
        builder = builder.tls_config(tls_cfg)?;
    }
    let opened = crate::store::open(&cfg.events.path)?;
    let (queue, writer_task) = crate::store::spawn_writer(opened.writer);
    let persistence = state::Persistence {
        queue,
        reader: opened.reader,
        next_id: opened.next_id,
        open: opened.open,
        retention: cfg.events.retention,
    };
    let alertmanager = alertmanager.map(|(am, client)| {
        let (tx, rx) = watch::channel(Vec::new());
        tokio::spawn(crate::notify::run_sender(
            client,
            am.url.clone(),
            am.resend,
            rx,
            stopped(stop_rx.clone()),
        ));
        tx
    });
    let webhooks = (!targets.is_empty())
        .then(|| crate::notify::webhook::spawn(targets, stopped(stop_rx.clone())));
    let notify = (alertmanager.is_some() || webhooks.is_some()).then(|| state::Notify {
        notifier: crate::notify::Notifier::new(cfg.notify.holds()),
        alertmanager,
        webhooks,
    });
    let fd_limit = crate::limits::raise_fd_limit();
    let (grpc_cap, http_cap) = crate::limits::fit(
        fd_limit,
        crate::limits::MAX_AGENT_CONNECTIONS,
        crate::limits::MAX_HTTP_CONNECTIONS,
    );
    tracing::info!(fd_limit, grpc_cap, http_cap, "Connection caps");
    let ports = std::sync::Arc::new(crate::limits::Ports {
        fd_limit,
        grpc: crate::limits::PortGauge::new(grpc_cap, crate::limits::GRPC_IDLE),
        http: crate::limits::PortGauge::new(http_cap, crate::limits::HTTP_IDLE),
    });
    let (state_tx, mut readers, state_task) = state::spawn(
        cfg.verdict.policy(),
        cfg.evaluate_every,
        persistence,
        notify,
        stopped(stop_rx.clone()),
    );
    // The state task ends only at shutdown; if it ends before (a panic), everything stops and
    // the process exits non-zero — `/healthz` says so meanwhile.
    let died = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (died, stop_tx, stop_rx) = (died.clone(), stop_tx.clone(), stop_rx.clone());
        tokio::spawn(async move {
            let ended = state_task.await;
            if !*stop_rx.borrow() {
                tracing::error!(error = ?ended.err(), "The state task stopped: shutting the collector down");
                died.store(true, std::sync::atomic::Ordering::Relaxed);
                let _ = stop_tx.send(true);
            }
        })
    };

    let ingest = IngestServer::new(IngestService::new(
        state_tx,
        require_client_cert,
        readers.refused.clone(),
    ))
    .max_decoding_message_size(crate::ingest::MAX_MESSAGE_BYTES);
    tracing::info!(
        grpc = %grpc.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        http = %http.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        tls = cfg.tls.is_some(),
        mtls = require_client_cert,
        "Collector listening"
    );
    let grpc_incoming = tokio_stream::wrappers::ReceiverStream::new(crate::limits::accept(
        grpc,
        ports.grpc.clone(),
        "grpc",
    ));
    let http_incoming = crate::limits::CappedListener {
        rx: crate::limits::accept(http, ports.http.clone(), "http"),
    };
    readers.ports = Some(ports);
    let grpc_server = builder
        .add_service(ingest)
        .serve_with_incoming_shutdown(grpc_incoming, stopped(stop_rx.clone()));
    let stop_rx_drain = stop_rx.clone();
    let http_server = crate::http::serve::serve(
        http_incoming,
        api::router(readers, access),
        stopped(stop_rx),
        crate::http::serve::HEADER_READ,
    );
    // Asked to stop: connections get DRAIN to finish (SSE streams end with the state task);
    // whatever is still open then is dropped.
    let drain = {
        let stop = stopped(stop_rx_drain);
        async move {
            stop.await;
            tokio::time::sleep(DRAIN).await;
        }
    };
    let g = tokio::select! {
        (g, ()) = async { tokio::join!(grpc_server, http_server) } => g,
        _ = drain => {
            tracing::warn!(deadline = ?DRAIN, "Connections still open at the drain deadline: closed");
            Ok(())
        }
    };
    let _ = watcher.await;
    // Every queue handle is gone with the state task: the writer commits its last tick and ends.
    let _ = writer_task.await;
    if died.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(RunError::StateTask);
    }
    g?;
    Ok(())
}
