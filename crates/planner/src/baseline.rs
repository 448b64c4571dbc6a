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

/// The plans of [`first_fit_decreasing`] for the failure of every host (by id) and of every
/// failure domain (by name), the same plans, made with the cluster's tables built once (host
/// slots, free capacity, rules): the time yardstick for building every plan at once.
pub fn first_fit_decreasing_every(
    inv: &Inventory,
    constraints: &Constraints,
    policy: &Policy,
) -> (Vec<(HostId, Plan)>, Vec<(String, Plan)>) {
    let hosts: Vec<&am_core::Host> = inv.hosts.values().collect();
    let slot: std::collections::HashMap<&HostId, usize> =
        hosts.iter().enumerate().map(|(i, h)| (&h.id, i)).collect();
    let mut free: Vec<Resources> = hosts.iter().map(|h| limit_of(policy, h.capacity)).collect();
    let mut anti: std::collections::HashSet<(usize, &str)> = std::collections::HashSet::new();
    let mut restart: Vec<Vec<&Vm>> = vec![Vec::new(); hosts.len()];
    let mut vm_at: std::collections::HashMap<&VmId, usize> = std::collections::HashMap::new();
    for vm in inv.vms.values() {
        let Some(&h) = vm.host.as_ref().and_then(|h| slot.get(h)) else {
            continue;
        };
        vm_at.insert(&vm.id, h);
        if vm.power == PowerState::PoweredOn {
            free[h] = free[h].saturating_sub(&vm.demand);
            if vm.is_protected() {
                restart[h].push(vm);
            }
        }
        if let Some(g) = vm.anti_affinity_group.as_deref() {
            anti.insert((h, g));
        }
    }
    let mut partner: std::collections::HashMap<&VmId, &VmId> = std::collections::HashMap::new();
    for p in &constraints.ft_pairs {
        partner.insert(&p.primary, &p.secondary);
        partner.insert(&p.secondary, &p.primary);
    }
    // VM -> the hosts its must (not) run on rules allow.
    let mut allowed: std::collections::HashMap<&VmId, Vec<bool>> = std::collections::HashMap::new();
    for r in &constraints.host_rules {
        let must = match r.kind {
            RuleKind::MustRunOn => true,
            RuleKind::MustNotRunOn => false,
            RuleKind::ShouldRunOn | RuleKind::ShouldNotRunOn => continue,
        };
        let group = constraints.host_groups.get(&r.host_group);
        for vm in &r.vms {
            let mask = allowed.entry(vm).or_insert_with(|| vec![true; hosts.len()]);
            for (i, h) in hosts.iter().enumerate() {
                if group.is_some_and(|g| g.contains(&h.id)) != must {
                    mask[i] = false;
                }
            }
        }
    }
    let accepts: Vec<bool> = hosts.iter().map(|h| h.accepts_vms()).collect();
    let order = |vms: &mut Vec<&Vm>| {
        vms.sort_by(|a, b| {
            b.priority
                .cmp(&a.priority)
                .then(b.demand.mem_mib.cmp(&a.demand.mem_mib))
                .then(b.demand.cpu_mhz.cmp(&a.demand.cpu_mhz))
                .then_with(|| a.id.cmp(&b.id))
        })
    };
    for list in &mut restart {
        order(list);
    }
    let mut failed = vec![false; hosts.len()];
    let mut left = free.clone();
    let mut plan_of = |failed_hosts: &[usize], vms: &[&Vm]| -> Plan {
        for &h in failed_hosts {
            failed[h] = true;
        }
        left.copy_from_slice(&free);
        let mut added: Vec<(usize, &str)> = Vec::new();
        let mut placed: std::collections::HashMap<&VmId, usize> = std::collections::HashMap::new();
        let mut plan = Plan::default();
        for vm in vms {
            let mask = allowed.get(&vm.id);
            let mate = partner.get(&vm.id).copied();
            let target = (0..hosts.len()).find(|&h| {
                accepts[h]
                    && !failed[h]
                    && vm.demand.fits_in(&left[h])
                    && mask.is_none_or(|m| m[h])
                    && vm
                        .anti_affinity_group
                        .as_deref()
                        .is_none_or(|g| !anti.contains(&(h, g)) && !added.contains(&(h, g)))
                    && mate.is_none_or(|p| {
                        let at = placed
                            .get(p)
                            .copied()
                            .or_else(|| vm_at.get(p).copied().filter(|&x| !failed[x]));
                        at != Some(h)
                    })
            });
            match target {
                Some(h) => {
                    left[h] = left[h].saturating_sub(&vm.demand);
                    if let Some(g) = vm.anti_affinity_group.as_deref() {
                        added.push((h, g));
                    }
                    if partner.contains_key(&vm.id) {
                        placed.insert(&vm.id, h);
                    }
                    plan.placements.insert(vm.id.clone(), hosts[h].id.clone());
                }
                None => {
                    plan.unplaced.insert(vm.id.clone(), Unplaced::NoCapacity);
                }
            }
        }
        for &h in failed_hosts {
            failed[h] = false;
        }
        plan
    };
    let host_plans: Vec<(HostId, Plan)> = (0..hosts.len())
        .map(|h| (hosts[h].id.clone(), plan_of(&[h], &restart[h])))
        .collect();
    let mut domains: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, h) in hosts.iter().enumerate() {
        if let Some(d) = h.failure_domain.as_deref() {
            domains.entry(d).or_default().push(i);
        }
    }
    let domain_plans: Vec<(String, Plan)> = domains
        .into_iter()
        .map(|(d, members)| {
            let mut vms: Vec<&Vm> = members.iter().flat_map(|&h| restart[h].iter().copied()).collect();
            order(&mut vms);
            (d.to_owned(), plan_of(&members, &vms))
        })
        .collect();
    (host_plans, domain_plans)
}
