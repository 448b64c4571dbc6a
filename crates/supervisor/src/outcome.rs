//! Action outcomes: what a finished action means for the VM step, host action, spare or backup
//! that issued it.

use super::*;

impl Supervisor {
    pub(crate) fn on_action_done(&mut self, now: Time, id: ActionId, result: Result<ActionOutcome, HvError>) {
        let Some(done) = self.in_flight.remove(&id) else {
            self.note(
                now,
                Subject::Cluster,
                format!("outcome of unknown action {id} ignored"),
            );
            return;
        };
        let subject = done.purpose.subject();
        let detail = match &result {
            Ok(ActionOutcome::Done) => done.action.to_string(),
            Ok(other) => format!("{} -> {other:?}", done.action),
            Err(e) => format!("{}: {e}", done.action),
        };
        self.log(
            now,
            subject,
            LogKind::Finished {
                id,
                ok: result.is_ok(),
                detail,
            },
        );
        if let Purpose::HostReconnect(h)
        | Purpose::HostRevive(h)
        | Purpose::HostFence(h)
        | Purpose::HostRemove(h) = &done.purpose
        {
            // Whatever the outcome, the host is free for its next action after the interval.
            if let Some(rec) = self.hosts.get_mut(h) {
                rec.action = None;
                rec.next_action_at = now + self.cfg.revive_interval;
            }
        }
        match done.purpose {
            Purpose::VmStep(vm, step) => self.vm_step_done(now, &vm, step, id, &done.action, result),
            Purpose::HostReconnect(_) | Purpose::HostRevive(_) => {}
            Purpose::HostFence(h) => {
                if result.is_ok() && matches!(self.host_state(&h), Some(HostState::Isolated { .. })) {
                    self.host_dead(
                        now,
                        &h,
                        "fenced: powered off out of band, its VMs cannot run".into(),
                    );
                }
            }
            Purpose::HostRemove(h) => {
                if result.is_ok() {
                    if self.host_state(&h) != Some(&HostState::Removed) {
                        self.set_host_state(now, &h, HostState::Removed, "removed after failed revival");
                    }
                    let inc = self.hosts.get(&h).and_then(|r| r.incident);
                    self.close_incident(inc, Some(now), "removed");
                    self.clear(now, AlarmKind::HostUnreachable, Subject::Host(h.clone()));
                    self.raise(
                        now,
                        AlarmKind::HostRemoved,
                        Subject::Host(h.clone()),
                        Severity::Warning,
                        format!(
                            "host {h} removed after {} failed revival attempts",
                            self.cfg.revive_attempts
                        ),
                    );
                }
            }
            Purpose::Rehome(_) => {}
            Purpose::Backup(vm) => {
                if let Ok(ActionOutcome::SnapshotCreated(_)) = result {
                    self.prune_backups(now, &vm);
                }
            }
            Purpose::AddSpare(spare) => {
                self.adding_spare = false;
                match result {
                    Ok(ActionOutcome::HostAdded(h)) => self.raise(
                        now,
                        AlarmKind::SpareHostAdded,
                        Subject::Host(h.clone()),
                        Severity::Info,
                        format!("spare {spare} added as host {h}"),
                    ),
                    Ok(_) => {}
                    Err(e) if e.is_retryable() => self.spares.push_front(spare),
                    Err(_) => {}
                }
                self.capacity_retry_at = now;
            }
        }
    }

    pub(crate) fn vm_step_done(
        &mut self,
        now: Time,
        vm: &VmId,
        step: Step,
        id: ActionId,
        action: &Action,
        result: Result<ActionOutcome, HvError>,
    ) {
        let current = matches!(self.vm_state(vm), Some(VmState::Recovering { action, .. }) if *action == id);
        if !current {
            self.note(
                now,
                Subject::Vm(vm.clone()),
                format!("outcome of superseded action {id} ignored"),
            );
            return;
        }
        match result {
            Ok(_) => {
                let until = now + self.cfg.recovery_grace;
                self.set_vm_state(
                    now,
                    vm,
                    VmState::Verifying { step, until },
                    format!("{} done; waiting for it to answer", step.name()),
                );
            }
            Err(e) if step == Step::Failover => {
                let target = action.host().cloned();
                if let Some(rec) = self.vms.get_mut(vm) {
                    rec.failover_tries += 1;
                    rec.failover_excluded.extend(target);
                }
                self.set_vm_state(
                    now,
                    vm,
                    VmState::AwaitingCapacity,
                    format!("failover failed: {e}"),
                );
                self.capacity_retry_at = now;
            }
            Err(e) => {
                if self.vm_host_up(vm) {
                    self.next_step(now, vm, Some(step), format!("{} failed: {e}", step.name()));
                } else {
                    // The host went away under the ladder: the host's recovery takes the VM over.
                    self.set_vm_state(
                        now,
                        vm,
                        VmState::Healthy,
                        format!(
                            "{} failed and its host is not up: host recovery takes over",
                            step.name()
                        ),
                    );
                }
            }
        }
    }
}
