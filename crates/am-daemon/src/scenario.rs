//! Scenarios: a simulated cluster, a fault script and settings, run through the real engine in
//! virtual time. The demo runs one; `tests/scenarios/<name>/` holds many, each with the audit log
//! it must produce (`log.expect`).
//!
//! A scenario file is TOML:
//!
//! ```toml
//! description = "A guest crashes; a reset brings it back."
//! run_for = "120s"
//! faults = """
//! at 30s vm vm-1 crash
//! """
//!
//! [generate]            # or a full [cluster] table (sim::ClusterSpec)
//! hosts = 3
//! vms = 12
//! spares = 0
//! seed = 1
//!
//! [supervisor]          # any supervisor::Config key; the rest keep their defaults
//! restart_limit = 3
//! ```

use crate::alarm::{AlarmSink, LogSink};
use crate::engine::{Backends, Engine, EngineConfig, EngineError, Observer};
use crate::journal::{MemoryJournal, Record};
use crate::report::{self, FaultRecord, Summary};
use am_core::{LogEntry, LogKind, Subject, Time};
use executor::Retrying;
use serde::{Deserialize, Serialize};
use sim::{ClusterSpec, Fault, FaultScript, Sim};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Why a scenario could not run.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read scenario {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed or has a bad value.
    #[error("scenario {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong, and where.
        message: String,
    },
    /// The cluster spec is inconsistent.
    #[error("scenario cluster: {0}")]
    Cluster(#[from] sim::SpecError),
    /// The fault script does not parse or names unknown hosts/VMs.
    #[error("scenario faults: {0}")]
    Faults(String),
    /// A setting makes no sense.
    #[error("scenario setting {key}: {reason}")]
    Setting {
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The engine stopped.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// A generated cluster: `sim::ClusterSpec::generate(hosts, vms, spares, seed)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Generate {
    /// Hosts.
    pub hosts: usize,
    /// VMs.
    pub vms: usize,
    /// Spare hosts in the pool.
    #[serde(default)]
    pub spares: usize,
    /// Seed.
    #[serde(default)]
    pub seed: u64,
    /// Every protected VM starts with a good snapshot.
    #[serde(default = "yes")]
    pub initial_snapshots: bool,
    /// Every protected VM starts with a backup clone.
    #[serde(default = "yes")]
    pub initial_clones: bool,
    /// Size every spare host to hold all protected VMs (the story where every original host
    /// fails and the spare carries everything).
    #[serde(default)]
    pub spares_hold_everything: bool,
    /// How often live hosts write their storage heartbeat.
    #[serde(default = "two_seconds", with = "am_core::time::duration_str")]
    pub storage_heartbeat_period: Duration,
    /// Whether hosts have a storage heartbeat at all (vCenter shows none).
    #[serde(default = "yes")]
    pub storage_heartbeats: bool,
    /// Whether hosts have a management address to probe.
    #[serde(default = "yes")]
    pub mgmt_probes: bool,
    /// Whether guests have an address to probe.
    #[serde(default = "yes")]
    pub guest_probes: bool,
    /// Whether a running VM's files are locked against a second copy.
    #[serde(default = "yes")]
    pub file_locks: bool,
    /// Every host has a BMC the manager reads its power from (default false).
    #[serde(default)]
    pub bmc: bool,
}

impl Generate {
    /// `hosts` hosts and `vms` VMs with every default.
    pub fn new(hosts: usize, vms: usize) -> Generate {
        Generate {
            hosts,
            vms,
            spares: 0,
            seed: 0,
            initial_snapshots: true,
            initial_clones: true,
            spares_hold_everything: false,
            storage_heartbeat_period: two_seconds(),
            storage_heartbeats: true,
            mgmt_probes: true,
            guest_probes: true,
            file_locks: true,
            bmc: false,
        }
    }
}

fn two_seconds() -> Duration {
    Duration::from_secs(2)
}

fn yes() -> bool {
    true
}

fn default_run_for() -> Duration {
    Duration::from_secs(300)
}

/// A scenario as written in its file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// What it shows.
    #[serde(default)]
    pub description: String,
    /// How long (virtual time) it runs.
    #[serde(default = "default_run_for", with = "am_core::time::duration_str")]
    pub run_for: Duration,
    /// The fault script (`sim` syntax).
    #[serde(default)]
    pub faults: String,
    /// A generated cluster.
    #[serde(default)]
    pub generate: Option<Generate>,
    /// A cluster written out.
    #[serde(default)]
    pub cluster: Option<ClusterSpec>,
    /// Supervisor settings.
    #[serde(default)]
    pub supervisor: supervisor::Config,
    /// Probe settings.
    #[serde(default)]
    pub probe: Option<probe::Settings>,
    /// Whether `log.expect` shows the backup cache's routine snapshots (off: they would crowd the
    /// story).
    #[serde(default)]
    pub log_backups: bool,
    /// VMs allowed to be down at the end (e.g. a VM whose every recovery is meant to fail).
    #[serde(default)]
    pub allow_down: Vec<String>,
    /// What the backend can do out of band (default: the simulator revives and fences). `run`
    /// without hooks, a BMC or an admin vCenter can do neither: say so to tell its story.
    #[serde(default)]
    pub capabilities: Option<ScenarioCapabilities>,
}

/// What a scenario's backend can do out of band.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioCapabilities {
    /// Revival (`revive_host`) works.
    #[serde(default = "yes")]
    pub revive: bool,
    /// Fencing (`fence_host`) works.
    #[serde(default = "yes")]
    pub fence: bool,
}

impl Scenario {
    /// Parses a scenario from TOML text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Scenario, ScenarioError> {
        toml::from_str(text).map_err(|e| ScenarioError::Parse {
            path: origin.to_owned(),
            message: e.to_string(),
        })
    }

    /// Reads a scenario file. A `faults` file beside it is appended to the inline script.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|source| ScenarioError::Read {
                path: p.display().to_string(),
                source,
            })
        };
        let mut scenario = Scenario::from_toml(&read(path)?, &path.display().to_string())?;
        let beside = path.with_file_name("faults");
        if beside.is_file() {
            scenario.faults.push('\n');
            scenario.faults.push_str(&read(&beside)?);
        }
        Ok(scenario)
    }

    /// The inventory the manager would see at the start (the simulated cluster's view).
    pub fn inventory(&self) -> Result<am_core::Inventory, ScenarioError> {
        let spec = self.cluster()?;
        let rt = paused_runtime()?;
        rt.block_on(async { Ok(Sim::new(&spec)?.view()) })
    }

    /// The cluster spec (generated or written).
    pub fn cluster(&self) -> Result<ClusterSpec, ScenarioError> {
        match (&self.cluster, &self.generate) {
            (Some(c), None) => Ok(c.clone()),
            (None, Some(g)) => {
                let mut spec = ClusterSpec::generate(g.hosts, g.vms, g.spares, g.seed);
                spec.initial_snapshots = g.initial_snapshots;
                spec.initial_clones = g.initial_clones;
                spec.storage_heartbeat_period = g.storage_heartbeat_period;
                spec.storage_heartbeats = g.storage_heartbeats;
                spec.file_locks = g.file_locks;
                spec.bmc = g.bmc;
                if !g.mgmt_probes {
                    for h in spec.hosts.iter_mut().chain(spec.spares.values_mut()) {
                        h.mgmt_address = None;
                    }
                }
                if !g.guest_probes {
                    for v in &mut spec.vms {
                        v.guest_address = None;
                    }
                }
                if g.spares_hold_everything {
                    let need = spec
                        .vms
                        .iter()
                        .filter(|v| v.priority.is_protected())
                        .fold(am_core::Resources::ZERO, |acc, v| acc + v.demand());
                    for spare in spec.spares.values_mut() {
                        spare.cpu_mhz = spare.cpu_mhz.max(need.cpu_mhz + need.cpu_mhz / 10);
                        spare.mem_mib = spare.mem_mib.max(need.mem_mib + need.mem_mib / 10);
                    }
                }
                Ok(spec)
            }
            (Some(_), Some(_)) => Err(ScenarioError::Setting {
                key: "cluster".into(),
                reason: "give either [cluster] or [generate], not both".into(),
            }),
            (None, None) => Err(ScenarioError::Setting {
                key: "cluster".into(),
                reason: "missing: give a [cluster] table or a [generate] table".into(),
            }),
        }
    }
}

/// What a scenario run produced.
pub struct Outcome {
    /// The audit trail (every supervisor log line), in order.
    pub log: Vec<LogEntry>,
    /// The report.
    pub summary: Summary,
    /// The simulated cluster as it ended (for further checks).
    pub sim: Sim,
    /// The daemon's status at the end, as `am-daemon stats` shows it.
    pub snapshot: am_api::Snapshot,
}

/// Whether a log line belongs in `log.expect`: every decision, but not the initial roll call of
/// hosts and VMs.
pub fn is_story_line(e: &LogEntry) -> bool {
    !matches!(&e.kind, LogKind::Transition { from, .. } if from == "new")
}

/// Whether a log line is the backup cache's routine work (snapshots taken and pruned).
pub fn is_backup_line(e: &LogEntry) -> bool {
    match &e.kind {
        LogKind::Issued { action, .. } => {
            matches!(
                action,
                am_core::Action::CreateSnapshot { .. } | am_core::Action::RemoveSnapshot { .. }
            )
        }
        LogKind::Finished { detail, .. } => {
            detail.starts_with("create_snapshot ") || detail.starts_with("remove_snapshot ")
        }
        _ => false,
    }
}

/// The lines of a scenario's `log.expect`: the story, with the backup cache's routine lines only
/// when the scenario asks for them.
pub fn story(log: &[LogEntry], with_backups: bool) -> impl Iterator<Item = &LogEntry> {
    log.iter()
        .filter(move |e| is_story_line(e) && (with_backups || !is_backup_line(e)))
}

/// Runs a scenario through the real engine against the simulated cluster. Call it inside a tokio
/// current-thread runtime with a paused clock (see [`run_blocking`]).
pub async fn run(scenario: &Scenario, observer: Option<Observer>) -> Result<Outcome, ScenarioError> {
    let spec = scenario.cluster()?;
    let sim = Sim::new(&spec)?;
    let script = FaultScript::parse(&scenario.faults).map_err(|e| ScenarioError::Faults(e.to_string()))?;
    sim.check_script(&script)
        .map_err(|e| ScenarioError::Faults(e.to_string()))?;

    let mut sup_cfg = scenario.supervisor.clone();
    if sup_cfg.spares.is_empty() {
        sup_cfg.spares = spec.spares.keys().cloned().collect();
    }
    sup_cfg.manager_user = spec.manager_user.clone();
    if let Some(c) = scenario.capabilities {
        sup_cfg.capabilities = supervisor::Capabilities {
            revive: c.revive,
            fence: c.fence,
        };
    }
    if let Some(bad) = sup_cfg.validate().into_iter().next() {
        return Err(ScenarioError::Setting {
            key: format!("supervisor.{}", bad.key),
            reason: bad.reason,
        });
    }
    let cfg = EngineConfig {
        supervisor: sup_cfg,
        probe: scenario.probe.clone().unwrap_or_default(),
        isolation_addresses: vec!["10.0.0.1".into()],
        ..EngineConfig::default()
    };
    let journal = MemoryJournal::default();
    let sinks: Vec<Box<dyn AlarmSink>> = vec![Box::new(LogSink)];
    let backends = Backends {
        hypervisor: Arc::new(Retrying::new(Arc::new(sim.clone()))),
        source: Arc::new(sim.clone()),
        prober: Arc::new(sim.prober()),
        power: sim
            .power_source()
            .map(|p| Arc::new(p) as Arc<dyn am_core::PowerSource>),
        clock: Arc::new(sim.clock()),
        journal: Box::new(journal.clone()),
        sinks,
    };
    let protected = sim.view().vms.values().filter(|v| v.is_protected()).count();
    let mut engine = Engine::start(cfg, backends);
    if let Some(o) = observer {
        engine.set_observer(o);
    }
    // Operators' requests in the script go to the manager, at their time.
    let requests: Vec<(std::time::Duration, am_core::OperatorRequest)> = script
        .faults
        .iter()
        .filter_map(|f| match &f.fault {
            Fault::Operator { request } => Some((f.at, request.clone())),
            _ => None,
        })
        .collect();
    if !requests.is_empty() {
        let tx = engine.operator();
        let clock = sim.clock();
        tokio::spawn(async move {
            for (at, req) in requests {
                tokio::time::sleep_until(clock.instant_after(at)).await;
                if tx.send(req).is_err() {
                    break;
                }
            }
        });
    }
    tokio::spawn(sim.run_script(script));
    engine.run_until(tokio::time::sleep(scenario.run_for)).await?;

    // What happens at the very end of the run races with its end: the story stops before it.
    let end_of_run = Time::ZERO + scenario.run_for;
    let log: Vec<LogEntry> = journal
        .records()
        .into_iter()
        .filter_map(|r| match r {
            Record::Decision(e) if e.at < end_of_run => Some(e),
            _ => None,
        })
        .collect();
    let faults: Vec<FaultRecord> = sim
        .fault_history()
        .iter()
        .filter(|f| f.applied)
        .filter_map(fault_record)
        .collect();
    let allowed: Vec<&str> = scenario.allow_down.iter().map(String::as_str).collect();
    let not_running = sim
        .protected_not_running()
        .into_iter()
        .filter(|v| !allowed.contains(&v.as_str()) && !allowed.contains(&"*"))
        .collect();
    let violations = sim.violations().iter().map(|v| v.to_string()).collect();
    let end = sim.now();
    let summary = report::summarize(
        &faults,
        engine.supervisor().incidents(),
        protected,
        end,
        not_running,
        violations,
    );
    let summary = report::Summary {
        backups_taken: log
            .iter()
            .filter(|e| matches!(&e.kind, LogKind::Finished { ok: true, detail, .. } if detail.starts_with("create_snapshot ")))
            .count(),
        ..summary
    };
    let recent: Vec<LogEntry> = log.iter().rev().take(20).rev().cloned().collect();
    let exec = engine.executor().status();
    let snapshot = am_api::Snapshot::capture(end, engine.supervisor(), Some(&exec), &recent);
    Ok(Outcome {
        log,
        summary,
        sim,
        snapshot,
    })
}

/// A current-thread runtime whose clock is paused: time jumps ahead whenever every task waits.
fn paused_runtime() -> Result<tokio::runtime::Runtime, ScenarioError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .map_err(|e| ScenarioError::Setting {
            key: "runtime".into(),
            reason: e.to_string(),
        })
}

/// Runs a scenario on a fresh current-thread runtime with a paused clock (virtual time).
pub fn run_blocking(scenario: &Scenario, observer: Option<Observer>) -> Result<Outcome, ScenarioError> {
    let rt = paused_runtime()?;
    rt.block_on(run(scenario, observer))
}

/// The report's view of an injected fault; `None` for faults that are not failures of a host or
/// VM (API faults, probe loss, heals).
fn fault_record(f: &sim::FaultRecord) -> Option<FaultRecord> {
    let (subject, what) = match &f.fault {
        Fault::HostCrash { host, permanent } => (
            Subject::Host(host.clone()),
            if *permanent {
                "host crash (permanent)"
            } else {
                "host crash"
            }
            .to_owned(),
        ),
        Fault::HostIsolate { host } => (Subject::Host(host.clone()), "host isolated".to_owned()),
        Fault::HostDisconnect { host } => (Subject::Host(host.clone()), "host agent disconnect".to_owned()),
        Fault::VmGuestCrash { vm, depth } => (
            Subject::Vm(vm.clone()),
            format!("guest crash ({})", depth.as_str()),
        ),
        Fault::VmHang { vm, depth } => (
            Subject::Vm(vm.clone()),
            format!("guest hang ({})", depth.as_str()),
        ),
        Fault::VmPowerOff { vm, user: Some(u) } => (Subject::Vm(vm.clone()), format!("user power-off ({u})")),
        Fault::VmPowerOff { vm, user: None } => (Subject::Vm(vm.clone()), "power-off, no user".to_owned()),
        Fault::ManagerIsolate => (Subject::Manager, "manager isolated".to_owned()),
        _ => return None,
    };
    Some(FaultRecord {
        at: f.at,
        subject,
        what,
    })
}
