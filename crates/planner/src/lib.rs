//! # planner
//!
//! Pure placement: given an [`Inventory`], decide where VMs go when hosts fail. No I/O, no async,
//! deterministic: the same input always gives the same plan.
//!
//! ```
//! use am_core::{Host, Inventory, InventoryDelta, Resources, Vm};
//! use planner::{plan_host_failure, Policy};
//!
//! let mut inv = Inventory::default();
//! for h in ["h1", "h2"] {
//!     inv.apply(&InventoryDelta::HostUpsert(Host::new(h, Resources::new(10_000, 32_768))));
//! }
//! inv.apply(&InventoryDelta::VmUpsert(Vm::new("web", Resources::new(1_000, 4_096), "h1")));
//! let plan = plan_host_failure(&inv, &"h1".into(), &Policy::default());
//! assert_eq!(plan.placements[&"web".into()], "h2".into());
//! assert!(plan.unplaced.is_empty());
//! ```

use am_core::{HostId, Inventory, PowerState, Resources, Vm, VmId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Placement policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Percent of every host's capacity kept free (headroom), 0-100.
    pub headroom_pct: u8,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { headroom_pct: 0 }
    }
}

/// Why a VM could not be placed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Unplaced {
    /// No surviving host has room for it.
    NoCapacity,
    /// Every host with room already runs a VM of its anti-affinity group.
    AntiAffinity,
    /// No host accepts VMs at all.
    NoHost,
}

/// Where each VM goes, and which cannot go anywhere.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// VM -> target host.
    pub placements: BTreeMap<VmId, HostId>,
    /// VMs left out, with the reason.
    pub unplaced: BTreeMap<VmId, Unplaced>,
}

/// The plan for the failure of `host`: its protected, powered-on VMs placed on the others.
pub fn plan_host_failure(inv: &Inventory, host: &HostId, policy: &Policy) -> Plan {
    let vms: Vec<VmId> = inv
        .vms_on(host)
        .filter(|vm| vm.is_protected() && vm.power == PowerState::PoweredOn)
        .map(|vm| vm.id.clone())
        .collect();
    place(inv, &vms, &BTreeSet::from([host.clone()]), policy)
}

/// Places `vms` on the hosts that accept VMs and are not in `exclude`, highest priority first,
/// then largest first; each VM goes to the host with the most memory left after it (spreading load).
/// VMs in `vms` do not count against any host's free capacity.
pub fn place(inv: &Inventory, vms: &[VmId], exclude: &BTreeSet<HostId>, policy: &Policy) -> Plan {
    let moving: BTreeSet<&VmId> = vms.iter().collect();
    // Free capacity and anti-affinity groups per usable host, without the VMs being placed.
    let mut free: BTreeMap<&HostId, Resources> = BTreeMap::new();
    let mut groups: BTreeMap<&HostId, BTreeSet<&str>> = BTreeMap::new();
    for h in inv.hosts.values().filter(|h| h.accepts_vms() && !exclude.contains(&h.id)) {
        let reserve = Resources::new(
            h.capacity.cpu_mhz * u64::from(policy.headroom_pct.min(100)) / 100,
            h.capacity.mem_mib * u64::from(policy.headroom_pct.min(100)) / 100,
        );
        let mut f = h.capacity.saturating_sub(&reserve);
        let mut g = BTreeSet::new();
        for vm in inv.vms_on(&h.id).filter(|vm| !moving.contains(&vm.id)) {
            if vm.power == PowerState::PoweredOn {
                f = f.saturating_sub(&vm.demand);
            }
            if let Some(group) = &vm.anti_affinity_group {
                g.insert(group.as_str());
            }
        }
        free.insert(&h.id, f);
        groups.insert(&h.id, g);
    }

    let mut order: Vec<&Vm> = vms.iter().filter_map(|id| inv.vms.get(id)).collect();
    order.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(b.demand.mem_mib.cmp(&a.demand.mem_mib))
            .then(b.demand.cpu_mhz.cmp(&a.demand.cpu_mhz))
            .then(a.id.cmp(&b.id))
    });

    let mut plan = Plan::default();
    for vm in order {
        if free.is_empty() {
            plan.unplaced.insert(vm.id.clone(), Unplaced::NoHost);
            continue;
        }
        let mut blocked_by_group = false;
        let mut best: Option<(&HostId, u64)> = None;
        for (host, f) in &free {
            if !vm.demand.fits_in(f) {
                continue;
            }
            if let Some(group) = &vm.anti_affinity_group {
                if groups.get(host).is_some_and(|g| g.contains(group.as_str())) {
                    blocked_by_group = true;
                    continue;
                }
            }
            let left = f.mem_mib - vm.demand.mem_mib;
            if best.is_none_or(|(_, l)| left > l) {
                best = Some((*host, left));
            }
        }
        match best {
            Some((host, _)) => {
                if let Some(f) = free.get_mut(host) {
                    *f = f.saturating_sub(&vm.demand);
                }
                if let (Some(group), Some(g)) = (&vm.anti_affinity_group, groups.get_mut(host)) {
                    g.insert(group.as_str());
                }
                plan.placements.insert(vm.id.clone(), host.clone());
            }
            None if blocked_by_group => {
                plan.unplaced.insert(vm.id.clone(), Unplaced::AntiAffinity);
            }
            None => {
                plan.unplaced.insert(vm.id.clone(), Unplaced::NoCapacity);
            }
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use am_core::{Host, InventoryDelta, RestartPriority};

    fn inv(hosts: &[(&str, u64)], vms: &[(&str, u64, &str, RestartPriority)]) -> Inventory {
        let mut inv = Inventory::default();
        for (h, mem) in hosts {
            inv.apply(&InventoryDelta::HostUpsert(Host::new(*h, Resources::new(100_000, *mem))));
        }
        for (v, mem, h, p) in vms {
            let mut vm = Vm::new(*v, Resources::new(100, *mem), *h);
            vm.priority = *p;
            inv.apply(&InventoryDelta::VmUpsert(vm));
        }
        inv
    }

    #[test]
    fn higher_priority_wins_when_capacity_is_short() {
        use RestartPriority::*;
        let inv = inv(&[("h1", 10_000), ("h2", 5_000)], &[("lo", 4_000, "h1", Low), ("hi", 4_000, "h1", High)]);
        let plan = plan_host_failure(&inv, &"h1".into(), &Policy::default());
        assert_eq!(plan.placements.get(&VmId::from("hi")), Some(&HostId::from("h2")));
        assert_eq!(plan.unplaced.get(&VmId::from("lo")), Some(&Unplaced::NoCapacity));
    }

    #[test]
    fn unprotected_vms_are_not_planned() {
        let inv = inv(&[("h1", 10_000), ("h2", 10_000)], &[("off", 1_000, "h1", RestartPriority::Disabled)]);
        let plan = plan_host_failure(&inv, &"h1".into(), &Policy::default());
        assert!(plan.placements.is_empty() && plan.unplaced.is_empty());
    }

    #[test]
    fn anti_affinity_keeps_group_members_apart() {
        let mut inv = inv(&[("h1", 10_000), ("h2", 10_000), ("h3", 10_000)], &[]);
        for (v, h) in [("a", "h1"), ("b", "h2"), ("c", "h1")] {
            let mut vm = Vm::new(v, Resources::new(100, 1_000), h);
            vm.anti_affinity_group = Some("db".into());
            inv.apply(&InventoryDelta::VmUpsert(vm));
        }
        let plan = plan_host_failure(&inv, &"h1".into(), &Policy::default());
        // h2 already runs b: both a and c cannot go there, one goes to h3, the other is left out.
        assert_eq!(plan.placements.values().filter(|h| h.as_str() == "h3").count(), 1);
        assert_eq!(plan.unplaced.values().collect::<Vec<_>>(), vec![&Unplaced::AntiAffinity]);
    }
}
