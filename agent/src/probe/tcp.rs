//! TCP port probes (`etcd.client_port`, `etcd.peer_port`, `patroni.api_port`): the procedure's
//! `check_tcp`. The caller's timeout turns a black-holed port into `critical`.

use tokio::net::TcpStream;

use super::ProbeId;
use crate::result::ProbeResult;

/// Opens (and at once closes) a TCP connection to `address` (`host:port`).
pub async fn probe(id: ProbeId, address: &str) -> ProbeResult {
    match TcpStream::connect(address).await {
        Ok(_) => id
            .ok(format!("{address} accepts TCP connections"))
            .fact("address", address),
        Err(e) => id
            .critical(format!("{address}: {e}"))
            .fact("address", address)
            .fact("error", e.to_string()),
    }
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
        assert_eq!(
            probe(ProbeId::EtcdClientPort, &open).await.status,
            Status::Ok
        );
        drop(listener);
        let closed = probe(ProbeId::EtcdClientPort, &open).await;
        assert_eq!(closed.status, Status::Critical);
        assert!(closed.message.contains("refused"), "{}", closed.message);
    }
}
