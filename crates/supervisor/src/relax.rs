//! The last resort of placement: when no spare is left to add (or to mount a datastore on),
//! running beats the rules that keep a protected VM down (decision 5). VMs kept out only by their
//! anti-affinity group run beside a member; VMs kept out only by the failover headroom
//! (`placement.headroom_pct`) use it. Each is logged with what was set aside.

use super::*;
use crate::failover::occupy;
use crate::record::summarize;

impl Supervisor {
    /// Places what `plan` left out by relaxing, in turn, anti-affinity and the headroom; returns
    /// what was relaxed for each VM so placed.
    pub(crate) fn relax_last_resort(
        &self,
        plan: &mut planner::Plan,
        unusable: &BTreeSet<HostId>,
    ) -> BTreeMap<VmId, String> {
        let mut relaxed = BTreeMap::new();
        let blocked: Vec<VmId> = plan
            .unplaced
            .iter()
            .filter(|(_, why)| **why == planner::Unplaced::AntiAffinity)
            .map(|(vm, _)| vm.clone())
            .collect();
        if !blocked.is_empty() {
            let mut view = self.planning_view().into_owned();
            occupy(&mut view, &plan.placements);
            for vm in &blocked {
                if let Some(v) = view.vms.get_mut(vm) {
                    v.anti_affinity_group = None;
                }
            }
            let second = self.place_excluding(&view, &blocked, unusable);
            for (vm, to) in second.placements {
                plan.unplaced.remove(&vm);
                relaxed.insert(vm.clone(), "anti-affinity".to_owned());
                plan.placements.insert(vm, to);
            }
        }
        let headroom = self.cfg.placement.headroom_pct;
        let short: Vec<VmId> = plan
            .unplaced
            .iter()
            .filter(|(_, why)| **why == planner::Unplaced::NoCapacity)
            .map(|(vm, _)| vm.clone())
            .collect();
        if headroom > 0 && !short.is_empty() {
            let mut view = self.planning_view().into_owned();
            occupy(&mut view, &plan.placements);
            let policy = planner::Policy {
                headroom_pct: 0,
                ..self.cfg.placement.clone()
            };
            let second = self.place_excluding_by(&view, &short, unusable, &policy);
            for (vm, to) in second.placements {
                plan.unplaced.remove(&vm);
                relaxed.insert(
                    vm.clone(),
                    format!("headroom (placement.headroom_pct = {headroom})"),
                );
                plan.placements.insert(vm, to);
            }
        }
        relaxed
    }

    /// The members of the affinity groups of `vms` (backup clones are none), by group, each in
    /// id order: one walk of the VMs for all of them, and none when no VM of `vms` is in a group.
    pub(crate) fn affinity_members<'a>(
        &self,
        vms: impl Iterator<Item = &'a VmId>,
    ) -> BTreeMap<String, Vec<VmId>> {
        let mut members: BTreeMap<String, Vec<VmId>> = vms
            .filter_map(|vm| self.inv.vms.get(vm)?.affinity_group.clone())
            .map(|group| (group, Vec::new()))
            .collect();
        if members.is_empty() {
            return members;
        }
        for v in self.inv.vms.values().filter(|v| v.backup_of.is_none()) {
            if let Some(ids) = v.affinity_group.as_ref().and_then(|g| members.get_mut(g)) {
                ids.push(v.id.clone());
            }
        }
        members
    }

    /// Where placing `vm` on `to` splits its affinity group: the members that run, or are placed,
    /// on other hosts (the planner keeps a group together only where one host has room for it).
    /// `members` has its group's members ([`Supervisor::affinity_members`]).
    pub(crate) fn affinity_split(
        &self,
        vm: &VmId,
        to: &HostId,
        placements: &BTreeMap<VmId, HostId>,
        members: &BTreeMap<String, Vec<VmId>>,
    ) -> Option<String> {
        let group = self.inv.vms.get(vm)?.affinity_group.as_ref()?;
        let up = |h: &HostId| self.hosts.get(h).is_some_and(|r| r.state == HostState::Up);
        let apart: Vec<String> = members
            .get(group)?
            .iter()
            .filter(|id| *id != vm)
            .filter_map(|id| self.inv.vms.get(id))
            .filter_map(|v| {
                let at = match placements.get(&v.id) {
                    Some(h) => h,
                    None => v
                        .host
                        .as_ref()
                        .filter(|h| v.power == PowerState::PoweredOn && up(h))?,
                };
                (at != to).then(|| format!("{} on {}", self.vm_label(&v.id), self.host_label(at)))
            })
            .collect();
        (!apart.is_empty()).then(|| {
            format!(
                "affinity group {group} split, no live host has room for it together ({})",
                summarize(&apart)
            )
        })
    }

    /// Why VMs have no place, for the capacity alarm, when a rule keeps them from hosts that have
    /// room (anti-affinity, a fault-tolerant partner): the planner's reasons, with the VMs. Empty
    /// when none is kept out so (short of capacity, no host, a datastore not mounted).
    pub(crate) fn unplaced_reasons(&self, unplaced: &BTreeMap<VmId, planner::Unplaced>) -> String {
        let hides_room = |w: &planner::Unplaced| {
            matches!(
                w,
                planner::Unplaced::AntiAffinity | planner::Unplaced::FaultTolerance
            )
        };
        if !unplaced.values().any(hides_room) {
            return String::new();
        }
        let mut by: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
        for (vm, why) in unplaced {
            let what = match why {
                planner::Unplaced::AntiAffinity => {
                    "kept out by their anti-affinity group (the hosts with room run a member)"
                }
                planner::Unplaced::FaultTolerance => "kept out by their fault-tolerant partner",
                planner::Unplaced::HostRule => "kept out by a must (not) run on rule",
                planner::Unplaced::NoCapacity => "short of capacity",
                planner::Unplaced::NoHost => "with no host accepting VMs",
            };
            by.entry(what).or_default().push(self.vm_label(vm));
        }
        let parts: Vec<String> = by
            .into_iter()
            .map(|(what, vms)| format!("{} {what}: {}", vms.len(), summarize(&vms)))
            .collect();
        format!(" ({})", parts.join("; "))
    }
}
