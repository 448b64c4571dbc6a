//! VM states, one handler per state (`next_vm_state_<state>`): what a VM's evidence means in
//! each. The ladder's steps themselves are in `ladder`; failover from dead hosts in `failover`.

use super::*;

/// What is known of a VM at one moment.
struct Seen {
    /// Powered on.
    on: bool,
    /// Why it looks broken, if it does.
    failing: Option<String>,
    /// Its host is up (a VM is only judged on its own while its host is).
    host_up: bool,
}

impl Supervisor {
    pub(crate) fn vm_failing(&self, now: Time, vm: &Vm, rec: &VmRec) -> Option<String> {
        if vm.power != PowerState::PoweredOn {
            return None;
        }
        if rec.guest_alive == Some(false) {
            return Some(format!("guest not answering: {}", rec.guest_evidence));
        }
        if vm.heartbeat == GuestHeartbeat::Red {
            return Some("guest heartbeat red".into());
        }
        match rec.cpu_zero_since {
            Some(since) if now.since(since) >= self.cfg.hang_after => Some(format!(
                "hung: zero CPU for {}s while powered on",
                now.since(since).as_secs()
            )),
            _ => None,
        }
    }

    /// One step of a VM's state machine: the handler of its current state.
    pub(crate) fn evaluate_vm(&mut self, now: Time, id: &VmId) {
        let (Some(vm), Some(rec)) = (self.inv.vms.get(id), self.vms.get(id)) else {
            return;
        };
        let protected = vm.is_protected();
        let seen = Seen {
            on: vm.power == PowerState::PoweredOn,
            failing: self.vm_failing(now, vm, rec),
            host_up: self.vm_host_up(id),
        };
        let state = rec.state.clone();
        if let Some(r) = self.vms.get_mut(id) {
            // Failing time only counts while the host is up: a VM is judged on its own, never
            // for its host's trouble.
            r.failing_since = match (&seen.failing, r.failing_since) {
                _ if !seen.host_up => None,
                (Some(_), None) => Some(now),
                (Some(_), since) => since,
                (None, _) => None,
            };
        }
        if self.evacuating_vm(id) || self.relocating_vm(id) {
            // A live migration or relocation runs on it: one action per VM; its outcome comes first.
            return;
        }
        if !protected {
            if state != VmState::Unprotected {
                self.set_vm_state(now, id, VmState::Unprotected, "protection disabled");
            }
            return;
        }
        match state {
            VmState::Unprotected => self.next_vm_state_unprotected(now, id, &seen),
            VmState::Healthy => self.next_vm_state_healthy(now, id, seen),
            VmState::StayOff { .. } => self.next_vm_state_stay_off(now, id, &seen),
            VmState::OffUnexplained { since } => self.next_vm_state_off_unexplained(now, id, &seen, since),
            VmState::Verifying { step, until } => self.next_vm_state_verifying(now, id, seen, step, until),
            VmState::Deferred { step } => self.next_vm_state_deferred(now, id, seen, step),
            VmState::Failed => self.next_vm_state_failed(now, id, &seen),
            VmState::Reconciling { until, target, .. } => {
                self.next_vm_state_reconciling(now, id, &seen, until, target)
            }
            // Waiting for an action's outcome, its host, or capacity: the outcome, the host's
            // state or placement moves it on.
            VmState::Recovering { .. } | VmState::Frozen { .. } | VmState::AwaitingCapacity => {}
        }
    }

    /// Protection enabled again: healthy if it runs, else off on purpose.
    fn next_vm_state_unprotected(&mut self, now: Time, id: &VmId, seen: &Seen) {
        let next = if seen.on {
            VmState::Healthy
        } else {
            VmState::StayOff { by: None }
        };
        self.set_vm_state(now, id, next, "protection enabled");
    }

    /// Healthy: failing for `vm_confirm` with its host up (and the manager not isolated) starts
    /// the ladder; found off with its host up, it is a power-off to explain.
    fn next_vm_state_healthy(&mut self, now: Time, id: &VmId, seen: Seen) {
        if !seen.on && seen.host_up {
            // Off while the manager could not see it (its host was cut off) or by a change it
            // missed: the same as a power-off seen now.
            self.on_power_off(now, id);
            return;
        }
        let since = self.vms.get(id).and_then(|r| r.failing_since);
        let judged = self.vms.get(id).is_some_and(|r| now >= r.judge_after);
        if let (Some(why), Some(since)) = (seen.failing, since) {
            if judged && now.since(since) >= self.cfg.vm_confirm && seen.host_up && !self.manager_isolated() {
                self.begin_ladder(now, id, why);
            }
        }
    }

    /// Off on purpose: only someone powering it on ends that.
    fn next_vm_state_stay_off(&mut self, now: Time, id: &VmId, seen: &Seen) {
        if seen.on {
            self.set_vm_state(now, id, VmState::Healthy, "powered on again");
            self.clear(now, AlarmKind::VmPoweredOff, Subject::Vm(id.clone()));
        }
    }

    /// Off, nobody named yet: after `power_off_grace` with no user, a crash.
    fn next_vm_state_off_unexplained(&mut self, now: Time, id: &VmId, seen: &Seen, since: Time) {
        if seen.on {
            self.set_vm_state(now, id, VmState::Healthy, "powered on again");
        } else if now.since(since) >= self.cfg.power_off_grace && seen.host_up {
            self.begin_ladder(
                now,
                id,
                "powered off and no user named: treated as a crash".into(),
            );
        }
    }

    /// A step ran: answering again ends the incident; still failing at `until`, the next step.
    fn next_vm_state_verifying(&mut self, now: Time, id: &VmId, seen: Seen, step: Step, until: Time) {
        let positive = seen.on && seen.failing.is_none();
        if positive && self.vms.get(id).is_some_and(|r| r.guest_alive != Some(false)) {
            let inc = self.vms.get_mut(id).and_then(|r| {
                r.failover_tries = 0;
                r.failover_excluded.clear();
                r.incident.take()
            });
            self.set_vm_state(
                now,
                id,
                VmState::Healthy,
                format!("answers again after {}", step.name()),
            );
            if step == Step::Failover {
                // Ready: the next priority's restarts may start.
                self.capacity_retry_at = now;
            }
            self.close_incident(
                inc,
                Some(now),
                Ending::Recovered,
                format!("recovered by {}", step.name()),
            );
            self.clear(now, AlarmKind::RecoveryFailed, Subject::Vm(id.clone()));
        } else if now >= until {
            if !seen.host_up {
                return;
            }
            let unproven = self.vms.get(id).is_some_and(|r| r.unproven);
            // A restart that timed out may never have happened: it is tried again (within the
            // restart limit) before anything destructive.
            let older = step == Step::RevertSnapshot && self.good_snapshot(id).is_some();
            let after = if step == Step::Failover || (step == Step::Restart && unproven) {
                None
            } else if older {
                // The snapshot may hold the fault (taken after it began, before it was
                // detected): the next older one is tried before the backup clone.
                Some(Step::Restart)
            } else {
                Some(step)
            };
            let why = seen.failing.unwrap_or_else(|| "still not answering".into());
            let what = if older {
                format!(
                    "{} did not bring it back: {why}; trying the next older snapshot",
                    step.name()
                )
            } else if unproven {
                format!("{} timed out and it still does not answer: {why}", step.name())
            } else {
                format!("{} did not bring it back: {why}", step.name())
            };
            self.next_step(now, id, after, what);
        }
    }

    /// A step waits for vCenter: answering again on its own ends the incident; once vCenter
    /// answers (and its host is up) the step is issued.
    fn next_vm_state_deferred(&mut self, now: Time, id: &VmId, seen: Seen, step: Step) {
        let positive = seen.on && seen.failing.is_none();
        if positive && self.vms.get(id).is_some_and(|r| r.guest_alive != Some(false)) {
            let inc = self.vms.get_mut(id).and_then(|r| r.incident.take());
            self.set_vm_state(
                now,
                id,
                VmState::Healthy,
                format!("answers again while its {} waited for vCenter", step.name()),
            );
            self.close_incident(inc, Some(now), Ending::Recovered, "recovered on its own");
        } else if seen.host_up && self.held(now).is_none() {
            let why = seen.failing.unwrap_or_else(|| "still not answering".into());
            self.resume_step(
                now,
                id,
                step,
                format!("vCenter answers and recovery is armed; {why}"),
            );
        }
    }

    /// The ladder ran out: only the VM answering again ends that.
    fn next_vm_state_failed(&mut self, now: Time, id: &VmId, seen: &Seen) {
        if seen.on && seen.failing.is_none() && self.vms.get(id).is_some_and(|r| r.guest_alive != Some(false))
        {
            self.set_vm_state(now, id, VmState::Healthy, "answers again");
            self.clear(now, AlarmKind::RecoveryFailed, Subject::Vm(id.clone()));
        }
    }

    /// An action from before a restart may still run: only positive, fresh evidence counts (a
    /// guest answering or, with no guest probe, a green heartbeat), on the host the old action was
    /// moving it to; else, after the window, it is judged as it is. An unfinished failover is
    /// finished at once where that is safe: the VM is already registered on its target (its old
    /// registration is gone) and off; its power-on is convergent.
    fn next_vm_state_reconciling(
        &mut self,
        now: Time,
        id: &VmId,
        seen: &Seen,
        until: Time,
        target: Option<HostId>,
    ) {
        let probed = self.inv.vms.get(id).is_some_and(|v| v.guest_address.is_some());
        let green = self
            .inv
            .vms
            .get(id)
            .is_some_and(|v| v.heartbeat == GuestHeartbeat::Green);
        let alive = self.vms.get(id).is_some_and(|r| r.guest_alive == Some(true)) || (!probed && green);
        let host = self.inv.vms.get(id).and_then(|v| v.host.clone());
        let placed = target.is_none() || host.as_ref() == target.as_ref();
        let failover = self
            .restored_action(id)
            .is_some_and(|a| matches!(a, Action::Failover { .. }));
        if seen.on && seen.failing.is_none() && alive && placed {
            self.set_vm_state(
                now,
                id,
                VmState::Healthy,
                "runs: the action from before the restart took effect",
            );
        } else if failover
            && !seen.on
            && placed
            && let Some(to) = target
                .clone()
                .filter(|t| self.hosts.get(t).is_some_and(|r| r.state == HostState::Up))
        {
            let label = self.host_label(&to);
            self.open_vm_incident(now, id, "failover unfinished before the restart".into());
            let action = Action::Failover {
                vm: id.clone(),
                to: to.clone(),
            };
            let priority = self.inv.vms.get(id).map(crate::ladder::priority_of).unwrap_or(0);
            self.start_step(
                now,
                id,
                Step::Failover,
                action,
                priority,
                format!("finish the failover from before the restart: registered on {label}, off"),
                format!("failover to {to} (resumed)"),
            );
        } else if now >= until {
            self.after_reconcile(now, id);
        }
    }

    /// The journaled action that was unfinished on `vm` before the restart, if any.
    fn restored_action(&self, vm: &VmId) -> Option<&Action> {
        self.restored
            .unfinished
            .iter()
            .find(|(_, a)| a.vm() == Some(vm))
            .map(|(_, a)| a)
    }

    /// The reconcile window of a VM ended without the old action showing its effect: judge it as
    /// it is now, by its host's state.
    pub(crate) fn after_reconcile(&mut self, now: Time, vm: &VmId) {
        let host = self.inv.vms.get(vm).and_then(|v| v.host.clone());
        let on = self
            .inv
            .vms
            .get(vm)
            .is_some_and(|v| v.power == PowerState::PoweredOn);
        let host_state = host.as_ref().and_then(|h| self.host_state(h)).cloned();
        match (host_state, host) {
            (Some(HostState::Dead { .. } | HostState::Removed) | None, h) => {
                let from = h.as_ref().map_or_else(|| "no host".to_owned(), HostId::to_string);
                self.await_failover(now, vm, h, format!("reconciled: host {from} dead"));
                self.capacity_retry_at = now;
            }
            (Some(HostState::Isolated { .. }), Some(h)) => {
                self.set_vm_state(now, vm, VmState::Frozen { host: h }, "reconciled: host isolated");
            }
            (_, _) if on => {
                self.set_vm_state(now, vm, VmState::Healthy, "reconciled: judged as it is now");
                if let Some(r) = self.vms.get_mut(vm) {
                    r.judge_after = now;
                }
            }
            (_, _) => {
                self.set_vm_state(
                    now,
                    vm,
                    VmState::OffUnexplained { since: now },
                    "reconciled: it is off",
                );
            }
        }
    }
}
