//! The inventory's VMs by host, and what the powered-on ones use on each host, kept as the
//! inventory changes. What a step asks of one host (its VMs, its free room) then costs that
//! host's VMs, not a walk of every VM: at 50,000 VMs each such walk was some 2 ms, and the step
//! that declares a host dead made half a dozen of them before its restarts were issued.

use std::collections::{BTreeMap, BTreeSet};

use am_core::{HostId, Inventory, InventoryDelta, PowerState, Resources, Vm, VmId};

/// VMs by the host they are registered on, and each host's use by its powered-on VMs: the same
/// answers as [`Inventory::vms_on`] (in the same order, by id) and [`Inventory::used`].
#[derive(Clone, Debug, Default)]
pub(crate) struct ByHost {
    /// The VMs registered on each host (no empty sets).
    vms: BTreeMap<HostId, BTreeSet<VmId>>,
    /// The demand of the powered-on VMs on each host, summed without bound (no zero entries).
    used: BTreeMap<HostId, Sum>,
}

/// A sum of demands that cannot saturate: a VM's demand taken out again is exactly what it put
/// in. Read as [`Resources`] it is clamped, which is what summing `Resources` (saturating) gives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Sum {
    cpu_mhz: u128,
    mem_mib: u128,
}

impl Sum {
    fn is_zero(&self) -> bool {
        *self == Sum::default()
    }

    fn resources(&self) -> Resources {
        let clamp = |v: u128| u64::try_from(v).unwrap_or(u64::MAX);
        Resources::new(clamp(self.cpu_mhz), clamp(self.mem_mib))
    }
}

impl ByHost {
    /// The index of `inv`.
    pub(crate) fn new(inv: &Inventory) -> Self {
        let mut index = ByHost::default();
        for vm in inv.vms.values() {
            index.insert(vm);
        }
        index
    }

    /// Follows `delta`, about to be applied to `inv` (the VM it replaces or removes is read there).
    pub(crate) fn apply(&mut self, inv: &Inventory, delta: &InventoryDelta) {
        match delta {
            InventoryDelta::VmUpsert(vm) => {
                if let Some(old) = inv.vms.get(&vm.id) {
                    self.remove(old);
                }
                self.insert(vm);
            }
            InventoryDelta::VmRemoved(id) => {
                if let Some(old) = inv.vms.get(id) {
                    self.remove(old);
                }
            }
            // A host's VMs keep naming it when it goes, as in the inventory.
            InventoryDelta::HostUpsert(_)
            | InventoryDelta::HostRemoved(_)
            | InventoryDelta::DatastoreUpsert(_)
            | InventoryDelta::Snapshots { .. } => {}
        }
    }

    /// The ids of the VMs registered on `host`, by id.
    pub(crate) fn vms(&self, host: &HostId) -> impl Iterator<Item = &VmId> + '_ {
        self.vms.get(host).into_iter().flatten()
    }

    /// What the powered-on VMs on `host` use ([`Inventory::used`]).
    pub(crate) fn used(&self, host: &HostId) -> Resources {
        self.used.get(host).map_or(Resources::ZERO, Sum::resources)
    }

    /// Whether the index answers as `inv` does, for every host; the first difference if not.
    pub(crate) fn check(&self, inv: &Inventory) -> Result<(), String> {
        let mut hosts: BTreeSet<&HostId> = inv.vms.values().filter_map(|v| v.host.as_ref()).collect();
        hosts.extend(self.vms.keys());
        hosts.extend(self.used.keys());
        hosts.extend(inv.hosts.keys());
        for host in hosts {
            let kept: Vec<&VmId> = self.vms(host).collect();
            let full: Vec<&VmId> = inv.vms_on(host).map(|v| &v.id).collect();
            if kept != full {
                return Err(format!("VMs on {host}: kept {kept:?}, inventory {full:?}"));
            }
            let (kept, full) = (self.used(host), inv.used(host));
            if kept != full {
                return Err(format!("used on {host}: kept {kept:?}, inventory {full:?}"));
            }
        }
        Ok(())
    }

    fn insert(&mut self, vm: &Vm) {
        let Some(host) = &vm.host else {
            return;
        };
        self.vms.entry(host.clone()).or_default().insert(vm.id.clone());
        if vm.power == PowerState::PoweredOn {
            let sum = self.used.entry(host.clone()).or_default();
            sum.cpu_mhz += u128::from(vm.demand.cpu_mhz);
            sum.mem_mib += u128::from(vm.demand.mem_mib);
            if sum.is_zero() {
                self.used.remove(host);
            }
        }
    }

    fn remove(&mut self, vm: &Vm) {
        let Some(host) = &vm.host else {
            return;
        };
        if let Some(ids) = self.vms.get_mut(host) {
            ids.remove(&vm.id);
            if ids.is_empty() {
                self.vms.remove(host);
            }
        }
        if vm.power == PowerState::PoweredOn
            && let Some(sum) = self.used.get_mut(host)
        {
            sum.cpu_mhz = sum.cpu_mhz.saturating_sub(u128::from(vm.demand.cpu_mhz));
            sum.mem_mib = sum.mem_mib.saturating_sub(u128::from(vm.demand.mem_mib));
            if sum.is_zero() {
                self.used.remove(host);
            }
        }
    }
}

impl crate::Supervisor {
    /// Applies `delta` to the inventory, and to the VMs by host with it: the one way the
    /// supervisor's inventory changes by a delta.
    pub(crate) fn apply_delta(&mut self, delta: &InventoryDelta) {
        self.by_host.apply(&self.inv, delta);
        self.inv.apply(delta);
    }

    /// Takes `inv` for the inventory, its VMs by host made afresh.
    pub(crate) fn replace_inventory(&mut self, inv: Inventory) {
        self.by_host = ByHost::new(&inv);
        self.inv = inv;
    }

    /// VMs registered on `host`, by id ([`Inventory::vms_on`], from the index).
    pub(crate) fn vms_on<'a>(&'a self, host: &'a HostId) -> impl Iterator<Item = &'a Vm> + 'a {
        self.by_host.vms(host).filter_map(|id| self.inv.vms.get(id))
    }

    /// What is free on `host` ([`Inventory::free`] of a host in the inventory, from the index).
    pub(crate) fn free_on(&self, host: &am_core::Host) -> Resources {
        host.capacity.saturating_sub(&self.by_host.used(&host.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(id: &str, host: &str, mem: u64, power: PowerState) -> Vm {
        let mut vm = Vm::new(id, Resources::new(mem / 2, mem), host);
        vm.power = power;
        vm
    }

    #[test]
    fn follows_upserts_and_removals_as_the_inventory_does() {
        let mut inv = Inventory::default();
        let mut index = ByHost::new(&inv);
        let deltas = [
            InventoryDelta::VmUpsert(vm("a", "h1", 1_024, PowerState::PoweredOn)),
            InventoryDelta::VmUpsert(vm("b", "h1", 2_048, PowerState::PoweredOff)),
            InventoryDelta::VmUpsert(vm("c", "h2", 4_096, PowerState::PoweredOn)),
            // Moved, then switched on where it went, then gone.
            InventoryDelta::VmUpsert(vm("a", "h2", 1_024, PowerState::PoweredOn)),
            InventoryDelta::VmUpsert(vm("b", "h1", 2_048, PowerState::PoweredOn)),
            InventoryDelta::VmRemoved("c".into()),
            InventoryDelta::HostRemoved("h1".into()),
            InventoryDelta::VmUpsert(vm("d", "h3", u64::MAX, PowerState::PoweredOn)),
            InventoryDelta::VmUpsert(vm("e", "h3", u64::MAX, PowerState::PoweredOn)),
            InventoryDelta::VmRemoved("e".into()),
        ];
        for d in &deltas {
            index.apply(&inv, d);
            inv.apply(d);
            assert_eq!(index.check(&inv), Ok(()), "after {d:?}");
        }
        assert_eq!(index.vms(&"h1".into()).count(), 1);
        assert_eq!(index.used(&"h2".into()), Resources::new(512, 1_024));
        assert_eq!(ByHost::new(&inv).check(&inv), Ok(()));
    }
}
