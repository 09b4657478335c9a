//! `haproxy.backends`: HAProxy's `show stat` (stats socket, or the stats page's CSV) — per server
//! of each application's RW and RO proxies: status, check status and code. A replica DOWN with
//! `L7STS` in the RW proxy is by design (Patroni's `/primary` answers 503 there); a server whose
//! check cannot even reach Patroni (`L4CON`, `L4TOUT`, …) is not.

use std::collections::HashMap;
use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vigie_proto::Facts;
use vigie_proto::v1::{HaproxyBackendsFacts, HaproxyProxy, HaproxyServer, ProxyKind};

use super::{Outcome, ProbeId};
use crate::config::HaproxyConfig;
use crate::http;
use crate::result::{ProbeResult, Status};

/// Stats larger than this are cut (a CSV line per proxy and server: kilobytes in practice).
const MAX_STATS: u64 = 4 * 1024 * 1024;

/// One server row of `show stat`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerRow {
    pub proxy: String,
    pub server: String,
    pub status: String,
    pub check_status: String,
    pub check_code: String,
    pub address: String,
    /// Seconds since the server's last state change (`lastchg`), when HAProxy says.
    pub last_change_s: Option<u64>,
}

impl ServerRow {
    /// Whether HAProxy routes new connections to it: UP (`UP`, `UP 1/2` while going down), or
    /// `no check` — a server whose health checks are disabled gets traffic whatever it is.
    fn up(&self) -> bool {
        self.status.starts_with("UP") || self.status == "no check"
    }
}

pub async fn probe(client: &reqwest::Client, cfg: &HaproxyConfig) -> ProbeResult {
    let id = ProbeId::HaproxyBackends;
    let csv = match (&cfg.stats_socket, &cfg.stats_url) {
        (Some(socket), _) => read_socket(socket).await,
        (None, Some(url)) => match http::get(client, url.as_str()).await {
            Ok(a) if a.status == 200 => Ok(a.body),
            Ok(a) => Err(format!("{url}: HTTP {}", a.status)),
            Err(e) => Err(e),
        },
        (None, None) => Err("no stats source configured".to_string()),
    };
    let csv = match csv {
        Ok(c) => c,
        Err(e) => return id.critical(format!("cannot read HAProxy stats: {e}")),
    };
    let rows = match parse_stat_csv(&csv) {
        Ok(r) => r,
        Err(e) => return id.critical(format!("HAProxy stats unreadable: {e}")),
    };
    let apps: Vec<(String, String, Option<String>)> = cfg
        .applications
        .iter()
        .map(|a| (a.name.clone(), a.rw_backend(), a.ro.map(|_| a.ro_backend())))
        .collect();
    judge(&rows, &apps)
}

/// `show stat` from HAProxy's stats socket.
pub async fn read_socket(path: &Path) -> Result<String, String> {
    let mut stream = tokio::net::UnixStream::connect(path)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    stream
        .write_all(b"show stat\n")
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // Room for the usual answer up front, so it comes in a read or two instead of doubling.
    let mut buf = Vec::with_capacity(64 * 1024);
    stream
        .take(MAX_STATS)
        .read_to_end(&mut buf)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Parses `show stat` CSV by its header (`# pxname,svname,…`), keeping server rows only. Fields
/// are read as CSV, not split on commas: HAProxy quotes those that hold one (`check_desc`,
/// `last_chk`, `agent_desc`).
pub fn parse_stat_csv(text: &str) -> Result<Vec<ServerRow>, String> {
    let body = text
        .trim_start()
        .strip_prefix("# ")
        .ok_or_else(|| format!("no `# pxname,…` header in \"{}\"", super::excerpt(text, 60)))?;
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .comment(Some(b'#'))
        .from_reader(body.as_bytes());
    let header = reader
        .headers()
        .map_err(|e| format!("stats header: {e}"))?
        .clone();
    let columns: HashMap<&str, usize> = header.iter().enumerate().map(|(i, c)| (c, i)).collect();
    let col = |name: &str| {
        columns
            .get(name)
            .copied()
            .ok_or_else(|| format!("no `{name}` column in the stats header"))
    };
    let (px, sv, st) = (col("pxname")?, col("svname")?, col("status")?);
    let (cs, cc, addr) = (col("check_status")?, col("check_code")?, col("addr").ok());
    let lastchg = col("lastchg").ok();
    let mut rows = Vec::new();
    for record in reader.records() {
        let f = record.map_err(|e| format!("stats line: {e}"))?;
        let get = |i: usize| f.get(i).unwrap_or("").to_string();
        let server = get(sv);
        if server == "FRONTEND" || server == "BACKEND" || f.len() <= st {
            continue;
        }
        rows.push(ServerRow {
            proxy: get(px),
            server,
            status: get(st),
            check_status: get(cs),
            check_code: get(cc),
            address: addr.map(get).unwrap_or_default(),
            last_change_s: lastchg.and_then(|i| get(i).parse().ok()),
        });
    }
    Ok(rows)
}

/// Judges the server rows of every application: `(name, rw proxy, ro proxy)` (pure).
pub fn judge(rows: &[ServerRow], apps: &[(String, String, Option<String>)]) -> ProbeResult {
    let id = ProbeId::HaproxyBackends;
    let mut status = Status::Ok;
    let mut problems = Vec::new();
    let mut summary = Vec::new();
    let mut facts = Vec::new();
    for (app, rw, ro) in apps {
        for (proxy, is_rw) in std::iter::once((rw, true)).chain(ro.iter().map(|r| (r, false))) {
            let servers: Vec<&ServerRow> = rows.iter().filter(|r| &r.proxy == proxy).collect();
            let up: Vec<&str> = servers
                .iter()
                .filter(|s| s.up())
                .map(|s| s.server.as_str())
                .collect();
            facts.push(HaproxyProxy {
                application: app.clone(),
                proxy: proxy.clone(),
                kind: if is_rw { ProxyKind::Rw } else { ProxyKind::Ro } as i32,
                up: up.iter().map(|s| s.to_string()).collect(),
                servers: servers
                    .iter()
                    .map(|s| HaproxyServer {
                        name: s.server.clone(),
                        status: s.status.clone(),
                        check_status: s.check_status.clone(),
                        check_code: s.check_code.clone(),
                        address: s.address.clone(),
                        lastchg_s: s.last_change_s,
                    })
                    .collect(),
            });
            if servers.is_empty() {
                status = Status::Critical;
                problems.push(format!("{proxy}: not in HAProxy's stats"));
                continue;
            }
            match (is_rw, up.len()) {
                (true, 1) => summary.push(format!("{proxy} → {}", up[0])),
                (true, 0) => {
                    status = Status::Critical;
                    problems.push(format!("{proxy}: no server UP, writes fail"));
                }
                (true, n) => {
                    status = Status::Critical;
                    problems.push(format!(
                        "{proxy}: {n} servers UP ({}), writes may reach more than one node",
                        up.join(", ")
                    ));
                }
                (false, 0) => {
                    status = Status::Critical;
                    problems.push(format!("{proxy}: no server UP, reads fail"));
                }
                (false, _) => summary.push(format!("{proxy} → {}", up.join(", "))),
            }
            for s in servers.iter().filter(|s| !s.up()) {
                if unreachable_check(&s.check_status) {
                    status = status.worst(Status::Warning);
                    problems.push(format!(
                        "{proxy}/{}: {} ({}): HAProxy cannot reach its health check",
                        s.server, s.status, s.check_status
                    ));
                }
            }
        }
    }
    let message = if problems.is_empty() {
        summary.join("; ")
    } else {
        problems.join("; ")
    };
    ProbeResult::new(id, status, message).with(Facts::HaproxyBackends(HaproxyBackendsFacts {
        proxies: facts,
    }))
}

/// Check results meaning the health endpoint itself is unreachable or broken (not a 503).
fn unreachable_check(check_status: &str) -> bool {
    let s = check_status.trim_start_matches('*');
    s.starts_with("L4")
        || s.starts_with("SOCKERR")
        || s == "L7TOUT"
        || s == "L7RSP"
        || s.starts_with("L6")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,addr,\n";

    fn row(px: &str, sv: &str, status: &str, check: &str, code: &str) -> String {
        let mut f = vec![""; 41];
        f[0] = px;
        f[1] = sv;
        f[17] = status;
        f[36] = check;
        f[37] = code;
        f.join(",") + "\n"
    }

    fn apps() -> Vec<(String, String, Option<String>)> {
        vec![("demo".into(), "demo_rw".into(), Some("demo_ro".into()))]
    }

    fn stats(rows: &[String]) -> Vec<ServerRow> {
        let mut text = HEADER.to_string();
        text.push_str(&row("demo_rw", "FRONTEND", "OPEN", "", ""));
        for r in rows {
            text.push_str(r);
        }
        text.push_str(&row("demo_rw", "BACKEND", "UP", "", ""));
        parse_stat_csv(&text).expect("parses")
    }

    #[test]
    fn healthy_rw_has_one_up_and_replicas_down_with_503() {
        let rows = stats(&[
            row("demo_rw", "node1", "UP", "L7OK", "200"),
            row("demo_rw", "node2", "DOWN", "L7STS", "503"),
            row("demo_ro", "node1", "DOWN", "L7STS", "503"),
            row("demo_ro", "node2", "UP", "L7OK", "200"),
        ]);
        assert_eq!(rows.len(), 4, "FRONTEND and BACKEND rows are skipped");
        let r = judge(&rows, &apps());
        assert_eq!(r.status, Status::Ok, "{}", r.message);
        assert_eq!(r.message, "demo_rw → node1; demo_ro → node2");
    }

    #[test]
    fn judge_table() {
        let table = [
            (
                vec![
                    row("demo_rw", "node1", "DOWN", "L7STS", "503"),
                    row("demo_ro", "node2", "UP", "L7OK", "200"),
                ],
                Status::Critical,
                "no server UP, writes fail",
            ),
            (
                vec![
                    row("demo_rw", "node1", "UP", "L7OK", "200"),
                    row("demo_rw", "node2", "UP", "L7OK", "200"),
                    row("demo_ro", "node2", "UP", "L7OK", "200"),
                ],
                Status::Critical,
                "2 servers UP",
            ),
            (
                vec![
                    row("demo_rw", "node1", "UP", "L7OK", "200"),
                    row("demo_rw", "node2", "DOWN", "L4CON", ""),
                    row("demo_ro", "node3", "UP", "L7OK", "200"),
                ],
                Status::Warning,
                "cannot reach its health check",
            ),
            (
                vec![
                    row("demo_rw", "node1", "UP", "L7OK", "200"),
                    row("demo_ro", "node2", "DOWN", "L7STS", "503"),
                ],
                Status::Critical,
                "reads fail",
            ),
            (
                vec![row("other_rw", "node1", "UP", "L7OK", "200")],
                Status::Critical,
                "not in HAProxy's stats",
            ),
            (
                // Health checks disabled on a replica: HAProxy routes to it.
                vec![
                    row("demo_rw", "node1", "UP", "L7OK", "200"),
                    row("demo_rw", "node2", "no check", "", ""),
                    row("demo_ro", "node2", "UP", "L7OK", "200"),
                ],
                Status::Critical,
                "2 servers UP (node1, node2)",
            ),
        ];
        for (rows, status, text) in table {
            let r = judge(&stats(&rows), &apps());
            assert_eq!(r.status, status, "{}", r.message);
            assert!(r.message.contains(text), "{}", r.message);
        }
    }

    #[test]
    fn the_last_state_change_is_read() {
        let mut text = HEADER.to_string();
        let mut f = vec![""; 41];
        f[0] = "demo_rw";
        f[1] = "node1";
        f[17] = "UP";
        f[23] = "42";
        text.push_str(&(f.join(",") + "\n"));
        let rows = parse_stat_csv(&text).expect("parses");
        assert_eq!(rows[0].last_change_s, Some(42));
    }

    #[test]
    fn a_quoted_field_with_a_comma_keeps_the_columns_aligned() {
        // HAProxy's order: the descriptions come before `addr`, so a comma split there would
        // shift the address (and every later column) by one.
        let text = "# pxname,svname,status,lastchg,check_status,check_code,last_chk,check_desc,agent_desc,addr,\n\
                    demo_rw,node2,DOWN,7,L7STS,503,\"HTTP status check returned code <3C>503<3E>\",\"Layer7 wrong status, code: 503\",\"agent says \"\"no, drain\"\"\",127.0.0.2:8008,\n\
                    demo_rw,node1,UP,9,L7OK,200,,\"Layer7 check passed\",,127.0.0.1:8008,\n";
        let rows = parse_stat_csv(text).expect("parses");
        assert_eq!(
            rows,
            vec![
                ServerRow {
                    proxy: "demo_rw".into(),
                    server: "node2".into(),
                    status: "DOWN".into(),
                    check_status: "L7STS".into(),
                    check_code: "503".into(),
                    address: "127.0.0.2:8008".into(),
                    last_change_s: Some(7),
                },
                ServerRow {
                    proxy: "demo_rw".into(),
                    server: "node1".into(),
                    status: "UP".into(),
                    check_status: "L7OK".into(),
                    check_code: "200".into(),
                    address: "127.0.0.1:8008".into(),
                    last_change_s: Some(9),
                },
            ]
        );
    }

    #[test]
    fn blank_lines_crlf_and_repeated_headers_are_skipped() {
        let mut text = format!("\r\n{}", HEADER.replace('\n', "\r\n"));
        text.push_str(&row("demo_rw", "node1", "UP", "L7OK", "200").replace('\n', "\r\n"));
        text.push_str("\r\n");
        text.push_str(HEADER);
        text.push_str(&row("demo_ro", "node2", "UP", "L7OK", "200"));
        let rows = parse_stat_csv(&text).expect("parses");
        let names: Vec<_> = rows
            .iter()
            .map(|r| (r.proxy.as_str(), r.server.as_str()))
            .collect();
        assert_eq!(names, [("demo_rw", "node1"), ("demo_ro", "node2")]);
        assert_eq!(rows[0].check_code, "200");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse_stat_csv("HTTP/1.0 200 OK\r\n\r\nhello").is_err());
        assert!(parse_stat_csv("").is_err());
        assert!(parse_stat_csv("# a,b\nx,y\n").is_err());
        let e = parse_stat_csv("# pxname,svname,status,check_status\n").expect_err("no code");
        assert_eq!(e, "no `check_code` column in the stats header");
        let e = parse_stat_csv("pxname,svname\n").expect_err("no header");
        assert!(e.starts_with("no `# pxname,…` header"), "{e}");
    }
}
