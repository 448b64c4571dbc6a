//! Plans kept ready for every failure, and kept current.

use crate::admission::{self, Admission};
use crate::constraints::{Constraints, Result};
use crate::engine::{Computed, Engine, HostIx, Scratch, Spec, VmIx};
use crate::evacuation::{self, Evacuation};
use crate::{Plan, Policy};
use am_core::{HostId, Inventory, InventoryDelta};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug)]
struct Entry {
    spec: Spec,
    comp: Computed,
    plan: Plan,
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
}

impl std::ops::AddAssign for Updated {
    fn add_assign(&mut self, o: Updated) {
        self.deltas += o.deltas;
        self.rebuilt += o.rebuilt;
        self.replayed += o.replayed;
        self.kept += o.kept;
    }
}

/// A failover plan for every host and every failure domain of a cluster, kept current.
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
    inv: Inventory,
    constraints: Constraints,
    engine: Engine,
    scratch: Scratch,
    hosts: BTreeMap<HostId, Entry>,
    domains: BTreeMap<String, Entry>,
    pending: Vec<InventoryDelta>,
}

impl FailoverPlans {
    /// Plans for every host and every failure domain of `inv`.
    pub fn new(inv: &Inventory, constraints: &Constraints, policy: &Policy) -> Result<FailoverPlans> {
        constraints.validate()?;
        let engine = Engine::build(inv, constraints, policy, |_| false);
        let mut plans = FailoverPlans {
            inv: inv.clone(),
            constraints: constraints.clone(),
            engine,
            scratch: Scratch::default(),
            hosts: BTreeMap::new(),
            domains: BTreeMap::new(),
            pending: Vec::new(),
        };
        let hosts: Vec<HostIx> = plans.engine.present_hosts().collect();
        for h in hosts {
            let entry = plans.make(plans.engine.host_spec(h));
            plans.hosts.insert(plans.engine.host_id(h).clone(), entry);
        }
        for d in plans.engine.domains() {
            let entry = plans.make(plans.engine.domain_spec(d));
            plans
                .domains
                .insert(plans.engine.domain_name(d).to_owned(), entry);
        }
        Ok(plans)
    }

    fn make(&mut self, spec: Spec) -> Entry {
        let comp = self.engine.compute(&mut self.scratch, &spec);
        let plan = self.engine.to_plan(&comp);
        Entry { spec, comp, plan }
    }

    /// The inventory the plans are made for (every delta given so far, deferred ones included).
    pub fn inventory(&self) -> &Inventory {
        &self.inv
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        self.engine.policy()
    }

    /// The constraints.
    pub fn constraints(&self) -> &Constraints {
        &self.constraints
    }

    /// Replaces the policy and redoes every plan.
    pub fn set_policy(&mut self, policy: &Policy) -> Result<()> {
        self.refresh();
        *self = FailoverPlans::new(&self.inv, &self.constraints, policy)?;
        Ok(())
    }

    /// Replaces the constraints and redoes every plan. On error nothing changes.
    pub fn set_constraints(&mut self, constraints: &Constraints) -> Result<()> {
        self.refresh();
        let policy = self.engine.policy().clone();
        *self = FailoverPlans::new(&self.inv, constraints, &policy)?;
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
            Some(e) if self.pending.is_empty() => Lookup::Fresh(&e.plan),
            Some(e) => Lookup::Stale(&e.plan),
        }
    }

    /// Whether every plan is current (no deferred deltas).
    pub fn is_fresh(&self) -> bool {
        self.pending.is_empty()
    }

    /// Every host plan, by host (stale ones too; see [`FailoverPlans::is_fresh`]).
    pub fn host_plans(&self) -> impl Iterator<Item = (&HostId, &Plan)> {
        self.hosts.iter().map(|(h, e)| (h, &e.plan))
    }

    /// Every failure-domain plan, by domain.
    pub fn domain_plans(&self) -> impl Iterator<Item = (&str, &Plan)> {
        self.domains.iter().map(|(d, e)| (d.as_str(), &e.plan))
    }

    /// Takes `delta` into account now: the inventory changes, and the plans it can affect are
    /// brought up to date (the result equals [`FailoverPlans::new`] on the new inventory).
    pub fn apply(&mut self, delta: &InventoryDelta) -> Updated {
        let mut up = self.refresh();
        self.inv.apply(delta);
        up += self.update(delta);
        up
    }

    /// Records `delta` without planning: cheap, for a busy moment. Every plan is
    /// [`Lookup::Stale`] until [`FailoverPlans::refresh`].
    pub fn defer(&mut self, delta: &InventoryDelta) {
        self.inv.apply(delta);
        self.pending.push(delta.clone());
    }

    /// Applies the deferred deltas.
    pub fn refresh(&mut self) -> Updated {
        let mut up = Updated::default();
        for delta in std::mem::take(&mut self.pending) {
            up += self.update(&delta);
        }
        up
    }

    fn update(&mut self, delta: &InventoryDelta) -> Updated {
        let mut up = Updated {
            deltas: 1,
            ..Updated::default()
        };
        let predicted = self.engine.predict_targets(delta);
        if !predicted.is_empty() {
            for e in self.hosts.values_mut().chain(self.domains.values_mut()) {
                if e.comp.has_misses() {
                    self.engine.note_old(&e.spec, &mut e.comp, &predicted);
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
            let spec = self.engine.host_spec(h);
            let id = self.engine.host_id(h).clone();
            let entry = self.hosts.remove(&id);
            let entry = self.respec(entry, spec, ch.vm, &ch.targets, &ch.tight, &mut up);
            rebuilt_hosts.insert(id.clone());
            self.hosts.insert(id, entry);
        }
        let mut rebuilt_domains: BTreeSet<String> = BTreeSet::new();
        for &d in &ch.respec_domains {
            let name = self.engine.domain_name(d).to_owned();
            let entry = self.domains.remove(&name);
            if self.engine.domain_has_hosts(d) {
                let spec = self.engine.domain_spec(d);
                let entry = self.respec(entry, spec, ch.vm, &ch.targets, &ch.tight, &mut up);
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
            xs.clear();
            xs.extend(ch.targets.iter().copied().filter(|&x| !e.spec.excludes(x)));
            if xs.is_empty() {
                continue;
            }
            match engine.update(
                scratch,
                &e.spec,
                &e.spec,
                usize::MAX,
                &mut e.comp,
                (&xs, &ch.tight),
            ) {
                None => up.kept += 1,
                Some((comp, from)) => {
                    engine.patch_plan(&mut e.plan, &e.comp, &comp, from);
                    e.comp = comp;
                    up.replayed += 1;
                }
            }
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
        targets: &[HostIx],
        tight: &[HostIx],
        up: &mut Updated,
    ) -> Entry {
        let Some(mut old) = old.filter(|e| e.spec.excluded == spec.excluded && e.spec.seed == spec.seed)
        else {
            up.rebuilt += 1;
            return self.make(spec);
        };
        let mut same = old
            .spec
            .vms
            .iter()
            .zip(&spec.vms)
            .position(|(a, b)| a != b)
            .unwrap_or(old.spec.vms.len().min(spec.vms.len()));
        if let Some(v) = vm {
            for list in [&old.spec.vms, &spec.vms] {
                if let Some(p) = list.iter().position(|&x| x == v) {
                    same = same.min(p);
                }
            }
        }
        let xs: Vec<HostIx> = targets.iter().copied().filter(|&x| !spec.excludes(x)).collect();
        match self.engine.update(
            &mut self.scratch,
            &old.spec,
            &spec,
            same,
            &mut old.comp,
            (&xs, tight),
        ) {
            None => {
                up.kept += 1;
                old.spec = spec;
                old
            }
            Some((comp, from)) => {
                up.replayed += 1;
                self.engine.patch_plan(&mut old.plan, &old.comp, &comp, from);
                Entry {
                    spec,
                    comp,
                    plan: old.plan,
                }
            }
        }
    }

    /// Admission control: how many host failures the cluster tolerates and whether the
    /// percentage reservation of the policy holds. See [`Admission`].
    pub fn admission(&self) -> Admission {
        let at_risk: Vec<HostId> = self
            .hosts
            .iter()
            .filter(|(_, e)| !e.plan.is_complete())
            .map(|(h, _)| h.clone())
            .collect();
        let domains_at_risk: Vec<String> = self
            .domains
            .iter()
            .filter(|(_, e)| !e.plan.is_complete())
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
