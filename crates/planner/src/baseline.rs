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
    let used = inv.used_by_host();
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
    let used = inv.used_by_host();
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

/// Plans by failed host, then by failed failure domain.
pub type EveryPlan = (Vec<(HostId, Plan)>, Vec<(String, Plan)>);

/// A VM to restart, with what first-fit decreasing needs of it read once.
struct Restart<'a> {
    vm: &'a Vm,
    /// The hosts its must (not) run on rules allow, by host slot.
    allowed: Option<&'a [bool]>,
    /// Its fault-tolerant partner, and where the partner runs (host slot).
    mate: Option<(usize, Option<usize>)>,
    /// Its anti-affinity group, interned.
    anti: Option<usize>,
    /// Its own number among the partners, if it has one.
    own: Option<usize>,
}

/// The plans of [`first_fit_decreasing`] for the failure of every host (by id) and of every
/// failure domain (by name), the same plans, made with the cluster's tables built once (host
/// slots, free capacity, rules, each VM's rules and partner): the time yardstick for building
/// every plan at once.
pub fn first_fit_decreasing_every(inv: &Inventory, constraints: &Constraints, policy: &Policy) -> EveryPlan {
    use std::collections::HashMap;
    let hosts: Vec<&am_core::Host> = inv.hosts.values().collect();
    let slot: HashMap<&HostId, usize> = hosts.iter().enumerate().map(|(i, h)| (&h.id, i)).collect();
    let mut free: Vec<Resources> = hosts.iter().map(|h| limit_of(policy, h.capacity)).collect();
    // Host group -> membership by host slot; VM -> the hosts its must (not) run on rules allow.
    let mut members: BTreeMap<&str, Vec<bool>> = BTreeMap::new();
    let mut allowed: BTreeMap<&VmId, Vec<bool>> = BTreeMap::new();
    for r in &constraints.host_rules {
        let must = match r.kind {
            RuleKind::MustRunOn => true,
            RuleKind::MustNotRunOn => false,
            RuleKind::ShouldRunOn | RuleKind::ShouldNotRunOn => continue,
        };
        let inside = members.entry(r.host_group.as_str()).or_insert_with(|| {
            let group = constraints.host_groups.get(&r.host_group);
            hosts
                .iter()
                .map(|h| group.is_some_and(|g| g.contains(&h.id)))
                .collect()
        });
        for vm in &r.vms {
            let mask = allowed.entry(vm).or_insert_with(|| vec![true; hosts.len()]);
            for (m, &inside) in mask.iter_mut().zip(inside.iter()) {
                if inside != must {
                    *m = false;
                }
            }
        }
    }
    let mut partner: BTreeMap<&VmId, &VmId> = BTreeMap::new();
    for p in &constraints.ft_pairs {
        partner.insert(&p.primary, &p.secondary);
        partner.insert(&p.secondary, &p.primary);
    }
    // Partners get a number each (their index among the partners) and their host slot.
    let mut mate_no: BTreeMap<&VmId, usize> = BTreeMap::new();
    let mut groups: HashMap<&str, usize> = HashMap::new();
    // Per host slot: the anti-affinity groups of its VMs, sorted.
    let mut anti: Vec<Vec<usize>> = vec![Vec::new(); hosts.len()];
    let mut restart: Vec<Vec<Restart<'_>>> = (0..hosts.len()).map(|_| Vec::new()).collect();
    let mut mate_at: Vec<Option<usize>> = Vec::new();
    // The VMs, the partners and the rules' VMs are all sorted by id: walked side by side.
    let (mut partners, mut rules) = (partner.keys().peekable(), allowed.iter().peekable());
    for vm in inv.vms.values() {
        let at = vm.host.as_ref().and_then(|h| slot.get(h)).copied();
        while partners.next_if(|p| ***p < vm.id).is_some() {}
        while rules.next_if(|(v, _)| ***v < vm.id).is_some() {}
        let mask = rules
            .peek()
            .filter(|(v, _)| ***v == vm.id)
            .map(|(_, m)| m.as_slice());
        let mut own = None;
        if partners.peek().is_some_and(|p| ***p == vm.id) {
            mate_no.insert(&vm.id, mate_at.len());
            own = Some(mate_at.len());
            mate_at.push(at);
        }
        let Some(h) = at else {
            continue;
        };
        let g = vm.anti_affinity_group.as_deref().map(|g| {
            let n = groups.len();
            *groups.entry(g).or_insert(n)
        });
        if let Some(g) = g {
            if let Err(i) = anti[h].binary_search(&g) {
                anti[h].insert(i, g);
            }
        }
        if vm.power == PowerState::PoweredOn {
            free[h] = free[h].saturating_sub(&vm.demand);
            if vm.is_protected() {
                restart[h].push(Restart {
                    vm,
                    allowed: mask,
                    mate: None,
                    anti: g,
                    own,
                });
            }
        }
    }
    for list in &mut restart {
        for r in list.iter_mut().filter(|r| r.own.is_some()) {
            r.mate = partner
                .get(&r.vm.id)
                .and_then(|p| mate_no.get(p))
                .map(|&n| (n, mate_at.get(n).copied().flatten()));
        }
    }
    let accepts: Vec<bool> = hosts.iter().map(|h| h.accepts_vms()).collect();
    let order = |vms: &mut Vec<&Restart<'_>>| {
        vms.sort_by(|a, b| {
            let (a, b) = (a.vm, b.vm);
            b.priority
                .cmp(&a.priority)
                .then(b.demand.mem_mib.cmp(&a.demand.mem_mib))
                .then(b.demand.cpu_mhz.cmp(&a.demand.cpu_mhz))
                .then_with(|| a.id.cmp(&b.id))
        })
    };
    let mut failed = vec![false; hosts.len()];
    let mut left = free.clone();
    // Where this plan put the partners (by partner number), undone after each plan.
    let mut placed: Vec<Option<usize>> = vec![None; mate_at.len()];
    let mut plan_of = |failed_hosts: &[usize], vms: &[&Restart<'_>]| -> Plan {
        for &h in failed_hosts {
            failed[h] = true;
        }
        left.copy_from_slice(&free);
        let mut added: Vec<(usize, usize)> = Vec::new();
        let mut moved: Vec<usize> = Vec::new();
        let mut plan = Plan::default();
        for r in vms {
            let vm = r.vm;
            let mate = r.mate.map(|(n, at)| placed[n].or(at.filter(|&x| !failed[x])));
            let target = (0..hosts.len()).find(|&h| {
                accepts[h]
                    && !failed[h]
                    && vm.demand.fits_in(&left[h])
                    && r.allowed.is_none_or(|m| m[h])
                    && r.anti
                        .is_none_or(|g| anti[h].binary_search(&g).is_err() && !added.contains(&(h, g)))
                    && mate.is_none_or(|at| at != Some(h))
            });
            match target {
                Some(h) => {
                    left[h] = left[h].saturating_sub(&vm.demand);
                    if let Some(g) = r.anti {
                        added.push((h, g));
                    }
                    if let Some(n) = r.own {
                        placed[n] = Some(h);
                        moved.push(n);
                    }
                    plan.placements.insert(vm.id.clone(), hosts[h].id.clone());
                }
                None => {
                    plan.unplaced.insert(vm.id.clone(), Unplaced::NoCapacity);
                }
            }
        }
        for n in moved {
            placed[n] = None;
        }
        for &h in failed_hosts {
            failed[h] = false;
        }
        plan
    };
    let mut host_plans: Vec<(HostId, Plan)> = Vec::with_capacity(hosts.len());
    for (h, list) in restart.iter().enumerate() {
        let mut vms: Vec<&Restart<'_>> = list.iter().collect();
        order(&mut vms);
        host_plans.push((hosts[h].id.clone(), plan_of(&[h], &vms)));
    }
    let mut domains: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, h) in hosts.iter().enumerate() {
        if let Some(d) = h.failure_domain.as_deref() {
            domains.entry(d).or_default().push(i);
        }
    }
    let domain_plans: Vec<(String, Plan)> = domains
        .into_iter()
        .map(|(d, members)| {
            let mut vms: Vec<&Restart<'_>> = members.iter().flat_map(|&h| restart[h].iter()).collect();
            order(&mut vms);
            (d.to_owned(), plan_of(&members, &vms))
        })
        .collect();
    (host_plans, domain_plans)
}
