//! The collector's https clients on real TLS: a webhook receiver that requires a client
//! certificate gets the signed notification over https with the configured CA, a receiver whose
//! certificate another CA signed gets nothing, and `vigie --ca` reads an https collector API.
//! Certificates come from `deploy/certs.sh`; the receivers are tiny rustls servers on loopback.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use vigie_collector::config::{CollectorConfig, VerdictConfig, WebhookConfig};
use vigie_proto::tls::{TlsFile, read_certs, read_key};
use vigie_proto::v1;

/// `deploy/certs.sh DIR NODE…`: a CA, the `collector` server certificate (127.0.0.1) and one
/// client certificate per node.
fn certs(dir: &Path, nodes: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/certs.sh");
    let out = std::process::Command::new(script)
        .arg(dir)
        .args(nodes)
        .output()
        .expect("run certs.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One request an https receiver got: path, headers (lowercased names) and body.
#[derive(Debug, Clone)]
struct Got {
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

/// An https server on 127.0.0.1 with the `collector` certificate of `dir`, requiring a client
/// certificate signed by `dir`'s CA when `client_ca` is set; answers every request with `answer`.
async fn https_receiver(
    dir: &Path,
    client_ca: bool,
    answer: &'static str,
) -> (SocketAddr, Arc<Mutex<Vec<Got>>>) {
    let provider = vigie_proto::tls::provider();
    let chain = read_certs(TlsFile::Cert, &dir.join("collector.crt")).expect("cert");
    let key = read_key(&dir.join("collector.key")).expect("key");
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = if client_ca {
        let mut roots = rustls::RootCertStore::empty();
        for c in read_certs(TlsFile::Ca, &dir.join("ca.crt")).expect("ca") {
            roots.add(c).expect("root");
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("client verifier");
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let config = builder.with_single_cert(chain, key).expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let got: Arc<Mutex<Vec<Got>>> = Arc::default();
    let seen = got.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Some(req) = read_request(&mut tls).await {
                    if let Ok(mut g) = seen.lock() {
                        g.push(req);
                    }
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                        answer.len()
                    );
                    let _ = tls.write_all(resp.as_bytes()).await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    (addr, got)
}

/// Reads one HTTP/1.1 request (headers, then `content-length` bytes of body).
async fn read_request<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Option<Got> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.lines();
    let path = lines.next()?.split(' ').nth(1)?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..]).into_owned();
    Some(Got {
        path,
        headers,
        body,
    })
}

/// A plaintext collector on loopback pushing to `webhooks`; its gRPC address and a stopper.
async fn collector(webhooks: Vec<WebhookConfig>) -> (SocketAddr, oneshot::Sender<()>) {
    let grpc_l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let http_l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let cfg = CollectorConfig {
        grpc_listen: grpc_l.local_addr().expect("addr"),
        http_listen: http_l.local_addr().expect("addr"),
        tls: None,
        plaintext: true,
        allow_unauthenticated_agents: false,
        evaluate_every: Duration::from_millis(100),
        events: vigie_collector::config::EventsConfig {
            path: ":memory:".into(),
            retention: Duration::from_secs(3600),
        },
        verdict: VerdictConfig::default(),
        api: Default::default(),
        alertmanager: None,
        webhooks,
        notify: Default::default(),
    };
    vigie_collector::config::validate(&cfg).expect("valid config");
    let grpc = cfg.grpc_listen;
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(vigie_collector::server::run(cfg, grpc_l, http_l, async {
        let _ = stopped.await;
    }));
    (grpc, stop)
}

/// A scripted HAProxy agent whose HAProxy process is down: a critical finding at once.
async fn haproxy_down(grpc: SocketAddr) -> mpsc::Sender<v1::AgentMessage> {
    let mut client = v1::ingest_client::IngestClient::connect(format!("http://{grpc}"))
        .await
        .expect("connect");
    let (tx, rx) = mpsc::channel(8);
    tx.send(v1::AgentMessage {
        msg: Some(v1::agent_message::Msg::Hello(v1::Hello {
            node: "lb1".into(),
            cluster: "demo".into(),
            components: vec!["haproxy".into()],
            agent_version: "test".into(),
            interval_ms: 1000,
        })),
    })
    .await
    .expect("hello");
    let result = |id: &str, status: v1::Status, facts: Value| {
        let probe = vigie_proto::ProbeId::from_name(id).expect("probe");
        v1::ProbeResult {
            probe: probe as i32,
            status: status as i32,
            message: "scripted".into(),
            started_unix_ms: vigie_collector::state::now_ms(),
            duration_us: 10,
            facts: probe.facts_from_json(facts).expect("facts"),
            ..Default::default()
        }
    };
    tx.send(v1::AgentMessage {
        msg: Some(v1::agent_message::Msg::Batch(v1::ResultBatch {
            seq: 1,
            results: vec![
                result("haproxy.process", v1::Status::Critical, Value::Null),
                result("haproxy.rw_port", v1::Status::Ok, Value::Null),
                result(
                    "haproxy.backends",
                    v1::Status::Ok,
                    json!({"proxies": [{"proxy": "demo_rw", "kind": "rw", "up": ["node1"]}]}),
                ),
            ],
            dropped: 0,
        })),
    })
    .await
    .expect("batch");
    let resp = client
        .stream(ReceiverStream::new(rx))
        .await
        .expect("stream");
    tokio::spawn(async move {
        let mut inbound = resp.into_inner();
        while let Ok(Some(_)) = inbound.message().await {}
    });
    tx
}

fn hook(addr: SocketAddr, dir: &Path, secret: &Path, client_cert: bool) -> WebhookConfig {
    WebhookConfig {
        url: format!("https://{addr}/hook").parse().expect("url"),
        secret_file: secret.to_path_buf(),
        ca: Some(dir.join("ca.crt")),
        cert: client_cert.then(|| dir.join("collector-client.crt")),
        key: client_cert.then(|| dir.join("collector-client.key")),
    }
}

fn secret(dir: &Path) -> PathBuf {
    let p = dir.join("secret");
    std::fs::write(&p, "s3cret-for-tests\n").expect("write");
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_webhook_with_a_test_ca_and_a_client_certificate_gets_the_signed_notification() {
    vigie_proto::tls::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    certs(dir.path(), &["collector-client"]);
    let (addr, got) = https_receiver(dir.path(), true, "{}").await;
    let (grpc, stop) = collector(vec![hook(addr, dir.path(), &secret(dir.path()), true)]).await;
    let _agent = haproxy_down(grpc).await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let delivery = loop {
        let found = got
            .lock()
            .expect("lock")
            .iter()
            .find(|g| g.body.contains("HAPROXY_DOWN"))
            .cloned();
        if let Some(g) = found {
            break g;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no HAPROXY_DOWN notification over https"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(delivery.path, "/hook");
    let header = |name: &str| {
        delivery
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {name}"))
    };
    let timestamp = header("x-vigie-timestamp");
    assert_eq!(
        header("x-vigie-signature"),
        vigie_collector::notify::webhook::signature(
            b"s3cret-for-tests",
            &timestamp,
            delivery.body.as_bytes()
        )
    );
    let _ = stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_receiver_signed_by_another_ca_gets_nothing() {
    vigie_proto::tls::install_crypto_provider();
    let ours = tempfile::tempdir().expect("tempdir");
    let theirs = tempfile::tempdir().expect("tempdir");
    certs(ours.path(), &[]);
    certs(theirs.path(), &[]);
    // The receiver's certificate is from `theirs`; the collector trusts only `ours`.
    let (addr, got) = https_receiver(theirs.path(), false, "{}").await;
    let (grpc, stop) = collector(vec![hook(addr, ours.path(), &secret(ours.path()), false)]).await;
    let _agent = haproxy_down(grpc).await;
    // Control: the same finding reaches a receiver with the right CA within this time.
    let (good, good_got) = https_receiver(ours.path(), false, "{}").await;
    let (grpc2, stop2) =
        collector(vec![hook(good, ours.path(), &secret(ours.path()), false)]).await;
    let _agent2 = haproxy_down(grpc2).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while good_got.lock().expect("lock").is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "control receiver got nothing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        got.lock().expect("lock").is_empty(),
        "a receiver with an untrusted certificate got a notification"
    );
    let _ = stop.send(());
    let _ = stop2.send(());
}

#[test]
fn a_webhook_certificate_without_its_key_is_a_config_error_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    certs(dir.path(), &["c"]);
    let toml = format!(
        "grpc_listen = \"127.0.0.1:9701\"\nhttp_listen = \"127.0.0.1:9700\"\nplaintext = true\n\
         [api]\nauth = \"none\"\n[[webhooks]]\nurl = \"https://127.0.0.1:1/h\"\nsecret_file = \"{}\"\ncert = \"{}\"\n",
        secret(dir.path()).display(),
        dir.path().join("c.crt").display()
    );
    let path = dir.path().join("collector.toml");
    std::fs::write(&path, toml).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vigie-collector"))
        .arg("--config")
        .arg(&path)
        .arg("--check-config")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("webhooks[0].key"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vigie_reads_an_https_collector_api_with_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    certs(dir.path(), &[]);
    vigie_proto::tls::install_crypto_provider();
    let doc = r#"{"cluster":"demo","verdict":"healthy","leader":"node1","findings":[],"blind_spots":[],"nodes":[]}"#;
    let (addr, _got) = https_receiver(dir.path(), false, doc).await;
    let run = |ca: Option<PathBuf>| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_vigie"));
        cmd.args(["check", "demo", "--collector", &format!("https://{addr}")]);
        if let Some(ca) = ca {
            cmd.env("VIGIE_CA", ca);
        }
        cmd.output()
    };
    let with_ca = run(Some(dir.path().join("ca.crt")))
        .await
        .expect("run vigie");
    let stdout = String::from_utf8_lossy(&with_ca.stdout);
    assert!(
        stdout.contains("healthy") || stdout.contains("OK"),
        "{stdout}{}",
        String::from_utf8_lossy(&with_ca.stderr)
    );
    assert_eq!(with_ca.status.code(), Some(0), "{stdout}");
    // Without the CA the system roots do not know the test CA: a clear TLS error, exit 3.
    let without = run(None).await.expect("run vigie");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&without.stdout),
        String::from_utf8_lossy(&without.stderr)
    );
    assert_eq!(without.status.code(), Some(3), "{text}");
    assert!(text.to_lowercase().contains("certificate"), "{text}");
}

#[test]
fn check_config_catches_what_start_up_would_refuse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    certs(d, &["node1"]);
    let run = |tls: &str, events: &str| {
        let path = d.join("c.toml");
        std::fs::write(
            &path,
            format!(
                "grpc_listen = \"127.0.0.1:9701\"\nhttp_listen = \"127.0.0.1:9700\"\n\
                 [tls]\n{tls}\n[events]\npath = \"{events}\"\n"
            ),
        )
        .expect("write");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vigie-collector"))
            .arg("--config")
            .arg(&path)
            .arg("--check-config")
            .output()
            .expect("run");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let f = |name: &str| d.join(name).display().to_string();
    let events = f("events.db");
    let good = format!(
        "cert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"",
        f("collector.crt"),
        f("collector.key"),
        f("ca.crt")
    );
    let (code, err) = run(&good, &events);
    assert_eq!(code, Some(0), "{err}");
    for (tls, field) in [
        // Another certificate's key.
        (
            format!(
                "cert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"",
                f("collector.crt"),
                f("node1.key"),
                f("ca.crt")
            ),
            "tls.key",
        ),
        // A key where the client CA goes.
        (
            format!(
                "cert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"",
                f("collector.crt"),
                f("collector.key"),
                f("ca.key")
            ),
            "tls.client_ca",
        ),
        // Not PEM at all.
        (
            format!(
                "cert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"",
                f("c.toml"),
                f("collector.key"),
                f("ca.crt")
            ),
            "tls.cert",
        ),
    ] {
        let (code, err) = run(&tls, &events);
        assert_eq!(code, Some(64), "{field}: {err}");
        assert!(
            err.contains(&format!("invalid configuration: {field}: ")),
            "{field} not named: {err}"
        );
    }
    // An event log below a regular file cannot be created.
    let (code, err) = run(&good, &format!("{}/events.db", f("ca.crt")));
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains("invalid configuration: events.path: "),
        "{err}"
    );
}
