//! Probe addresses as written in [`ProbeTarget`]s, and [`NetProber`], which sends each target the
//! probe its address asks for.

use crate::icmp::IcmpProber;
use crate::tcp::TcpProber;
use am_core::{ProbeResult, ProbeTarget, Prober};
use async_trait::async_trait;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// What one address asks for.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ProbeAddr {
    /// An ICMP echo to this address.
    Icmp(IpAddr),
    /// A TCP connection to this address and port.
    Tcp(SocketAddr),
}

/// Why an address cannot be probed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    /// Nothing was given.
    #[error("empty probe address")]
    Empty,
    /// The scheme before `:` is not `icmp` or `tcp`.
    #[error("unknown probe scheme `{scheme}` in `{input}` (use icmp:ADDR or tcp:ADDR:PORT)")]
    UnknownScheme {
        /// The address as given.
        input: String,
        /// The scheme.
        scheme: String,
    },
    /// Not an IP address (names are not resolved: DNS trouble must not look like a dead host).
    #[error("`{input}` is not {expected}; host names are not resolved, give the address")]
    NotAnAddress {
        /// The address as given.
        input: String,
        /// What was expected ("an IP address", "an IP address and port").
        expected: &'static str,
    },
    /// A TCP probe without a port.
    #[error("`{input}` needs a port for a TCP probe (e.g. tcp:{input}:443)")]
    MissingPort {
        /// The address as given.
        input: String,
    },
}

/// Parses a probe address:
///
/// - `10.0.0.5`, `::1`, `icmp:10.0.0.5`: ICMP echo (or TCP to `default_tcp_port` when given and no
///   scheme is written);
/// - `10.0.0.5:443`, `[::1]:22`, `tcp:10.0.0.5:443`: TCP connect.
pub fn parse_probe_addr(input: &str, default_tcp_port: Option<u16>) -> Result<ProbeAddr, AddrError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(AddrError::Empty);
    }
    let (scheme, rest) = match s.split_once(':') {
        Some((scheme, rest)) if !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphabetic()) => {
            (Some(scheme.to_ascii_lowercase()), rest)
        }
        _ => (None, s),
    };
    let rest = rest.trim_start_matches("//");
    match scheme.as_deref() {
        Some("icmp") | Some("ping") => {
            rest.parse::<IpAddr>()
                .map(ProbeAddr::Icmp)
                .map_err(|_| AddrError::NotAnAddress {
                    input: input.into(),
                    expected: "an IP address",
                })
        }
        Some("tcp") => match rest.parse::<SocketAddr>() {
            Ok(a) => Ok(ProbeAddr::Tcp(a)),
            Err(_) => match rest.trim_matches(|c| c == '[' || c == ']').parse::<IpAddr>() {
                Ok(ip) => match default_tcp_port {
                    Some(p) => Ok(ProbeAddr::Tcp(SocketAddr::new(ip, p))),
                    None => Err(AddrError::MissingPort { input: rest.into() }),
                },
                Err(_) => Err(AddrError::NotAnAddress {
                    input: input.into(),
                    expected: "an IP address and port",
                }),
            },
        },
        Some(other) => Err(AddrError::UnknownScheme {
            input: input.into(),
            scheme: other.into(),
        }),
        None => {
            if let Ok(ip) = s.parse::<IpAddr>() {
                return Ok(match default_tcp_port {
                    Some(p) => ProbeAddr::Tcp(SocketAddr::new(ip, p)),
                    None => ProbeAddr::Icmp(ip),
                });
            }
            s.parse::<SocketAddr>()
                .map(ProbeAddr::Tcp)
                .map_err(|_| AddrError::NotAnAddress {
                    input: input.into(),
                    expected: "an IP address",
                })
        }
    }
}

/// The real prober: ICMP echo or TCP connect, as each target's address says.
///
/// Hosts' bare management addresses get a TCP probe to `host_port` when it is set (e.g. 443 for an
/// ESXi host's management agent), ICMP otherwise; guests' and isolation addresses get ICMP unless
/// they name a port. When ICMP is not permitted, ICMP probes fail with the reason in their evidence.
#[derive(Debug)]
pub struct NetProber {
    icmp: Result<IcmpProber, String>,
    tcp: TcpProber,
    host_port: Option<u16>,
}

impl NetProber {
    /// Opens the ICMP socket (inside a tokio runtime); `host_port` as above.
    pub fn new(host_port: Option<u16>) -> NetProber {
        let icmp = IcmpProber::new().map_err(|e| {
            tracing::error!(error = %e, "ICMP probes will fail");
            e.to_string()
        });
        NetProber {
            icmp,
            tcp: TcpProber::new(None),
            host_port,
        }
    }

    /// The ICMP prober, or why there is none.
    pub fn icmp(&self) -> Result<&IcmpProber, &str> {
        self.icmp.as_ref().map_err(String::as_str)
    }
}

#[async_trait]
impl Prober for NetProber {
    async fn probe(&self, target: &ProbeTarget, timeout: Duration) -> ProbeResult {
        let port = match target {
            ProbeTarget::Host { .. } => self.host_port,
            _ => None,
        };
        match parse_probe_addr(target.address(), port) {
            Ok(ProbeAddr::Tcp(a)) => self.tcp.connect(a, timeout).await,
            Ok(ProbeAddr::Icmp(IpAddr::V4(a))) => match &self.icmp {
                Ok(icmp) => icmp.ping(a, timeout).await,
                Err(why) => ProbeResult::Error(why.clone()),
            },
            Ok(ProbeAddr::Icmp(IpAddr::V6(a))) => ProbeResult::Error(format!(
                "ICMPv6 echo is not supported yet: probe {a} with a tcp: address"
            )),
            Err(e) => ProbeResult::Error(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_with_clear_errors() {
        let icmp = |s: &str| ProbeAddr::Icmp(s.parse().unwrap());
        let tcp = |s: &str| ProbeAddr::Tcp(s.parse().unwrap());
        assert_eq!(parse_probe_addr("127.0.0.1", None), Ok(icmp("127.0.0.1")));
        assert_eq!(parse_probe_addr(" icmp:127.0.0.1 ", None), Ok(icmp("127.0.0.1")));
        assert_eq!(parse_probe_addr("::1", None), Ok(icmp("::1")));
        assert_eq!(parse_probe_addr("127.0.0.1:22", None), Ok(tcp("127.0.0.1:22")));
        assert_eq!(parse_probe_addr("tcp://[::1]:22", None), Ok(tcp("[::1]:22")));
        assert_eq!(parse_probe_addr("127.0.0.1", Some(443)), Ok(tcp("127.0.0.1:443")));
        assert_eq!(
            parse_probe_addr("tcp:127.0.0.1", Some(443)),
            Ok(tcp("127.0.0.1:443"))
        );
        assert_eq!(
            parse_probe_addr("icmp:127.0.0.1", Some(443)),
            Ok(icmp("127.0.0.1"))
        );
        assert_eq!(parse_probe_addr("", None), Err(AddrError::Empty));
        let e = parse_probe_addr("tcp:127.0.0.1", None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`127.0.0.1` needs a port for a TCP probe (e.g. tcp:127.0.0.1:443)"
        );
        let e = parse_probe_addr("esx1.example.com", None).unwrap_err();
        assert!(e.to_string().contains("host names are not resolved"), "{e}");
        let e = parse_probe_addr("udp:1.2.3.4", None).unwrap_err();
        assert!(e.to_string().starts_with("unknown probe scheme `udp`"), "{e}");
        let e = parse_probe_addr("tcp:nowhere:80", None).unwrap_err();
        assert!(e.to_string().contains("not an IP address and port"), "{e}");
    }
}
