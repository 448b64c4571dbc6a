//! The daemon loop: sources -> supervisor -> journal -> executor, results back as observations.
//!
//! Everything that happens funnels into one channel of [`Observation`]s: inventory changes and
//! events (from an [`InventorySource`]), probe verdicts (from the `probe` monitor driving a
//! [`Prober`]), action outcomes (from the executor) and ticks. The loop feeds each to the pure
//! [`Supervisor`] with the time read from the [`Clock`], journals the step's audit lines and
//! intents, and only then hands commands to the executor and alarm sinks.
//!
//! Time is tokio's: the simulator runs the same loop with a paused clock (virtual time).

use crate::alarm::AlarmSink;
use crate::journal::{Journal, JournalError, Record};
use am_core::{
    Clock, Command, HostId, Hypervisor, InventorySource, LogEntry, Observation, Output, PowerReading,
    PowerSource, ProbeTarget, Prober, Time,
};
use executor::{Executor, ExecutorConfig, ExecutorHandle};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use supervisor::Supervisor;
use tokio::sync::{mpsc, watch};

/// Why the engine stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The journal could not record a decision: nothing is acted on unjournaled, so the engine stops.
    #[error("cannot journal a decision; stopping rather than act unrecorded: {0}")]
    Journal(#[from] JournalError),
}

/// Engine settings.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Supervisor policies.
    pub supervisor: supervisor::Config,
    /// Executor bounds.
    pub executor: ExecutorConfig,
    /// Probe settings.
    pub probe: probe::Settings,
    /// How often the supervisor gets a tick (timeouts).
    pub tick: Duration,
    /// How long one `changes` call may wait.
    pub changes_wait: Duration,
    /// Addresses that tell whether the manager itself is isolated (e.g. the gateway).
    pub isolation_addresses: Vec<String>,
    /// How often the inventory source is asked whether it answers (`None`: never; a source
    /// that fails its calls is noticed by the feed anyway).
    pub health_interval: Option<Duration>,
    /// How long that question may take.
    pub health_timeout: Duration,
    /// How often every host's out-of-band power is read (a host vCenter loses is read at once).
    pub power_interval: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            supervisor: supervisor::Config::default(),
            // Restarts after a host failure land on few hosts at once: allow many per host (vSphere
            // HA restarts up to 32 VMs per host concurrently).
            executor: ExecutorConfig::default().with_max_in_flight(64).with_per_host(16),
            probe: probe::Settings::default(),
            tick: Duration::from_millis(500),
            changes_wait: Duration::from_secs(1),
            isolation_addresses: Vec::new(),
            health_interval: None,
            health_timeout: Duration::from_secs(3),
            power_interval: Duration::from_secs(2),
        }
    }
}

/// The engine's side effects, each behind its seam.
pub struct Backends {
    /// Where actions go.
    pub hypervisor: Arc<dyn Hypervisor>,
    /// Where inventory and events come from.
    pub source: Arc<dyn InventorySource>,
    /// How targets are probed.
    pub prober: Arc<dyn Prober>,
    /// Where hosts' power is read out of band (BMCs, an admin vCenter), if anywhere.
    pub power: Option<Arc<dyn PowerSource>>,
    /// What time it is.
    pub clock: Arc<dyn Clock>,
    /// Where decisions are recorded first.
    pub journal: Box<dyn Journal>,
    /// Where alarms go.
    pub sinks: Vec<Box<dyn AlarmSink>>,
}

/// Called after every supervisor step that produced something (the live view, the HTTP status).
pub type Observer = Box<dyn FnMut(Time, &Output, &Supervisor) + Send>;

/// The running daemon loop.
pub struct Engine {
    sup: Supervisor,
    clock: Arc<dyn Clock>,
    journal: Box<dyn Journal>,
    sinks: Vec<Box<dyn AlarmSink>>,
    exec: ExecutorHandle,
    rx: mpsc::UnboundedReceiver<Observation>,
    targets: watch::Sender<BTreeSet<ProbeTarget>>,
    /// Host names to ids, for the power reader.
    host_names: watch::Sender<BTreeMap<String, HostId>>,
    /// Asks the power reader to read one host now.
    power_kick: mpsc::UnboundedSender<HostId>,
    tick: Duration,
    observer: Option<Observer>,
    /// Operators' requests (API, CLI, a scenario's script), and where they are sent from.
    operator_rx: mpsc::UnboundedReceiver<am_core::OperatorRequest>,
    operator_tx: mpsc::UnboundedSender<am_core::OperatorRequest>,
}

impl Engine {
    /// Starts the feeders (inventory, probes, executor) on the current tokio runtime.
    pub fn start(mut cfg: EngineConfig, backends: Backends) -> Engine {
        // An unreachable host's guests count as alive only after their own detectors had time to
        // notice a crash: never judge them sooner than the guest detection bound.
        let guest_bound = cfg.probe.guests.detection_bound(cfg.probe.jitter) + Duration::from_millis(500);
        if cfg.supervisor.guest_evidence_after < guest_bound {
            tracing::info!(
                from = ?cfg.supervisor.guest_evidence_after,
                to = ?guest_bound,
                "raising guest_evidence_after to the guest detection bound"
            );
            cfg.supervisor.guest_evidence_after = guest_bound;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let (exec, mut results) = Executor::new(backends.hypervisor.clone(), cfg.executor.clone());
        let fwd = tx.clone();
        tokio::spawn(async move {
            while let Some(obs) = results.recv().await {
                if fwd.send(obs).is_err() {
                    break;
                }
            }
        });
        tokio::spawn(feed_inventory(
            backends.source.clone(),
            tx.clone(),
            cfg.changes_wait,
        ));
        if let Some(every) = cfg.health_interval {
            tokio::spawn(watch_health(
                backends.source.clone(),
                tx.clone(),
                every,
                cfg.health_timeout,
            ));
        }
        let initial: BTreeSet<ProbeTarget> = cfg
            .isolation_addresses
            .iter()
            .map(|a| ProbeTarget::Isolation { address: a.clone() })
            .collect();
        let (targets, targets_rx) = watch::channel(initial);
        tokio::spawn(probe::drive(
            backends.prober.clone(),
            cfg.probe.clone(),
            targets_rx,
            tx.clone(),
            backends.clock.clone(),
        ));
        let (host_names, names_rx) = watch::channel(BTreeMap::new());
        let (power_kick, kick_rx) = mpsc::unbounded_channel();
        if let Some(power) = backends.power.clone() {
            tokio::spawn(watch_power(
                power,
                tx.clone(),
                names_rx,
                kick_rx,
                cfg.power_interval,
            ));
        }
        let (operator_tx, operator_rx) = mpsc::unbounded_channel();
        Engine {
            operator_rx,
            operator_tx,
            sup: Supervisor::new(cfg.supervisor),
            clock: backends.clock,
            journal: backends.journal,
            sinks: backends.sinks,
            exec,
            rx,
            targets,
            host_names,
            power_kick,
            tick: cfg.tick,
            observer: None,
        }
    }

    /// Before the first inventory after a restart: hands the supervisor what the journal knows
    /// (action ids continue, user power-offs and restart history carry over, VMs with unfinished
    /// actions are reconciled before anything is done to them), and journals its notes.
    pub fn restore(&mut self, restore: supervisor::Restore) -> Result<(), EngineError> {
        let now = self.clock.now();
        let out = self.sup.restore(now, restore);
        let records: Vec<Record> = out.log.iter().cloned().map(Record::Decision).collect();
        self.journal.append(&records)?;
        for line in &out.log {
            log_line(line);
        }
        Ok(())
    }

    /// Sets the function called after each productive step.
    pub fn set_observer(&mut self, observer: Observer) {
        self.observer = Some(observer);
    }

    /// Where operators' requests go in (evacuate, maintenance): each becomes an
    /// `Observation::Operator` of the loop.
    pub fn operator(&self) -> mpsc::UnboundedSender<am_core::OperatorRequest> {
        self.operator_tx.clone()
    }

    /// The supervisor (for reports).
    pub fn supervisor(&self) -> &Supervisor {
        &self.sup
    }

    /// The executor (for statistics).
    pub fn executor(&self) -> &ExecutorHandle {
        &self.exec
    }

    /// Runs until `stop` completes (or the feeders all end).
    pub async fn run_until(
        &mut self,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), EngineError> {
        let mut tick = tokio::time::interval(self.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            // Biased: branches ready at the same instant are taken in this order, not at random,
            // so that a run (of virtual time) is the same every time, up to its last instant.
            let obs = tokio::select! {
                biased;
                _ = &mut stop => return Ok(()),
                _ = tick.tick() => Observation::Tick,
                obs = self.rx.recv() => match obs {
                    Some(obs) => obs,
                    None => return Ok(()),
                },
                Some(req) = self.operator_rx.recv() => Observation::Operator(req),
            };
            self.step(obs)?;
        }
    }

    /// Feeds one observation through the supervisor and carries out its output.
    pub fn step(&mut self, obs: Observation) -> Result<(), EngineError> {
        // Wall time, also under a paused (virtual) clock: what the step costs.
        let started = std::time::Instant::now();
        let now = self.clock.now();
        let inventory_changed = targets_may_change(self.sup.inventory(), &obs);
        // A host vCenter loses has its power read at once: an `Off` decides in one round trip.
        match &obs {
            Observation::Event(am_core::ClusterEvent {
                kind: am_core::EventKind::HostConnectionLost { host },
                ..
            }) => {
                let _ = self.power_kick.send(host.clone());
            }
            Observation::Delta(am_core::InventoryDelta::HostUpsert(h))
                if h.connection != am_core::ConnectionState::Connected =>
            {
                let _ = self.power_kick.send(h.id.clone());
            }
            _ => {}
        }
        if let Observation::ActionDone { id, result } = &obs {
            // The outcome is recorded as it arrives, before anything is decided on it.
            let error = result.as_ref().err().cloned();
            self.journal.append(&[Record::Outcome { id: *id, error }])?;
        }
        let out = self.sup.step(now, obs);
        if inventory_changed {
            self.refresh_targets();
        }
        if out.commands.is_empty() && out.log.is_empty() {
            return Ok(());
        }
        // Journal first: a decision that cannot be recorded is not acted on.
        // The lines are journaled as they are (at a first inventory, one per VM: not copied).
        let mut records: Vec<Record> = Vec::with_capacity(out.commands.len());
        for c in &out.commands {
            match c {
                Command::Execute { id, action, .. } => records.push(Record::Intent {
                    id: *id,
                    action: action.clone(),
                    vm: moved_vm(action, self.sup.inventory()),
                }),
                Command::Alarm(change) => records.push(Record::Alarm(change.clone())),
                // Ended for the journal: a restart does not wait for it.
                Command::Cancel { id, reason } => records.push(Record::Outcome {
                    id: *id,
                    error: Some(am_core::HvError::Api {
                        fault: "Cancelled".into(),
                        message: reason.clone(),
                        retryable: false,
                    }),
                }),
            }
        }
        self.journal.append_step(&out.log, &records)?;
        for c in &out.commands {
            match c {
                Command::Execute {
                    id, action, priority, ..
                } => self.exec.submit(*id, action.clone(), *priority),
                Command::Alarm(change) => {
                    for sink in &mut self.sinks {
                        sink.deliver(change);
                    }
                }
                Command::Cancel { id, .. } => self.exec.cancel(*id),
            }
        }
        // From the observation's arrival to the last command handed to the executor (`cargo
        // xtask bench-scale` reads it: the wall time a failure's decision and restarts take).
        let wall_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        for line in &out.log {
            log_line(line);
        }
        tracing::debug!(
            target: "am::step",
            at_ms = now.as_millis(),
            wall_us,
            commands = out.commands.len(),
            lines = out.log.len(),
            "step"
        );
        if let Some(observer) = self.observer.as_mut() {
            observer(now, &out, &self.sup);
        }
        Ok(())
    }

    fn refresh_targets(&self) {
        let inv = self.sup.inventory();
        let mut targets: BTreeSet<ProbeTarget> = self
            .targets
            .borrow()
            .iter()
            .filter(|t| matches!(t, ProbeTarget::Isolation { .. }))
            .cloned()
            .collect();
        for h in inv.hosts.values() {
            if let Some(a) = &h.mgmt_address {
                targets.insert(ProbeTarget::Host {
                    host: h.id.clone(),
                    address: a.clone(),
                });
            }
        }
        for vm in inv.vms.values() {
            if let (Some(a), true) = (&vm.guest_address, vm.backup_of.is_none()) {
                targets.insert(ProbeTarget::Guest {
                    vm: vm.id.clone(),
                    address: a.clone(),
                    host: vm.host.clone(),
                });
            }
        }
        self.targets.send_if_modified(|current| {
            if *current == targets {
                false
            } else {
                *current = targets;
                true
            }
        });
        let names: BTreeMap<String, HostId> = inv
            .hosts
            .values()
            .map(|h| (h.name.clone(), h.id.clone()))
            .collect();
        self.host_names.send_if_modified(|current| {
            if *current == names {
                false
            } else {
                *current = names;
                true
            }
        });
    }
}

/// Whether `obs` may change what is probed (an address, a VM's host, a host's name): the probe
/// list is rebuilt from every VM, and vCenter sends a VM's CPU use every 20 s or so (at 50,000
/// VMs some 2,500 changes a second, none of which touches it).
fn targets_may_change(inv: &am_core::Inventory, obs: &Observation) -> bool {
    use am_core::InventoryDelta as D;
    let Observation::Delta(d) = obs else {
        return matches!(obs, Observation::Inventory(_));
    };
    // Every kind of change named: a new one has to say whether it changes what is probed.
    match d {
        D::HostUpsert(h) => inv
            .hosts
            .get(&h.id)
            .is_none_or(|old| old.mgmt_address != h.mgmt_address || old.name != h.name),
        D::VmUpsert(v) => inv.vms.get(&v.id).is_none_or(|old| {
            old.guest_address != v.guest_address || old.host != v.host || old.backup_of != v.backup_of
        }),
        D::HostRemoved(_) | D::VmRemoved(_) => true,
        D::DatastoreUpsert(_) | D::Snapshots { .. } => false,
    }
}

/// Reads every host's out-of-band power every `every`, and one host at once when asked (vCenter
/// lost it); reports each change (a reading that cannot be taken is `None`, with the reason).
async fn watch_power(
    source: Arc<dyn PowerSource>,
    tx: mpsc::UnboundedSender<Observation>,
    mut names: watch::Receiver<BTreeMap<String, HostId>>,
    mut kick: mpsc::UnboundedReceiver<HostId>,
    every: Duration,
) {
    let mut last: BTreeMap<HostId, Option<PowerReading>> = BTreeMap::new();
    let read_timeout = every.max(Duration::from_secs(5));
    let mut next_round = tokio::time::Instant::now();
    loop {
        // A round when it is due, and at once when the hosts change (the first inventory: every
        // host has its power read from the start, not one interval later).
        let only = tokio::select! {
            () = tokio::time::sleep_until(next_round) => None,
            h = kick.recv() => match h {
                Some(h) => Some(h),
                None => return,
            },
            changed = names.changed() => {
                if changed.is_err() {
                    return;
                }
                None
            }
        };
        if only.is_none() {
            next_round = tokio::time::Instant::now() + every;
        }
        let readable: BTreeSet<String> = source.hosts().into_iter().collect();
        let batch: Vec<(String, HostId)> = names
            .borrow_and_update()
            .iter()
            .filter(|(name, id)| readable.contains(*name) && only.as_ref().is_none_or(|o| o == *id))
            .map(|(n, id)| (n.clone(), id.clone()))
            .collect();
        let mut reads = tokio::task::JoinSet::new();
        for (name, id) in batch {
            let source = source.clone();
            reads.spawn(async move {
                let r = tokio::time::timeout(read_timeout, source.power(&name)).await;
                (name, id, r)
            });
        }
        while let Some(Ok((name, id, r))) = reads.join_next().await {
            let (power, evidence) = match r {
                Ok(Ok(p)) => (
                    Some(p),
                    format!(
                        "{name}: power {}",
                        if p == PowerReading::On { "on" } else { "off" }
                    ),
                ),
                Ok(Err(e)) => (None, format!("{name}: cannot read its power: {e}")),
                Err(_) => (
                    None,
                    format!("{name}: no power reading within {}s", read_timeout.as_secs()),
                ),
            };
            if last.get(&id) == Some(&power) {
                continue;
            }
            last.insert(id.clone(), power);
            if tx
                .send(Observation::HostPower {
                    host: id,
                    power,
                    evidence,
                })
                .is_err()
            {
                return;
            }
        }
    }
}

/// The VM an action registers anew, as the inventory shows it now: journaled with the intent, so
/// that a restarted daemon finds it again under a new id (by its configuration path).
fn moved_vm(action: &am_core::Action, inv: &am_core::Inventory) -> Option<Box<am_core::Vm>> {
    use am_core::Action;
    match action {
        Action::Failover { vm, .. }
        | Action::Register { vm, .. }
        | Action::Unregister { vm }
        | Action::RestoreClone { vm, .. } => inv.vms.get(vm).cloned().map(Box::new),
        _ => None,
    }
}

/// One audit line in the daemon's log: the line as text, and its parts as fields (keys of the
/// object with `--log-format json`).
fn log_line(line: &LogEntry) {
    use am_core::LogKind;
    let at_ms = line.at.as_millis();
    let subject = line.subject.to_string();
    let name = line.name.as_deref().unwrap_or_default();
    match &line.kind {
        LogKind::Transition { from, to, reason } => tracing::info!(
            target: "am::audit", at_ms, subject, name, kind = "transition", from = from.as_str(), to = to.as_str(),
            reason = reason.as_str(), "{line}"
        ),
        LogKind::Issued { id, action } => tracing::info!(
            target: "am::audit", at_ms, subject, name, kind = "issued", action_id = id.0, op = action.name(),
            action = %action, "{line}"
        ),
        LogKind::Finished { id, ok, detail } => tracing::info!(
            target: "am::audit", at_ms, subject, name, kind = "finished", action_id = id.0, ok,
            detail = detail.as_str(), "{line}"
        ),
        LogKind::AlarmRaised { alarm, message } => tracing::info!(
            target: "am::audit", at_ms, subject, name, kind = "alarm", alarm = ?alarm, message = message.as_str(), "{line}"
        ),
        LogKind::AlarmCleared { alarm } => {
            tracing::info!(target: "am::audit", at_ms, subject, name, kind = "alarm_cleared", alarm = ?alarm, "{line}")
        }
        LogKind::Note { message } => {
            tracing::info!(target: "am::audit", at_ms, subject, name, kind = "note", message = message.as_str(), "{line}")
        }
    }
}

/// The longest pause between two attempts to read the inventory again: a vCenter that answers
/// again is read within this long.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Feeds the inventory: a snapshot, then changes; on errors it backs off (1 s, then 2 s) and
/// resynchronises. The source's health goes with it: lost when a snapshot fails, back at the next
/// one that works.
async fn feed_inventory(
    source: Arc<dyn InventorySource>,
    tx: mpsc::UnboundedSender<Observation>,
    wait: Duration,
) {
    let mut backoff = Duration::from_secs(1);
    let mut failing = false;
    let health = |connected: bool, detail: String| Observation::SourceHealth { connected, detail };
    'resync: loop {
        let version = match source.snapshot().await {
            Ok((inv, version)) => {
                if failing {
                    failing = false;
                    if tx
                        .send(health(true, "the inventory is read again".into()))
                        .is_err()
                    {
                        return;
                    }
                }
                if tx.send(Observation::Inventory(inv)).is_err() {
                    return;
                }
                backoff = Duration::from_secs(1);
                version
            }
            Err(e) => {
                if !failing {
                    failing = true;
                    tracing::warn!(error = %e, "inventory snapshot failed; retrying every {}s", MAX_BACKOFF.as_secs());
                    if tx.send(health(false, e.to_string())).is_err() {
                        return;
                    }
                } else {
                    tracing::debug!(error = %e, "inventory snapshot failed again");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue 'resync;
            }
        };
        let mut version = version;
        loop {
            match source.changes(&version, wait).await {
                Ok(changes) => {
                    for d in changes.deltas {
                        if tx.send(Observation::Delta(d)).is_err() {
                            return;
                        }
                    }
                    for e in changes.events {
                        if tx.send(Observation::Event(e)).is_err() {
                            return;
                        }
                    }
                    version = changes.version;
                }
                Err(e) => {
                    // A broken wait is resynchronised at once; only a resync that fails too
                    // counts as the source being lost.
                    tracing::warn!(error = %e, "inventory changes failed; resynchronising");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue 'resync;
                }
            }
        }
    }
}

/// Asks the source every `every` whether it answers (within `timeout`), and reports when that
/// changes: a source that hangs is noticed in seconds, not when its long calls time out.
async fn watch_health(
    source: Arc<dyn InventorySource>,
    tx: mpsc::UnboundedSender<Observation>,
    every: Duration,
    timeout: Duration,
) {
    let mut last = true;
    loop {
        tokio::time::sleep(every).await;
        let answer = match tokio::time::timeout(timeout, source.health(timeout)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {}ms", timeout.as_millis())),
        };
        let ok = answer.is_ok();
        if ok != last {
            last = ok;
            let detail = match answer {
                Ok(()) => "answers again".to_owned(),
                Err(why) => why,
            };
            if ok {
                tracing::info!("vCenter answers again");
            } else {
                tracing::warn!(detail = %detail, "vCenter does not answer");
            }
            if tx
                .send(Observation::SourceHealth {
                    connected: ok,
                    detail,
                })
                .is_err()
            {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use am_core::{Host, Inventory, InventoryDelta as D, Resources, Vm};

    #[test]
    fn only_what_is_probed_rebuilds_the_probe_list() {
        let mut inv = Inventory::default();
        inv.apply(&D::HostUpsert(Host::new("h1", Resources::new(1, 1))));
        let mut vm = Vm::new("vm-1", Resources::new(1, 1), "h1");
        vm.guest_address = Some("10.0.0.1".into());
        inv.apply(&D::VmUpsert(vm.clone()));
        let delta = |d: D| Observation::Delta(d);
        let mut busy = vm.clone();
        busy.cpu_usage_mhz = Some(1200);
        assert!(
            !targets_may_change(&inv, &delta(D::VmUpsert(busy))),
            "CPU use: not probed"
        );
        let mut moved = vm.clone();
        moved.host = Some("h2".into());
        assert!(targets_may_change(&inv, &delta(D::VmUpsert(moved))));
        let mut readdressed = vm;
        readdressed.guest_address = Some("10.0.0.2".into());
        assert!(targets_may_change(&inv, &delta(D::VmUpsert(readdressed))));
        let mut new = Vm::new("vm-2", Resources::new(1, 1), "h1");
        new.guest_address = None;
        assert!(
            targets_may_change(&inv, &delta(D::VmUpsert(new))),
            "a VM not seen before"
        );
        assert!(targets_may_change(&inv, &delta(D::VmRemoved("vm-1".into()))));
        let mut renamed = Host::new("h1", Resources::new(1, 1));
        renamed.name = "esx-01".into();
        assert!(targets_may_change(&inv, &delta(D::HostUpsert(renamed))));
        assert!(!targets_may_change(
            &inv,
            &delta(D::HostUpsert(Host::new("h1", Resources::new(2, 2))))
        ));
    }
}
