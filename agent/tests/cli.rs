//! The `vigie-agent` command line: `--check-config`, exit 64 on invalid configuration naming the
//! field, `--once` output and Nagios exit codes, and bad input from targets turned into probe
//! results (a server answering nonsense, a refused port) — never a panic.

use std::process::Command;

use serde_json::Value;

const AGENT: &str = env!("CARGO_BIN_EXE_vigie-agent");

fn write_config(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, text).expect("write");
    (dir, path)
}

#[test]
fn check_config_accepts_a_shipped_example() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/examples/agent-haproxy.toml"
    );
    // The certificate files it names exist on a real host only: point them at stand-ins.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(AGENT);
    for key in ["CA", "CERT", "KEY"] {
        let p = dir.path().join(key);
        std::fs::write(&p, "stand-in").expect("write");
        cmd.env(format!("VIGIE_AGENT__COLLECTOR__{key}"), p);
    }
    let out = cmd
        .args(["--config", example, "--check-config"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("configuration OK: node lb-prod-1"),
        "{stdout}"
    );
}

const HAPROXY_BAD_RW: &str = "node = \"h\"\ncluster = \"c\"\n[haproxy]\nstats_socket = \"/x\"\n\
    [[haproxy.applications]]\nname = \"a\"\nrw = \"nowhere\"\n";

const HAPROXY_UNKNOWN_KEY: &str = "node = \"h\"\ncluster = \"c\"\n[haproxy]\nstats_socket = \"/x\"\n\
    [[haproxy.applications]]\nname = \"a\"\nrw = \"127.0.0.1:5000\"\n\
    [[haproxy.applications]]\nname = \"b\"\nrw = \"127.0.0.1:5001\"\nrww = \"x\"\n";

#[test]
fn invalid_config_exits_64_naming_the_field() {
    let cases = [
        (
            "node = \"n\"\ncluster = \"c\"\ninterval = \"often\"\n[patroni]\n",
            "interval",
        ),
        (
            "node = \"n\"\ncluster = \"c\"\n[patroni]\nurll = \"x\"\n",
            "patroni.urll",
        ),
        ("cluster = \"c\"\n[patroni]\n", "node"),
        (
            "node = \"n\"\ncluster = \"c\"\n[postgres]\nuser = \"v\"\n",
            "postgres",
        ),
        (
            "node = \"n\"\ncluster = \"c\"\n[patroni]\n[postgres]\nuser = \"v\"\nlag_warning = \"late\"\n",
            "postgres.lag_warning",
        ),
        (
            "node = \"n\"\ncluster = \"c\"\n[patroni]\n[postgres]\nuser = \"v\"\nport = \"high\"\n",
            "postgres.port",
        ),
        (HAPROXY_BAD_RW, "haproxy.applications[0].rw"),
        (HAPROXY_UNKNOWN_KEY, "haproxy.applications[1].rww"),
        ("this is not toml", "(file)"),
    ];
    for (text, field) in cases {
        let (_dir, path) = write_config(text);
        let out = Command::new(AGENT)
            .arg("--config")
            .arg(&path)
            .arg("--once")
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(64), "{text}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("invalid configuration: {field}: ")),
            "{field} not named in: {stderr}"
        );
    }
    let out = Command::new(AGENT)
        .args(["--config", "/nonexistent/agent.toml", "--check-config"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
}

/// A local server that answers every connection with `answer`, then closes.
fn nonsense_server(answer: &'static [u8]) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(answer);
        }
    });
    addr
}

fn closed_port() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

fn run_once_json(config: &str) -> (Option<i32>, Value) {
    let (_dir, path) = write_config(config);
    let out = Command::new(AGENT)
        .arg("--config")
        .arg(&path)
        .args(["--once", "--format", "json"])
        .output()
        .expect("run");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), doc)
}

fn result<'a>(doc: &'a Value, id: &str) -> &'a Value {
    doc["results"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["id"] == id))
        .unwrap_or_else(|| panic!("no {id} in {doc}"))
}

#[test]
fn garbage_from_patroni_and_a_refused_etcd_are_probe_results() {
    let not_json = nonsense_server(
        b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n<html>surprise</html>",
    );
    let not_http = nonsense_server(b"\x00\x01\x02 SSH-2.0-OpenSSH\r\n");
    let refused = closed_port();
    let config = format!(
        "node = \"n1\"\ncluster = \"c\"\n[patroni]\nurl = \"http://{not_json}\"\n\
         [etcd]\nclient_url = \"http://{refused}\"\npeer_address = \"{refused}\"\n\
         [system]\nenabled = false\n"
    );
    let (code, doc) = run_once_json(&config);
    assert_eq!(code, Some(2), "{doc}");
    assert_eq!(doc["status"], "critical");
    let node = result(&doc, "patroni.node");
    assert_eq!(node["status"], "critical");
    assert!(
        node["message"]
            .as_str()
            .is_some_and(|m| m.contains("not JSON")),
        "{node}"
    );
    let cluster = result(&doc, "patroni.cluster");
    assert!(
        cluster["message"]
            .as_str()
            .is_some_and(|m| m.contains("surprise")),
        "{cluster}"
    );
    let etcd = result(&doc, "etcd.health");
    assert!(
        etcd["message"]
            .as_str()
            .is_some_and(|m| m.contains("cannot connect")),
        "{etcd}"
    );
    let port = result(&doc, "etcd.client_port");
    assert!(
        port["message"]
            .as_str()
            .is_some_and(|m| m.contains("refused")),
        "{port}"
    );

    let config = format!(
        "node = \"n1\"\ncluster = \"c\"\n[patroni]\nurl = \"http://{not_http}\"\n[system]\nenabled = false\n"
    );
    let (code, doc) = run_once_json(&config);
    assert_eq!(code, Some(2), "{doc}");
    let health = result(&doc, "patroni.health");
    assert_eq!(health["status"], "critical", "{health}");
}

#[test]
fn garbage_haproxy_stats_are_a_probe_result() {
    let stats = nonsense_server(b"HTTP/1.0 200 OK\r\n\r\nthis is not a CSV");
    let config = format!(
        "node = \"lb\"\ncluster = \"c\"\n[haproxy]\nstats_url = \"http://{stats}/;csv\"\n\
         port_check = \"connect\"\n[[haproxy.applications]]\nname = \"demo\"\nrw = \"{}\"\n\
         [system]\nenabled = false\n",
        closed_port()
    );
    let (code, doc) = run_once_json(&config);
    assert_eq!(code, Some(2));
    let backends = result(&doc, "haproxy.backends");
    assert!(
        backends["message"]
            .as_str()
            .is_some_and(|m| m.contains("unreadable")),
        "{backends}"
    );
    let rw = result(&doc, "haproxy.rw_port");
    assert_eq!(rw["status"], "critical");
}

#[test]
fn a_black_holed_target_times_out_on_time() {
    // Accepts connections (the kernel does) but never answers: a hung Patroni.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let hung = listener.local_addr().expect("addr");
    let config = format!(
        "node = \"n1\"\ncluster = \"c\"\ninterval = \"2s\"\ntimeout = \"500ms\"\n\
         [patroni]\nurl = \"http://{hung}\"\n[system]\nenabled = false\n"
    );
    let started = std::time::Instant::now();
    let (code, doc) = run_once_json(&config);
    assert_eq!(code, Some(2));
    let node = result(&doc, "patroni.node");
    assert!(
        node["message"]
            .as_str()
            .is_some_and(|m| m.contains("timed out")),
        "{node}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    drop(listener);
}

#[test]
fn tls_config_errors_exit_64_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not PEM\n").expect("write");
    let g = garbage.display();
    let pg = "[patroni]\n[postgres]\nuser = \"v\"\n";
    let cases = [
        (
            "[patroni]\nurl = \"https://127.0.0.11:8008\"\ncert = \"/x.crt\"\n".to_string(),
            "patroni.key",
        ),
        (
            "[etcd]\nclient_url = \"https://127.0.0.11:2379\"\nkey = \"/x.key\"\n".to_string(),
            "etcd.cert",
        ),
        (
            format!("[patroni]\nurl = \"https://127.0.0.11:8008\"\nca = \"{g}\"\n"),
            "patroni.ca",
        ),
        (
            "[patroni]\nca = \"/nonexistent/ca.crt\"\n".to_string(),
            "patroni.ca",
        ),
        (format!("{pg}sslcert = \"/x.crt\"\n"), "postgres.sslkey"),
        (
            format!("{pg}sslmode = \"verify-maybe\"\n"),
            "postgres.sslmode",
        ),
        (
            format!("{pg}sslmode = \"verify-full\"\nsslrootcert = \"/nonexistent/root.crt\"\n"),
            "postgres.sslrootcert",
        ),
    ];
    for (section, field) in cases {
        let text = format!("node = \"n\"\ncluster = \"c\"\n{section}");
        let (_dir, path) = write_config(&text);
        let out = Command::new(AGENT)
            .arg("--config")
            .arg(&path)
            .arg("--check-config")
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{text}: {stderr}");
        assert!(
            stderr.contains(&format!("invalid configuration: {field}:")),
            "{field} not named in: {stderr}"
        );
    }
}
