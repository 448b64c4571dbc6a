//! The compiled cluster and the placement greedy behind every plan.
//!
//! This module holds the [`Engine`] (its host and VM tables, built from an inventory and the
//! constraints), the id lookups and the read-outs for admission. The rest is in:
//!
//! - [`index`]: the typed slot indices (`HostIx`, `VmIx`, ...), the vectors they index, the interner;
//! - [`apply`]: inventory deltas applied to the tables, and what each changed ([`Change`]);
//! - [`spec`]: what a plan is for ([`Spec`]): the failure of a host, of a domain, or any VMs;
//! - [`feasible`]: whether a host takes a VM, and its key;
//! - [`local`]: what a run put on the hosts so far (the [`Scratch`] of a run, or one host's share);
//! - [`search`]: the greedy runs and the portfolio of strategies ([`Computed`]);
//! - [`incremental`]: bringing computed runs up to date after a change;
//! - [`output`]: plans written from runs, whole or patched.
//!
//! # The model
//!
//! A plan places an ordered list of VMs (priority, then size, largest first) on the hosts that
//! remain. Each step is an argmin: the VM goes to the feasible host with the smallest key, ties
//! broken by host id. The key of a host depends only on the host's own state (its baseline in the
//! cluster, plus what earlier steps of the same plan put on it). Three strategies differ only in
//! the key:
//!
//! - `Scatter` (the default): `(soft-rule penalty, already has fan_in VMs of this plan, position in
//!   a per-plan pseudo-random host order)`. Each failure spreads over its own hosts.
//! - `BestFit`: `(penalty, memory left after, position)`.
//! - `FirstFit`: `(host id)`, ignoring soft rules: plain first-fit decreasing.
//!
//! # Why updates are cheap and exact
//!
//! Say host `x` changes and a plan never chose `x`. Then, up to the first step where `x` (in its
//! new state) would be feasible with a smaller key than the host that step chose, every step
//! chooses the same host as before, and `x` stays untouched, so its key there is its baseline key.
//! So the plan is unchanged if there is no such step, and otherwise it is replayed from that step
//! on. If the plan did choose `x`, it is replayed from the first step where `x` could have
//! competed at all (a lower bound of its key below the chosen key). A step that left its VM
//! unplaced is replayed whenever any usable host changes, as its reason may change. The result
//! is always the full recomputation; the proptests check it.

mod apply;
mod feasible;
mod incremental;
mod index;
mod local;
mod output;
mod search;
mod spec;

pub(crate) use index::{HostIx, VmIx};
pub(crate) use local::Scratch;
pub(crate) use search::Computed;
pub(crate) use spec::Spec;

use crate::Policy;
use crate::constraints::{Constraints, RuleKind};
use crate::hash::hash_str;
use am_core::{HostId, InventoryDelta, Resources, RestartPriority, VmId};
use index::{AffIx, AntiIx, DomainIx, GroupIx, Interner, IxVec, RuleIx};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A host as a placement target.
#[derive(Clone, Debug)]
struct HostRec {
    id: HostId,
    present: bool,
    accepts: bool,
    domain: Option<DomainIx>,
    capacity: Resources,
    limit: Resources,
    used: Resources,
    /// Anti-affinity groups of the VMs registered here, with counts, sorted.
    anti: Vec<(AntiIx, u32)>,
    /// Affinity groups of the VMs registered here, with counts, sorted.
    aff: Vec<(AffIx, u32)>,
    /// Host groups (of the constraints) it belongs to, sorted.
    groups: Vec<GroupIx>,
    hash: u64,
    /// VMs registered here.
    vms: BTreeSet<VmIx>,
}

/// Whether the sorted counted list `v` (of [`HostRec::anti`] or [`HostRec::aff`]) holds `g`.
fn has<G: Ord>(v: &[(G, u32)], g: G) -> bool {
    v.binary_search_by(|e| e.0.cmp(&g)).is_ok()
}

/// A VM: what it needs, where it runs, and the rules it is under.
#[derive(Clone, Debug)]
struct VmRec {
    id: VmId,
    present: bool,
    demand: Resources,
    on: bool,
    protected: bool,
    priority: RestartPriority,
    host: Option<HostIx>,
    anti: Option<AntiIx>,
    aff: Option<AffIx>,
    /// Its fault-tolerant partner.
    ft: Option<VmIx>,
    rules: Option<RuleIx>,
}

impl VmRec {
    fn planned(&self) -> bool {
        self.present && self.protected && self.on && self.host.is_some()
    }
    /// What the VM contributes to its host's state.
    fn host_sig(&self) -> (bool, Option<HostIx>, Resources, Option<AntiIx>, Option<AffIx>) {
        let load = if self.on { self.demand } else { Resources::ZERO };
        (self.present, self.host, load, self.anti, self.aff)
    }
    #[allow(clippy::type_complexity)]
    fn plan_sig(
        &self,
    ) -> (
        bool,
        Option<HostIx>,
        Resources,
        bool,
        bool,
        RestartPriority,
        Option<AntiIx>,
        Option<AffIx>,
    ) {
        (
            self.present,
            self.host,
            self.demand,
            self.on,
            self.protected,
            self.priority,
            self.anti,
            self.aff,
        )
    }
}

/// The host rules of one VM, by kind.
#[derive(Clone, Debug, Default)]
struct RuleSet {
    must_in: Vec<GroupIx>,
    must_not: Vec<GroupIx>,
    should_in: Vec<GroupIx>,
    should_not: Vec<GroupIx>,
}

impl RuleSet {
    fn soft(&self) -> bool {
        !self.should_in.is_empty() || !self.should_not.is_empty()
    }
}

fn pct_of(x: u64, pct: u8) -> u64 {
    (u128::from(x) * u128::from(pct.min(100)) / 100) as u64
}

/// What a host offers to failover placements under `policy`.
pub(crate) fn limit_of(policy: &Policy, capacity: Resources) -> Resources {
    let headroom = Resources::new(
        pct_of(capacity.cpu_mhz, policy.headroom_pct),
        pct_of(capacity.mem_mib, policy.headroom_pct),
    );
    capacity
        .saturating_sub(&policy.host_reserve)
        .saturating_sub(&headroom)
}

/// The compiled cluster.
#[derive(Clone, Debug)]
pub(crate) struct Engine {
    policy: Policy,
    hosts: IxVec<HostIx, HostRec>,
    host_ix: BTreeMap<HostId, HostIx>,
    vms: IxVec<VmIx, VmRec>,
    vm_ix: HashMap<VmId, VmIx>,
    anti_names: Interner<AntiIx>,
    aff_names: Interner<AffIx>,
    domain_names: Interner<DomainIx>,
    group_names: Interner<GroupIx>,
    /// Hosts (any) that run a VM of each affinity group.
    aff_holders: IxVec<AffIx, Vec<HostIx>>,
    /// Present hosts of each failure domain.
    domain_hosts: IxVec<DomainIx, BTreeSet<HostIx>>,
    rule_sets: IxVec<RuleIx, RuleSet>,
}

impl Engine {
    /// An empty cluster with these rules. The constraints must be valid.
    pub(crate) fn new(policy: &Policy, cons: &Constraints) -> Engine {
        let mut e = Engine {
            policy: policy.clone(),
            hosts: IxVec::default(),
            host_ix: BTreeMap::new(),
            vms: IxVec::default(),
            vm_ix: HashMap::new(),
            anti_names: Interner::default(),
            aff_names: Interner::default(),
            domain_names: Interner::default(),
            group_names: Interner::default(),
            aff_holders: IxVec::default(),
            domain_hosts: IxVec::default(),
            rule_sets: IxVec::default(),
        };
        for (name, hosts) in &cons.host_groups {
            let g = e.group_names.get_or_add(name);
            for h in hosts {
                let slot = e.host_slot(h);
                let groups = &mut e.hosts[slot].groups;
                if let Err(i) = groups.binary_search(&g) {
                    groups.insert(i, g);
                }
            }
        }
        let mut sets: BTreeMap<VmIx, RuleSet> = BTreeMap::new();
        for rule in &cons.host_rules {
            let g = e.group_names.get_or_add(&rule.host_group);
            for vm in &rule.vms {
                let slot = e.vm_slot(vm);
                let set = sets.entry(slot).or_default();
                let list = match rule.kind {
                    RuleKind::MustRunOn => &mut set.must_in,
                    RuleKind::MustNotRunOn => &mut set.must_not,
                    RuleKind::ShouldRunOn => &mut set.should_in,
                    RuleKind::ShouldNotRunOn => &mut set.should_not,
                };
                if !list.contains(&g) {
                    list.push(g);
                }
            }
        }
        for (slot, set) in sets {
            e.vms[slot].rules = Some(e.rule_sets.push(set));
        }
        for pair in &cons.ft_pairs {
            let a = e.vm_slot(&pair.primary);
            let b = e.vm_slot(&pair.secondary);
            e.vms[a].ft = Some(b);
            e.vms[b].ft = Some(a);
        }
        e
    }

    /// The cluster of `inv`; the VMs in `detached` are known but count on no host.
    pub(crate) fn build<'a>(
        inv: &am_core::Inventory,
        cons: &Constraints,
        policy: &Policy,
        detached: impl Fn(&VmId) -> bool + 'a,
    ) -> Engine {
        let mut e = Engine::new(policy, cons);
        e.hosts.reserve(inv.hosts.len());
        e.vms.reserve(inv.vms.len());
        for h in inv.hosts.values() {
            e.apply(&InventoryDelta::HostUpsert(h.clone()));
        }
        for vm in inv.vms.values() {
            if detached(&vm.id) {
                let mut v = vm.clone();
                v.host = None;
                e.insert_vm(&v);
            } else {
                e.insert_vm(vm);
            }
        }
        e
    }

    pub(crate) fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The slot of host `id`, a new (absent) one if it has none.
    fn host_slot(&mut self, id: &HostId) -> HostIx {
        if let Some(&s) = self.host_ix.get(id) {
            return s;
        }
        let s = self.hosts.push(HostRec {
            id: id.clone(),
            present: false,
            accepts: false,
            domain: None,
            capacity: Resources::ZERO,
            limit: Resources::ZERO,
            used: Resources::ZERO,
            anti: Vec::new(),
            aff: Vec::new(),
            groups: Vec::new(),
            hash: hash_str("host", id.as_str()),
            vms: BTreeSet::new(),
        });
        self.host_ix.insert(id.clone(), s);
        s
    }

    /// The slot of VM `id`, a new (absent) one if it has none.
    fn vm_slot(&mut self, id: &VmId) -> VmIx {
        if let Some(&s) = self.vm_ix.get(id) {
            return s;
        }
        let s = self.vms.push(VmRec {
            id: id.clone(),
            present: false,
            demand: Resources::ZERO,
            on: false,
            protected: false,
            priority: RestartPriority::Disabled,
            host: None,
            anti: None,
            aff: None,
            ft: None,
            rules: None,
        });
        self.vm_ix.insert(id.clone(), s);
        s
    }

    // ----- id lookups --------------------------------------------------------------------------

    pub(crate) fn host_of(&self, id: &HostId) -> Option<HostIx> {
        self.host_ix.get(id).copied()
    }

    pub(crate) fn vm_of(&self, id: &VmId) -> Option<VmIx> {
        self.vm_ix.get(id).copied()
    }

    pub(crate) fn host_id(&self, h: HostIx) -> &HostId {
        &self.hosts[h].id
    }

    pub(crate) fn vm_id(&self, v: VmIx) -> &VmId {
        &self.vms[v].id
    }

    pub(crate) fn host_present(&self, h: HostIx) -> bool {
        self.hosts.get(h).is_some_and(|r| r.present)
    }

    pub(crate) fn domain_of_name(&self, name: &str) -> Option<DomainIx> {
        self.domain_names.get(name)
    }

    pub(crate) fn domain_name(&self, d: DomainIx) -> &str {
        self.domain_names.name(d)
    }

    pub(crate) fn domain_has_hosts(&self, d: DomainIx) -> bool {
        self.domain_hosts.get(d).is_some_and(|s| !s.is_empty())
    }

    /// Present hosts, by id.
    pub(crate) fn present_hosts(&self) -> impl Iterator<Item = HostIx> + '_ {
        self.host_ix.values().copied().filter(|&h| self.hosts[h].present)
    }

    /// Domains with present hosts, by name.
    pub(crate) fn domains(&self) -> Vec<DomainIx> {
        let mut d: Vec<DomainIx> = self
            .domain_hosts
            .indices()
            .filter(|&d| self.domain_has_hosts(d))
            .collect();
        d.sort_by(|a, b| self.domain_name(*a).cmp(self.domain_name(*b)));
        d
    }

    /// The host a VM slot is registered on.
    pub(crate) fn vm_host(&self, v: VmIx) -> Option<HostIx> {
        self.vms[v].host
    }

    // ----- read-outs for admission and tests ---------------------------------------------------

    /// `(capacity after the per-host reserve, limit)` of every usable host.
    pub(crate) fn usable_capacities(&self) -> Vec<(Resources, Resources)> {
        self.host_ix
            .values()
            .filter(|&&h| self.usable(h))
            .map(|&h| {
                let r = &self.hosts[h];
                (r.capacity.saturating_sub(&self.policy.host_reserve), r.limit)
            })
            .collect()
    }

    /// Demands of the powered-on VMs registered on some host.
    pub(crate) fn running_demands(&self) -> impl Iterator<Item = Resources> + '_ {
        self.vms
            .iter()
            .filter(|v| v.present && v.on && v.host.is_some())
            .map(|v| v.demand)
    }
}
