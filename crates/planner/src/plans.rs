//! Plans kept ready for every failure, and kept current.

use crate::admission::{self, Admission};
use crate::constraints::{Constraints, Result};
use crate::engine::{Computed, Engine, HostIx, Scratch, Spec, VmIx};
use crate::evacuation::{self, Evacuation};
use crate::{Plan, Policy};
use am_core::{HostId, Inventory, InventoryDelta};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

/// The placement steps of replays one delta may take in [`FailoverPlans::apply`] by default: on
/// 1,000 hosts and 50,000 VMs, one VM change then takes 1.4-2.4 ms at the 99th percentile from 70 %
/// to 94 % memory used (`docs/benchmarks.md`, "Scale and tight capacity"). A plan whose replay
/// would cost more is made again later, at the next refresh or when looked up.
pub const DEFAULT_UPDATE_BUDGET: usize = 400;

/// A plan's runs and the plan written from them.
#[derive(Clone, Debug)]
struct Made {
    comp: Computed,
    plan: Plan,
}

/// The plan for one failure: made, or (when an update would have cost too much) to be made
/// from `spec` at the next refresh or lookup.
#[derive(Clone, Debug)]
struct Entry {
    spec: Spec,
    made: OnceLock<Made>,
}

impl Entry {
    fn made(spec: Spec, comp: Computed, plan: Plan) -> Entry {
        Entry {
            spec,
            made: OnceLock::from(Made { comp, plan }),
        }
    }

    fn deferred(spec: Spec) -> Entry {
        Entry {
            spec,
            made: OnceLock::new(),
        }
    }

    /// The plan, made now from the current tables if it was deferred.
    fn plan(&self, engine: &Engine) -> &Plan {
        &self
            .made
            .get_or_init(|| {
                let comp = engine.compute(&mut Scratch::default(), &self.spec);
                let plan = engine.to_plan(&comp);
                Made { comp, plan }
            })
            .plan
    }
}

/// A stored plan as the supervisor finds it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// Current: made from every change given so far.
    Fresh(&'a Plan),
    /// Made before the changes given to [`FailoverPlans::defer`] and not yet applied: it may be
    /// wrong. Compute afresh (or call [`FailoverPlans::refresh`]).
    Stale(&'a Plan),
    /// No plan: the host (or domain) is not in the inventory.
    Unknown,
}

/// What an update did, for logs and benchmarks.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Updated {
    /// Deltas applied.
    pub deltas: usize,
    /// Plans made anew because their own VMs changed (or the host or domain appeared).
    pub rebuilt: usize,
    /// Plans replayed from the first step a change could affect.
    pub replayed: usize,
    /// Plans checked and left as they were.
    pub kept: usize,
    /// Plans whose replay would have cost more than the update's budget (see
    /// [`FailoverPlans::set_update_budget`]): dropped, to be made again at the next refresh or
    /// lookup.
    pub deferred: usize,
}

impl std::ops::AddAssign for Updated {
    fn add_assign(&mut self, o: Updated) {
        self.deltas += o.deltas;
        self.rebuilt += o.rebuilt;
        self.replayed += o.replayed;
        self.kept += o.kept;
        self.deferred += o.deferred;
    }
}

/// A failover plan for every host and every failure domain of a cluster, kept current.
///
/// The plans keep no copy of the inventory (at 10,000 VMs one is some 6 MB): the caller holds
/// it, gives every change to both, and passes it where every plan is made anew
/// ([`FailoverPlans::set_policy`]); [`crate::synth::Tracked`] keeps the two side by side.
///
/// ```
/// use am_core::{Host, Inventory, InventoryDelta, Resources, Vm};
/// use planner::{Constraints, FailoverPlans, Lookup, Policy};
///
/// let mut inv = Inventory::default();
/// for h in ["h1", "h2", "h3"] {
///     inv.apply(&InventoryDelta::HostUpsert(Host::new(h, Resources::new(10_000, 32_768))));
/// }
/// inv.apply(&InventoryDelta::VmUpsert(Vm::new("web", Resources::new(1_000, 4_096), "h1")));
/// let mut plans = FailoverPlans::new(&inv, &Constraints::default(), &Policy::default())?;
/// assert!(plans.plan_for(&"h1".into()).is_some_and(|p| p.is_complete()));
///
/// // A new VM on h2: h2's plan (and only the plans it can affect) are brought up to date.
/// plans.apply(&InventoryDelta::VmUpsert(Vm::new("db", Resources::new(2_000, 8_192), "h2")));
/// assert!(matches!(plans.lookup(&"h2".into()), Lookup::Fresh(p) if p.placements.len() == 1));
/// assert_eq!(plans.admission().host_failures_tolerated, 2);
/// # Ok::<(), planner::PlanError>(())
/// ```
#[derive(Clone, Debug)]
pub struct FailoverPlans {
    constraints: Constraints,
    engine: Engine,
    scratch: Scratch,
    hosts: BTreeMap<HostId, Entry>,
    domains: BTreeMap<String, Entry>,
    pending: Vec<InventoryDelta>,
    /// Placement steps of replays one delta may take.
    budget: usize,
    /// Placement steps recent deltas took (a moving average), for the refresh's choice between
    /// replaying deltas and rebuilding every plan.
    recent_cost: usize,
}

impl FailoverPlans {
    /// Plans for every host and every failure domain of `inv`.
    pub fn new(inv: &Inventory, constraints: &Constraints, policy: &Policy) -> Result<FailoverPlans> {
        constraints.validate()?;
        let engine = Engine::build(inv, constraints, policy, |_| false);
        let mut plans = FailoverPlans {
            constraints: constraints.clone(),
            engine,
            scratch: Scratch::default(),
            hosts: BTreeMap::new(),
            domains: BTreeMap::new(),
            pending: Vec::new(),
            budget: DEFAULT_UPDATE_BUDGET,
            recent_cost: 0,
        };
        plans.rebuild_all();
        Ok(plans)
    }

    /// Makes every plan anew from the engine's tables.
    fn rebuild_all(&mut self) -> usize {
        self.hosts.clear();
        self.domains.clear();
        let hosts: Vec<HostIx> = self.engine.present_hosts().collect();
        for h in hosts {
            let entry = self.make(self.engine.host_spec(h));
            self.hosts.insert(self.engine.host_id(h).clone(), entry);
        }
        for d in self.engine.domains() {
            let entry = self.make(self.engine.domain_spec(d));
            self.domains.insert(self.engine.domain_name(d).to_owned(), entry);
        }
        self.hosts.len() + self.domains.len()
    }

    fn make(&mut self, spec: Spec) -> Entry {
        let comp = self.engine.compute(&mut self.scratch, &spec);
        let plan = self.engine.to_plan(&comp);
        Entry::made(spec, comp, plan)
    }

    /// Makes the deferred plans now.
    fn settle(&mut self) -> usize {
        let (engine, scratch) = (&self.engine, &mut self.scratch);
        let mut made = 0;
        for e in self.hosts.values_mut().chain(self.domains.values_mut()) {
            if e.made.get().is_none() {
                let comp = engine.compute(scratch, &e.spec);
                let plan = engine.to_plan(&comp);
                e.made = OnceLock::from(Made { comp, plan });
                made += 1;
            }
        }
        made
    }

    /// Placement steps a rebuild of every plan takes (about).
    fn rebuild_cost(&self) -> usize {
        self.hosts
            .values()
            .chain(self.domains.values())
            .map(|e| e.spec.vms.len().max(1))
            .sum()
    }

    /// Sets how many placement steps of replays one delta may take in
    /// [`FailoverPlans::apply`] (default [`DEFAULT_UPDATE_BUDGET`]). A plan whose replay would
    /// take more (with the other plans' replays of the same delta) is dropped and made again at
    /// the next [`FailoverPlans::refresh`] or when it is looked up: the update stays short when
    /// one change moves many plans (a full cluster), and every plan read is still current.
    /// `usize::MAX` replays every plan at once, as before.
    pub fn set_update_budget(&mut self, steps: usize) {
        self.budget = steps;
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        self.engine.policy()
    }

    /// The constraints.
    pub fn constraints(&self) -> &Constraints {
        &self.constraints
    }

    /// Replaces the policy and redoes every plan for `inv` (the inventory every delta given so
    /// far made: the plans keep no copy of it).
    pub fn set_policy(&mut self, inv: &Inventory, policy: &Policy) -> Result<()> {
        *self = FailoverPlans::new(inv, &self.constraints, policy)?;
        Ok(())
    }

    /// Replaces the constraints and redoes every plan for `inv` (as
    /// [`FailoverPlans::set_policy`]). On error nothing changes.
    pub fn set_constraints(&mut self, inv: &Inventory, constraints: &Constraints) -> Result<()> {
        let policy = self.engine.policy().clone();
        *self = FailoverPlans::new(inv, constraints, &policy)?;
        Ok(())
    }

    /// The plan for the failure of `host`, if it is current. `None` when the host is unknown or
    /// deltas are deferred: then compute one with [`crate::plan_host_failure_with`].
    pub fn plan_for(&self, host: &HostId) -> Option<&Plan> {
        match self.lookup(host) {
            Lookup::Fresh(p) => Some(p),
            _ => None,
        }
    }

    /// The plan for the failure of `host`, and whether it is current.
    pub fn lookup(&self, host: &HostId) -> Lookup<'_> {
        self.wrap(self.hosts.get(host))
    }

    /// The plan for the failure of every host of `domain` at once, if it is current.
    pub fn plan_for_domain(&self, domain: &str) -> Option<&Plan> {
        match self.lookup_domain(domain) {
            Lookup::Fresh(p) => Some(p),
            _ => None,
        }
    }

    /// The plan for the failure of `domain`, and whether it is current.
    pub fn lookup_domain(&self, domain: &str) -> Lookup<'_> {
        self.wrap(self.domains.get(domain))
    }

    fn wrap<'a>(&'a self, e: Option<&'a Entry>) -> Lookup<'a> {
        match e {
            None => Lookup::Unknown,
            Some(e) if self.pending.is_empty() => Lookup::Fresh(e.plan(&self.engine)),
            Some(e) => Lookup::Stale(e.plan(&self.engine)),
        }
    }

    /// Whether every plan is current (no deferred deltas).
    pub fn is_fresh(&self) -> bool {
        self.pending.is_empty()
    }

    /// Every host plan, by host (stale ones too; see [`FailoverPlans::is_fresh`]).
    pub fn host_plans(&self) -> impl Iterator<Item = (&HostId, &Plan)> {
        self.hosts.iter().map(|(h, e)| (h, e.plan(&self.engine)))
    }

    /// Every failure-domain plan, by domain.
    pub fn domain_plans(&self) -> impl Iterator<Item = (&str, &Plan)> {
        self.domains
            .iter()
            .map(|(d, e)| (d.as_str(), e.plan(&self.engine)))
    }

    /// Takes `delta` into account now: the inventory changes, and the plans it can affect are
    /// brought up to date (the result equals [`FailoverPlans::new`] on the new inventory). The
    /// replays take at most the update budget ([`FailoverPlans::set_update_budget`]); plans that
    /// need more are made at the next refresh or lookup.
    pub fn apply(&mut self, delta: &InventoryDelta) -> Updated {
        let mut up = self.catch_up();
        up += self.update(delta, self.budget);
        up
    }

    /// Records `delta` without planning: cheap, for a busy moment. Every plan is
    /// [`Lookup::Stale`] until [`FailoverPlans::refresh`].
    pub fn defer(&mut self, delta: &InventoryDelta) {
        self.pending.push(delta.clone());
    }

    /// Applies the deferred deltas, and makes every plan an update left to be made: afterwards
    /// every plan is made and current. When replaying the deltas one by one would cost more
    /// than making every plan anew (the recent deltas' cost, times their number), the deltas
    /// go into the tables at once and every plan is made anew.
    pub fn refresh(&mut self) -> Updated {
        let mut up = self.catch_up();
        up.rebuilt += self.settle();
        up
    }

    /// Applies the deferred deltas (replayed within the budget, or all at once by a rebuild).
    fn catch_up(&mut self) -> Updated {
        let pending = std::mem::take(&mut self.pending);
        let mut up = Updated::default();
        let rebuild = self.rebuild_cost();
        // Checking every plan after a delta costs a fraction of making them all: about 1/150.
        let per_delta = self.recent_cost.saturating_add(rebuild / 150);
        if pending.len() > 1 && pending.len().saturating_mul(per_delta) >= rebuild {
            for delta in &pending {
                self.engine.apply(delta);
            }
            up.deltas = pending.len();
            up.rebuilt = self.rebuild_all();
            return up;
        }
        for delta in &pending {
            up += self.update(delta, self.budget);
        }
        up
    }

    /// Brings the plans up to date with `delta` (already in the engine's tables), replaying at most
    /// `budget` placement steps; plans that need more are deferred.
    fn update(&mut self, delta: &InventoryDelta, budget: usize) -> Updated {
        let mut left = budget;
        let mut up = self.update_within(delta, &mut left);
        let spent = budget.saturating_sub(left);
        self.recent_cost = (self.recent_cost * 7 + spent) / 8;
        up.rebuilt += self.settle_within(&mut left);
        up
    }

    /// Makes deferred plans while the budget `left` allows.
    fn settle_within(&mut self, left: &mut usize) -> usize {
        let (engine, scratch) = (&self.engine, &mut self.scratch);
        let mut made = 0;
        for e in self.hosts.values_mut().chain(self.domains.values_mut()) {
            if *left == 0 {
                break;
            }
            if e.made.get().is_none() && e.spec.vms.len() <= *left {
                *left -= e.spec.vms.len();
                let comp = engine.compute(scratch, &e.spec);
                let plan = engine.to_plan(&comp);
                e.made = OnceLock::from(Made { comp, plan });
                made += 1;
            }
        }
        made
    }

    fn update_within(&mut self, delta: &InventoryDelta, left: &mut usize) -> Updated {
        let mut up = Updated {
            deltas: 1,
            ..Updated::default()
        };
        let predicted = self.engine.predict_targets(delta);
        if !predicted.is_empty() {
            for e in self.hosts.values_mut().chain(self.domains.values_mut()) {
                if let Some(m) = e.made.get_mut().filter(|m| m.comp.has_misses()) {
                    self.engine.note_old(&e.spec, &mut m.comp, &predicted);
                }
            }
        }
        let ch = self.engine.apply(delta);
        if let Some(id) = &ch.removed_host {
            self.hosts.remove(id);
        }
        let mut rebuilt_hosts: BTreeSet<HostId> = BTreeSet::new();
        for &h in &ch.respec_hosts {
            if !self.engine.host_present(h) {
                continue;
            }
            let id = self.engine.host_id(h).clone();
            let entry = self.hosts.remove(&id);
            let spec = match (&entry, ch.vm) {
                (Some(e), Some(v)) if e.spec.excluded == [h] => self.engine.spec_after_vm(&e.spec, v),
                _ => self.engine.host_spec(h),
            };
            let entry = self.respec(entry, spec, ch.vm, (&ch.targets, &ch.tight), &mut up, left);
            rebuilt_hosts.insert(id.clone());
            self.hosts.insert(id, entry);
        }
        let mut rebuilt_domains: BTreeSet<String> = BTreeSet::new();
        for &d in &ch.respec_domains {
            let name = self.engine.domain_name(d).to_owned();
            let entry = self.domains.remove(&name);
            if self.engine.domain_has_hosts(d) {
                let spec = match (&entry, ch.vm) {
                    // A VM change leaves the domain's hosts as they were.
                    (Some(e), Some(v)) => self.engine.spec_after_vm(&e.spec, v),
                    _ => self.engine.domain_spec(d),
                };
                let entry = self.respec(entry, spec, ch.vm, (&ch.targets, &ch.tight), &mut up, left);
                self.domains.insert(name.clone(), entry);
            }
            rebuilt_domains.insert(name);
        }
        if ch.targets.is_empty() {
            return up;
        }
        let (engine, scratch) = (&self.engine, &mut self.scratch);
        let mut xs: Vec<HostIx> = Vec::with_capacity(ch.targets.len());
        let entries = self
            .hosts
            .iter_mut()
            .filter(|(id, _)| !rebuilt_hosts.contains(*id))
            .map(|(_, e)| e)
            .chain(
                self.domains
                    .iter_mut()
                    .filter(|(d, _)| !rebuilt_domains.contains(*d))
                    .map(|(_, e)| e),
            );
        for e in entries {
            let Some(m) = e.made.get_mut() else {
                continue;
            };
            xs.clear();
            xs.extend(ch.targets.iter().copied().filter(|&x| !e.spec.excludes(x)));
            if xs.is_empty() {
                continue;
            }
            let Some(firsts) = engine.affected(&e.spec, &e.spec, usize::MAX, &mut m.comp, (&xs, &ch.tight))
            else {
                up.kept += 1;
                continue;
            };
            let Some((comp, from)) = engine.replay(scratch, &e.spec, &e.spec, &m.comp, &firsts, left) else {
                e.made = OnceLock::new();
                up.deferred += 1;
                continue;
            };
            engine.patch_plan(&mut m.plan, &m.comp, &comp, from);
            m.comp = comp;
            up.replayed += 1;
        }
        up
    }

    /// The entry for `spec`, whose VMs changed (`vm`, or more), from the `old` entry if there is
    /// one for the same failure: replayed from the first VM that changed, or from the first step
    /// the changed hosts `targets` affect if earlier.
    fn respec(
        &mut self,
        old: Option<Entry>,
        spec: Spec,
        vm: Option<VmIx>,
        (targets, tight): (&[HostIx], &[HostIx]),
        up: &mut Updated,
        left: &mut usize,
    ) -> Entry {
        let old = old.filter(|e| e.spec.excluded == spec.excluded && e.spec.seed == spec.seed);
        let Some(old) = old.and_then(|e| e.made.into_inner().map(|m| (e.spec, m))) else {
            // A new failure, or a plan already deferred: made now if the budget allows.
            let cost = spec.vms.len();
            if cost > *left {
                up.deferred += 1;
                return Entry::deferred(spec);
            }
            *left -= cost;
            up.rebuilt += 1;
            return self.make(spec);
        };
        let mut same = old
            .0
            .vms
            .iter()
            .zip(&spec.vms)
            .position(|(a, b)| a != b)
            .unwrap_or(old.0.vms.len().min(spec.vms.len()));
        if let Some(v) = vm {
            for list in [&old.0.vms, &spec.vms] {
                if let Some(p) = list.iter().position(|&x| x == v) {
                    same = same.min(p);
                }
            }
        }
        let xs: Vec<HostIx> = targets.iter().copied().filter(|&x| !spec.excludes(x)).collect();
        let (old_spec, mut made) = old;
        let Some(firsts) = self
            .engine
            .affected(&old_spec, &spec, same, &mut made.comp, (&xs, tight))
        else {
            up.kept += 1;
            return Entry {
                spec,
                made: OnceLock::from(made),
            };
        };
        let Some((comp, from)) =
            self.engine
                .replay(&mut self.scratch, &old_spec, &spec, &made.comp, &firsts, left)
        else {
            up.deferred += 1;
            return Entry::deferred(spec);
        };
        up.replayed += 1;
        self.engine.patch_plan(&mut made.plan, &made.comp, &comp, from);
        Entry::made(spec, comp, made.plan)
    }

    /// Admission control: how many host failures the cluster tolerates and whether the
    /// percentage reservation of the policy holds. See [`Admission`].
    pub fn admission(&self) -> Admission {
        let at_risk: Vec<HostId> = self
            .hosts
            .iter()
            .filter(|(_, e)| !e.plan(&self.engine).is_complete())
            .map(|(h, _)| h.clone())
            .collect();
        let domains_at_risk: Vec<String> = self
            .domains
            .iter()
            .filter(|(_, e)| !e.plan(&self.engine).is_complete())
            .map(|(d, _)| d.clone())
            .collect();
        admission::compute(&self.engine, at_risk, domains_at_risk)
    }

    /// Live-migration waves that empty `hosts` (maintenance, predicted failure), with at most
    /// `per_host_limit` migrations leaving or entering any host in one wave.
    pub fn evacuation(&mut self, hosts: &BTreeSet<HostId>, per_host_limit: u32) -> Evacuation {
        self.refresh();
        evacuation::plan(&self.engine, &mut self.scratch, hosts, per_host_limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{self, Params, Rng};

    fn small() -> (Inventory, Constraints) {
        synth::cluster(
            &Params {
                hosts: 24,
                vms: 600,
                hosts_per_domain: 6,
                fill_pct: 95,
                vm_size_pct: 150,
                ..Params::default()
            },
            5,
        )
    }

    fn assert_same(a: &FailoverPlans, b: &FailoverPlans) {
        assert!(a.host_plans().eq(b.host_plans()));
        assert!(a.domain_plans().eq(b.domain_plans()));
        assert_eq!(a.admission(), b.admission());
    }

    #[test]
    fn many_deferred_deltas_rebuild_every_plan_once() {
        let (inv, cons) = small();
        let policy = Policy::default();
        let mut plans = synth::Tracked::new(&inv, &cons, &policy).expect("valid");
        let count = plans.hosts.len() + plans.domains.len();
        let (mut rng, mut next) = (Rng::new(9), 0);
        for _ in 0..300 {
            let d = synth::random_delta(plans.inventory(), &mut rng, &mut next);
            plans.defer(&d);
        }
        let up = plans.refresh();
        assert_eq!(up.deltas, 300);
        assert_eq!((up.replayed, up.kept), (0, 0), "{up:?}");
        assert_eq!(up.rebuilt, plans.hosts.len() + plans.domains.len());
        assert!(count > 0);
        let full = FailoverPlans::new(plans.inventory(), &cons, &policy).expect("valid");
        assert_same(&plans, &full);
    }

    #[test]
    fn plans_over_the_budget_are_deferred_then_made_on_lookup_or_refresh() {
        let (inv, cons) = small();
        let policy = Policy::default();
        let mut plans = synth::Tracked::new(&inv, &cons, &policy).expect("valid");
        plans.set_update_budget(0);
        let (mut rng, mut deferred) = (Rng::new(11), 0);
        for i in 0..40 {
            let (change, _) = synth::vm_change(plans.inventory(), &mut rng, i);
            deferred += plans.apply(&change).deferred;
        }
        assert!(deferred > 0);
        let full = FailoverPlans::new(plans.inventory(), &cons, &policy).expect("valid");
        // Looked up one by one (made on the spot), then all at once.
        for (h, p) in full.host_plans() {
            assert_eq!(plans.plan_for(h), Some(p));
        }
        assert_same(&plans, &full);
        let up = plans.refresh();
        assert_eq!(up.deltas, 0);
        assert!(plans.hosts.values().all(|e| e.made.get().is_some()));
    }
}
