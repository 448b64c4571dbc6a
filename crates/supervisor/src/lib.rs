//! # supervisor
//!
//! The pure core of the Availability Manager: observations in, commands out. It does no I/O and
//! reads no clock; the caller passes `now` with every [`Observation`], and carries out the
//! [`Command`]s of the returned [`Output`] after journaling its log lines.
//!
//! Each host and each VM has a state machine ([`HostState`], [`VmState`]); every change of state
//! goes through one function per kind (`set_host_state`, `set_vm_state`) that records it, with its
//! reason, in the audit log.
//!
//! The rules, in short:
//! - A VM that stops answering (guest probe lost, tools heartbeat red, or zero CPU while on) on a
//!   host that is up climbs the ladder: restart -> revert to the last good snapshot -> restore its
//!   backup clone -> cold-migrate to another live host. Each step has `recovery_grace` to bring it
//!   back.
//! - A host is unreachable only on two independent signals (management probe and the management
//!   server's connection state). Unreachable and still writing its storage heartbeat, or with
//!   guests still answering, it is *isolated*: its VMs may still run and are never restarted
//!   elsewhere (unless the policy fences the host first). Unreachable and silent, it is *dead*: its
//!   VMs restart on survivors by plan, and reconnect / out-of-band revival are tried before it is
//!   removed. Protected VMs that fit nowhere wait for capacity, and a spare host is added.
//! - A VM powered off by a user raises an alarm and nothing else. A power-off nobody asked for is a
//!   crash and is recovered.
//! - Restarts are rate limited per VM; many hosts lost at once (a storm) or the manager's own
//!   isolation stop all failover.
//!
//! ```
//! use am_core::{Host, Inventory, InventoryDelta, Observation, Resources, Subject, Time, Vm};
//! use supervisor::{Config, Supervisor, VmState};
//!
//! let mut inv = Inventory::default();
//! inv.apply(&InventoryDelta::HostUpsert(Host::new("h1", Resources::new(8_000, 16_384))));
//! inv.apply(&InventoryDelta::VmUpsert(Vm::new("web", Resources::new(1_000, 2_048), "h1")));
//! let mut sup = Supervisor::new(Config::default());
//! sup.step(Time::ZERO, Observation::Inventory(inv));
//! let lost = Observation::Liveness { subject: Subject::Vm("web".into()), alive: false, evidence: "3/3 lost".into() };
//! sup.step(Time::from_secs(1), lost);
//! let out = sup.step(Time::from_secs(5), Observation::Tick);
//! let actions: Vec<_> = out.commands.iter().filter(|c| matches!(c, am_core::Command::Execute { .. })).collect();
//! assert_eq!(actions.len(), 1); // reset web
//! assert!(matches!(sup.vm_state(&"web".into()), Some(VmState::Recovering { .. })));
//! ```

mod config;
mod state;

pub use config::{BackupPolicy, Config, IsolationResponse};
pub use state::{HostState, Step, VmState};

use am_core::{
    Action, ActionId, ActionOutcome, Alarm, AlarmChange, AlarmKind, ClusterEvent, Command, ConnectionState,
    EventKind, GuestHeartbeat, HostId, HvError, Inventory, InventoryDelta, LogEntry, LogKind, Observation,
    Output, PowerState, Severity, SnapshotId, Subject, Time, Vm, VmId,
};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// One failure the supervisor handled, for reports: what it was, when it was noticed, the steps
/// taken and how it ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    /// The host or VM.
    pub subject: Subject,
    /// What was seen.
    pub cause: String,
    /// When the supervisor decided to act (or not to).
    pub detected: Time,
    /// When it ended (VM answering again, host back or removed, VM left off on purpose).
    pub resolved: Option<Time>,
    /// Recovery steps taken, in order.
    pub steps: Vec<String>,
    /// How it ended.
    pub outcome: Option<String>,
}

/// What a restarted daemon knows from its journal (see `am-store`'s `recover`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Restore {
    /// The next action id: ids are never reused across restarts.
    pub next_action_id: u64,
    /// Actions journaled as intents whose outcome never arrived: they may still be running.
    pub unfinished: Vec<(ActionId, Action)>,
    /// VMs a user had switched off, and who.
    pub user_offs: BTreeMap<VmId, String>,
    /// Recent restarts per VM (the restart rate limit survives a restart of the daemon).
    pub restarts: BTreeMap<VmId, Vec<Time>>,
    /// Alarms that were active.
    pub alarms: Vec<Alarm>,
}

/// A serializable view of every machine's state, for status pages.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Host states.
    pub hosts: BTreeMap<HostId, HostState>,
    /// VM states.
    pub vms: BTreeMap<VmId, VmState>,
    /// Actions in flight.
    pub in_flight: Vec<(ActionId, Action)>,
    /// Active alarms.
    pub alarms: Vec<Alarm>,
    /// Whether the manager considers itself isolated.
    pub manager_isolated: bool,
    /// Whether the storm guard holds failover back.
    pub storm: bool,
}

#[derive(Clone, Debug)]
struct HostRec {
    state: HostState,
    /// The management probe's verdict (`None`: not probed).
    mgmt_alive: Option<bool>,
    mgmt_evidence: String,
    /// A reconnect/revive/fence/remove action in flight.
    action: Option<ActionId>,
    revive_actions: u32,
    next_action_at: Time,
    incident: Option<usize>,
    /// Already not connected when first seen (e.g. by a restarted daemon): its loss is old news
    /// and does not count towards a storm.
    down_when_first_seen: bool,
}

#[derive(Clone, Debug)]
struct VmRec {
    state: VmState,
    /// The guest probe's verdict (`None`: not probed).
    guest_alive: Option<bool>,
    guest_evidence: String,
    failing_since: Option<Time>,
    cpu_zero_since: Option<Time>,
    restarts: VecDeque<Time>,
    incident: Option<usize>,
    failover_tries: u32,
    failover_excluded: BTreeSet<HostId>,
    /// Not judged before this time (a guest that was just powered on is booting).
    judge_after: Time,
    /// The dead host it is being restarted away from (its precomputed plan applies).
    failed_from: Option<HostId>,
    /// When the backup cache takes its next snapshot.
    next_backup_at: Option<Time>,
}

#[derive(Clone, Debug)]
enum Purpose {
    VmStep(VmId, Step),
    HostReconnect(HostId),
    HostRevive(HostId),
    HostFence(HostId),
    HostRemove(HostId),
    AddSpare(String),
    /// Re-register a VM that stays off away from a dead host.
    Rehome(VmId),
    /// A backup-cache action (snapshot taken or removed).
    Backup(VmId),
}

impl Purpose {
    /// What the action is about, for the audit log.
    fn subject(&self) -> Subject {
        match self {
            Purpose::VmStep(vm, _) | Purpose::Rehome(vm) | Purpose::Backup(vm) => Subject::Vm(vm.clone()),
            Purpose::AddSpare(_) => Subject::Cluster,
            Purpose::HostReconnect(h)
            | Purpose::HostRevive(h)
            | Purpose::HostFence(h)
            | Purpose::HostRemove(h) => Subject::Host(h.clone()),
        }
    }
}

#[derive(Clone, Debug)]
struct InFlight {
    action: Action,
    purpose: Purpose,
}

/// The supervisor. Feed it with [`Supervisor::step`].
#[derive(Clone, Debug)]
pub struct Supervisor {
    cfg: Config,
    inv: Inventory,
    hosts: BTreeMap<HostId, HostRec>,
    vms: BTreeMap<VmId, VmRec>,
    in_flight: BTreeMap<ActionId, InFlight>,
    next_id: u64,
    alarms: BTreeMap<(AlarmKind, Subject), Alarm>,
    manager_isolated: bool,
    storm: bool,
    unreachable_log: VecDeque<(Time, HostId)>,
    /// Power-off events that arrived before the inventory showed the VM off: who did it.
    early_power_offs: BTreeMap<VmId, Option<String>>,
    spares: VecDeque<String>,
    adding_spare: bool,
    capacity_retry_at: Time,
    incidents: Vec<Incident>,
    out: Output,
    /// A failover plan for every host, kept current off the failure path (refreshed on ticks).
    plans: Option<planner::FailoverPlans>,
    /// From a restart: what VMs get when they are first seen (user power-offs, restart times,
    /// actions that may still run on them).
    restored: Restore,
    /// Spares whose addition was unfinished at a restart, and until when they are held back.
    pending_spares: Vec<(String, Time)>,
    /// When admission control is checked again at the latest.
    admission_check_at: Time,
}

impl Supervisor {
    /// A supervisor with no inventory yet; feed it an [`Observation::Inventory`] first.
    pub fn new(cfg: Config) -> Self {
        Supervisor {
            spares: cfg.spares.iter().cloned().collect(),
            cfg,
            inv: Inventory::default(),
            hosts: BTreeMap::new(),
            vms: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            next_id: 1,
            alarms: BTreeMap::new(),
            manager_isolated: false,
            storm: false,
            unreachable_log: VecDeque::new(),
            early_power_offs: BTreeMap::new(),
            adding_spare: false,
            capacity_retry_at: Time::ZERO,
            incidents: Vec::new(),
            out: Output::default(),
            plans: None,
            restored: Restore::default(),
            pending_spares: Vec::new(),
            admission_check_at: Time::ZERO,
        }
    }

    /// Takes one observation at time `now` and returns what to do about it.
    pub fn step(&mut self, now: Time, obs: Observation) -> Output {
        match obs {
            Observation::Tick => {
                // Plans catch up with the inventory here, never on the failure path.
                let changed = self
                    .plans
                    .as_mut()
                    .is_some_and(|plans| plans.refresh().deltas > 0);
                if changed || now >= self.admission_check_at {
                    self.check_admission(now);
                }
            }
            Observation::Inventory(inv) => self.on_inventory(now, inv),
            Observation::Delta(delta) => self.on_delta(now, delta),
            Observation::Event(event) => self.on_event(now, event),
            Observation::Liveness {
                subject,
                alive,
                evidence,
            } => self.on_liveness(subject, alive, evidence),
            Observation::ManagerIsolation { isolated, evidence } => {
                self.on_manager_isolation(now, isolated, evidence)
            }
            Observation::ActionDone { id, result } => self.on_action_done(now, id, result),
        }
        self.evaluate(now);
        std::mem::take(&mut self.out)
    }

    /// Before the first inventory of a restarted daemon: what its journal knows. Action ids
    /// continue after the journal's; VMs with an unfinished action are left alone until the
    /// inventory shows its outcome or `reconcile_window` passes; user power-offs, restart times
    /// and alarms carry over; a spare whose addition was unfinished is not added again.
    pub fn restore(&mut self, now: Time, restore: Restore) -> Output {
        self.next_id = self.next_id.max(restore.next_action_id);
        for alarm in &restore.alarms {
            self.alarms
                .insert((alarm.kind, alarm.subject.clone()), alarm.clone());
        }
        for (id, action) in &restore.unfinished {
            let subject = match (action.vm(), action.host(), action) {
                (Some(vm), _, _) => Subject::Vm(vm.clone()),
                (None, Some(h), _) => Subject::Host(h.clone()),
                (None, None, Action::AddHost { spare }) => {
                    // Not added twice: it waits out the window (or shows up in the inventory).
                    self.spares.retain(|s| s != spare);
                    self.pending_spares
                        .push((spare.clone(), now + self.cfg.reconcile_window));
                    Subject::Cluster
                }
                _ => Subject::Cluster,
            };
            self.note(
                now,
                subject,
                format!("unfinished before the restart: {id} {action}; waiting for its outcome"),
            );
        }
        self.restored = restore;
        self.restored.next_action_id = 0;
        std::mem::take(&mut self.out)
    }

    // ----- queries -------------------------------------------------------------------------

    /// The inventory as the supervisor knows it.
    pub fn inventory(&self) -> &Inventory {
        &self.inv
    }

    /// A host's state.
    pub fn host_state(&self, host: &HostId) -> Option<&HostState> {
        self.hosts.get(host).map(|r| &r.state)
    }

    /// A VM's state.
    pub fn vm_state(&self, vm: &VmId) -> Option<&VmState> {
        self.vms.get(vm).map(|r| &r.state)
    }

    /// Every incident so far, oldest first.
    pub fn incidents(&self) -> &[Incident] {
        &self.incidents
    }

    /// Active alarms.
    pub fn alarms(&self) -> impl Iterator<Item = &Alarm> {
        self.alarms.values()
    }

    /// Actions in flight.
    pub fn in_flight(&self) -> impl Iterator<Item = (&ActionId, &Action)> {
        self.in_flight.iter().map(|(id, f)| (id, &f.action))
    }

    /// VMs that are healthy now: the only ones whose snapshots count as good backups.
    pub fn healthy_vms(&self) -> impl Iterator<Item = &VmId> {
        self.vms
            .iter()
            .filter(|(_, r)| r.state == VmState::Healthy)
            .map(|(id, _)| id)
    }

    /// A serializable view of all states.
    pub fn status(&self) -> Status {
        Status {
            hosts: self
                .hosts
                .iter()
                .map(|(id, r)| (id.clone(), r.state.clone()))
                .collect(),
            vms: self
                .vms
                .iter()
                .map(|(id, r)| (id.clone(), r.state.clone()))
                .collect(),
            in_flight: self
                .in_flight
                .iter()
                .map(|(id, f)| (*id, f.action.clone()))
                .collect(),
            alarms: self.alarms.values().cloned().collect(),
            manager_isolated: self.manager_isolated,
            storm: self.storm,
        }
    }

    // ----- the recorded transition functions ---------------------------------------------

    fn log(&mut self, now: Time, subject: Subject, kind: LogKind) {
        self.out.log.push(LogEntry {
            at: now,
            subject,
            kind,
        });
    }

    fn note(&mut self, now: Time, subject: Subject, message: impl Into<String>) {
        self.log(
            now,
            subject,
            LogKind::Note {
                message: message.into(),
            },
        );
    }

    /// The one place a host changes state.
    fn set_host_state(&mut self, now: Time, host: &HostId, new: HostState, reason: impl Into<String>) {
        let Some(rec) = self.hosts.get_mut(host) else {
            return;
        };
        let from = rec.state.name().to_owned();
        if new == HostState::Up {
            // Capacity may have appeared: VMs waiting for a host try again now.
            self.capacity_retry_at = now;
        }
        rec.state = new;
        let to = rec.state.name().to_owned();
        self.log(
            now,
            Subject::Host(host.clone()),
            LogKind::Transition {
                from,
                to,
                reason: reason.into(),
            },
        );
    }

    /// The one place a VM changes state.
    fn set_vm_state(&mut self, now: Time, vm: &VmId, new: VmState, reason: impl Into<String>) {
        let Some(rec) = self.vms.get_mut(vm) else { return };
        let from = rec.state.name();
        if new == VmState::Healthy && !matches!(rec.state, VmState::Verifying { .. }) {
            // Back without having answered yet (powered on by someone, host reachable again):
            // old verdicts are stale, and a booting guest gets `recovery_grace` to answer.
            rec.failing_since = None;
            rec.judge_after = now + self.cfg.recovery_grace;
        }
        rec.state = new;
        let to = rec.state.name();
        self.log(
            now,
            Subject::Vm(vm.clone()),
            LogKind::Transition {
                from,
                to,
                reason: reason.into(),
            },
        );
    }

    fn raise(&mut self, now: Time, kind: AlarmKind, subject: Subject, severity: Severity, message: String) {
        let key = (kind, subject.clone());
        if self.alarms.get(&key).is_some_and(|a| a.message == message) {
            return;
        }
        let alarm = Alarm {
            kind,
            subject: subject.clone(),
            severity,
            message: message.clone(),
            at: now,
        };
        self.alarms.insert(key, alarm.clone());
        self.log(now, subject, LogKind::AlarmRaised { alarm: kind, message });
        self.out.commands.push(Command::Alarm(AlarmChange::Raise(alarm)));
    }

    fn clear(&mut self, now: Time, kind: AlarmKind, subject: Subject) {
        if self.alarms.remove(&(kind, subject.clone())).is_some() {
            self.log(now, subject.clone(), LogKind::AlarmCleared { alarm: kind });
            self.out.commands.push(Command::Alarm(AlarmChange::Clear {
                kind,
                subject,
                at: now,
            }));
        }
    }

    fn issue(
        &mut self,
        now: Time,
        action: Action,
        purpose: Purpose,
        priority: u8,
        reason: String,
    ) -> ActionId {
        let id = ActionId(self.next_id);
        self.next_id += 1;
        let subject = purpose.subject();
        self.log(
            now,
            subject,
            LogKind::Issued {
                id,
                action: action.clone(),
            },
        );
        self.out.commands.push(Command::Execute {
            id,
            action: action.clone(),
            priority,
            reason,
        });
        self.in_flight.insert(id, InFlight { action, purpose });
        id
    }

    fn open_incident(&mut self, now: Time, subject: Subject, cause: impl Into<String>) -> usize {
        self.incidents.push(Incident {
            subject,
            cause: cause.into(),
            detected: now,
            resolved: None,
            steps: Vec::new(),
            outcome: None,
        });
        self.incidents.len() - 1
    }

    /// Ends an incident; one that already ended keeps its first outcome.
    fn close_incident(&mut self, idx: Option<usize>, now: Option<Time>, outcome: impl Into<String>) {
        if let Some(inc) = idx.and_then(|i| self.incidents.get_mut(i)) {
            if inc.outcome.is_none() {
                inc.resolved = now;
                inc.outcome = Some(outcome.into());
            }
        }
    }

    /// Opens an incident for a VM; an open one it replaces ends as superseded.
    fn open_vm_incident(&mut self, now: Time, vm: &VmId, cause: String) -> usize {
        let inc = self.open_incident(now, Subject::Vm(vm.clone()), cause.clone());
        let old = self.vms.get_mut(vm).and_then(|r| r.incident.replace(inc));
        self.close_incident(old, None, format!("superseded: {cause}"));
        inc
    }

    // ----- observations ------------------------------------------------------------------

    fn on_inventory(&mut self, now: Time, inv: Inventory) {
        let gone_hosts: Vec<HostId> = self
            .hosts
            .keys()
            .filter(|h| !inv.hosts.contains_key(*h))
            .cloned()
            .collect();
        let gone_vms: Vec<VmId> = self
            .vms
            .keys()
            .filter(|v| !inv.vms.contains_key(*v))
            .cloned()
            .collect();
        // A resync (after vCenter was unreachable) may show VMs that went off meanwhile: the same
        // judgement as a delta would have given.
        let went_off: Vec<VmId> = inv
            .vms
            .values()
            .filter(|v| v.power != PowerState::PoweredOn)
            .filter(|v| {
                self.inv
                    .vms
                    .get(&v.id)
                    .is_some_and(|old| old.power == PowerState::PoweredOn)
            })
            .map(|v| v.id.clone())
            .collect();
        self.inv = inv;
        self.plans = match planner::FailoverPlans::new(
            &self.inv,
            &planner::Constraints::default(),
            &self.cfg.placement,
        ) {
            Ok(plans) => Some(plans),
            Err(e) => {
                self.note(now, Subject::Cluster, format!("no precomputed plans: {e}"));
                None
            }
        };
        for h in gone_hosts {
            self.host_gone(now, &h);
        }
        for v in gone_vms {
            self.vm_gone(now, &v);
        }
        let hosts: Vec<HostId> = self.inv.hosts.keys().cloned().collect();
        for h in hosts {
            self.ensure_host(now, &h);
        }
        let vms: Vec<VmId> = self.inv.vms.keys().cloned().collect();
        for v in vms {
            self.ensure_vm(now, &v);
        }
        for v in went_off {
            self.on_power_off(now, &v);
        }
    }

    fn ensure_host(&mut self, now: Time, host: &HostId) {
        if self
            .hosts
            .get(host)
            .is_some_and(|r| r.state != HostState::Removed)
        {
            return;
        }
        let connected = self
            .inv
            .hosts
            .get(host)
            .is_some_and(|h| h.connection == ConnectionState::Connected);
        let known = self.hosts.contains_key(host);
        let rec = HostRec {
            state: HostState::Removed,
            mgmt_alive: None,
            mgmt_evidence: String::new(),
            action: None,
            revive_actions: 0,
            next_action_at: now,
            incident: None,
            down_when_first_seen: !connected && !known,
        };
        self.hosts.insert(host.clone(), rec);
        let (state, reason) = if connected {
            (HostState::Up, "in the inventory, connected")
        } else {
            (
                HostState::Suspect { since: now },
                "in the inventory, not connected",
            )
        };
        if known {
            self.set_host_state(now, host, state, reason);
            return;
        }
        // First sight: recorded like a transition, from `new`.
        if state == HostState::Up {
            self.capacity_retry_at = now;
        }
        let to = state.name().to_owned();
        if let Some(r) = self.hosts.get_mut(host) {
            r.state = state;
        }
        self.log(
            now,
            Subject::Host(host.clone()),
            LogKind::Transition {
                from: "new".into(),
                to,
                reason: reason.into(),
            },
        );
    }

    fn ensure_vm(&mut self, now: Time, vm: &VmId) {
        if self.vms.contains_key(vm) {
            return;
        }
        let Some(v) = self.inv.vms.get(vm) else { return };
        let user_off = self.restored.user_offs.remove(vm);
        let pending = self
            .restored
            .unfinished
            .iter()
            .find(|(_, a)| a.vm() == Some(vm))
            .map(|(id, a)| {
                let target = match a {
                    Action::Failover { to, .. }
                    | Action::MigrateCold { to, .. }
                    | Action::MigrateLive { to, .. } => Some(to.clone()),
                    Action::RestoreClone { host, .. } => Some(host.clone()),
                    _ => None,
                };
                (format!("{id} {a}"), target)
            });
        let (state, reason) = if !v.is_protected() {
            (VmState::Unprotected, "not protected".to_owned())
        } else if let (Some(user), false) = (&user_off, v.power == PowerState::PoweredOn) {
            (
                VmState::StayOff {
                    by: Some(user.clone()),
                },
                format!("off by {user} before the restart"),
            )
        } else if let Some((action, target)) = pending {
            let until = now + self.cfg.reconcile_window;
            let reason = format!("{action} unfinished before the restart");
            (
                VmState::Reconciling {
                    action,
                    target,
                    until,
                },
                reason,
            )
        } else if v.power == PowerState::PoweredOn {
            (VmState::Healthy, "running when first seen".to_owned())
        } else {
            (
                VmState::StayOff { by: None },
                "off when first seen: left off".to_owned(),
            )
        };
        let restarts: VecDeque<Time> = self.restored.restarts.remove(vm).unwrap_or_default().into();
        self.vms.insert(
            vm.clone(),
            VmRec {
                state: VmState::Unprotected,
                guest_alive: None,
                guest_evidence: String::new(),
                failing_since: None,
                cpu_zero_since: None,
                restarts,
                incident: None,
                failover_tries: 0,
                failover_excluded: BTreeSet::new(),
                judge_after: Time::ZERO,
                failed_from: None,
                next_backup_at: None,
            },
        );
        self.log(
            now,
            Subject::Vm(vm.clone()),
            LogKind::Transition {
                from: "new".into(),
                to: state.name(),
                reason,
            },
        );
        if let Some(rec) = self.vms.get_mut(vm) {
            rec.state = state;
        }
    }

    fn host_gone(&mut self, now: Time, host: &HostId) {
        if self
            .hosts
            .get(host)
            .is_some_and(|r| r.state != HostState::Removed)
        {
            self.set_host_state(now, host, HostState::Removed, "gone from the inventory");
            let inc = self.hosts.get(host).and_then(|r| r.incident);
            self.close_incident(inc, Some(now), "removed");
        }
    }

    fn vm_gone(&mut self, now: Time, vm: &VmId) {
        if let Some(rec) = self.vms.remove(vm) {
            self.close_incident(rec.incident, Some(now), "gone from the inventory");
            self.note(now, Subject::Vm(vm.clone()), "gone from the inventory");
        }
    }

    fn on_delta(&mut self, now: Time, delta: InventoryDelta) {
        if let Some(plans) = self.plans.as_mut() {
            plans.defer(&delta);
        }
        match &delta {
            InventoryDelta::HostUpsert(h) => {
                let id = h.id.clone();
                self.inv.apply(&delta);
                self.ensure_host(now, &id);
            }
            InventoryDelta::HostRemoved(id) => {
                let id = id.clone();
                self.inv.apply(&delta);
                self.host_gone(now, &id);
            }
            InventoryDelta::VmUpsert(vm) => {
                let id = vm.id.clone();
                let was_on = self
                    .inv
                    .vms
                    .get(&id)
                    .map(|old| old.power == PowerState::PoweredOn);
                let now_on = vm.power == PowerState::PoweredOn;
                let cpu_zero = now_on && vm.cpu_usage_mhz == Some(0);
                self.inv.apply(&delta);
                self.ensure_vm(now, &id);
                if let Some(rec) = self.vms.get_mut(&id) {
                    match (cpu_zero, rec.cpu_zero_since) {
                        (true, None) => rec.cpu_zero_since = Some(now),
                        (false, Some(_)) => rec.cpu_zero_since = None,
                        _ => {}
                    }
                }
                if was_on == Some(true) && !now_on {
                    self.on_power_off(now, &id);
                }
            }
            InventoryDelta::VmRemoved(id) => {
                let id = id.clone();
                self.inv.apply(&delta);
                self.vm_gone(now, &id);
            }
            InventoryDelta::DatastoreUpsert(_) | InventoryDelta::Snapshots { .. } => self.inv.apply(&delta),
        }
    }

    fn on_power_off(&mut self, now: Time, vm: &VmId) {
        let Some(rec) = self.vms.get(vm) else { return };
        match rec.state {
            VmState::Healthy | VmState::Verifying { .. } | VmState::Failed => {}
            // Our own action (a migration, a revert) or a VM nobody protects: not news.
            _ => return,
        }
        match self.early_power_offs.remove(vm) {
            Some(Some(user)) => self.user_powered_off(now, vm, user),
            Some(None) => self.begin_ladder(now, vm, "powered off with no user (crash)".into()),
            None => self.set_vm_state(
                now,
                vm,
                VmState::OffUnexplained { since: now },
                "powered off; waiting for the event that says who did it",
            ),
        }
    }

    fn user_powered_off(&mut self, now: Time, vm: &VmId, user: String) {
        let inc = self.open_vm_incident(now, vm, format!("powered off by {user}"));
        self.set_vm_state(
            now,
            vm,
            VmState::StayOff {
                by: Some(user.clone()),
            },
            format!("powered off by user {user}: no failover"),
        );
        self.close_incident(Some(inc), Some(now), format!("left off (user {user})"));
        self.raise(
            now,
            AlarmKind::VmPoweredOff,
            Subject::Vm(vm.clone()),
            Severity::Warning,
            format!("VM powered off by {user}; not failed over"),
        );
    }

    fn on_event(&mut self, now: Time, event: ClusterEvent) {
        match event.kind {
            EventKind::VmPoweredOff { vm, user } => {
                if user.as_deref() == Some(self.cfg.manager_user.as_str()) {
                    return;
                }
                let Some(rec) = self.vms.get(&vm) else { return };
                let is_off = self
                    .inv
                    .vms
                    .get(&vm)
                    .is_some_and(|v| v.power != PowerState::PoweredOn);
                match (&rec.state, user) {
                    (VmState::OffUnexplained { .. }, Some(u)) => self.user_powered_off(now, &vm, u),
                    (VmState::OffUnexplained { .. }, None) => {
                        self.begin_ladder(now, &vm, "powered off with no user (crash)".into())
                    }
                    (VmState::Healthy | VmState::Verifying { .. } | VmState::Failed, user) if !is_off => {
                        self.early_power_offs.insert(vm, user);
                    }
                    // Off already, and not yet judged (the state change came without the event,
                    // e.g. from a resync): the event decides now.
                    (VmState::Healthy | VmState::Verifying { .. } | VmState::Failed, Some(u)) => {
                        self.user_powered_off(now, &vm, u)
                    }
                    (VmState::Healthy | VmState::Verifying { .. } | VmState::Failed, None) => {
                        self.begin_ladder(now, &vm, "powered off with no user (crash)".into())
                    }
                    _ => {}
                }
            }
            EventKind::VmPoweredOn { .. } | EventKind::Other { .. } => {}
            EventKind::HostConnectionLost { host } => {
                self.note(now, Subject::Host(host), "management server lost the connection");
            }
        }
    }

    fn on_liveness(&mut self, subject: Subject, alive: bool, evidence: String) {
        match subject {
            Subject::Host(h) => {
                if let Some(rec) = self.hosts.get_mut(&h) {
                    rec.mgmt_alive = Some(alive);
                    rec.mgmt_evidence = evidence;
                }
            }
            Subject::Vm(v) => {
                if let Some(rec) = self.vms.get_mut(&v) {
                    rec.guest_alive = Some(alive);
                    rec.guest_evidence = evidence;
                }
            }
            Subject::Cluster | Subject::Manager => {}
        }
    }

    fn on_manager_isolation(&mut self, now: Time, isolated: bool, evidence: String) {
        if isolated == self.manager_isolated {
            return;
        }
        self.manager_isolated = isolated;
        let (from, to) = if isolated {
            ("connected", "isolated")
        } else {
            ("isolated", "connected")
        };
        self.log(
            now,
            Subject::Manager,
            LogKind::Transition {
                from: from.into(),
                to: to.into(),
                reason: evidence.clone(),
            },
        );
        if isolated {
            self.raise(
                now,
                AlarmKind::ManagerIsolated,
                Subject::Manager,
                Severity::Critical,
                format!("manager cannot reach its isolation addresses ({evidence}); acting on nothing"),
            );
        } else {
            self.clear(now, AlarmKind::ManagerIsolated, Subject::Manager);
        }
    }

    fn on_action_done(&mut self, now: Time, id: ActionId, result: Result<ActionOutcome, HvError>) {
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

    fn vm_step_done(
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

    // ----- evaluation (timers and rules) -------------------------------------------------

    fn evaluate(&mut self, now: Time) {
        let hosts: Vec<HostId> = self.hosts.keys().cloned().collect();
        for h in &hosts {
            // A transition may enable the next one at once (dead -> first revival action).
            for _ in 0..3 {
                let before = self.hosts.get(h).map(|r| (r.state.clone(), r.action));
                self.evaluate_host(now, h);
                if self.hosts.get(h).map(|r| (r.state.clone(), r.action)) == before {
                    break;
                }
            }
        }
        self.update_storm(now);
        let vms: Vec<VmId> = self.vms.keys().cloned().collect();
        for v in &vms {
            self.evaluate_vm(now, v);
        }
        self.place_waiting(now);
        self.refresh_backups(now);
    }

    /// The backup cache: a snapshot of each healthy protected VM every `snapshot_every`, each VM at
    /// its own offset in the period, at most `max_in_flight` at once.
    fn refresh_backups(&mut self, now: Time) {
        let policy = self.cfg.backup.clone();
        if policy.snapshot_every.is_zero() || self.manager_isolated {
            return;
        }
        let mut busy = self
            .in_flight
            .values()
            .filter(|f| matches!(f.purpose, Purpose::Backup(_)))
            .count();
        let period = policy.snapshot_every.as_millis().max(1) as u64;
        let mut due: Vec<(Time, VmId)> = Vec::new();
        for (id, rec) in self.vms.iter_mut() {
            if rec.state != VmState::Healthy || rec.failing_since.is_some() {
                continue;
            }
            let Some(vm) = self.inv.vms.get(id) else { continue };
            if !vm.is_protected() || vm.power != PowerState::PoweredOn {
                continue;
            }
            let next = *rec
                .next_backup_at
                .get_or_insert_with(|| now + std::time::Duration::from_millis(spread(id, period)));
            if now >= next {
                due.push((next, id.clone()));
            }
        }
        due.sort();
        for (_, vm) in due {
            if busy >= policy.max_in_flight {
                break;
            }
            if self.in_flight.values().any(|f| f.action.vm() == Some(&vm)) {
                continue;
            }
            let name = format!("{}{}", policy.prefix, now.as_millis());
            let action = Action::CreateSnapshot { vm: vm.clone(), name };
            self.issue(
                now,
                action,
                Purpose::Backup(vm.clone()),
                1,
                "backup cache refresh".into(),
            );
            busy += 1;
            if let Some(r) = self.vms.get_mut(&vm) {
                r.next_backup_at = Some(now + policy.snapshot_every);
            }
        }
    }

    /// Removes the manager's oldest snapshots of `vm` beyond the retention count.
    fn prune_backups(&mut self, now: Time, vm: &VmId) {
        let policy = &self.cfg.backup;
        let mut ours: Vec<&am_core::Snapshot> = self
            .inv
            .snapshots
            .get(vm)
            .map(|s| s.iter().filter(|s| s.name.starts_with(&policy.prefix)).collect())
            .unwrap_or_default();
        ours.sort_by_key(|s| s.created);
        let excess = ours.len().saturating_sub(policy.keep_snapshots);
        let old: Vec<am_core::SnapshotId> = ours.iter().take(excess).map(|s| s.id.clone()).collect();
        for snapshot in old {
            let action = Action::RemoveSnapshot {
                vm: vm.clone(),
                snapshot,
            };
            self.issue(
                now,
                action,
                Purpose::Backup(vm.clone()),
                1,
                "backup cache retention".into(),
            );
        }
    }

    fn vm_host_up(&self, vm: &VmId) -> bool {
        self.inv
            .vms
            .get(vm)
            .and_then(|v| v.host.as_ref())
            .and_then(|h| self.hosts.get(h))
            .is_some_and(|r| r.state == HostState::Up)
    }

    fn any_guest_alive(&self, host: &HostId) -> bool {
        self.inv
            .vms_on(host)
            .any(|vm| self.vms.get(&vm.id).is_some_and(|r| r.guest_alive == Some(true)))
    }

    fn heartbeat_fresh(&self, host: &HostId, now: Time) -> bool {
        self.inv
            .hosts
            .get(host)
            .and_then(|h| h.storage_heartbeat)
            .is_some_and(|hb| now.since(hb) < self.cfg.storage_heartbeat_window)
    }

    fn evaluate_host(&mut self, now: Time, host: &HostId) {
        let Some(rec) = self.hosts.get(host) else { return };
        let Some(h) = self.inv.hosts.get(host) else { return };
        let conn_bad = h.connection != ConnectionState::Connected;
        let ping_bad = rec.mgmt_alive == Some(false);
        let probed = rec.mgmt_alive.is_some();
        let reachable = !conn_bad && !ping_bad;
        let hb = h.storage_heartbeat;
        let state = rec.state.clone();
        let idle = rec.action.is_none() && now >= rec.next_action_at;
        match state {
            HostState::Up => {
                if !reachable {
                    let why = match (conn_bad, ping_bad) {
                        (true, true) => "not connected and management probe lost",
                        (true, false) => "not connected in the management server",
                        _ => "management probe lost",
                    };
                    let evidence = self
                        .hosts
                        .get(host)
                        .map(|r| r.mgmt_evidence.clone())
                        .unwrap_or_default();
                    let reason = if ping_bad {
                        format!("{why}: {evidence}")
                    } else {
                        why.to_owned()
                    };
                    self.set_host_state(now, host, HostState::Suspect { since: now }, reason);
                }
            }
            HostState::Suspect { since } => {
                if reachable {
                    self.set_host_state(now, host, HostState::Up, "signals recovered");
                } else if conn_bad
                    && (ping_bad || (!probed && now.since(since) >= self.cfg.single_signal_confirm))
                {
                    if self.manager_isolated {
                        return;
                    }
                    let reason = if probed {
                        "two signals: not connected and management probe lost"
                    } else {
                        "not connected, no management probe to confirm: waited"
                    };
                    if !self.hosts.get(host).is_some_and(|r| r.down_when_first_seen) {
                        self.unreachable_log.push_back((now, host.clone()));
                    }
                    self.set_host_state(
                        now,
                        host,
                        HostState::Unreachable {
                            since,
                            heartbeat_at_loss: hb,
                        },
                        reason,
                    );
                    self.raise(
                        now,
                        AlarmKind::HostUnreachable,
                        Subject::Host(host.clone()),
                        Severity::Critical,
                        format!("host {host} unreachable"),
                    );
                } else if conn_bad
                    && !ping_bad
                    && probed
                    && idle
                    && now.since(since) >= self.cfg.reconnect_after
                {
                    // Alive on the network but not managed: the agent, not the host.
                    let id = self.issue(
                        now,
                        Action::ReconnectHost { host: host.clone() },
                        Purpose::HostReconnect(host.clone()),
                        200,
                        "answers pings but is not connected".into(),
                    );
                    if let Some(r) = self.hosts.get_mut(host) {
                        r.action = Some(id);
                    }
                }
            }
            HostState::Unreachable {
                since,
                heartbeat_at_loss,
            } => {
                if reachable {
                    self.set_host_state(now, host, HostState::Up, "signals recovered");
                    self.clear(now, AlarmKind::HostUnreachable, Subject::Host(host.clone()));
                    return;
                }
                if self.manager_isolated {
                    return;
                }
                let heartbeat_advanced = matches!((hb, heartbeat_at_loss), (Some(now_hb), Some(then)) if now_hb > then)
                    || (hb.is_some() && heartbeat_at_loss.is_none());
                // Guests still "alive" right after the loss only means their detectors have not
                // noticed yet; they count once the host has been unreachable long enough.
                let guests_judged = now.since(since) >= self.cfg.guest_evidence_after;
                let guests_alive = guests_judged && self.any_guest_alive(host);
                if heartbeat_advanced || guests_alive {
                    let why = if heartbeat_advanced {
                        "still writing its storage heartbeat"
                    } else {
                        "its guests still answer"
                    };
                    self.host_isolated(now, host, format!("unreachable but alive: {why}"));
                } else if !self.heartbeat_fresh(host, now) && guests_judged {
                    if self.storm {
                        return;
                    }
                    let why = if hb.is_some() {
                        "storage heartbeat stopped"
                    } else {
                        "no storage heartbeat signal, no guest answers"
                    };
                    self.host_dead(now, host, format!("unreachable and silent: {why}"));
                }
            }
            HostState::Isolated { .. } => {
                if reachable {
                    self.host_back(now, host, "isolation ended");
                    return;
                }
                if !self.heartbeat_fresh(host, now)
                    && !self.any_guest_alive(host)
                    && hb.is_some()
                    && !self.manager_isolated
                {
                    self.host_dead(
                        now,
                        host,
                        "isolated host stopped writing its storage heartbeat".into(),
                    );
                    return;
                }
                if idle {
                    let (action, purpose, reason) = match self.cfg.isolation_response {
                        IsolationResponse::PowerOffAndRestart => (
                            Action::FenceHost { host: host.clone() },
                            Purpose::HostFence(host.clone()),
                            "isolation response: fence, then restart its VMs elsewhere",
                        ),
                        IsolationResponse::LeaveRunning => (
                            Action::ReconnectHost { host: host.clone() },
                            Purpose::HostReconnect(host.clone()),
                            "isolation response: leave running; try to reconnect",
                        ),
                    };
                    let id = self.issue(now, action, purpose, 200, reason.into());
                    if let Some(r) = self.hosts.get_mut(host) {
                        r.action = Some(id);
                    }
                }
            }
            HostState::Dead { .. } => {
                if reachable {
                    self.host_back(now, host, "answers again after revival");
                    return;
                }
                if !idle {
                    return;
                }
                let done = self.hosts.get(host).map(|r| r.revive_actions).unwrap_or(0);
                let (action, purpose, reason) = if done >= 2 * self.cfg.revive_attempts {
                    (
                        Action::RemoveHost { host: host.clone() },
                        Purpose::HostRemove(host.clone()),
                        format!("{} revival attempts failed", self.cfg.revive_attempts),
                    )
                } else if done % 2 == 0 {
                    (
                        Action::ReconnectHost { host: host.clone() },
                        Purpose::HostReconnect(host.clone()),
                        format!("revival attempt {}: reconnect", done / 2 + 1),
                    )
                } else {
                    (
                        Action::ReviveHost { host: host.clone() },
                        Purpose::HostRevive(host.clone()),
                        format!("revival attempt {}: out-of-band revival", done / 2 + 1),
                    )
                };
                let id = self.issue(now, action, purpose, 100, reason);
                if let Some(r) = self.hosts.get_mut(host) {
                    r.action = Some(id);
                    r.revive_actions += 1;
                }
                let inc = self.hosts.get(host).and_then(|r| r.incident);
                if let Some(i) = inc.and_then(|i| self.incidents.get_mut(i)) {
                    i.steps
                        .push(match self.in_flight.get(&id).map(|f| f.action.name()) {
                            Some(n) => n.to_owned(),
                            None => "?".to_owned(),
                        });
                }
            }
            HostState::Removed => {}
        }
    }

    fn host_isolated(&mut self, now: Time, host: &HostId, reason: String) {
        self.set_host_state(now, host, HostState::Isolated { since: now }, reason.clone());
        let inc = self.open_incident(now, Subject::Host(host.clone()), "isolated");
        if let Some(r) = self.hosts.get_mut(host) {
            r.incident = Some(inc);
        }
        self.clear(now, AlarmKind::HostUnreachable, Subject::Host(host.clone()));
        self.raise(
            now,
            AlarmKind::HostIsolated,
            Subject::Host(host.clone()),
            Severity::Critical,
            format!("host {host} isolated ({reason}); its VMs may still run and are not restarted elsewhere"),
        );
        let on_host: Vec<VmId> = self.inv.vms_on(host).map(|v| v.id.clone()).collect();
        for vm in on_host {
            if matches!(
                self.vm_state(&vm),
                Some(
                    VmState::Healthy
                        | VmState::Verifying { .. }
                        | VmState::Failed
                        | VmState::OffUnexplained { .. }
                )
            ) {
                self.set_vm_state(
                    now,
                    &vm,
                    VmState::Frozen { host: host.clone() },
                    "host isolated: may still run here",
                );
            }
        }
    }

    fn host_back(&mut self, now: Time, host: &HostId, reason: &str) {
        self.set_host_state(now, host, HostState::Up, reason);
        if let Some(r) = self.hosts.get_mut(host) {
            r.revive_actions = 0;
        }
        let inc = self.hosts.get_mut(host).and_then(|r| r.incident.take());
        self.close_incident(inc, Some(now), reason);
        self.clear(now, AlarmKind::HostUnreachable, Subject::Host(host.clone()));
        self.clear(now, AlarmKind::HostIsolated, Subject::Host(host.clone()));
        let frozen: Vec<VmId> = self
            .vms
            .iter()
            .filter(|(_, r)| matches!(&r.state, VmState::Frozen { host: h } if h == host))
            .map(|(id, _)| id.clone())
            .collect();
        for vm in frozen {
            self.set_vm_state(now, &vm, VmState::Healthy, format!("host {host} reachable again"));
        }
    }

    fn host_dead(&mut self, now: Time, host: &HostId, reason: String) {
        self.set_host_state(now, host, HostState::Dead { since: now }, reason);
        let existing = self.hosts.get(host).and_then(|r| r.incident);
        let inc = match existing {
            Some(i) => i,
            None => self.open_incident(now, Subject::Host(host.clone()), "dead"),
        };
        if let Some(r) = self.hosts.get_mut(host) {
            r.incident = Some(inc);
            r.next_action_at = now;
        }
        self.clear(now, AlarmKind::HostIsolated, Subject::Host(host.clone()));
        self.raise(
            now,
            AlarmKind::HostUnreachable,
            Subject::Host(host.clone()),
            Severity::Critical,
            format!("host {host} dead; restarting its VMs on other hosts"),
        );
        self.fail_over_host(now, host);
    }

    fn update_storm(&mut self, now: Time) {
        let window = self.cfg.storm_window;
        while self
            .unreachable_log
            .front()
            .is_some_and(|(t, _)| now.since(*t) > window)
        {
            self.unreachable_log.pop_front();
        }
        let total = self
            .hosts
            .values()
            .filter(|r| r.state != HostState::Removed)
            .count();
        let unreachable = |r: &HostRec| matches!(r.state, HostState::Unreachable { .. });
        let recent: BTreeSet<&HostId> = self
            .unreachable_log
            .iter()
            .filter(|(_, h)| self.hosts.get(h).is_some_and(unreachable))
            .map(|(_, h)| h)
            .collect();
        let count = recent.len();
        if !self.storm && count >= 2 && total >= 3 && (count as f64) > self.cfg.storm_fraction * total as f64
        {
            self.storm = true;
            self.log(
                now,
                Subject::Cluster,
                LogKind::Transition {
                    from: "calm".into(),
                    to: "storm".into(),
                    reason: format!(
                        "{count} of {total} hosts unreachable within {}s",
                        window.as_secs()
                    ),
                },
            );
            self.raise(
                now,
                AlarmKind::StormSuspected,
                Subject::Cluster,
                Severity::Critical,
                format!("{count} of {total} hosts unreachable at once: suspecting the manager's network; no failover"),
            );
        } else if self.storm && !self.hosts.values().any(unreachable) {
            self.storm = false;
            self.log(
                now,
                Subject::Cluster,
                LogKind::Transition {
                    from: "storm".into(),
                    to: "calm".into(),
                    reason: "no host unreachable".into(),
                },
            );
            self.clear(now, AlarmKind::StormSuspected, Subject::Cluster);
        }
    }

    fn restart_limited(&mut self, now: Time, vm: &VmId) -> bool {
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

    fn vm_failing(&self, now: Time, vm: &Vm, rec: &VmRec) -> Option<String> {
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

    fn evaluate_vm(&mut self, now: Time, id: &VmId) {
        let (Some(vm), Some(rec)) = (self.inv.vms.get(id), self.vms.get(id)) else {
            return;
        };
        let protected = vm.is_protected();
        let on = vm.power == PowerState::PoweredOn;
        let failing = self.vm_failing(now, vm, rec);
        let state = rec.state.clone();
        let host_up = self.vm_host_up(id);
        if let Some(r) = self.vms.get_mut(id) {
            // Failing time only counts while the host is up: a VM is judged on its own, never
            // for its host's trouble.
            r.failing_since = match (&failing, r.failing_since) {
                _ if !host_up => None,
                (Some(_), None) => Some(now),
                (Some(_), since) => since,
                (None, _) => None,
            };
        }
        if !protected {
            if state != VmState::Unprotected {
                self.set_vm_state(now, id, VmState::Unprotected, "protection disabled");
            }
            return;
        }
        match state {
            VmState::Unprotected => {
                let next = if on {
                    VmState::Healthy
                } else {
                    VmState::StayOff { by: None }
                };
                self.set_vm_state(now, id, next, "protection enabled");
            }
            VmState::Healthy => {
                let since = self.vms.get(id).and_then(|r| r.failing_since);
                let judged = self.vms.get(id).is_some_and(|r| now >= r.judge_after);
                if let (Some(why), Some(since)) = (failing, since) {
                    if judged && now.since(since) >= self.cfg.vm_confirm && host_up && !self.manager_isolated
                    {
                        self.begin_ladder(now, id, why);
                    }
                }
            }
            VmState::StayOff { .. } => {
                if on {
                    self.set_vm_state(now, id, VmState::Healthy, "powered on again");
                    self.clear(now, AlarmKind::VmPoweredOff, Subject::Vm(id.clone()));
                }
            }
            VmState::OffUnexplained { since } => {
                if on {
                    self.set_vm_state(now, id, VmState::Healthy, "powered on again");
                } else if now.since(since) >= self.cfg.power_off_grace && self.vm_host_up(id) {
                    self.begin_ladder(
                        now,
                        id,
                        "powered off and no user named: treated as a crash".into(),
                    );
                }
            }
            VmState::Verifying { step, until } => {
                let positive = on && failing.is_none();
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
                    self.close_incident(inc, Some(now), format!("recovered by {}", step.name()));
                    self.clear(now, AlarmKind::RecoveryFailed, Subject::Vm(id.clone()));
                } else if now >= until {
                    if !self.vm_host_up(id) {
                        return;
                    }
                    let after = if step == Step::Failover { None } else { Some(step) };
                    let why = failing.unwrap_or_else(|| "still not answering".into());
                    self.next_step(
                        now,
                        id,
                        after,
                        format!("{} did not bring it back: {why}", step.name()),
                    );
                }
            }
            VmState::Failed => {
                if on && failing.is_none() && self.vms.get(id).is_some_and(|r| r.guest_alive != Some(false)) {
                    self.set_vm_state(now, id, VmState::Healthy, "answers again");
                    self.clear(now, AlarmKind::RecoveryFailed, Subject::Vm(id.clone()));
                }
            }
            VmState::Reconciling { until, target, .. } => {
                // Only positive, fresh evidence counts: a guest answering (or, with no guest
                // probe, a green heartbeat), on the host the old action was moving it to.
                let probed = self.inv.vms.get(id).is_some_and(|v| v.guest_address.is_some());
                let green = self
                    .inv
                    .vms
                    .get(id)
                    .is_some_and(|v| v.heartbeat == GuestHeartbeat::Green);
                let alive =
                    self.vms.get(id).is_some_and(|r| r.guest_alive == Some(true)) || (!probed && green);
                let placed =
                    target.is_none() || self.inv.vms.get(id).and_then(|v| v.host.as_ref()) == target.as_ref();
                if on && failing.is_none() && alive && placed {
                    self.set_vm_state(
                        now,
                        id,
                        VmState::Healthy,
                        "runs: the action from before the restart took effect",
                    );
                } else if now >= until {
                    self.after_reconcile(now, id);
                }
            }
            VmState::Recovering { .. } | VmState::Frozen { .. } | VmState::AwaitingCapacity => {}
        }
    }

    /// Starts one recovery step of a VM: the transition (with the action's id), then the action,
    /// and the step in the VM's incident.
    #[allow(clippy::too_many_arguments)]
    fn start_step(
        &mut self,
        now: Time,
        vm: &VmId,
        step: Step,
        action: Action,
        priority: u8,
        reason: String,
        label: String,
    ) {
        let id = ActionId(self.next_id);
        self.set_vm_state(now, vm, VmState::Recovering { step, action: id }, reason.clone());
        let issued = self.issue(now, action, Purpose::VmStep(vm.clone(), step), priority, reason);
        debug_assert_eq!(issued, id);
        let inc = self.vms.get(vm).and_then(|r| r.incident);
        if let Some(i) = inc.and_then(|i| self.incidents.get_mut(i)) {
            i.steps.push(label);
        }
    }

    /// The reconcile window of a VM ended without the old action showing its effect: judge it as
    /// it is now, by its host's state.
    fn after_reconcile(&mut self, now: Time, vm: &VmId) {
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

    fn begin_ladder(&mut self, now: Time, vm: &VmId, cause: String) {
        self.open_vm_incident(now, vm, cause.clone());
        self.next_step(now, vm, None, cause);
    }

    /// The last snapshot taken before the current incident began.
    fn good_snapshot(&self, vm: &VmId) -> Option<SnapshotId> {
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
        self.inv
            .snapshots
            .get(vm)?
            .iter()
            .filter(|s| s.created < failing_since)
            .max_by_key(|s| s.created)
            .map(|s| s.id.clone())
    }

    fn next_step(&mut self, now: Time, vm_id: &VmId, after: Option<Step>, reason: String) {
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
                    if let Some(r) = self.vms.get_mut(vm_id) {
                        r.restarts.push_back(now);
                    }
                    if vm.power == PowerState::PoweredOn {
                        Action::Reset { vm: vm_id.clone() }
                    } else {
                        Action::PowerOn { vm: vm_id.clone() }
                    }
                }
                Step::RevertSnapshot => match self.good_snapshot(vm_id) {
                    Some(snapshot) => Action::RevertSnapshot {
                        vm: vm_id.clone(),
                        snapshot: Some(snapshot),
                    },
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
                    let plan =
                        planner::place(&view, std::slice::from_ref(vm_id), &exclude, &self.cfg.placement);
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
        self.close_incident(inc, None, "failed: no step left");
        self.raise(
            now,
            AlarmKind::RecoveryFailed,
            Subject::Vm(vm_id.clone()),
            Severity::Critical,
            format!("every recovery step failed for {vm_id}"),
        );
    }

    /// Hosts no VM may go to now.
    fn unusable_hosts(&self) -> BTreeSet<HostId> {
        self.hosts
            .iter()
            .filter(|(_, r)| r.state != HostState::Up)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The inventory with moves in flight already applied, so plans do not double-book hosts.
    fn planning_view(&self) -> Cow<'_, Inventory> {
        let moves: Vec<(&VmId, &HostId)> = self
            .in_flight
            .values()
            .filter_map(|f| match &f.action {
                Action::Failover { vm, to }
                | Action::MigrateCold { vm, to }
                | Action::MigrateLive { vm, to } => Some((vm, to)),
                Action::RestoreClone { vm, host, .. } => Some((vm, host)),
                _ => None,
            })
            .collect();
        if moves.is_empty() {
            return Cow::Borrowed(&self.inv);
        }
        let mut view = self.inv.clone();
        for (vm, to) in moves {
            if let Some(v) = view.vms.get_mut(vm) {
                v.host = Some(to.clone());
                v.power = PowerState::PoweredOn;
            }
        }
        Cow::Owned(view)
    }

    /// A VM whose host is dead waits to be restarted elsewhere: an incident, fresh failover
    /// bookkeeping, the dead host remembered (its precomputed plan applies).
    fn await_failover(&mut self, now: Time, vm: &VmId, host: Option<HostId>, reason: String) {
        let from = host
            .as_ref()
            .map_or_else(|| "no host".to_owned(), HostId::to_string);
        self.open_vm_incident(now, vm, format!("host {from} dead"));
        if let Some(r) = self.vms.get_mut(vm) {
            r.failover_tries = 0;
            r.failover_excluded.clear();
            r.failed_from = host;
        }
        self.set_vm_state(now, vm, VmState::AwaitingCapacity, reason);
    }

    fn fail_over_host(&mut self, now: Time, host: &HostId) {
        let candidates: Vec<VmId> = self
            .inv
            .vms_on(host)
            .filter(|vm| vm.is_protected())
            .filter(|vm| {
                self.vms.get(&vm.id).is_some_and(|r| match &r.state {
                    VmState::StayOff { .. }
                    | VmState::Unprotected
                    | VmState::AwaitingCapacity
                    | VmState::Reconciling { .. } => false,
                    VmState::Recovering { step, .. } => *step != Step::Failover,
                    _ => true,
                })
            })
            .map(|vm| vm.id.clone())
            .collect();
        for vm in &candidates {
            self.await_failover(now, vm, Some(host.clone()), format!("host {host} dead"));
        }
        self.capacity_retry_at = now;
        self.place_waiting(now);
        self.rehome_stay_off(now, host);
    }

    /// Placements taken from the precomputed plan of the host each waiting VM is restarted away
    /// from: only when that plan is fresh, covers the VM, sends VMs only to hosts that are up, and
    /// no move is in flight (the plan assumed the cluster as it was). Everything else is placed
    /// afresh by the caller.
    fn precomputed_placements(
        &self,
        waiting: &[VmId],
    ) -> (BTreeMap<VmId, HostId>, BTreeMap<VmId, planner::Unplaced>) {
        let mut placed = BTreeMap::new();
        let mut unplaced = BTreeMap::new();
        let Some(plans) = self.plans.as_ref() else {
            return (placed, unplaced);
        };
        let moving = self.in_flight.values().any(|f| {
            matches!(
                f.action,
                Action::Failover { .. }
                    | Action::MigrateCold { .. }
                    | Action::MigrateLive { .. }
                    | Action::RestoreClone { .. }
            )
        });
        if moving {
            return (placed, unplaced);
        }
        let mut by_host: BTreeMap<&HostId, Vec<&VmId>> = BTreeMap::new();
        for vm in waiting {
            if let Some(r) = self.vms.get(vm) {
                if let (Some(h), true) = (&r.failed_from, r.failover_excluded.is_empty()) {
                    by_host.entry(h).or_default().push(vm);
                }
            }
        }
        for (host, vms) in by_host {
            let planner::Lookup::Fresh(plan) = plans.lookup(host) else {
                continue;
            };
            let covered = vms
                .iter()
                .all(|v| plan.placements.contains_key(*v) || plan.unplaced.contains_key(*v));
            let targets_up = vms
                .iter()
                .filter_map(|v| plan.placements.get(*v))
                .all(|h| self.hosts.get(h).is_some_and(|r| r.state == HostState::Up));
            if !(covered && targets_up) {
                continue;
            }
            for vm in vms {
                match (plan.placements.get(vm), plan.unplaced.get(vm)) {
                    (Some(to), _) => {
                        placed.insert(vm.clone(), to.clone());
                    }
                    (None, Some(why)) => {
                        unplaced.insert(vm.clone(), *why);
                    }
                    (None, None) => {}
                }
            }
        }
        (placed, unplaced)
    }

    /// VMs switched off on purpose stay off, but not on a dead host that will be removed (and
    /// take them out of the inventory with it): they are registered, still off, on a live host.
    fn rehome_stay_off(&mut self, now: Time, host: &HostId) {
        let off: Vec<VmId> = self
            .inv
            .vms_on(host)
            .filter(|vm| vm.is_protected())
            .filter(|vm| matches!(self.vm_state(&vm.id), Some(VmState::StayOff { .. })))
            .map(|vm| vm.id.clone())
            .collect();
        if off.is_empty() {
            return;
        }
        let unusable = self.unusable_hosts();
        let Some(target) = self
            .inv
            .hosts
            .values()
            .filter(|h| !unusable.contains(&h.id) && h.accepts_vms())
            .max_by_key(|h| (self.inv.free(&h.id).mem_mib, std::cmp::Reverse(h.id.clone())))
            .map(|h| h.id.clone())
        else {
            return;
        };
        for vm in off {
            let action = Action::Register {
                vm: vm.clone(),
                host: target.clone(),
            };
            self.issue(
                now,
                action,
                Purpose::Rehome(vm),
                10,
                format!("host {host} dead: keep it off, registered on {target}"),
            );
        }
    }

    /// Admission control from the precomputed plans: an alarm while the failure of some host would
    /// leave a protected VM with no place.
    fn check_admission(&mut self, now: Time) {
        self.admission_check_at = now + std::time::Duration::from_secs(30);
        let Some(plans) = self.plans.as_ref().filter(|p| p.is_fresh()) else {
            return;
        };
        let admission = plans.admission();
        let at_risk: Vec<String> = admission
            .hosts_at_risk
            .iter()
            .filter(|h| self.hosts.get(*h).is_some_and(|r| r.state == HostState::Up))
            .map(|h| h.to_string())
            .collect();
        if at_risk.is_empty() {
            self.clear(now, AlarmKind::FailoverAtRisk, Subject::Cluster);
        } else {
            self.raise(
                now,
                AlarmKind::FailoverAtRisk,
                Subject::Cluster,
                Severity::Warning,
                format!(
                    "the failure of {} would leave protected VMs with no place (host failures tolerated: {})",
                    at_risk.join(", "),
                    admission.host_failures_tolerated
                ),
            );
        }
    }

    /// Places VMs that wait for a host, highest priority first; adds a spare when some fit nowhere.
    fn place_waiting(&mut self, now: Time) {
        if now < self.capacity_retry_at || self.manager_isolated {
            return;
        }
        let waiting: Vec<VmId> = self
            .vms
            .iter()
            .filter(|(_, r)| r.state == VmState::AwaitingCapacity)
            .map(|(id, _)| id.clone())
            .collect();
        if waiting.is_empty() {
            self.clear(now, AlarmKind::CapacityInsufficient, Subject::Cluster);
            return;
        }
        self.capacity_retry_at = now + std::time::Duration::from_secs(5);
        let unusable = self.unusable_hosts();
        let (by_plan, plan_unplaced) = self.precomputed_placements(&waiting);
        let plan = {
            let mut view = self.planning_view();
            if !by_plan.is_empty() {
                let v = view.to_mut();
                for (vm, to) in &by_plan {
                    if let Some(vm) = v.vms.get_mut(vm) {
                        vm.host = Some(to.clone());
                        vm.power = PowerState::PoweredOn;
                    }
                }
            }
            // VMs whose earlier failover failed on a host try the others first, one at a time.
            let (fresh, retried): (Vec<VmId>, Vec<VmId>) = waiting
                .iter()
                .filter(|v| !by_plan.contains_key(*v) && !plan_unplaced.contains_key(*v))
                .cloned()
                .partition(|v| self.vms.get(v).is_none_or(|r| r.failover_excluded.is_empty()));
            let mut plan = planner::place(&view, &fresh, &unusable, &self.cfg.placement);
            plan.unplaced.extend(plan_unplaced);
            for vm in retried {
                let mut exclude = unusable.clone();
                exclude.extend(
                    self.vms
                        .get(&vm)
                        .map(|r| r.failover_excluded.clone())
                        .unwrap_or_default(),
                );
                let single = planner::place(&view, std::slice::from_ref(&vm), &exclude, &self.cfg.placement);
                plan.placements.extend(single.placements);
                plan.unplaced.extend(single.unplaced);
            }
            plan
        };
        let mut plan = plan;
        plan.placements
            .extend(by_plan.iter().map(|(vm, to)| (vm.clone(), to.clone())));
        // Running beats anti-affinity when nothing else can help: with no spare left to add,
        // VMs kept out only by their anti-affinity group run beside a member, with a reason.
        let mut relaxed: BTreeSet<VmId> = BTreeSet::new();
        if self.spares.is_empty() && !self.adding_spare {
            let blocked: Vec<VmId> = plan
                .unplaced
                .iter()
                .filter(|(_, why)| **why == planner::Unplaced::AntiAffinity)
                .map(|(vm, _)| vm.clone())
                .collect();
            if !blocked.is_empty() {
                let mut view = self.planning_view().into_owned();
                for (vm, to) in &plan.placements {
                    if let Some(v) = view.vms.get_mut(vm) {
                        v.host = Some(to.clone());
                        v.power = PowerState::PoweredOn;
                    }
                }
                for vm in &blocked {
                    if let Some(v) = view.vms.get_mut(vm) {
                        v.anti_affinity_group = None;
                    }
                }
                let second = planner::place(&view, &blocked, &unusable, &self.cfg.placement);
                for (vm, to) in second.placements {
                    plan.unplaced.remove(&vm);
                    relaxed.insert(vm.clone());
                    plan.placements.insert(vm, to);
                }
            }
        }
        let mut order: Vec<(u8, VmId, HostId)> = plan
            .placements
            .iter()
            .map(|(vm, to)| {
                (
                    self.inv.vms.get(vm).map(priority_of).unwrap_or(0),
                    vm.clone(),
                    to.clone(),
                )
            })
            .collect();
        order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for (priority, vm, to) in order {
            let action = Action::Failover {
                vm: vm.clone(),
                to: to.clone(),
            };
            let reason = if relaxed.contains(&vm) {
                format!("restart on {to}: anti-affinity relaxed, no other host and no spare left")
            } else if by_plan.contains_key(&vm) {
                format!("restart on {to} by precomputed plan")
            } else {
                format!("restart on {to} by fresh plan")
            };
            self.start_step(
                now,
                &vm,
                Step::Failover,
                action,
                priority,
                reason,
                format!("failover to {to}"),
            );
        }
        let unplaced = plan.unplaced.len();
        if unplaced == 0 {
            self.clear(now, AlarmKind::CapacityInsufficient, Subject::Cluster);
            return;
        }
        self.raise(
            now,
            AlarmKind::CapacityInsufficient,
            Subject::Cluster,
            Severity::Critical,
            format!("{unplaced} protected VM(s) fit on no live host"),
        );
        // A spare held back after a restart: in the inventory means it was added; after the
        // window it was not, and it returns to the pool.
        let inv = &self.inv;
        let mut back = Vec::new();
        self.pending_spares.retain(|(spare, until)| {
            let added = inv
                .hosts
                .values()
                .any(|h| h.id.as_str() == spare || h.name == *spare);
            if !added && now >= *until {
                back.push(spare.clone());
            }
            !added && now < *until
        });
        self.spares.extend(back);
        if !self.adding_spare {
            if let Some(spare) = self.spares.pop_front() {
                self.adding_spare = true;
                self.issue(
                    now,
                    Action::AddHost { spare: spare.clone() },
                    Purpose::AddSpare(spare),
                    255,
                    format!("{unplaced} protected VM(s) fit on no live host"),
                );
            }
        }
    }
}

/// A VM's offset in the backup period (FNV-1a of its id), so snapshots spread over the period.
fn spread(vm: &VmId, period_ms: u64) -> u64 {
    let hash = vm.as_str().bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    hash % period_ms
}

/// The executor priority of a VM's actions: its restart priority.
fn priority_of(vm: &Vm) -> u8 {
    vm.priority as u8 * 40
}

#[cfg(test)]
mod tests;
