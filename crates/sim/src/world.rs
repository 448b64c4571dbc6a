//! The simulator's state machine: the truth, the manager's view derived from it, the versioned
//! change log, fault injection, and every hypervisor operation as a synchronous function. No I/O,
//! no clock: the async layer (`sim.rs`) passes `now` in.

use crate::fault::{ApiErrorKind, ApiTrigger, Fault, FaultDepth};
use crate::prng::Prng;
use crate::spec::{ClusterSpec, HostSpec, Latencies, SpecError, SpecPower};
use crate::truth::{
    FaultRecord, GuestState, HostCondition, HostTruth, OpRecord, Outage, SnapshotTruth, Violation, VmFault,
    VmTruth,
};
use am_core::{
    Changes, ClusterEvent, ConnectionState, Datastore, DatastoreId, EventKind, GuestHeartbeat, Host, HostId,
    HvError, Inventory, InventoryDelta, PowerState, ProbeTarget, Resources, RestartPriority, Snapshot,
    SnapshotId, Time, Vm, VmId,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// Why a fault could not be injected.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum InjectError {
    /// The fault names a host the simulator does not know.
    #[error("fault `{fault}`: unknown host {host}")]
    UnknownHost {
        /// The fault, in script syntax.
        fault: String,
        /// The host.
        host: HostId,
    },
    /// The fault names a VM the simulator does not know.
    #[error("fault `{fault}`: unknown vm {vm}")]
    UnknownVm {
        /// The fault, in script syntax.
        fault: String,
        /// The VM.
        vm: VmId,
    },
    /// A probability outside `[0, 1]`.
    #[error("fault `{fault}`: probability is not between 0 and 1")]
    BadProbability {
        /// The fault, in script syntax.
        fault: String,
    },
}

/// Settings taken from the spec.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub manager_user: String,
    pub latencies: Latencies,
    pub heartbeat_delay: Duration,
    pub hb_period_ms: u64,
    pub unreachable_delay: Duration,
    pub enforce_capacity: bool,
    pub log_capacity: usize,
    pub storage_heartbeats: bool,
    pub file_locks: bool,
}

#[derive(Clone, Debug)]
struct DsTruth {
    id: DatastoreId,
    capacity_mib: u64,
    /// `None`: every host.
    hosts: Option<BTreeSet<HostId>>,
}

#[derive(Clone, Debug, PartialEq)]
enum Entry {
    Delta(Box<InventoryDelta>),
    Event(ClusterEvent),
}

/// How a VM boots, which decides which faults the boot clears.
#[derive(Clone, Debug)]
enum Boot {
    /// Power on, reset, migration, failover: clears transient faults (and host-local ones when
    /// on another host).
    Plain,
    /// Revert to a snapshot: also clears a corrupt disk if the snapshot is good.
    Revert { good: bool },
    /// Restore from a clone: the disk becomes the clone's.
    Restore { disk: Option<VmFault> },
}

/// Hypervisor operations that `*` in an API fault matches (every `Action` name).
const HV_OPS: &[&str] = &[
    "power_on",
    "power_off",
    "reset",
    "revert_snapshot",
    "create_snapshot",
    "remove_snapshot",
    "clone",
    "restore_clone",
    "migrate_cold",
    "migrate_live",
    "failover",
    "register",
    "unregister",
    "reconnect_host",
    "revive_host",
    "fence_host",
    "remove_host",
    "add_host",
    "enter_maintenance",
    "exit_maintenance",
];

/// Whether an API fault for `method` applies to a call of `op`.
fn method_matches(method: &str, op: &str) -> bool {
    method == op
        || (method == "*" && HV_OPS.contains(&op))
        || (method == "migrate" && op.starts_with("migrate_"))
        || (method == "clone_vm" && op == "clone")
        || (method == "register_vm" && op == "register")
        || (method == "unregister_vm" && op == "unregister")
}

fn unreachable_host(host: &HostId, cond: HostCondition) -> HvError {
    HvError::Unreachable {
        target: host.to_string(),
        detail: format!("host is not responding ({cond})"),
    }
}

pub(crate) struct World {
    pub cfg: Settings,
    hosts: BTreeMap<HostId, HostTruth>,
    vms: BTreeMap<VmId, VmTruth>,
    datastores: BTreeMap<DatastoreId, DsTruth>,
    spares: BTreeMap<String, HostSpec>,
    /// What vCenter shows, as last published.
    view: Inventory,
    /// Ids that were in the view and are not any more (for full resyncs).
    gone_hosts: BTreeSet<HostId>,
    gone_vms: BTreeSet<VmId>,
    pub version: u64,
    log: VecDeque<(u64, Entry)>,
    pending_events: Vec<EventKind>,
    /// Something changed since the last publication.
    pub dirty: bool,
    /// Timers up to this time are processed.
    processed_until: Time,
    /// The next timer after `processed_until`, while the truth has not changed.
    next_timer: Option<Time>,
    violations: Vec<Violation>,
    double_run: BTreeSet<VmId>,
    over_capacity: BTreeSet<HostId>,
    history: Vec<FaultRecord>,
    ops: Vec<OpRecord>,
    outages: Vec<Outage>,
    /// Index in `outages` of the open outage of each protected VM that is down.
    down: BTreeMap<VmId, usize>,
    api_faults: Vec<(String, ApiErrorKind, ApiTrigger)>,
    api_latency: BTreeMap<String, Duration>,
    probe_loss: f64,
    pub manager_isolated: bool,
    probe_rng: Prng,
    api_rng: Prng,
    next_snapshot: u64,
    next_clone: u64,
    busy: BTreeSet<String>,
}

impl World {
    pub fn new(spec: &ClusterSpec) -> Result<World, SpecError> {
        spec.validate()?;
        let cfg = Settings {
            manager_user: spec.manager_user.clone(),
            latencies: spec.latencies.clone(),
            heartbeat_delay: spec.heartbeat_delay,
            hb_period_ms: u64::try_from(spec.storage_heartbeat_period.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
            unreachable_delay: spec.unreachable_delay,
            enforce_capacity: spec.enforce_capacity,
            log_capacity: spec.change_log_capacity.max(1),
            storage_heartbeats: spec.storage_heartbeats,
            file_locks: spec.file_locks,
        };
        let hosts = spec
            .hosts
            .iter()
            .map(|h| (HostId::new(&h.id), host_truth(&h.id, h, Time::ZERO)))
            .collect();
        let datastores = spec
            .datastores
            .iter()
            .map(|d| {
                let id = DatastoreId::new(&d.id);
                let ds = DsTruth {
                    id: id.clone(),
                    capacity_mib: d.capacity_mib,
                    hosts: d.hosts.as_ref().map(|hs| hs.iter().map(HostId::new).collect()),
                };
                (id, ds)
            })
            .collect();
        let default_ds = spec.datastores.first().map(|d| DatastoreId::new(&d.id));
        let mut cpu_rng = Prng::stream(spec.seed, 0xC9);
        let vms = spec
            .vms
            .iter()
            .map(|v| {
                let host = HostId::new(&v.host);
                let pct = 20 + cpu_rng.below(50);
                let vm = VmTruth {
                    id: VmId::new(&v.id),
                    name: v.id.clone(),
                    demand: v.demand(),
                    priority: v.priority,
                    affinity_group: v.affinity_group.clone(),
                    anti_affinity_group: v.anti_affinity_group.clone(),
                    guest_address: v.guest_address.clone(),
                    datastore: v
                        .datastore
                        .as_ref()
                        .map(DatastoreId::new)
                        .or_else(|| default_ds.clone()),
                    backup_of: None,
                    registered: Some(host.clone()),
                    running_on: if v.power == SpecPower::On {
                        vec![host]
                    } else {
                        Vec::new()
                    },
                    guest: GuestState::Ok,
                    guest_since: Time::ZERO,
                    fault: None,
                    snapshots: Vec::new(),
                    user_off: None,
                    listed: true,
                    cpu_usage: (v.cpu_mhz * pct / 100).max(1),
                };
                (vm.id.clone(), vm)
            })
            .collect();
        let mut w = World {
            cfg,
            hosts,
            vms,
            datastores,
            spares: spec.spares.clone(),
            view: Inventory::default(),
            gone_hosts: BTreeSet::new(),
            gone_vms: BTreeSet::new(),
            version: 0,
            log: VecDeque::new(),
            pending_events: Vec::new(),
            dirty: false,
            processed_until: Time::ZERO,
            next_timer: None,
            violations: Vec::new(),
            double_run: BTreeSet::new(),
            over_capacity: BTreeSet::new(),
            history: Vec::new(),
            ops: Vec::new(),
            outages: Vec::new(),
            down: BTreeMap::new(),
            api_faults: Vec::new(),
            api_latency: BTreeMap::new(),
            probe_loss: spec.probe_loss,
            manager_isolated: false,
            probe_rng: Prng::stream(spec.seed, 0x9B0BE),
            api_rng: Prng::stream(spec.seed, 0xA91),
            next_snapshot: 1,
            next_clone: 1,
            busy: BTreeSet::new(),
        };
        let protected: Vec<VmId> = w
            .vms
            .values()
            .filter(|v| v.is_protected())
            .map(|v| v.id.clone())
            .collect();
        if spec.initial_snapshots {
            for id in &protected {
                w.add_snapshot(id, "initial", Time::ZERO);
            }
        }
        if spec.initial_clones {
            let host_ids: Vec<HostId> = w.hosts.keys().cloned().collect();
            for id in &protected {
                let Some(src) = w.vms.get(id).and_then(|v| v.registered.clone()) else {
                    continue;
                };
                let pos = host_ids.iter().position(|h| *h == src).unwrap_or(0);
                let target = host_ids[(pos + 1) % host_ids.len()].clone();
                w.make_clone(id, &format!("{id}-backup"), &target, None);
            }
        }
        w.view = w.derive_view(Time::ZERO);
        w.check_invariants(Time::ZERO);
        Ok(w)
    }

    // ----- time, view and change log -------------------------------------------------------------

    /// The next timer strictly after `t`: a storage heartbeat tick or a guest heartbeat turning red.
    pub fn next_timer_after(&self, t: Time) -> Time {
        let p = self.cfg.hb_period_ms;
        let hb = (t.as_millis() / p + 1) * p;
        let red = self
            .vms
            .values()
            .filter(|v| v.is_running() && v.guest != GuestState::Ok)
            .map(|v| (v.guest_since + self.cfg.heartbeat_delay).as_millis())
            .filter(|&r| r > t.as_millis())
            .min()
            .unwrap_or(u64::MAX);
        Time(hb.min(red))
    }

    /// Processes every timer up to `now`, publishing the changes each one makes at its own time.
    pub fn advance(&mut self, now: Time) {
        if self.dirty {
            let t = self.processed_until;
            self.publish(t);
        }
        loop {
            let next = match self.next_timer {
                Some(t) => t,
                None => {
                    let t = self.next_timer_after(self.processed_until);
                    self.next_timer = Some(t);
                    t
                }
            };
            if next > now {
                break;
            }
            self.processed_until = next;
            self.next_timer = None;
            if next.as_millis() % self.cfg.hb_period_ms == 0 {
                for h in self.hosts.values_mut().filter(|h| h.condition.is_alive()) {
                    h.last_heartbeat = next;
                }
            }
            self.dirty = true;
            self.publish(next);
        }
        if now > self.processed_until {
            self.processed_until = now;
        }
    }

    fn derive_view(&self, t: Time) -> Inventory {
        let mut inv = Inventory::default();
        for h in self.hosts.values().filter(|h| !h.removed) {
            inv.hosts.insert(
                h.id.clone(),
                Host {
                    id: h.id.clone(),
                    name: h.id.to_string(),
                    capacity: h.capacity,
                    connection: if h.condition.is_managed() {
                        ConnectionState::Connected
                    } else {
                        ConnectionState::NotResponding
                    },
                    maintenance: h.maintenance,
                    failure_domain: h.failure_domain.clone(),
                    mgmt_address: h.mgmt_address.clone(),
                    storage_heartbeat: self.cfg.storage_heartbeats.then_some(h.last_heartbeat),
                },
            );
        }
        for vm in self.vms.values().filter(|v| v.listed) {
            let managed = match &vm.registered {
                None => true,
                Some(h) => self
                    .hosts
                    .get(h)
                    .is_some_and(|h| h.condition.is_managed() && !h.removed),
            };
            let frozen = if managed { None } else { self.view.vms.get(&vm.id) };
            let shown = match frozen {
                Some(prev) => prev.clone(),
                None => self.fresh_vm_view(vm, t),
            };
            inv.vms.insert(vm.id.clone(), shown);
            if !vm.snapshots.is_empty() {
                inv.snapshots.insert(
                    vm.id.clone(),
                    vm.snapshots.iter().map(|s| s.snapshot.clone()).collect(),
                );
            }
        }
        for ds in self.datastores.values() {
            let hosts: Vec<HostId> = inv
                .hosts
                .keys()
                .filter(|h| self.mounts(h, &ds.id))
                .cloned()
                .collect();
            inv.datastores.insert(
                ds.id.clone(),
                Datastore {
                    id: ds.id.clone(),
                    name: ds.id.to_string(),
                    capacity_mib: ds.capacity_mib,
                    free_mib: ds.capacity_mib / 5 * 3,
                    hosts,
                },
            );
        }
        inv
    }

    fn fresh_vm_view(&self, vm: &VmTruth, t: Time) -> Vm {
        let on = vm.registered.as_ref().is_some_and(|h| vm.running_on.contains(h));
        let red = t >= vm.guest_since + self.cfg.heartbeat_delay;
        let (heartbeat, cpu) = match (on, vm.guest) {
            (false, _) => (GuestHeartbeat::Gray, 0),
            (true, GuestState::Ok) => (GuestHeartbeat::Green, vm.cpu_usage),
            (true, GuestState::Hung) => (
                if red {
                    GuestHeartbeat::Red
                } else {
                    GuestHeartbeat::Green
                },
                0,
            ),
            (true, GuestState::Crashed) => (
                if red {
                    GuestHeartbeat::Red
                } else {
                    GuestHeartbeat::Green
                },
                (vm.cpu_usage / 20).max(1),
            ),
        };
        Vm {
            id: vm.id.clone(),
            name: vm.name.clone(),
            demand: vm.demand,
            power: if on {
                PowerState::PoweredOn
            } else {
                PowerState::PoweredOff
            },
            host: vm.registered.clone(),
            priority: vm.priority,
            affinity_group: vm.affinity_group.clone(),
            anti_affinity_group: vm.anti_affinity_group.clone(),
            guest_address: vm.guest_address.clone(),
            heartbeat,
            cpu_usage_mhz: Some(cpu),
            datastore: vm.datastore.clone(),
            backup_of: vm.backup_of.clone(),
            config_path: Some(match &vm.datastore {
                Some(ds) => format!("[{ds}] {}/{}.vmx", vm.name, vm.name),
                None => format!("{}/{}.vmx", vm.name, vm.name),
            }),
            instance_uuid: None,
            backup: true,
        }
    }

    /// Whether `host` mounts datastore `ds`: listed in its spec, or shared by the original hosts,
    /// or mounted on it since.
    fn mounts(&self, host: &HostId, ds: &DatastoreId) -> bool {
        let Some(h) = self.hosts.get(host) else {
            return false;
        };
        if h.mounted.contains(ds) {
            return true;
        }
        match self.datastores.get(ds).map(|d| &d.hosts) {
            Some(Some(set)) => set.contains(host),
            Some(None) => !h.spare,
            None => false,
        }
    }

    /// Refuses to start `vm` on `host` while another host still runs it (its files are locked
    /// there), or when `host` does not mount the VM's datastore.
    fn check_files(&self, vm: &VmId, host: &HostId) -> Result<(), HvError> {
        let v = self.vm(vm)?;
        if let Some(holder) = v
            .running_on
            .iter()
            .find(|h| *h != host)
            .filter(|_| self.cfg.file_locks)
        {
            return Err(HvError::Locked {
                id: vm.to_string(),
                file: format!("{}/{}.vmx (held by {holder})", v.name, v.name),
            });
        }
        self.check_datastore(vm, host)
    }

    /// Looks at `vm`'s files for the lock of a host that runs it (changes nothing).
    pub(crate) fn check_locks(&self, vm: &VmId) -> Result<(), HvError> {
        let v = self.vm(vm)?;
        match v.running_on.first().filter(|_| self.cfg.file_locks) {
            Some(holder) => Err(HvError::Locked {
                id: vm.to_string(),
                file: format!("{}/{}.vmx (held by {holder})", v.name, v.name),
            }),
            None => Ok(()),
        }
    }

    /// Refuses `host` for `vm` when it does not mount the VM's datastore.
    fn check_datastore(&self, vm: &VmId, host: &HostId) -> Result<(), HvError> {
        let v = self.vm(vm)?;
        if let Some(ds) = &v.datastore
            && !self.mounts(host, ds)
        {
            return Err(HvError::invalid_state(
                vm,
                format!("datastore {ds} is not mounted on {host}"),
            ));
        }
        Ok(())
    }

    pub fn mount_datastore(&mut self, _now: Time, host: &HostId, ds: &DatastoreId) -> Result<(), HvError> {
        if !self.datastores.contains_key(ds) {
            return Err(HvError::not_found("datastore", ds));
        }
        let h = self.host_mut(host)?;
        if !h.condition.is_managed() {
            return Err(unreachable_host(host, h.condition));
        }
        h.mounted.insert(ds.clone());
        self.note(format!("datastore {ds} mounted on {host}"));
        Ok(())
    }

    /// Recomputes the view at `t`, logs the deltas and pending events, checks the invariants.
    pub fn publish(&mut self, t: Time) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        self.next_timer = None;
        let new = self.derive_view(t);
        let old = std::mem::take(&mut self.view);
        let deltas = diff(&old, &new);
        let mut events = std::mem::take(&mut self.pending_events);
        // What vCenter notices by itself: VMs found off or on, hosts that stopped answering.
        for (id, vm) in &new.vms {
            let Some(prev) = old.vms.get(id) else { continue };
            let said = |off: bool| {
                events.iter().any(|e| match e {
                    EventKind::VmPoweredOff { vm, .. } => off && vm == id,
                    EventKind::VmPoweredOn { vm, .. } => !off && vm == id,
                    _ => false,
                })
            };
            match (prev.power, vm.power) {
                (PowerState::PoweredOn, PowerState::PoweredOff) if !said(true) => {
                    events.push(EventKind::VmPoweredOff {
                        vm: id.clone(),
                        user: None,
                    });
                }
                (PowerState::PoweredOff, PowerState::PoweredOn) if !said(false) => {
                    events.push(EventKind::VmPoweredOn {
                        vm: id.clone(),
                        user: None,
                    });
                }
                _ => {}
            }
        }
        for (id, h) in &new.hosts {
            let was_connected = old
                .hosts
                .get(id)
                .is_some_and(|p| p.connection == ConnectionState::Connected);
            if was_connected && h.connection != ConnectionState::Connected {
                events.push(EventKind::HostConnectionLost { host: id.clone() });
            }
        }
        for id in old.hosts.keys().filter(|h| !new.hosts.contains_key(*h)) {
            self.gone_hosts.insert(id.clone());
        }
        for id in old.vms.keys().filter(|v| !new.vms.contains_key(*v)) {
            self.gone_vms.insert(id.clone());
        }
        for id in new.hosts.keys() {
            self.gone_hosts.remove(id);
        }
        for id in new.vms.keys() {
            self.gone_vms.remove(id);
        }
        self.view = new;
        for d in deltas {
            self.version += 1;
            self.log.push_back((self.version, Entry::Delta(Box::new(d))));
        }
        for kind in events {
            self.version += 1;
            self.log
                .push_back((self.version, Entry::Event(ClusterEvent { at: t, kind })));
        }
        while self.log.len() > self.cfg.log_capacity {
            self.log.pop_front();
        }
        self.check_invariants(t);
    }

    /// The inventory view (as last published).
    pub fn view(&self) -> &Inventory {
        &self.view
    }

    /// Changes after version `since`, or `None` when there are none. A version that is too old, in
    /// the future or unreadable gets a full resync.
    pub fn changes_since(&self, since: &str) -> Option<Changes> {
        let parsed: Option<u64> = since.trim().parse().ok();
        if parsed == Some(self.version) {
            return None;
        }
        let first_kept = self.log.front().map_or(self.version + 1, |(v, _)| *v);
        let mut changes = Changes {
            version: self.version.to_string(),
            deltas: Vec::new(),
            events: Vec::new(),
        };
        match parsed {
            Some(v) if v < self.version && v + 1 >= first_kept => {
                for (_, entry) in self.log.iter().filter(|(ev, _)| *ev > v) {
                    match entry {
                        Entry::Delta(d) => changes.deltas.push((**d).clone()),
                        Entry::Event(e) => changes.events.push(e.clone()),
                    }
                }
            }
            _ => {
                changes.deltas = self.full_resync();
                if let Some(v) = parsed.filter(|v| *v < self.version) {
                    for (_, entry) in self.log.iter().filter(|(ev, _)| *ev > v) {
                        if let Entry::Event(e) = entry {
                            changes.events.push(e.clone());
                        }
                    }
                }
            }
        }
        Some(changes)
    }

    fn full_resync(&self) -> Vec<InventoryDelta> {
        let mut out = Vec::new();
        out.extend(self.gone_vms.iter().cloned().map(InventoryDelta::VmRemoved));
        out.extend(self.gone_hosts.iter().cloned().map(InventoryDelta::HostRemoved));
        out.extend(self.view.hosts.values().cloned().map(InventoryDelta::HostUpsert));
        out.extend(
            self.view
                .datastores
                .values()
                .cloned()
                .map(InventoryDelta::DatastoreUpsert),
        );
        out.extend(self.view.vms.values().cloned().map(InventoryDelta::VmUpsert));
        for id in self.view.vms.keys() {
            out.push(InventoryDelta::Snapshots {
                vm: id.clone(),
                snapshots: self.view.snapshots.get(id).cloned().unwrap_or_default(),
            });
        }
        out
    }

    // ----- invariants and queries ----------------------------------------------------------------

    fn load(&self, host: &HostId) -> Resources {
        self.vms
            .values()
            .filter(|v| v.running_on.contains(host))
            .fold(Resources::ZERO, |a, v| a + v.demand)
    }

    fn check_invariants(&mut self, t: Time) {
        for vm in self.vms.values() {
            let down = vm.listed && vm.is_protected() && !vm.is_healthy();
            match (down, self.down.get(&vm.id)) {
                (true, None) => {
                    self.down.insert(vm.id.clone(), self.outages.len());
                    self.outages.push(Outage {
                        vm: vm.id.clone(),
                        from: t,
                        to: None,
                    });
                }
                (false, Some(&i)) => {
                    if let Some(o) = self.outages.get_mut(i) {
                        o.to = Some(t);
                    }
                    self.down.remove(&vm.id);
                }
                _ => {}
            }
            if vm.running_on.len() >= 2 {
                if self.double_run.insert(vm.id.clone()) {
                    self.violations.push(Violation::DoubleRun {
                        vm: vm.id.clone(),
                        hosts: vm.running_on.clone(),
                        at: t,
                    });
                }
            } else {
                self.double_run.remove(&vm.id);
            }
        }
        let loads: Vec<(HostId, Resources, Resources)> = self
            .hosts
            .values()
            .map(|h| (h.id.clone(), self.load(&h.id), h.capacity))
            .collect();
        for (host, used, capacity) in loads {
            if used.fits_in(&capacity) {
                self.over_capacity.remove(&host);
            } else if self.over_capacity.insert(host.clone()) {
                self.violations.push(Violation::OverCapacity {
                    host,
                    used,
                    capacity,
                    at: t,
                });
            }
        }
    }

    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    pub fn outages(&self) -> &[Outage] {
        &self.outages
    }

    pub fn history(&self) -> &[FaultRecord] {
        &self.history
    }

    pub fn ops(&self) -> &[OpRecord] {
        &self.ops
    }

    pub fn record_op(&mut self, op: OpRecord) {
        self.ops.push(op);
    }

    pub fn vm_truth(&self, vm: &VmId) -> Option<&VmTruth> {
        self.vms.get(vm)
    }

    pub fn vm_truths(&self) -> impl Iterator<Item = &VmTruth> {
        self.vms.values()
    }

    pub fn host_truth(&self, host: &HostId) -> Option<&HostTruth> {
        self.hosts.get(host)
    }

    pub fn host_truths(&self) -> impl Iterator<Item = &HostTruth> {
        self.hosts.values()
    }

    /// Whether a probe of `target` is answered (draws from the probe loss PRNG).
    pub fn probe(&mut self, target: &ProbeTarget) -> bool {
        if self.manager_isolated {
            return false;
        }
        let reachable = match target {
            ProbeTarget::Isolation { .. } => true,
            ProbeTarget::Host { host, .. } => self.hosts.get(host).is_some_and(|h| h.condition.is_pingable()),
            ProbeTarget::Guest { vm, .. } => self.vms.get(vm).is_some_and(|v| {
                v.guest == GuestState::Ok
                    && v.running_on
                        .iter()
                        .any(|h| self.hosts.get(h).is_some_and(|h| h.condition.is_pingable()))
            }),
        };
        reachable && !self.probe_rng.chance(self.probe_loss)
    }

    // ----- API faults and busy objects ------------------------------------------------------------

    /// The injected fault a call of `op` hits, if any (consumes counts, draws probabilities).
    pub fn take_api_fault(&mut self, op: &str) -> Option<ApiErrorKind> {
        let mut hit = None;
        let mut exhausted = None;
        for (i, (method, kind, trigger)) in self.api_faults.iter_mut().enumerate() {
            if !method_matches(method, op) {
                continue;
            }
            match trigger {
                ApiTrigger::Count(n) => {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        exhausted = Some(i);
                    }
                    hit = Some(*kind);
                    break;
                }
                ApiTrigger::Probability(p) => {
                    if self.api_rng.chance(*p) {
                        hit = Some(*kind);
                        break;
                    }
                }
            }
        }
        if let Some(i) = exhausted {
            self.api_faults.remove(i);
        }
        hit
    }

    /// The latency of `op`, injected extra latency included.
    pub fn latency(&self, op: &str) -> Duration {
        let extra: Duration = self
            .api_latency
            .iter()
            .filter(|(m, _)| method_matches(m, op))
            .map(|(_, d)| *d)
            .sum();
        self.cfg.latencies.get(op) + extra
    }

    /// Marks `key` busy; false if it already was.
    pub fn set_busy(&mut self, key: &str) -> bool {
        self.busy.insert(key.to_owned())
    }

    pub fn clear_busy(&mut self, key: &str) {
        self.busy.remove(key);
    }

    // ----- fault injection -----------------------------------------------------------------------

    /// Checks a fault's ids without injecting it.
    pub fn check_fault(&self, fault: &Fault) -> Result<(), InjectError> {
        let text = || fault.to_string();
        let host_known = |h: &HostId| {
            self.hosts.contains_key(h)
                || self
                    .spares
                    .iter()
                    .any(|(name, s)| h.as_str() == name || h.as_str() == s.id)
        };
        let bad_p = |p: f64| !(0.0..=1.0).contains(&p);
        match fault {
            Fault::HostCrash { host, .. }
            | Fault::HostIsolate { host }
            | Fault::HostHeal { host }
            | Fault::HostDisconnect { host }
                if !host_known(host) =>
            {
                Err(InjectError::UnknownHost {
                    fault: text(),
                    host: host.clone(),
                })
            }
            Fault::VmGuestCrash { vm, .. }
            | Fault::VmHang { vm, .. }
            | Fault::VmPowerOff { vm, .. }
            | Fault::VmPowerOn { vm, .. }
                if !self.vms.contains_key(vm) =>
            {
                Err(InjectError::UnknownVm {
                    fault: text(),
                    vm: vm.clone(),
                })
            }
            Fault::ApiFault {
                trigger: ApiTrigger::Probability(p),
                ..
            }
            | Fault::ProbeLoss { probability: p }
                if bad_p(*p) =>
            {
                Err(InjectError::BadProbability { fault: text() })
            }
            _ => Ok(()),
        }
    }

    /// Injects `fault` at `now`.
    pub fn inject(&mut self, now: Time, fault: Fault) -> Result<(), InjectError> {
        if let Err(e) = self.check_fault(&fault) {
            self.history.push(FaultRecord {
                at: now,
                fault,
                applied: false,
                note: e.to_string(),
            });
            return Err(e);
        }
        let outcome = self.apply_fault(now, &fault);
        self.dirty = true;
        self.history.push(FaultRecord {
            at: now,
            fault,
            applied: outcome.is_ok(),
            note: outcome.err().unwrap_or_default(),
        });
        Ok(())
    }

    /// Applies a fault whose ids are known; `Err` says why it changed nothing.
    fn apply_fault(&mut self, now: Time, fault: &Fault) -> Result<(), String> {
        match fault {
            Fault::HostCrash { host, permanent } => {
                let h = self.hosts.get_mut(host).ok_or("host not in the cluster yet")?;
                match h.condition {
                    HostCondition::Crashed { permanent: was } => {
                        if *permanent && !was {
                            h.condition = HostCondition::Crashed { permanent: true };
                            return Ok(());
                        }
                        return Err("already crashed".into());
                    }
                    _ => {
                        h.condition = HostCondition::Crashed {
                            permanent: *permanent,
                        }
                    }
                }
                self.stop_all_on(host);
            }
            Fault::HostIsolate { host } => {
                let h = self.hosts.get_mut(host).ok_or("host not in the cluster yet")?;
                if !matches!(h.condition, HostCondition::Up | HostCondition::Disconnected) {
                    return Err(format!("host is {}", h.condition));
                }
                h.condition = HostCondition::Isolated;
            }
            Fault::HostDisconnect { host } => {
                let h = self.hosts.get_mut(host).ok_or("host not in the cluster yet")?;
                if h.condition != HostCondition::Up {
                    return Err(format!("host is {}", h.condition));
                }
                h.condition = HostCondition::Disconnected;
            }
            Fault::HostHeal { host } => {
                let h = self.hosts.get_mut(host).ok_or("host not in the cluster yet")?;
                if !matches!(h.condition, HostCondition::Isolated | HostCondition::Disconnected) {
                    return Err(format!("host is {}", h.condition));
                }
                h.condition = HostCondition::Up;
                h.last_heartbeat = now;
                // Copies restarted elsewhere hold the disk locks: the stale ones here die.
                for vm in self.vms.values_mut() {
                    let stale = vm.running_on.contains(host)
                        && vm.registered.as_ref() != Some(host)
                        && vm.running_on.len() >= 2;
                    if stale {
                        vm.running_on.retain(|h| h != host);
                    }
                }
            }
            Fault::VmGuestCrash { vm, depth } | Fault::VmHang { vm, depth } => {
                let hang = matches!(fault, Fault::VmHang { .. });
                let v = self.vms.get_mut(vm).ok_or("unknown vm")?;
                if !v.is_running() {
                    return Err("vm is not running".into());
                }
                let host = v.registered.clone().or_else(|| v.running_on.first().cloned());
                v.fault = Some(VmFault {
                    depth: *depth,
                    hang,
                    host,
                    since: now,
                });
                v.guest = if hang {
                    GuestState::Hung
                } else {
                    GuestState::Crashed
                };
                v.guest_since = now;
            }
            Fault::VmPowerOff { vm, user } => {
                let v = self.vms.get(vm).ok_or("unknown vm")?;
                let host = v.registered.clone().ok_or("vm is not registered")?;
                if !v.running_on.contains(&host) {
                    return Err("vm is not running".into());
                }
                let managed = self.hosts.get(&host).is_some_and(|h| h.condition.is_managed());
                if user.is_some() && !managed {
                    return Err(format!("vCenter cannot reach host {host}"));
                }
                let v = self.vms.get_mut(vm).ok_or("unknown vm")?;
                v.running_on.retain(|h| *h != host);
                if let Some(u) = user {
                    v.user_off = Some((u.clone(), now));
                }
                if managed {
                    self.pending_events.push(EventKind::VmPoweredOff {
                        vm: vm.clone(),
                        user: user.clone(),
                    });
                }
            }
            Fault::VmPowerOn { vm, user } => {
                let v = self.vms.get(vm).ok_or("unknown vm")?;
                let host = v.registered.clone().ok_or("vm is not registered")?;
                if v.running_on.contains(&host) {
                    return Err("vm is already on".into());
                }
                if !self.hosts.get(&host).is_some_and(|h| h.condition.is_managed()) {
                    return Err(format!("vCenter cannot reach host {host}"));
                }
                self.check_capacity(&host, vm).map_err(|e| e.to_string())?;
                self.boot(now, vm, &host, Boot::Plain, user.clone(), true);
            }
            Fault::ApiFault {
                method,
                error,
                trigger,
            } => {
                if let ApiTrigger::Probability(p) = trigger {
                    self.api_faults
                        .retain(|(m, _, t)| !(m == method && matches!(t, ApiTrigger::Probability(_))));
                    if *p == 0.0 {
                        return Ok(());
                    }
                }
                if matches!(trigger, ApiTrigger::Count(0)) {
                    return Err("a count of zero fails nothing".into());
                }
                self.api_faults.push((method.clone(), *error, *trigger));
            }
            Fault::ApiLatency { method, extra } => {
                if extra.is_zero() {
                    self.api_latency.remove(method);
                } else {
                    self.api_latency.insert(method.clone(), *extra);
                }
            }
            Fault::ProbeLoss { probability } => self.probe_loss = *probability,
            Fault::ManagerIsolate => self.manager_isolated = true,
            Fault::ManagerHeal => self.manager_isolated = false,
        }
        Ok(())
    }

    // ----- helpers for operations ----------------------------------------------------------------

    fn stop_all_on(&mut self, host: &HostId) {
        for vm in self.vms.values_mut() {
            vm.running_on.retain(|h| h != host);
        }
    }

    fn vm(&self, id: &VmId) -> Result<&VmTruth, HvError> {
        self.vms
            .get(id)
            .filter(|v| v.listed)
            .ok_or_else(|| HvError::not_found("vm", id))
    }

    fn vm_mut(&mut self, id: &VmId) -> Result<&mut VmTruth, HvError> {
        self.vms
            .get_mut(id)
            .filter(|v| v.listed)
            .ok_or_else(|| HvError::not_found("vm", id))
    }

    fn host(&self, id: &HostId) -> Result<&HostTruth, HvError> {
        self.hosts
            .get(id)
            .filter(|h| !h.removed)
            .ok_or_else(|| HvError::not_found("host", id))
    }

    fn host_mut(&mut self, id: &HostId) -> Result<&mut HostTruth, HvError> {
        self.hosts
            .get_mut(id)
            .filter(|h| !h.removed)
            .ok_or_else(|| HvError::not_found("host", id))
    }

    /// The host a VM is registered on, which vCenter must be able to manage.
    fn managed_home(&self, vm: &VmId) -> Result<HostId, HvError> {
        let v = self.vm(vm)?;
        let host = v
            .registered
            .clone()
            .ok_or_else(|| HvError::invalid_state(vm, "not registered on any host"))?;
        let h = self.host(&host)?;
        if !h.condition.is_managed() {
            return Err(unreachable_host(&host, h.condition));
        }
        Ok(host)
    }

    /// A host VMs may be placed on: in the inventory, managed, not in maintenance.
    fn placement_target(&self, host: &HostId) -> Result<(), HvError> {
        let h = self.host(host)?;
        if !h.condition.is_managed() {
            return Err(unreachable_host(host, h.condition));
        }
        if h.maintenance {
            return Err(HvError::invalid_state(host, "host is in maintenance mode"));
        }
        Ok(())
    }

    /// Whether `vm` fits on `host` next to what already runs there (its own copy aside).
    fn check_capacity(&self, host: &HostId, vm: &VmId) -> Result<(), HvError> {
        if !self.cfg.enforce_capacity {
            return Ok(());
        }
        let (Some(h), Some(v)) = (self.hosts.get(host), self.vms.get(vm)) else {
            return Ok(());
        };
        let used = self
            .vms
            .values()
            .filter(|o| o.id != *vm && o.running_on.contains(host))
            .fold(Resources::ZERO, |a, o| a + o.demand);
        let free = h.capacity - used;
        if v.demand.fits_in(&free) {
            Ok(())
        } else {
            Err(HvError::InsufficientResources {
                host: host.to_string(),
                detail: format!(
                    "{vm} needs {} MHz / {} MiB, {} MHz / {} MiB free",
                    v.demand.cpu_mhz, v.demand.mem_mib, free.cpu_mhz, free.mem_mib
                ),
            })
        }
    }

    fn is_on_at_home(&self, vm: &VmId) -> bool {
        self.vms
            .get(vm)
            .is_some_and(|v| v.registered.as_ref().is_some_and(|h| v.running_on.contains(h)))
    }

    /// Starts `vm` on `host` (registering it there), clearing the faults this kind of boot clears.
    fn boot(&mut self, now: Time, vm: &VmId, host: &HostId, how: Boot, user: Option<String>, event: bool) {
        let manager = user.as_deref() == Some(self.cfg.manager_user.as_str());
        let Some(v) = self.vms.get_mut(vm) else { return };
        let mut fault = v.fault.take();
        match how {
            Boot::Plain => {}
            Boot::Revert { good } => {
                if good && fault.as_ref().is_some_and(|f| f.depth == FaultDepth::Corrupt) {
                    fault = None;
                }
            }
            Boot::Restore { disk } => {
                let stays_host_local = fault
                    .as_ref()
                    .is_some_and(|f| f.depth == FaultDepth::HostLocal && f.host.as_ref() == Some(host));
                if !stays_host_local {
                    fault = disk;
                }
            }
        }
        let cleared = match &fault {
            Some(f) => match f.depth {
                FaultDepth::Transient => true,
                FaultDepth::HostLocal => f.host.as_ref() != Some(host),
                FaultDepth::Corrupt | FaultDepth::DiskLost => false,
            },
            None => false,
        };
        if cleared {
            fault = None;
        }
        v.guest = match &fault {
            None => GuestState::Ok,
            Some(f) if f.hang => GuestState::Hung,
            Some(_) => GuestState::Crashed,
        };
        v.fault = fault;
        v.guest_since = now;
        if !v.running_on.contains(host) {
            v.running_on.push(host.clone());
        }
        v.registered = Some(host.clone());
        if let Some((who, off_at)) = v.user_off.take()
            && manager
        {
            self.violations.push(Violation::UserPowerOffOverridden {
                vm: vm.clone(),
                user: who,
                powered_off_at: off_at,
                powered_on_at: now,
            });
        }
        if event {
            self.pending_events
                .push(EventKind::VmPoweredOn { vm: vm.clone(), user });
        }
    }

    fn manager(&self) -> Option<String> {
        Some(self.cfg.manager_user.clone())
    }

    fn note(&mut self, message: String) {
        self.pending_events.push(EventKind::Other { message });
    }

    fn add_snapshot(&mut self, vm: &VmId, name: &str, now: Time) -> SnapshotId {
        let id = SnapshotId::new(format!("snap-{}", self.next_snapshot));
        self.next_snapshot += 1;
        if let Some(v) = self.vms.get_mut(vm) {
            let good = !v.fault.as_ref().is_some_and(|f| f.depth.is_disk());
            v.snapshots.push(SnapshotTruth {
                snapshot: Snapshot {
                    id: id.clone(),
                    vm: vm.clone(),
                    name: name.to_owned(),
                    created: now,
                },
                good,
            });
        }
        id
    }

    fn make_clone(&mut self, src: &VmId, name: &str, host: &HostId, ds: Option<DatastoreId>) -> VmId {
        let mut id = VmId::new(format!("{src}-clone-{:04}", self.next_clone));
        while self.vms.contains_key(&id) {
            self.next_clone += 1;
            id = VmId::new(format!("{src}-clone-{:04}", self.next_clone));
        }
        self.next_clone += 1;
        let Some(s) = self.vms.get(src) else { return id };
        let clone = VmTruth {
            id: id.clone(),
            name: name.to_owned(),
            demand: s.demand,
            priority: RestartPriority::Disabled,
            affinity_group: None,
            anti_affinity_group: None,
            guest_address: None,
            datastore: ds.or_else(|| s.datastore.clone()),
            backup_of: Some(src.clone()),
            registered: Some(host.clone()),
            running_on: Vec::new(),
            guest: GuestState::Ok,
            guest_since: Time::ZERO,
            fault: s.fault.clone().filter(|f| f.depth.is_disk()),
            snapshots: Vec::new(),
            user_off: None,
            listed: true,
            cpu_usage: s.cpu_usage,
        };
        self.vms.insert(id.clone(), clone);
        id
    }

    // ----- hypervisor operations -----------------------------------------------------------------

    pub fn power_on(&mut self, now: Time, vm: &VmId) -> Result<(), HvError> {
        let host = self.managed_home(vm)?;
        if self.is_on_at_home(vm) {
            return Err(HvError::invalid_state(vm, "already powered on"));
        }
        if self.host(&host)?.maintenance {
            return Err(HvError::invalid_state(&host, "host is in maintenance mode"));
        }
        self.check_files(vm, &host)?;
        self.check_capacity(&host, vm)?;
        let user = self.manager();
        self.boot(now, vm, &host, Boot::Plain, user, true);
        Ok(())
    }

    pub fn power_off(&mut self, _now: Time, vm: &VmId) -> Result<(), HvError> {
        let host = self.managed_home(vm)?;
        if !self.is_on_at_home(vm) {
            return Err(HvError::invalid_state(vm, "already powered off"));
        }
        self.vm_mut(vm)?.running_on.retain(|h| *h != host);
        let user = self.manager();
        self.pending_events
            .push(EventKind::VmPoweredOff { vm: vm.clone(), user });
        Ok(())
    }

    pub fn reset(&mut self, now: Time, vm: &VmId) -> Result<(), HvError> {
        let host = self.managed_home(vm)?;
        if !self.is_on_at_home(vm) {
            return Err(HvError::invalid_state(vm, "powered off: cannot reset"));
        }
        let user = self.manager();
        self.boot(now, vm, &host, Boot::Plain, user, false);
        self.note(format!("vm {vm} reset by {}", self.cfg.manager_user));
        Ok(())
    }

    pub fn revert_snapshot(
        &mut self,
        now: Time,
        vm: &VmId,
        snapshot: Option<&SnapshotId>,
    ) -> Result<(), HvError> {
        let host = self.managed_home(vm)?;
        let v = self.vm(vm)?;
        let snap = match snapshot {
            Some(id) => v.snapshots.iter().find(|s| s.snapshot.id == *id),
            None => v.snapshots.iter().max_by_key(|s| s.snapshot.created),
        }
        .cloned()
        .ok_or_else(|| {
            HvError::not_found(
                "snapshot",
                snapshot.map_or_else(|| format!("current of {vm}"), |s| s.to_string()),
            )
        })?;
        let was_on = self.is_on_at_home(vm);
        if !was_on {
            if self.host(&host)?.maintenance {
                return Err(HvError::invalid_state(&host, "host is in maintenance mode"));
            }
            self.check_capacity(&host, vm)?;
        }
        let user = self.manager();
        self.boot(now, vm, &host, Boot::Revert { good: snap.good }, user, !was_on);
        self.note(format!(
            "vm {vm} reverted to snapshot {} ({}) by {}",
            snap.snapshot.id, snap.snapshot.name, self.cfg.manager_user
        ));
        Ok(())
    }

    pub fn create_snapshot(&mut self, now: Time, vm: &VmId, name: &str) -> Result<SnapshotId, HvError> {
        self.managed_home(vm)?;
        Ok(self.add_snapshot(vm, name, now))
    }

    pub fn remove_snapshot(&mut self, _now: Time, vm: &VmId, snapshot: &SnapshotId) -> Result<(), HvError> {
        self.managed_home(vm)?;
        let v = self.vm_mut(vm)?;
        let before = v.snapshots.len();
        v.snapshots.retain(|s| s.snapshot.id != *snapshot);
        if v.snapshots.len() == before {
            return Err(HvError::not_found("snapshot", snapshot));
        }
        Ok(())
    }

    pub fn clone_vm(
        &mut self,
        _now: Time,
        vm: &VmId,
        name: &str,
        host: &HostId,
        datastore: Option<DatastoreId>,
    ) -> Result<VmId, HvError> {
        if self.vm(vm)?.registered.is_some() {
            self.managed_home(vm)?;
        }
        self.placement_target(host)?;
        if let Some(ds) = &datastore {
            let d = self
                .datastores
                .get(ds)
                .ok_or_else(|| HvError::not_found("datastore", ds))?;
            if d.hosts.as_ref().is_some_and(|set| !set.contains(host)) {
                return Err(HvError::invalid_state(ds, format!("not mounted on {host}")));
            }
        }
        let id = self.make_clone(vm, name, host, datastore);
        self.note(format!("vm {vm} cloned as {id} ({name}) on {host}"));
        Ok(id)
    }

    pub fn restore_clone(
        &mut self,
        now: Time,
        vm: &VmId,
        backup: &VmId,
        host: &HostId,
    ) -> Result<(), HvError> {
        let v = self.vm(vm)?;
        let old_home = v.registered.clone();
        if old_home.is_some() {
            self.managed_home(vm)?;
        }
        let b = self.vm(backup)?;
        if b.backup_of.as_ref() != Some(vm) {
            return Err(HvError::invalid_state(backup, format!("not a backup of {vm}")));
        }
        if b.is_running() {
            return Err(HvError::invalid_state(backup, "the backup clone is powered on"));
        }
        let disk = b.fault.clone().map(|f| VmFault { since: now, ..f });
        self.placement_target(host)?;
        self.check_capacity(host, vm)?;
        let user = self.manager();
        if self.is_on_at_home(vm)
            && let Some(h) = &old_home
        {
            self.vm_mut(vm)?.running_on.retain(|x| x != h);
            self.pending_events.push(EventKind::VmPoweredOff {
                vm: vm.clone(),
                user: user.clone(),
            });
        }
        self.boot(now, vm, host, Boot::Restore { disk }, user, true);
        self.note(format!("vm {vm} restored from {backup} on {host}"));
        Ok(())
    }

    pub fn migrate(&mut self, now: Time, vm: &VmId, to: &HostId, live: bool) -> Result<(), HvError> {
        let from = self.managed_home(vm)?;
        self.placement_target(to)?;
        if from == *to {
            return Err(HvError::invalid_state(vm, format!("already on {to}")));
        }
        self.check_datastore(vm, to)?;
        self.check_capacity(to, vm)?;
        let was_on = self.is_on_at_home(vm);
        let user = self.manager();
        if live {
            let v = self.vm(vm)?;
            if !was_on || v.guest != GuestState::Ok {
                return Err(HvError::invalid_state(
                    vm,
                    "live migration needs a powered-on VM with a healthy guest",
                ));
            }
            let v = self.vm_mut(vm)?;
            v.running_on.retain(|h| *h != from);
            v.running_on.push(to.clone());
            v.registered = Some(to.clone());
            self.note(format!("vm {vm} migrated live from {from} to {to}"));
        } else {
            if was_on {
                self.vm_mut(vm)?.running_on.retain(|h| *h != from);
                self.pending_events.push(EventKind::VmPoweredOff {
                    vm: vm.clone(),
                    user: user.clone(),
                });
            }
            self.boot(now, vm, to, Boot::Plain, user, true);
            self.note(format!("vm {vm} migrated cold from {from} to {to}"));
        }
        Ok(())
    }

    /// Registers `vm` on `to` and powers it on there. A VM that still runs on a host vCenter
    /// cannot reach holds its files locked: the power-on fails with `Locked` (the lock is the last
    /// guard against split brain; the manager must not count on it).
    pub fn failover(&mut self, now: Time, vm: &VmId, to: &HostId) -> Result<(), HvError> {
        let v = self.vm(vm)?;
        if let Some(home) = &v.registered
            && let Some(h) = self.hosts.get(home).filter(|h| !h.removed)
            && h.condition.is_managed()
            && v.running_on.contains(home)
        {
            return Err(HvError::invalid_state(vm, format!("powered on on {home}")));
        }
        self.placement_target(to)?;
        self.check_files(vm, to)?;
        self.check_capacity(to, vm)?;
        let from = v.registered.clone();
        let user = self.manager();
        self.boot(now, vm, to, Boot::Plain, user, true);
        let from = from.map_or_else(|| "nowhere".to_owned(), |h| h.to_string());
        self.note(format!("vm {vm} failed over from {from} to {to}"));
        Ok(())
    }

    pub fn register_vm(&mut self, _now: Time, vm: &VmId, host: &HostId) -> Result<(), HvError> {
        let v = self.vm(vm)?;
        if let Some(home) = &v.registered
            && self.host(home).is_ok_and(|h| h.condition.is_managed())
        {
            return Err(HvError::invalid_state(
                vm,
                format!("already registered on {home}"),
            ));
        }
        let h = self.host(host)?;
        if !h.condition.is_managed() {
            return Err(unreachable_host(host, h.condition));
        }
        self.vm_mut(vm)?.registered = Some(host.clone());
        self.note(format!("vm {vm} registered on {host}"));
        Ok(())
    }

    /// Deletes one of the manager's backup clones (never anything else, never a running one).
    pub fn delete_backup(&mut self, _now: Time, vm: &VmId) -> Result<(), HvError> {
        let v = self.vm(vm)?;
        if v.backup_of.is_none() {
            return Err(HvError::invalid_state(vm, "not a backup clone: never deleted"));
        }
        if !v.running_on.is_empty() {
            return Err(HvError::invalid_state(vm, "the backup clone is powered on"));
        }
        if let Some(host) = v.registered.clone() {
            self.managed_home(vm)?;
            self.note(format!("backup clone {vm} deleted from {host}"));
        }
        self.vms.remove(vm);
        Ok(())
    }

    pub fn unregister_vm(&mut self, _now: Time, vm: &VmId) -> Result<(), HvError> {
        let host = self.managed_home(vm)?;
        if self.is_on_at_home(vm) {
            return Err(HvError::invalid_state(vm, "powered on: cannot unregister"));
        }
        self.vm_mut(vm)?.registered = None;
        self.note(format!("vm {vm} unregistered from {host}"));
        Ok(())
    }

    pub fn reconnect_host(&mut self, now: Time, host: &HostId) -> Result<(), HvError> {
        let h = self.host_mut(host)?;
        match h.condition {
            HostCondition::Up => Ok(()),
            HostCondition::Disconnected => {
                h.condition = HostCondition::Up;
                h.last_heartbeat = now;
                Ok(())
            }
            c => Err(unreachable_host(host, c)),
        }
    }

    pub fn revive_host(&mut self, now: Time, host: &HostId) -> Result<(), HvError> {
        let h = self.host_mut(host)?;
        if h.condition == (HostCondition::Crashed { permanent: true }) {
            return Err(HvError::Api {
                fault: "HostReviveFailed".into(),
                message: format!("host {host} did not come back after a power cycle"),
                retryable: false,
            });
        }
        h.condition = HostCondition::Up;
        h.last_heartbeat = now;
        self.stop_all_on(host);
        self.note(format!("host {host} power-cycled out of band"));
        Ok(())
    }

    pub fn fence_host(&mut self, _now: Time, host: &HostId) -> Result<(), HvError> {
        let h = self.host_mut(host)?;
        if h.condition != (HostCondition::Crashed { permanent: true }) {
            h.condition = HostCondition::Off;
        }
        self.stop_all_on(host);
        self.note(format!("host {host} fenced (powered off out of band)"));
        Ok(())
    }

    pub fn remove_host(&mut self, now: Time, host: &HostId) -> Result<(), HvError> {
        let h = self.host_mut(host)?;
        if h.condition.is_managed() && !h.maintenance {
            return Err(HvError::invalid_state(
                host,
                "connected and not in maintenance mode: cannot remove",
            ));
        }
        h.removed = true;
        let mut lost = Vec::new();
        for vm in self.vms.values_mut() {
            if vm.registered.as_ref() == Some(host) && vm.listed {
                vm.listed = false;
                if vm.backup_of.is_none() {
                    lost.push(vm.id.clone());
                }
            }
        }
        for vm in lost {
            self.violations.push(Violation::VmLost {
                vm,
                host: host.clone(),
                at: now,
            });
        }
        self.note(format!("host {host} removed"));
        Ok(())
    }

    pub fn add_host(&mut self, now: Time, spare: &str) -> Result<HostId, HvError> {
        let spec = self
            .spares
            .get(spare)
            .ok_or_else(|| HvError::not_found("spare", spare))?;
        let id = HostId::new(if spec.id.is_empty() {
            spare
        } else {
            spec.id.as_str()
        });
        if self.hosts.get(&id).is_some_and(|h| !h.removed) {
            return Err(HvError::invalid_state(
                &id,
                "a host with this id is already in the cluster",
            ));
        }
        let mut truth = host_truth(id.as_str(), spec, now);
        truth.spare = true;
        self.spares.remove(spare);
        self.hosts.insert(id.clone(), truth);
        self.note(format!("host {id} added from spare {spare}"));
        Ok(id)
    }

    pub fn set_maintenance(&mut self, _now: Time, host: &HostId, on: bool) -> Result<(), HvError> {
        let h = self.host_mut(host)?;
        if !h.condition.is_managed() {
            return Err(unreachable_host(host, h.condition));
        }
        h.maintenance = on;
        Ok(())
    }
}

fn host_truth(id: &str, h: &HostSpec, now: Time) -> HostTruth {
    HostTruth {
        id: HostId::new(id),
        capacity: h.capacity(),
        failure_domain: h.failure_domain.clone(),
        mgmt_address: h.mgmt_address.clone(),
        condition: HostCondition::Up,
        removed: false,
        maintenance: false,
        last_heartbeat: now,
        spare: false,
        mounted: BTreeSet::new(),
    }
}

/// The deltas that turn `old` into `new`: upserts (hosts, datastores, VMs, snapshot lists), then
/// VM removals, then host removals.
fn diff(old: &Inventory, new: &Inventory) -> Vec<InventoryDelta> {
    let mut out = Vec::new();
    for (id, h) in &new.hosts {
        if old.hosts.get(id) != Some(h) {
            out.push(InventoryDelta::HostUpsert(h.clone()));
        }
    }
    for (id, d) in &new.datastores {
        if old.datastores.get(id) != Some(d) {
            out.push(InventoryDelta::DatastoreUpsert(d.clone()));
        }
    }
    for (id, v) in &new.vms {
        if old.vms.get(id) != Some(v) {
            out.push(InventoryDelta::VmUpsert(v.clone()));
        }
    }
    for id in new.vms.keys() {
        let (o, n) = (old.snapshots.get(id), new.snapshots.get(id));
        if o != n {
            out.push(InventoryDelta::Snapshots {
                vm: id.clone(),
                snapshots: n.cloned().unwrap_or_default(),
            });
        }
    }
    for id in old.vms.keys().filter(|id| !new.vms.contains_key(*id)) {
        out.push(InventoryDelta::VmRemoved(id.clone()));
    }
    for id in old.hosts.keys().filter(|id| !new.hosts.contains_key(*id)) {
        out.push(InventoryDelta::HostRemoved(id.clone()));
    }
    out
}
