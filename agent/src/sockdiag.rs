//! Is anything listening on an address? Asked to the kernel's `NETLINK_SOCK_DIAG` (what `ss`
//! uses): it looks up the one socket that would accept a connection to that address — the lookup
//! an incoming SYN gets, a hash probe. Reading `/proc/net/tcp` instead walks every bucket of the
//! established table: milliseconds of CPU on a large host, every cycle.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use rustix::net::netlink::{self, SocketAddrNetlink};
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const TCP_LISTEN: u32 = 10;
const IPPROTO_TCP: u8 = 6;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const NLMSG_HDR: usize = 16;
/// `struct inet_diag_msg` up to the fields we read (family … id.dst, 40 bytes) and beyond.
const DIAG_MSG_MIN: usize = 40;

/// `nlmsghdr` + `inet_diag_req_v2` asking for the socket a connection to `addr` would reach:
/// the kernel looks up an established socket from `0.0.0.0:0`, then the listener for `addr`.
fn lookup_request(addr: SocketAddr) -> [u8; 72] {
    let mut b = [0u8; 72];
    b[0..4].copy_from_slice(&72u32.to_ne_bytes());
    b[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    b[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    b[8..12].copy_from_slice(&3u32.to_ne_bytes());
    b[17] = IPPROTO_TCP;
    b[20..24].copy_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    // inet_diag_sockid at 24: sport, dport (big-endian), src[16], dst[16], if, cookie[2].
    b[24..26].copy_from_slice(&addr.port().to_be_bytes());
    match addr.ip() {
        IpAddr::V4(ip) => {
            b[16] = AF_INET;
            b[28..32].copy_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            b[16] = AF_INET6;
            b[28..44].copy_from_slice(&ip.octets());
        }
    }
    // INET_DIAG_NOCOOKIE: any socket.
    b[64..72].fill(0xff);
    b
}

fn u16_ne(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_ne(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Local addresses of the `inet_diag_msg`s in one datagram; `Ok(true)` at `NLMSG_DONE`.
pub fn parse(datagram: &[u8], out: &mut Vec<SocketAddr>) -> io::Result<bool> {
    let mut at = 0;
    while at + NLMSG_HDR <= datagram.len() {
        let bad = || io::Error::new(io::ErrorKind::InvalidData, "truncated netlink message");
        let len = u32_ne(datagram, at).ok_or_else(bad)? as usize;
        let kind = u16_ne(datagram, at + 4).ok_or_else(bad)?;
        if len < NLMSG_HDR || at + len > datagram.len() {
            return Err(bad());
        }
        let body = &datagram[at + NLMSG_HDR..at + len];
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                // The kernel sends -errno; any other value is garbage, never an overflow.
                let errno = u32_ne(body, 0).map_or(0, |e| e as i32);
                return Err(io::Error::from_raw_os_error(errno.saturating_neg()));
            }
            SOCK_DIAG_BY_FAMILY if body.len() >= DIAG_MSG_MIN => {
                let port = u16::from_be_bytes([body[4], body[5]]);
                let src: [u8; 16] = body[8..24].try_into().map_err(|_| bad())?;
                let ip = match body[0] {
                    AF_INET => Some(IpAddr::V4(Ipv4Addr::new(src[0], src[1], src[2], src[3]))),
                    AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(src))),
                    _ => None,
                };
                out.extend(ip.map(|ip| SocketAddr::new(ip, port)));
            }
            _ => {}
        }
        at += (len + 3) & !3;
    }
    Ok(false)
}

/// Whether a socket of this network namespace listens for connections to `addr` (on it or on a
/// wildcard address).
pub fn serves(addr: SocketAddr) -> io::Result<bool> {
    let fd = rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        Some(netlink::SOCK_DIAG),
    )?;
    let kernel = SocketAddrNetlink::new(0, 0);
    rustix::net::sendto(&fd, &lookup_request(addr), SendFlags::empty(), &kernel)?;
    let mut buf = [0u8; 4096];
    let (n, _) = rustix::net::recv(&fd, &mut buf, RecvFlags::empty())?;
    let mut found = Vec::new();
    match parse(&buf[..n], &mut found) {
        Ok(_) => Ok(found.iter().any(|l| l.port() == addr.port())),
        Err(e) if e.raw_os_error() == Some(2) => Ok(false), // ENOENT: nothing would accept
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by `fuzz/run.sh 60 sockdiag` with overflow checks: an NLMSG_ERROR of i32::MIN.
    #[test]
    fn an_error_message_of_any_value_is_an_error_never_a_panic() {
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDR + 4) as u32).to_ne_bytes());
        m.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        m.extend_from_slice(&[0u8; 10]);
        m.extend_from_slice(&0x8000_0000u32.to_ne_bytes());
        assert!(parse(&m, &mut Vec::new()).is_err());
    }

    fn message(family: u8, ip: [u8; 16], port: u16) -> Vec<u8> {
        let mut body = vec![0u8; 72];
        body[0] = family;
        body[1] = TCP_LISTEN as u8;
        body[4..6].copy_from_slice(&port.to_be_bytes());
        body[8..24].copy_from_slice(&ip);
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDR + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        m.extend_from_slice(&[0u8; 10]);
        m.extend_from_slice(&body);
        m
    }

    #[test]
    fn parses_messages_until_done() {
        let mut d = message(
            AF_INET,
            [127, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            5000,
        );
        d.extend(message(AF_INET6, [0; 16], 8080));
        let mut done = vec![0u8; 20];
        done[0..4].copy_from_slice(&20u32.to_ne_bytes());
        done[4..6].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
        d.extend(done);
        let mut out = Vec::new();
        assert!(parse(&d, &mut out).expect("parses"));
        assert_eq!(
            out,
            vec![
                "127.0.0.10:5000".parse::<SocketAddr>().expect("addr"),
                "[::]:8080".parse().expect("addr")
            ]
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut out = Vec::new();
        assert!(
            parse(
                &[255, 255, 0, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                &mut out
            )
            .is_err()
        );
        assert!(!parse(&[1, 2, 3], &mut out).expect("too short to hold a header"));
        let mut error = vec![0u8; 20];
        error[0..4].copy_from_slice(&20u32.to_ne_bytes());
        error[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        error[16..20].copy_from_slice(&(-13i32).to_ne_bytes());
        assert!(parse(&error, &mut out).is_err());
    }

    #[test]
    fn looks_up_the_listener_of_an_address() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        assert!(serves(addr).expect("sock_diag works here"));
        let other_ip = SocketAddr::new("127.0.0.2".parse().expect("ip"), addr.port());
        assert!(!serves(other_ip).expect("sock_diag"));
        drop(l);
        assert!(!serves(addr).expect("sock_diag"));
        // A wildcard listener serves every local address of its port.
        let any = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
        let port = any.local_addr().expect("addr").port();
        let via = SocketAddr::new("127.0.0.3".parse().expect("ip"), port);
        assert!(serves(via).expect("sock_diag"));
        // An established connection is not a listener.
        let server = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client =
            std::net::TcpStream::connect(server.local_addr().expect("addr")).expect("connect");
        let local = client.local_addr().expect("addr");
        assert!(!serves(local).expect("sock_diag"));
    }
}
