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
        let unreached = matches!(&result, Err(e) if e.is_vcenter_unreachable());
        if unreached {
            // Nothing more is issued until vCenter answers (or a moment has passed).
            self.vcenter_retry_at = now + VCENTER_RETRY;
        }
        if let Purpose::HostReconnect(h)
        | Purpose::HostRevive(h)
        | Purpose::HostFence(h)
        | Purpose::HostRemove(h)
        | Purpose::HostLockCheck(h, _) = &done.purpose
        {
            // Whatever the outcome, the host is free for its next action after the interval.
            if let Some(rec) = self.hosts.get_mut(h) {
                rec.action = None;
                rec.next_action_at = now + self.cfg.revive_interval;
            }
            if unreached {
                self.host_action_unreached(now, h, &done.action);
                return;
            }
        }
        match done.purpose {
            Purpose::VmStep(vm, step) => self.vm_step_done(now, &vm, step, id, &done.action, result),
            Purpose::Evacuate(h, vm) => self.migration_done(now, id, &h, &vm, result),
            Purpose::Maintenance(h, enter) => self.maintenance_done(now, &h, enter, result),
            Purpose::StorageMove(ds, vm) => self.storage_move_done(now, id, &ds, &vm, result),
            Purpose::HostReconnect(_) | Purpose::HostRevive(_) => {}
            Purpose::HostFence(h) => self.fence_done(now, &h, result),
            Purpose::HostLockCheck(h, vm) => self.lock_check_done(now, &h, &vm, result),
            Purpose::HostRemove(h) => {
                if let Err(e) = &result {
                    // Not tried again on its own: a refusal is a person's to look at.
                    if let Some(r) = self.hosts.get_mut(&h) {
                        r.removal_failed = true;
                        r.removal_settled = true;
                    }
                    let name = self.host_label(&h);
                    self.raise(
                        now,
                        AlarmKind::HostRemovalFailed,
                        Subject::Host(h.clone()),
                        Severity::Warning,
                        format!("removing dead host {name} failed ({e}); not tried again"),
                    );
                } else {
                    if self.host_state(&h) != Some(&HostState::Removed) {
                        self.set_host_state(now, &h, HostState::Removed, "removed after failed revival");
                    }
                    let inc = self.hosts.get(&h).and_then(|r| r.incident);
                    self.close_incident(inc, Some(now), Ending::Removed, "removed");
                    self.clear(now, AlarmKind::HostUnreachable, Subject::Host(h.clone()));
                    let name = self.host_label(&h);
                    self.raise(
                        now,
                        AlarmKind::HostRemoved,
                        Subject::Host(h.clone()),
                        Severity::Warning,
                        format!(
                            "host {name} removed after {} failed revival attempts",
                            self.cfg.revive_attempts
                        ),
                    );
                }
            }
            Purpose::Mount(h) => {
                if let Action::MountDatastore { datastore, .. } = &done.action {
                    match &result {
                        // Not tried again on its own, unless it never reached vCenter.
                        Err(e) if !e.is_vcenter_unreachable() => {
                            self.failed_mounts.insert((h, datastore.clone()));
                        }
                        Err(_) => {}
                        // Mounted: counted as such until the inventory says so itself.
                        Ok(_) => {
                            if let Some(d) = self.inv.datastores.get_mut(datastore)
                                && !d.hosts.contains(&h)
                            {
                                d.hosts.push(h);
                                self.rebuild_plans(now);
                            }
                        }
                    }
                }
                self.capacity_retry_at = now;
            }
            Purpose::Rehome(vm) => {
                if matches!(&result, Err(e) if !e.is_vcenter_unreachable()) {
                    self.rehome_failed.insert(vm);
                }
            }
            Purpose::Backup(vm) => {
                if let Ok(ActionOutcome::SnapshotCreated(_) | ActionOutcome::VmCreated(_)) = result {
                    self.prune_due.insert(vm);
                }
            }
            Purpose::AddSpare(spare) => {
                self.adding_spare = false;
                match result {
                    Ok(ActionOutcome::HostAdded(h)) => {
                        self.added_spares.insert(h.clone());
                        self.raise(
                            now,
                            AlarmKind::SpareHostAdded,
                            Subject::Host(h.clone()),
                            Severity::Info,
                            format!("spare {spare} added as host {h}"),
                        )
                    }
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
                if step == Step::Failover {
                    self.failover_went_through(now, vm);
                }
                let until = now + self.cfg.recovery_grace;
                self.set_vm_state(
                    now,
                    vm,
                    VmState::Verifying { step, until },
                    format!("{} done; waiting for it to answer", step.name()),
                );
            }
            Err(HvError::Locked { file, .. }) if step == Step::Failover => {
                self.files_locked(now, vm, &file);
            }
            Err(e @ HvError::InvalidState { .. }) if step == Step::Failover && self.runs_on_live_host(vm) => {
                // Already running (a retry after a lost reply, or started by someone else): the
                // failover's end state. Verified like a failover that went through.
                self.failover_went_through(now, vm);
                let host = self.inv.vms.get(vm).and_then(|v| v.host.clone());
                let on = host.map_or_else(String::new, |h| format!(" on {}", self.host_label(&h)));
                self.set_vm_state(
                    now,
                    vm,
                    VmState::Verifying {
                        step,
                        until: now + self.cfg.recovery_grace,
                    },
                    format!("failover: {e}: it runs{on} already; waiting for it to answer"),
                );
            }
            Err(e @ HvError::InvalidState { .. }) if matches!(action, Action::PowerOn { .. }) => {
                // Already powered on (by a user, or a power-on whose reply was lost): it runs;
                // whether it recovered is verified, not taken for a failed step.
                if let Some(r) = self.vms.get_mut(vm) {
                    r.restarts.pop_back();
                }
                self.set_vm_state(
                    now,
                    vm,
                    VmState::Verifying {
                        step,
                        until: now + self.cfg.recovery_grace,
                    },
                    format!("power-on: {e}: it runs already; waiting for it to answer"),
                );
            }
            Err(e @ HvError::Timeout { .. }) if step != Step::Failover && self.vm_host_up(vm) => {
                // No proof either way: the step may have taken effect (a lost reply) or never
                // run. Verified for recovery_grace before anything heavier.
                if let Some(r) = self.vms.get_mut(vm) {
                    r.unproven = step == Step::Restart;
                }
                self.set_vm_state(
                    now,
                    vm,
                    VmState::Verifying {
                        step,
                        until: now + self.cfg.recovery_grace,
                    },
                    format!(
                        "{}: {e}: it may have taken effect; waiting for it to answer",
                        step.name()
                    ),
                );
            }
            Err(e) if e.is_vcenter_unreachable() && step == Step::Failover => {
                // It never got to the target: the target is not ruled out, nothing is counted.
                let target = action
                    .host()
                    .map_or_else(String::new, |h| format!(" to {}", self.host_label(h)));
                self.set_vm_state(
                    now,
                    vm,
                    VmState::AwaitingCapacity,
                    format!("failover{target} did not reach vCenter ({e}): not counted; tried again once vCenter answers"),
                );
                self.capacity_retry_at = now;
            }
            Err(e) if e.is_vcenter_unreachable() => {
                if step == Step::Restart
                    && let Some(r) = self.vms.get_mut(vm)
                {
                    r.restarts.pop_back();
                }
                self.set_vm_state(
                    now,
                    vm,
                    VmState::Deferred { step },
                    format!(
                        "{} did not reach vCenter ({e}): not counted; issued again once vCenter answers",
                        step.name()
                    ),
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
                let home = self.inv.vms.get(vm).and_then(|v| v.host.clone());
                let host_dead = home
                    .as_ref()
                    .is_some_and(|h| matches!(self.host_state(h), Some(HostState::Dead { .. })));
                if self.vm_host_up(vm) {
                    self.next_step(now, vm, Some(step), format!("{} failed: {e}", step.name()));
                } else if host_dead && self.inv.vms.get(vm).is_some_and(Vm::is_protected) {
                    // A restore or migration that failed after its host died: failed over now.
                    self.await_failover(
                        now,
                        vm,
                        home,
                        format!("{} failed ({e}) and its host is dead", step.name()),
                    );
                    self.place_waiting(now);
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

impl Supervisor {
    /// A host action failed because vCenter could not be reached: it never got to the host, so it
    /// says nothing about it. A revival attempt is not counted, a fence that failed so raises no
    /// alarm, a removal is not settled: each is tried again once vCenter answers.
    fn host_action_unreached(&mut self, now: Time, host: &HostId, action: &Action) {
        let dead = matches!(self.host_state(host), Some(HostState::Dead { .. }));
        if let Some(r) = self.hosts.get_mut(host) {
            match action {
                Action::ReconnectHost { .. } | Action::ReviveHost { .. } if dead => {
                    r.revive_actions = r.revive_actions.saturating_sub(1);
                }
                Action::RemoveHost { .. } => r.removal_settled = false,
                _ => {}
            }
        }
        let name = self.host_label(host);
        self.note(
            now,
            Subject::Host(host.clone()),
            format!(
                "{} never reached {name} (vCenter unreachable): not counted; tried again once vCenter answers",
                action.name()
            ),
        );
    }

    /// Whether `vm` is powered on, on a host that is up, as the inventory shows it.
    fn runs_on_live_host(&self, vm: &VmId) -> bool {
        self.inv.vms.get(vm).is_some_and(|v| {
            v.power == PowerState::PoweredOn
                && v.host
                    .as_ref()
                    .is_some_and(|h| self.hosts.get(h).is_some_and(|r| r.state.is_live()))
        })
    }

    /// A look at an isolated host's VM locks came back. Gone: the host stopped running that VM,
    /// so it died since its isolation was found; it is declared dead and that VM is failed over
    /// first (behind its lock check, as on the first loss). Still held or not readable: it stays
    /// isolated.
    fn lock_check_done(
        &mut self,
        now: Time,
        host: &HostId,
        vm: &VmId,
        result: Result<ActionOutcome, HvError>,
    ) {
        if !matches!(self.host_state(host), Some(HostState::Isolated { .. })) {
            return;
        }
        match result {
            Ok(_) => {
                if let Some(r) = self.hosts.get_mut(host) {
                    r.unconfirmed = true;
                    r.canary = Some(vm.clone());
                }
                let vm = self.vm_label(vm);
                self.host_dead(
                    now,
                    host,
                    format!("isolated on its VMs' file locks alone, and {vm}'s lock is gone: it no longer runs it (failed over first)"),
                );
            }
            Err(HvError::Locked { .. }) => {}
            Err(e) => {
                let vm = self.vm_label(vm);
                self.note(
                    now,
                    Subject::Host(host.clone()),
                    format!("cannot look at {vm}'s locks ({e}): still taken for isolated"),
                );
            }
        }
    }

    /// A VM of a host dead on one signal restarted elsewhere: none of its files was locked, so
    /// the host does not run it; the host's other VMs follow.
    fn failover_went_through(&mut self, now: Time, vm: &VmId) {
        let Some(from) = self.vms.get(vm).and_then(|r| r.failed_from.clone()) else {
            return;
        };
        let Some(r) = self.hosts.get_mut(&from).filter(|r| r.unconfirmed) else {
            return;
        };
        r.unconfirmed = false;
        r.canary = None;
        self.capacity_retry_at = now;
        let (host, vm) = (self.host_label(&from), self.vm_label(vm));
        self.note(
            now,
            Subject::Host(from),
            format!("{vm} restarted elsewhere with no lock in the way: {host} does not run it; its other VMs follow"),
        );
    }

    /// A fence finished. Confirmed: an isolated host's VMs cannot run any more (dead: fail them
    /// over), a dead host may be removed. Failed: an alarm, and nothing of it is restarted.
    fn fence_done(&mut self, now: Time, host: &HostId, result: Result<ActionOutcome, HvError>) {
        let name = self.host_label(host);
        match result {
            Ok(_) => {
                self.clear(now, AlarmKind::FenceFailed, Subject::Host(host.clone()));
                if let Some(r) = self.hosts.get_mut(host) {
                    r.fenced = true;
                }
                if matches!(self.host_state(host), Some(HostState::Isolated { .. })) {
                    self.host_dead(
                        now,
                        host,
                        "fenced: powered off out of band, its VMs cannot run".into(),
                    );
                }
            }
            Err(e) => {
                let what = match self.host_state(host) {
                    Some(HostState::Isolated { .. }) => "none of its VMs is restarted elsewhere",
                    _ => "it is not removed",
                };
                self.raise(
                    now,
                    AlarmKind::FenceFailed,
                    Subject::Host(host.clone()),
                    Severity::Critical,
                    format!("fencing host {name} failed ({e}): {what}"),
                );
            }
        }
    }

    /// A failover found the VM's files locked: it still runs on the host it was restarted away
    /// from. That host is alive (isolated, not dead): the VM stays where it runs, its failover is
    /// over (the backend undid it), and the host's other waiting VMs are not failed over either.
    pub(crate) fn files_locked(&mut self, now: Time, vm: &VmId, file: &str) {
        let from = self
            .vms
            .get(vm)
            .and_then(|r| r.failed_from.clone())
            .or_else(|| self.inv.vms.get(vm).and_then(|v| v.host.clone()));
        let Some(host) = from else {
            self.set_vm_state(
                now,
                vm,
                VmState::Failed,
                format!("its files are locked ({file}) by a host the manager does not know"),
            );
            return;
        };
        let label = self.host_label(&host);
        if let Some(r) = self.hosts.get_mut(&host) {
            r.life_seen = true;
            r.locked_vms.insert(vm.clone());
        }
        let inc = self.vms.get_mut(vm).and_then(|r| r.incident.take());
        self.close_incident(
            inc,
            Some(now),
            Ending::StillRuns,
            format!("still runs on {label} (files locked)"),
        );
        if matches!(self.host_state(&host), Some(HostState::Up)) {
            // The host came back while the failover ran: the VM simply stays where it runs.
            if let Some(r) = self.vms.get_mut(vm) {
                r.failed_from = None;
            }
            self.set_vm_state(
                now,
                vm,
                VmState::Healthy,
                format!("its files are locked ({file}): it still runs on {label}, which is up again"),
            );
            return;
        }
        self.set_vm_state(
            now,
            vm,
            VmState::Frozen { host: host.clone() },
            format!("its files are locked ({file}): it still runs on {label}; not restarted elsewhere"),
        );
        match self.host_state(&host) {
            Some(HostState::Dead { .. } | HostState::Unreachable { .. }) => {
                let vm_label = self.vm_label(vm);
                self.host_isolated(
                    now,
                    &host,
                    format!("a failover found {vm_label}'s files locked: it still runs there"),
                );
            }
            Some(HostState::Isolated { .. }) => self.raise_isolated(now, &host, "its VMs' files are locked"),
            _ => {}
        }
    }
}
