//! # am-vsphere
//!
//! The vCenter adapter: [`VsphereBackend`] implements `am-core`'s [`Hypervisor`](am_core::Hypervisor)
//! and [`InventorySource`](am_core::InventorySource) over a [`vsphere_soap::Client`]. It maps; it
//! does not decide (the supervisor does) and it knows no XML (vsphere-soap does).
//!
//! ## Identities
//!
//! Hosts, VMs, datastores and snapshots are known by their managed object ids (`host-21`,
//! `vm-42`, `datastore-7`, `snapshot-3`). vCenter gives a VM that is registered anew (a failover,
//! a restore) a new id; the adapter keeps calling it by its first one, recognising it by its
//! `.vmx` path. That mapping lives in memory: after a
//! restart of the daemon, such a VM shows under its new id.
//!
//! ## Inventory
//!
//! [`InventorySource::snapshot`](am_core::InventorySource::snapshot) creates a container view of
//! hosts, VMs and datastores under the scope (the whole vCenter, a datacenter or a cluster), an
//! event history collector for the events below, and a property collector filter over both; the
//! first `WaitForUpdatesEx` is the inventory. [`changes`](am_core::InventorySource::changes) waits
//! on the same filter: property changes become [`InventoryDelta`](am_core::InventoryDelta)s and the
//! collector's `latestPage` the [`ClusterEvent`](am_core::ClusterEvent)s (new keys only; a page
//! without any event seen before is completed with `QueryEvents`). After a new login (vCenter
//! restarted, session expired), the view, collector and filter are made again and the difference
//! to what was reported is sent as deltas.
//!
//! | `am-core` | vCenter |
//! |---|---|
//! | `Host.capacity` | `summary.hardware.numCpuCores` x `cpuMhz`, `memorySize` |
//! | `Host.connection`, `maintenance` | `runtime.connectionState`, `runtime.inMaintenanceMode` |
//! | `Host.mgmt_address` | [`Options::host_addresses`], or the name if it is an IP and [`Options::probe_host_names`] |
//! | `Host.storage_heartbeat` | none: vCenter does not expose datastore heartbeats |
//! | `Vm.demand` | `summary.config.cpuReservation` (MHz), `memorySizeMB` |
//! | `Vm.power`, `host` | `runtime.powerState`, `runtime.host` |
//! | `Vm.heartbeat` | `guestHeartbeatStatus` (VMware Tools; unset: gray) |
//! | `Vm.cpu_usage_mhz` | `summary.quickStats.overallCpuUsage`, only while on with `uptimeSeconds` > 0 |
//! | `Vm.guest_address` | `guest.ipAddress` when [`Options::probe_guests`] |
//! | `Vm.datastore` | the first of `datastore` |
//! | `Vm.priority` | [`Options::priorities`] by name, else [`Options::default_priority`] |
//! | `Vm.backup_of` | the name: `"<name> (am backup of <vm id>)"`, see [`backup_name`] |
//! | snapshots | the `snapshot` tree, flattened, oldest first |
//! | `VmPoweredOff { user }` | `VmPoweredOffEvent.userName` (empty: `None`) |
//!
//! Templates are left out. See the docs of [`VsphereBackend`] for how each action is done.

mod connect;
mod fault;
mod hooks;
mod hypervisor;
mod map;
mod mirror;
mod options;
mod props;
mod scope;
mod shared;
mod source;
mod storage;

pub use connect::{ConnectError, ConnectSettings, classify, connect};
pub use map::{backup_name, backup_source};
pub use options::{
    Attributes, Capacity, GuestAddress, GuestTargets, Hook, HostAddress, HostTargets, MemoryModel, Options,
    Priorities, PriorityRule, SpareHost, Targets, glob,
};
pub use vsphere_soap;

use std::sync::{Arc, Mutex};

use am_core::Clock;
use vsphere_soap::{Client, MoRef, PropertySpec};

/// Why a backend could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The configured datacenter or cluster does not exist (or is ambiguous).
    #[error("scope: {0}")]
    Scope(String),
    /// vCenter failed while looking it up.
    #[error("vCenter: {0}")]
    Vcenter(#[from] vsphere_soap::Error),
}

/// The vCenter backend: [`Hypervisor`](am_core::Hypervisor) and
/// [`InventorySource`](am_core::InventorySource). Cheap to clone; clones share the session, the
/// inventory feed and the VM identities.
///
/// Every action waits for its vCenter task (`WaitForUpdatesEx` on the task, up to
/// [`Options::task_timeout`]):
///
/// | action | vim25 |
/// |---|---|
/// | `power_on`, `power_off`, `reset` | `PowerOnVM_Task`, `PowerOffVM_Task`, `ResetVM_Task` |
/// | `migrate` live | `MigrateVM_Task` (pool only across clusters) |
/// | `migrate` cold | `PowerOffVM_Task` if on, `MigrateVM_Task`, `PowerOnVM_Task` |
/// | `revert_snapshot` | `RevertToSnapshot_Task` / `RevertToCurrentSnapshot_Task`, then `PowerOnVM_Task` if off |
/// | `create_snapshot`, `remove_snapshot` | `CreateSnapshot_Task` (no memory, no quiescing), `RemoveSnapshot_Task` (consolidate) |
/// | `clone_vm` | `CloneVM_Task` into the source's folder, named by [`backup_name`], powered off |
/// | `restore_clone` | power off and `UnregisterVM` the VM, `CloneVM_Task` of the backup under the VM's name, `PowerOnVM_Task` |
/// | `register_vm` | `UnregisterVM` where vCenter still lists it, `RegisterVM_Task` of its `.vmx` in the host's resource pool |
/// | `unregister_vm` | `UnregisterVM` |
/// | `failover` | as `register_vm`, then `PowerOnVM_Task` |
/// | `reconnect_host`, `remove_host` | `ReconnectHost_Task`, `Destroy_Task` |
/// | `enter_maintenance`, `exit_maintenance` | `EnterMaintenanceMode_Task`, `ExitMaintenanceMode_Task` |
/// | `add_host` | `AddHost_Task` to the spare's cluster ([`Options::spares`]) |
/// | `revive_host`, `fence_host` | [`Options::revive_hook`], [`Options::fence_hook`] (`NotSupported` without) |
///
/// A failover of a VM whose host vCenter cannot reach: vCenter keeps such a VM registered on the
/// host, with its last known power state. It refuses `UnregisterVM` while it believes the VM
/// powered on (`InvalidPowerState`), and `RegisterVM_Task` of a `.vmx` it already lists
/// (`AlreadyExists`). The adapter therefore unregisters first; when vCenter refuses because the
/// VM looks powered on and its host is not connected, it asks vCenter to power the VM off (the
/// supervisor only fails over from a host it found dead or fenced) and unregisters again. If
/// vCenter refuses that too (some versions refuse any operation on a VM of a host that is not
/// connected), the failover fails with `InvalidState`, naming the way out: remove the host from
/// vCenter (the supervisor does after its revival attempts), after which the VM is registered
/// anew.
#[derive(Clone)]
pub struct VsphereBackend {
    inner: Arc<Inner>,
}

/// An object's reference property (object, path) as read when.
pub(crate) type FixedRefs = std::collections::HashMap<(MoRef, &'static str), (std::time::Instant, MoRef)>;

pub(crate) struct Inner {
    pub client: Client,
    pub opts: Options,
    /// What the inventory is read under.
    pub scope: scope::Scope,
    pub time: map::TimeMap,
    pub shared: Mutex<shared::Shared>,
    pub source: tokio::sync::Mutex<source::State>,
    /// References that do not change in practice, as last read (see [`Inner::fixed_ref`]).
    pub fixed: Mutex<FixedRefs>,
}

impl std::fmt::Debug for VsphereBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VsphereBackend")
            .field("scope", &self.inner.scope)
            .field("options", &self.inner.opts)
            .finish_non_exhaustive()
    }
}

impl VsphereBackend {
    /// A backend on a connected (logged-in) client. `clock` is the engine's clock: event and
    /// snapshot times are converted to it. Looks the scope up (a datacenter or cluster named in
    /// `opts`), so a wrong name fails here.
    pub async fn new(client: Client, opts: Options, clock: Arc<dyn Clock>) -> Result<Self, SetupError> {
        let scope = scope::resolve(&client, &opts).await?;
        Ok(VsphereBackend {
            inner: Arc::new(Inner {
                time: map::TimeMap::now(&clock),
                client,
                opts,
                scope,
                shared: Mutex::new(shared::Shared::default()),
                source: tokio::sync::Mutex::new(source::State::default()),
                fixed: Mutex::default(),
            }),
        })
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The containers the hosts and VMs are read under (root folder, datacenter or clusters).
    pub fn roots(&self) -> &[MoRef] {
        &self.inner.scope.compute
    }

    /// The options.
    pub fn options(&self) -> &Options {
        &self.inner.opts
    }

    /// Before the first inventory of a restarted daemon: the VMs its journal says it was moving
    /// (an unfinished failover, registration or restore), as they were. A VM the old daemon had
    /// unregistered and not registered again is found nowhere in vCenter: it is shown, off, where
    /// it was, until a failover registers its `.vmx` again; one it had registered anew under a
    /// new managed object id is recognised by its `.vmx` path and keeps its id.
    pub fn adopt(&self, moving: &[am_core::Vm]) {
        let mut shared = self.inner.shared();
        for vm in moving {
            let Some(vmx) = vm.config_path.clone() else {
                continue;
            };
            tracing::info!(vm = %vm.id, vmx = %vmx, "unfinished move from before the restart: known by its .vmx");
            shared.add_orphan(
                &vm.id,
                shared::Orphan {
                    moref: vm.id.to_string(),
                    vmx,
                    name: vm.name.clone(),
                    folder: None,
                    host: vm
                        .host
                        .as_ref()
                        .map(|h| vsphere_soap::MoRef::new("HostSystem", h.as_str())),
                    keep_host: true,
                    ghost: Some(vm.clone()),
                },
            );
        }
    }
}

impl Inner {
    pub(crate) fn shared(&self) -> std::sync::MutexGuard<'_, shared::Shared> {
        self.shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The object named `name` among the objects of type `kind`.
pub(crate) async fn find_by_name(
    client: &Client,
    kind: &str,
    name: &str,
) -> Result<Option<MoRef>, vsphere_soap::Error> {
    let found = client
        .retrieve_inventory(vec![PropertySpec::new(kind, &["name"])])
        .await?;
    let mut matches = found
        .into_iter()
        .filter(|o| o.obj.kind == kind && o.get_str("name") == Some(name));
    Ok(matches.next().map(|o| o.obj))
}
