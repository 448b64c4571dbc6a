//! [`Snapshot`]: the daemon's state as one serializable value, for the status page, the metrics and
//! `am-daemon stats`.
//!
//! Times are [`Time`]s (milliseconds since the daemon started, virtual in the simulator);
//! durations are seconds as `f64`, in fields ending in `_s`.

use am_core::{
    ActionId, Alarm, AlarmKind, ConnectionState, HostId, LogEntry, LogKind, PowerState, Resources,
    RestartPriority, Severity, Subject, Time, VmId,
};
use executor::ExecutorStatus;
use planner::Admission;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;
use supervisor::{Ending, HostState, Incident, Supervisor, VmState};

/// The daemon's state at one moment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// When it was captured (the time of the supervisor step it follows).
    pub at: Time,
    /// When it was served: `at` plus the time since. Uptimes count to here.
    pub now: Time,
    /// One row per host, by id.
    pub hosts: Vec<HostRow>,
    /// One row per VM, by id.
    pub vms: Vec<VmRow>,
    /// Cluster-wide figures.
    pub cluster: ClusterStats,
    /// Active alarms, most severe first.
    pub alarms: Vec<AlarmView>,
    /// Actions the supervisor issued and has no outcome for yet, oldest first.
    pub in_flight: Vec<InFlightAction>,
    /// The executor's queue and counters, when the daemon passed them.
    pub executor: Option<ExecutorView>,
    /// The latest audit lines (decisions), oldest first.
    pub recent: Vec<LogEntry>,
    /// How VM demand and host capacity are counted (`run`: the `[capacity]` model), when known.
    #[serde(default)]
    pub capacity_model: Option<String>,
    /// Manager HA: who leads this daemon's unit (`None` without `[etcd]`).
    #[serde(default)]
    pub ha: Option<crate::HaView>,
}

/// One host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostRow {
    /// Id.
    pub id: HostId,
    /// Display name.
    pub name: String,
    /// The supervisor's state ([`HostState::name`]: `up`, `suspect`, `unreachable`, `isolated`,
    /// `dead`, `removed`), or `unknown`.
    pub state: String,
    /// When it entered that state, when known.
    pub since: Option<Time>,
    /// The management server's connection state (`None` once it left the inventory).
    pub connection: Option<ConnectionState>,
    /// In maintenance mode.
    pub maintenance: bool,
    /// VMs registered on it.
    pub vms: usize,
    /// Of those, powered on.
    pub vms_running: usize,
    /// What its powered-on VMs use.
    pub used: Resources,
    /// What VMs may use on it.
    pub capacity: Resources,
    /// Failure domain (rack, chassis, power feed), if known.
    pub failure_domain: Option<String>,
    /// Its latest incident.
    pub last_incident: Option<Incident>,
}

pub use supervisor::VmClass;

/// Every host state name, in display order (the label values of the host metrics).
pub const HOST_STATES: [&str; 9] = supervisor::HostState::NAMES;

/// One VM.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VmRow {
    /// Id.
    pub id: VmId,
    /// Display name.
    pub name: String,
    /// The supervisor's state with its detail ([`VmState::name`], e.g. `recovering(restart)`).
    pub state: Cow<'static, str>,
    /// The kind of state.
    pub class: VmClass,
    /// When it entered that state, when known.
    pub since: Option<Time>,
    /// The host it is registered on.
    pub host: Option<HostId>,
    /// Power state.
    pub power: PowerState,
    /// Restart priority.
    pub priority: RestartPriority,
    /// Whether the manager keeps it running.
    pub protected: bool,
    /// Since when it has been healthy without interruption as far as the manager saw (it may have
    /// run longer: the manager counts from when it first saw it). `None` unless healthy.
    pub up_since: Option<Time>,
    /// `now - up_since`, in seconds.
    pub uptime_s: Option<f64>,
    /// What it needs to run (for planning from a running daemon's status).
    #[serde(default)]
    pub demand: Resources,
    /// Its anti-affinity group, if any.
    #[serde(default)]
    pub anti_affinity_group: Option<String>,
    /// Set on the manager's backup clones: the VM it copies.
    #[serde(default)]
    pub backup_of: Option<VmId>,
    /// Recovery actions taken on it over all its incidents (restarts, reverts, restores,
    /// migrations, failovers).
    pub restarts: u32,
    /// Its incidents so far.
    pub incidents: u32,
    /// Its latest incident.
    pub last_incident: Option<Box<Incident>>,
}

/// Cluster-wide figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterStats {
    /// Hosts known (removed ones included).
    pub hosts: usize,
    /// Hosts up.
    pub hosts_up: usize,
    /// Hosts per state name (every name of [`HOST_STATES`] present, zeros included).
    pub hosts_by_state: BTreeMap<String, usize>,
    /// VMs in the inventory.
    pub vms: usize,
    /// VMs powered on.
    pub vms_running: usize,
    /// VMs per [`VmClass`] name (every class present, zeros included).
    pub vms_by_state: BTreeMap<String, usize>,
    /// VMs the manager keeps running.
    pub protected_vms: usize,
    /// Protected VMs that are healthy.
    pub healthy: usize,
    /// VMs being recovered: a step runs or is being verified, an unexplained power-off is being
    /// judged, or an action from before a restart is being reconciled.
    pub recovering: usize,
    /// VMs waiting for a host with room.
    pub awaiting_capacity: usize,
    /// VMs whose ladder ran out of steps.
    pub failed: usize,
    /// VMs left alone on isolated hosts.
    pub frozen: usize,
    /// Capacity of the hosts that accept VMs.
    pub capacity: Resources,
    /// What the powered-on VMs use, over all hosts.
    pub used: Resources,
    /// Host failures the cluster tolerates (from [`Self::admission`]); `None` when it could not be
    /// computed.
    pub host_failures_tolerated: Option<u32>,
    /// The planner's admission control (vSphere HA's "host failures cluster tolerates", slots,
    /// free shares, hosts at risk).
    pub admission: Option<Admission>,
    /// Incidents so far (hosts and VMs).
    pub incidents: usize,
    /// Incidents not ended yet.
    pub open_incidents: usize,
    /// VM incidents that ended with the VM answering again.
    pub recoveries: usize,
    /// Mean time to recovery over those: from the supervisor's decision to act to the VM
    /// answering again, in seconds. `None` before the first recovery.
    pub mttr_s: Option<f64>,
    /// Estimated availability of the protected VMs since the daemon started: 1 - (VM downtime /
    /// (protected VMs x time)). See [`Snapshot::capture`] for what counts as downtime.
    pub availability: Option<f64>,
    /// Whether the manager considers itself isolated (it acts on nothing).
    pub manager_isolated: bool,
    /// Whether the storm guard holds failover back.
    pub storm: bool,
    /// Set while an operator has disarmed automatic recovery, with the reason.
    #[serde(default)]
    pub disarmed: Option<String>,
    /// Evacuations under way, with their progress.
    #[serde(default)]
    pub evacuations: Vec<supervisor::EvacuationProgress>,
}

/// An active alarm, with its acknowledgement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmView {
    /// Kind.
    pub kind: AlarmKind,
    /// What it is about.
    pub subject: Subject,
    /// How bad.
    pub severity: Severity,
    /// Human text.
    pub message: String,
    /// When it was raised.
    pub at: Time,
    /// Set once someone acknowledged it through the API; dropped when the alarm clears.
    pub acknowledged: Option<Ack>,
}

impl AlarmView {
    /// The view of an alarm nobody acknowledged.
    pub fn new(alarm: &Alarm) -> Self {
        AlarmView {
            kind: alarm.kind,
            subject: alarm.subject.clone(),
            severity: alarm.severity,
            message: alarm.message.clone(),
            at: alarm.at,
            acknowledged: None,
        }
    }
}

/// An acknowledgement of an alarm.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// When (daemon time).
    pub at: Time,
    /// Who, as they said (free text, not authenticated beyond the token).
    pub by: Option<String>,
}

/// Where an in-flight action is.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The executor runs it.
    Running,
    /// The executor has it queued.
    Queued,
    /// Issued by the supervisor; the executor's view was not passed (or it finished and its
    /// outcome is on the way).
    Issued,
}

/// An action issued and not finished.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InFlightAction {
    /// Its id.
    pub id: ActionId,
    /// The operation ([`am_core::Action::name`]).
    pub op: String,
    /// The action in words.
    pub action: String,
    /// The VM it is about.
    pub vm: Option<VmId>,
    /// The host it targets.
    pub host: Option<HostId>,
    /// Where it is.
    pub phase: Phase,
    /// How long it has run (running) or waited (queued), in seconds.
    pub elapsed_s: Option<f64>,
    /// Its deadline, counted from its start, in seconds (running only).
    pub timeout_s: Option<f64>,
}

/// The executor's state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecutorView {
    /// Actions running.
    pub running: usize,
    /// Actions queued.
    pub queued: usize,
    /// Whether it is shutting down.
    pub shutting_down: bool,
    /// Counters per operation.
    pub ops: BTreeMap<String, OpCounters>,
}

/// Counters of one operation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OpCounters {
    /// Started.
    pub started: u64,
    /// Succeeded.
    pub succeeded: u64,
    /// Failed (timeouts included).
    pub failed: u64,
    /// Failed on the executor's deadline.
    pub timed_out: u64,
    /// Total run time of finished actions.
    pub total_s: f64,
    /// Mean run time of finished actions.
    pub mean_s: f64,
    /// Longest run time of a finished action.
    pub max_s: f64,
}

impl ExecutorView {
    /// The view of an executor's status.
    pub fn new(status: &ExecutorStatus) -> Self {
        ExecutorView {
            running: status.running.len(),
            queued: status.queued.len(),
            shutting_down: status.shutting_down,
            ops: status
                .stats
                .iter()
                .map(|(op, s)| {
                    (
                        (*op).to_owned(),
                        OpCounters {
                            started: s.started,
                            succeeded: s.succeeded,
                            failed: s.failed,
                            timed_out: s.timed_out,
                            total_s: s.total_time.as_secs_f64(),
                            mean_s: s.mean_time().as_secs_f64(),
                            max_s: s.max_time.as_secs_f64(),
                        },
                    )
                })
                .collect(),
        }
    }
}

/// What [`Snapshot::capture`] may be given beyond the supervisor (the [`crate::Board`] keeps these
/// across steps).
#[derive(Clone, Debug, Default)]
pub(crate) struct Extra<'a> {
    /// When each host and VM entered its current state.
    pub since: Option<&'a BTreeMap<Subject, Time>>,
}

fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// Per subject: its incidents' count, recovery actions and latest incident.
#[derive(Default)]
struct IncidentIndex<'a> {
    count: u32,
    steps: u32,
    last: Option<&'a Incident>,
}

impl Snapshot {
    /// Captures the state of `sup` at `now`, with the executor's status if given and `recent` as
    /// the latest audit lines.
    ///
    /// - **Since / uptime**: when a host or VM entered its state is taken from the last transition
    ///   of it in `recent` (the [`crate::Board`] tracks every transition, so its snapshots always
    ///   know); a VM's uptime counts from when it became healthy, or from the end of its last
    ///   incident when no transition is at hand.
    /// - **Restarts**: the recovery steps in the VM's incidents.
    /// - **Host failures tolerated**: the supervisor's own admission control
    ///   ([`Supervisor::admission`]), from the plans it keeps with its placement policy: what
    ///   `FailoverAtRisk` is raised from.
    ///   This plans the failure of every host: on large clusters capture through the board, which
    ///   recomputes it only when hosts change or every few seconds.
    /// - **MTTR**: mean of (end - detection) over VM incidents that ended with the VM answering
    ///   again.
    /// - **Availability**: downtime is, per VM incident, from its detection to its end (to the next
    ///   incident of the VM when superseded; to when the VM was seen healthy again, or to `now`,
    ///   while open or failed), except incidents that ended with the VM left off on a user's
    ///   request. Divided by (protected VMs now x time since start). An estimate: the supervisor
    ///   learns of a failure a little after it happens, and the count of protected VMs changes.
    pub fn capture(now: Time, sup: &Supervisor, exec: Option<&ExecutorStatus>, recent: &[LogEntry]) -> Self {
        Self::capture_with(now, sup, exec, recent, &Extra::default())
    }

    pub(crate) fn capture_with(
        now: Time,
        sup: &Supervisor,
        exec: Option<&ExecutorStatus>,
        recent: &[LogEntry],
        extra: &Extra<'_>,
    ) -> Self {
        let status = sup.status_summary();
        let inv = sup.inventory();

        // When each subject entered its state: the board's record, else the latest transition in
        // `recent`.
        let mut since_recent: BTreeMap<&Subject, Time> = BTreeMap::new();
        for e in recent {
            if matches!(e.kind, LogKind::Transition { .. }) {
                since_recent.insert(&e.subject, e.at);
            }
        }
        let since_of = |s: &Subject| -> Option<Time> {
            extra
                .since
                .and_then(|m| m.get(s).copied())
                .or_else(|| since_recent.get(s).copied())
        };

        let incidents = sup.incidents();
        let mut by_subject: BTreeMap<&Subject, IncidentIndex<'_>> = BTreeMap::new();
        for inc in incidents {
            let e = by_subject.entry(&inc.subject).or_default();
            e.count += 1;
            e.steps += u32::try_from(inc.steps.len()).unwrap_or(u32::MAX);
            e.last = Some(inc);
        }

        // Per host: VMs registered, powered on, and what those use (one pass over the VMs).
        let mut per_host: BTreeMap<&HostId, (usize, usize, Resources)> = BTreeMap::new();
        for vm in inv.vms.values() {
            if let Some(h) = &vm.host {
                let e = per_host.entry(h).or_insert((0, 0, Resources::ZERO));
                e.0 += 1;
                if vm.power == PowerState::PoweredOn {
                    e.1 += 1;
                    e.2 += vm.demand;
                }
            }
        }

        // Hosts: the inventory's, plus those the supervisor still remembers.
        let mut host_ids: Vec<&HostId> = inv.hosts.keys().collect();
        host_ids.extend(sup.host_ids().filter(|h| !inv.hosts.contains_key(*h)));
        host_ids.sort();
        let mut hosts = Vec::with_capacity(host_ids.len());
        for id in host_ids {
            let h = inv.hosts.get(id);
            let state = sup.host_state(id);
            let subject = Subject::Host(id.clone());
            let (vms, vms_running, used) = per_host.get(id).copied().unwrap_or((0, 0, Resources::ZERO));
            hosts.push(HostRow {
                id: id.clone(),
                name: h.map_or_else(|| id.to_string(), |h| h.name.clone()),
                state: state.map_or("unknown", HostState::name).to_owned(),
                since: since_of(&subject).or_else(|| state.and_then(host_state_since)),
                connection: h.map(|h| h.connection),
                maintenance: h.is_some_and(|h| h.maintenance),
                vms,
                vms_running,
                used,
                capacity: h.map_or(Resources::ZERO, |h| h.capacity),
                failure_domain: h.and_then(|h| h.failure_domain.clone()),
                last_incident: by_subject.get(&subject).and_then(|i| i.last).cloned(),
            });
        }

        let mut vms = Vec::with_capacity(inv.vms.len());
        for vm in inv.vms.values() {
            let state = sup.vm_state(&vm.id);
            let class = state.map_or(VmClass::Unknown, VmState::class);
            let subject = Subject::Vm(vm.id.clone());
            let since = since_of(&subject);
            let idx = by_subject.get(&subject);
            let last_incident = idx.and_then(|i| i.last);
            let up_since = if class == VmClass::Healthy && vm.power == PowerState::PoweredOn {
                since.or_else(|| last_incident.and_then(|i| i.resolved))
            } else {
                None
            };
            vms.push(VmRow {
                id: vm.id.clone(),
                name: vm.name.clone(),
                state: state.map_or(Cow::Borrowed("unknown"), VmState::label),
                class,
                since,
                host: vm.host.clone(),
                power: vm.power,
                priority: vm.priority,
                protected: vm.is_protected(),
                up_since,
                uptime_s: up_since.map(|t| secs(now.as_millis().saturating_sub(t.as_millis()))),
                demand: vm.demand,
                anti_affinity_group: vm.anti_affinity_group.clone(),
                backup_of: vm.backup_of.clone(),
                restarts: idx.map_or(0, |i| i.steps),
                incidents: idx.map_or(0, |i| i.count),
                last_incident: last_incident.cloned().map(Box::new),
            });
        }

        let mut alarms: Vec<AlarmView> = status.alarms.iter().map(AlarmView::new).collect();
        alarms.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then(a.at.cmp(&b.at))
                .then(a.kind.cmp(&b.kind))
                .then(a.subject.cmp(&b.subject))
        });

        let in_flight = in_flight_actions(&status.in_flight, exec);
        let admission = sup.admission().cloned();
        let cluster = cluster_stats(now, sup, &hosts, &vms, admission, extra.since, &status);

        Snapshot {
            at: now,
            now,
            hosts,
            vms,
            cluster,
            alarms,
            in_flight,
            executor: exec.map(ExecutorView::new),
            recent: recent.to_vec(),
            capacity_model: None,
            ha: None,
        }
    }

    /// Moves the snapshot's `now` to `now` (never before `at`) and recounts the uptimes.
    pub fn advance_to(&mut self, now: Time) {
        self.now = now.max(self.at);
        let now_ms = self.now.as_millis();
        for vm in &mut self.vms {
            vm.uptime_s = vm.up_since.map(|t| secs(now_ms.saturating_sub(t.as_millis())));
        }
    }

    /// The row of a host.
    pub fn host(&self, id: &HostId) -> Option<&HostRow> {
        self.hosts.iter().find(|h| &h.id == id)
    }

    /// The row of a VM.
    pub fn vm(&self, id: &VmId) -> Option<&VmRow> {
        self.vms.iter().find(|v| &v.id == id)
    }
}

fn host_state_since(state: &HostState) -> Option<Time> {
    match state {
        HostState::Suspect { since }
        | HostState::Unreachable { since, .. }
        | HostState::Isolated { since }
        | HostState::Dead { since } => Some(*since),
        // Up, Removed, and any state added later: no time in the state itself.
        _ => None,
    }
}

fn in_flight_actions(
    issued: &[(ActionId, am_core::Action)],
    exec: Option<&ExecutorStatus>,
) -> Vec<InFlightAction> {
    let mut running: BTreeMap<ActionId, (f64, f64)> = BTreeMap::new();
    let mut queued: BTreeMap<ActionId, f64> = BTreeMap::new();
    if let Some(st) = exec {
        for r in &st.running {
            running.insert(
                r.submission.id,
                (r.running.as_secs_f64(), r.timeout.as_secs_f64()),
            );
        }
        for q in &st.queued {
            queued.insert(q.submission.id, q.waiting.as_secs_f64());
        }
    }
    let mut out: Vec<InFlightAction> = issued
        .iter()
        .map(|(id, action)| {
            let (phase, elapsed_s, timeout_s) = match (running.get(id), queued.get(id)) {
                (Some((ran, limit)), _) => (Phase::Running, Some(*ran), Some(*limit)),
                (None, Some(waited)) => (Phase::Queued, Some(*waited), None),
                (None, None) => (Phase::Issued, None, None),
            };
            InFlightAction {
                id: *id,
                op: action.name().to_owned(),
                action: action.to_string(),
                vm: action.vm().cloned(),
                host: action.host().cloned(),
                phase,
                elapsed_s,
                timeout_s,
            }
        })
        .collect();
    out.sort_by_key(|a| a.id);
    out
}

fn cluster_stats(
    now: Time,
    sup: &Supervisor,
    hosts: &[HostRow],
    vms: &[VmRow],
    admission: Option<Admission>,
    since: Option<&BTreeMap<Subject, Time>>,
    status: &supervisor::Status,
) -> ClusterStats {
    let inv = sup.inventory();
    let mut hosts_by_state: BTreeMap<String, usize> =
        HOST_STATES.iter().map(|s| ((*s).to_owned(), 0)).collect();
    for h in hosts {
        *hosts_by_state.entry(h.state.clone()).or_default() += 1;
    }
    let mut vms_by_state: BTreeMap<String, usize> =
        VmClass::ALL.iter().map(|c| (c.name().to_owned(), 0)).collect();
    let mut count = BTreeMap::<VmClass, usize>::new();
    for v in vms {
        *vms_by_state.entry(v.class.name().to_owned()).or_default() += 1;
        *count.entry(v.class).or_default() += 1;
    }
    let n = |c: VmClass| count.get(&c).copied().unwrap_or(0);
    let protected_vms = vms.iter().filter(|v| v.protected).count();
    let healthy = vms
        .iter()
        .filter(|v| v.protected && v.class == VmClass::Healthy)
        .count();

    let capacity = inv
        .hosts
        .values()
        .filter(|h| h.accepts_vms())
        .fold(Resources::ZERO, |acc, h| acc + h.capacity);
    let used = hosts.iter().fold(Resources::ZERO, |acc, h| acc + h.used);

    let incidents = sup.incidents();
    let recovered: Vec<&Incident> = incidents
        .iter()
        .filter(|i| matches!(i.subject, Subject::Vm(_)))
        .filter(|i| i.resolved.is_some() && i.ending == Some(Ending::Recovered))
        .collect();
    let mttr_s = if recovered.is_empty() {
        None
    } else {
        let total: u64 = recovered
            .iter()
            .filter_map(|i| {
                i.resolved
                    .map(|r| r.as_millis().saturating_sub(i.detected.as_millis()))
            })
            .sum();
        Some(secs(total) / recovered.len() as f64)
    };

    ClusterStats {
        hosts: hosts.len(),
        hosts_up: hosts.iter().filter(|h| h.state == "up").count(),
        hosts_by_state,
        vms: vms.len(),
        vms_running: vms.iter().filter(|v| v.power == PowerState::PoweredOn).count(),
        vms_by_state,
        protected_vms,
        healthy,
        recovering: n(VmClass::Recovering)
            + n(VmClass::Verifying)
            + n(VmClass::OffUnexplained)
            + n(VmClass::Reconciling),
        awaiting_capacity: n(VmClass::AwaitingCapacity),
        failed: n(VmClass::Failed),
        frozen: n(VmClass::Frozen),
        capacity,
        used,
        host_failures_tolerated: admission.as_ref().map(|a| a.host_failures_tolerated),
        admission,
        incidents: incidents.len(),
        open_incidents: incidents.iter().filter(|i| i.outcome.is_none()).count(),
        recoveries: recovered.len(),
        mttr_s,
        availability: availability(now, incidents, protected_vms, vms, since),
        manager_isolated: status.manager_isolated,
        storm: status.storm,
        disarmed: status.disarmed.clone(),
        evacuations: status.evacuations.clone(),
    }
}

/// See [`Snapshot::capture`].
fn availability(
    now: Time,
    incidents: &[Incident],
    protected_vms: usize,
    vms: &[VmRow],
    since: Option<&BTreeMap<Subject, Time>>,
) -> Option<f64> {
    let total = protected_vms as f64 * secs(now.as_millis());
    if total <= 0.0 {
        return None;
    }
    let healthy_since: BTreeMap<&VmId, Option<Time>> = vms
        .iter()
        .map(|v| {
            let s = if v.class == VmClass::Healthy {
                v.up_since
                    .or_else(|| since.and_then(|m| m.get(&Subject::Vm(v.id.clone())).copied()))
            } else {
                None
            };
            (&v.id, s)
        })
        .collect();
    let mut down_ms: u64 = 0;
    for (i, inc) in incidents.iter().enumerate() {
        let Subject::Vm(vm) = &inc.subject else { continue };
        if inc.ending == Some(Ending::LeftOff) {
            continue;
        }
        let next = || {
            incidents[i + 1..]
                .iter()
                .find(|j| j.subject == inc.subject)
                .map(|j| j.detected)
        };
        let end = match inc.resolved {
            Some(r) => r,
            None if inc.ending == Some(Ending::Superseded) => next().unwrap_or(now),
            None => match healthy_since.get(vm).copied().flatten() {
                Some(t) if t >= inc.detected => t,
                _ => now,
            },
        };
        down_ms = down_ms.saturating_add(end.as_millis().saturating_sub(inc.detected.as_millis()));
    }
    Some((1.0 - secs(down_ms) / total).clamp(0.0, 1.0))
}

/// The wire name of an alarm kind (`host_unreachable`).
pub fn alarm_kind_name(kind: AlarmKind) -> String {
    match serde_json::to_value(kind) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{kind:?}"),
    }
}

/// Parses the wire name of an alarm kind.
pub fn parse_alarm_kind(name: &str) -> Option<AlarmKind> {
    serde_json::from_value(serde_json::Value::String(name.to_owned())).ok()
}

/// Every alarm kind (the label values of the alarm metrics): am-core's exhaustive list.
pub const ALARM_KINDS: [AlarmKind; AlarmKind::ALL.len()] = AlarmKind::ALL;

/// A subject as one path segment: `host:h1`, `vm:vm-7`, `datastore:ds-1`, `cluster`, `manager`.
pub fn subject_path(subject: &Subject) -> String {
    match subject {
        Subject::Host(h) => format!("host:{h}"),
        Subject::Vm(v) => format!("vm:{v}"),
        Subject::Cluster => "cluster".into(),
        Subject::Manager => "manager".into(),
        Subject::Datastore(d) => format!("datastore:{d}"),
    }
}

/// Parses [`subject_path`]'s form.
pub fn parse_subject(text: &str) -> Option<Subject> {
    match text.split_once(':') {
        Some(("host", id)) if !id.is_empty() => Some(Subject::Host(id.into())),
        Some(("datastore", id)) if !id.is_empty() => Some(Subject::Datastore(id.into())),
        Some(("vm", id)) if !id.is_empty() => Some(Subject::Vm(id.into())),
        None if text == "cluster" => Some(Subject::Cluster),
        None if text == "manager" => Some(Subject::Manager),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in ALARM_KINDS {
            assert_eq!(parse_alarm_kind(&alarm_kind_name(k)), Some(k));
        }
        assert_eq!(alarm_kind_name(AlarmKind::HostUnreachable), "host_unreachable");
        assert_eq!(parse_alarm_kind("nope"), None);
        for s in [
            Subject::Host("h1".into()),
            Subject::Vm("vm:odd".into()),
            Subject::Cluster,
            Subject::Manager,
        ] {
            assert_eq!(parse_subject(&subject_path(&s)), Some(s));
        }
        assert_eq!(parse_subject("vm:"), None);
        assert_eq!(parse_subject("planet:x"), None);
        for c in VmClass::ALL {
            assert_eq!(serde_json::to_value(c).unwrap(), c.name());
        }
        use am_core::ActionId;
        use supervisor::Step;
        let t = Time::ZERO;
        for (state, class) in [
            (VmState::Healthy, VmClass::Healthy),
            (VmState::Unprotected, VmClass::Unprotected),
            (
                VmState::StayOff {
                    by: Some("alice".into()),
                },
                VmClass::Off,
            ),
            (VmState::StayOff { by: None }, VmClass::Off),
            (VmState::OffUnexplained { since: t }, VmClass::OffUnexplained),
            (
                VmState::Recovering {
                    step: Step::Restart,
                    action: ActionId(1),
                },
                VmClass::Recovering,
            ),
            (
                VmState::Verifying {
                    step: Step::Failover,
                    until: t,
                },
                VmClass::Verifying,
            ),
            (VmState::Frozen { host: "h1".into() }, VmClass::Frozen),
            (VmState::AwaitingCapacity, VmClass::AwaitingCapacity),
            (VmState::Failed, VmClass::Failed),
        ] {
            assert_eq!(state.class(), class, "{state}");
        }
    }
}
