//! The compiled cluster and the placement greedy behind every plan.
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

use crate::constraints::{Constraints, RuleKind};
use crate::hash::{hash_str, ord};
use crate::{Plan, Policy, Unplaced};
use am_core::{HostId, InventoryDelta, PowerState, Resources, RestartPriority, Vm, VmId};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// No host, no VM, no group.
pub(crate) const NONE: u32 = u32::MAX;

/// A host's key in one step. Smaller is better; equal keys go to the smaller host id.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Key {
    pen: u32,
    a: u64,
    b: u64,
}

/// How a plan picks among feasible hosts.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Strategy {
    Scatter,
    BestFit,
    FirstFit,
}

/// The first constraint a host breaks for a VM.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Check {
    Ok,
    Unusable,
    Capacity,
    Rule,
    Anti,
    Ft,
}

#[derive(Clone, Debug)]
struct HostRec {
    id: HostId,
    present: bool,
    accepts: bool,
    domain: u32,
    capacity: Resources,
    limit: Resources,
    used: Resources,
    /// Anti-affinity groups of the VMs registered here, with counts, sorted.
    anti: Vec<(u32, u32)>,
    /// Affinity groups of the VMs registered here, with counts, sorted.
    aff: Vec<(u32, u32)>,
    /// Host groups (of the constraints) it belongs to, sorted.
    groups: Vec<u32>,
    hash: u64,
    /// VMs registered here.
    vms: BTreeSet<u32>,
}

#[derive(Clone, Debug)]
struct VmRec {
    id: VmId,
    present: bool,
    demand: Resources,
    on: bool,
    protected: bool,
    priority: RestartPriority,
    host: u32,
    anti: u32,
    aff: u32,
    ft: u32,
    rules: u32,
}

impl VmRec {
    fn planned(&self) -> bool {
        self.present && self.protected && self.on && self.host != NONE
    }
    /// What the VM contributes to its host's state.
    fn host_sig(&self) -> (bool, u32, Resources, u32, u32) {
        let load = if self.on { self.demand } else { Resources::ZERO };
        (self.present, self.host, load, self.anti, self.aff)
    }
    fn plan_sig(&self) -> (bool, u32, Resources, bool, bool, RestartPriority, u32, u32) {
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

#[derive(Clone, Debug, Default)]
struct RuleSet {
    must_in: Vec<u32>,
    must_not: Vec<u32>,
    should_in: Vec<u32>,
    should_not: Vec<u32>,
}

impl RuleSet {
    fn soft(&self) -> bool {
        !self.should_in.is_empty() || !self.should_not.is_empty()
    }
}

#[derive(Clone, Debug, Default)]
struct Interner {
    map: HashMap<String, u32>,
    names: Vec<String>,
}

impl Interner {
    fn get_or_add(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.map.get(s) {
            return i;
        }
        let i = self.names.len() as u32;
        self.map.insert(s.to_owned(), i);
        self.names.push(s.to_owned());
        i
    }
    fn name(&self, i: u32) -> &str {
        self.names.get(i as usize).map_or("", String::as_str)
    }
}

/// What to plan: the VMs, in order, and the hosts that are gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Spec {
    /// Excluded host slots, sorted.
    pub excluded: Vec<u32>,
    /// Seed of the host order.
    pub seed: u64,
    /// VM slots in placement order.
    pub vms: Vec<u32>,
}

impl Spec {
    pub fn excludes(&self, host: u32) -> bool {
        self.excluded.binary_search(&host).is_ok()
    }
}

/// One decision of a greedy run.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Step {
    vm: u32,
    host: u32,
    key: Key,
    reason: Option<Unplaced>,
}

/// A step that left its VM out: how many usable hosts each constraint ruled out (the reason is
/// derived from these counts), and how many would take the VM in the baseline.
#[derive(Clone, Debug)]
struct Miss {
    step: usize,
    /// Hosts ruled out by capacity, host rule, anti-affinity, FT partner.
    counts: [u32; 4],
    /// Hosts where the VM fits the cluster without this plan's placements.
    base_ok: u32,
    /// For each changing host before the change (noted by [`Engine::note_old`]): its class, and
    /// whether it counted in `base_ok`.
    old: Vec<(u32, Check, bool)>,
}

fn class_index(c: Check) -> Option<usize> {
    match c {
        Check::Capacity => Some(0),
        Check::Rule => Some(1),
        Check::Anti => Some(2),
        Check::Ft => Some(3),
        Check::Ok | Check::Unusable => None,
    }
}

fn reason_of(counts: &[u32; 4]) -> Unplaced {
    if counts[2] > 0 {
        Unplaced::AntiAffinity
    } else if counts[3] > 0 {
        Unplaced::FaultTolerance
    } else if counts[1] > 0 {
        Unplaced::HostRule
    } else if counts[0] > 0 {
        Unplaced::NoCapacity
    } else {
        Unplaced::NoHost
    }
}

/// A greedy run and what its incremental checks need.
#[derive(Clone, Debug)]
pub(crate) struct Trace {
    strategy: Strategy,
    steps: Vec<Step>,
    misses: Vec<Miss>,
    /// Hosts chosen by some step, sorted.
    touched: Vec<u32>,
    /// The largest (key, host) chosen.
    max: Option<(Key, u32)>,
    /// The largest (key, host) chosen with no penalty and no fan-in excess.
    max_plain: Option<(Key, u32)>,
    /// Steps that chose a host with a penalty or over its fan-in, in order.
    special: Vec<u32>,
    /// (host, step) of every placement, sorted.
    by_host: Vec<(u32, u32)>,
}

impl Trace {
    /// Whether another strategy might place more: some VM left out fits the baseline somewhere.
    fn improvable(&self) -> bool {
        self.misses.iter().any(|m| m.base_ok > 0)
    }
}

/// The candidate runs of a plan and which one the plan is.
#[derive(Clone, Debug)]
pub(crate) struct Computed {
    pub traces: Vec<Trace>,
    pub chosen: usize,
}

impl Computed {
    /// Whether some run left a VM out.
    pub fn has_misses(&self) -> bool {
        self.traces.iter().any(|t| !t.misses.is_empty())
    }
}

/// What a delta changed.
#[derive(Clone, Debug, Default)]
pub(crate) struct Change {
    /// Hosts whose state as a target changed.
    pub targets: Vec<u32>,
    /// Those of `targets` that only got tighter: no VM can fit them now that did not before,
    /// and no key got smaller (less room, more groups and VMs, no new affinity group, not
    /// newly usable).
    pub tight: Vec<u32>,
    /// Hosts whose own failure plan has other VMs (or VMs with other attributes) now.
    pub respec_hosts: Vec<u32>,
    /// Failure domains likewise.
    pub respec_domains: Vec<u32>,
    /// A host that left.
    pub removed_host: Option<HostId>,
    /// The VM whose planning attributes changed, if the change was to a VM.
    pub vm: Option<u32>,
}

impl Change {
    fn push(v: &mut Vec<u32>, x: u32) {
        if x != NONE && !v.contains(&x) {
            v.push(x);
        }
    }
}

/// Per-run state, kept between runs to reuse its allocations.
#[derive(Clone, Debug, Default)]
pub(crate) struct Scratch {
    excluded: Vec<bool>,
    local_used: Vec<Resources>,
    local_count: Vec<u32>,
    local_anti: Vec<Vec<u32>>,
    local_aff: Vec<Vec<u32>>,
    touched: Vec<u32>,
    placed: HashMap<u32, u32>,
    /// Affinity group -> hosts this run put a VM of it on.
    aff_local: HashMap<u32, Vec<u32>>,
    order: Vec<(u64, u32)>,
    pos: Vec<u32>,
    next: Vec<u32>,
}

/// What a run knows beyond the baseline: nothing, or a [`Scratch`].
trait Local {
    fn used(&self, h: u32) -> Resources;
    fn has_anti(&self, h: u32, g: u32) -> bool;
    fn has_aff(&self, h: u32, g: u32) -> bool;
    fn placed_on(&self, vm: u32) -> Option<u32>;
    fn count(&self, h: u32) -> u32;
}

struct Baseline;

impl Local for Baseline {
    fn used(&self, _: u32) -> Resources {
        Resources::ZERO
    }
    fn has_anti(&self, _: u32, _: u32) -> bool {
        false
    }
    fn has_aff(&self, _: u32, _: u32) -> bool {
        false
    }
    fn placed_on(&self, _: u32) -> Option<u32> {
        None
    }
    fn count(&self, _: u32) -> u32 {
        0
    }
}

impl Local for Scratch {
    fn used(&self, h: u32) -> Resources {
        self.local_used[h as usize]
    }
    fn has_anti(&self, h: u32, g: u32) -> bool {
        self.local_anti[h as usize].contains(&g)
    }
    fn has_aff(&self, h: u32, g: u32) -> bool {
        self.local_aff[h as usize].contains(&g)
    }
    fn placed_on(&self, vm: u32) -> Option<u32> {
        if self.placed.is_empty() {
            None
        } else {
            self.placed.get(&vm).copied()
        }
    }
    fn count(&self, h: u32) -> u32 {
        self.local_count[h as usize]
    }
}

/// One host's share of a run, followed step by step: what the run put on it so far.
#[derive(Clone, Debug, Default)]
struct One {
    h: u32,
    used: Resources,
    count: u32,
    anti: Vec<u32>,
    aff: Vec<u32>,
    vms: Vec<u32>,
}

impl One {
    fn new(h: u32) -> One {
        One { h, ..One::default() }
    }
    fn add(&mut self, r: &VmRec, v: u32) {
        self.used += r.demand;
        self.count += 1;
        if r.anti != NONE {
            self.anti.push(r.anti);
        }
        if r.aff != NONE {
            self.aff.push(r.aff);
        }
        self.vms.push(v);
    }
}

impl Local for One {
    fn used(&self, h: u32) -> Resources {
        if h == self.h { self.used } else { Resources::ZERO }
    }
    fn has_anti(&self, h: u32, g: u32) -> bool {
        h == self.h && self.anti.contains(&g)
    }
    fn has_aff(&self, h: u32, g: u32) -> bool {
        h == self.h && self.aff.contains(&g)
    }
    fn placed_on(&self, vm: u32) -> Option<u32> {
        self.vms.contains(&vm).then_some(self.h)
    }
    fn count(&self, h: u32) -> u32 {
        if h == self.h { self.count } else { 0 }
    }
}

impl Scratch {
    fn find(&mut self, mut i: usize) -> usize {
        while self.next[i] as usize != i {
            let n = self.next[i] as usize;
            self.next[i] = self.next[n];
            i = n;
        }
        i
    }
}

fn has(v: &[(u32, u32)], g: u32) -> bool {
    v.binary_search_by_key(&g, |e| e.0).is_ok()
}

fn add_count(v: &mut Vec<(u32, u32)>, g: u32) -> bool {
    match v.binary_search_by_key(&g, |e| e.0) {
        Ok(i) => {
            v[i].1 += 1;
            false
        }
        Err(i) => {
            v.insert(i, (g, 1));
            true
        }
    }
}

fn sub_count(v: &mut Vec<(u32, u32)>, g: u32) -> bool {
    if let Ok(i) = v.binary_search_by_key(&g, |e| e.0) {
        if v[i].1 > 1 {
            v[i].1 -= 1;
        } else {
            v.remove(i);
            return true;
        }
    }
    false
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
    hosts: Vec<HostRec>,
    host_ix: BTreeMap<HostId, u32>,
    vms: Vec<VmRec>,
    vm_ix: HashMap<VmId, u32>,
    anti_names: Interner,
    aff_names: Interner,
    domain_names: Interner,
    group_names: Interner,
    /// Hosts (any) that run a VM of each affinity group.
    aff_holders: Vec<Vec<u32>>,
    /// Present hosts of each failure domain.
    domain_hosts: Vec<BTreeSet<u32>>,
    rule_sets: Vec<RuleSet>,
}

impl Engine {
    /// An empty cluster with these rules. The constraints must be valid.
    pub fn new(policy: &Policy, cons: &Constraints) -> Engine {
        let mut e = Engine {
            policy: policy.clone(),
            hosts: Vec::new(),
            host_ix: BTreeMap::new(),
            vms: Vec::new(),
            vm_ix: HashMap::new(),
            anti_names: Interner::default(),
            aff_names: Interner::default(),
            domain_names: Interner::default(),
            group_names: Interner::default(),
            aff_holders: Vec::new(),
            domain_hosts: Vec::new(),
            rule_sets: Vec::new(),
        };
        for (name, hosts) in &cons.host_groups {
            let g = e.group_names.get_or_add(name);
            for h in hosts {
                let slot = e.host_slot(h);
                let groups = &mut e.hosts[slot as usize].groups;
                if let Err(i) = groups.binary_search(&g) {
                    groups.insert(i, g);
                }
            }
        }
        let mut sets: BTreeMap<u32, RuleSet> = BTreeMap::new();
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
            e.vms[slot as usize].rules = e.rule_sets.len() as u32;
            e.rule_sets.push(set);
        }
        for pair in &cons.ft_pairs {
            let a = e.vm_slot(&pair.primary);
            let b = e.vm_slot(&pair.secondary);
            e.vms[a as usize].ft = b;
            e.vms[b as usize].ft = a;
        }
        e
    }

    /// The cluster of `inv`; the VMs in `detached` are known but count on no host.
    pub fn build<'a>(
        inv: &am_core::Inventory,
        cons: &Constraints,
        policy: &Policy,
        detached: impl Fn(&VmId) -> bool + 'a,
    ) -> Engine {
        let mut e = Engine::new(policy, cons);
        for h in inv.hosts.values() {
            e.apply(&InventoryDelta::HostUpsert(h.clone()));
        }
        for vm in inv.vms.values() {
            if detached(&vm.id) {
                let mut v = vm.clone();
                v.host = None;
                e.upsert_vm(&v);
            } else {
                e.upsert_vm(vm);
            }
        }
        e
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    fn host_slot(&mut self, id: &HostId) -> u32 {
        if let Some(&s) = self.host_ix.get(id) {
            return s;
        }
        let s = self.hosts.len() as u32;
        self.hosts.push(HostRec {
            id: id.clone(),
            present: false,
            accepts: false,
            domain: NONE,
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

    fn vm_slot(&mut self, id: &VmId) -> u32 {
        if let Some(&s) = self.vm_ix.get(id) {
            return s;
        }
        let s = self.vms.len() as u32;
        self.vms.push(VmRec {
            id: id.clone(),
            present: false,
            demand: Resources::ZERO,
            on: false,
            protected: false,
            priority: RestartPriority::Disabled,
            host: NONE,
            anti: NONE,
            aff: NONE,
            ft: NONE,
            rules: NONE,
        });
        self.vm_ix.insert(id.clone(), s);
        s
    }

    pub fn host_of(&self, id: &HostId) -> Option<u32> {
        self.host_ix.get(id).copied()
    }

    pub fn vm_of(&self, id: &VmId) -> Option<u32> {
        self.vm_ix.get(id).copied()
    }

    pub fn host_id(&self, h: u32) -> &HostId {
        &self.hosts[h as usize].id
    }

    pub fn vm_id(&self, v: u32) -> &VmId {
        &self.vms[v as usize].id
    }

    pub fn host_present(&self, h: u32) -> bool {
        self.hosts.get(h as usize).is_some_and(|r| r.present)
    }

    pub fn domain_of_name(&self, name: &str) -> Option<u32> {
        self.domain_names.map.get(name).copied()
    }

    pub fn domain_name(&self, d: u32) -> &str {
        self.domain_names.name(d)
    }

    pub fn domain_has_hosts(&self, d: u32) -> bool {
        self.domain_hosts.get(d as usize).is_some_and(|s| !s.is_empty())
    }

    /// Present hosts, by id.
    pub fn present_hosts(&self) -> impl Iterator<Item = u32> + '_ {
        self.host_ix
            .values()
            .copied()
            .filter(|&h| self.hosts[h as usize].present)
    }

    /// Domains with present hosts, by name.
    pub fn domains(&self) -> Vec<u32> {
        let mut d: Vec<u32> = (0..self.domain_hosts.len() as u32)
            .filter(|&d| self.domain_has_hosts(d))
            .collect();
        d.sort_by(|a, b| self.domain_name(*a).cmp(self.domain_name(*b)));
        d
    }

    fn detach(&mut self, v: u32) {
        let r = &self.vms[v as usize];
        let (h, on, demand, anti, aff) = (r.host, r.on, r.demand, r.anti, r.aff);
        if h == NONE {
            return;
        }
        let host = &mut self.hosts[h as usize];
        host.vms.remove(&v);
        if on {
            host.used = host.used.saturating_sub(&demand);
        }
        if anti != NONE {
            sub_count(&mut host.anti, anti);
        }
        if aff != NONE && sub_count(&mut host.aff, aff) {
            if let Some(list) = self.aff_holders.get_mut(aff as usize) {
                list.retain(|&x| x != h);
            }
        }
    }

    fn attach(&mut self, v: u32) {
        let r = &self.vms[v as usize];
        let (h, on, demand, anti, aff) = (r.host, r.on, r.demand, r.anti, r.aff);
        if h == NONE {
            return;
        }
        let host = &mut self.hosts[h as usize];
        host.vms.insert(v);
        if on {
            host.used += demand;
        }
        if anti != NONE {
            add_count(&mut host.anti, anti);
        }
        if aff != NONE && add_count(&mut host.aff, aff) {
            if self.aff_holders.len() <= aff as usize {
                self.aff_holders.resize(aff as usize + 1, Vec::new());
            }
            if let Err(i) = self.aff_holders[aff as usize].binary_search(&h) {
                self.aff_holders[aff as usize].insert(i, h);
            }
        }
    }

    fn snapshot(&self, h: u32) -> HostRec {
        self.hosts[h as usize].clone()
    }

    /// Whether host `h` now is at most as good a target as `old` for any VM.
    fn tighter(&self, h: u32, old: &HostRec) -> bool {
        let new = &self.hosts[h as usize];
        let subset = |a: &[(u32, u32)], b: &[(u32, u32)]| a.iter().all(|(g, _)| has(b, *g));
        (!new.present || !new.accepts || (old.present && old.accepts))
            && new.limit.fits_in(&old.limit)
            && old.used.fits_in(&new.used)
            && subset(&old.anti, &new.anti)
            && subset(&new.aff, &old.aff)
            && old.vms.is_subset(&new.vms)
    }

    fn upsert_vm(&mut self, vm: &Vm) -> Change {
        let slot = self.vm_slot(&vm.id);
        let host = match &vm.host {
            Some(h) => self.host_slot(h),
            None => NONE,
        };
        let anti = vm
            .anti_affinity_group
            .as_deref()
            .map_or(NONE, |g| self.anti_names.get_or_add(g));
        let aff = vm
            .affinity_group
            .as_deref()
            .map_or(NONE, |g| self.aff_names.get_or_add(g));
        let old = self.vms[slot as usize].clone();
        let mut new = old.clone();
        new.present = true;
        new.demand = vm.demand;
        new.on = vm.power == PowerState::PoweredOn;
        new.protected = vm.is_protected();
        new.priority = vm.priority;
        new.host = host;
        new.anti = anti;
        new.aff = aff;
        self.replace_vm(slot, old, new)
    }

    fn replace_vm(&mut self, slot: u32, old: VmRec, new: VmRec) -> Change {
        let mut ch = Change::default();
        if old.plan_sig() == new.plan_sig() {
            return ch;
        }
        ch.vm = Some(slot);
        let moved = old.host_sig() != new.host_sig();
        let mut before = Vec::new();
        if moved {
            for h in [old.host, new.host] {
                if h != NONE && !before.iter().any(|(x, _)| *x == h) {
                    before.push((h, self.snapshot(h)));
                }
            }
        }
        if old.present {
            self.detach(slot);
        }
        self.vms[slot as usize] = new.clone();
        if new.present {
            self.attach(slot);
        }
        for (h, snap) in before {
            ch.targets.push(h);
            if self.tighter(h, &snap) {
                ch.tight.push(h);
            }
        }
        for r in [&old, &new] {
            if r.planned() && self.hosts[r.host as usize].present {
                Change::push(&mut ch.respec_hosts, r.host);
                Change::push(&mut ch.respec_domains, self.hosts[r.host as usize].domain);
            }
        }
        ch
    }

    /// Applies one inventory change and says what it changed.
    pub fn apply(&mut self, delta: &InventoryDelta) -> Change {
        match delta {
            InventoryDelta::VmUpsert(vm) => self.upsert_vm(vm),
            InventoryDelta::VmRemoved(id) => match self.vm_ix.get(id) {
                Some(&slot) => {
                    let old = self.vms[slot as usize].clone();
                    let mut new = old.clone();
                    new.present = false;
                    self.replace_vm(slot, old, new)
                }
                None => Change::default(),
            },
            InventoryDelta::HostUpsert(h) => {
                let slot = self.host_slot(&h.id);
                let domain = h
                    .failure_domain
                    .as_deref()
                    .map_or(NONE, |d| self.domain_names.get_or_add(d));
                let limit = limit_of(&self.policy, h.capacity);
                let accepts = h.accepts_vms();
                let rec = &self.hosts[slot as usize];
                let mut ch = Change::default();
                if rec.present && rec.capacity == h.capacity && rec.accepts == accepts && rec.domain == domain
                {
                    return ch;
                }
                let (was, old_domain) = (rec.present, rec.domain);
                if !was || rec.capacity != h.capacity || rec.accepts != accepts {
                    ch.targets.push(slot);
                    if was && limit.fits_in(&rec.limit) && (rec.accepts || !accepts) {
                        ch.tight.push(slot);
                    }
                }
                if !was {
                    ch.respec_hosts.push(slot);
                }
                if !was || old_domain != domain {
                    if was && old_domain != NONE {
                        self.domain_hosts[old_domain as usize].remove(&slot);
                        ch.respec_domains.push(old_domain);
                    }
                    if domain != NONE {
                        if self.domain_hosts.len() <= domain as usize {
                            self.domain_hosts.resize(domain as usize + 1, BTreeSet::new());
                        }
                        self.domain_hosts[domain as usize].insert(slot);
                        Change::push(&mut ch.respec_domains, domain);
                    }
                }
                let rec = &mut self.hosts[slot as usize];
                rec.present = true;
                rec.capacity = h.capacity;
                rec.limit = limit;
                rec.accepts = accepts;
                rec.domain = domain;
                ch
            }
            InventoryDelta::HostRemoved(id) => {
                let mut ch = Change::default();
                let Some(&slot) = self.host_ix.get(id) else {
                    return ch;
                };
                let rec = &mut self.hosts[slot as usize];
                if !rec.present {
                    return ch;
                }
                rec.present = false;
                rec.accepts = false;
                let domain = rec.domain;
                rec.domain = NONE;
                if domain != NONE {
                    self.domain_hosts[domain as usize].remove(&slot);
                    ch.respec_domains.push(domain);
                }
                ch.targets.push(slot);
                ch.tight.push(slot);
                ch.removed_host = Some(id.clone());
                ch
            }
            InventoryDelta::DatastoreUpsert(_) | InventoryDelta::Snapshots { .. } => Change::default(),
        }
    }

    // ----- specs -------------------------------------------------------------------------------

    fn order_vms(&self, vms: &mut [u32]) {
        vms.sort_by(|&a, &b| {
            let (x, y) = (&self.vms[a as usize], &self.vms[b as usize]);
            y.priority
                .cmp(&x.priority)
                .then(y.demand.mem_mib.cmp(&x.demand.mem_mib))
                .then(y.demand.cpu_mhz.cmp(&x.demand.cpu_mhz))
                .then_with(|| x.id.cmp(&y.id))
        });
    }

    fn planned_on(&self, hosts: &[u32]) -> Vec<u32> {
        let mut vms: Vec<u32> = hosts
            .iter()
            .flat_map(|&h| self.hosts[h as usize].vms.iter().copied())
            .filter(|&v| self.vms[v as usize].planned())
            .collect();
        self.order_vms(&mut vms);
        vms
    }

    /// The failure of one host: its protected, powered-on VMs.
    pub fn host_spec(&self, h: u32) -> Spec {
        Spec {
            excluded: vec![h],
            seed: hash_str("fail", self.hosts[h as usize].id.as_str()),
            vms: self.planned_on(&[h]),
        }
    }

    /// The failure of a whole domain.
    pub fn domain_spec(&self, d: u32) -> Spec {
        let excluded: Vec<u32> = self.domain_hosts[d as usize].iter().copied().collect();
        Spec {
            seed: hash_str("domain", self.domain_name(d)),
            vms: self.planned_on(&excluded),
            excluded,
        }
    }

    /// Any VMs (known ones; others are ignored) with any hosts excluded.
    pub fn custom_spec(&self, tag: &str, vms: &[VmId], exclude: &BTreeSet<HostId>) -> Spec {
        let mut excluded: Vec<u32> = exclude.iter().filter_map(|h| self.host_of(h)).collect();
        excluded.sort_unstable();
        let names: Vec<&str> = exclude.iter().map(HostId::as_str).collect();
        let seed = if exclude.len() == 1 {
            hash_str("fail", names.concat().as_str())
        } else {
            hash_str(tag, names.join("\0").as_str())
        };
        let mut slots: Vec<u32> = vms
            .iter()
            .filter_map(|v| self.vm_of(v))
            .filter(|&v| self.vms[v as usize].present)
            .collect();
        slots.sort_unstable();
        slots.dedup();
        self.order_vms(&mut slots);
        Spec {
            excluded,
            seed,
            vms: slots,
        }
    }

    /// Powered-on VMs (protected or not) registered on `hosts`.
    pub fn running_on(&self, hosts: &BTreeSet<HostId>) -> Vec<VmId> {
        hosts
            .iter()
            .filter_map(|h| self.host_of(h))
            .flat_map(|h| self.hosts[h as usize].vms.iter().copied())
            .filter(|&v| self.vms[v as usize].present && self.vms[v as usize].on)
            .map(|v| self.vms[v as usize].id.clone())
            .collect()
    }

    // ----- feasibility and keys ----------------------------------------------------------------

    fn usable(&self, h: u32) -> bool {
        let r = &self.hosts[h as usize];
        r.present && r.accepts
    }

    fn check<L: Local>(&self, v: &VmRec, h: u32, local: &L) -> Check {
        let host = &self.hosts[h as usize];
        if !(host.present && host.accepts) {
            return Check::Unusable;
        }
        let free = host
            .limit
            .saturating_sub(&host.used)
            .saturating_sub(&local.used(h));
        if !v.demand.fits_in(&free) {
            return Check::Capacity;
        }
        if v.rules != NONE {
            let rs = &self.rule_sets[v.rules as usize];
            if rs.must_in.iter().any(|g| host.groups.binary_search(g).is_err())
                || rs.must_not.iter().any(|g| host.groups.binary_search(g).is_ok())
            {
                return Check::Rule;
            }
        }
        if v.anti != NONE && (has(&host.anti, v.anti) || local.has_anti(h, v.anti)) {
            return Check::Anti;
        }
        if v.ft != NONE {
            let p = &self.vms[v.ft as usize];
            if (p.present && p.host == h) || local.placed_on(v.ft) == Some(h) {
                return Check::Ft;
            }
        }
        Check::Ok
    }

    fn penalty<L: Local>(&self, v: &VmRec, h: u32, local: &L) -> u32 {
        let host = &self.hosts[h as usize];
        let mut pen = 0;
        if v.rules != NONE {
            let rs = &self.rule_sets[v.rules as usize];
            pen += rs
                .should_in
                .iter()
                .filter(|g| host.groups.binary_search(g).is_err())
                .count() as u32;
            pen += rs
                .should_not
                .iter()
                .filter(|g| host.groups.binary_search(g).is_ok())
                .count() as u32;
        }
        if v.aff != NONE && !(has(&host.aff, v.aff) || local.has_aff(h, v.aff)) {
            pen += 1;
        }
        pen
    }

    fn soft(&self, v: &VmRec) -> bool {
        v.aff != NONE || (v.rules != NONE && self.rule_sets[v.rules as usize].soft())
    }

    /// The key of feasible host `h` for `v`.
    fn key<L: Local>(&self, strategy: Strategy, seed: u64, v: &VmRec, h: u32, local: &L) -> Key {
        let host = &self.hosts[h as usize];
        match strategy {
            Strategy::Scatter => Key {
                pen: self.penalty(v, h, local),
                a: u64::from(self.policy.fan_in > 0 && local.count(h) >= self.policy.fan_in),
                b: ord(seed, host.hash),
            },
            Strategy::BestFit => {
                let free = host
                    .limit
                    .saturating_sub(&host.used)
                    .saturating_sub(&local.used(h));
                Key {
                    pen: self.penalty(v, h, local),
                    a: free.mem_mib.saturating_sub(v.demand.mem_mib),
                    b: ord(seed, host.hash),
                }
            }
            Strategy::FirstFit => Key::default(),
        }
    }

    /// A key no host can beat in `strategy` for `h`, whatever its state.
    fn lower_bound(&self, strategy: Strategy, seed: u64, h: u32) -> Key {
        match strategy {
            Strategy::Scatter | Strategy::BestFit => Key {
                pen: 0,
                a: 0,
                b: ord(seed, self.hosts[h as usize].hash),
            },
            Strategy::FirstFit => Key::default(),
        }
    }

    fn less(&self, a: (Key, u32), b: (Key, u32)) -> bool {
        match a.0.cmp(&b.0) {
            Ordering::Less => true,
            Ordering::Greater => false,
            Ordering::Equal => self.hosts[a.1 as usize].id < self.hosts[b.1 as usize].id,
        }
    }

    // ----- runs --------------------------------------------------------------------------------

    fn begin(&self, s: &mut Scratch, spec: &Spec, strategy: Strategy) {
        let n = self.hosts.len();
        if s.excluded.len() < n {
            s.excluded.resize(n, false);
            s.local_used.resize(n, Resources::ZERO);
            s.local_count.resize(n, 0);
            s.local_anti.resize(n, Vec::new());
            s.local_aff.resize(n, Vec::new());
            s.pos.resize(n, NONE);
        }
        for &h in &spec.excluded {
            s.excluded[h as usize] = true;
        }
        s.order.clear();
        if strategy == Strategy::Scatter {
            for (h, r) in self.hosts.iter().enumerate() {
                if r.present && r.accepts && !s.excluded[h] {
                    s.order.push((ord(spec.seed, r.hash), h as u32));
                }
            }
            s.order.sort_unstable_by(|a, b| {
                a.0.cmp(&b.0)
                    .then_with(|| self.hosts[a.1 as usize].id.cmp(&self.hosts[b.1 as usize].id))
            });
            for (i, &(_, h)) in s.order.iter().enumerate() {
                s.pos[h as usize] = i as u32;
            }
            s.next.clear();
            s.next.extend(0..=s.order.len() as u32);
        }
    }

    fn end(&self, s: &mut Scratch, spec: &Spec) {
        for &h in &spec.excluded {
            s.excluded[h as usize] = false;
        }
        for &h in &s.touched {
            let h = h as usize;
            s.local_used[h] = Resources::ZERO;
            s.local_count[h] = 0;
            s.local_anti[h].clear();
            s.local_aff[h].clear();
        }
        s.touched.clear();
        s.placed.clear();
        s.aff_local.clear();
    }

    fn put(&self, s: &mut Scratch, strategy: Strategy, v: u32, h: u32) {
        let r = &self.vms[v as usize];
        let hi = h as usize;
        if s.local_count[hi] == 0 {
            s.touched.push(h);
        }
        s.local_used[hi] += r.demand;
        s.local_count[hi] += 1;
        if r.anti != NONE {
            s.local_anti[hi].push(r.anti);
        }
        if r.aff != NONE && !s.local_aff[hi].contains(&r.aff) {
            s.local_aff[hi].push(r.aff);
            s.aff_local.entry(r.aff).or_default().push(h);
        }
        if r.ft != NONE {
            s.placed.insert(v, h);
        }
        if strategy == Strategy::Scatter && self.policy.fan_in > 0 && s.local_count[hi] == self.policy.fan_in
        {
            let p = s.pos[hi] as usize;
            s.next[p] = p as u32 + 1;
        }
    }

    fn miss(&self, s: &Scratch, v: &VmRec, step: usize) -> Miss {
        let mut m = Miss {
            step,
            counts: [0; 4],
            base_ok: 0,
            old: Vec::new(),
        };
        for h in 0..self.hosts.len() as u32 {
            if s.excluded[h as usize] {
                continue;
            }
            let c = self.check(v, h, s);
            if let Some(k) = class_index(c) {
                m.counts[k] += 1;
            }
            // Untouched hosts are in their baseline state, where the VM did not fit either.
            if s.local_count[h as usize] > 0 && self.check(v, h, &Baseline) == Check::Ok {
                m.base_ok += 1;
            }
        }
        m
    }

    fn choose(&self, s: &mut Scratch, strategy: Strategy, seed: u64, v: u32) -> Option<(u32, Key)> {
        let r = &self.vms[v as usize];
        let mut best: Option<(Key, u32)> = None;
        match strategy {
            Strategy::Scatter if !self.soft(r) => {
                let mut i = s.find(0);
                while i < s.order.len() {
                    let h = s.order[i].1;
                    if self.check(r, h, s) == Check::Ok {
                        return Some((
                            h,
                            Key {
                                pen: 0,
                                a: 0,
                                b: s.order[i].0,
                            },
                        ));
                    }
                    i = s.find(i + 1);
                }
                if self.policy.fan_in == 0 {
                    return None;
                }
                for &(o, h) in &s.order {
                    if s.local_count[h as usize] >= self.policy.fan_in && self.check(r, h, s) == Check::Ok {
                        return Some((h, Key { pen: 0, a: 1, b: o }));
                    }
                }
                return None;
            }
            Strategy::Scatter => {
                // Hosts that hold the VM's affinity group, one by one; then the others in
                // order, where the penalty is at least `floor`, until a host reaches it.
                let mut floor = 0;
                if r.aff != NONE {
                    floor = 1;
                    let base = self
                        .aff_holders
                        .get(r.aff as usize)
                        .map_or(&[][..], Vec::as_slice);
                    let local = s.aff_local.get(&r.aff).map_or(&[][..], Vec::as_slice);
                    for &h in base.iter().chain(local) {
                        if s.excluded[h as usize] || self.check(r, h, s) != Check::Ok {
                            continue;
                        }
                        let k = self.key(strategy, seed, r, h, s);
                        if best.is_none_or(|b| self.less((k, h), b)) {
                            best = Some((k, h));
                        }
                    }
                }
                for &(o, h) in &s.order {
                    if let Some((b, _)) = best {
                        if (b.pen, b.a) < (floor, 0) || ((b.pen, b.a) == (floor, 0) && b.b < o) {
                            break;
                        }
                    }
                    if self.check(r, h, s) != Check::Ok {
                        continue;
                    }
                    let k = self.key(strategy, seed, r, h, s);
                    if best.is_none_or(|b| self.less((k, h), b)) {
                        best = Some((k, h));
                    }
                }
            }
            Strategy::BestFit => {
                for h in 0..self.hosts.len() as u32 {
                    if s.excluded[h as usize] || self.check(r, h, s) != Check::Ok {
                        continue;
                    }
                    let k = self.key(strategy, seed, r, h, s);
                    if best.is_none_or(|b| self.less((k, h), b)) {
                        best = Some((k, h));
                    }
                }
            }
            Strategy::FirstFit => {
                for &h in self.host_ix.values() {
                    if !s.excluded[h as usize] && self.check(r, h, s) == Check::Ok {
                        return Some((h, Key::default()));
                    }
                }
            }
        }
        best.map(|(k, h)| (h, k))
    }

    /// Runs `strategy` on `spec`, keeping the first `keep` steps of `prefix` (a run of the same
    /// spec whose first choices are known to stand).
    pub fn run(
        &self,
        s: &mut Scratch,
        spec: &Spec,
        strategy: Strategy,
        prefix: Option<(&Trace, usize)>,
    ) -> Trace {
        self.begin(s, spec, strategy);
        let mut steps = Vec::with_capacity(spec.vms.len());
        let mut misses = Vec::new();
        if let Some((t, keep)) = prefix {
            for step in &t.steps[..keep] {
                if step.host != NONE {
                    self.put(s, strategy, step.vm, step.host);
                }
                steps.push(*step);
            }
            for m in t.misses.iter().filter(|m| m.step < keep) {
                let mut m = m.clone();
                m.old.clear();
                misses.push(m);
            }
        }
        for &v in &spec.vms[steps.len().min(spec.vms.len())..] {
            let step = match self.choose(s, strategy, spec.seed, v) {
                Some((h, key)) => {
                    self.put(s, strategy, v, h);
                    Step {
                        vm: v,
                        host: h,
                        key,
                        reason: None,
                    }
                }
                None => {
                    let m = self.miss(s, &self.vms[v as usize], steps.len());
                    let reason = reason_of(&m.counts);
                    misses.push(m);
                    Step {
                        vm: v,
                        host: NONE,
                        key: Key::default(),
                        reason: Some(reason),
                    }
                }
            };
            steps.push(step);
        }
        self.end(s, spec);
        let mut touched: Vec<u32> = steps.iter().map(|s| s.host).filter(|&h| h != NONE).collect();
        touched.sort_unstable();
        touched.dedup();
        let mut max: Option<(Key, u32)> = None;
        let mut max_plain: Option<(Key, u32)> = None;
        let mut special = Vec::new();
        let mut by_host = Vec::with_capacity(steps.len());
        for (i, st) in steps.iter().enumerate().filter(|(_, s)| s.host != NONE) {
            if max.is_none_or(|m| self.less(m, (st.key, st.host))) {
                max = Some((st.key, st.host));
            }
            if st.key.pen == 0 && st.key.a == 0 {
                if max_plain.is_none_or(|m| self.less(m, (st.key, st.host))) {
                    max_plain = Some((st.key, st.host));
                }
            } else {
                special.push(i as u32);
            }
            by_host.push((st.host, i as u32));
        }
        by_host.sort_unstable();
        Trace {
            strategy,
            steps,
            misses,
            touched,
            max,
            max_plain,
            special,
            by_host,
        }
    }

    /// Before hosts `xs` change: notes their class for every left-out VM of `comp`.
    pub fn note_old(&self, spec: &Spec, comp: &mut Computed, xs: &[u32]) {
        for t in &mut comp.traces {
            if t.misses.is_empty() {
                continue;
            }
            for m in &mut t.misses {
                m.old.clear();
            }
            for &x in xs {
                if spec.excludes(x) || x as usize >= self.hosts.len() {
                    continue;
                }
                let mut one = One::new(x);
                let mut next = 0;
                for (i, st) in t.steps.iter().enumerate() {
                    let r = &self.vms[st.vm as usize];
                    if st.host == NONE {
                        if let Some(m) = t.misses.get_mut(next) {
                            next += 1;
                            let class = self.check(r, x, &one);
                            let base = one.count > 0 && self.check(r, x, &Baseline) == Check::Ok;
                            debug_assert_eq!(m.step, i);
                            m.old.push((x, class, base));
                        }
                    } else if st.host == x {
                        one.add(r, st.vm);
                    }
                }
            }
        }
    }

    /// The first step of `trace` (a run of `spec`) that a change of hosts `xs` (none excluded by
    /// `spec`) may alter, or `None`: the run stands as it is. Keeps the counts of the left-out
    /// steps before that step current (their old classes noted by [`Engine::note_old`]).
    ///
    /// Each changed host is followed through the run with what the run put on it so far: a step
    /// stands if the host, in its new state, still does not beat the host the step chose (or,
    /// if it was the chosen one, is still feasible with a key no larger).
    fn first_affected(&self, spec: &Spec, trace: &mut Trace, xs: &[u32], tight: &[u32]) -> Option<usize> {
        let strategy = trace.strategy;
        if strategy == Strategy::Scatter && trace.misses.is_empty() {
            return xs
                .iter()
                .filter_map(|&x| self.first_affected_by(spec, trace, x, tight.contains(&x)))
                .min();
        }
        if trace.misses.is_empty() {
            let m = trace.max?;
            let can_matter = xs.iter().any(|&x| {
                trace.touched.binary_search(&x).is_ok()
                    || self.less((self.lower_bound(strategy, spec.seed, x), x), m)
            });
            if !can_matter {
                return None;
            }
        }
        let mut ones: Vec<((Key, u32), One)> = xs
            .iter()
            .map(|&x| ((self.lower_bound(strategy, spec.seed, x), x), One::new(x)))
            .collect();
        let found = 'scan: {
            let mut next_miss = 0;
            for (i, st) in trace.steps.iter().enumerate() {
                let v = &self.vms[st.vm as usize];
                if st.host == NONE {
                    let Some(m) = trace.misses.get_mut(next_miss) else {
                        break 'scan Some(i);
                    };
                    next_miss += 1;
                    let was_hopeless = m.base_ok == 0;
                    for (lb, one) in &ones {
                        let x = lb.1;
                        let Some(&(_, old, old_base)) = m.old.iter().find(|e| e.0 == x) else {
                            break 'scan Some(i);
                        };
                        let new = self.check(v, x, one);
                        if new == Check::Ok {
                            break 'scan Some(i);
                        }
                        if new != old {
                            if let Some(k) = class_index(old) {
                                m.counts[k] -= 1;
                            }
                            if let Some(k) = class_index(new) {
                                m.counts[k] += 1;
                            }
                        }
                        let new_base = one.count > 0 && self.check(v, x, &Baseline) == Check::Ok;
                        if new_base != old_base {
                            if new_base {
                                m.base_ok += 1;
                            } else {
                                m.base_ok -= 1;
                            }
                        }
                    }
                    m.old.clear();
                    if Some(reason_of(&m.counts)) != st.reason || was_hopeless != (m.base_ok == 0) {
                        break 'scan Some(i);
                    }
                    continue;
                }
                let chosen = (st.key, st.host);
                for (lb, one) in &ones {
                    let x = lb.1;
                    if st.host == x {
                        if self.check(v, x, one) != Check::Ok
                            || self.key(strategy, spec.seed, v, x, one) > st.key
                        {
                            break 'scan Some(i);
                        }
                    } else if self.less(*lb, chosen)
                        && self.check(v, x, one) == Check::Ok
                        && self.less((self.key(strategy, spec.seed, v, x, one), x), chosen)
                    {
                        break 'scan Some(i);
                    }
                }
                for (_, one) in &mut ones {
                    if one.h == st.host {
                        one.add(v, st.vm);
                    }
                }
            }
            None
        };
        for m in &mut trace.misses {
            m.old.clear();
        }
        found
    }

    /// [`Engine::first_affected`] for a scattering run with every VM placed and one changed host:
    /// only the steps `x` can matter to are visited (its own, the penalised ones, and, when its
    /// position in the host order is early enough, the others).
    ///
    /// A host that only got `tight`er cannot beat a host it did not beat before: only its own
    /// steps are visited.
    fn first_affected_by(&self, spec: &Spec, trace: &Trace, x: u32, tight: bool) -> Option<usize> {
        let lb = (self.lower_bound(trace.strategy, spec.seed, x), x);
        let start = trace.by_host.partition_point(|e| e.0 < x);
        let mine = trace.by_host[start..]
            .iter()
            .take_while(|e| e.0 == x)
            .map(|e| e.1);
        let all = !tight && trace.max_plain.is_some_and(|m| self.less(lb, m));
        let picked: Vec<u32>;
        let steps: &mut dyn Iterator<Item = u32> = if all {
            &mut (0..trace.steps.len() as u32)
        } else {
            let special = if tight { &[][..] } else { &trace.special[..] };
            let mut v: Vec<u32> = special.iter().copied().chain(mine).collect();
            if v.is_empty() {
                return None;
            }
            v.sort_unstable();
            v.dedup();
            picked = v;
            &mut picked.iter().copied()
        };
        let mut one = One::new(x);
        for i in steps {
            let st = &trace.steps[i as usize];
            let v = &self.vms[st.vm as usize];
            if st.host == x {
                if self.check(v, x, &one) != Check::Ok
                    || self.key(trace.strategy, spec.seed, v, x, &one) > st.key
                {
                    return Some(i as usize);
                }
                one.add(v, st.vm);
            } else {
                let chosen = (st.key, st.host);
                if self.less(lb, chosen)
                    && self.check(v, x, &one) == Check::Ok
                    && self.less((self.key(trace.strategy, spec.seed, v, x, &one), x), chosen)
                {
                    return Some(i as usize);
                }
            }
        }
        None
    }

    // ----- portfolio ---------------------------------------------------------------------------

    fn score(&self, t: &Trace) -> (usize, [usize; 6]) {
        let mut by_prio = [0usize; 6];
        let mut total = 0;
        for st in t.steps.iter().filter(|s| s.host != NONE) {
            total += 1;
            let p = self.vms[st.vm as usize].priority as usize;
            by_prio[5 - p.min(5)] += 1;
        }
        (total, by_prio)
    }

    fn select(&self, traces: &[Trace]) -> usize {
        let mut best = 0;
        for i in 1..traces.len() {
            if self.score(&traces[i]) > self.score(&traces[best]) {
                best = i;
            }
        }
        best
    }

    fn portfolio(&self, s: &mut Scratch, spec: &Spec, first: Trace, rest: Option<[Trace; 2]>) -> Computed {
        if !first.improvable() {
            return Computed {
                traces: vec![first],
                chosen: 0,
            };
        }
        let [bf, ff] = match rest {
            Some(r) => r,
            None => [
                self.run(s, spec, Strategy::BestFit, None),
                self.run(s, spec, Strategy::FirstFit, None),
            ],
        };
        let traces = vec![first, bf, ff];
        Computed {
            chosen: self.select(&traces),
            traces,
        }
    }

    /// The plan for `spec`: the scattering run, or, when it leaves out a VM that fits the
    /// cluster somewhere, the best of it, best-fit and first-fit (most VMs placed, then most of
    /// the highest priority, ...).
    pub fn compute(&self, s: &mut Scratch, spec: &Spec) -> Computed {
        let first = self.run(s, spec, Strategy::Scatter, None);
        self.portfolio(s, spec, first, None)
    }

    /// `old` (computed for `spec` before hosts `xs` changed; [`Engine::note_old`] called before
    /// the change; `tight` among them only got tighter) brought up to date for `new_spec`, which has the same VMs as `spec` in its
    /// first `same` positions, and the same excluded hosts and seed. Returns the new runs and
    /// the first step of the chosen run that may differ, or `None` if no run changed.
    pub fn update(
        &self,
        s: &mut Scratch,
        spec: &Spec,
        new_spec: &Spec,
        same: usize,
        old: &mut Computed,
        (xs, tight): (&[u32], &[u32]),
    ) -> Option<(Computed, usize)> {
        let limit = if same >= spec.vms.len() && same >= new_spec.vms.len() {
            None
        } else {
            Some(same)
        };
        let firsts: Vec<Option<usize>> = old
            .traces
            .iter_mut()
            .map(|t| {
                let f = if xs.is_empty() {
                    None
                } else {
                    self.first_affected(spec, t, xs, tight)
                };
                match (f, limit) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            })
            .collect();
        if firsts.iter().all(Option::is_none) {
            return None;
        }
        let redo = |s: &mut Scratch, i: usize| -> Trace {
            let t = &old.traces[i];
            match firsts[i] {
                Some(j) => self.run(s, new_spec, t.strategy, Some((t, j))),
                None => t.clone(),
            }
        };
        let first = redo(s, 0);
        let rest = if old.traces.len() == 3 && first.improvable() {
            Some([redo(s, 1), redo(s, 2)])
        } else {
            None
        };
        let comp = self.portfolio(s, new_spec, first, rest);
        let from = if comp.chosen == old.chosen && comp.traces.len() == old.traces.len() {
            firsts[comp.chosen].unwrap_or(spec.vms.len().min(new_spec.vms.len()))
        } else {
            0
        };
        Some((comp, from))
    }

    /// Hosts whose state `delta` may change (a superset of [`Change::targets`]).
    pub fn predict_targets(&self, delta: &InventoryDelta) -> Vec<u32> {
        let mut out = Vec::new();
        match delta {
            InventoryDelta::VmUpsert(vm) => {
                if let Some(&v) = self.vm_ix.get(&vm.id) {
                    Change::push(&mut out, self.vms[v as usize].host);
                }
                if let Some(h) = vm.host.as_ref().and_then(|h| self.host_ix.get(h)) {
                    Change::push(&mut out, *h);
                }
            }
            InventoryDelta::VmRemoved(id) => {
                if let Some(&v) = self.vm_ix.get(id) {
                    Change::push(&mut out, self.vms[v as usize].host);
                }
            }
            InventoryDelta::HostUpsert(h) => {
                if let Some(&x) = self.host_ix.get(&h.id) {
                    out.push(x);
                }
            }
            InventoryDelta::HostRemoved(id) => {
                if let Some(&x) = self.host_ix.get(id) {
                    out.push(x);
                }
            }
            InventoryDelta::DatastoreUpsert(_) | InventoryDelta::Snapshots { .. } => {}
        }
        out
    }

    // ----- output ------------------------------------------------------------------------------

    pub fn to_plan(&self, comp: &Computed) -> Plan {
        let mut plan = Plan::default();
        if let Some(t) = comp.traces.get(comp.chosen) {
            for st in &t.steps {
                self.write_step(&mut plan, st);
            }
        }
        plan
    }

    fn write_step(&self, plan: &mut Plan, st: &Step) {
        let vm = &self.vms[st.vm as usize].id;
        match st.reason {
            None => {
                plan.unplaced.remove(vm);
                let host = &self.hosts[st.host as usize].id;
                match plan.placements.get_mut(vm) {
                    Some(h) => {
                        if h != host {
                            *h = host.clone();
                        }
                    }
                    None => {
                        plan.placements.insert(vm.clone(), host.clone());
                    }
                }
            }
            Some(reason) => {
                plan.placements.remove(vm);
                plan.unplaced.insert(vm.clone(), reason);
            }
        }
    }

    /// Rewrites `plan` (made from `old`) into the plan of `new`, whose chosen run has the same
    /// steps as the old one before step `from`.
    pub fn patch_plan(&self, plan: &mut Plan, old: &Computed, new: &Computed, from: usize) {
        let (Some(o), Some(n)) = (old.traces.get(old.chosen), new.traces.get(new.chosen)) else {
            *plan = self.to_plan(new);
            return;
        };
        if from == 0 {
            *plan = self.to_plan(new);
            return;
        }
        let (o, n) = (
            &o.steps[from.min(o.steps.len())..],
            &n.steps[from.min(n.steps.len())..],
        );
        if o.len() == n.len() && o.iter().zip(n).all(|(a, b)| a.vm == b.vm) {
            for (a, b) in o.iter().zip(n) {
                if a != b {
                    self.write_step(plan, b);
                }
            }
            return;
        }
        let mut gone: HashMap<u32, Step> = o.iter().map(|st| (st.vm, *st)).collect();
        for st in n {
            if gone.remove(&st.vm) != Some(*st) {
                self.write_step(plan, st);
            }
        }
        for vm in gone.keys() {
            let id = &self.vms[*vm as usize].id;
            plan.placements.remove(id);
            plan.unplaced.remove(id);
        }
    }

    // ----- read-outs for admission and tests ---------------------------------------------------

    /// `(capacity after the per-host reserve, limit)` of every usable host.
    pub fn usable_capacities(&self) -> Vec<(Resources, Resources)> {
        self.host_ix
            .values()
            .filter(|&&h| self.usable(h))
            .map(|&h| {
                let r = &self.hosts[h as usize];
                (r.capacity.saturating_sub(&self.policy.host_reserve), r.limit)
            })
            .collect()
    }

    /// Demands of the powered-on VMs registered on some host.
    pub fn running_demands(&self) -> impl Iterator<Item = Resources> + '_ {
        self.vms
            .iter()
            .filter(|v| v.present && v.on && v.host != NONE)
            .map(|v| v.demand)
    }

    /// The host a VM slot is registered on.
    pub fn vm_host(&self, v: u32) -> u32 {
        self.vms[v as usize].host
    }
}
