//! Property tests of the planner on small random clusters.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code

use am_core::{
    ConnectionState, Host, HostId, Inventory, InventoryDelta, PowerState, Resources, RestartPriority, Vm,
    VmId,
};
use planner::baseline::{first_fit_decreasing, first_fit_decreasing_every, upper_bound, vms_to_restart};
use planner::synth::Rng;
use planner::{
    Constraints, FailoverPlans, FtPair, HostRule, Plan, Policy, RuleKind, check_plan, evacuation_plan_with,
    plan_domain_failure, plan_host_failure_with,
};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

const PRIOS: [RestartPriority; 6] = [
    RestartPriority::Disabled,
    RestartPriority::Lowest,
    RestartPriority::Low,
    RestartPriority::Medium,
    RestartPriority::High,
    RestartPriority::Highest,
];

#[derive(Clone, Debug)]
struct Case {
    inv: Inventory,
    cons: Constraints,
    policy: Policy,
}

fn host(rng: &mut Rng, id: String) -> Host {
    let mut h = Host::new(
        id.as_str(),
        Resources::new(4_000 + rng.below(8) * 2_000, 8_192 + rng.below(8) * 4_096),
    );
    h.failure_domain = match rng.below(4) {
        0 => None,
        d => Some(format!("rack-{d}")),
    };
    match rng.below(20) {
        0 => h.maintenance = true,
        1 => h.connection = ConnectionState::NotResponding,
        _ => {}
    }
    h
}

fn vm(rng: &mut Rng, id: String, hosts: &[HostId]) -> Vm {
    let h = hosts[rng.below(hosts.len() as u64) as usize].clone();
    let mut v = Vm::new(
        id.as_str(),
        Resources::new(250 + rng.below(8) * 250, 512 + rng.below(12) * 512),
        h,
    );
    v.priority = PRIOS[rng.below(6) as usize];
    if rng.chance(15) {
        v.power = PowerState::PoweredOff;
    }
    if rng.chance(25) {
        v.anti_affinity_group = Some(format!("anti-{}", rng.below(3)));
    }
    if rng.chance(20) {
        v.affinity_group = Some(format!("aff-{}", rng.below(3)));
    }
    v
}

fn case(seed: u64, n_hosts: usize, n_vms: usize, tight: bool) -> Case {
    let mut rng = Rng::new(seed);
    let mut inv = Inventory::default();
    let hosts: Vec<HostId> = (0..n_hosts).map(|i| HostId::new(format!("h{i}"))).collect();
    for id in &hosts {
        inv.apply(&InventoryDelta::HostUpsert(host(
            &mut rng,
            id.as_str().to_owned(),
        )));
    }
    for i in 0..n_vms {
        inv.apply(&InventoryDelta::VmUpsert(vm(
            &mut rng,
            format!("v{i:02}"),
            &hosts,
        )));
    }
    let mut cons = Constraints::default();
    for g in 0..2 {
        let members: BTreeSet<HostId> = hosts.iter().filter(|_| rng.chance(50)).cloned().collect();
        cons.host_groups.insert(format!("g{g}"), members);
    }
    let vm_ids: Vec<VmId> = inv.vms.keys().cloned().collect();
    for r in 0..rng.below(4) {
        if vm_ids.is_empty() {
            break;
        }
        let kinds = [
            RuleKind::MustRunOn,
            RuleKind::MustNotRunOn,
            RuleKind::ShouldRunOn,
            RuleKind::ShouldNotRunOn,
        ];
        let vms: BTreeSet<VmId> = (0..1 + rng.below(3))
            .map(|_| vm_ids[rng.below(vm_ids.len() as u64) as usize].clone())
            .collect();
        cons.host_rules.push(HostRule {
            name: format!("r{r}"),
            vms,
            host_group: format!("g{}", rng.below(2)),
            kind: kinds[rng.below(4) as usize],
        });
    }
    let mut free: Vec<VmId> = vm_ids.clone();
    for _ in 0..rng.below(4) {
        if free.len() < 2 {
            break;
        }
        let a = free.remove(rng.below(free.len() as u64) as usize);
        let b = free.remove(rng.below(free.len() as u64) as usize);
        cons.ft_pairs.push(FtPair {
            primary: a,
            secondary: b,
        });
    }
    let policy = Policy {
        headroom_pct: if tight { 0 } else { rng.below(20) as u8 },
        host_reserve: Resources::new(rng.below(3) * 100, rng.below(3) * 256),
        reserved_cpu_pct: rng.below(50) as u8,
        reserved_mem_pct: rng.below(50) as u8,
        host_failures_to_tolerate: 1 + rng.below(2) as u32,
        fan_in: rng.below(4) as u32,
    };
    Case { inv, cons, policy }
}

/// Every failure the planner plans for: each host, each domain.
fn failures(inv: &Inventory) -> Vec<(Option<String>, BTreeSet<HostId>)> {
    let mut out: Vec<(Option<String>, BTreeSet<HostId>)> = inv
        .hosts
        .keys()
        .map(|h| (None, BTreeSet::from([h.clone()])))
        .collect();
    let mut domains: BTreeMap<String, BTreeSet<HostId>> = BTreeMap::new();
    for h in inv.hosts.values() {
        if let Some(d) = &h.failure_domain {
            domains.entry(d.clone()).or_default().insert(h.id.clone());
        }
    }
    out.extend(domains.into_iter().map(|(d, hs)| (Some(d), hs)));
    out
}

fn stored<'a>(plans: &'a FailoverPlans, f: &(Option<String>, BTreeSet<HostId>)) -> &'a Plan {
    match &f.0 {
        Some(d) => plans.plan_for_domain(d).expect("domain plan"),
        None => plans
            .plan_for(f.1.iter().next().expect("one host"))
            .expect("host plan"),
    }
}

/// Could `hi` have taken `lo`'s place on `lo`'s target, in the final state of `plan`?
fn could_replace(c: &Case, failed: &BTreeSet<HostId>, plan: &Plan, hi: &VmId, lo: &VmId) -> bool {
    let (inv, cons) = (&c.inv, &c.cons);
    let t = &plan.placements[lo];
    let (h, l) = (&inv.vms[hi], &inv.vms[lo]);
    // Where everything ends up, without lo.
    let mut at: BTreeMap<&VmId, &HostId> = BTreeMap::new();
    for vm in inv.vms.values() {
        if let Some(x) = &vm.host {
            if !failed.contains(x) && !plan.placements.contains_key(&vm.id) {
                at.insert(&vm.id, x);
            }
        }
    }
    for (v, x) in &plan.placements {
        if v != lo {
            at.insert(v, x);
        }
    }
    let used = at
        .iter()
        .filter(|(_, x)| **x == t)
        .map(|(v, _)| &inv.vms[*v])
        .filter(|v| v.power == PowerState::PoweredOn || plan.placements.contains_key(&v.id))
        .fold(Resources::ZERO, |a, v| a + v.demand);
    let cap = inv.hosts[t].capacity;
    let pct = |x: u64| x * u64::from(c.policy.headroom_pct) / 100;
    let limit = cap
        .saturating_sub(&c.policy.host_reserve)
        .saturating_sub(&Resources::new(pct(cap.cpu_mhz), pct(cap.mem_mib)));
    let fits = h.demand.fits_in(&limit.saturating_sub(&used));
    let anti_ok = h.anti_affinity_group.as_ref().is_none_or(|g| {
        !at.iter()
            .any(|(v, x)| *x == t && *v != hi && inv.vms[*v].anti_affinity_group.as_ref() == Some(g))
    });
    let ft_ok = cons.ft_pairs.iter().all(|p| {
        let partner = if &p.primary == hi {
            &p.secondary
        } else if &p.secondary == hi {
            &p.primary
        } else {
            return true;
        };
        at.get(partner) != Some(&t)
    });
    let rules_ok = cons.host_rules.iter().filter(|r| r.vms.contains(hi)).all(|r| {
        let inside = cons.host_groups[&r.host_group].contains(t);
        match r.kind {
            RuleKind::MustRunOn => inside,
            RuleKind::MustNotRunOn => !inside,
            _ => true,
        }
    });
    let _ = l;
    fits && anti_ok && ft_ok && rules_ok
}

fn check_all(c: &Case, plans: &FailoverPlans) -> Result<(), TestCaseError> {
    for f in failures(&c.inv) {
        let plan = stored(plans, &f);
        // Valid on what remains: capacity, anti-affinity, FT pairs, rules, usable targets.
        prop_assert_eq!(
            check_plan(&c.inv, &c.cons, &f.1, plan, &c.policy),
            Ok(()),
            "{:?}: {:?}",
            f,
            plan
        );
        // About exactly the VMs to restart.
        let want: BTreeSet<&VmId> = vms_to_restart(&c.inv, &f.1).iter().map(|v| &v.id).collect();
        let got: BTreeSet<&VmId> = plan.vms().collect();
        prop_assert_eq!(want, got);
        // Never fewer VMs than first-fit decreasing; never more than the bound.
        let ffd = first_fit_decreasing(&c.inv, &c.cons, &f.1, &c.policy);
        prop_assert!(
            plan.placements.len() >= ffd.placements.len(),
            "{f:?}: {plan:?} vs {ffd:?}"
        );
        prop_assert!(plan.placements.len() <= upper_bound(&c.inv, &f.1, &c.policy));
        // No VM left out while a lower-priority one took a place it would fit in.
        for hi in plan.unplaced.keys() {
            for lo in plan.placements.keys() {
                if c.inv.vms[lo].priority < c.inv.vms[hi].priority {
                    prop_assert!(
                        !could_replace(c, &f.1, plan, hi, lo),
                        "{hi} left out, {lo} placed: {plan:?}"
                    );
                }
            }
        }
    }
    Ok(())
}

fn same(a: &FailoverPlans, b: &FailoverPlans) -> Result<(), TestCaseError> {
    let pa: Vec<_> = a.host_plans().collect();
    let pb: Vec<_> = b.host_plans().collect();
    prop_assert_eq!(pa, pb);
    let da: Vec<_> = a.domain_plans().collect();
    let db: Vec<_> = b.domain_plans().collect();
    prop_assert_eq!(da, db);
    prop_assert_eq!(a.admission(), b.admission());
    Ok(())
}

/// A random change, on a small cluster.
fn delta(inv: &Inventory, rng: &mut Rng, n: &mut usize) -> InventoryDelta {
    let hosts: Vec<HostId> = inv.hosts.keys().cloned().collect();
    let vms: Vec<&Vm> = inv.vms.values().collect();
    *n += 1;
    let roll = rng.below(100);
    if hosts.is_empty() || roll >= 94 {
        return InventoryDelta::HostUpsert(host(rng, format!("n{n}")));
    }
    if vms.is_empty() || roll < 20 {
        // Some new VMs reuse the ids named by the constraints.
        let id = if rng.chance(30) {
            format!("v{:02}", rng.below(30))
        } else {
            format!("nv{n}")
        };
        return InventoryDelta::VmUpsert(vm(rng, id, &hosts));
    }
    let mut v = vms[rng.below(vms.len() as u64) as usize].clone();
    match roll {
        20..=34 => v.host = Some(hosts[rng.below(hosts.len() as u64) as usize].clone()),
        35..=44 => v.demand = Resources::new(250 + rng.below(8) * 250, 512 + rng.below(12) * 512),
        45..=52 => {
            v.power = match v.power {
                PowerState::PoweredOn => PowerState::PoweredOff,
                _ => PowerState::PoweredOn,
            }
        }
        53..=58 => v.priority = PRIOS[rng.below(6) as usize],
        59..=62 => v.anti_affinity_group = Some(format!("anti-{}", rng.below(3))),
        63..=66 => v.affinity_group = rng.chance(50).then(|| format!("aff-{}", rng.below(3))),
        67..=70 => v.heartbeat = am_core::GuestHeartbeat::Red,
        71..=78 => return InventoryDelta::VmRemoved(v.id),
        _ => {
            let mut h = inv.hosts[&hosts[rng.below(hosts.len() as u64) as usize]].clone();
            match roll {
                79..=82 => h.connection = ConnectionState::NotResponding,
                83..=85 => h.connection = ConnectionState::Connected,
                86..=87 => h.maintenance = !h.maintenance,
                88..=89 => {
                    h.capacity = Resources::new(4_000 + rng.below(8) * 2_000, 8_192 + rng.below(8) * 4_096)
                }
                90..=91 => h.failure_domain = Some(format!("rack-{}", rng.below(4))),
                _ => return InventoryDelta::HostRemoved(h.id),
            }
            return InventoryDelta::HostUpsert(h);
        }
    }
    InventoryDelta::VmUpsert(v)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn plans_are_valid_prioritised_and_at_least_ffd(
        seed in any::<u64>(), hosts in 1usize..7, vms in 0usize..30, tight in any::<bool>()
    ) {
        let c = case(seed, hosts, vms, tight);
        let plans = FailoverPlans::new(&c.inv, &c.cons, &c.policy).expect("valid");
        check_all(&c, &plans)?;
    }

    #[test]
    fn same_input_same_plans_and_one_off_plans_agree(
        seed in any::<u64>(), hosts in 1usize..7, vms in 0usize..30
    ) {
        let c = case(seed, hosts, vms, false);
        let a = FailoverPlans::new(&c.inv, &c.cons, &c.policy).expect("valid");
        let b = FailoverPlans::new(&c.inv.clone(), &c.cons.clone(), &c.policy.clone()).expect("valid");
        same(&a, &b)?;
        for f in failures(&c.inv) {
            let fresh = match &f.0 {
                Some(d) => plan_domain_failure(&c.inv, &c.cons, d, &c.policy).expect("valid"),
                None => plan_host_failure_with(&c.inv, &c.cons, f.1.iter().next().expect("host"), &c.policy)
                    .expect("valid"),
            };
            prop_assert_eq!(&fresh, stored(&a, &f));
        }
    }

    #[test]
    fn incremental_updates_equal_full_recomputation(
        seed in any::<u64>(), hosts in 1usize..7, vms in 0usize..30, steps in 1usize..25
    ) {
        let c = case(seed, hosts, vms, seed % 3 == 0);
        let mut plans = planner::synth::Tracked::new(&c.inv, &c.cons, &c.policy).expect("valid");
        let mut rng = Rng::new(seed ^ 0x5eed);
        let mut n = 0;
        for i in 0..steps {
            let d = delta(plans.inventory(), &mut rng, &mut n);
            if i % 5 == 4 {
                plans.defer(&d);
                prop_assert!(!plans.is_fresh());
                plans.refresh();
            } else {
                plans.apply(&d);
            }
            let full = FailoverPlans::new(plans.inventory(), &c.cons, &c.policy).expect("valid");
            same(&plans, &full)?;
        }
        let now = Case { inv: plans.inventory().clone(), ..c };
        check_all(&now, &plans)?;
    }

    #[test]
    fn budgeted_and_batched_updates_equal_full_recomputation(
        seed in any::<u64>(), hosts in 1usize..7, vms in 0usize..30, steps in 1usize..40,
        budget in 0usize..40
    ) {
        // A small update budget defers plans (made at the next refresh or lookup, or kept
        // deferred through later deltas), and long runs of deferred deltas take the refresh's
        // rebuild path: the plans are still those of a full recomputation.
        let c = case(seed, hosts, vms, seed % 2 == 0);
        let mut plans = planner::synth::Tracked::new(&c.inv, &c.cons, &c.policy).expect("valid");
        plans.set_update_budget(budget);
        let mut rng = Rng::new(seed ^ 0xb0d6e7);
        let mut n = 0;
        let mut i = 0;
        while i < steps {
            if rng.chance(25) {
                let k = 1 + rng.below(30) as usize;
                for _ in 0..k {
                    let d = delta(plans.inventory(), &mut rng, &mut n);
                    plans.defer(&d);
                }
                plans.refresh();
                prop_assert!(plans.is_fresh());
                i += k;
            } else {
                let d = delta(plans.inventory(), &mut rng, &mut n);
                plans.apply(&d);
                i += 1;
            }
            if rng.chance(30) || i >= steps {
                let full = FailoverPlans::new(plans.inventory(), &c.cons, &c.policy).expect("valid");
                same(&plans, &full)?;
            } else if let Some(h) = plans.inventory().hosts.keys().next().cloned() {
                // One plan looked up alone, made on the spot if it was deferred.
                let fresh = plan_host_failure_with(plans.inventory(), &c.cons, &h, &c.policy).expect("valid");
                prop_assert_eq!(plans.plan_for(&h), Some(&fresh));
            }
        }
    }

    #[test]
    fn ffd_for_every_failure_is_ffd_for_each(
        seed in any::<u64>(), hosts in 1usize..7, vms in 0usize..30, tight in any::<bool>()
    ) {
        let c = case(seed, hosts, vms, tight);
        let (host_plans, domain_plans) = first_fit_decreasing_every(&c.inv, &c.cons, &c.policy);
        for (f, failed) in failures(&c.inv) {
            let one = first_fit_decreasing(&c.inv, &c.cons, &failed, &c.policy);
            let every = match &f {
                Some(d) => domain_plans.iter().find(|(x, _)| x == d).map(|(_, p)| p),
                None => host_plans.iter().find(|(h, _)| failed.contains(h)).map(|(_, p)| p),
            };
            prop_assert_eq!(every, Some(&one));
        }
    }

    #[test]
    fn evacuation_waves_are_bounded_and_valid(
        seed in any::<u64>(), hosts in 1usize..7, vms in 0usize..30, limit in 1u32..4
    ) {
        let c = case(seed, hosts, vms, false);
        let Some(h) = c.inv.hosts.keys().next().cloned() else { return Ok(()) };
        let gone = BTreeSet::from([h.clone()]);
        let ev = evacuation_plan_with(&c.inv, &c.cons, &gone, limit, &c.policy).expect("valid");
        let running: BTreeSet<&VmId> = c.inv.vms_on(&h)
            .filter(|v| v.power == PowerState::PoweredOn).map(|v| &v.id).collect();
        let mut moved = Plan::default();
        for w in &ev.waves {
            prop_assert!(!w.migrations.is_empty());
            let mut out: BTreeMap<&HostId, u32> = BTreeMap::new();
            let mut inc: BTreeMap<&HostId, u32> = BTreeMap::new();
            for m in &w.migrations {
                *out.entry(&m.from).or_default() += 1;
                *inc.entry(&m.to).or_default() += 1;
                moved.placements.insert(m.vm.clone(), m.to.clone());
            }
            prop_assert!(out.values().chain(inc.values()).all(|&n| n <= limit));
        }
        let all: BTreeSet<&VmId> = moved.placements.keys().chain(ev.unplaced.keys()).collect();
        prop_assert_eq!(all, running);
        prop_assert_eq!(check_plan(&c.inv, &c.cons, &gone, &moved, &c.policy), Ok(()));
    }
}
