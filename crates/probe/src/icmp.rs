//! ICMP echo over one socket shared by all targets.
//!
//! It opens an unprivileged ping socket (`SOCK_DGRAM`, `IPPROTO_ICMP`) where
//! `net.ipv4.ping_group_range` allows it, and a raw socket (`SOCK_RAW`, needs `CAP_NET_RAW`)
//! otherwise. Each probe carries a unique 64-bit token and a marker in its payload; one reader task
//! matches replies to waiting probes by token and source address. Both socket kinds are used
//! through the safe `std`/`tokio` datagram API (`unsafe` is forbidden in this workspace).

use am_core::{ProbeResult, ProbeTarget, Prober};
use async_trait::async_trait;
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::net::{ProbeAddr, parse_probe_addr};

/// Marks our echo requests' payload (after the token), so that a raw socket, which sees every
/// ICMP packet of the host, ignores other programs' pings.
const MARKER: &[u8; 8] = b"am-probe";
const ECHO_REQUEST: u8 = 8;
const ECHO_REPLY: u8 = 0;

/// Which kind of socket the prober uses.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum SocketKind {
    /// An unprivileged ping socket (`SOCK_DGRAM` + `IPPROTO_ICMP`); the kernel sets the identifier
    /// and hands this socket only the replies to its own requests.
    Datagram,
    /// A raw ICMP socket (`SOCK_RAW`, needs root or `CAP_NET_RAW`); it sees every ICMP packet.
    Raw,
}

/// Why the ICMP prober could not start.
#[derive(Debug, thiserror::Error)]
pub enum IcmpError {
    /// Neither socket kind is allowed for this process.
    #[error(
        "ICMP echo is not permitted: an unprivileged ping socket was refused ({dgram}; the process's \
         group must be within sysctl net.ipv4.ping_group_range, now \"{range}\") and so was a raw \
         socket ({raw}; it needs root or CAP_NET_RAW)"
    )]
    NotPermitted {
        /// The error opening the ping socket.
        dgram: io::Error,
        /// The error opening the raw socket.
        raw: io::Error,
        /// The current `net.ipv4.ping_group_range`.
        range: String,
    },
    /// The socket of the requested kind could not be opened or set up.
    #[error("cannot open an ICMP {kind:?} socket: {source}")]
    Socket {
        /// Which kind.
        kind: SocketKind,
        /// The system's error.
        #[source]
        source: io::Error,
    },
    /// It was created outside a tokio runtime.
    #[error(
        "the ICMP prober must be created inside a tokio runtime (it registers its socket and starts a reader task)"
    )]
    NoRuntime,
}

struct Waiting {
    addr: Ipv4Addr,
    reply: oneshot::Sender<Instant>,
}

struct Shared {
    socket: UdpSocket,
    kind: SocketKind,
    /// Identifier for raw sockets (the kernel chooses it for ping sockets).
    ident: u16,
    next_token: AtomicU64,
    waiting: Mutex<HashMap<u64, Waiting>>,
}

impl Shared {
    fn waiting(&self) -> MutexGuard<'_, HashMap<u64, Waiting>> {
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// ICMP echo prober: one socket and one reader task for any number of targets and probes in flight.
///
/// Addresses are IPv4 literals, optionally written `icmp:ADDR`. IPv6 is not supported yet (probe
/// such targets with [`TcpProber`](crate::TcpProber)).
pub struct IcmpProber {
    shared: Arc<Shared>,
    reader: JoinHandle<()>,
}

impl std::fmt::Debug for IcmpProber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IcmpProber")
            .field("kind", &self.shared.kind)
            .finish()
    }
}

impl Drop for IcmpProber {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn open(kind: SocketKind) -> io::Result<Socket> {
    let ty = match kind {
        SocketKind::Datagram => Type::DGRAM,
        SocketKind::Raw => Type::RAW,
    };
    let s = Socket::new(Domain::IPV4, ty, Some(Protocol::ICMPV4))?;
    s.set_nonblocking(true)?;
    // Room for a burst of replies (10,000 targets); the kernel caps it at net.core.rmem_max.
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(1 << 20);
    Ok(s)
}

impl IcmpProber {
    /// Opens a ping socket where allowed, else a raw socket; a clear error if neither works.
    /// Must be called inside a tokio runtime.
    pub fn new() -> Result<IcmpProber, IcmpError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(IcmpError::NoRuntime);
        }
        match open(SocketKind::Datagram) {
            Ok(s) => Self::start(s, SocketKind::Datagram),
            Err(dgram) => match open(SocketKind::Raw) {
                Ok(s) => Self::start(s, SocketKind::Raw),
                Err(raw) => Err(IcmpError::NotPermitted {
                    dgram,
                    raw,
                    range: std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range")
                        .map(|r| r.split_whitespace().collect::<Vec<_>>().join(" "))
                        .unwrap_or_else(|_| "unknown".into()),
                }),
            },
        }
    }

    /// Opens a socket of the given kind only (for tests and benchmarks).
    pub fn with_kind(kind: SocketKind) -> Result<IcmpProber, IcmpError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(IcmpError::NoRuntime);
        }
        let s = open(kind).map_err(|source| IcmpError::Socket { kind, source })?;
        Self::start(s, kind)
    }

    fn start(socket: Socket, kind: SocketKind) -> Result<IcmpProber, IcmpError> {
        let socket = UdpSocket::from_std(std::net::UdpSocket::from(socket))
            .map_err(|source| IcmpError::Socket { kind, source })?;
        let seed = u64::from(std::process::id())
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
        let shared = Arc::new(Shared {
            socket,
            kind,
            ident: (seed ^ (seed >> 16) ^ (seed >> 32)) as u16,
            next_token: AtomicU64::new(seed.rotate_left(17)),
            waiting: Mutex::new(HashMap::new()),
        });
        let reader = tokio::spawn(read_replies(shared.clone()));
        Ok(IcmpProber { shared, reader })
    }

    /// The kind of socket in use.
    pub fn kind(&self) -> SocketKind {
        self.shared.kind
    }

    /// Probes in flight (for tests: it returns to zero, memory stays bounded).
    pub fn in_flight(&self) -> usize {
        self.shared.waiting().len()
    }

    /// Sends one echo request to `addr` and waits up to `timeout` for the reply.
    pub async fn ping(&self, addr: Ipv4Addr, timeout: Duration) -> ProbeResult {
        let sh = &self.shared;
        let token = sh.next_token.fetch_add(1, Ordering::Relaxed);
        let packet = echo_request(sh.ident, token as u16, token);
        let (tx, rx) = oneshot::channel();
        sh.waiting().insert(token, Waiting { addr, reply: tx });
        let _forget = Forget { shared: sh, token };
        let start = Instant::now();
        if let Err(e) = sh
            .socket
            .send_to(&packet, SocketAddr::new(IpAddr::V4(addr), 0))
            .await
        {
            return ProbeResult::Error(format!("cannot send ICMP echo to {addr}: {e}"));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(at)) => ProbeResult::Reply {
                rtt: at.saturating_duration_since(start),
            },
            _ => ProbeResult::NoReply,
        }
    }
}

/// Removes a probe's entry however its future ends (reply, timeout, cancellation).
struct Forget<'a> {
    shared: &'a Shared,
    token: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.shared.waiting().remove(&self.token);
    }
}

#[async_trait]
impl Prober for IcmpProber {
    async fn probe(&self, target: &ProbeTarget, timeout: Duration) -> ProbeResult {
        match parse_probe_addr(target.address(), None) {
            Ok(ProbeAddr::Icmp(IpAddr::V4(a))) => self.ping(a, timeout).await,
            Ok(ProbeAddr::Icmp(IpAddr::V6(a))) => ProbeResult::Error(format!(
                "ICMPv6 echo is not supported yet: probe {a} with a tcp: address"
            )),
            Ok(ProbeAddr::Tcp(a)) => {
                ProbeResult::Error(format!("{a} is a TCP address; the ICMP prober needs a bare IP"))
            }
            Err(e) => ProbeResult::Error(e.to_string()),
        }
    }
}

async fn read_replies(shared: Arc<Shared>) {
    let mut buf = [0u8; 2048];
    loop {
        match shared.socket.recv_from(&mut buf).await {
            Ok((n, from)) => {
                let Some(data) = buf.get(..n) else { continue };
                let icmp = match shared.kind {
                    SocketKind::Datagram => data,
                    SocketKind::Raw => {
                        let Some(&v) = data.first() else { continue };
                        data.get(usize::from(v & 0x0f) * 4..).unwrap_or_default()
                    }
                };
                let Some((ident, token)) = parse_echo_reply(icmp) else {
                    continue;
                };
                if shared.kind == SocketKind::Raw && ident != shared.ident {
                    continue;
                }
                let at = Instant::now();
                let mut waiting = shared.waiting();
                if let Some(w) = waiting.get(&token)
                    && IpAddr::V4(w.addr) == from.ip()
                    && let Some(w) = waiting.remove(&token)
                {
                    drop(waiting);
                    let _ = w.reply.send(at);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "ICMP receive failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// An echo request: type 8, code 0, checksum, identifier, sequence, then the token and the marker.
fn echo_request(ident: u16, seq: u16, token: u64) -> [u8; 24] {
    let mut p = [0u8; 24];
    p[0] = ECHO_REQUEST;
    p[4..6].copy_from_slice(&ident.to_be_bytes());
    p[6..8].copy_from_slice(&seq.to_be_bytes());
    p[8..16].copy_from_slice(&token.to_be_bytes());
    p[16..24].copy_from_slice(MARKER);
    let sum = checksum(&p);
    p[2..4].copy_from_slice(&sum.to_be_bytes());
    p
}

/// The identifier and token of one of our echo replies, or `None` for anything else.
fn parse_echo_reply(icmp: &[u8]) -> Option<(u16, u64)> {
    if icmp.len() < 24 || icmp[0] != ECHO_REPLY || icmp[1] != 0 || &icmp[16..24] != MARKER {
        return None;
    }
    let ident = u16::from_be_bytes([icmp[4], icmp[5]]);
    let mut token = [0u8; 8];
    token.copy_from_slice(&icmp[8..16]);
    Some((ident, u64::from_be_bytes(token)))
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_checksums_to_zero_and_replies_parse() {
        let p = echo_request(0x1234, 7, 0xdead_beef_0000_0001);
        assert_eq!(checksum(&p), 0);
        let mut reply = p;
        reply[0] = ECHO_REPLY;
        assert_eq!(parse_echo_reply(&reply), Some((0x1234, 0xdead_beef_0000_0001)));
        assert_eq!(parse_echo_reply(&p), None, "a request is not a reply");
        let mut foreign = reply;
        foreign[20] = b'x';
        assert_eq!(parse_echo_reply(&foreign), None, "another program's ping");
        assert_eq!(parse_echo_reply(&reply[..20]), None);
    }

    #[test]
    fn outside_a_runtime_the_error_says_so() {
        let e = IcmpProber::new().unwrap_err();
        assert!(matches!(e, IcmpError::NoRuntime), "{e}");
    }
}
