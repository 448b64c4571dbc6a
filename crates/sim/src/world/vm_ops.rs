//! Hypervisor operations on VMs: power on/off, reset, snapshots (revert, create, remove), clone,
//! restore from a clone, live and cold migration, failover, register/unregister, deleting a backup
//! clone, and looking at a VM's file locks. Each checks its preconditions against the truth (with
//! the rules of `cluster.rs`), then changes it; it may queue events and notes in the feed.

use super::World;
use super::cluster::{Boot, unreachable_host};
use crate::truth::{GuestState, VmFault};
use am_core::{DatastoreId, EventKind, HostId, HvError, SnapshotId, Time, VmId};

impl World {
    pub fn power_on(&mut self, now: Time, vm: &VmId) -> Result<(), HvError> {
        let host = self.managed_home(vm)?;
        if self.is_on_at_home(vm) {
            return Err(HvError::invalid_state(vm, "already powered on"));
        }
        if self.host(&host)?.maintenance {
            return Err(HvError::invalid_state(&host, "host is in maintenance mode"));
        }
        self.check_files(vm, &host)?;
        self.check_capacity(&host, vm)?;
        let user = self.manager();
        self.boot(now, vm, &host, Boot::Plain, user, true);
        Ok(())
    }

    pub fn power_off(&mut self, _now: Time, vm: &VmId) -> Result<(), HvError> {
        let host = self.managed_home(vm)?;
        if !self.is_on_at_home(vm) {
            return Err(HvError::invalid_state(vm, "already powered off"));
        }
        self.vm_mut(vm)?.running_on.retain(|h| *h != host);
        let user = self.manager();
        self.feed.event(EventKind::VmPoweredOff { vm: vm.clone(), user });
        Ok(())
    }

    pub fn reset(&mut self, now: Time, vm: &VmId) -> Result<(), HvError> {
        let host = self.managed_home(vm)?;
        if !self.is_on_at_home(vm) {
            return Err(HvError::invalid_state(vm, "powered off: cannot reset"));
        }
        let user = self.manager();
        self.boot(now, vm, &host, Boot::Plain, user, false);
        self.note(format!("vm {vm} reset by {}", self.cfg.manager_user));
        Ok(())
    }

    pub fn revert_snapshot(
        &mut self,
        now: Time,
        vm: &VmId,
        snapshot: Option<&SnapshotId>,
    ) -> Result<(), HvError> {
        let host = self.managed_home(vm)?;
        let v = self.vm(vm)?;
        let snap = match snapshot {
            Some(id) => v.snapshots.iter().find(|s| s.snapshot.id == *id),
            None => v.snapshots.iter().max_by_key(|s| s.snapshot.created),
        }
        .cloned()
        .ok_or_else(|| {
            HvError::not_found(
                "snapshot",
                snapshot.map_or_else(|| format!("current of {vm}"), |s| s.to_string()),
            )
        })?;
        let was_on = self.is_on_at_home(vm);
        if !was_on {
            if self.host(&host)?.maintenance {
                return Err(HvError::invalid_state(&host, "host is in maintenance mode"));
            }
            self.check_capacity(&host, vm)?;
        }
        let user = self.manager();
        self.boot(now, vm, &host, Boot::Revert { good: snap.good }, user, !was_on);
        self.note(format!(
            "vm {vm} reverted to snapshot {} ({}) by {}",
            snap.snapshot.id, snap.snapshot.name, self.cfg.manager_user
        ));
        Ok(())
    }

    pub fn create_snapshot(&mut self, now: Time, vm: &VmId, name: &str) -> Result<SnapshotId, HvError> {
        self.managed_home(vm)?;
        Ok(self.add_snapshot(vm, name, now))
    }

    pub fn remove_snapshot(&mut self, _now: Time, vm: &VmId, snapshot: &SnapshotId) -> Result<(), HvError> {
        self.managed_home(vm)?;
        let v = self.vm_mut(vm)?;
        let before = v.snapshots.len();
        v.snapshots.retain(|s| s.snapshot.id != *snapshot);
        if v.snapshots.len() == before {
            return Err(HvError::not_found("snapshot", snapshot));
        }
        Ok(())
    }

    pub fn clone_vm(
        &mut self,
        _now: Time,
        vm: &VmId,
        name: &str,
        host: &HostId,
        datastore: Option<DatastoreId>,
    ) -> Result<VmId, HvError> {
        if self.vm(vm)?.registered.is_some() {
            self.managed_home(vm)?;
        }
        self.placement_target(host)?;
        if let Some(ds) = &datastore {
            let d = self
                .datastores
                .get(ds)
                .ok_or_else(|| HvError::not_found("datastore", ds))?;
            if d.hosts.as_ref().is_some_and(|set| !set.contains(host)) {
                return Err(HvError::invalid_state(ds, format!("not mounted on {host}")));
            }
        }
        let id = self.make_clone(vm, name, host, datastore);
        self.note(format!("vm {vm} cloned as {id} ({name}) on {host}"));
        Ok(id)
    }

    pub fn restore_clone(
        &mut self,
        now: Time,
        vm: &VmId,
        backup: &VmId,
        host: &HostId,
    ) -> Result<(), HvError> {
        let v = self.vm(vm)?;
        let old_home = v.registered.clone();
        if old_home.is_some() {
            self.managed_home(vm)?;
        }
        let b = self.vm(backup)?;
        if b.backup_of.as_ref() != Some(vm) {
            return Err(HvError::invalid_state(backup, format!("not a backup of {vm}")));
        }
        if b.is_running() {
            return Err(HvError::invalid_state(backup, "the backup clone is powered on"));
        }
        let disk = b.fault.clone().map(|f| VmFault { since: now, ..f });
        self.placement_target(host)?;
        self.check_capacity(host, vm)?;
        let user = self.manager();
        if self.is_on_at_home(vm)
            && let Some(h) = &old_home
        {
            self.vm_mut(vm)?.running_on.retain(|x| x != h);
            self.feed.event(EventKind::VmPoweredOff {
                vm: vm.clone(),
                user: user.clone(),
            });
        }
        self.boot(now, vm, host, Boot::Restore { disk }, user, true);
        self.note(format!("vm {vm} restored from {backup} on {host}"));
        Ok(())
    }

    pub fn migrate(&mut self, now: Time, vm: &VmId, to: &HostId, live: bool) -> Result<(), HvError> {
        let from = self.managed_home(vm)?;
        self.placement_target(to)?;
        if from == *to {
            return Err(HvError::invalid_state(vm, format!("already on {to}")));
        }
        self.check_datastore(vm, to)?;
        self.check_capacity(to, vm)?;
        let was_on = self.is_on_at_home(vm);
        let user = self.manager();
        if live {
            let v = self.vm(vm)?;
            if !was_on || v.guest != GuestState::Ok {
                return Err(HvError::invalid_state(
                    vm,
                    "live migration needs a powered-on VM with a healthy guest",
                ));
            }
            let v = self.vm_mut(vm)?;
            v.running_on.retain(|h| *h != from);
            v.running_on.push(to.clone());
            v.registered = Some(to.clone());
            self.note(format!("vm {vm} migrated live from {from} to {to}"));
        } else {
            if was_on {
                self.vm_mut(vm)?.running_on.retain(|h| *h != from);
                self.feed.event(EventKind::VmPoweredOff {
                    vm: vm.clone(),
                    user: user.clone(),
                });
            }
            self.boot(now, vm, to, Boot::Plain, user, true);
            self.note(format!("vm {vm} migrated cold from {from} to {to}"));
        }
        Ok(())
    }

    /// Moves `vm`'s registration to `host` and/or its files to `ds`, its power unchanged (a
    /// running VM moves live). Refused when the datastore is unknown, not mounted by the host
    /// it ends on, or has no room for its files; or the host is no placement target, or has no
    /// room for it running.
    pub fn relocate(
        &mut self,
        _now: Time,
        vm: &VmId,
        host: Option<&HostId>,
        ds: Option<&DatastoreId>,
    ) -> Result<(), HvError> {
        let from = self.managed_home(vm)?;
        let to = host.cloned().unwrap_or_else(|| from.clone());
        if host.is_none() && ds.is_none() {
            return Err(HvError::invalid_state(
                vm,
                "relocate to nowhere: no host and no datastore",
            ));
        }
        if to != from {
            self.placement_target(&to)?;
            if self.is_on_at_home(vm) {
                self.check_capacity(&to, vm)?;
            }
        }
        let v = self.vm(vm)?;
        let size = v.storage_mib.unwrap_or(0);
        let files = ds.cloned().or_else(|| v.datastore.clone());
        if let Some(d) = ds.filter(|d| v.datastore.as_ref() != Some(*d)) {
            let truth = self
                .datastores
                .get(d)
                .ok_or_else(|| HvError::not_found("datastore", d))?;
            let free = self.ds_free(truth);
            if free < size {
                return Err(HvError::InsufficientResources {
                    host: to.to_string(),
                    detail: format!("datastore {d} has {free} MiB free, {vm} needs {size} MiB"),
                });
            }
        }
        if let Some(d) = &files
            && !self.mounts(&to, d)
        {
            return Err(HvError::invalid_state(
                vm,
                format!("datastore {d} is not mounted on {to}"),
            ));
        }
        let on = self.is_on_at_home(vm);
        let v = self.vm_mut(vm)?;
        let old = std::mem::replace(&mut v.datastore, files.clone());
        if to != from {
            v.registered = Some(to.clone());
            if on {
                v.running_on.retain(|h| *h != from);
                v.running_on.push(to.clone());
            }
        }
        let show = |d: &Option<DatastoreId>| d.as_ref().map_or_else(|| "-".to_owned(), |d| d.to_string());
        self.note(format!(
            "vm {vm} relocated from {from} [{}] to {to} [{}]",
            show(&old),
            show(&files)
        ));
        Ok(())
    }

    /// Registers `vm` on `to` and powers it on there. A VM that still runs on a host vCenter
    /// cannot reach holds its files locked: the power-on fails with `Locked` (the lock is the last
    /// guard against split brain; the manager must not count on it).
    pub fn failover(&mut self, now: Time, vm: &VmId, to: &HostId) -> Result<(), HvError> {
        let v = self.vm(vm)?;
        if let Some(home) = &v.registered
            && let Some(h) = self.hosts.get(home).filter(|h| !h.removed)
            && h.condition.is_managed()
            && v.running_on.contains(home)
        {
            return Err(HvError::invalid_state(vm, format!("powered on on {home}")));
        }
        self.placement_target(to)?;
        self.check_files(vm, to)?;
        self.check_capacity(to, vm)?;
        let from = v.registered.clone();
        let user = self.manager();
        self.boot(now, vm, to, Boot::Plain, user, true);
        let from = from.map_or_else(|| "nowhere".to_owned(), |h| h.to_string());
        self.note(format!("vm {vm} failed over from {from} to {to}"));
        Ok(())
    }

    pub fn register_vm(&mut self, _now: Time, vm: &VmId, host: &HostId) -> Result<(), HvError> {
        let v = self.vm(vm)?;
        if let Some(home) = &v.registered
            && self.host(home).is_ok_and(|h| h.condition.is_managed())
        {
            return Err(HvError::invalid_state(
                vm,
                format!("already registered on {home}"),
            ));
        }
        let h = self.host(host)?;
        if !h.condition.is_managed() {
            return Err(unreachable_host(host, h.condition));
        }
        self.vm_mut(vm)?.registered = Some(host.clone());
        self.note(format!("vm {vm} registered on {host}"));
        Ok(())
    }

    /// Deletes one of the manager's backup clones (never anything else, never a running one).
    pub fn delete_backup(&mut self, _now: Time, vm: &VmId) -> Result<(), HvError> {
        let v = self.vm(vm)?;
        if v.backup_of.is_none() {
            return Err(HvError::invalid_state(vm, "not a backup clone: never deleted"));
        }
        if !v.running_on.is_empty() {
            return Err(HvError::invalid_state(vm, "the backup clone is powered on"));
        }
        if let Some(host) = v.registered.clone() {
            self.managed_home(vm)?;
            self.note(format!("backup clone {vm} deleted from {host}"));
        }
        self.vms.remove(vm);
        Ok(())
    }

    pub fn unregister_vm(&mut self, _now: Time, vm: &VmId) -> Result<(), HvError> {
        let host = self.managed_home(vm)?;
        if self.is_on_at_home(vm) {
            return Err(HvError::invalid_state(vm, "powered on: cannot unregister"));
        }
        self.vm_mut(vm)?.registered = None;
        self.note(format!("vm {vm} unregistered from {host}"));
        Ok(())
    }

    /// Looks at `vm`'s files for the lock of a host that runs it (changes nothing).
    pub(crate) fn check_locks(&self, vm: &VmId) -> Result<(), HvError> {
        let v = self.vm(vm)?;
        match v.running_on.first().filter(|_| self.cfg.file_locks) {
            Some(holder) => Err(HvError::Locked {
                id: vm.to_string(),
                file: format!("{}/{}.vmx (held by {holder})", v.name, v.name),
            }),
            None => Ok(()),
        }
    }
}
