//! The seams between layers. Each backend (vCenter, the simulated cluster, a mock) implements
//! them; nothing above this line knows which one it talks to.

use crate::action::{Action, ActionOutcome};
use crate::error::HvError;
use crate::event::{ClusterEvent, InventoryDelta};
use crate::ids::{DatastoreId, HostId, SnapshotId, VmId};
use crate::model::Inventory;
use crate::time::Time;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Every action the manager takes on the cluster. One method per operation, all the same shape.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait Hypervisor: Send + Sync {
    /// Powers a VM on where it is registered.
    async fn power_on(&self, vm: &VmId) -> Result<(), HvError>;
    /// Powers a VM off (hard).
    async fn power_off(&self, vm: &VmId) -> Result<(), HvError>;
    /// Resets a VM (hard reboot).
    async fn reset(&self, vm: &VmId) -> Result<(), HvError>;
    /// Moves a VM to `to`: `live` keeps it running; cold moves it off and powers it on there.
    async fn migrate(&self, vm: &VmId, to: &HostId, live: bool) -> Result<(), HvError>;
    /// Reverts to `snapshot` (`None`: the current snapshot) and powers the VM on.
    async fn revert_snapshot(&self, vm: &VmId, snapshot: Option<SnapshotId>) -> Result<(), HvError>;
    /// Takes a snapshot named `name`.
    async fn create_snapshot(&self, vm: &VmId, name: &str) -> Result<SnapshotId, HvError>;
    /// Removes a snapshot.
    async fn remove_snapshot(&self, vm: &VmId, snapshot: &SnapshotId) -> Result<(), HvError>;
    /// Clones `vm` as a powered-off backup named `name` registered on `host`.
    async fn clone_vm(
        &self,
        vm: &VmId,
        name: &str,
        host: &HostId,
        datastore: Option<DatastoreId>,
    ) -> Result<VmId, HvError>;
    /// Brings `vm` back from its backup clone `backup`, running on `host`.
    async fn restore_clone(&self, vm: &VmId, backup: &VmId, host: &HostId) -> Result<(), HvError>;
    /// Registers a VM's files on `host`.
    async fn register_vm(&self, vm: &VmId, host: &HostId) -> Result<(), HvError>;
    /// Unregisters a VM (its files stay).
    async fn unregister_vm(&self, vm: &VmId) -> Result<(), HvError>;
    /// Restarts a VM whose host died on host `to` (register there, power on).
    async fn failover(&self, vm: &VmId, to: &HostId) -> Result<(), HvError>;
    /// Asks the management server to reconnect a host.
    async fn reconnect_host(&self, host: &HostId) -> Result<(), HvError>;
    /// Out-of-band revival of a host (hook, IPMI, admin vCenter snapshot revert).
    async fn revive_host(&self, host: &HostId) -> Result<(), HvError>;
    /// Out-of-band power-off of a host, so none of its VMs can still run.
    async fn fence_host(&self, host: &HostId) -> Result<(), HvError>;
    /// Removes a host from the inventory.
    async fn remove_host(&self, host: &HostId) -> Result<(), HvError>;
    /// Adds the spare host named `spare` from the configured pool.
    async fn add_host(&self, spare: &str) -> Result<HostId, HvError>;
    /// Puts a host into maintenance mode.
    async fn enter_maintenance(&self, host: &HostId) -> Result<(), HvError>;
    /// Takes a host out of maintenance mode.
    async fn exit_maintenance(&self, host: &HostId) -> Result<(), HvError>;
}

/// Runs one [`Action`] by calling the matching [`Hypervisor`] method.
pub async fn execute(hv: &(impl Hypervisor + ?Sized), action: &Action) -> Result<ActionOutcome, HvError> {
    use ActionOutcome::Done;
    Ok(match action {
        Action::PowerOn { vm } => hv.power_on(vm).await.map(|_| Done)?,
        Action::PowerOff { vm } => hv.power_off(vm).await.map(|_| Done)?,
        Action::Reset { vm } => hv.reset(vm).await.map(|_| Done)?,
        Action::RevertSnapshot { vm, snapshot } => {
            hv.revert_snapshot(vm, snapshot.clone()).await.map(|_| Done)?
        }
        Action::CreateSnapshot { vm, name } => {
            ActionOutcome::SnapshotCreated(hv.create_snapshot(vm, name).await?)
        }
        Action::RemoveSnapshot { vm, snapshot } => hv.remove_snapshot(vm, snapshot).await.map(|_| Done)?,
        Action::Clone {
            vm,
            name,
            host,
            datastore,
        } => ActionOutcome::VmCreated(hv.clone_vm(vm, name, host, datastore.clone()).await?),
        Action::RestoreClone { vm, backup, host } => {
            hv.restore_clone(vm, backup, host).await.map(|_| Done)?
        }
        Action::MigrateCold { vm, to } => hv.migrate(vm, to, false).await.map(|_| Done)?,
        Action::MigrateLive { vm, to } => hv.migrate(vm, to, true).await.map(|_| Done)?,
        Action::Failover { vm, to } => hv.failover(vm, to).await.map(|_| Done)?,
        Action::Register { vm, host } => hv.register_vm(vm, host).await.map(|_| Done)?,
        Action::Unregister { vm } => hv.unregister_vm(vm).await.map(|_| Done)?,
        Action::ReconnectHost { host } => hv.reconnect_host(host).await.map(|_| Done)?,
        Action::ReviveHost { host } => hv.revive_host(host).await.map(|_| Done)?,
        Action::FenceHost { host } => hv.fence_host(host).await.map(|_| Done)?,
        Action::RemoveHost { host } => hv.remove_host(host).await.map(|_| Done)?,
        Action::AddHost { spare } => ActionOutcome::HostAdded(hv.add_host(spare).await?),
        Action::EnterMaintenance { host } => hv.enter_maintenance(host).await.map(|_| Done)?,
        Action::ExitMaintenance { host } => hv.exit_maintenance(host).await.map(|_| Done)?,
    })
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
    async fn execute_dispatches_to_the_matching_method() {
        let mut hv = MockHypervisor::new();
        hv.expect_reset()
            .withf(|vm| vm.as_str() == "vm-1")
            .times(1)
            .returning(|_| Ok(()));
        hv.expect_add_host()
            .times(1)
            .returning(|_| Ok(HostId::from("spare-1")));
        hv.expect_failover().times(1).returning(|_, _| {
            Err(HvError::Timeout {
                op: "failover".into(),
            })
        });
        assert_eq!(
            execute(&hv, &Action::Reset { vm: "vm-1".into() }).await,
            Ok(ActionOutcome::Done)
        );
        assert_eq!(
            execute(&hv, &Action::AddHost { spare: "s".into() }).await,
            Ok(ActionOutcome::HostAdded("spare-1".into()))
        );
        let err = execute(
            &hv,
            &Action::Failover {
                vm: "v".into(),
                to: "h".into(),
            },
        )
        .await
        .unwrap_err();
        assert!(err.is_retryable());
    }
}
