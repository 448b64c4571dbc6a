//! Evacuation and maintenance, as an operator asks for them (see `operator.rs` for the requests):
//! a host is emptied by live migration to the targets the planner chose once for all its VMs,
//! most important first, as many at a time as the bounds allow (per source host, per target host,
//! for the whole vCenter: a sliding window, so one slow move does not hold the others back); a
//! failed move is retried once elsewhere; then, if asked, the host enters maintenance mode. The
//! planner's waves are the unit of progress: a line each time one is done. A host being
//! evacuated, drained or in maintenance is no failover or placement target (it is not `Up`).
//! Leaving maintenance may bring back the VMs its evacuation moved away (a return, bounded alike).

use super::*;
use crate::record::summarize;

/// One move of an evacuation.
#[derive(Clone, Debug)]
pub(crate) struct Move {
    vm: VmId,
    from: HostId,
    to: HostId,
    /// The planned wave it belongs to (0-based).
    wave: usize,
    /// A powered-off VM, re-registered on the target (`RelocateVM_Task`), not live-migrated.
    cold: bool,
}

/// What an evacuation is for.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Goal {
    /// Empty the host; then enter maintenance mode if asked.
    Empty { enter_maintenance: bool },
    /// Bring back to the host the VMs its last evacuation moved away.
    Return,
}

/// An evacuation (or return) under way, by the host it is about.
#[derive(Clone, Debug)]
pub(crate) struct Evac {
    reason: String,
    goal: Goal,
    /// Moves not started yet, in order (wave by wave, most important VM first).
    queue: VecDeque<Move>,
    /// Moves in flight.
    running: BTreeMap<ActionId, Move>,
    /// Per planned wave: its moves not finished yet.
    wave_left: Vec<usize>,
    planned: usize,
    /// VMs already retried once elsewhere.
    retried: BTreeSet<VmId>,
    /// VMs moved (migration reported done): vCenter's inventory may still show them on the
    /// source for a moment after the task finished.
    moved: Vec<(VmId, HostId)>,
    /// VMs that could not move, and why.
    failed: Vec<(VmId, String)>,
    since: Time,
}

impl Evac {
    /// An evacuation of the moves in `queue` (each numbered with its planned wave), none
    /// started yet.
    fn new(reason: String, goal: Goal, queue: VecDeque<Move>, since: Time) -> Evac {
        let mut wave_left = vec![0; queue.iter().map(|m| m.wave + 1).max().unwrap_or(0)];
        for m in &queue {
            if let Some(n) = wave_left.get_mut(m.wave) {
                *n += 1;
            }
        }
        Evac {
            reason,
            goal,
            planned: queue.len(),
            queue,
            running: BTreeMap::new(),
            wave_left,
            retried: BTreeSet::new(),
            moved: Vec::new(),
            failed: Vec::new(),
            since,
        }
    }
}

/// An evacuation's progress, for status pages and `stats`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvacuationProgress {
    /// The host emptied (or, for a return, the host the VMs come back to).
    pub host: HostId,
    /// Why (maintenance, predicted failure, return).
    pub reason: String,
    /// Since when.
    pub since: Time,
    /// Moves planned.
    pub planned: usize,
    /// Moves done.
    pub moved: usize,
    /// Moves in flight.
    pub in_flight: usize,
    /// VMs that could not move.
    pub failed: usize,
    /// Planned waves, and how many are done.
    pub waves: usize,
    /// Waves whose every move finished.
    pub waves_done: usize,
}

impl Supervisor {
    /// Powered-on VMs registered on `host`.
    pub(crate) fn running_on(&self, host: &HostId) -> usize {
        self.vms_on(host)
            .filter(|v| v.power == PowerState::PoweredOn)
            .count()
    }

    /// The progress of every evacuation under way.
    pub fn evacuations(&self) -> Vec<EvacuationProgress> {
        self.evacuations
            .iter()
            .map(|(host, ev)| EvacuationProgress {
                host: host.clone(),
                reason: ev.reason.clone(),
                since: ev.since,
                planned: ev.planned,
                moved: ev.moved.len(),
                in_flight: ev.running.len(),
                failed: ev.failed.len(),
                waves: ev.wave_left.len(),
                waves_done: ev.wave_left.iter().filter(|n| **n == 0).count(),
            })
            .collect()
    }

    pub(crate) fn start_evacuation(
        &mut self,
        now: Time,
        host: &HostId,
        reason: String,
        enter_maintenance: bool,
    ) {
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
        let mut queue = VecDeque::new();
        let mut waves = 0;
        for w in ev.waves {
            let moves: Vec<Move> = w
                .migrations
                .into_iter()
                .filter(|m| &m.from == host)
                .map(|m| Move {
                    vm: m.vm,
                    from: m.from,
                    to: m.to,
                    wave: waves,
                    cold: false,
                })
                .collect();
            if !moves.is_empty() {
                waves += 1;
                queue.extend(moves);
            }
        }
        // Then the VMs that are off, last: re-registered cold on the hosts that stay, fewest
        // registered VMs first (they use no capacity until someone powers them on).
        let (cold, stuck) = self.cold_moves(host, &away, waves);
        if !stuck.is_empty() {
            self.note(
                now,
                subject.clone(),
                format!(
                    "{} (off) stay registered here: no other host up mounts their datastore",
                    summarize(&stuck)
                ),
            );
        }
        if !cold.is_empty() {
            waves += 1;
            queue.extend(cold);
        }
        let count = queue.len();
        self.set_host_state(
            now,
            host,
            HostState::Evacuating {
                since: now,
                reason: reason.clone(),
            },
            format!(
                "operator: evacuate ({reason}): {count} VMs in {waves} wave{}, at most {per_host} leaving, {} entering a host, {} in all at a time",
                if waves == 1 { "" } else { "s" },
                self.cfg.evacuation_per_target.max(1),
                self.cfg.evacuation_in_flight.max(1),
            ),
        );
        self.evacuations.insert(
            host.clone(),
            Evac::new(reason, Goal::Empty { enter_maintenance }, queue, now),
        );
        self.pump_evacuations(now);
    }

    /// After `maintenance exit HOST --return-vms`: the VMs its last evacuation moved away, still
    /// running where they went, come back by live migration (no plan needed: they ran there
    /// before and the host took nothing meanwhile).
    pub(crate) fn start_return(&mut self, now: Time, host: &HostId) {
        let Some(list) = self.evacuated_from.remove(host) else {
            self.note(
                now,
                Subject::Host(host.clone()),
                "no VMs to bring back: none were moved away by an evacuation",
            );
            return;
        };
        let per_host = self.cfg.evacuation_per_host.max(1) as usize;
        let mut queue = VecDeque::new();
        for (vm, went_to) in list {
            let Some(v) = self.inv.vms.get(&vm) else { continue };
            // Still shown on the host itself: vCenter's inventory had not caught up with its
            // move when the evacuation ended; it runs where it went.
            let there = v.host.as_ref() == Some(&went_to) || v.host.as_ref() == Some(host);
            if v.power != PowerState::PoweredOn || !there {
                continue; // Stopped or moved on since: it stays where it is.
            }
            let wave = queue.len() / per_host;
            queue.push_back(Move {
                vm,
                from: went_to,
                to: host.clone(),
                wave,
                cold: false,
            });
        }
        if queue.is_empty() {
            self.note(
                now,
                Subject::Host(host.clone()),
                "no VMs to bring back: they stopped or moved on",
            );
            return;
        }
        let name = self.host_label(host);
        self.note(
            now,
            Subject::Host(host.clone()),
            format!(
                "return to {name}: {} VMs come back by live migration",
                queue.len()
            ),
        );
        self.evacuations
            .insert(host.clone(), Evac::new("return".into(), Goal::Return, queue, now));
        self.pump_evacuations(now);
    }

    /// The powered-off VMs registered on `host`, each with a host to go to (see `cold_target`),
    /// as the moves of wave `wave`.
    /// Those with nowhere to go (no other host up mounts their datastore) are named apart.
    fn cold_moves(&self, host: &HostId, away: &BTreeSet<HostId>, wave: usize) -> (Vec<Move>, Vec<String>) {
        let mut exclude = self.unusable_hosts();
        exclude.extend(away.iter().cloned());
        let mut load = self.registered_per_host();
        let off: Vec<VmId> = self
            .vms_on(host)
            .filter(|v| v.power != PowerState::PoweredOn)
            .map(|v| v.id.clone())
            .collect();
        let mut moves = Vec::new();
        let mut stuck = Vec::new();
        for vm in off {
            match self.cold_target(&vm, &exclude, &load) {
                Some(to) => {
                    *load.entry(to.clone()).or_default() += 1;
                    moves.push(Move {
                        vm,
                        from: host.clone(),
                        to,
                        wave,
                        cold: true,
                    });
                }
                None => stuck.push(self.vm_label(&vm)),
            }
        }
        (moves, stuck)
    }

    /// VMs registered per host.
    fn registered_per_host(&self) -> BTreeMap<HostId, usize> {
        let mut n = BTreeMap::new();
        for h in self.inv.vms.values().filter_map(|v| v.host.as_ref()) {
            *n.entry(h.clone()).or_default() += 1;
        }
        n
    }

    /// Where a powered-off VM goes: a host that is up and not excluded, that mounts the VM's
    /// datastore (when known), registering the fewest VMs (`load`), then by id.
    fn cold_target(
        &self,
        vm: &VmId,
        exclude: &BTreeSet<HostId>,
        load: &BTreeMap<HostId, usize>,
    ) -> Option<HostId> {
        let ds = self
            .inv
            .vms
            .get(vm)
            .and_then(|v| v.datastore.as_ref())
            .and_then(|d| self.inv.datastores.get(d));
        self.inv
            .hosts
            .keys()
            .filter(|h| !exclude.contains(*h) && self.host_state(h) == Some(&HostState::Up))
            .filter(|h| ds.is_none_or(|d| d.hosts.contains(h)))
            .min_by_key(|h| (load.get(*h).copied().unwrap_or(0), (*h).clone()))
            .cloned()
    }

    /// Starts as many queued moves of every evacuation as the bounds allow (per source host, per
    /// target host, in all), most important first; ends the evacuations with nothing left.
    pub(crate) fn pump_evacuations(&mut self, now: Time) {
        let per_source = self.cfg.evacuation_per_host.max(1) as usize;
        let per_target = self.cfg.evacuation_per_target.max(1) as usize;
        let in_all = self.cfg.evacuation_in_flight.max(1) as usize;
        let mut leaving: BTreeMap<HostId, usize> = BTreeMap::new();
        let mut entering: BTreeMap<HostId, usize> = BTreeMap::new();
        let mut total = 0;
        for m in self.evacuations.values().flat_map(|e| e.running.values()) {
            *leaving.entry(m.from.clone()).or_default() += 1;
            *entering.entry(m.to.clone()).or_default() += 1;
            total += 1;
        }
        let hosts: Vec<HostId> = self.evacuations.keys().cloned().collect();
        for host in &hosts {
            loop {
                if total >= in_all {
                    break;
                }
                let Some(ev) = self.evacuations.get_mut(host) else {
                    break;
                };
                let free = |m: &Move| {
                    leaving.get(&m.from).copied().unwrap_or(0) < per_source
                        && entering.get(&m.to).copied().unwrap_or(0) < per_target
                };
                let Some(i) = ev.queue.iter().position(free) else {
                    break;
                };
                let Some(m) = ev.queue.remove(i) else { break };
                if self.migrate(now, host, m.clone(), "evacuation") {
                    *leaving.entry(m.from).or_default() += 1;
                    *entering.entry(m.to).or_default() += 1;
                    total += 1;
                }
            }
        }
        for host in &hosts {
            if self
                .evacuations
                .get(host)
                .is_some_and(|e| e.queue.is_empty() && e.running.is_empty())
            {
                self.finish_evacuation(now, host);
            }
        }
    }

    /// Issues one live migration of the evacuation of `host`, unless the VM moved or stopped
    /// meanwhile, or is in the middle of a recovery (then it is counted as not moved). Whether
    /// it was issued.
    fn migrate(&mut self, now: Time, host: &HostId, m: Move, why: &str) -> bool {
        let Some(v) = self.inv.vms.get(&m.vm) else {
            self.move_ended(now, host, &m, None);
            return false;
        };
        // (A VM coming back may still be shown on the host it returns to: see `start_return`.)
        let lagging = self.evacuations.get(host).is_some_and(|e| e.goal == Goal::Return)
            && v.host.as_ref() == Some(&m.to);
        if v.host.as_ref() != Some(&m.from) && !lagging {
            // It left on its own meanwhile.
            self.move_ended(now, host, &m, None);
            return false;
        }
        if (v.power == PowerState::PoweredOn) == m.cold {
            let why = if m.cold {
                "powered on meanwhile"
            } else {
                "not running any more"
            };
            self.move_ended(now, host, &m, Some(why.into()));
            return false;
        }
        let busy = self.in_flight.values().any(|f| f.action.vm() == Some(&m.vm));
        let state = self.vms.get(&m.vm).map(|r| &r.state);
        let quiet = if m.cold {
            !state.is_some_and(|s| {
                matches!(
                    s,
                    VmState::Recovering { .. }
                        | VmState::Verifying { .. }
                        | VmState::AwaitingCapacity
                        | VmState::Deferred { .. }
                        | VmState::Reconciling { .. }
                )
            })
        } else {
            state.is_none_or(|s| matches!(s, VmState::Healthy | VmState::Unprotected))
        };
        if busy || !quiet {
            self.move_ended(now, host, &m, Some("busy with its own recovery".into()));
            return false;
        }
        let priority = crate::ladder::priority_of(v);
        let (vl, tl) = (self.vm_label(&m.vm), self.host_label(&m.to));
        let (action, what) = if m.cold {
            (
                Action::Relocate {
                    vm: m.vm.clone(),
                    host: Some(m.to.clone()),
                    datastore: None,
                },
                format!("{why}: re-register {vl} (off) on {tl}"),
            )
        } else {
            (
                Action::MigrateLive {
                    vm: m.vm.clone(),
                    to: m.to.clone(),
                },
                format!("{why}: live-migrate {vl} to {tl}"),
            )
        };
        let id = self.issue(
            now,
            action,
            Purpose::Evacuate(host.clone(), m.vm.clone()),
            priority,
            what,
        );
        if let Some(ev) = self.evacuations.get_mut(host) {
            ev.running.insert(id, m);
        }
        true
    }

    /// A move of the evacuation of `host` is over: done (`None`) or not, and why. Says so when
    /// its wave is complete.
    fn move_ended(&mut self, now: Time, host: &HostId, m: &Move, failed: Option<String>) {
        let Some(ev) = self.evacuations.get_mut(host) else {
            return;
        };
        match failed {
            None => ev.moved.push((m.vm.clone(), m.to.clone())),
            Some(why) => ev.failed.push((m.vm.clone(), why)),
        }
        let Some(left) = ev.wave_left.get_mut(m.wave) else {
            return;
        };
        *left = left.saturating_sub(1);
        if *left == 0 {
            let what = if ev.goal == Goal::Return {
                "return"
            } else {
                "evacuation"
            };
            let (n, waves, moved, planned, failed) = (
                m.wave + 1,
                ev.wave_left.len(),
                ev.moved.len(),
                ev.planned,
                ev.failed.len(),
            );
            self.note(
                now,
                Subject::Host(host.clone()),
                format!("{what} wave {n}/{waves} done: {moved}/{planned} moved, {failed} could not move"),
            );
        }
    }

    /// Whether a live migration of an evacuation is in flight for `vm`.
    pub(crate) fn evacuating_vm(&self, vm: &VmId) -> bool {
        self.in_flight
            .values()
            .any(|f| matches!(&f.purpose, Purpose::Evacuate(_, v) if v == vm))
    }

    /// A live migration of an evacuation was given up (its source died): it does not move.
    pub(crate) fn migration_abandoned(&mut self, now: Time, id: ActionId, why: &str) {
        let found = self
            .evacuations
            .iter_mut()
            .find_map(|(h, e)| e.running.remove(&id).map(|m| (h.clone(), m)));
        if let Some((host, m)) = found {
            self.move_ended(now, &host, &m, Some(why.to_owned()));
        }
    }

    /// A live migration of an evacuation finished.
    pub(crate) fn migration_done(
        &mut self,
        now: Time,
        id: ActionId,
        host: &HostId,
        vm: &VmId,
        result: Result<ActionOutcome, HvError>,
    ) {
        let m = self.evacuations.get_mut(host).and_then(|e| e.running.remove(&id));
        let source = m.as_ref().map_or(host, |m| &m.from).clone();
        let source_lost = self
            .host_state(&source)
            .is_some_and(|s| matches!(s, HostState::Dead { .. }));
        if result.is_err() && source_lost {
            // The host died under it: it is failed over with the rest.
            self.await_failover(
                now,
                vm,
                Some(source.clone()),
                format!("host {source} dead during its live migration"),
            );
            self.place_waiting(now);
        }
        let Some(m) = m else {
            return;
        };
        match result {
            Ok(_) => self.move_ended(now, host, &m, None),
            Err(e) => {
                let retry = self
                    .evacuations
                    .get_mut(host)
                    .is_some_and(|ev| ev.retried.insert(vm.clone()));
                let goal = self.evacuations.get(host).map(|ev| ev.goal.clone());
                if retry && goal != Some(Goal::Return) && !source_lost {
                    // Once more, elsewhere: first in the queue.
                    let mut exclude = self.unusable_hosts();
                    exclude.insert(host.clone());
                    exclude.insert(m.to.clone());
                    let to = if m.cold {
                        self.cold_target(vm, &exclude, &self.registered_per_host())
                    } else {
                        let view = self.planning_view().into_owned();
                        let plan = self.place(&view, std::slice::from_ref(vm), &exclude);
                        plan.placements.get(vm).cloned()
                    };
                    match to {
                        Some(to) => {
                            let vl = self.vm_label(vm);
                            let tl = self.host_label(&to);
                            self.note(
                                now,
                                Subject::Vm(vm.clone()),
                                format!(
                                    "{} failed ({e}): {vl} is retried once, to {tl}",
                                    if m.cold { "cold move" } else { "live migration" }
                                ),
                            );
                            if let Some(ev) = self.evacuations.get_mut(host) {
                                ev.queue.push_front(Move { to, ..m });
                            }
                        }
                        None => self.move_ended(now, host, &m, Some(format!("{e}; no other host has room"))),
                    }
                } else {
                    self.move_ended(now, host, &m, Some(e.to_string()));
                }
            }
        }
        self.pump_evacuations(now);
    }

    fn finish_evacuation(&mut self, now: Time, host: &HostId) {
        let Some(ev) = self.evacuations.remove(host) else {
            return;
        };
        let name = self.host_label(host);
        let why: Vec<String> = ev
            .failed
            .iter()
            .map(|(v, e)| format!("{}: {e}", self.vm_label(v)))
            .collect();
        let Goal::Empty { enter_maintenance } = ev.goal else {
            let msg = format!(
                "return to {name} done: {} of {} VMs back{}",
                ev.moved.len(),
                ev.planned,
                if why.is_empty() {
                    String::new()
                } else {
                    format!("; not moved: {}", summarize(&why))
                }
            );
            self.note(now, Subject::Host(host.clone()), msg);
            return;
        };
        let moved: BTreeSet<&VmId> = ev.moved.iter().map(|(v, _)| v).collect();
        let left = self
            .vms_on(host)
            .filter(|v| v.power == PowerState::PoweredOn && !moved.contains(&v.id))
            .count();
        if !ev.failed.is_empty() || left > 0 {
            self.raise(
                now,
                AlarmKind::EvacuationFailed,
                Subject::Host(host.clone()),
                Severity::Warning,
                format!(
                    "evacuation of {name} ({}) did not finish: {} moved, {left} still run there ({}); it stays in service",
                    ev.reason,
                    ev.moved.len(),
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
        let count = ev.moved.len();
        self.evacuated_from.insert(host.clone(), ev.moved);
        if enter_maintenance {
            self.set_host_state(
                now,
                host,
                HostState::Drained { since: now },
                format!("evacuated: {count} VMs moved"),
            );
            self.enter_maintenance(now, host);
        } else {
            self.set_host_state(
                now,
                host,
                HostState::Drained { since: now },
                format!("evacuated: {count} VMs moved; no VM goes there until `maintenance exit`"),
            );
        }
    }

    pub(crate) fn enter_maintenance(&mut self, now: Time, host: &HostId) {
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
                self.set_host_state(now, host, HostState::Up, "maintenance mode left: back in service");
                if self.returning.remove(host) {
                    self.start_return(now, host);
                }
            }
            (true, Err(e)) => self.raise(
                now,
                AlarmKind::EvacuationFailed,
                Subject::Host(host.clone()),
                Severity::Warning,
                format!("host {name} could not enter maintenance mode ({e}); it holds no VMs and takes none"),
            ),
            (false, Err(e)) => {
                self.returning.remove(host);
                self.note(
                    now,
                    Subject::Host(host.clone()),
                    format!("maintenance exit failed ({e}): the host stays in maintenance"),
                );
            }
        }
    }

    /// A host being evacuated stopped answering: its evacuation ends, and says so (its
    /// remaining VMs fail over by plan if it is dead, as for any host failure; a live migration
    /// still running from it is given up then).
    pub(crate) fn stop_evacuation(&mut self, now: Time, host: &HostId) {
        let Some(ev) = self.evacuations.remove(host) else {
            return;
        };
        if ev.goal == Goal::Return {
            return;
        }
        let name = self.host_label(host);
        let left = self.running_on(host);
        self.raise(
            now,
            AlarmKind::EvacuationFailed,
            Subject::Host(host.clone()),
            Severity::Warning,
            format!(
                "evacuation of {name} stopped: the host stopped answering; {} moved, {left} still there fail over if it is dead",
                ev.moved.len()
            ),
        );
    }
}
