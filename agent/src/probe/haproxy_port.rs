//! HAProxy RW and RO ports of every configured application (`haproxy.rw_port`,
//! `haproxy.ro_port`). By default the listening socket is looked up in the kernel (sock_diag): a
//! `check_tcp` through HAProxy would make PostgreSQL fork a backend every cycle.

use std::net::SocketAddr;

use vigie_proto::Facts;
use vigie_proto::v1::{ApplicationPort, HaproxyPortsFacts, PortCheck as WireCheck};

use super::{Outcome, ProbeId};
use crate::config::{HaproxyConfig, PortCheck};
use crate::procfs;
use crate::result::{ProbeResult, Status};

/// Which of an application's ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    Rw,
    Ro,
}

/// Checks the `port` of every application that has one.
pub async fn probe(cfg: &HaproxyConfig, port: Port) -> ProbeResult {
    let id = match port {
        Port::Rw => ProbeId::HaproxyRwPort,
        Port::Ro => ProbeId::HaproxyRoPort,
    };
    let targets: Vec<(&str, SocketAddr)> = cfg
        .applications
        .iter()
        .filter_map(|a| {
            let addr = match port {
                Port::Rw => Some(a.rw),
                Port::Ro => a.ro,
            }?;
            Some((a.name.as_str(), addr))
        })
        .collect();
    if targets.is_empty() {
        return id.ok("no application has this port configured");
    }
    let mut status = Status::Ok;
    let mut problems = Vec::new();
    let mut facts = Vec::new();
    for (name, addr) in &targets {
        let outcome = match cfg.port_check {
            PortCheck::Listen => match procfs::is_listening(*addr) {
                Ok(true) => Ok(()),
                Ok(false) => Err(format!("nothing listens on {addr}")),
                Err(e) => Err(format!("cannot list listening sockets: {e}")),
            },
            PortCheck::Connect => tokio::net::TcpStream::connect(addr)
                .await
                .map(drop)
                .map_err(|e| format!("{addr}: {e}")),
        };
        let up = outcome.is_ok();
        if let Err(problem) = outcome {
            status = Status::Critical;
            problems.push(format!("{name}: {problem}"));
        }
        facts.push(ApplicationPort {
            application: name.to_string(),
            address: addr.to_string(),
            up,
        });
    }
    let message = if problems.is_empty() {
        let list: Vec<String> = targets.iter().map(|(n, a)| format!("{n} {a}")).collect();
        format!("listening: {}", list.join(", "))
    } else {
        problems.join("; ")
    };
    let check = match cfg.port_check {
        PortCheck::Listen => WireCheck::Listen,
        PortCheck::Connect => WireCheck::Connect,
    };
    ProbeResult::new(id, status, message).with(Facts::HaproxyPorts(HaproxyPortsFacts {
        check: check as i32,
        ports: facts,
    }))
}
