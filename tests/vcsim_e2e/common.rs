//! The harness: the engine against a test bed, what it wrote, and how to look at vCenter.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use am_core::{
    Action, AlarmChange, AlarmKind, Clock, LogKind, MemoryJournal, ProbeResult, ProbeTarget, Prober, Record,
    Subject, Time,
};
use am_daemon::alarm::AlarmSink;
use am_daemon::engine::{Backends, Engine, EngineConfig};
use am_testbed::Vcsim;
use am_vsphere::vsphere_soap::{Client, Credentials, MoRef, Password, PropertySpec, TlsMode};
use am_vsphere::{ConnectSettings, Options, VsphereBackend};

/// Every wait in these tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(90);

/// The manager's vCenter user.
pub const MANAGER: &str = "am-manager";

/// How a test bed's TLS is trusted.
pub fn tls(sim: &Vcsim) -> TlsMode {
    match &sim.ca_file {
        Some(ca) => TlsMode::CaFile(ca.clone()),
        None => TlsMode::SystemRoots,
    }
}

/// Probes nothing (no target is ever given one in these tests).
pub struct NoProbes;

#[async_trait::async_trait]
impl Prober for NoProbes {
    async fn probe(&self, target: &ProbeTarget, _timeout: Duration) -> ProbeResult {
        panic!("nothing may be probed in this test, yet {target:?} was")
    }
}

/// Milliseconds since it was made, on tokio's clock.
pub struct TestClock(pub tokio::time::Instant);

impl Clock for TestClock {
    fn now(&self) -> Time {
        Time::from_millis(u64::try_from(self.0.elapsed().as_millis()).unwrap_or(u64::MAX))
    }
}

/// Keeps every alarm change.
pub struct Alarms(pub Arc<Mutex<Vec<AlarmChange>>>);

impl AlarmSink for Alarms {
    fn deliver(&mut self, change: &AlarmChange) {
        self.0.lock().unwrap().push(change.clone());
    }
}

/// How a test's manager is set up.
pub struct Setup {
    /// The adapter's options (default: nothing probed).
    pub opts: Options,
    /// Probe with the real network prober (TCP to the test bed's listeners); else nothing is.
    pub probes: bool,
    /// Engine settings beyond the harness's.
    pub tune: Box<dyn FnOnce(&mut EngineConfig) + Send>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            opts: Options {
                targets: am_vsphere::Targets::none(),
                ..Options::default()
            },
            probes: false,
            tune: Box::new(|_| {}),
        }
    }
}

/// The adapter's options probing the test bed's listeners by TCP (guests on `guest_port`, hosts
/// at their management vmk address on `mgmt_port`).
pub fn probing(sim: &Vcsim) -> Options {
    let mut opts = Options::default();
    opts.targets.hosts.port = sim.spec.mgmt_port;
    opts.targets.guests.port = sim.spec.guest_port;
    opts
}

/// The test bed's control endpoint as an isolation address: what proves the manager's own
/// network works when every host is lost.
pub fn isolation_address(sim: &Vcsim) -> String {
    format!("tcp:{}", sim.control.trim_start_matches("http://"))
}

/// Probe timings for tests: quick verdicts (about 1 s for hosts, 1.5 s for guests).
pub fn quick_probes(cfg: &mut EngineConfig) {
    cfg.probe.hosts.interval = Duration::from_millis(100);
    cfg.probe.hosts.timeout = Duration::from_millis(200);
    cfg.probe.hosts.detector = probe::Detector::ConsecutiveMisses { misses: 8 };
    cfg.probe.guests.interval = Duration::from_millis(150);
    cfg.probe.guests.timeout = Duration::from_millis(300);
    cfg.probe.guests.detector = probe::Detector::ConsecutiveMisses { misses: 8 };
}

/// The engine running against vcsim, and what it wrote.
pub struct Manager {
    pub journal: MemoryJournal,
    pub alarms: Arc<Mutex<Vec<AlarmChange>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Manager {
    /// Nothing probed: vCenter's signals only.
    pub async fn start(sim: &Vcsim) -> Manager {
        Manager::start_with(sim, Setup::default()).await
    }

    pub async fn start_with(sim: &Vcsim, setup: Setup) -> Manager {
        let settings = ConnectSettings::new(&sim.url, MANAGER, Password::new("secret"), tls(sim));
        let (client, session) = am_vsphere::connect(&settings).await.expect("connect to vcsim");
        let clock: Arc<dyn Clock> = Arc::new(TestClock(tokio::time::Instant::now()));
        let backend = VsphereBackend::new(client, setup.opts, clock.clone())
            .await
            .expect("backend");
        let mut cfg = EngineConfig::default();
        cfg.supervisor.manager_user = session.user_name.clone();
        // Without a management probe the connection state alone makes a host unreachable after this.
        cfg.supervisor.single_signal_confirm = Duration::from_secs(2);
        cfg.supervisor.revive_interval = Duration::from_secs(5);
        cfg.supervisor.capabilities.revive = backend.options().revive_hook.is_some();
        cfg.supervisor.capabilities.fence = backend.options().fence_hook.is_some();
        cfg.health_interval = Some(Duration::from_secs(1));
        cfg.health_timeout = Duration::from_secs(2);
        (setup.tune)(&mut cfg);
        let journal = MemoryJournal::default();
        let alarms = Arc::new(Mutex::new(Vec::new()));
        let prober: Arc<dyn Prober> = if setup.probes {
            Arc::new(probe::NetProber::new(None))
        } else {
            Arc::new(NoProbes)
        };
        let backends = Backends {
            hypervisor: Arc::new(executor::Retrying::new(Arc::new(backend.clone()))),
            source: Arc::new(backend),
            prober,
            power: None,
            clock,
            journal: Box::new(journal.clone()),
            sinks: vec![Box::new(Alarms(alarms.clone()))],
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut engine = Engine::start(cfg, backends);
            engine
                .run_until(async {
                    let _ = stopped.await;
                })
                .await
                .expect("the engine stopped with an error");
        });
        let m = Manager {
            journal,
            alarms,
            stop: Some(stop),
            task: Some(task),
        };
        m.wait_for_inventory().await;
        m
    }

    /// Waits until the supervisor has seen the inventory (its first roll call).
    pub async fn wait_for_inventory(&self) {
        eventually(self, "the inventory to be read", || async {
            self.log()
                .iter()
                .any(|e| matches!(&e.kind, LogKind::Transition { from, .. } if from == "new"))
                .then_some(())
        })
        .await;
    }

    pub fn log(&self) -> Vec<am_core::LogEntry> {
        self.journal
            .records()
            .into_iter()
            .filter_map(|r| match r {
                Record::Decision(e) => Some(e),
                _ => None,
            })
            .collect()
    }

    pub fn intents(&self) -> Vec<Action> {
        self.journal
            .records()
            .into_iter()
            .filter_map(|r| match r {
                Record::Intent { action, .. } => Some(action),
                _ => None,
            })
            .collect()
    }

    pub fn alarm_raised(&self, kind: AlarmKind, subject: &Subject) -> bool {
        self.alarms
            .lock()
            .unwrap()
            .iter()
            .any(|c| matches!(c, AlarmChange::Raise(a) if a.kind == kind && a.subject == *subject))
    }

    /// The text of the latest raise of `kind`, if any.
    pub fn alarm_text(&self, kind: AlarmKind) -> Option<String> {
        self.alarms.lock().unwrap().iter().rev().find_map(|c| match c {
            AlarmChange::Raise(a) if a.kind == kind => Some(a.message.clone()),
            _ => None,
        })
    }

    /// The state a subject was last moved to.
    pub fn state_of(&self, subject: &Subject) -> Option<String> {
        self.log().iter().rev().find_map(|e| match &e.kind {
            LogKind::Transition { to, .. } if e.subject == *subject => Some(to.clone()),
            _ => None,
        })
    }

    /// The audit trail, for failure messages.
    pub fn story(&self) -> String {
        self.log()
            .iter()
            .filter(|e| !matches!(&e.kind, LogKind::Transition { from, .. } if from == "new"))
            .map(|e| format!("  {e}\n"))
            .collect()
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .expect("the engine did not stop")
                .expect("the engine task panicked");
        }
    }
}

/// Polls `check` every 250 ms until it gives `Some`, for at most [`WAIT`]; fails with the story.
pub async fn eventually<T, F, Fut>(m: &Manager, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "timed out after {}s waiting for {what}; the manager's story:\n{}",
                WAIT.as_secs(),
                m.story()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A second session on vcsim, to see what vCenter shows.
pub async fn observer(sim: &Vcsim) -> Client {
    Client::builder(&sim.url)
        .tls(tls(sim))
        .credentials(Credentials::new("observer", Password::new("x")))
        .connect()
        .await
        .expect("observer login")
}

/// Every VM: moref, name, power state and host.
pub async fn vms(c: &Client) -> Vec<(MoRef, String, String, Option<MoRef>)> {
    c.retrieve_inventory(vec![PropertySpec::new(
        "VirtualMachine",
        &["name", "runtime.powerState", "runtime.host"],
    )])
    .await
    .expect("reading VMs")
    .into_iter()
    .map(|o| {
        (
            o.obj.clone(),
            o.get_str("name").unwrap_or_default().to_owned(),
            o.get_str("runtime.powerState").unwrap_or_default().to_owned(),
            o.get_moref("runtime.host").cloned(),
        )
    })
    .collect()
}

/// Hosts by name with their moref and the names of their VMs, as the test bed sees them.
pub fn hosts(sim: &Vcsim) -> std::collections::BTreeMap<String, (String, Vec<String>)> {
    let inv = sim.inventory();
    inv.as_array()
        .expect("inventory is a list")
        .iter()
        .map(|h| {
            let vms = h["vms"]
                .as_array()
                .map(|v| {
                    v.iter()
                        .map(|vm| vm["name"].as_str().unwrap().to_owned())
                        .collect()
                })
                .unwrap_or_default();
            (
                h["name"].as_str().unwrap().to_owned(),
                (h["ref"].as_str().unwrap().to_owned(), vms),
            )
        })
        .collect()
}

/// The host with the most VMs: its name, moref and VM names.
pub fn busiest(sim: &Vcsim) -> (String, String, Vec<String>) {
    let inv = hosts(sim);
    let (name, (moref, vms)) = inv
        .into_iter()
        .max_by_key(|(_, (_, vms))| vms.len())
        .expect("a host");
    assert!(!vms.is_empty(), "the busiest host has VMs");
    (name, moref, vms)
}

/// Every VM runs exactly once (the test bed's truth), and is registered once in vCenter.
pub fn each_runs_once(sim: &Vcsim) -> Result<(), String> {
    let running = sim.running();
    let registered = sim.registrations();
    let mut bad = Vec::new();
    for (vmx, hosts) in &running {
        if vmx.contains("am backup of") {
            continue;
        }
        if hosts.len() != 1 {
            bad.push(format!("{vmx} runs on {hosts:?}"));
        }
        let n = registered.get(vmx).copied().unwrap_or(0);
        if n != 1 {
            bad.push(format!("{vmx} is registered {n} times"));
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(bad.join("; "))
    }
}
