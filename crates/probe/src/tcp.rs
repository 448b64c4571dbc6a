//! TCP connect probes: the target answers when a connection to its port is accepted.

use crate::net::{ProbeAddr, parse_probe_addr};
use am_core::{ProbeResult, ProbeTarget, Prober};
use async_trait::async_trait;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Probes `ADDR:PORT` (or `tcp:ADDR:PORT`) by connecting and closing at once.
///
/// A refused connection is reported as [`ProbeResult::Error`] with the reason, so the evidence says
/// "refused" rather than "no answer"; both count as a lost probe.
#[derive(Clone, Debug, Default)]
pub struct TcpProber {
    default_port: Option<u16>,
}

impl TcpProber {
    /// A TCP prober; bare addresses without a port use `default_port` (or are an error).
    pub fn new(default_port: Option<u16>) -> TcpProber {
        TcpProber { default_port }
    }

    /// Connects to `addr`, waiting at most `timeout`.
    pub async fn connect(&self, addr: SocketAddr, timeout: Duration) -> ProbeResult {
        let start = Instant::now();
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let rtt = start.elapsed();
                drop(stream);
                ProbeResult::Reply { rtt }
            }
            Ok(Err(e)) if e.kind() == ErrorKind::ConnectionRefused => {
                ProbeResult::Error(format!("connection to {addr} refused"))
            }
            Ok(Err(e)) => ProbeResult::Error(format!("cannot connect to {addr}: {e}")),
            Err(_) => ProbeResult::NoReply,
        }
    }
}

#[async_trait]
impl Prober for TcpProber {
    async fn probe(&self, target: &ProbeTarget, timeout: Duration) -> ProbeResult {
        match parse_probe_addr(target.address(), self.default_port) {
            Ok(ProbeAddr::Tcp(a)) => self.connect(a, timeout).await,
            Ok(ProbeAddr::Icmp(ip)) => ProbeResult::Error(format!(
                "{ip} has no port for a TCP probe (write {ip}:PORT or tcp:{ip}:PORT)"
            )),
            Err(e) => ProbeResult::Error(e.to_string()),
        }
    }
}
