//! TLS for the agent's clients: one reqwest client per endpoint (Patroni, etcd, HAProxy's stats
//! page), each with that endpoint's CA and client certificate, and the PostgreSQL connector that
//! follows libpq's `sslmode`. rustls on ring throughout (see `vigie_proto::tls`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};
use vigie_proto::tls::{TlsError, TlsFiles, Verify, client_config};

use crate::config::{PostgresConfig, SslMode};

/// An HTTP client for one endpoint: the probe timeout, and TLS with `files` for https URLs
/// (the system's roots when there is no CA).
pub fn http_client(timeout: Duration, files: &TlsFiles) -> Result<reqwest::Client, TlsError> {
    let tls = client_config(files, Verify::Full)?;
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("vigie-agent/", env!("CARGO_PKG_VERSION")))
        .tls_backend_preconfigured(tls)
        .build()
        .map_err(|e| TlsError {
            file: vigie_proto::tls::TlsFile::Ca,
            message: format!("HTTP client: {e}"),
        })
}

/// What tokio-postgres is told (its own `sslmode` knows only disable/prefer/require) and the
/// connector that does the verification the mode asks for.
pub fn postgres_connector(
    cfg: &PostgresConfig,
) -> Result<(tokio_postgres::config::SslMode, PgTls), TlsError> {
    connector(cfg.sslmode, &cfg.tls_files())
}

/// [`postgres_connector`] from an `sslmode` and the files (`ca` = `sslrootcert`).
pub fn connector(
    sslmode: SslMode,
    files: &TlsFiles,
) -> Result<(tokio_postgres::config::SslMode, PgTls), TlsError> {
    use tokio_postgres::config::SslMode as Wire;
    let (wire, verify) = match sslmode {
        SslMode::Disable => (Wire::Disable, Verify::Nothing),
        SslMode::Prefer => (Wire::Prefer, Verify::Nothing),
        // libpq: with a root certificate, `require` checks the chain as `verify-ca` does.
        SslMode::Require if files.ca.is_some() => (Wire::Require, Verify::ChainOnly),
        SslMode::Require => (Wire::Require, Verify::Nothing),
        SslMode::VerifyCa => (Wire::Require, Verify::ChainOnly),
        SslMode::VerifyFull => (Wire::Require, Verify::Full),
    };
    let config = match sslmode {
        SslMode::Disable => None,
        _ => Some(Arc::new(client_config(files, verify)?)),
    };
    Ok((wire, PgTls { config }))
}

/// tokio-postgres's `MakeTlsConnect` on tokio-rustls (`None`: plaintext only).
#[derive(Debug, Clone)]
pub struct PgTls {
    config: Option<Arc<rustls::ClientConfig>>,
}

impl<S> MakeTlsConnect<S> for PgTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = PgTlsStream<S>;
    type TlsConnect = PgTlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<PgTlsConnect> {
        // A Unix socket has no name (""): the error only matters if TLS is really attempted.
        let name = ServerName::try_from(domain.to_string())
            .map_err(|e| format!("{domain:?} is not a TLS server name: {e}"));
        Ok(PgTlsConnect {
            config: self.config.clone(),
            name,
        })
    }
}

#[derive(Debug)]
pub struct PgTlsConnect {
    config: Option<Arc<rustls::ClientConfig>>,
    name: Result<ServerName<'static>, String>,
}

impl<S> TlsConnect<S> for PgTlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = PgTlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<PgTlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let Some(config) = self.config else {
                return Err(io::Error::other("sslmode = disable: no TLS"));
            };
            let name = self
                .name
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, stream)
                .await?;
            Ok(PgTlsStream(tls))
        })
    }
}

/// A TLS session to PostgreSQL.
#[derive(Debug)]
pub struct PgTlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for PgTlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        // SCRAM then runs without channel binding (tokio-postgres's default is `prefer`).
        ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for PgTlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for PgTlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
