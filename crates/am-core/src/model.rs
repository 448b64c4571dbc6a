//! The inventory: hosts, VMs, datastores and snapshots as the manager sees them.

use crate::event::InventoryDelta;
use crate::ids::{DatastoreId, HostId, SnapshotId, VmId};
use crate::time::Time;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::{Add, AddAssign, Sub};

/// CPU and memory, as a capacity or a demand.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPU in MHz.
    pub cpu_mhz: u64,
    /// Memory in MiB.
    pub mem_mib: u64,
}

impl Resources {
    /// Nothing.
    pub const ZERO: Resources = Resources {
        cpu_mhz: 0,
        mem_mib: 0,
    };

    /// CPU in MHz and memory in MiB.
    pub const fn new(cpu_mhz: u64, mem_mib: u64) -> Self {
        Resources { cpu_mhz, mem_mib }
    }

    /// Whether `self` fits in `free`, in every dimension.
    pub fn fits_in(&self, free: &Resources) -> bool {
        self.cpu_mhz <= free.cpu_mhz && self.mem_mib <= free.mem_mib
    }

    /// `self - other`, floored at zero in every dimension.
    pub fn saturating_sub(&self, other: &Resources) -> Resources {
        Resources {
            cpu_mhz: self.cpu_mhz.saturating_sub(other.cpu_mhz),
            mem_mib: self.mem_mib.saturating_sub(other.mem_mib),
        }
    }
}

impl Add for Resources {
    type Output = Resources;
    fn add(self, o: Resources) -> Resources {
        Resources {
            cpu_mhz: self.cpu_mhz.saturating_add(o.cpu_mhz),
            mem_mib: self.mem_mib.saturating_add(o.mem_mib),
        }
    }
}

impl AddAssign for Resources {
    fn add_assign(&mut self, o: Resources) {
        *self = *self + o;
    }
}

impl Sub for Resources {
    type Output = Resources;
    fn sub(self, o: Resources) -> Resources {
        self.saturating_sub(&o)
    }
}

/// A host's connection to the management server, as vCenter reports it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ConnectionState {
    /// Managed and answering.
    Connected,
    /// Disconnected on purpose (by a person or by us).
    Disconnected,
    /// vCenter lost its heartbeat from the host.
    NotResponding,
}

/// A VM's power state.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PowerState {
    /// Running.
    PoweredOn,
    /// Off.
    PoweredOff,
    /// Suspended to disk.
    Suspended,
}

/// The guest heartbeat (VMware Tools) status.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum GuestHeartbeat {
    /// Heartbeats arrive.
    Green,
    /// Heartbeats are late.
    Yellow,
    /// Heartbeats stopped: the guest is hung or crashed.
    Red,
    /// No tools, or not known: not evidence either way.
    Gray,
}

/// Restart priority. `Disabled` means the VM is not protected: it is never restarted.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RestartPriority {
    /// Not protected.
    Disabled,
    /// Restarted last.
    Lowest,
    /// Low.
    Low,
    /// Medium (the default).
    Medium,
    /// High.
    High,
    /// Restarted first.
    Highest,
}

impl RestartPriority {
    /// Whether a VM with this priority is protected at all.
    pub fn is_protected(self) -> bool {
        self != RestartPriority::Disabled
    }
}

/// A hypervisor host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    /// Id.
    pub id: HostId,
    /// Display name.
    pub name: String,
    /// What VMs may use on it.
    pub capacity: Resources,
    /// Connection state in the management server.
    pub connection: ConnectionState,
    /// In maintenance mode: no new VMs go there.
    pub maintenance: bool,
    /// Failure domain (rack, chassis, power feed), if known.
    pub failure_domain: Option<String>,
    /// Management address to probe, if any.
    pub mgmt_address: Option<String>,
    /// Last time the host was seen writing its datastore heartbeat; `None` when there is no such
    /// signal. A host whose storage heartbeat is fresh is alive even if the network says otherwise.
    pub storage_heartbeat: Option<Time>,
    /// Set while the management server shows the host unhealthy though connected (vCenter: its
    /// overall status red, a red alarm such as a hardware health one): what it says. A
    /// predicted failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_alarm: Option<String>,
}

impl Host {
    /// A connected host with the given capacity and nothing else set.
    pub fn new(id: impl Into<HostId>, capacity: Resources) -> Self {
        let id = id.into();
        Host {
            name: id.as_str().to_owned(),
            id,
            capacity,
            connection: ConnectionState::Connected,
            maintenance: false,
            failure_domain: None,
            mgmt_address: None,
            storage_heartbeat: None,
            health_alarm: None,
        }
    }

    /// Whether new VMs may be placed here.
    pub fn accepts_vms(&self) -> bool {
        self.connection == ConnectionState::Connected && !self.maintenance
    }
}

/// A virtual machine.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Vm {
    /// Id.
    pub id: VmId,
    /// Display name.
    pub name: String,
    /// What it needs to run (reservation or configured size).
    pub demand: Resources,
    /// Power state.
    pub power: PowerState,
    /// The host it is registered on.
    pub host: Option<HostId>,
    /// Restart priority; `Disabled` means not protected.
    pub priority: RestartPriority,
    /// VMs with the same affinity group should run on one host.
    pub affinity_group: Option<String>,
    /// VMs with the same anti-affinity group must run on different hosts.
    pub anti_affinity_group: Option<String>,
    /// Guest address to probe, if any.
    pub guest_address: Option<String>,
    /// Guest (tools) heartbeat.
    pub heartbeat: GuestHeartbeat,
    /// Latest CPU usage sample in MHz, if known. Zero for long while powered on means hung.
    pub cpu_usage_mhz: Option<u64>,
    /// The datastore its files live on.
    pub datastore: Option<DatastoreId>,
    /// Set on backup clones made by the manager: the VM this one is a copy of. Never protected.
    pub backup_of: Option<VmId>,
    /// Where its configuration lives (vCenter: the `.vmx` path, `[datastore] dir/name.vmx`): what
    /// finds it again after it was registered anew, and what a lock is checked on.
    #[serde(default)]
    pub config_path: Option<String>,
    /// Its instance UUID, kept across re-registration.
    #[serde(default)]
    pub instance_uuid: Option<String>,
    /// Whether the backup cache keeps snapshots and clones of it.
    #[serde(default = "yes")]
    pub backup: bool,
    /// The space its files take on its datastore in MiB (vCenter: `summary.storage.committed`),
    /// if known: what a storage evacuation needs free elsewhere.
    #[serde(default)]
    pub storage_mib: Option<u64>,
}

fn yes() -> bool {
    true
}

impl Vm {
    /// A powered-on, medium-priority VM on `host` with nothing else set.
    pub fn new(id: impl Into<VmId>, demand: Resources, host: impl Into<HostId>) -> Self {
        let id = id.into();
        Vm {
            name: id.as_str().to_owned(),
            id,
            demand,
            power: PowerState::PoweredOn,
            host: Some(host.into()),
            priority: RestartPriority::Medium,
            affinity_group: None,
            anti_affinity_group: None,
            guest_address: None,
            heartbeat: GuestHeartbeat::Green,
            cpu_usage_mhz: None,
            datastore: None,
            backup_of: None,
            config_path: None,
            instance_uuid: None,
            backup: true,
            storage_mib: None,
        }
    }

    /// Whether the manager keeps this VM running.
    pub fn is_protected(&self) -> bool {
        self.priority.is_protected() && self.backup_of.is_none()
    }
}

/// A datastore.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Datastore {
    /// Id.
    pub id: DatastoreId,
    /// Display name.
    pub name: String,
    /// Capacity in MiB.
    pub capacity_mib: u64,
    /// Free space in MiB.
    pub free_mib: u64,
    /// Hosts that mount it.
    pub hosts: Vec<HostId>,
}

/// A snapshot of a VM.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Snapshot {
    /// Id.
    pub id: SnapshotId,
    /// The VM it belongs to.
    pub vm: VmId,
    /// Name.
    pub name: String,
    /// When it was taken.
    pub created: Time,
}

/// Everything the manager knows about the cluster, kept current by [`InventoryDelta`]s.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// Hosts by id.
    pub hosts: BTreeMap<HostId, Host>,
    /// VMs by id.
    pub vms: BTreeMap<VmId, Vm>,
    /// Datastores by id.
    pub datastores: BTreeMap<DatastoreId, Datastore>,
    /// Snapshots per VM, oldest first.
    pub snapshots: BTreeMap<VmId, Vec<Snapshot>>,
}

impl Inventory {
    /// Applies one change.
    pub fn apply(&mut self, delta: &InventoryDelta) {
        match delta {
            InventoryDelta::HostUpsert(h) => {
                self.hosts.insert(h.id.clone(), h.clone());
            }
            InventoryDelta::HostRemoved(id) => {
                self.hosts.remove(id);
            }
            InventoryDelta::VmUpsert(vm) => {
                let mut vm = vm.clone();
                share_vm_ids(&self.hosts, &self.datastores, &mut vm);
                self.vms.insert(vm.id.clone(), vm);
            }
            InventoryDelta::VmRemoved(id) => {
                self.vms.remove(id);
                self.snapshots.remove(id);
            }
            InventoryDelta::DatastoreUpsert(ds) => {
                self.datastores.insert(ds.id.clone(), ds.clone());
            }
            InventoryDelta::Snapshots { vm, snapshots } => {
                if snapshots.is_empty() {
                    self.snapshots.remove(vm);
                } else {
                    self.snapshots.insert(vm.clone(), snapshots.clone());
                }
            }
        }
    }

    /// Points every VM's host and datastore id, and every datastore's host ids, at the
    /// inventory's own keys: one allocation per host and datastore however many VMs name it
    /// (a mapper makes a fresh id for each VM it reads). [`Inventory::apply`] does it for the
    /// VMs it is given.
    pub fn share_ids(&mut self) {
        for vm in self.vms.values_mut() {
            share_vm_ids(&self.hosts, &self.datastores, vm);
        }
        for ds in self.datastores.values_mut() {
            for h in &mut ds.hosts {
                share_id(&self.hosts, h);
            }
        }
    }

    /// VMs registered on `host`.
    pub fn vms_on<'a>(&'a self, host: &'a HostId) -> impl Iterator<Item = &'a Vm> + 'a {
        self.vms.values().filter(move |vm| vm.host.as_ref() == Some(host))
    }

    /// What the powered-on VMs on `host` use.
    pub fn used(&self, host: &HostId) -> Resources {
        self.vms_on(host)
            .filter(|vm| vm.power == PowerState::PoweredOn)
            .fold(Resources::ZERO, |acc, vm| acc + vm.demand)
    }

    /// [`Inventory::used`] of every host a powered-on VM names, in one pass over the VMs.
    pub fn used_by_host(&self) -> BTreeMap<&HostId, Resources> {
        let mut used: BTreeMap<&HostId, Resources> = BTreeMap::new();
        for vm in self.vms.values().filter(|vm| vm.power == PowerState::PoweredOn) {
            if let Some(h) = &vm.host {
                *used.entry(h).or_insert(Resources::ZERO) += vm.demand;
            }
        }
        used
    }

    /// What is free on `host` (zero if the host is unknown).
    pub fn free(&self, host: &HostId) -> Resources {
        match self.hosts.get(host) {
            Some(h) => h.capacity.saturating_sub(&self.used(host)),
            None => Resources::ZERO,
        }
    }

    /// The newest snapshot of `vm`, if any.
    pub fn latest_snapshot(&self, vm: &VmId) -> Option<&Snapshot> {
        self.snapshots
            .get(vm)
            .and_then(|s| s.iter().max_by_key(|s| s.created))
    }

    /// The newest backup clone of `vm`, if any.
    pub fn latest_clone(&self, vm: &VmId) -> Option<&Vm> {
        self.vms
            .values()
            .filter(|c| c.backup_of.as_ref() == Some(vm))
            .max_by(|a, b| Inventory::clone_age(a, b))
    }

    /// Orders clones oldest first: by id, a longer id being newer (`vm-99` before `vm-100`, as
    /// vCenter numbers its objects).
    pub fn clone_age(a: &Vm, b: &Vm) -> std::cmp::Ordering {
        (a.id.as_str().len(), a.id.as_str()).cmp(&(b.id.as_str().len(), b.id.as_str()))
    }
}

/// Points `vm`'s host and datastore ids at the keys of `hosts` and `datastores` (see
/// [`Inventory::share_ids`]).
fn share_vm_ids(hosts: &BTreeMap<HostId, Host>, datastores: &BTreeMap<DatastoreId, Datastore>, vm: &mut Vm) {
    if let Some(h) = vm.host.as_mut() {
        share_id(hosts, h);
    }
    if let Some(d) = vm.datastore.as_mut() {
        share_id(datastores, d);
    }
}

/// Replaces `id` by the equal key of `known`, if there is one: the same string, one allocation.
fn share_id<K: Ord + Clone + std::borrow::Borrow<str>, V>(known: &BTreeMap<K, V>, id: &mut K) {
    if let Some((k, _)) = known.get_key_value(id.borrow()) {
        *id = k.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether two ids are one allocation (a shared id), not only equal.
    fn same_allocation(a: &str, b: &str) -> bool {
        std::ptr::eq(a.as_ptr(), b.as_ptr())
    }

    #[test]
    fn vms_share_their_host_and_datastore_ids_with_the_inventory() {
        let mut inv = Inventory::default();
        inv.apply(&InventoryDelta::HostUpsert(Host::new(
            "h1",
            Resources::new(10_000, 65_536),
        )));
        inv.apply(&InventoryDelta::DatastoreUpsert(Datastore {
            id: "ds1".into(),
            name: "ds1".into(),
            capacity_mib: 1,
            free_mib: 1,
            hosts: vec!["h1".into()],
        }));
        // A mapper makes fresh ids for every VM it reads.
        let mut vm = Vm::new("a", Resources::new(1, 1), "h1");
        vm.datastore = Some("ds1".into());
        inv.apply(&InventoryDelta::VmUpsert(vm.clone()));
        let host_key = inv.hosts.keys().next().map(HostId::as_str).unwrap_or_default();
        let ds_key = inv
            .datastores
            .keys()
            .next()
            .map(DatastoreId::as_str)
            .unwrap_or_default();
        let a = &inv.vms["a"];
        assert_eq!(a.host.as_ref().map(HostId::as_str), Some("h1"));
        assert!(
            a.host
                .as_ref()
                .is_some_and(|h| same_allocation(h.as_str(), host_key))
        );
        assert!(
            a.datastore
                .as_ref()
                .is_some_and(|d| same_allocation(d.as_str(), ds_key))
        );
        // An inventory assembled whole (the vCenter mirror's) is shared by `share_ids`.
        let mut whole = inv.clone();
        whole.vms.insert("b".into(), Vm { id: "b".into(), ..vm });
        whole
            .datastores
            .values_mut()
            .for_each(|d| d.hosts = vec!["h1".into()]);
        assert!(!same_allocation(
            whole.vms["b"].host.as_ref().map_or("", HostId::as_str),
            host_key
        ));
        whole.share_ids();
        let b = &whole.vms["b"];
        assert!(
            b.host
                .as_ref()
                .is_some_and(|h| same_allocation(h.as_str(), host_key))
        );
        assert!(same_allocation(
            whole.datastores["ds1"].hosts[0].as_str(),
            host_key
        ));
    }

    #[test]
    fn free_counts_only_powered_on_vms() {
        let mut inv = Inventory::default();
        inv.apply(&InventoryDelta::HostUpsert(Host::new(
            "h1",
            Resources::new(10_000, 65_536),
        )));
        inv.apply(&InventoryDelta::VmUpsert(Vm::new(
            "a",
            Resources::new(2_000, 4_096),
            "h1",
        )));
        let mut off = Vm::new("b", Resources::new(2_000, 4_096), "h1");
        off.power = PowerState::PoweredOff;
        inv.apply(&InventoryDelta::VmUpsert(off));
        assert_eq!(inv.free(&"h1".into()), Resources::new(8_000, 61_440));
        inv.apply(&InventoryDelta::HostUpsert(Host::new(
            "h2",
            Resources::new(1_000, 1_024),
        )));
        let used = inv.used_by_host();
        assert_eq!(used.len(), 1, "h2 runs nothing");
        assert_eq!(used[&HostId::from("h1")], inv.used(&"h1".into()));
        assert_eq!(inv.vms_on(&"h1".into()).count(), 2);
        inv.apply(&InventoryDelta::VmRemoved("a".into()));
        assert_eq!(inv.free(&"h1".into()), Resources::new(10_000, 65_536));
    }

    #[test]
    fn resources_fit_in_every_dimension() {
        let free = Resources::new(1_000, 1_000);
        assert!(Resources::new(1_000, 1_000).fits_in(&free));
        assert!(!Resources::new(1_001, 10).fits_in(&free));
        assert!(!Resources::new(10, 1_001).fits_in(&free));
    }

    #[test]
    fn backup_clones_are_never_protected() {
        let mut vm = Vm::new("c", Resources::ZERO, "h1");
        assert!(vm.is_protected());
        vm.backup_of = Some("a".into());
        assert!(!vm.is_protected());
    }
}
