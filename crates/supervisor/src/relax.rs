//! The last resort of placement: when no spare is left to add (or to mount a datastore on),
//! running beats the rules that keep a protected VM down (decision 5). VMs kept out only by their
//! anti-affinity group run beside a member; VMs kept out only by the failover headroom
//! (`placement.headroom_pct`) use it. Each is logged with what was set aside.

use super::*;
use crate::failover::occupy;

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
}
