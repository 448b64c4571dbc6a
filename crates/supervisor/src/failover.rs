//! Failover of a dead host's VMs: they wait (`awaiting-capacity`) until placed, by the host's
//! precomputed plan when it is fresh and valid, else by a fresh plan; spares are added when some
//! fit nowhere; VMs switched off on purpose are re-homed, still off.

use super::*;
use crate::ladder::priority_of;

impl Supervisor {
    /// Hosts no VM may go to now.
    pub(crate) fn unusable_hosts(&self) -> BTreeSet<HostId> {
        self.hosts
            .iter()
            .filter(|(_, r)| r.state != HostState::Up)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The inventory with moves in flight already applied, so plans do not double-book hosts.
    pub(crate) fn planning_view(&self) -> Cow<'_, Inventory> {
        let moves: Vec<(&VmId, &HostId)> = self
            .in_flight
            .values()
            .filter_map(|f| match &f.action {
                Action::Failover { vm, to }
                | Action::MigrateCold { vm, to }
                | Action::MigrateLive { vm, to } => Some((vm, to)),
                Action::RestoreClone { vm, host, .. } => Some((vm, host)),
                _ => None,
            })
            .collect();
        if moves.is_empty() {
            return Cow::Borrowed(&self.inv);
        }
        let mut view = self.inv.clone();
        for (vm, to) in moves {
            if let Some(v) = view.vms.get_mut(vm) {
                v.host = Some(to.clone());
                v.power = PowerState::PoweredOn;
            }
        }
        Cow::Owned(view)
    }

    /// A VM whose host is dead waits to be restarted elsewhere: an incident, fresh failover
    /// bookkeeping, the dead host remembered (its precomputed plan applies).
    pub(crate) fn await_failover(&mut self, now: Time, vm: &VmId, host: Option<HostId>, reason: String) {
        let from = host
            .as_ref()
            .map_or_else(|| "no host".to_owned(), HostId::to_string);
        self.open_vm_incident(now, vm, format!("host {from} dead"));
        if let Some(r) = self.vms.get_mut(vm) {
            r.failover_tries = 0;
            r.failover_excluded.clear();
            r.failed_from = host;
        }
        self.set_vm_state(now, vm, VmState::AwaitingCapacity, reason);
    }

    pub(crate) fn fail_over_host(&mut self, now: Time, host: &HostId) {
        let candidates: Vec<VmId> = self
            .inv
            .vms_on(host)
            .filter(|vm| vm.is_protected())
            .filter(|vm| {
                self.vms.get(&vm.id).is_some_and(|r| match &r.state {
                    VmState::StayOff { .. }
                    | VmState::Unprotected
                    | VmState::AwaitingCapacity
                    | VmState::Reconciling { .. } => false,
                    VmState::Recovering { step, .. } => *step != Step::Failover,
                    _ => true,
                })
            })
            .map(|vm| vm.id.clone())
            .collect();
        for vm in &candidates {
            self.await_failover(now, vm, Some(host.clone()), format!("host {host} dead"));
        }
        self.capacity_retry_at = now;
        self.place_waiting(now);
        self.rehome_stay_off(now, host);
    }

    /// Placements taken from the precomputed plan of the host each waiting VM is restarted away
    /// from: only when that plan is fresh, covers the VM, sends VMs only to hosts that are up, and
    /// no move is in flight (the plan assumed the cluster as it was). Everything else is placed
    /// afresh by the caller.
    pub(crate) fn precomputed_placements(
        &self,
        waiting: &[VmId],
    ) -> (BTreeMap<VmId, HostId>, BTreeMap<VmId, planner::Unplaced>) {
        let mut placed = BTreeMap::new();
        let mut unplaced = BTreeMap::new();
        let Some(plans) = self.plans.as_ref() else {
            return (placed, unplaced);
        };
        let moving = self.in_flight.values().any(|f| {
            matches!(
                f.action,
                Action::Failover { .. }
                    | Action::MigrateCold { .. }
                    | Action::MigrateLive { .. }
                    | Action::RestoreClone { .. }
            )
        });
        if moving {
            return (placed, unplaced);
        }
        let mut by_host: BTreeMap<&HostId, Vec<&VmId>> = BTreeMap::new();
        for vm in waiting {
            if let Some(r) = self.vms.get(vm) {
                if let (Some(h), true) = (&r.failed_from, r.failover_excluded.is_empty()) {
                    by_host.entry(h).or_default().push(vm);
                }
            }
        }
        for (host, vms) in by_host {
            let planner::Lookup::Fresh(plan) = plans.lookup(host) else {
                continue;
            };
            let covered = vms
                .iter()
                .all(|v| plan.placements.contains_key(*v) || plan.unplaced.contains_key(*v));
            let targets_up = vms
                .iter()
                .filter_map(|v| plan.placements.get(*v))
                .all(|h| self.hosts.get(h).is_some_and(|r| r.state == HostState::Up));
            if !(covered && targets_up) {
                continue;
            }
            for vm in vms {
                match (plan.placements.get(vm), plan.unplaced.get(vm)) {
                    (Some(to), _) => {
                        placed.insert(vm.clone(), to.clone());
                    }
                    (None, Some(why)) => {
                        unplaced.insert(vm.clone(), *why);
                    }
                    (None, None) => {}
                }
            }
        }
        (placed, unplaced)
    }

    /// VMs switched off on purpose stay off, but not on a dead host that will be removed (and
    /// take them out of the inventory with it): they are registered, still off, on a live host.
    pub(crate) fn rehome_stay_off(&mut self, now: Time, host: &HostId) {
        let off: Vec<VmId> = self
            .inv
            .vms_on(host)
            .filter(|vm| vm.is_protected())
            .filter(|vm| matches!(self.vm_state(&vm.id), Some(VmState::StayOff { .. })))
            .map(|vm| vm.id.clone())
            .collect();
        if off.is_empty() {
            return;
        }
        let unusable = self.unusable_hosts();
        let Some(target) = self
            .inv
            .hosts
            .values()
            .filter(|h| !unusable.contains(&h.id) && h.accepts_vms())
            .max_by_key(|h| (self.inv.free(&h.id).mem_mib, std::cmp::Reverse(h.id.clone())))
            .map(|h| h.id.clone())
        else {
            return;
        };
        for vm in off {
            let action = Action::Register {
                vm: vm.clone(),
                host: target.clone(),
            };
            self.issue(
                now,
                action,
                Purpose::Rehome(vm),
                10,
                format!("host {host} dead: keep it off, registered on {target}"),
            );
        }
    }

    /// Places VMs that wait for a host, highest priority first; adds a spare when some fit nowhere.
    pub(crate) fn place_waiting(&mut self, now: Time) {
        if now < self.capacity_retry_at || self.manager_isolated() {
            return;
        }
        let waiting: Vec<VmId> = self
            .vms
            .iter()
            .filter(|(_, r)| r.state == VmState::AwaitingCapacity)
            .map(|(id, _)| id.clone())
            .collect();
        if waiting.is_empty() {
            self.clear(now, AlarmKind::CapacityInsufficient, Subject::Cluster);
            return;
        }
        self.capacity_retry_at = now + std::time::Duration::from_secs(5);
        let unusable = self.unusable_hosts();
        let (by_plan, plan_unplaced) = self.precomputed_placements(&waiting);
        let plan = {
            let mut view = self.planning_view();
            if !by_plan.is_empty() {
                let v = view.to_mut();
                for (vm, to) in &by_plan {
                    if let Some(vm) = v.vms.get_mut(vm) {
                        vm.host = Some(to.clone());
                        vm.power = PowerState::PoweredOn;
                    }
                }
            }
            // VMs whose earlier failover failed on a host try the others first, one at a time.
            let (fresh, retried): (Vec<VmId>, Vec<VmId>) = waiting
                .iter()
                .filter(|v| !by_plan.contains_key(*v) && !plan_unplaced.contains_key(*v))
                .cloned()
                .partition(|v| self.vms.get(v).is_none_or(|r| r.failover_excluded.is_empty()));
            let mut plan = planner::place(&view, &fresh, &unusable, &self.cfg.placement);
            plan.unplaced.extend(plan_unplaced);
            for vm in retried {
                let mut exclude = unusable.clone();
                exclude.extend(
                    self.vms
                        .get(&vm)
                        .map(|r| r.failover_excluded.clone())
                        .unwrap_or_default(),
                );
                let single = planner::place(&view, std::slice::from_ref(&vm), &exclude, &self.cfg.placement);
                plan.placements.extend(single.placements);
                plan.unplaced.extend(single.unplaced);
            }
            plan
        };
        let mut plan = plan;
        plan.placements
            .extend(by_plan.iter().map(|(vm, to)| (vm.clone(), to.clone())));
        // Running beats anti-affinity when nothing else can help: with no spare left to add,
        // VMs kept out only by their anti-affinity group run beside a member, with a reason.
        let mut relaxed: BTreeSet<VmId> = BTreeSet::new();
        if self.spares.is_empty() && !self.adding_spare {
            let blocked: Vec<VmId> = plan
                .unplaced
                .iter()
                .filter(|(_, why)| **why == planner::Unplaced::AntiAffinity)
                .map(|(vm, _)| vm.clone())
                .collect();
            if !blocked.is_empty() {
                let mut view = self.planning_view().into_owned();
                for (vm, to) in &plan.placements {
                    if let Some(v) = view.vms.get_mut(vm) {
                        v.host = Some(to.clone());
                        v.power = PowerState::PoweredOn;
                    }
                }
                for vm in &blocked {
                    if let Some(v) = view.vms.get_mut(vm) {
                        v.anti_affinity_group = None;
                    }
                }
                let second = planner::place(&view, &blocked, &unusable, &self.cfg.placement);
                for (vm, to) in second.placements {
                    plan.unplaced.remove(&vm);
                    relaxed.insert(vm.clone());
                    plan.placements.insert(vm, to);
                }
            }
        }
        let mut order: Vec<(u8, VmId, HostId)> = plan
            .placements
            .iter()
            .map(|(vm, to)| {
                (
                    self.inv.vms.get(vm).map(priority_of).unwrap_or(0),
                    vm.clone(),
                    to.clone(),
                )
            })
            .collect();
        order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for (priority, vm, to) in order {
            let action = Action::Failover {
                vm: vm.clone(),
                to: to.clone(),
            };
            let reason = if relaxed.contains(&vm) {
                format!("restart on {to}: anti-affinity relaxed, no other host and no spare left")
            } else if by_plan.contains_key(&vm) {
                format!("restart on {to} by precomputed plan")
            } else {
                format!("restart on {to} by fresh plan")
            };
            self.start_step(
                now,
                &vm,
                Step::Failover,
                action,
                priority,
                reason,
                format!("failover to {to}"),
            );
        }
        let unplaced = plan.unplaced.len();
        if unplaced == 0 {
            self.clear(now, AlarmKind::CapacityInsufficient, Subject::Cluster);
            return;
        }
        self.raise(
            now,
            AlarmKind::CapacityInsufficient,
            Subject::Cluster,
            Severity::Critical,
            format!("{unplaced} protected VM(s) fit on no live host"),
        );
        // A spare held back after a restart: in the inventory means it was added; after the
        // window it was not, and it returns to the pool.
        let inv = &self.inv;
        let mut back = Vec::new();
        self.pending_spares.retain(|(spare, until)| {
            let added = inv
                .hosts
                .values()
                .any(|h| h.id.as_str() == spare || h.name == *spare);
            if !added && now >= *until {
                back.push(spare.clone());
            }
            !added && now < *until
        });
        self.spares.extend(back);
        if !self.adding_spare {
            if let Some(spare) = self.spares.pop_front() {
                self.adding_spare = true;
                self.issue(
                    now,
                    Action::AddHost { spare: spare.clone() },
                    Purpose::AddSpare(spare),
                    255,
                    format!("{unplaced} protected VM(s) fit on no live host"),
                );
            }
        }
    }
}
