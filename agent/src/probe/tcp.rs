//! TCP port probes (`etcd.client_port`, `etcd.peer_port`, `patroni.api_port`): the procedure's
//! `check_tcp`. A port this host listens on is found by asking the kernel (no connection: the
//! daemon spends nothing); any other is connected to, and the caller's timeout turns a
//! black-holed port into `critical`.

use std::net::SocketAddr;

use tokio::net::TcpStream;

use vigie_proto::Facts;
use vigie_proto::v1::{PortCheck, PortFacts};

use super::{Outcome, ProbeId};
use crate::result::ProbeResult;

/// Whether this host listens on `address` (`host:port`), else opens (and at once closes) a TCP
/// connection to it.
pub async fn probe(id: ProbeId, address: &str) -> ProbeResult {
    if let Ok(addr) = address.parse::<SocketAddr>()
        && crate::sockdiag::serves(addr).unwrap_or(false)
    {
        return id.ok(format!("{address} is listening")).with(facts(
            address,
            PortCheck::Listen,
            None,
        ));
    }
    match TcpStream::connect(address).await {
        Ok(_) => id
            .ok(format!("{address} accepts TCP connections"))
            .with(facts(address, PortCheck::Connect, None)),
        Err(e) => id.critical(format!("{address}: {e}")).with(facts(
            address,
            PortCheck::Connect,
            Some(e.to_string()),
        )),
    }
}

fn facts(address: &str, check: PortCheck, error: Option<String>) -> Facts {
    Facts::Port(PortFacts {
        address: address.to_string(),
        check: check as i32,
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::Status;

    #[tokio::test]
    async fn open_port_is_ok_and_closed_port_is_critical() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let open = listener.local_addr().expect("addr").to_string();
        let listed = probe(ProbeId::EtcdClientPort, &open).await;
        assert_eq!(listed.status, Status::Ok);
        assert_eq!(listed.json()["check"], "listen");
        drop(listener);
        let closed = probe(ProbeId::EtcdClientPort, &open).await;
        assert_eq!(closed.status, Status::Critical);
        assert!(closed.message.contains("refused"), "{}", closed.message);
        assert_eq!(closed.json()["check"], "connect");
    }
}
