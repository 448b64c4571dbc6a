//! The recovery ladder of a VM on a live host: restart, revert to the last good snapshot, restore
//! its backup clone, cold-migrate; each step started by `start_step`, the next chosen by
//! `next_step`.

use super::*;

impl Supervisor {
    pub(crate) fn restart_limited(&mut self, now: Time, vm: &VmId) -> bool {
        let window = self.cfg.restart_window;
        let limit = self.cfg.restart_limit as usize;
        let Some(rec) = self.vms.get_mut(vm) else {
            return true;
        };
        while rec.restarts.front().is_some_and(|t| now.since(*t) >= window) {
            rec.restarts.pop_front();
        }
        rec.restarts.len() >= limit
    }

    /// Starts one recovery step of a VM: the transition (with the action's id), then the action,
    /// and the step in the VM's incident.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start_step(
        &mut self,
        now: Time,
        vm: &VmId,
        step: Step,
        action: Action,
        priority: u8,
        reason: String,
        label: String,
    ) {
        // A backup still in flight on it (or a step it outlived) would hold this one up.
        self.abandon_actions_on(now, vm, &format!("{} goes first", step.name()));
        let id = ActionId(self.next_id);
        if let Some(r) = self.vms.get_mut(vm) {
            r.unproven = false;
            if step == Step::Failover {
                r.failover_started = Some(now);
            }
        }
        self.set_vm_state(now, vm, VmState::Recovering { step, action: id }, reason.clone());
        let issued = self.issue(now, action, Purpose::VmStep(vm.clone(), step), priority, reason);
        debug_assert_eq!(issued, id);
        let inc = self.vms.get(vm).and_then(|r| r.incident);
        if let Some(i) = inc.and_then(|i| self.incidents.get_mut(i)) {
            i.steps.push(label);
        }
    }

    /// A step that waited for vCenter is issued again (or the ladder goes on from it, if it cannot
    /// be issued any more: e.g. the restart limit was reached meanwhile).
    pub(crate) fn resume_step(&mut self, now: Time, vm: &VmId, step: Step, reason: String) {
        let after = Step::LADDER
            .iter()
            .position(|s| *s == step)
            .and_then(|i| i.checked_sub(1))
            .and_then(|i| Step::LADDER.get(i).copied());
        self.next_step(now, vm, after, reason);
    }

    pub(crate) fn begin_ladder(&mut self, now: Time, vm: &VmId, cause: String) {
        if self.evacuating_vm(vm) {
            // One action per VM: the live migration's outcome comes first, then it is judged.
            self.note(
                now,
                Subject::Vm(vm.clone()),
                format!("{cause}: its live migration ends first"),
            );
            return;
        }
        if self.relocating_vm(vm) {
            // The same for a relocation of its files.
            self.note(
                now,
                Subject::Vm(vm.clone()),
                format!("{cause}: the relocation of its files ends first"),
            );
            return;
        }
        self.open_vm_incident(now, vm, cause.clone());
        if let Some(r) = self.vms.get_mut(vm) {
            r.reverted_to = None;
        }
        self.next_step(now, vm, None, cause);
    }

    /// The last snapshot taken before the current incident began, and older than the one it was
    /// already reverted to in this incident (if any).
    pub(crate) fn good_snapshot(&self, vm: &VmId) -> Option<&am_core::Snapshot> {
        let since = self
            .vms
            .get(vm)
            .and_then(|r| r.incident)
            .and_then(|i| self.incidents.get(i))
            .map(|i| i.detected)?;
        let failing_since = self
            .vms
            .get(vm)
            .and_then(|r| r.failing_since)
            .unwrap_or(since)
            .min(since);
        let before = self
            .vms
            .get(vm)
            .and_then(|r| r.reverted_to)
            .map_or(failing_since, |t| t.min(failing_since));
        self.inv
            .snapshots
            .get(vm)?
            .iter()
            .filter(|s| s.created < before)
            .max_by_key(|s| s.created)
    }

    pub(crate) fn next_step(&mut self, now: Time, vm_id: &VmId, after: Option<Step>, reason: String) {
        let Some(vm) = self.inv.vms.get(vm_id).cloned() else {
            return;
        };
        let start = after
            .and_then(|a| Step::LADDER.iter().position(|s| *s == a))
            .map_or(0, |i| i + 1);
        for &step in &Step::LADDER[start..] {
            let action = match step {
                Step::Restart => {
                    if self.restart_limited(now, vm_id) {
                        self.raise(
                            now,
                            AlarmKind::RestartLimit,
                            Subject::Vm(vm_id.clone()),
                            Severity::Warning,
                            format!(
                                "{} restarts within {}s: not restarting again",
                                self.cfg.restart_limit,
                                self.cfg.restart_window.as_secs()
                            ),
                        );
                        continue;
                    }
                    if vm.power == PowerState::PoweredOn {
                        Action::Reset { vm: vm_id.clone() }
                    } else {
                        Action::PowerOn { vm: vm_id.clone() }
                    }
                }
                Step::RevertSnapshot => match self.good_snapshot(vm_id).map(|s| (s.id.clone(), s.created)) {
                    Some((snapshot, created)) => {
                        if self.held(now).is_none()
                            && let Some(r) = self.vms.get_mut(vm_id)
                        {
                            r.reverted_to = Some(created);
                        }
                        Action::RevertSnapshot {
                            vm: vm_id.clone(),
                            snapshot: Some(snapshot),
                        }
                    }
                    None => continue,
                },
                Step::RestoreClone => match (self.inv.latest_clone(vm_id), &vm.host) {
                    (Some(clone), Some(host)) => Action::RestoreClone {
                        vm: vm_id.clone(),
                        backup: clone.id.clone(),
                        host: host.clone(),
                    },
                    _ => continue,
                },
                Step::ColdMigrate => {
                    let mut exclude = self.unusable_hosts();
                    exclude.extend(vm.host.clone());
                    let view = self.planning_view();
                    let plan = self.place(&view, std::slice::from_ref(vm_id), &exclude);
                    match plan.placements.get(vm_id) {
                        Some(to) => Action::MigrateCold {
                            vm: vm_id.clone(),
                            to: to.clone(),
                        },
                        None => continue,
                    }
                }
                Step::Failover => continue,
            };
            if let Some(held) = self.held(now) {
                // It could not reach the VM, or must not: it waits, and nothing is counted.
                self.set_vm_state(
                    now,
                    vm_id,
                    VmState::Deferred { step },
                    format!("{reason}; {held}: {} waits for it", step.name()),
                );
                return;
            }
            if step == Step::Restart
                && let Some(r) = self.vms.get_mut(vm_id)
            {
                r.restarts.push_back(now);
            }
            self.start_step(
                now,
                vm_id,
                step,
                action,
                priority_of(&vm),
                reason,
                step.name().to_owned(),
            );
            return;
        }
        self.set_vm_state(
            now,
            vm_id,
            VmState::Failed,
            format!("no recovery step left ({reason})"),
        );
        let inc = self.vms.get(vm_id).and_then(|r| r.incident);
        self.close_incident(inc, None, Ending::Failed, "failed: no step left");
        self.raise(
            now,
            AlarmKind::RecoveryFailed,
            Subject::Vm(vm_id.clone()),
            Severity::Critical,
            format!("every recovery step failed for {vm_id}"),
        );
    }
}

/// The executor priority of a VM's actions: its restart priority.
pub(crate) fn priority_of(vm: &Vm) -> u8 {
    vm.priority as u8 * 40
}
