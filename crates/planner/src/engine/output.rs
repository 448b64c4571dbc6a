//! Plans written from runs: the chosen run of a [`Computed`] as a [`Plan`], whole, or patched
//! from the first step that differs from the run the plan was made from.

use super::Engine;
use super::index::VmIx;
use super::search::{Computed, Step};
use crate::Plan;
use std::collections::HashMap;

impl Engine {
    /// The plan of the chosen run of `comp`.
    pub(crate) fn to_plan(&self, comp: &Computed) -> Plan {
        let mut plan = Plan::default();
        if let Some(t) = comp.traces.get(comp.chosen) {
            for st in &t.steps {
                self.write_step(&mut plan, st);
            }
        }
        plan
    }

    /// Writes the decision of one step into `plan`.
    fn write_step(&self, plan: &mut Plan, st: &Step) {
        let vm = &self.vms[st.vm].id;
        match (st.reason, st.host) {
            (None, Some(h)) => {
                plan.unplaced.remove(vm);
                let host = &self.hosts[h].id;
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
            (Some(reason), _) => {
                plan.placements.remove(vm);
                plan.unplaced.insert(vm.clone(), reason);
            }
            // A run gives every step a host or a reason.
            (None, None) => {}
        }
    }

    /// Rewrites `plan` (made from `old`) into the plan of `new`, whose chosen run has the same
    /// steps as the old one before step `from`.
    pub(crate) fn patch_plan(&self, plan: &mut Plan, old: &Computed, new: &Computed, from: usize) {
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
        let mut gone: HashMap<VmIx, Step> = o.iter().map(|st| (st.vm, *st)).collect();
        for st in n {
            if gone.remove(&st.vm) != Some(*st) {
                self.write_step(plan, st);
            }
        }
        for vm in gone.keys() {
            let id = &self.vms[*vm].id;
            plan.placements.remove(id);
            plan.unplaced.remove(id);
        }
    }
}
