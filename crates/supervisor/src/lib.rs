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

mod admission;
mod backup;
mod by_host;
mod config;
mod evacuate;
mod failover;
mod guards;
mod host;
mod ladder;
mod observe;
mod operator;
mod outcome;
mod record;
mod relax;
mod state;
mod storage;
mod vm;

pub use config::{
    BackupPolicy, Capabilities, Config, IsolationResponse, PredictedFailure, Readiness, Removal,
    RestartOrder, SingleSignal,
};
pub use evacuate::EvacuationProgress;
pub use state::{HostState, ManagerNet, SourceState, Step, StormGuard, VmClass, VmState};

use am_core::{
    Action, ActionId, ActionOutcome, Alarm, AlarmChange, AlarmKind, ClusterEvent, Command, ConnectionState,
    EventKind, GuestHeartbeat, HostId, HvError, Inventory, InventoryDelta, LogEntry, LogKind, Observation,
    OperatorRequest, Output, PowerState, Severity, Subject, Time, Vm, VmId,
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
    /// How it ended, in words.
    pub outcome: Option<String>,
    /// How it ended, as a kind (what reports and figures count by).
    #[serde(default)]
    pub ending: Option<Ending>,
}

/// The kinds of end of an [`Incident`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    /// The VM answers again after a step (or a failover).
    Recovered,
    /// A user switched the VM off: it is left off.
    LeftOff,
    /// A newer incident of the same subject took over.
    Superseded,
    /// The ladder ran out of steps.
    Failed,
    /// The host is reachable again (its VMs stay where they run).
    HostBack,
    /// Found still running where it was (an isolated host, locked files): not moved.
    StillRuns,
    /// Removed (a host after failed revival), or gone from the inventory.
    Removed,
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
    /// Set while an operator has disarmed automatic recovery, with the reason.
    #[serde(default)]
    pub disarmed: Option<String>,
    /// Evacuations under way.
    #[serde(default)]
    pub evacuations: Vec<EvacuationProgress>,
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
    /// Since it last became unreachable, something showed it alive (a probe answer, a guest, its
    /// storage heartbeat, a VM's locked files): it is never removed while so.
    life_seen: bool,
    /// VMs whose files a failover found locked by it: they still run there.
    locked_vms: BTreeSet<VmId>,
    /// An out-of-band fence of it was confirmed since it died.
    fenced: bool,
    /// Its removal was refused once: not tried again on its own.
    removal_failed: bool,
    /// Removal was settled (done, not allowed, or refused): nothing more is tried.
    removal_settled: bool,
    /// Why its removal waits, as last noted (noted again only when it changes).
    removal_note: Option<String>,
    /// Declared dead on one signal, and no failover from it went through yet: its VMs are
    /// failed over one at a time, so that a VM found locked stops the rest before they start.
    unconfirmed: bool,
    /// While `unconfirmed`: the VM to fail over first (one whose lock was found gone).
    canary: Option<VmId>,
    /// Its power as read out of band (`None`: unknown), and what said so.
    power: Option<am_core::PowerReading>,
    power_evidence: String,
    /// An out-of-band controller reads its power at all (a second signal).
    power_read: bool,
    /// Fenced before any of its VMs restarts elsewhere, whatever the isolation response (its
    /// death rests on one signal and a fence is at hand).
    fence_first: bool,
    /// When an isolated host's VM locks are looked at next.
    lock_check_at: Time,
}

impl HostRec {
    fn new(now: Time, down_when_first_seen: bool) -> HostRec {
        HostRec {
            state: HostState::Removed,
            mgmt_alive: None,
            mgmt_evidence: String::new(),
            action: None,
            revive_actions: 0,
            next_action_at: now,
            incident: None,
            down_when_first_seen,
            life_seen: false,
            locked_vms: BTreeSet::new(),
            fenced: false,
            removal_failed: false,
            removal_settled: false,
            removal_note: None,
            unconfirmed: false,
            canary: None,
            lock_check_at: now,
            power: None,
            power_evidence: String::new(),
            power_read: false,
            fence_first: false,
        }
    }

    /// Forgets what belonged to its last trouble (it is up again).
    fn recovered(&mut self) {
        self.revive_actions = 0;
        self.life_seen = false;
        self.locked_vms.clear();
        self.fenced = false;
        self.removal_failed = false;
        self.removal_settled = false;
        self.removal_note = None;
        self.unconfirmed = false;
        self.canary = None;
        self.fence_first = false;
    }
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
    /// When the backup cache takes its next clone.
    next_clone_at: Option<Time>,
    /// When its current failover began (restart orchestration waits for it to be ready).
    failover_started: Option<Time>,
    /// Its last restart failed without proof that it had no effect (it timed out): if the VM
    /// still does not answer after `recovery_grace`, it is restarted again (within the restart
    /// limit) before a heavier, destructive step.
    unproven: bool,
    /// In this incident, the snapshot it was last reverted to, by when it was taken: a revert
    /// that did not help is followed by one to the next older snapshot (the newest may have
    /// been taken after the fault, before it was detected).
    reverted_to: Option<Time>,
}

#[derive(Clone, Debug)]
enum Purpose {
    VmStep(VmId, Step),
    HostReconnect(HostId),
    HostRevive(HostId),
    HostFence(HostId),
    HostRemove(HostId),
    /// A look at the locks of one of an isolated host's VMs (is the host still alive?).
    HostLockCheck(HostId, VmId),
    AddSpare(String),
    /// Re-register a VM that stays off away from a dead host.
    Rehome(VmId),
    /// A backup-cache action (snapshot taken or removed).
    Backup(VmId),
    /// A datastore mounted on a spare the manager added, for the VMs that wait for it.
    Mount(HostId),
    /// A live migration of the evacuation of a host (the source).
    Evacuate(HostId, VmId),
    /// Maintenance mode entered (`true`) or left.
    Maintenance(HostId, bool),
    /// A relocation of a VM's files off a datastore in storage maintenance (the source).
    StorageMove(am_core::DatastoreId, VmId),
}

impl Purpose {
    /// What the action is about, for the audit log.
    fn subject(&self) -> Subject {
        match self {
            Purpose::VmStep(vm, _)
            | Purpose::Rehome(vm)
            | Purpose::Backup(vm)
            | Purpose::Evacuate(_, vm)
            | Purpose::StorageMove(_, vm) => Subject::Vm(vm.clone()),
            Purpose::AddSpare(_) => Subject::Cluster,
            Purpose::HostReconnect(h)
            | Purpose::HostRevive(h)
            | Purpose::HostFence(h)
            | Purpose::HostRemove(h)
            | Purpose::HostLockCheck(h, _)
            | Purpose::Mount(h)
            | Purpose::Maintenance(h, _) => Subject::Host(h.clone()),
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
    /// `inv`'s VMs by host and each host's use, kept with it (`apply_delta`,
    /// `replace_inventory`): nothing else may change a VM's host, power or demand in `inv`
    /// (`check_by_host` says if something does).
    by_host: by_host::ByHost,
    hosts: BTreeMap<HostId, HostRec>,
    vms: BTreeMap<VmId, VmRec>,
    in_flight: BTreeMap<ActionId, InFlight>,
    next_id: u64,
    alarms: BTreeMap<(AlarmKind, Subject), Alarm>,
    manager_net: ManagerNet,
    storm: StormGuard,
    source: SourceState,
    unreachable_log: VecDeque<(Time, HostId)>,
    /// Power-off events that arrived before the inventory showed the VM off: who did it.
    early_power_offs: BTreeMap<VmId, Option<String>>,
    spares: VecDeque<String>,
    adding_spare: bool,
    /// Spare hosts the manager added: it mounts on them the datastores waiting VMs need.
    added_spares: BTreeSet<HostId>,
    /// Datastore mounts that failed (not tried again on their own).
    failed_mounts: BTreeSet<(HostId, am_core::DatastoreId)>,
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
    /// When the backup tasks of the last minute started (the `tasks_per_minute` budget).
    backup_tasks: VecDeque<Time>,
    /// VMs whose snapshots or clones may exceed the retention counts.
    prune_due: BTreeSet<VmId>,
    /// When the backup cache last said it is behind.
    backup_lag_noted: Option<Time>,
    /// Admission control as last computed from fresh plans.
    admission: Option<planner::Admission>,
    /// Until when vCenter is taken for down after a call failed because it could not be reached
    /// (before the inventory source says so, or while only calls fail).
    vcenter_retry_at: Time,
    /// When the last storm ended: a host still unreachable then has its silence counted from
    /// there (its guests' verdicts are judged afresh), as for a failure that happened then.
    storm_ended: Time,
    /// VMs whose re-registration away from a dead host was refused (not tried again on their own).
    rehome_failed: BTreeSet<VmId>,
    /// Evacuations under way, by host.
    evacuations: BTreeMap<HostId, evacuate::Evac>,
    /// The VMs each host's last finished evacuation moved, and where to (what `maintenance exit
    /// --return-vms` brings back).
    evacuated_from: BTreeMap<HostId, Vec<(VmId, HostId)>>,
    /// Hosts leaving maintenance whose VMs come back once they are out.
    returning: BTreeSet<HostId>,
    /// Set while an operator has disarmed automatic recovery, with the reason.
    disarmed: Option<String>,
    /// Hosts vCenter shows with a health alarm (followed as predicted failures).
    vcenter_degraded: BTreeSet<HostId>,
    /// The VMs not at rest (see `vm_at_rest`): the only ones a step evaluates. Kept current
    /// from `touched`: a VM's rest can change only when its record or its inventory entry does.
    restless: BTreeSet<VmId>,
    /// VMs whose record or inventory entry changed since `restless` was last settled.
    touched: Vec<VmId>,
    /// The whole inventory was replaced: every VM is settled again.
    touched_all: bool,
    /// Storage evacuations under way, by datastore: each is in storage maintenance meanwhile.
    storage: BTreeMap<am_core::DatastoreId, storage::StorageEvac>,
}

/// How long vCenter is taken for down after a call could not reach it.
const VCENTER_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

impl Supervisor {
    /// A supervisor with no inventory yet; feed it an [`Observation::Inventory`] first.
    pub fn new(cfg: Config) -> Self {
        Supervisor {
            spares: cfg.spares.iter().cloned().collect(),
            cfg,
            inv: Inventory::default(),
            by_host: by_host::ByHost::default(),
            hosts: BTreeMap::new(),
            vms: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            next_id: 1,
            alarms: BTreeMap::new(),
            manager_net: ManagerNet::Connected,
            storm: StormGuard::Calm,
            source: SourceState::Connected,
            unreachable_log: VecDeque::new(),
            early_power_offs: BTreeMap::new(),
            adding_spare: false,
            added_spares: BTreeSet::new(),
            failed_mounts: BTreeSet::new(),
            capacity_retry_at: Time::ZERO,
            incidents: Vec::new(),
            out: Output::default(),
            plans: None,
            restored: Restore::default(),
            pending_spares: Vec::new(),
            admission_check_at: Time::ZERO,
            backup_tasks: VecDeque::new(),
            prune_due: BTreeSet::new(),
            backup_lag_noted: None,
            admission: None,
            vcenter_retry_at: Time::ZERO,
            storm_ended: Time::ZERO,
            rehome_failed: BTreeSet::new(),
            evacuations: BTreeMap::new(),
            evacuated_from: BTreeMap::new(),
            returning: BTreeSet::new(),
            disarmed: None,
            vcenter_degraded: BTreeSet::new(),
            restless: BTreeSet::new(),
            touched: Vec::new(),
            touched_all: false,
            storage: BTreeMap::new(),
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
            Observation::HostPower {
                host,
                power,
                evidence,
            } => self.on_host_power(&host, power, evidence),
            Observation::ManagerIsolation { isolated, evidence } => {
                self.on_manager_isolation(now, isolated, evidence)
            }
            Observation::SourceHealth { connected, detail } => self.on_source_health(now, connected, detail),
            Observation::Operator(req) => self.on_operator(now, req),
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
            if alarm.kind == AlarmKind::Disarmed {
                // The switch is its alarm: disarmed before the restart, disarmed after.
                self.disarmed = Some(alarm.message.clone());
            }
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

    /// The hosts with a state: the inventory's and those the supervisor still remembers.
    pub fn host_ids(&self) -> impl Iterator<Item = &HostId> {
        self.hosts.keys()
    }

    /// A host's state.
    pub fn host_state(&self, host: &HostId) -> Option<&HostState> {
        self.hosts.get(host).map(|r| &r.state)
    }

    /// Admission control (host failures tolerated, slots, hosts at risk) as the supervisor last
    /// computed it from its precomputed plans, with its placement policy; `None` before the first
    /// plans. What `FailoverAtRisk` is raised from: status and alarm never disagree.
    pub fn admission(&self) -> Option<&planner::Admission> {
        self.admission.as_ref()
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

    /// Whether the inventory source answers (else the inventory is stale).
    pub fn source_connected(&self) -> bool {
        self.source == SourceState::Connected
    }

    /// Whether the manager considers itself isolated (and so acts on nothing).
    pub fn manager_isolated(&self) -> bool {
        self.manager_net == ManagerNet::Isolated
    }

    /// Whether vCenter is known not to answer now (the manager isolated, the inventory source
    /// lost, or a call that could not reach it moments ago): no action is issued, since it could
    /// not get to its object, and none that failed so is counted against its object.
    pub(crate) fn vcenter_down(&self, now: Time) -> bool {
        self.manager_isolated() || self.source == SourceState::Lost || now < self.vcenter_retry_at
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
            ..self.status_summary()
        }
    }

    /// [`Supervisor::status`] without the host and VM states (read them one by one with
    /// [`Supervisor::host_state`] and [`Supervisor::vm_state`]): what a status view needs besides
    /// its rows, with no copy of every state (at 10,000 VMs some 1 MB at every refresh).
    pub fn status_summary(&self) -> Status {
        Status {
            hosts: BTreeMap::new(),
            vms: BTreeMap::new(),
            in_flight: self
                .in_flight
                .iter()
                .map(|(id, f)| (*id, f.action.clone()))
                .collect(),
            alarms: self.alarms.values().cloned().collect(),
            manager_isolated: self.manager_isolated(),
            storm: self.storm == StormGuard::Storm,
            disarmed: self.disarmed.clone(),
            evacuations: self.evacuations(),
        }
    }

    /// The rules and timers, after every observation: hosts first (a host verdict decides what
    /// its VMs may do), the guards, then every VM, placement of waiting VMs, the backup cache.
    fn evaluate(&mut self, now: Time) {
        let hosts: Vec<HostId> = self.hosts.keys().cloned().collect();
        for h in &hosts {
            // A transition may enable the next one at once (dead -> first revival action).
            self.follow_maintenance(now, h);
            self.follow_health(now, h);
            for _ in 0..3 {
                let before = self.hosts.get(h).map(|r| (r.state.clone(), r.action));
                self.evaluate_host(now, h);
                if self.hosts.get(h).map(|r| (r.state.clone(), r.action)) == before {
                    break;
                }
            }
        }
        self.update_storm(now);
        let vms = self.vms_to_evaluate();
        for v in &vms {
            self.evaluate_vm(now, v);
        }
        // Their handlers may have set or dropped a failing time.
        self.touched.extend(vms);
        self.place_waiting(now);
        self.refresh_backups(now);
        self.settle();
    }
}

impl Supervisor {
    /// The VMs whose handler may do something now. A VM at rest is left out: protected and
    /// healthy, powered on, nothing failing and no failing time kept (its handler reads no clock
    /// then), or unprotected and recorded so, or kept off and still off. Every other VM is
    /// evaluated. The set is kept as VMs change (`touch`), so a step costs what changed, not a
    /// walk of 10,000 VMs.
    fn vms_to_evaluate(&mut self) -> Vec<VmId> {
        self.settle();
        self.restless.iter().cloned().collect()
    }

    /// A VM's record or inventory entry changed: its rest is judged again at the next settle.
    pub(crate) fn touch(&mut self, vm: &VmId) {
        if !self.touched_all {
            self.touched.push(vm.clone());
        }
    }

    /// The whole inventory changed.
    pub(crate) fn touch_all(&mut self) {
        self.touched_all = true;
        self.touched.clear();
    }

    /// Brings `restless` up to date with what was touched.
    fn settle(&mut self) {
        if std::mem::take(&mut self.touched_all) {
            self.restless = with_inventory(self.vms.iter(), &self.inv.vms)
                .filter(|(_, rec, vm)| !vm.is_some_and(|vm| vm_at_rest(vm, rec)))
                .map(|(id, ..)| id.clone())
                .collect();
            self.touched.clear();
            return;
        }
        for id in std::mem::take(&mut self.touched) {
            match (self.vms.get(&id), self.inv.vms.get(&id)) {
                (Some(rec), Some(vm)) if vm_at_rest(vm, rec) => {
                    self.restless.remove(&id);
                }
                (Some(_), _) => {
                    self.restless.insert(id);
                }
                (None, _) => {
                    self.restless.remove(&id);
                }
            }
        }
    }

    /// Checks the VMs by host and each host's use, as kept, against the inventory (for the
    /// property tests): the first host they have wrong, if any.
    #[doc(hidden)]
    pub fn check_by_host(&self) -> Result<(), String> {
        self.by_host.check(&self.inv)
    }

    /// Checks the kept set against a full recomputation (for the property tests): the VMs it
    /// has wrong, if any.
    #[doc(hidden)]
    pub fn check_restless(&self) -> Result<(), String> {
        let full: BTreeSet<&VmId> = with_inventory(self.vms.iter(), &self.inv.vms)
            .filter(|(_, rec, vm)| !vm.is_some_and(|vm| vm_at_rest(vm, rec)))
            .map(|(id, ..)| id)
            .collect();
        let kept: BTreeSet<&VmId> = self.restless.iter().collect();
        if full == kept {
            Ok(())
        } else {
            let missing: Vec<_> = full.difference(&kept).collect();
            let extra: Vec<_> = kept.difference(&full).collect();
            Err(format!("restless VMs missing {missing:?}, extra {extra:?}"))
        }
    }
}

/// Each VM record with its VM in the inventory (if there), by one walk of both maps, which are
/// ordered by id: no lookup per VM (at 10,000 VMs the lookups were what a step cost).
pub(crate) fn with_inventory<'a, R>(
    recs: impl Iterator<Item = (&'a VmId, R)>,
    inv: &'a BTreeMap<VmId, am_core::Vm>,
) -> impl Iterator<Item = (&'a VmId, R, Option<&'a am_core::Vm>)> {
    let mut inv = inv.iter().peekable();
    recs.map(move |(id, rec)| {
        while inv.next_if(|(k, _)| *k < id).is_some() {}
        let vm = inv.peek().filter(|(k, _)| *k == id).map(|(_, vm)| *vm);
        (id, rec, vm)
    })
}

/// Whether a VM's handler would change nothing whatever the time (see `vms_to_evaluate`): no
/// failing time kept and nothing that could start one (a zero-CPU spell is a clock running), and
/// a state whose handler then does nothing.
fn vm_at_rest(vm: &am_core::Vm, rec: &VmRec) -> bool {
    let on = vm.power == am_core::PowerState::PoweredOn;
    let quiet = rec.failing_since.is_none()
        && (!on
            || (rec.guest_alive != Some(false)
                && vm.heartbeat != am_core::GuestHeartbeat::Red
                && rec.cpu_zero_since.is_none()));
    if !quiet {
        return false;
    }
    if !vm.is_protected() {
        return rec.state == VmState::Unprotected;
    }
    match rec.state {
        VmState::Healthy => on,
        VmState::StayOff { .. } => !on,
        _ => false,
    }
}

#[cfg(test)]
mod tests;
