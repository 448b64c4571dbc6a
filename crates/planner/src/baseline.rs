//! Yardsticks for plan quality: plain first-fit decreasing, and an upper bound.
//!
//! Both are written for clarity, not speed, and share no code with the planner.

use crate::constraints::{Constraints, RuleKind};
use crate::engine::limit_of;
use crate::{Plan, Policy, Unplaced};
use am_core::{HostId, Inventory, PowerState, Resources, Vm, VmId};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

/// The VMs a failure of `failed` must restart: protected and powered on, on a failed host.
pub fn vms_to_restart<'a>(inv: &'a Inventory, failed: &BTreeSet<HostId>) -> Vec<&'a Vm> {
    let mut vms: Vec<&Vm> = inv
        .vms
        .values()
        .filter(|vm| vm.is_protected() && vm.power == PowerState::PoweredOn)
        .filter(|vm| vm.host.as_ref().is_some_and(|h| failed.contains(h)))
        .collect();
    vms.sort_by_key(|vm| {
        (
            Reverse(vm.priority),
            Reverse(vm.demand.mem_mib),
            Reverse(vm.demand.cpu_mhz),
            vm.id.clone(),
        )
    });
    vms
}

/// What the powered-on VMs use, per host.
fn used(inv: &Inventory) -> BTreeMap<&HostId, Resources> {
    let mut used: BTreeMap<&HostId, Resources> = BTreeMap::new();
    for vm in inv.vms.values().filter(|vm| vm.power == PowerState::PoweredOn) {
        if let Some(h) = &vm.host {
            *used.entry(h).or_default() += vm.demand;
        }
    }
    used
}

/// First-fit decreasing: the VMs of [`vms_to_restart`] in that order (priority, then size), each
/// on the first host by id where it fits and keeps every hard rule. Soft rules are ignored.
/// Unplaced VMs are all reported as [`Unplaced::NoCapacity`].
pub fn first_fit_decreasing(
    inv: &Inventory,
    constraints: &Constraints,
    failed: &BTreeSet<HostId>,
    policy: &Policy,
) -> Plan {
    let hosts: Vec<&HostId> = inv
        .hosts
        .values()
        .filter(|h| h.accepts_vms() && !failed.contains(&h.id))
        .map(|h| &h.id)
        .collect();
    let used = used(inv);
    let mut free: BTreeMap<&HostId, Resources> = BTreeMap::new();
    for h in &hosts {
        let u = used.get(h).copied().unwrap_or_default();
        free.insert(h, limit_of(policy, inv.hosts[*h].capacity).saturating_sub(&u));
    }
    let mut at: BTreeMap<&VmId, &HostId> = BTreeMap::new();
    for vm in inv.vms.values() {
        if let Some(h) = &vm.host {
            if !failed.contains(h) {
                at.insert(&vm.id, h);
            }
        }
    }
    let mut groups: BTreeSet<(&HostId, &str)> = BTreeSet::new();
    for (vm, h) in &at {
        if let Some(g) = inv.vms.get(*vm).and_then(|v| v.anti_affinity_group.as_deref()) {
            groups.insert((h, g));
        }
    }
    let mut partner: BTreeMap<&VmId, &VmId> = BTreeMap::new();
    for p in &constraints.ft_pairs {
        partner.insert(&p.primary, &p.secondary);
        partner.insert(&p.secondary, &p.primary);
    }
    let allowed = |vm: &VmId, h: &HostId| {
        constraints
            .host_rules
            .iter()
            .filter(|r| r.vms.contains(vm))
            .all(|r| {
                let inside = constraints
                    .host_groups
                    .get(&r.host_group)
                    .is_some_and(|g| g.contains(h));
                match r.kind {
                    RuleKind::MustRunOn => inside,
                    RuleKind::MustNotRunOn => !inside,
                    RuleKind::ShouldRunOn | RuleKind::ShouldNotRunOn => true,
                }
            })
    };
    let mut plan = Plan::default();
    for vm in vms_to_restart(inv, failed) {
        let target = hosts.iter().copied().find(|h| {
            vm.demand.fits_in(&free[h])
                && allowed(&vm.id, h)
                && vm
                    .anti_affinity_group
                    .as_deref()
                    .is_none_or(|g| !groups.contains(&(*h, g)))
                && partner.get(&vm.id).is_none_or(|p| at.get(p) != Some(h))
        });
        match target {
            Some(h) => {
                if let Some(f) = free.get_mut(h) {
                    *f = f.saturating_sub(&vm.demand);
                }
                if let Some(g) = vm.anti_affinity_group.as_deref() {
                    groups.insert((h, g));
                }
                at.insert(&vm.id, h);
                plan.placements.insert(vm.id.clone(), h.clone());
            }
            None => {
                plan.unplaced.insert(vm.id.clone(), Unplaced::NoCapacity);
            }
        }
    }
    plan
}

/// No plan for the failure of `failed` can place more VMs than this: the most VMs whose demands
/// together fit in the free capacity of all remaining hosts added up, CPU and memory each
/// (the smallest VMs first), ignoring rules and the split into hosts.
pub fn upper_bound(inv: &Inventory, failed: &BTreeSet<HostId>, policy: &Policy) -> usize {
    let vms = vms_to_restart(inv, failed);
    let used = used(inv);
    let free = inv
        .hosts
        .values()
        .filter(|h| h.accepts_vms() && !failed.contains(&h.id))
        .fold(Resources::ZERO, |acc, h| {
            acc + limit_of(policy, h.capacity).saturating_sub(&used.get(&h.id).copied().unwrap_or_default())
        });
    let fit = |mut sizes: Vec<u64>, budget: u64| {
        sizes.sort_unstable();
        let mut sum = 0u64;
        sizes
            .iter()
            .take_while(|s| {
                sum = sum.saturating_add(**s);
                sum <= budget
            })
            .count()
    };
    let by_mem = fit(vms.iter().map(|v| v.demand.mem_mib).collect(), free.mem_mib);
    let by_cpu = fit(vms.iter().map(|v| v.demand.cpu_mhz).collect(), free.cpu_mhz);
    by_mem.min(by_cpu)
}
