//! `postgres.accept`: does PostgreSQL accept *new* logins? The agent's reused session (like
//! Patroni's superuser session) stays blind to a server that refuses new clients, so this probe
//! looks twice: every cycle, the postmaster's process state through `/proc` (free: the postmaster
//! is the parent of the agent's own backend); and every `accept_check_interval` — every cycle
//! while the session fails, the last login failed or connection slots are nearly used up — a
//! real login as the monitoring role, authentication included. A bare handshake is not enough:
//! PostgreSQL answers the encryption negotiation before it checks connection slots, so a server
//! refusing every application (`remaining connection slots are reserved…`) still "answers". The
//! monitoring role is not a superuser, so it is refused exactly when applications are.

use std::time::Duration;

use tokio::time::Instant;

use super::postgres_session::{self, PgSnapshot};
use vigie_proto::Facts;
use vigie_proto::v1::{self, PostgresAcceptFacts};

use super::{Outcome, ProbeId, fmt_duration};
use crate::procfs;
use crate::result::ProbeResult;

/// Why a login failed, as the server says it (SQLSTATE) or as the network does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 53300 `too_many_connections`: no slot left for ordinary roles.
    TooManyConnections,
    /// 57P03 `cannot_connect_now`: starting up, shutting down, in recovery without hot standby.
    CannotConnectNow,
    /// 28000 / 28P01: pg_hba or the password refuse the monitoring role itself.
    Authentication,
    /// The monitoring side's own setup: no CONNECT privilege (42501), no such database (3D000),
    /// a TLS handshake the agent's certificates or CA make fail.
    MonitoringSetup,
    /// Any other server error, a network error, or no answer in time.
    Other,
}

impl Refusal {
    fn of(sqlstate: Option<&str>) -> Refusal {
        match sqlstate {
            Some("53300") => Refusal::TooManyConnections,
            Some("57P03") => Refusal::CannotConnectNow,
            Some("28000" | "28P01") => Refusal::Authentication,
            Some("42501" | "3D000") => Refusal::MonitoringSetup,
            _ => Refusal::Other,
        }
    }

    /// Whether the refusal is about the monitoring role's own access, not the server's: nothing
    /// is known then of whether applications get in.
    fn ours(self) -> bool {
        matches!(self, Refusal::Authentication | Refusal::MonitoringSetup)
    }

    /// The wire's word for it.
    pub fn wire(self) -> v1::Refusal {
        match self {
            Refusal::TooManyConnections => v1::Refusal::TooManyConnections,
            Refusal::CannotConnectNow => v1::Refusal::CannotConnectNow,
            Refusal::Authentication => v1::Refusal::Authentication,
            Refusal::MonitoringSetup => v1::Refusal::MonitoringSetup,
            Refusal::Other => v1::Refusal::Other,
        }
    }
}

/// A failed login: what the server (or the network) said.
#[derive(Debug, Clone)]
struct Failure {
    message: String,
    refusal: Refusal,
    sqlstate: Option<String>,
}

/// Outcome of the last login.
#[derive(Debug, Clone)]
struct Login {
    at: Instant,
    outcome: Result<Duration, Failure>,
}

#[derive(Debug)]
pub struct AcceptProbe {
    login: postgres_session::PgLogin,
    address: String,
    every: Duration,
    timeout: Duration,
    last: Option<Login>,
    /// Whether the last call to `login_if_due` ran one.
    fresh: bool,
}

impl AcceptProbe {
    pub fn new(
        login: impl Into<postgres_session::PgLogin>,
        address: String,
        every: Duration,
        timeout: Duration,
    ) -> Self {
        AcceptProbe {
            login: login.into(),
            address,
            every,
            timeout,
            last: None,
            fresh: false,
        }
    }

    /// Logs in when due: every `accept_check_interval`, and every cycle while the last login
    /// failed or `urgent` (the agent's own session failing, connection slots nearly used up).
    pub async fn login_if_due(&mut self, urgent: bool) {
        // A refusal of the monitoring role itself is retried at the normal pace only: a FATAL in
        // the server's log every cycle, or a lockout, helps nobody.
        let ours = self
            .last
            .as_ref()
            .is_some_and(|h| h.outcome.as_ref().is_err_and(|f| f.refusal.ours()));
        let due = self
            .last
            .as_ref()
            .is_none_or(|h| h.at.elapsed() >= self.every)
            || (!ours && (urgent || self.last.as_ref().is_some_and(|h| h.outcome.is_err())));
        self.fresh = due;
        if !due {
            return;
        }
        let at = Instant::now();
        let outcome =
            match tokio::time::timeout(self.timeout, postgres_session::open(&self.login)).await {
                Ok(Ok(client)) => {
                    drop(client);
                    Ok(at.elapsed())
                }
                Ok(Err(e)) => {
                    let sqlstate = e.as_db_error().map(|d| d.code().code().to_string());
                    let message = postgres_session::describe(&e);
                    let refusal = if sqlstate.is_none() && message.contains("TLS handshake") {
                        Refusal::MonitoringSetup
                    } else {
                        Refusal::of(sqlstate.as_deref())
                    };
                    Err(Failure {
                        message: format!("{}: {message}", self.address),
                        refusal,
                        sqlstate,
                    })
                }
                Err(_) => Err(Failure {
                    message: format!(
                        "{}: new login not answered within {} (postmaster hung or overloaded?)",
                        self.address,
                        fmt_duration(self.timeout)
                    ),
                    refusal: Refusal::Other,
                    sqlstate: None,
                }),
            };
        self.last = Some(Login { at, outcome });
    }

    /// Judges from this cycle's `snapshot` (when the query succeeded), the `postmaster`'s state
    /// read through it ([`postmaster_of`]) and the last login.
    pub fn judge(
        &self,
        snapshot: Option<&PgSnapshot>,
        postmaster: Option<(u32, procfs::ProcStat)>,
    ) -> ProbeResult {
        let id = ProbeId::PostgresAccept;
        if let Some((pid, stat)) = postmaster
            && stat.stopped()
        {
            return id
                .critical(format!(
                    "postmaster (pid {pid}) is stopped (state {}): new connections hang",
                    stat.state
                ))
                .with(Facts::PostgresAccept(PostgresAcceptFacts {
                    postmaster_pid: Some(pid),
                    postmaster_state: Some(stat.state.to_string()),
                    ..Default::default()
                }));
        }
        let Some(last) = &self.last else {
            return id.unknown("no login tried yet");
        };
        if snapshot.is_none() && !self.fresh && last.outcome.is_ok() {
            // The session just failed and the last login predates it: not proof of health.
            return id.unknown(format!(
                "the agent's session just failed; the last new login ({}s ago) succeeded; checking again next cycle",
                last.at.elapsed().as_secs()
            ));
        }
        let age = last.at.elapsed().as_secs();
        let mut facts = PostgresAcceptFacts {
            login_age_s: Some(age),
            address: Some(self.address.clone()),
            postmaster_pid: postmaster.as_ref().map(|(pid, _)| *pid),
            postmaster_state: postmaster.as_ref().map(|(_, stat)| stat.state.to_string()),
            ..Default::default()
        };
        let result = match &last.outcome {
            Ok(took) => id.ok(format!(
                "accepts new logins (login {:.1} ms, {age}s ago{})",
                took.as_secs_f64() * 1000.0,
                if postmaster.is_some() {
                    "; postmaster running"
                } else {
                    ""
                }
            )),
            Err(f) => {
                let r = match f.refusal {
                    Refusal::TooManyConnections => id.critical(format!(
                        "refuses new logins, no connection slot left: {}",
                        f.message
                    )),
                    Refusal::CannotConnectNow => {
                        id.critical(format!("refuses new logins: {}", f.message))
                    }
                    // The monitoring role itself is refused: nothing is known of applications.
                    Refusal::Authentication => id.unknown(format!(
                        "the monitoring role cannot log in (check pg_hba.conf and its password): {}",
                        f.message
                    )),
                    Refusal::MonitoringSetup => id.unknown(format!(
                        "the monitoring role's login fails on its own setup (privilege, database, TLS files): {}",
                        f.message
                    )),
                    Refusal::Other => id.critical(f.message.clone()),
                };
                facts.refused = f.refusal.wire() as i32;
                facts.error = Some(f.message.clone());
                facts.sqlstate = f.sqlstate.clone();
                r
            }
        };
        result.with(Facts::PostgresAccept(facts))
    }
}

/// The postmaster found through a backend: (backend pid, postmaster pid, its start time).
pub type PostmasterSeen = Option<(i32, u32, u64)>;

/// The postmaster that forked `backend_pid`, when it runs on this host (same pid namespace),
/// remembered in `seen` for [`postmaster_known`]. Reads the backend's `cmdline`, which waits on
/// its memory lock: off the runtime's thread.
pub fn postmaster_of(
    seen: &mut PostmasterSeen,
    backend_pid: i32,
) -> Option<(u32, procfs::ProcStat)> {
    *seen = None;
    let backend = u32::try_from(backend_pid).ok()?;
    let argv = procfs::read_cmdline(backend)?;
    // A backend's title is "postgres: …": anything else means another pid namespace.
    if !argv.first().is_some_and(|a| a.starts_with("postgres:")) {
        return None;
    }
    let ppid = procfs::read_stat(backend)?.ppid;
    let stat = procfs::read_stat(ppid)?;
    *seen = Some((backend_pid, ppid, stat.start_ticks));
    Some((ppid, stat))
}

/// The postmaster's state from what [`postmaster_of`] found for this same backend: one
/// `/proc/PID/stat` read (no lock the process can hold), safe on the runtime's thread. `None`:
/// another backend, or that postmaster is gone.
pub fn postmaster_known(
    seen: &PostmasterSeen,
    backend_pid: i32,
) -> Option<Option<(u32, procfs::ProcStat)>> {
    let (backend, pid, start) = (*seen)?;
    if backend != backend_pid {
        return None;
    }
    let stat = procfs::read_stat(pid).filter(|s| s.exists() && s.start_ticks == start)?;
    Some(Some((pid, stat)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::Status;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    fn probe(addr: &str, timeout: Duration) -> AcceptProbe {
        let (host, port) = addr.rsplit_once(':').expect("host:port");
        let mut login = tokio_postgres::Config::new();
        login
            .host(host)
            .port(port.parse().expect("port"))
            .user("vigie")
            .dbname("postgres");
        AcceptProbe::new(login, addr.to_string(), Duration::from_secs(60), timeout)
    }

    #[tokio::test]
    async fn a_server_that_accepts_but_never_answers_is_critical_on_time() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let mut p = probe(&addr, Duration::from_millis(300));
        p.login_if_due(false).await;
        let r = p.judge(None, None);
        assert_eq!(r.status, Status::Critical, "{}", r.message);
        assert!(
            r.message.contains("not answered within 300ms"),
            "{}",
            r.message
        );
        drop(listener);
    }

    #[tokio::test]
    async fn garbage_answer_is_critical_and_named() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        tokio::spawn(async move {
            if let Ok((mut s, _)) = listener.accept().await {
                let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            }
        });
        let mut p = probe(&addr, Duration::from_secs(2));
        p.login_if_due(false).await;
        let r = p.judge(None, None);
        assert_eq!(r.status, Status::Critical, "{}", r.message);
        assert!(r.message.starts_with(&addr), "{}", r.message);
        assert_eq!(r.json()["refused"], "other");
    }

    #[test]
    fn a_stopped_postmaster_is_critical_before_any_login() {
        let p = probe("127.0.0.1:5432", Duration::from_secs(1));
        let stat = procfs::parse_stat(
            "4242 (postgres) T 1 4242 4242 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 1 0 4242 1000 250 0",
        )
        .expect("stat");
        let r = p.judge(None, Some((4242, stat)));
        assert_eq!(r.status, Status::Critical, "{}", r.message);
        assert!(r.message.contains("(pid 4242) is stopped"), "{}", r.message);
        assert_eq!(p.judge(None, None).status, Status::Unknown);
    }

    #[test]
    fn refusals_are_read_from_the_sqlstate() {
        for (code, refusal) in [
            (Some("53300"), Refusal::TooManyConnections),
            (Some("57P03"), Refusal::CannotConnectNow),
            (Some("28P01"), Refusal::Authentication),
            (Some("28000"), Refusal::Authentication),
            (Some("3D000"), Refusal::MonitoringSetup),
            (Some("42501"), Refusal::MonitoringSetup),
            (Some("XX000"), Refusal::Other),
            (None, Refusal::Other),
        ] {
            assert_eq!(Refusal::of(code), refusal, "{code:?}");
        }
    }
}
