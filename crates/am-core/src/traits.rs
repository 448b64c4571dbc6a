//! The seams between layers. Each backend (vCenter, the simulated cluster, a mock) implements
//! them; nothing above this line knows which one it talks to.

use crate::action::{Action, ActionOutcome};
use crate::error::HvError;
use crate::event::{ClusterEvent, InventoryDelta};
use crate::ids::{HostId, VmId};
use crate::model::Inventory;
use crate::time::Time;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Every action the manager takes on the cluster goes through this one method, as govmomi's
/// `RoundTripper` is one method: a new [`Action`] touches the enum and the backends' `match`, and
/// decorators (retries, kill switches in tests) wrap one call.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait Hypervisor: Send + Sync {
    /// Carries out `action`; the outcome says what it produced (a snapshot, a clone, a host).
    async fn execute(&self, action: &Action) -> Result<ActionOutcome, HvError>;
}

/// Changes since a version, as [`InventorySource::changes`] returns them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    /// The version to ask from next time.
    pub version: String,
    /// Inventory changes, in order.
    pub deltas: Vec<InventoryDelta>,
    /// Events, in order.
    pub events: Vec<ClusterEvent>,
}

/// The inventory and event feed: a full snapshot first, then changes (like vCenter's
/// `WaitForUpdatesEx` with versions).
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait InventorySource: Send + Sync {
    /// The whole inventory now, and the version to ask for changes from.
    async fn snapshot(&self) -> Result<(Inventory, String), HvError>;
    /// Changes after `since`, waiting up to `max_wait` for the first one. An empty result with the
    /// same version means nothing changed.
    async fn changes(&self, since: &str, max_wait: Duration) -> Result<Changes, HvError>;

    /// Whether the source answers now, within `timeout`: a cheap call (vCenter: its clock). The
    /// engine asks every few seconds, so that a source that accepts connections but never answers
    /// is noticed long before its long calls time out. The default answers at once.
    async fn health(&self, timeout: Duration) -> Result<(), HvError> {
        let _ = timeout;
        Ok(())
    }
}

/// What to probe.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ProbeTarget {
    /// A host's management address.
    Host {
        /// The host.
        host: HostId,
        /// Its address.
        address: String,
    },
    /// A guest's address.
    Guest {
        /// The VM.
        vm: VmId,
        /// Its address.
        address: String,
        /// The host it runs on, if known: that host's own failure is no proof that the manager
        /// is cut off when the guest stops answering with it.
        #[serde(default)]
        host: Option<HostId>,
    },
    /// One of the manager's isolation addresses (e.g. the gateway).
    Isolation {
        /// The address.
        address: String,
    },
}

impl ProbeTarget {
    /// The address probed.
    pub fn address(&self) -> &str {
        match self {
            ProbeTarget::Host { address, .. }
            | ProbeTarget::Guest { address, .. }
            | ProbeTarget::Isolation { address } => address,
        }
    }
}

/// The result of one probe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProbeResult {
    /// It answered after `rtt`.
    Reply {
        /// Round-trip time.
        rtt: Duration,
    },
    /// No answer within the timeout.
    NoReply,
    /// The probe could not be sent (no socket, bad address).
    Error(String),
}

impl ProbeResult {
    /// Whether the target answered.
    pub fn is_reply(&self) -> bool {
        matches!(self, ProbeResult::Reply { .. })
    }
}

/// Sends one liveness probe (ICMP, TCP, or the simulator's truth).
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait Prober: Send + Sync {
    /// Probes `target`, waiting at most `timeout`.
    async fn probe(&self, target: &ProbeTarget, timeout: Duration) -> ProbeResult;
}

/// The clock seam: the daemon reads time only through it (tokio's clock, which the simulator pauses
/// and advances).
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> Time;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_method_carries_every_action() {
        let mut hv = MockHypervisor::new();
        hv.expect_execute()
            .withf(|a| matches!(a, Action::AddHost { spare } if spare == "s"))
            .times(1)
            .returning(|_| Ok(ActionOutcome::HostAdded(HostId::from("spare-1"))));
        hv.expect_execute()
            .withf(|a| matches!(a, Action::Failover { .. }))
            .times(1)
            .returning(|_| {
                Err(HvError::Timeout {
                    op: "failover".into(),
                })
            });
        assert_eq!(
            hv.execute(&Action::AddHost { spare: "s".into() }).await,
            Ok(ActionOutcome::HostAdded("spare-1".into()))
        );
        let err = hv
            .execute(&Action::Failover {
                vm: "v".into(),
                to: "h".into(),
            })
            .await
            .unwrap_err();
        assert!(err.is_retryable());
    }
}

/// What an out-of-band controller (a host's BMC, or the admin vCenter of a nested host) says of
/// the host's power.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerReading {
    /// Powered on (the machine is; whether its hypervisor is alive is another matter).
    On,
    /// Powered off: nothing of the host runs.
    Off,
}

/// Hosts' power read out of band, a signal independent of vCenter and of the network the
/// manager probes: `Off` proves a host dead, `On` that it is not (it may hang or be cut off).
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait PowerSource: Send + Sync {
    /// The hosts (by inventory name) it can read.
    fn hosts(&self) -> Vec<String>;
    /// The power of the host named `host`.
    async fn power(&self, host: &str) -> Result<PowerReading, HvError>;
}
