//! Evacuation and maintenance, as an operator asks for them: a host is emptied by live migration
//! in the planner's waves (bounded per host, most important VMs first), each wave once the one
//! before it finished, a failed move retried once elsewhere; then, if asked, the host enters
//! maintenance mode. A host being evacuated, drained or in maintenance is no failover or
//! placement target (it is not `Up`).

use super::*;
use crate::record::summarize;

/// An evacuation under way.
#[derive(Clone, Debug)]
pub(crate) struct Evac {
    reason: String,
    enter_maintenance: bool,
    /// Waves not started yet, in order.
    waves: VecDeque<Vec<planner::Migration>>,
    /// Waves in all, and the number of the current one (1-based).
    total: usize,
    wave: usize,
    /// Migrations of the current wave in flight.
    running: BTreeSet<ActionId>,
    /// VMs already retried once elsewhere.
    retried: BTreeSet<VmId>,
    /// VMs moved, in this wave and in all.
    moved_wave: usize,
    moved: usize,
    /// The VMs whose migration reported done: vCenter's inventory may still show them on the
    /// host for a moment after the task finished.
    moved_vms: BTreeSet<VmId>,
    /// VMs that could not move, and why.
    failed: Vec<(VmId, String)>,
}

impl Supervisor {
    /// An operator's request.
    pub(crate) fn on_operator(&mut self, now: Time, req: OperatorRequest) {
        let Some(host) = req.host().cloned() else {
            return self.on_storage_request(now, req); // A datastore's: storage.rs.
        };
        let subject = Subject::Host(host.clone());
        let Some(state) = self.host_state(&host).cloned() else {
            self.note(now, subject, format!("operator: {req}: refused, no such host"));
            return;
        };
        self.note(now, subject.clone(), format!("operator: {req}"));
        match req {
            OperatorRequest::Evacuate {
                reason,
                enter_maintenance,
                ..
            } => {
                if state != HostState::Up {
                    self.note(
                        now,
                        subject,
                        format!("evacuation refused: the host is {state}, not up"),
                    );
                    return;
                }
                self.start_evacuation(now, &host, reason, enter_maintenance);
            }
            OperatorRequest::MaintenanceEnter { .. } => {
                let running = self.running_on(&host);
                if !matches!(state, HostState::Up | HostState::Drained { .. }) || running > 0 {
                    self.note(
                        now,
                        subject,
                        format!("maintenance refused: the host is {state} and runs {running} VMs (evacuate it first)"),
                    );
                    return;
                }
                self.enter_maintenance(now, &host);
            }
            OperatorRequest::MaintenanceExit { .. } => match state {
                HostState::Drained { .. } => {
                    self.set_host_state(now, &host, HostState::Up, "taken back by the operator")
                }
                HostState::Maintenance { .. } => {
                    self.issue(
                        now,
                        Action::ExitMaintenance { host: host.clone() },
                        Purpose::Maintenance(host.clone(), false),
                        0,
                        "operator: maintenance exit".into(),
                    );
                }
                other => self.note(
                    now,
                    subject,
                    format!("maintenance exit refused: the host is {other}"),
                ),
            },
            OperatorRequest::EvacuateDatastore { .. } => {} // Has no host: answered above.
        }
    }

    /// Powered-on VMs registered on `host`.
    fn running_on(&self, host: &HostId) -> usize {
        self.inv
            .vms_on(host)
            .filter(|v| v.power == PowerState::PoweredOn)
            .count()
    }

    fn start_evacuation(&mut self, now: Time, host: &HostId, reason: String, enter_maintenance: bool) {
        let subject = Subject::Host(host.clone());
        // Hosts out of service are no targets either: they are planned as emptied too.
        let mut away: BTreeSet<HostId> = self
            .hosts
            .iter()
            .filter(|(_, r)| {
                matches!(
                    r.state,
                    HostState::Evacuating { .. } | HostState::Drained { .. } | HostState::Maintenance { .. }
                )
            })
            .map(|(h, _)| h.clone())
            .collect();
        away.insert(host.clone());
        let Some(plans) = self.plans.as_mut() else {
            self.note(now, subject, "evacuation refused: no placement plans yet");
            return;
        };
        let per_host = self.cfg.evacuation_per_host.max(1);
        let ev = plans.evacuation(&away, per_host);
        let unplaced: Vec<String> = ev
            .unplaced
            .keys()
            .filter(|v| self.inv.vms.get(*v).and_then(|vm| vm.host.as_ref()) == Some(host))
            .map(|v| self.vm_label(v))
            .collect();
        if !unplaced.is_empty() {
            // Refused before anything moves: nothing is left half-moved.
            let name = self.host_label(host);
            self.raise(
                now,
                AlarmKind::EvacuationFailed,
                subject,
                Severity::Warning,
                format!(
                    "evacuation of {name} refused: {} fit nowhere else; nothing was moved",
                    summarize(&unplaced)
                ),
            );
            return;
        }
        self.clear(now, AlarmKind::EvacuationFailed, subject.clone());
        let waves: VecDeque<Vec<planner::Migration>> = ev
            .waves
            .into_iter()
            .map(|w| {
                w.migrations
                    .into_iter()
                    .filter(|m| &m.from == host)
                    .collect::<Vec<_>>()
            })
            .filter(|w| !w.is_empty())
            .collect();
        let count: usize = waves.iter().map(Vec::len).sum();
        self.set_host_state(
            now,
            host,
            HostState::Evacuating {
                since: now,
                reason: reason.clone(),
            },
            format!(
                "operator: evacuate ({reason}): {count} VMs in {} wave{}, at most {per_host} per host at a time",
                waves.len(),
                if waves.len() == 1 { "" } else { "s" }
            ),
        );
        self.evacuations.insert(
            host.clone(),
            Evac {
                reason,
                enter_maintenance,
                total: waves.len(),
                waves,
                wave: 0,
                running: BTreeSet::new(),
                retried: BTreeSet::new(),
                moved_wave: 0,
                moved: 0,
                moved_vms: BTreeSet::new(),
                failed: Vec::new(),
            },
        );
        self.next_wave(now, host);
    }

    /// Starts the next wave, or ends the evacuation when none is left.
    fn next_wave(&mut self, now: Time, host: &HostId) {
        loop {
            let Some(ev) = self.evacuations.get_mut(host) else {
                return;
            };
            if !ev.running.is_empty() {
                return;
            }
            let Some(wave) = ev.waves.pop_front() else {
                self.finish_evacuation(now, host);
                return;
            };
            ev.wave += 1;
            ev.moved_wave = 0;
            let (n, total) = (ev.wave, ev.total);
            let names: Vec<String> = wave.iter().map(|m| self.vm_label(&m.vm)).collect();
            self.note(
                now,
                Subject::Host(host.clone()),
                format!("evacuation wave {n}/{total} starts: {}", names.join(", ")),
            );
            for m in wave {
                self.migrate(now, host, &m.vm, m.to, "evacuation");
            }
        }
    }

    /// Issues one live migration of the evacuation of `host`, unless the VM moved or stopped
    /// meanwhile, or is in the middle of a recovery (then it is counted as not moved).
    fn migrate(&mut self, now: Time, host: &HostId, vm: &VmId, to: HostId, why: &str) {
        let Some(v) = self.inv.vms.get(vm) else { return };
        if v.host.as_ref() != Some(host) {
            return; // It left on its own meanwhile.
        }
        if v.power != PowerState::PoweredOn {
            self.evac_failed(host, vm, "not running any more".into());
            return;
        }
        let busy = self.in_flight.values().any(|f| f.action.vm() == Some(vm));
        let healthy = self
            .vms
            .get(vm)
            .is_none_or(|r| matches!(r.state, VmState::Healthy | VmState::Unprotected));
        if busy || !healthy {
            self.evac_failed(host, vm, "busy with its own recovery".into());
            return;
        }
        let priority = crate::ladder::priority_of(v);
        let (vl, tl) = (self.vm_label(vm), self.host_label(&to));
        let id = self.issue(
            now,
            Action::MigrateLive {
                vm: vm.clone(),
                to: to.clone(),
            },
            Purpose::Evacuate(host.clone(), vm.clone()),
            priority,
            format!("{why}: live-migrate {vl} to {tl}"),
        );
        if let Some(ev) = self.evacuations.get_mut(host) {
            ev.running.insert(id);
        }
    }

    /// A VM of the evacuation of `host` that does not move, and why.
    fn evac_failed(&mut self, host: &HostId, vm: &VmId, why: String) {
        if let Some(ev) = self.evacuations.get_mut(host) {
            ev.failed.push((vm.clone(), why));
        }
    }

    /// Whether a live migration of an evacuation is in flight for `vm`.
    pub(crate) fn evacuating_vm(&self, vm: &VmId) -> bool {
        self.in_flight
            .values()
            .any(|f| matches!(&f.purpose, Purpose::Evacuate(_, v) if v == vm))
    }

    /// A live migration of an evacuation finished.
    pub(crate) fn migration_done(
        &mut self,
        now: Time,
        id: ActionId,
        host: &HostId,
        vm: &VmId,
        action: &Action,
        result: Result<ActionOutcome, HvError>,
    ) {
        let source_lost = self
            .host_state(host)
            .is_some_and(|s| matches!(s, HostState::Dead { .. }));
        if result.is_err() && source_lost {
            // The host died under it: it is failed over with the rest.
            self.await_failover(
                now,
                vm,
                Some(host.clone()),
                format!("host {host} dead during its live migration"),
            );
            self.place_waiting(now);
        }
        let Some(ev) = self.evacuations.get_mut(host) else {
            return;
        };
        ev.running.remove(&id);
        match result {
            Ok(_) => {
                ev.moved += 1;
                ev.moved_wave += 1;
                ev.moved_vms.insert(vm.clone());
            }
            Err(e) => {
                let failed_to = action.host().cloned();
                if ev.retried.insert(vm.clone()) {
                    // Once more, elsewhere.
                    let mut exclude = self.unusable_hosts();
                    exclude.insert(host.clone());
                    exclude.extend(failed_to);
                    let view = self.planning_view().into_owned();
                    let plan = self.place(&view, std::slice::from_ref(vm), &exclude);
                    let to = plan.placements.get(vm).cloned();
                    match to {
                        Some(to) => self.migrate(now, host, vm, to, &format!("retry after {e}")),
                        None => self.evac_failed(host, vm, format!("{e}; no other host has room")),
                    }
                } else {
                    self.evac_failed(host, vm, e.to_string());
                }
            }
        }
        let Some(ev) = self.evacuations.get(host) else {
            return;
        };
        if ev.running.is_empty() {
            let (n, total, moved) = (ev.wave, ev.total, ev.moved_wave);
            self.note(
                now,
                Subject::Host(host.clone()),
                format!("evacuation wave {n}/{total} done: {moved} moved"),
            );
            self.next_wave(now, host);
        }
    }

    fn finish_evacuation(&mut self, now: Time, host: &HostId) {
        let Some(ev) = self.evacuations.remove(host) else {
            return;
        };
        let name = self.host_label(host);
        let left = self
            .inv
            .vms_on(host)
            .filter(|v| v.power == PowerState::PoweredOn && !ev.moved_vms.contains(&v.id))
            .count();
        if !ev.failed.is_empty() || left > 0 {
            let why: Vec<String> = ev
                .failed
                .iter()
                .map(|(v, e)| format!("{}: {e}", self.vm_label(v)))
                .collect();
            self.raise(
                now,
                AlarmKind::EvacuationFailed,
                Subject::Host(host.clone()),
                Severity::Warning,
                format!(
                    "evacuation of {name} ({}) did not finish: {} moved, {left} still run there ({}); it stays in service",
                    ev.reason,
                    ev.moved,
                    summarize(&why)
                ),
            );
            self.set_host_state(
                now,
                host,
                HostState::Up,
                "evacuation did not finish: back in service",
            );
            return;
        }
        if ev.enter_maintenance {
            self.set_host_state(
                now,
                host,
                HostState::Drained { since: now },
                format!("evacuated: {} VMs moved", ev.moved),
            );
            self.enter_maintenance(now, host);
        } else {
            self.set_host_state(
                now,
                host,
                HostState::Drained { since: now },
                format!(
                    "evacuated: {} VMs moved; no VM goes there until `maintenance exit`",
                    ev.moved
                ),
            );
        }
    }

    fn enter_maintenance(&mut self, now: Time, host: &HostId) {
        self.issue(
            now,
            Action::EnterMaintenance { host: host.clone() },
            Purpose::Maintenance(host.clone(), true),
            0,
            "operator: maintenance enter".into(),
        );
    }

    /// A host that is up but that vCenter shows in maintenance mode (put there by someone else,
    /// in it when first seen, or back from a blip of its signals) is held as in maintenance: it
    /// takes no VM until `maintenance exit`.
    pub(crate) fn follow_maintenance(&mut self, now: Time, host: &HostId) {
        let in_mode = self.inv.hosts.get(host).is_some_and(|h| h.maintenance);
        if !in_mode || self.host_state(host) != Some(&HostState::Up) {
            return;
        }
        let pending = self
            .in_flight
            .values()
            .any(|f| matches!(&f.purpose, Purpose::Maintenance(h, _) if h == host));
        if !pending {
            self.set_host_state(
                now,
                host,
                HostState::Maintenance { since: now },
                "in maintenance mode in vCenter",
            );
        }
    }

    /// Entering or leaving maintenance mode finished.
    pub(crate) fn maintenance_done(
        &mut self,
        now: Time,
        host: &HostId,
        enter: bool,
        result: Result<ActionOutcome, HvError>,
    ) {
        let name = self.host_label(host);
        if result.is_ok()
            && let Some(h) = self.inv.hosts.get_mut(host)
        {
            // Counted as such until the inventory says so itself.
            h.maintenance = enter;
        }
        match (enter, result) {
            (true, Ok(_)) => self.set_host_state(
                now,
                host,
                HostState::Maintenance { since: now },
                "maintenance mode entered",
            ),
            (false, Ok(_)) => {
                self.set_host_state(now, host, HostState::Up, "maintenance mode left: back in service")
            }
            (true, Err(e)) => self.raise(
                now,
                AlarmKind::EvacuationFailed,
                Subject::Host(host.clone()),
                Severity::Warning,
                format!("host {name} could not enter maintenance mode ({e}); it holds no VMs and takes none"),
            ),
            (false, Err(e)) => self.note(
                now,
                Subject::Host(host.clone()),
                format!("maintenance exit failed ({e}): the host stays in maintenance"),
            ),
        }
    }

    /// A host being evacuated stopped answering: its evacuation ends, and says so (its
    /// remaining VMs fail over by plan if it is dead, as for any host failure).
    pub(crate) fn stop_evacuation(&mut self, now: Time, host: &HostId) {
        let Some(ev) = self.evacuations.remove(host) else {
            return;
        };
        let name = self.host_label(host);
        let left = self.running_on(host);
        self.raise(
            now,
            AlarmKind::EvacuationFailed,
            Subject::Host(host.clone()),
            Severity::Warning,
            format!(
                "evacuation of {name} stopped: the host stopped answering; {} moved, {left} still there fail over if it is dead",
                ev.moved
            ),
        );
    }
}
