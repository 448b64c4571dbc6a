//! Hypervisor operations on hosts: reconnect, revive (power cycle), fence, remove (which loses the
//! VMs registered on it, a violation), add from the spare pool, maintenance mode, and mounting a
//! datastore. Each checks its preconditions against the truth, then changes it; it may queue notes
//! in the feed and record a violation.

use super::World;
use super::cluster::{host_truth, unreachable_host};
use crate::truth::{HostCondition, Violation};
use am_core::{DatastoreId, HostId, HvError, Time};

impl World {
    pub fn reconnect_host(&mut self, now: Time, host: &HostId) -> Result<(), HvError> {
        let h = self.host_mut(host)?;
        match h.condition {
            HostCondition::Up => Ok(()),
            HostCondition::Disconnected => {
                h.condition = HostCondition::Up;
                h.last_heartbeat = now;
                Ok(())
            }
            c => Err(unreachable_host(host, c)),
        }
    }

    pub fn revive_host(&mut self, now: Time, host: &HostId) -> Result<(), HvError> {
        let h = self.host_mut(host)?;
        if h.condition == (HostCondition::Crashed { permanent: true }) {
            return Err(HvError::Api {
                fault: "HostReviveFailed".into(),
                message: format!("host {host} did not come back after a power cycle"),
                retryable: false,
            });
        }
        h.condition = HostCondition::Up;
        h.last_heartbeat = now;
        self.stop_all_on(host);
        self.note(format!("host {host} power-cycled out of band"));
        Ok(())
    }

    pub fn fence_host(&mut self, _now: Time, host: &HostId) -> Result<(), HvError> {
        let h = self.host_mut(host)?;
        if h.condition != (HostCondition::Crashed { permanent: true }) {
            h.condition = HostCondition::Off;
        }
        self.stop_all_on(host);
        self.note(format!("host {host} fenced (powered off out of band)"));
        Ok(())
    }

    pub fn remove_host(&mut self, now: Time, host: &HostId) -> Result<(), HvError> {
        let h = self.host_mut(host)?;
        if h.condition.is_managed() && !h.maintenance {
            return Err(HvError::invalid_state(
                host,
                "connected and not in maintenance mode: cannot remove",
            ));
        }
        h.removed = true;
        let mut lost = Vec::new();
        for vm in self.vms.values_mut() {
            if vm.registered.as_ref() == Some(host) && vm.listed {
                vm.listed = false;
                if vm.backup_of.is_none() {
                    lost.push(vm.id.clone());
                }
            }
        }
        for vm in lost {
            self.record.violation(Violation::VmLost {
                vm,
                host: host.clone(),
                at: now,
            });
        }
        self.note(format!("host {host} removed"));
        Ok(())
    }

    pub fn add_host(&mut self, now: Time, spare: &str) -> Result<HostId, HvError> {
        let spec = self
            .spares
            .get(spare)
            .ok_or_else(|| HvError::not_found("spare", spare))?;
        let id = HostId::new(if spec.id.is_empty() {
            spare
        } else {
            spec.id.as_str()
        });
        if self.hosts.get(&id).is_some_and(|h| !h.removed) {
            return Err(HvError::invalid_state(
                &id,
                "a host with this id is already in the cluster",
            ));
        }
        let mut truth = host_truth(id.as_str(), spec, now);
        truth.spare = true;
        self.spares.remove(spare);
        self.hosts.insert(id.clone(), truth);
        self.note(format!("host {id} added from spare {spare}"));
        Ok(id)
    }

    pub fn set_maintenance(&mut self, _now: Time, host: &HostId, on: bool) -> Result<(), HvError> {
        let h = self.host_mut(host)?;
        if !h.condition.is_managed() {
            return Err(unreachable_host(host, h.condition));
        }
        h.maintenance = on;
        Ok(())
    }

    pub fn mount_datastore(&mut self, _now: Time, host: &HostId, ds: &DatastoreId) -> Result<(), HvError> {
        if !self.datastores.contains_key(ds) {
            return Err(HvError::not_found("datastore", ds));
        }
        let h = self.host_mut(host)?;
        if !h.condition.is_managed() {
            return Err(unreachable_host(host, h.condition));
        }
        h.mounted.insert(ds.clone());
        self.note(format!("datastore {ds} mounted on {host}"));
        Ok(())
    }
}
