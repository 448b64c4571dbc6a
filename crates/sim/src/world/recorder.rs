//! The recorder: invariant violations (split brain, over capacity, a user's power-off overridden,
//! VMs lost with a removed host), the true outages of protected VMs, the fault history and the
//! hypervisor call history. Owns [`Recorder`]; reads the truth to check the invariants after each
//! publication, changes nothing else.

use super::World;
use crate::truth::{FaultRecord, OpRecord, Outage, Violation};
use am_core::{HostId, Resources, Time, VmId};
use std::collections::{BTreeMap, BTreeSet};

/// What the simulator records for reports and invariant checks.
#[derive(Debug, Default)]
pub(super) struct Recorder {
    /// Invariant violations, in order.
    violations: Vec<Violation>,
    /// VMs running on two or more hosts, already recorded as a violation.
    double_run: BTreeSet<VmId>,
    /// Hosts over capacity, already recorded as a violation.
    over_capacity: BTreeSet<HostId>,
    /// Injected faults, applied or not.
    history: Vec<FaultRecord>,
    /// Hypervisor calls.
    ops: Vec<OpRecord>,
    /// Outages of protected VMs.
    outages: Vec<Outage>,
    /// Index in `outages` of the open outage of each protected VM that is down.
    down: BTreeMap<VmId, usize>,
}

impl Recorder {
    /// Records a violation found by an operation (not by the invariant checks).
    pub(super) fn violation(&mut self, v: Violation) {
        self.violations.push(v);
    }

    /// Records a fault, applied or not.
    pub(super) fn fault(&mut self, record: FaultRecord) {
        self.history.push(record);
    }
}

impl World {
    /// What the VMs running on each host use, in one pass over the VMs (a walk per host was
    /// hosts x VMs at every publication: most of a 50,000-VM run).
    fn loads(&self) -> BTreeMap<&HostId, Resources> {
        let mut loads: BTreeMap<&HostId, Resources> = BTreeMap::new();
        for v in self.vms.values() {
            for (i, h) in v.running_on.iter().enumerate() {
                // A VM counts once on a host, however often the host is listed.
                if !v.running_on[..i].contains(h) {
                    *loads.entry(h).or_insert(Resources::ZERO) += v.demand;
                }
            }
        }
        loads
    }

    /// Opens and closes outages and records new split brains and hosts over capacity at `t`.
    pub(super) fn check_invariants(&mut self, t: Time) {
        for vm in self.vms.values() {
            let down = vm.listed && vm.is_protected() && !vm.is_healthy();
            match (down, self.record.down.get(&vm.id)) {
                (true, None) => {
                    self.record.down.insert(vm.id.clone(), self.record.outages.len());
                    self.record.outages.push(Outage {
                        vm: vm.id.clone(),
                        from: t,
                        to: None,
                    });
                }
                (false, Some(&i)) => {
                    if let Some(o) = self.record.outages.get_mut(i) {
                        o.to = Some(t);
                    }
                    self.record.down.remove(&vm.id);
                }
                _ => {}
            }
            if vm.running_on.len() >= 2 {
                if self.record.double_run.insert(vm.id.clone()) {
                    self.record.violations.push(Violation::DoubleRun {
                        vm: vm.id.clone(),
                        hosts: vm.running_on.clone(),
                        at: t,
                    });
                }
            } else {
                self.record.double_run.remove(&vm.id);
            }
        }
        let per_host = self.loads();
        let loads: Vec<(HostId, Resources, Resources)> = self
            .hosts
            .values()
            .map(|h| {
                let used = per_host.get(&h.id).copied().unwrap_or(Resources::ZERO);
                (h.id.clone(), used, h.capacity)
            })
            .collect();
        for (host, used, capacity) in loads {
            if used.fits_in(&capacity) {
                self.record.over_capacity.remove(&host);
            } else if self.record.over_capacity.insert(host.clone()) {
                self.record.violations.push(Violation::OverCapacity {
                    host,
                    used,
                    capacity,
                    at: t,
                });
            }
        }
    }

    /// Every invariant violation so far.
    pub fn violations(&self) -> &[Violation] {
        &self.record.violations
    }

    /// Every outage of a protected VM so far.
    pub fn outages(&self) -> &[Outage] {
        &self.record.outages
    }

    /// Every injected fault so far.
    pub fn history(&self) -> &[FaultRecord] {
        &self.record.history
    }

    /// Every hypervisor call so far.
    pub fn ops(&self) -> &[OpRecord] {
        &self.record.ops
    }

    /// Records a hypervisor call.
    pub fn record_op(&mut self, op: OpRecord) {
        self.record.ops.push(op);
    }
}
