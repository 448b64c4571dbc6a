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
    Clock, Command, Hypervisor, InventorySource, LogEntry, Observation, Output, ProbeTarget, Prober, Time,
};
use executor::{Executor, ExecutorConfig, ExecutorHandle};
use std::collections::BTreeSet;
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
    tick: Duration,
    observer: Option<Observer>,
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
        Engine {
            sup: Supervisor::new(cfg.supervisor),
            clock: backends.clock,
            journal: backends.journal,
            sinks: backends.sinks,
            exec,
            rx,
            targets,
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
            let obs = tokio::select! {
                _ = &mut stop => return Ok(()),
                _ = tick.tick() => Observation::Tick,
                obs = self.rx.recv() => match obs {
                    Some(obs) => obs,
                    None => return Ok(()),
                },
            };
            self.step(obs)?;
        }
    }

    /// Feeds one observation through the supervisor and carries out its output.
    pub fn step(&mut self, obs: Observation) -> Result<(), EngineError> {
        let now = self.clock.now();
        let inventory_changed = matches!(obs, Observation::Inventory(_) | Observation::Delta(_));
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
        let mut records: Vec<Record> = out.log.iter().cloned().map(Record::Decision).collect();
        for c in &out.commands {
            match c {
                Command::Execute { id, action, .. } => records.push(Record::Intent {
                    id: *id,
                    action: action.clone(),
                }),
                Command::Alarm(change) => records.push(Record::Alarm(change.clone())),
            }
        }
        self.journal.append(&records)?;
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
            }
        }
        for line in &out.log {
            log_line(line);
        }
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
    }
}

fn log_line(line: &LogEntry) {
    tracing::info!(target: "am::audit", "{line}");
}

/// Feeds the inventory: a snapshot, then changes; on errors it backs off and resynchronises.
async fn feed_inventory(
    source: Arc<dyn InventorySource>,
    tx: mpsc::UnboundedSender<Observation>,
    wait: Duration,
) {
    let mut backoff = Duration::from_secs(1);
    'resync: loop {
        let version = match source.snapshot().await {
            Ok((inv, version)) => {
                if tx.send(Observation::Inventory(inv)).is_err() {
                    return;
                }
                backoff = Duration::from_secs(1);
                version
            }
            Err(e) => {
                tracing::warn!(error = %e, "inventory snapshot failed; retrying in {}s", backoff.as_secs());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
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
                    tracing::warn!(error = %e, "inventory changes failed; resynchronising");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue 'resync;
                }
            }
        }
    }
}
