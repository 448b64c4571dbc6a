//! The simulator handle: the async face of the world (the `Hypervisor`, `InventorySource`,
//! `Prober` and `Clock` implementations), fault injection and truth queries.

use crate::fault::{ApiErrorKind, Fault, FaultScript};
use crate::spec::{ClusterSpec, SpecError};
use crate::truth::{FaultRecord, HostTruth, OpRecord, Outage, Violation, VmTruth};
use crate::world::{InjectError, World};
use am_core::{
    Action, ActionOutcome, Changes, Clock, HostId, HvError, Hypervisor, Inventory, InventorySource,
    ProbeResult, ProbeTarget, Prober, Time, VmId,
};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// The simulator's clock: tokio's (virtual when paused), counted from the simulator's creation.
#[derive(Copy, Clone, Debug)]
pub struct SimClock {
    start: Instant,
}

impl SimClock {
    /// A clock whose zero is now.
    pub fn new() -> Self {
        SimClock {
            start: Instant::now(),
        }
    }

    /// The tokio instant of simulator time `t`.
    pub fn instant_at(&self, t: Time) -> Instant {
        self.start + Duration::from_millis(t.as_millis())
    }

    /// The tokio instant `d` after the start.
    pub fn instant_after(&self, d: Duration) -> Instant {
        self.start + d
    }
}

impl Default for SimClock {
    fn default() -> Self {
        SimClock::new()
    }
}

impl Clock for SimClock {
    fn now(&self) -> Time {
        Time(u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX))
    }
}

struct Shared {
    world: Mutex<World>,
    /// The latest version of the change log, for `changes()` waiters.
    version: watch::Sender<u64>,
    clock: SimClock,
}

/// A simulated cluster. Cheap to clone (a handle); implements [`Hypervisor`] and
/// [`InventorySource`]; [`Sim::prober`] gives its [`Prober`] and [`Sim::clock`] its [`Clock`].
///
/// Create it inside the tokio runtime that drives it (time zero is its creation).
#[derive(Clone)]
pub struct Sim {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("now", &self.now())
            .finish_non_exhaustive()
    }
}

/// Marks an object busy while an operation on it is in flight; clears it when dropped (also when
/// the operation's future is dropped).
struct BusyGuard {
    shared: Arc<Shared>,
    key: String,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        lock(&self.shared.world).clear_busy(&self.key);
    }
}

fn lock(m: &Mutex<World>) -> MutexGuard<'_, World> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn vcenter_unreachable() -> HvError {
    HvError::vcenter_unreachable("the manager is isolated from the network")
}

impl Sim {
    /// A simulated cluster as `spec` describes it, at time zero.
    pub fn new(spec: &ClusterSpec) -> Result<Sim, SpecError> {
        let world = World::new(spec)?;
        let (version, _) = watch::channel(world.version());
        Ok(Sim {
            shared: Arc::new(Shared {
                world: Mutex::new(world),
                version,
                clock: SimClock::new(),
            }),
        })
    }

    /// Runs `f` on the world brought up to now, then publishes what changed.
    fn with<R>(&self, f: impl FnOnce(&mut World, Time) -> R) -> R {
        let now = self.now();
        let mut w = lock(&self.shared.world);
        w.advance(now);
        let r = f(&mut w, now);
        w.publish(now);
        let v = w.version();
        drop(w);
        self.shared.version.send_if_modified(|old| {
            let changed = *old != v;
            *old = v;
            changed
        });
        r
    }

    /// The clock (time zero is the simulator's creation).
    pub fn clock(&self) -> SimClock {
        self.shared.clock
    }

    /// Now, in simulator time.
    pub fn now(&self) -> Time {
        self.shared.clock.now()
    }

    /// The prober: the truth seen through the network.
    pub fn prober(&self) -> SimProber {
        SimProber { sim: self.clone() }
    }

    /// The hosts' BMCs, when the cluster has them (`ClusterSpec::bmc`).
    pub fn power_source(&self) -> Option<SimPower> {
        self.with(|w, _| w.cfg.bmc)
            .then(|| SimPower { sim: self.clone() })
    }

    /// The user name of operations done through the [`Hypervisor`] trait.
    pub fn manager_user(&self) -> String {
        self.with(|w, _| w.cfg.manager_user.clone())
    }

    /// Injects a fault now. Unknown ids are an error; a fault that does not apply (a crash of a VM
    /// that is off) is recorded as not applied in [`Sim::fault_history`].
    pub fn inject(&self, fault: Fault) -> Result<(), InjectError> {
        self.with(|w, now| w.inject(now, fault))
    }

    /// Checks that every fault of a script names known hosts (or spares) and VMs.
    pub fn check_script(&self, script: &FaultScript) -> Result<(), InjectError> {
        self.with(|w, _| script.faults.iter().try_for_each(|f| w.check_fault(&f.fault)))
    }

    /// A future that sleeps until each fault's time and injects it; spawn it. It returns the
    /// faults that could not be injected.
    pub fn run_script(&self, script: FaultScript) -> impl Future<Output = Vec<InjectError>> + Send + 'static {
        let sim = self.clone();
        async move {
            let mut errors = Vec::new();
            for f in script.faults {
                tokio::time::sleep_until(sim.shared.clock.instant_after(f.at)).await;
                if let Err(e) = sim.inject(f.fault) {
                    errors.push(e);
                }
            }
            errors
        }
    }

    /// Every invariant violation so far, in order.
    pub fn violations(&self) -> Vec<Violation> {
        self.with(|w, _| w.violations().to_vec())
    }

    /// Every time a protected VM stopped running healthy (powered-off, crashed or hung guest, dead
    /// host), and when it ran healthy again: the true downtime, for reports. Protected VMs
    /// already down at the start count from time zero.
    pub fn outages(&self) -> Vec<Outage> {
        self.with(|w, _| w.outages().to_vec())
    }

    /// Every injected fault so far, with its time.
    pub fn fault_history(&self) -> Vec<FaultRecord> {
        self.with(|w, _| w.history().to_vec())
    }

    /// Every hypervisor call so far, with its times and result.
    pub fn op_history(&self) -> Vec<OpRecord> {
        self.with(|w, _| w.ops().to_vec())
    }

    /// The truth about a VM (including VMs removed from the inventory).
    pub fn vm_truth(&self, vm: &VmId) -> Option<VmTruth> {
        self.with(|w, _| w.vm_truth(vm).cloned())
    }

    /// The truth about a host (including removed ones).
    pub fn host_truth(&self, host: &HostId) -> Option<HostTruth> {
        self.with(|w, _| w.host_truth(host).cloned())
    }

    /// Whether `vm` runs with a healthy guest.
    pub fn vm_healthy(&self, vm: &VmId) -> bool {
        self.with(|w, _| w.vm_truth(vm).is_some_and(|v| v.is_healthy()))
    }

    /// Protected VMs (in the inventory, priority not disabled, not backups) that run nowhere,
    /// except those a user powered off and nobody powered on since.
    pub fn protected_not_running(&self) -> Vec<VmId> {
        self.with(|w, _| {
            w.vm_truths()
                .filter(|v| v.listed && v.is_protected() && !v.is_running() && v.user_off.is_none())
                .map(|v| v.id.clone())
                .collect()
        })
    }

    /// Protected VMs that do not run with a healthy guest (user power-offs aside, as in
    /// [`Sim::protected_not_running`]).
    pub fn protected_unhealthy(&self) -> Vec<VmId> {
        self.with(|w, _| {
            w.vm_truths()
                .filter(|v| v.listed && v.is_protected() && !v.is_healthy() && v.user_off.is_none())
                .map(|v| v.id.clone())
                .collect()
        })
    }

    /// The VMs really running on each host (every host, removed ones included, even if empty).
    pub fn running_by_host(&self) -> BTreeMap<HostId, Vec<VmId>> {
        self.with(|w, _| {
            let mut map: BTreeMap<HostId, Vec<VmId>> =
                w.host_truths().map(|h| (h.id.clone(), Vec::new())).collect();
            for vm in w.vm_truths() {
                for h in &vm.running_on {
                    map.entry(h.clone()).or_default().push(vm.id.clone());
                }
            }
            map
        })
    }

    /// The VMs really running on `host`.
    pub fn running_on(&self, host: &HostId) -> Vec<VmId> {
        self.running_by_host().remove(host).unwrap_or_default()
    }

    /// What vCenter shows now (without the manager-isolation check).
    pub fn view(&self) -> Inventory {
        self.with(|w, _| w.view().clone())
    }

    /// The current change-log version.
    pub fn version(&self) -> String {
        self.with(|w, _| w.version().to_string())
    }

    /// One hypervisor call: busy check, latency, manager isolation, injected faults, then `f`.
    async fn call(
        &self,
        action: &Action,
        busy: Option<String>,
        f: impl FnOnce(&mut World, Time) -> Result<ActionOutcome, HvError>,
    ) -> Result<ActionOutcome, HvError> {
        let op = action.name();
        let started = self.now();
        let subject = action
            .vm()
            .map(|v| v.to_string())
            .or_else(|| action.host().map(|h| h.to_string()))
            .unwrap_or_default();
        let (isolated, latency, busy_ok) = self.with(|w, _| {
            let ok = busy.as_ref().is_none_or(|k| w.set_busy(k));
            (w.manager_isolated(), w.latency(op), ok)
        });
        let record = |sim: &Sim, result: &Result<ActionOutcome, HvError>| {
            let rec = OpRecord {
                started,
                finished: sim.now(),
                action: action.clone(),
                result: result.clone(),
            };
            sim.with(|w, _| w.record_op(rec));
        };
        if !busy_ok {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let r = Err(HvError::Busy {
                id: subject,
                detail: "another operation on it is in progress".into(),
            });
            record(self, &r);
            return r;
        }
        let guard = busy.map(|key| BusyGuard {
            shared: self.shared.clone(),
            key,
        });
        if isolated {
            drop(guard);
            tokio::time::sleep(self.with(|w, _| w.cfg.unreachable_delay)).await;
            let r = Err(vcenter_unreachable());
            record(self, &r);
            return r;
        }
        tokio::time::sleep(latency).await;
        drop(guard);
        let r = self.with(|w, now| {
            if w.manager_isolated() {
                return Err(vcenter_unreachable());
            }
            let fault = w.take_api_fault(op);
            w.mark_dirty();
            match fault {
                None => f(w, now),
                Some(ApiErrorKind::LostReply) => {
                    f(w, now).and(Err(ApiErrorKind::LostReply.to_error(op, &subject)))
                }
                Some(kind) => Err(kind.to_error(op, &subject)),
            }
        });
        record(self, &r);
        r
    }

    /// An inventory call's preamble: isolation and injected faults make it fail after a delay.
    async fn inventory_gate(&self, op: &str, max_wait: Duration) -> Result<(), HvError> {
        let (err, delay) = self.with(|w, _| {
            let err = if w.manager_isolated() {
                Some(vcenter_unreachable())
            } else {
                w.take_api_fault(op).map(|k| k.to_error(op, "inventory"))
            };
            (err, w.cfg.unreachable_delay.min(max_wait))
        });
        match err {
            Some(e) => {
                tokio::time::sleep(delay).await;
                Err(e)
            }
            None => Ok(()),
        }
    }
}

/// What a call holds busy while it runs: its VM, else its host, else the spare it adds. Cloning
/// reads the source: it does not lock it against other operations.
fn busy_key(action: &Action) -> Option<String> {
    match action {
        Action::Clone { .. } => None,
        Action::AddHost { spare } => Some(format!("spare:{spare}")),
        a => match (a.vm(), a.host()) {
            (Some(vm), _) => Some(format!("vm:{vm}")),
            (None, Some(h)) => Some(format!("host:{h}")),
            (None, None) => None,
        },
    }
}

fn done(r: Result<(), HvError>) -> Result<ActionOutcome, HvError> {
    r.map(|()| ActionOutcome::Done)
}

/// Carries `action` out on the world.
fn apply(w: &mut World, now: Time, action: &Action) -> Result<ActionOutcome, HvError> {
    match action {
        Action::PowerOn { vm } => done(w.power_on(now, vm)),
        Action::PowerOff { vm } => done(w.power_off(now, vm)),
        Action::Reset { vm } => done(w.reset(now, vm)),
        Action::MigrateLive { vm, to } => done(w.migrate(now, vm, to, true)),
        Action::MigrateCold { vm, to } => done(w.migrate(now, vm, to, false)),
        Action::RevertSnapshot { vm, snapshot } => done(w.revert_snapshot(now, vm, snapshot.as_ref())),
        Action::CreateSnapshot { vm, name } => w
            .create_snapshot(now, vm, name)
            .map(ActionOutcome::SnapshotCreated),
        Action::RemoveSnapshot { vm, snapshot } => done(w.remove_snapshot(now, vm, snapshot)),
        Action::Clone {
            vm,
            name,
            host,
            datastore,
        } => w
            .clone_vm(now, vm, name, host, datastore.clone())
            .map(ActionOutcome::VmCreated),
        Action::RestoreClone { vm, backup, host } => done(w.restore_clone(now, vm, backup, host)),
        Action::Register { vm, host } => done(w.register_vm(now, vm, host)),
        Action::Unregister { vm } => done(w.unregister_vm(now, vm)),
        Action::CheckLocks { vm } => done(w.check_locks(vm)),
        Action::DeleteBackup { vm } => done(w.delete_backup(now, vm)),
        Action::Failover { vm, to } => done(w.failover(now, vm, to)),
        Action::ReconnectHost { host } => done(w.reconnect_host(now, host)),
        Action::ReviveHost { host } => done(w.revive_host(now, host)),
        Action::FenceHost { host } => done(w.fence_host(now, host)),
        Action::RemoveHost { host } => done(w.remove_host(now, host)),
        Action::AddHost { spare } => w.add_host(now, spare).map(ActionOutcome::HostAdded),
        Action::MountDatastore { host, datastore } => done(w.mount_datastore(now, host, datastore)),
        Action::Relocate { vm, host, datastore } => {
            done(w.relocate(now, vm, host.as_ref(), datastore.as_ref()))
        }
        Action::EnterMaintenance { host } => done(w.set_maintenance(now, host, true)),
        Action::ExitMaintenance { host } => done(w.set_maintenance(now, host, false)),
    }
}

#[async_trait]
impl Hypervisor for Sim {
    async fn execute(&self, action: &Action) -> Result<ActionOutcome, HvError> {
        self.call(action, busy_key(action), |w, now| apply(w, now, action))
            .await
    }
}

#[async_trait]
impl InventorySource for Sim {
    async fn snapshot(&self) -> Result<(Inventory, String), HvError> {
        let latency = self.with(|w, _| w.latency("snapshot"));
        self.inventory_gate("snapshot", Duration::MAX).await?;
        tokio::time::sleep(latency).await;
        self.with(|w, _| {
            if w.manager_isolated() {
                return Err(vcenter_unreachable());
            }
            Ok((w.view().clone(), w.version().to_string()))
        })
    }

    async fn changes(&self, since: &str, max_wait: Duration) -> Result<Changes, HvError> {
        self.inventory_gate("changes", max_wait).await?;
        let deadline = Instant::now()
            .checked_add(max_wait)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(10 * 365 * 86_400));
        loop {
            let mut rx = self.shared.version.subscribe();
            let (found, next_timer) = self.with(|w, now| {
                if w.manager_isolated() {
                    return (Some(Err(vcenter_unreachable())), now);
                }
                (w.changes_since(since).map(Ok), w.next_timer_after(now))
            });
            if let Some(result) = found {
                return result;
            }
            // The subscription predates the check, so a change published since then wakes us.
            if Instant::now() >= deadline {
                return Ok(Changes {
                    version: since.to_owned(),
                    deltas: Vec::new(),
                    events: Vec::new(),
                });
            }
            let wake = deadline.min(self.shared.clock.instant_at(next_timer));
            let _ = tokio::time::timeout_at(wake, rx.changed()).await;
        }
    }
}

/// The simulator's [`Prober`]: hosts answer when up or only disconnected, guests when they run
/// healthy on such a host, isolation addresses when the manager is not isolated; each probe may be
/// lost. A reply takes 1 ms; no reply takes the whole timeout.
#[derive(Clone, Debug)]
pub struct SimProber {
    sim: Sim,
}

/// How long a simulated probe reply takes.
pub const PROBE_RTT: Duration = Duration::from_millis(1);

#[async_trait]
impl Prober for SimProber {
    async fn probe(&self, target: &ProbeTarget, timeout: Duration) -> ProbeResult {
        let answers = self.sim.with(|w, _| w.probe(target));
        if answers && PROBE_RTT <= timeout {
            tokio::time::sleep(PROBE_RTT).await;
            ProbeResult::Reply { rtt: PROBE_RTT }
        } else {
            tokio::time::sleep(timeout).await;
            ProbeResult::NoReply
        }
    }
}

/// The simulator's BMCs ([`PowerSource`]): a host reads `Off` once it lost power or was fenced,
/// `On` otherwise (up, crashed, cut off); a removed host is not found; nothing answers while the
/// manager is isolated. A reading takes 50 ms.
#[derive(Clone, Debug)]
pub struct SimPower {
    sim: Sim,
}

/// How long a simulated BMC takes to answer.
pub const BMC_RTT: Duration = Duration::from_millis(50);

#[async_trait]
impl am_core::PowerSource for SimPower {
    fn hosts(&self) -> Vec<String> {
        self.sim.with(|w, _| w.power_hosts())
    }

    async fn power(&self, host: &str) -> Result<am_core::PowerReading, HvError> {
        tokio::time::sleep(BMC_RTT).await;
        self.sim.with(|w, _| w.bmc_power(host))
    }
}
