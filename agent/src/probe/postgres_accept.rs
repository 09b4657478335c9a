//! `postgres.accept`: does PostgreSQL accept *new* connections? The agent's reused session (like
//! Patroni's) stays blind to a postmaster that no longer accepts, so this probe looks twice:
//! every cycle, the postmaster's process state through `/proc` (free: the postmaster is the parent
//! of the agent's own backend); and every `accept_check_interval`, or at once when the session
//! fails, a real handshake (an `SSLRequest`, answered with one byte by a freshly forked child).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::postgres_session::PgSnapshot;
use super::{ProbeId, fmt_duration};
use crate::procfs;
use crate::result::ProbeResult;

/// `SSLRequest`: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xD2, 0x16, 0x2F];

/// Outcome of the last handshake.
#[derive(Debug, Clone)]
struct Handshake {
    at: Instant,
    outcome: Result<Duration, String>,
}

#[derive(Debug)]
pub struct AcceptProbe {
    address: String,
    every: Duration,
    timeout: Duration,
    last: Option<Handshake>,
    /// Whether the last call to `handshake_if_due` ran one.
    fresh: bool,
}

impl AcceptProbe {
    pub fn new(address: String, every: Duration, timeout: Duration) -> Self {
        AcceptProbe {
            address,
            every,
            timeout,
            last: None,
            fresh: false,
        }
    }

    /// Runs a handshake when one is due: every `accept_check_interval`, and every cycle while
    /// the last one failed or the agent's own session is failing.
    pub async fn handshake_if_due(&mut self, session_failing: bool) {
        let due = session_failing
            || self
                .last
                .as_ref()
                .is_none_or(|h| h.at.elapsed() >= self.every || h.outcome.is_err());
        self.fresh = due;
        if !due {
            return;
        }
        let at = Instant::now();
        let outcome = match tokio::time::timeout(self.timeout, handshake(&self.address)).await {
            Ok(r) => r.map(|()| at.elapsed()),
            Err(_) => Err(format!(
                "{}: new connection not answered within {} (postmaster hung or overloaded?)",
                self.address,
                fmt_duration(self.timeout)
            )),
        };
        self.last = Some(Handshake { at, outcome });
    }

    /// Judges from the postmaster's state (through this cycle's `snapshot`, when the query
    /// succeeded) and the last handshake.
    pub fn judge(&self, snapshot: Option<&PgSnapshot>) -> ProbeResult {
        let id = ProbeId::PostgresAccept;
        let postmaster = snapshot.and_then(|s| postmaster_of(s.backend_pid));
        if let Some((pid, stat)) = postmaster
            && stat.stopped()
        {
            return id
                .critical(format!(
                    "postmaster (pid {pid}) is stopped (state {}): new connections hang",
                    stat.state
                ))
                .fact("postmaster_pid", pid)
                .fact("postmaster_state", stat.state.to_string());
        }
        let Some(last) = &self.last else {
            return id.unknown("no connection handshake yet");
        };
        if snapshot.is_none() && !self.fresh && last.outcome.is_ok() {
            // The session just failed and the last handshake predates it: not proof of health.
            return id.unknown(format!(
                "the agent's session just failed; the last new connection ({}s ago) succeeded; checking again next cycle",
                last.at.elapsed().as_secs()
            ));
        }
        let age = last.at.elapsed().as_secs();
        let result = match &last.outcome {
            Ok(took) => id.ok(format!(
                "accepts new connections (handshake {:.1} ms, {age}s ago{})",
                took.as_secs_f64() * 1000.0,
                if postmaster.is_some() {
                    "; postmaster running"
                } else {
                    ""
                }
            )),
            Err(e) => id.critical(e.clone()),
        };
        let mut result = result
            .fact("handshake_age_s", age)
            .fact("address", self.address.clone());
        if let Some((pid, stat)) = postmaster {
            result = result
                .fact("postmaster_pid", pid)
                .fact("postmaster_state", stat.state.to_string());
        }
        result
    }
}

/// The postmaster that forked `backend_pid`, when it runs on this host (same pid namespace).
fn postmaster_of(backend_pid: i32) -> Option<(u32, procfs::ProcStat)> {
    let backend = u32::try_from(backend_pid).ok()?;
    let argv = procfs::read_cmdline(backend)?;
    // A backend's title is "postgres: …": anything else means another pid namespace.
    if !argv.first().is_some_and(|a| a.starts_with("postgres:")) {
        return None;
    }
    let ppid = procfs::read_stat(backend)?.ppid;
    Some((ppid, procfs::read_stat(ppid)?))
}

/// Sends `SSLRequest` and expects `S` or `N`: the server forked a child for us and it answered.
async fn handshake(address: &str) -> Result<(), String> {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| format!("{address}: {e}"))?;
    stream
        .write_all(&SSL_REQUEST)
        .await
        .map_err(|e| format!("{address}: {e}"))?;
    let mut byte = [0u8; 1];
    match stream.read(&mut byte).await {
        Ok(0) => Err(format!("{address}: connection closed without an answer")),
        Ok(_) if byte[0] == b'S' || byte[0] == b'N' => Ok(()),
        Ok(_) => Err(format!(
            "{address}: answered 0x{:02x}, not PostgreSQL's handshake",
            byte[0]
        )),
        Err(e) => Err(format!("{address}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::Status;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn a_server_that_accepts_but_never_answers_is_critical_on_time() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let mut p = AcceptProbe::new(addr, Duration::from_secs(60), Duration::from_millis(300));
        p.handshake_if_due(false).await;
        let r = p.judge(None);
        assert_eq!(r.status, Status::Critical, "{}", r.message);
        assert!(
            r.message.contains("not answered within 300ms"),
            "{}",
            r.message
        );
        drop(listener);
    }

    #[tokio::test]
    async fn garbage_answer_is_named() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        tokio::spawn(async move {
            if let Ok((mut s, _)) = listener.accept().await {
                let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            }
        });
        let mut p = AcceptProbe::new(addr, Duration::from_secs(60), Duration::from_secs(2));
        p.handshake_if_due(false).await;
        let r = p.judge(None);
        assert_eq!(r.status, Status::Critical);
        assert!(
            r.message.contains("not PostgreSQL's handshake"),
            "{}",
            r.message
        );
    }
}
