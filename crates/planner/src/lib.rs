//! # planner
//!
//! Pure failover and evacuation planning for clusters of VMs: no I/O, no async, no clock, no
//! randomness. The same input always gives the same plans, on every machine.
//!
//! - [`FailoverPlans`] keeps a ready plan for the failure of every host and every failure domain
//!   of a cluster, and keeps them current as [`InventoryDelta`]s arrive: only the plans a change
//!   can affect are redone, and redone from the first step it affects, within a budget of work
//!   per change; a plan over the budget is made again at the next
//!   [`FailoverPlans::refresh`] (or when it is looked up before). After a refresh, looking a
//!   plan up on a host failure is a map lookup.
//! - [`FailoverPlans::admission`] tells how many host failures the cluster tolerates and whether a
//!   percentage reservation holds (vSphere HA's admission control).
//! - [`evacuation_plan`] orders the live migrations that empty hosts going into maintenance (or
//!   predicted to fail) into waves, bounded per host.
//! - [`plan_host_failure`], [`place`] and their `_with` forms compute one plan from scratch: the
//!   fallback when a stored plan is stale, and the same result as the stored plan when it is not.
//!
//! The planner reads [`am_core::Inventory`] for hosts (capacity, failure domain, whether they
//! accept VMs) and VMs (demand, power, priority, affinity and anti-affinity groups). Rules the
//! inventory does not carry, VM-host rules and fault-tolerant pairs, come as [`Constraints`];
//! reserved capacity and headroom as [`Policy`].
//!
//! ## How a plan is made
//!
//! The VMs to restart go in order: highest priority first, then largest memory, then largest
//! CPU, then by id. Each goes to a host that has room for it (capacity minus the policy's
//! reserve and headroom minus what runs there and what the plan already put there), keeps its
//! anti-affinity group and fault-tolerant partner apart, and obeys its must (not) run on rules.
//! Among those hosts it prefers the ones that keep its soft rules (should run on, affinity
//! group), then the ones holding fewer VMs of this same plan by steps of [`Policy::fan_in`] (below
//! it first, then below twice it, ...), then the
//! first in a pseudo-random host order of its own for each failure. Restarts after one failure
//! spread over several hosts, and different failures use different hosts.
//!
//! When that leaves some VM out, the planner also runs best-fit and plain first-fit decreasing
//! and keeps whichever places the most VMs (then the most of the highest priority). So a plan
//! never places fewer VMs than first-fit decreasing, and a VM is never left out while a VM of
//! lower priority took a place it would have fitted in.
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
//! assert_eq!(plan.placements["web"], "h2".into());
//! assert!(plan.unplaced.is_empty());
//! ```

mod admission;
pub mod baseline;
mod constraints;
mod engine;
mod evacuation;
mod hash;
mod plans;
pub mod synth;
mod validate;

pub use admission::Admission;
pub use constraints::{Constraints, FtPair, HostRule, PlanError, Result, RuleKind};
pub use evacuation::{Evacuation, Migration, Wave, evacuation_plan, evacuation_plan_with};
pub use plans::{DEFAULT_UPDATE_BUDGET, FailoverPlans, Lookup, Updated};
pub use validate::{Violation, check_plan};

use am_core::{HostId, Inventory, InventoryDelta, PowerState, VmId};
use engine::{Engine, Scratch};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Placement policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Percent of every host's capacity that failover placements leave free (headroom), 0-100.
    pub headroom_pct: u8,
    /// Capacity every host keeps for itself (hypervisor, agents): never given to VMs by a plan.
    pub host_reserve: am_core::Resources,
    /// Admission control by percentage: the share of the cluster's CPU kept free for failover.
    pub reserved_cpu_pct: u8,
    /// Admission control by percentage: the share of the cluster's memory kept free for failover.
    pub reserved_mem_pct: u8,
    /// Admission control by host failures: how many the cluster should tolerate.
    pub host_failures_to_tolerate: u32,
    /// A plan prefers hosts holding fewer than this many of its VMs (spreads the restart load
    /// after one failure); 0 for no preference. Never a reason to leave a VM out.
    pub fan_in: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            headroom_pct: 0,
            host_reserve: am_core::Resources::ZERO,
            reserved_cpu_pct: 0,
            reserved_mem_pct: 0,
            host_failures_to_tolerate: 1,
            fan_in: 4,
        }
    }
}

/// Why a VM could not be placed. Checked on every host that remains; when hosts are ruled out
/// for different reasons, the first reason in this list that ruled out a host with room wins.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Unplaced {
    /// Hosts had room, but each already runs (or will run) a VM of its anti-affinity group.
    AntiAffinity,
    /// Hosts had room, but its fault-tolerant partner runs (or will run) there.
    FaultTolerance,
    /// Hosts had room, but a must (not) run on rule forbids them.
    HostRule,
    /// No remaining host has room for it.
    NoCapacity,
    /// No host accepts VMs at all.
    NoHost,
}

/// Where each VM goes, and which cannot go anywhere.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// VM -> target host.
    pub placements: std::collections::BTreeMap<VmId, HostId>,
    /// VMs left out, with the reason.
    pub unplaced: std::collections::BTreeMap<VmId, Unplaced>,
}

impl Plan {
    /// Whether every VM of the plan has a place.
    pub fn is_complete(&self) -> bool {
        self.unplaced.is_empty()
    }

    /// The VMs the plan is about, placed or not.
    pub fn vms(&self) -> impl Iterator<Item = &VmId> {
        self.placements.keys().chain(self.unplaced.keys())
    }
}

/// The plan for the failure of `host`: its protected, powered-on VMs placed on the others.
pub fn plan_host_failure(inv: &Inventory, host: &HostId, policy: &Policy) -> Plan {
    let none = Constraints::default();
    let engine = Engine::build(inv, &none, policy, |_| false);
    host_plan(&engine, inv, host)
}

/// [`plan_host_failure`] with [`Constraints`].
pub fn plan_host_failure_with(
    inv: &Inventory,
    constraints: &Constraints,
    host: &HostId,
    policy: &Policy,
) -> Result<Plan> {
    constraints.validate()?;
    let engine = Engine::build(inv, constraints, policy, |_| false);
    Ok(host_plan(&engine, inv, host))
}

fn host_plan(engine: &Engine, inv: &Inventory, host: &HostId) -> Plan {
    let spec = match engine.host_of(host) {
        Some(h) => engine.host_spec(h),
        None => {
            // Not a host of the inventory: its VMs, if any, are still worth a plan.
            let vms: Vec<VmId> = inv
                .vms_on(host)
                .filter(|vm| vm.is_protected() && vm.power == PowerState::PoweredOn)
                .map(|vm| vm.id.clone())
                .collect();
            engine.custom_spec("place", &vms, &BTreeSet::from([host.clone()]))
        }
    };
    let mut scratch = Scratch::default();
    engine.to_plan(&engine.compute(&mut scratch, &spec))
}

/// The plan for the failure of every host of failure domain `domain` at once.
pub fn plan_domain_failure(
    inv: &Inventory,
    constraints: &Constraints,
    domain: &str,
    policy: &Policy,
) -> Result<Plan> {
    constraints.validate()?;
    let engine = Engine::build(inv, constraints, policy, |_| false);
    let Some(d) = engine
        .domain_of_name(domain)
        .filter(|&d| engine.domain_has_hosts(d))
    else {
        return Ok(Plan::default());
    };
    let mut scratch = Scratch::default();
    Ok(engine.to_plan(&engine.compute(&mut scratch, &engine.domain_spec(d))))
}

/// Places `vms` on the hosts that accept VMs and are not in `exclude`, as a failure plan does
/// (see the crate documentation). VMs in `vms` do not count against any host's capacity; VMs
/// unknown to the inventory are ignored. With one excluded host and that host's protected,
/// powered-on VMs, this is [`plan_host_failure`].
pub fn place(inv: &Inventory, vms: &[VmId], exclude: &BTreeSet<HostId>, policy: &Policy) -> Plan {
    place_inner(inv, &Constraints::default(), vms, exclude, policy)
}

/// [`place`] with [`Constraints`].
pub fn place_with(
    inv: &Inventory,
    constraints: &Constraints,
    vms: &[VmId],
    exclude: &BTreeSet<HostId>,
    policy: &Policy,
) -> Result<Plan> {
    constraints.validate()?;
    Ok(place_inner(inv, constraints, vms, exclude, policy))
}

fn place_inner(
    inv: &Inventory,
    constraints: &Constraints,
    vms: &[VmId],
    exclude: &BTreeSet<HostId>,
    policy: &Policy,
) -> Plan {
    if vms.is_empty() {
        // Nothing to place: no engine built over the whole inventory for it.
        return Plan::default();
    }
    let moving: BTreeSet<&VmId> = vms.iter().collect();
    let engine = Engine::build(inv, constraints, policy, |id| moving.contains(id));
    let spec = engine.custom_spec("place", vms, exclude);
    let mut scratch = Scratch::default();
    engine.to_plan(&engine.compute(&mut scratch, &spec))
}

/// Admission control for `inv` from scratch (see [`FailoverPlans::admission`]).
pub fn admission(inv: &Inventory, constraints: &Constraints, policy: &Policy) -> Result<Admission> {
    Ok(FailoverPlans::new(inv, constraints, policy)?.admission())
}

/// Applies `deltas` to a copy of `inv`: a helper for callers that keep no inventory of their own.
pub fn applied(inv: &Inventory, deltas: &[InventoryDelta]) -> Inventory {
    let mut inv = inv.clone();
    for d in deltas {
        inv.apply(d);
    }
    inv
}

#[cfg(test)]
mod tests {
    use super::*;
    use am_core::{Host, Resources, RestartPriority, Vm};

    fn inv(hosts: &[(&str, u64)], vms: &[(&str, u64, &str, RestartPriority)]) -> Inventory {
        let mut inv = Inventory::default();
        for (h, mem) in hosts {
            inv.apply(&InventoryDelta::HostUpsert(Host::new(
                *h,
                Resources::new(100_000, *mem),
            )));
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
        let inv = inv(
            &[("h1", 10_000), ("h2", 5_000)],
            &[("lo", 4_000, "h1", Low), ("hi", 4_000, "h1", High)],
        );
        let plan = plan_host_failure(&inv, &"h1".into(), &Policy::default());
        assert_eq!(plan.placements.get(&VmId::from("hi")), Some(&HostId::from("h2")));
        assert_eq!(plan.unplaced.get(&VmId::from("lo")), Some(&Unplaced::NoCapacity));
    }

    #[test]
    fn unprotected_vms_are_not_planned() {
        let inv = inv(
            &[("h1", 10_000), ("h2", 10_000)],
            &[("off", 1_000, "h1", RestartPriority::Disabled)],
        );
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
        assert_eq!(
            plan.unplaced.values().collect::<Vec<_>>(),
            vec![&Unplaced::AntiAffinity]
        );
    }

    #[test]
    fn no_host_at_all_is_its_own_reason() {
        let inv = inv(&[("h1", 10_000)], &[("a", 1_000, "h1", RestartPriority::High)]);
        let plan = plan_host_failure(&inv, &"h1".into(), &Policy::default());
        assert_eq!(plan.unplaced[&VmId::from("a")], Unplaced::NoHost);
    }

    #[test]
    fn headroom_and_reserve_are_kept_free() {
        let inv = inv(
            &[("h1", 10_000), ("h2", 10_000)],
            &[("a", 8_000, "h1", RestartPriority::High)],
        );
        let mut policy = Policy::default();
        assert!(plan_host_failure(&inv, &"h1".into(), &policy).is_complete());
        policy.headroom_pct = 10;
        assert!(plan_host_failure(&inv, &"h1".into(), &policy).is_complete());
        policy.host_reserve = Resources::new(0, 1_001);
        assert!(!plan_host_failure(&inv, &"h1".into(), &policy).is_complete());
    }

    #[test]
    fn place_of_a_hosts_vms_is_its_failure_plan() {
        let mut inv = inv(
            &[("h1", 50_000), ("h2", 50_000), ("h3", 50_000), ("h4", 50_000)],
            &[],
        );
        for i in 0..12 {
            inv.apply(&InventoryDelta::VmUpsert(Vm::new(
                format!("v{i}").as_str(),
                Resources::new(100, 1_000 + i * 100),
                "h1",
            )));
        }
        let vms: Vec<VmId> = inv.vms.keys().cloned().collect();
        let policy = Policy::default();
        let by_place = place(&inv, &vms, &BTreeSet::from(["h1".into()]), &policy);
        assert_eq!(by_place, plan_host_failure(&inv, &"h1".into(), &policy));
        // Twelve VMs, at most four per host while others have room: spread over three hosts.
        let targets: BTreeSet<&HostId> = by_place.placements.values().collect();
        assert_eq!(targets.len(), 3);
    }
}
