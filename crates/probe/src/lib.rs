//! # probe
//!
//! Liveness probing for the Availability Manager: the probes (ICMP echo, TCP connect), a scheduler
//! that spreads them evenly over the interval, failure detectors (k consecutive misses, phi
//! accrual) with evidence for the audit log, and the manager's own isolation check.
//!
//! The core, [`Monitor`], does no I/O and reads no clock (`now` is an argument), so the daemon, the
//! simulated cluster and the tests drive the same code. [`drive`] runs it against any
//! [`am_core::Prober`] on tokio's clock and sends verdicts to the supervisor as
//! [`am_core::Observation`]s. [`IcmpProber`], [`TcpProber`] and [`NetProber`] are the real probers.
//!
//! Defaults ([`Settings::default`]): hosts and isolation addresses are probed every 100 ms and
//! declared dead after 20 lost in a row (worst case 2.5 s from a crash, 3.0e-10 false verdicts per
//! target-hour under 20 % random loss); see [`Timing::host_default`].

mod detector;
mod driver;
mod icmp;
mod monitor;
mod net;
mod settings;
mod tcp;
pub mod virtual_net;

pub use detector::HISTORY;
pub use driver::{TokioClock, drive};
pub use icmp::{IcmpError, IcmpProber, SocketKind};
pub use monitor::{Health, Monitor, TargetStatus};
pub use net::{AddrError, NetProber, ProbeAddr, parse_probe_addr};
pub use settings::{Detector, Settings, SettingsError, Timing};
pub use tcp::TcpProber;
pub use virtual_net::{Fate, VirtualNet};
