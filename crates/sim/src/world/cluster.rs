//! The truth's shared rules: looking hosts and VMs up, the checks operations share (managed home,
//! placement target, capacity, datastores and mounts, file locks), booting a VM (which faults a
//! boot clears), snapshots and clones as they are made, and the truth queries. Touches the truth;
//! a boot also queues its power-on event in the feed and may record a user's power-off overridden.

use super::World;
use crate::fault::FaultDepth;
use crate::spec::HostSpec;
use crate::truth::{GuestState, HostCondition, HostTruth, SnapshotTruth, Violation, VmFault, VmTruth};
use am_core::{
    DatastoreId, EventKind, HostId, HvError, Resources, RestartPriority, Snapshot, SnapshotId, Time, VmId,
};
use std::collections::BTreeSet;

/// The truth about one datastore.
#[derive(Clone, Debug)]
pub(super) struct DsTruth {
    pub(super) id: DatastoreId,
    pub(super) capacity_mib: u64,
    /// `None`: every host.
    pub(super) hosts: Option<BTreeSet<HostId>>,
}

/// How a VM boots, which decides which faults the boot clears.
#[derive(Clone, Debug)]
pub(super) enum Boot {
    /// Power on, reset, migration, failover: clears transient faults (and host-local ones when
    /// on another host).
    Plain,
    /// Revert to a snapshot: also clears a corrupt disk if the snapshot is good.
    Revert { good: bool },
    /// Restore from a clone: the disk becomes the clone's.
    Restore { disk: Option<VmFault> },
}

/// The error of a call on a host vCenter cannot manage.
pub(super) fn unreachable_host(host: &HostId, cond: HostCondition) -> HvError {
    HvError::Unreachable {
        target: host.to_string(),
        detail: format!("host is not responding ({cond})"),
    }
}

/// A new host as `h` describes it, up, its heartbeat written at `now`.
pub(super) fn host_truth(id: &str, h: &HostSpec, now: Time) -> HostTruth {
    HostTruth {
        id: HostId::new(id),
        capacity: h.capacity(),
        failure_domain: h.failure_domain.clone(),
        mgmt_address: h.mgmt_address.clone(),
        condition: HostCondition::Up,
        removed: false,
        maintenance: false,
        health_alarm: None,
        last_heartbeat: now,
        spare: false,
        mounted: BTreeSet::new(),
    }
}

impl World {
    /// Stops every VM instance running on `host`.
    pub(super) fn stop_all_on(&mut self, host: &HostId) {
        for vm in self.vms.values_mut() {
            vm.running_on.retain(|h| h != host);
        }
    }

    /// A VM in the inventory.
    pub(super) fn vm(&self, id: &VmId) -> Result<&VmTruth, HvError> {
        self.vms
            .get(id)
            .filter(|v| v.listed)
            .ok_or_else(|| HvError::not_found("vm", id))
    }

    /// A VM in the inventory, to change.
    pub(super) fn vm_mut(&mut self, id: &VmId) -> Result<&mut VmTruth, HvError> {
        self.vms
            .get_mut(id)
            .filter(|v| v.listed)
            .ok_or_else(|| HvError::not_found("vm", id))
    }

    /// A host in the inventory (not removed).
    pub(super) fn host(&self, id: &HostId) -> Result<&HostTruth, HvError> {
        self.hosts
            .get(id)
            .filter(|h| !h.removed)
            .ok_or_else(|| HvError::not_found("host", id))
    }

    /// A host in the inventory (not removed), to change.
    pub(super) fn host_mut(&mut self, id: &HostId) -> Result<&mut HostTruth, HvError> {
        self.hosts
            .get_mut(id)
            .filter(|h| !h.removed)
            .ok_or_else(|| HvError::not_found("host", id))
    }

    /// The host a VM is registered on, which vCenter must be able to manage.
    pub(super) fn managed_home(&self, vm: &VmId) -> Result<HostId, HvError> {
        let v = self.vm(vm)?;
        let host = v
            .registered
            .clone()
            .ok_or_else(|| HvError::invalid_state(vm, "not registered on any host"))?;
        let h = self.host(&host)?;
        if !h.condition.is_managed() {
            return Err(unreachable_host(&host, h.condition));
        }
        Ok(host)
    }

    /// A host VMs may be placed on: in the inventory, managed, not in maintenance.
    pub(super) fn placement_target(&self, host: &HostId) -> Result<(), HvError> {
        let h = self.host(host)?;
        if !h.condition.is_managed() {
            return Err(unreachable_host(host, h.condition));
        }
        if h.maintenance {
            return Err(HvError::invalid_state(host, "host is in maintenance mode"));
        }
        Ok(())
    }

    /// Whether `vm` fits on `host` next to what already runs there (its own copy aside).
    pub(super) fn check_capacity(&self, host: &HostId, vm: &VmId) -> Result<(), HvError> {
        if !self.cfg.enforce_capacity {
            return Ok(());
        }
        let (Some(h), Some(v)) = (self.hosts.get(host), self.vms.get(vm)) else {
            return Ok(());
        };
        let used = self
            .vms
            .values()
            .filter(|o| o.id != *vm && o.running_on.contains(host))
            .fold(Resources::ZERO, |a, o| a + o.demand);
        let free = h.capacity - used;
        if v.demand.fits_in(&free) {
            Ok(())
        } else {
            Err(HvError::InsufficientResources {
                host: host.to_string(),
                detail: format!(
                    "{vm} needs {} MHz / {} MiB, {} MHz / {} MiB free",
                    v.demand.cpu_mhz, v.demand.mem_mib, free.cpu_mhz, free.mem_mib
                ),
            })
        }
    }

    /// Whether `vm` runs on the host it is registered on.
    pub(super) fn is_on_at_home(&self, vm: &VmId) -> bool {
        self.vms
            .get(vm)
            .is_some_and(|v| v.registered.as_ref().is_some_and(|h| v.running_on.contains(h)))
    }

    /// Starts `vm` on `host` (registering it there), clearing the faults this kind of boot clears.
    pub(super) fn boot(
        &mut self,
        now: Time,
        vm: &VmId,
        host: &HostId,
        how: Boot,
        user: Option<String>,
        event: bool,
    ) {
        let manager = user.as_deref() == Some(self.cfg.manager_user.as_str());
        let Some(v) = self.vms.get_mut(vm) else { return };
        let mut fault = v.fault.take();
        match how {
            Boot::Plain => {}
            Boot::Revert { good } => {
                if good && fault.as_ref().is_some_and(|f| f.depth == FaultDepth::Corrupt) {
                    fault = None;
                }
            }
            Boot::Restore { disk } => {
                let stays_host_local = fault
                    .as_ref()
                    .is_some_and(|f| f.depth == FaultDepth::HostLocal && f.host.as_ref() == Some(host));
                if !stays_host_local {
                    fault = disk;
                }
            }
        }
        let cleared = match &fault {
            Some(f) => match f.depth {
                FaultDepth::Transient => true,
                FaultDepth::HostLocal => f.host.as_ref() != Some(host),
                FaultDepth::Corrupt | FaultDepth::DiskLost => false,
            },
            None => false,
        };
        if cleared {
            fault = None;
        }
        v.guest = match &fault {
            None => GuestState::Ok,
            Some(f) if f.hang => GuestState::Hung,
            Some(_) => GuestState::Crashed,
        };
        v.fault = fault;
        v.guest_since = now;
        if !v.running_on.contains(host) {
            v.running_on.push(host.clone());
        }
        v.registered = Some(host.clone());
        if let Some((who, off_at)) = v.user_off.take()
            && manager
        {
            self.record.violation(Violation::UserPowerOffOverridden {
                vm: vm.clone(),
                user: who,
                powered_off_at: off_at,
                powered_on_at: now,
            });
        }
        if event {
            self.feed.event(EventKind::VmPoweredOn { vm: vm.clone(), user });
        }
    }

    /// The user of the manager's operations.
    pub(super) fn manager(&self) -> Option<String> {
        Some(self.cfg.manager_user.clone())
    }

    /// Takes a snapshot of `vm` (good while its disk has no fault).
    pub(super) fn add_snapshot(&mut self, vm: &VmId, name: &str, now: Time) -> SnapshotId {
        let id = SnapshotId::new(format!("snap-{}", self.next_snapshot));
        self.next_snapshot += 1;
        if let Some(v) = self.vms.get_mut(vm) {
            let good = !v.fault.as_ref().is_some_and(|f| f.depth.is_disk());
            v.snapshots.push(SnapshotTruth {
                snapshot: Snapshot {
                    id: id.clone(),
                    vm: vm.clone(),
                    name: name.to_owned(),
                    created: now,
                },
                good,
            });
        }
        id
    }

    /// Makes a powered-off backup clone of `src` on `host`, which copies its disk faults.
    pub(super) fn make_clone(
        &mut self,
        src: &VmId,
        name: &str,
        host: &HostId,
        ds: Option<DatastoreId>,
    ) -> VmId {
        let mut id = VmId::new(format!("{src}-clone-{:04}", self.next_clone));
        while self.vms.contains_key(&id) {
            self.next_clone += 1;
            id = VmId::new(format!("{src}-clone-{:04}", self.next_clone));
        }
        self.next_clone += 1;
        let Some(s) = self.vms.get(src) else { return id };
        let clone = VmTruth {
            id: id.clone(),
            name: name.to_owned(),
            demand: s.demand,
            priority: RestartPriority::Disabled,
            affinity_group: None,
            anti_affinity_group: None,
            guest_address: None,
            datastore: ds.or_else(|| s.datastore.clone()),
            storage_mib: s.storage_mib,
            backup_of: Some(src.clone()),
            registered: Some(host.clone()),
            running_on: Vec::new(),
            guest: GuestState::Ok,
            guest_since: Time::ZERO,
            fault: s.fault.clone().filter(|f| f.depth.is_disk()),
            snapshots: Vec::new(),
            user_off: None,
            listed: true,
            cpu_usage: s.cpu_usage,
        };
        self.vms.insert(id.clone(), clone);
        id
    }

    /// Whether `host` mounts datastore `ds`: listed in its spec, or shared by the original hosts,
    /// or mounted on it since.
    pub(super) fn mounts(&self, host: &HostId, ds: &DatastoreId) -> bool {
        let Some(h) = self.hosts.get(host) else {
            return false;
        };
        if h.mounted.contains(ds) {
            return true;
        }
        match self.datastores.get(ds).map(|d| &d.hosts) {
            Some(Some(set)) => set.contains(host),
            Some(None) => !h.spare,
            None => false,
        }
    }

    /// Refuses to start `vm` on `host` while another host still runs it (its files are locked
    /// there), or when `host` does not mount the VM's datastore.
    pub(super) fn check_files(&self, vm: &VmId, host: &HostId) -> Result<(), HvError> {
        let v = self.vm(vm)?;
        if let Some(holder) = v
            .running_on
            .iter()
            .find(|h| *h != host)
            .filter(|_| self.cfg.file_locks)
        {
            return Err(HvError::Locked {
                id: vm.to_string(),
                file: format!("{}/{}.vmx (held by {holder})", v.name, v.name),
            });
        }
        self.check_datastore(vm, host)
    }

    /// What is free on datastore `ds` in MiB: 60 % of its capacity (the rest holds other files)
    /// less what the VMs' files there take.
    pub(super) fn ds_free(&self, ds: &DsTruth) -> u64 {
        let used: u64 = self
            .vms
            .values()
            .filter(|v| v.listed && v.datastore.as_ref() == Some(&ds.id))
            .filter_map(|v| v.storage_mib)
            .sum();
        (ds.capacity_mib / 5 * 3).saturating_sub(used)
    }

    /// Refuses `host` for `vm` when it does not mount the VM's datastore.
    pub(super) fn check_datastore(&self, vm: &VmId, host: &HostId) -> Result<(), HvError> {
        let v = self.vm(vm)?;
        if let Some(ds) = &v.datastore
            && !self.mounts(host, ds)
        {
            return Err(HvError::invalid_state(
                vm,
                format!("datastore {ds} is not mounted on {host}"),
            ));
        }
        Ok(())
    }

    /// The truth about a VM (removed ones included).
    pub fn vm_truth(&self, vm: &VmId) -> Option<&VmTruth> {
        self.vms.get(vm)
    }

    /// The truth about every VM.
    pub fn vm_truths(&self) -> impl Iterator<Item = &VmTruth> {
        self.vms.values()
    }

    /// The truth about a host (removed ones included).
    pub fn host_truth(&self, host: &HostId) -> Option<&HostTruth> {
        self.hosts.get(host)
    }

    /// The truth about every host.
    pub fn host_truths(&self) -> impl Iterator<Item = &HostTruth> {
        self.hosts.values()
    }
}
