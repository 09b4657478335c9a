//! TLS plumbing every vigie program shares: rustls on the **ring** provider (as tonic's
//! `tls-ring`; no aws-lc, no OpenSSL), PEM files read with errors naming the file, and client
//! configurations for the HTTP clients (reqwest) and the PostgreSQL connector.
//!
//! vigie builds its own `rustls::ClientConfig` for every client it configures, with the provider
//! passed explicitly. [`install_crypto_provider`] also makes ring the process-wide default, for
//! any reqwest client built without a preconfigured TLS configuration (reqwest's
//! `rustls-no-provider` panics on those otherwise).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// The ring provider.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes ring rustls's process-wide default provider; harmless when one is already installed.
/// Called at the start of every vigie program (agent, collector, `vigie`, tests, bench).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The PEM files of one TLS client: the CA that signed the server's certificate (absent: the
/// system's roots), and an optional client certificate with its key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TlsFiles {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// Which of the three files a [`TlsError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFile {
    Ca,
    Cert,
    Key,
}

impl TlsFile {
    /// The configuration key: `ca`, `cert`, `key`.
    pub fn key(self) -> &'static str {
        match self {
            TlsFile::Ca => "ca",
            TlsFile::Cert => "cert",
            TlsFile::Key => "key",
        }
    }
}

/// A TLS file that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError {
    pub file: TlsFile,
    pub message: String,
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file.key(), self.message)
    }
}

impl std::error::Error for TlsError {}

/// How much of the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Chain to a trusted root and the name we connect to (https; `sslmode=verify-full`).
    Full,
    /// Chain only, any name (`sslmode=verify-ca`).
    ChainOnly,
    /// Encryption only: any certificate (`sslmode=require`, like libpq). The handshake's
    /// signatures are still checked.
    Nothing,
}

fn err(file: TlsFile, path: &Path, message: impl std::fmt::Display) -> TlsError {
    TlsError {
        file,
        message: format!("{}: {message}", path.display()),
    }
}

/// Every certificate of a PEM file (at least one).
pub fn read_certs(file: TlsFile, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| err(file, path, e))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(file, path, format!("not a PEM certificate file ({e})")))?;
    if certs.is_empty() {
        return Err(err(file, path, "holds no PEM certificate"));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| err(TlsFile::Key, path, e))?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| err(TlsFile::Key, path, format!("no PEM private key ({e})")))
}

/// Reads and checks the files (each parseable, the key matching the certificate): what a
/// configuration validation calls before anything runs.
pub fn check(files: &TlsFiles) -> Result<(), TlsError> {
    client_config(files, Verify::Full).map(drop)
}

/// A rustls client configuration for `files`, verifying the server as `verify` says.
pub fn client_config(files: &TlsFiles, verify: Verify) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError {
            file: TlsFile::Ca,
            message: format!("TLS versions: {e}"),
        })?;
    let roots = match &files.ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(TlsFile::Ca, ca)? {
                roots.add(cert).map_err(|e| {
                    err(
                        TlsFile::Ca,
                        ca,
                        format!("not a usable CA certificate ({e})"),
                    )
                })?;
            }
            Some(Arc::new(roots))
        }
        None => None,
    };
    let verifier: Arc<dyn ServerCertVerifier> = match (verify, roots) {
        (Verify::Nothing, _) => Arc::new(AnyCertificate(provider.clone())),
        (Verify::Full, Some(roots)) => webpki(roots, &provider, files)?,
        (Verify::ChainOnly, Some(roots)) => Arc::new(AnyName(webpki(roots, &provider, files)?)),
        (Verify::Full, None) => Arc::new(
            rustls_platform_verifier::Verifier::new(provider.clone()).map_err(|e| TlsError {
                file: TlsFile::Ca,
                message: format!("the system's trusted roots: {e}"),
            })?,
        ),
        (Verify::ChainOnly, None) => Arc::new(AnyName(Arc::new(
            rustls_platform_verifier::Verifier::new(provider.clone()).map_err(|e| TlsError {
                file: TlsFile::Ca,
                message: format!("the system's trusted roots: {e}"),
            })?,
        ))),
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(TlsFile::Cert, cert)?;
            let k = read_key(key)?;
            builder.with_client_auth_cert(chain, k).map_err(|e| {
                err(
                    TlsFile::Key,
                    key,
                    format!("cannot be used with {}: {e}", cert.display()),
                )
            })
        }
        (Some(_), None) => Err(TlsError {
            file: TlsFile::Key,
            message: "missing: a client cert needs its key".into(),
        }),
        (None, Some(_)) => Err(TlsError {
            file: TlsFile::Cert,
            message: "missing: a client key needs its cert".into(),
        }),
        (None, None) => Ok(builder.with_no_client_auth()),
    }
}

fn webpki(
    roots: Arc<RootCertStore>,
    provider: &Arc<CryptoProvider>,
    files: &TlsFiles,
) -> Result<Arc<dyn ServerCertVerifier>, TlsError> {
    let v = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| TlsError {
            file: TlsFile::Ca,
            message: format!(
                "{}: {e}",
                files.ca.as_deref().unwrap_or(Path::new("(ca)")).display()
            ),
        })?;
    Ok(v)
}

/// Checks the chain, ignores the name (`verify-ca`).
#[derive(Debug)]
struct AnyName(Arc<dyn ServerCertVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Accepts any certificate (`sslmode=require`); still checks the handshake's signatures.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_name_the_file() {
        let files = TlsFiles {
            ca: Some("/nonexistent/ca.crt".into()),
            ..TlsFiles::default()
        };
        let e = check(&files).expect_err("missing");
        assert_eq!(e.file, TlsFile::Ca);
        assert!(e.message.contains("/nonexistent/ca.crt"), "{e}");
    }

    #[test]
    fn a_file_without_pem_is_refused() {
        let dir = std::env::temp_dir().join(format!("vigie-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let ca = dir.join("ca.crt");
        std::fs::write(&ca, "not a certificate\n").expect("write");
        let e = check(&TlsFiles {
            ca: Some(ca),
            ..TlsFiles::default()
        })
        .expect_err("garbage");
        assert_eq!(e.file, TlsFile::Ca);
        assert!(e.message.contains("no PEM certificate"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn cert_without_key_names_the_key() {
        let e = check(&TlsFiles {
            cert: Some("/x.crt".into()),
            ..TlsFiles::default()
        })
        .expect_err("half");
        assert_eq!(e.file, TlsFile::Key);
    }

    #[test]
    fn system_roots_load_when_no_ca_is_given() {
        client_config(&TlsFiles::default(), Verify::Full).expect("system roots");
    }
}
