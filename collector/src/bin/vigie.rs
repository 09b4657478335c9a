//! `vigie`: the operator's CLI, a client of the collector's HTTP API.
//!
//!   vigie status [SCOPE] [--collector URL] [--format table|json]
//!   vigie check SCOPE [--collector URL]     (Nagios / Centreon / Icinga check mode)

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::Value;
use vigie_collector::model::ProbeId;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
}

/// vigie command-line client.
#[derive(Debug, Parser)]
#[command(name = "vigie", version = vigie_collector::VERSION)]
struct Cli {
    /// The collector's HTTP API.
    #[arg(
        long,
        global = true,
        env = "VIGIE_COLLECTOR",
        default_value = "http://127.0.0.1:9700"
    )]
    collector: String,
    #[arg(long, global = true, value_enum, default_value = "table")]
    format: Format,
    /// A file holding the API bearer token (when the collector requires tokens).
    #[arg(long, global = true, env = "VIGIE_TOKEN_FILE")]
    token_file: Option<std::path::PathBuf>,
    /// CA certificate (PEM) of an https:// collector (default: the system's trusted roots).
    #[arg(long, global = true, env = "VIGIE_CA")]
    ca: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One cluster's verdict, members and findings (every cluster without SCOPE).
    Status { scope: Option<String> },
    /// Nagios/Centreon/Icinga check: one line with the verdict, the findings and perfdata;
    /// exit 0 healthy, 1 degraded, 2 critical, 3 unknown.
    Check { scope: String },
    /// Recent events (verdict changes, findings opened/resolved, node events), oldest first.
    Events {
        scope: Option<String>,
        /// Only events after this id.
        #[arg(long, default_value_t = 0)]
        since: i64,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // A monitoring system reads exit 2 as CRITICAL: a usage error in check mode is UNKNOWN.
        Err(e) if e.use_stderr() && std::env::args_os().skip(1).any(|a| a == "check") => {
            let first = e.to_string();
            let why = first.lines().next().unwrap_or("usage error");
            return unknown("vigie check", why.trim_start_matches("error: "));
        }
        Err(e) => e.exit(),
    };
    vigie_proto::tls::install_crypto_provider();
    // An error before any request: in check mode still the plugin's one UNKNOWN line.
    let failed = |why: String| match &cli.command {
        Command::Check { scope } => unknown(scope, &why),
        _ => {
            eprintln!("vigie: {why}");
            ExitCode::from(3)
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return failed(e.to_string()),
    };
    runtime.block_on(async {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(path) = &cli.token_file {
            let token = match std::fs::read_to_string(path) {
                Ok(t) => t.lines().next().unwrap_or("").trim().to_string(),
                Err(e) => return failed(format!("--token-file {}: {e}", path.display())),
            };
            match reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")) {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    headers.insert(reqwest::header::AUTHORIZATION, v);
                }
                Err(_) => {
                    return failed(format!(
                        "the token in {} is not a valid header value",
                        path.display()
                    ));
                }
            }
        }
        let files = vigie_proto::tls::TlsFiles {
            ca: cli.ca.clone(),
            ..Default::default()
        };
        let tls = match vigie_proto::tls::client_config(&files, vigie_proto::tls::Verify::Full) {
            Ok(t) => t,
            Err(e) => return failed(format!("--ca: {}", e.message)),
        };
        let client = match reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .default_headers(headers)
            .tls_backend_preconfigured(tls)
            .build()
        {
            Ok(c) => c,
            Err(e) => return failed(format!("HTTP client: {e}")),
        };
        match &cli.command {
            Command::Status { scope } => status(&client, &cli, scope.as_deref()).await,
            Command::Check { scope } => check(&client, &cli, scope).await,
            Command::Events {
                scope,
                since,
                limit,
            } => events(&client, &cli, scope.as_deref(), *since, *limit).await,
        }
    })
}

/// The innermost cause of an error (e.g. `invalid peer certificate: UnknownIssuer`), which
/// reqwest's own message ("error sending request") hides.
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

async fn get(client: &reqwest::Client, url: &str) -> Result<Value, String> {
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("{url}: {}", innermost(&e)))?;
    let code = resp.status();
    let body: Value = resp.json().await.map_err(|e| format!("{url}: {e}"))?;
    if !code.is_success() {
        return Err(body["error"]
            .as_str()
            .map_or_else(|| format!("{url}: HTTP {code}"), str::to_string));
    }
    Ok(body)
}

async fn status(client: &reqwest::Client, cli: &Cli, scope: Option<&str>) -> ExitCode {
    let base = cli.collector.trim_end_matches('/');
    let scopes: Vec<String> = match scope {
        Some(s) => vec![s.to_string()],
        None => match get(client, &format!("{base}/api/v1/clusters")).await {
            Ok(v) => v["clusters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["cluster"].as_str().map(str::to_string))
                .collect(),
            Err(e) => {
                eprintln!("vigie: {e}");
                return ExitCode::from(3);
            }
        },
    };
    let mut docs = Vec::new();
    for s in &scopes {
        match get(client, &cluster_url(base, s)).await {
            Ok(d) => docs.push(d),
            Err(e) => {
                eprintln!("vigie: {e}");
                return ExitCode::from(3);
            }
        }
    }
    match cli.format {
        Format::Json => {
            let out = if scope.is_some() {
                docs.first().cloned().unwrap_or(Value::Null)
            } else {
                Value::Array(docs.clone())
            };
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        }
        Format::Table => {
            if docs.is_empty() {
                println!("no cluster has reported yet");
            }
            for d in &docs {
                print!("{}", render(d));
            }
        }
    }
    // Like a Nagios check: 0 healthy, 1 degraded, 2 critical, 3 unknown (worst cluster).
    let code = docs
        .iter()
        .map(|d| match d["verdict"].as_str() {
            Some("healthy") => 0,
            Some("degraded") => 1,
            Some("critical") => 2,
            _ => 3,
        })
        .max_by_key(|c| match c {
            2 => 3,
            1 => 1,
            3 => 2,
            _ => 0,
        })
        .unwrap_or(3);
    ExitCode::from(code)
}

async fn check(client: &reqwest::Client, cli: &Cli, scope: &str) -> ExitCode {
    let base = cli.collector.trim_end_matches('/');
    match get(client, &cluster_url(base, scope)).await {
        Ok(d) => {
            let (line, code) = vigie_collector::cli::check::check_line(&d);
            println!("{line}");
            ExitCode::from(code)
        }
        Err(e) => unknown(scope, &e),
    }
}

/// `vigie check`'s answer to any error of its own: one UNKNOWN line, exit 3.
fn unknown(scope: &str, why: &str) -> ExitCode {
    use vigie_collector::cli::plain;
    println!("VIGIE UNKNOWN - {}: {}", plain(scope, 200), plain(why, 400));
    ExitCode::from(3)
}

/// `/api/v1/clusters/{scope}` with the scope percent-encoded as one path segment.
fn cluster_url(base: &str, scope: &str) -> String {
    let encoded: String = scope
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect();
    format!("{base}/api/v1/clusters/{encoded}")
}

async fn events(
    client: &reqwest::Client,
    cli: &Cli,
    scope: Option<&str>,
    since: i64,
    limit: usize,
) -> ExitCode {
    let base = cli.collector.trim_end_matches('/');
    let mut url = format!("{base}/api/v1/events?since={since}&limit={limit}");
    if let Some(s) = scope {
        url.push_str(&format!(
            "&cluster={}",
            cluster_url("", s).trim_start_matches("/api/v1/clusters/")
        ));
    }
    let doc = match get(client, &url).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("vigie: {e}");
            return ExitCode::from(3);
        }
    };
    let events = doc["events"].as_array().cloned().unwrap_or_default();
    match cli.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&events).unwrap_or_default()
        ),
        Format::Table => {
            for e in &events {
                println!("{}", event_line(e));
            }
            if events.is_empty() {
                println!("no events");
            }
        }
    }
    ExitCode::SUCCESS
}

/// One event for people: `#id time cluster what`.
fn event_line(e: &Value) -> String {
    let at = e["recorded_ms"].as_i64().unwrap_or(0);
    let secs = at / 1000;
    let time = format!(
        "{:02}:{:02}:{:02}",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60
    );
    let s = |v: &Value| match v {
        Value::Null => "none".to_string(),
        Value::String(x) => x.clone(),
        other => other.to_string(),
    };
    let what = match e["kind"].as_str().unwrap_or("") {
        "verdict" => format!("verdict {} -> {}", s(&e["from"]), s(&e["to"])),
        "finding_opened" => format!(
            "opened   {} {} {}",
            s(&e["finding"]["severity"]).to_uppercase(),
            s(&e["finding"]["code"]),
            s(&e["finding"]["message"])
        ),
        "finding_resolved" => format!("resolved {} {}", s(&e["code"]), e["nodes"]),
        "leader_changed" => format!("leader {} -> {}", s(&e["from"]), s(&e["to"])),
        "probe_transition" => format!(
            "{} {} {} -> {} (journaled: {})",
            s(&e["node"]),
            s(&e["probe"]),
            s(&e["from"]),
            s(&e["to"]),
            s(&e["message"])
        ),
        _ => s(&e["message"]),
    };
    vigie_collector::cli::plain(
        &format!("#{:<6} {time}Z {:<10} {what}", e["id"], s(&e["cluster"])),
        2000,
    )
}

/// A `patronictl list`-like table with the verdict and findings.
fn render(d: &Value) -> String {
    // Every text from the collector on one line of its own: agents and Patroni supply most.
    let line = |s: &str| vigie_collector::cli::plain(s, 2000);
    let mut out = String::new();
    let verdict = d["verdict"].as_str().unwrap_or("?").to_uppercase();
    out.push_str(&format!(
        "Cluster {}: {}   leader: {}\n\n",
        line(d["cluster"].as_str().unwrap_or("?")),
        line(&verdict),
        line(d["leader"].as_str().unwrap_or("none"))
    ));
    let mut rows = vec![
        ["NODE", "ROLE", "STATE", "TL", "LAG", "AGENT", "PROBES"]
            .map(String::from)
            .to_vec(),
    ];
    for n in d["nodes"].as_array().into_iter().flatten() {
        let patroni = vigie_collector::cli::facts(n, ProbeId::PatroniNode);
        let patroni = patroni.as_ref().and_then(|f| f.patroni_node());
        let role = patroni.map(|p| p.role.clone()).unwrap_or_else(|| {
            if n["components"]
                .as_array()
                .is_some_and(|c| c.iter().any(|x| x == "haproxy"))
            {
                "haproxy".into()
            } else {
                "-".into()
            }
        });
        let state = patroni.map_or("-".to_string(), |p| p.state.clone());
        let tl = patroni
            .and_then(|p| p.timeline)
            .map_or("-".to_string(), |t| t.to_string());
        let lag = d["replication"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["node"] == n["name"])
            .and_then(|l| l["lag_bytes"].as_u64())
            .map_or("-".to_string(), |b| format!("{b} B"));
        let age = n["age_s"].as_f64().unwrap_or(f64::NAN);
        let agent = if n["connected"] == true {
            format!("{age:.1}s ago")
        } else {
            format!("SILENT {age:.0}s")
        };
        let (mut ok, mut bad) = (0, 0);
        for (_, o) in n["results"].as_object().into_iter().flatten() {
            if o["status"] == "ok" {
                ok += 1
            } else {
                bad += 1
            }
        }
        let probes = if bad == 0 {
            format!("{ok} ok")
        } else {
            format!("{ok} ok, {bad} not ok")
        };
        rows.push(
            [
                n["name"].as_str().unwrap_or("?").to_string(),
                role,
                state,
                tl,
                lag,
                agent,
                probes,
            ]
            .iter()
            .map(|c| vigie_collector::cli::plain(c, 64))
            .collect(),
        );
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        out.push_str(&format!("  {}\n", line.join("  ").trim_end()));
    }
    let findings = d["findings"].as_array().cloned().unwrap_or_default();
    out.push('\n');
    if findings.is_empty() {
        out.push_str("No findings.\n");
    } else {
        out.push_str("Findings:\n");
        for f in findings {
            let pending = if f["pending"] == true {
                " (pending)"
            } else {
                ""
            };
            let nodes: Vec<&str> = f["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str())
                .collect();
            let text = format!(
                "  {:<8} {:<22} {:<14} {}{}",
                f["severity"].as_str().unwrap_or("?").to_uppercase(),
                f["code"].as_str().unwrap_or("?"),
                nodes.join(","),
                f["message"].as_str().unwrap_or(""),
                pending
            );
            out.push_str(&line(&text));
            out.push('\n');
        }
    }
    for b in d["blind_spots"].as_array().into_iter().flatten() {
        out.push_str(&format!("  BLIND    {}\n", line(b.as_str().unwrap_or(""))));
    }
    out.push('\n');
    out
}
