//! End to end against vCenter: the real engine (supervisor, executor with retries, journal,
//! alarm sinks) drives the vcsim test bed (`testbed/vcsim`) through `am-vsphere`, started per test
//! on a free loopback port. Faults come from the test bed's control endpoint; outcomes are checked
//! in vcsim itself (a second vCenter session reads VMs, hosts and events) and in the journal. One
//! test goes through the daemon's own entry point (`am_daemon::run::run_with`), one checks every
//! action of the adapter on its own.
//!
//! The binary comes from `$AM_VCSIM_BIN`, or is built with Go into `target/vcsim/` on first use.
//! Nothing is probed: hosts have names, not addresses, and guests are not probed, so the only
//! signals are vCenter's (connection state, tools heartbeat, power state, events).

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use am_core::{
    Action, AlarmChange, AlarmKind, Clock, LogKind, MemoryJournal, ProbeResult, ProbeTarget, Prober, Record,
    Subject, Time,
};
use am_daemon::alarm::AlarmSink;
use am_daemon::engine::{Backends, Engine, EngineConfig};
use am_vsphere::vsphere_soap::{Client, Credentials, EventFilter, MoRef, Password, PropertySpec, TlsMode};
use am_vsphere::{ConnectError, ConnectSettings, Options, VsphereBackend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Every wait in these tests is bounded by this.
const WAIT: Duration = Duration::from_secs(90);

// ----- the test bed ----------------------------------------------------------------------------

// The vcsim binary (`$AM_VCSIM_BIN`, or built with Go) comes from the client's test support.
#[path = "../crates/vsphere-soap/tests/support/mod.rs"]
mod support;
use support::vcsim_binary;

/// A free loopback port (bound and released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running am-vcsim; killed on drop.
struct Vcsim {
    child: Child,
    url: String,
    control: String,
    ca_file: Option<PathBuf>,
}

impl Vcsim {
    /// `hosts` hosts with `vms_per_host` VMs each; HTTPS with a CA of its own, or plain HTTP; on
    /// `listen` (a fixed loopback address, to restart it there) or a free port.
    fn start(hosts: u32, vms_per_host: u32, tls: bool, listen: Option<&str>) -> Vcsim {
        let mut cmd = Command::new(vcsim_binary());
        cmd.args([
            "-hosts",
            &hosts.to_string(),
            "-vms-per-host",
            &vms_per_host.to_string(),
            "-exit-on-stdin-eof",
            &format!("-tls={tls}"),
        ]);
        if let Some(l) = listen {
            cmd.args(["-listen", l]);
        }
        if std::env::var_os("AM_VCSIM_VERBOSE").is_some() {
            cmd.arg("-verbose");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting am-vcsim");
        let stdout = child.stdout.take().unwrap();
        let (mut url, mut control, mut ca) = (None, None, None);
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("reading am-vcsim output");
            if line == "VCSIM_READY" {
                break;
            }
            if let Some((k, v)) = line.split_once('=') {
                match k {
                    "VCSIM_URL" => url = Some(v.to_owned()),
                    "VCSIM_CONTROL" => control = Some(v.to_owned()),
                    "VCSIM_CA" => ca = Some(PathBuf::from(v)),
                    _ => {}
                }
            }
        }
        Vcsim {
            child,
            url: url.expect("VCSIM_URL (did am-vcsim start?)"),
            control: control.expect("VCSIM_CONTROL"),
            ca_file: ca,
        }
    }

    fn tls(&self) -> TlsMode {
        match &self.ca_file {
            Some(ca) => TlsMode::CaFile(ca.clone()),
            None => TlsMode::SystemRoots,
        }
    }

    /// The `host:port` the SDK listens on.
    fn listen_addr(&self) -> String {
        let after = self.url.split_once("://").map_or("", |(_, r)| r);
        after.split('/').next().unwrap_or_default().to_owned()
    }

    /// A request to the control endpoint; its JSON answer.
    async fn control(&self, method: &str, path: &str) -> serde_json::Value {
        let addr = self.control.trim_start_matches("http://").to_owned();
        let mut stream = tokio::time::timeout(Duration::from_secs(10), tokio::net::TcpStream::connect(&addr))
            .await
            .expect("control endpoint: connect timed out")
            .expect("control endpoint: connect");
        let req = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut raw))
            .await
            .expect("control endpoint: answer timed out")
            .unwrap();
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        assert!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "control {path}: {head} {body}"
        );
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
    }

    async fn ctl(&self, path: &str) -> serde_json::Value {
        self.control("POST", path).await
    }

    /// Hosts by name with the names of their VMs, as the test bed sees them.
    async fn inventory(&self) -> BTreeMap<String, (String, Vec<String>)> {
        let inv = self.control("GET", "/inventory").await;
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

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Vcsim {
    fn drop(&mut self) {
        self.kill();
    }
}

// ----- the manager -----------------------------------------------------------------------------

/// Probes nothing (no target is ever given one in these tests).
struct NoProbes;

#[async_trait::async_trait]
impl Prober for NoProbes {
    async fn probe(&self, target: &ProbeTarget, _timeout: Duration) -> ProbeResult {
        panic!("nothing may be probed in these tests, yet {target:?} was")
    }
}

/// Milliseconds since it was made, on tokio's clock.
struct TestClock(tokio::time::Instant);

impl Clock for TestClock {
    fn now(&self) -> Time {
        Time::from_millis(u64::try_from(self.0.elapsed().as_millis()).unwrap_or(u64::MAX))
    }
}

/// Keeps every alarm change.
struct Alarms(Arc<Mutex<Vec<AlarmChange>>>);

impl AlarmSink for Alarms {
    fn deliver(&mut self, change: &AlarmChange) {
        self.0.lock().unwrap().push(change.clone());
    }
}

const MANAGER: &str = "am-manager";

/// The engine running against vcsim, and what it wrote.
struct Manager {
    journal: MemoryJournal,
    alarms: Arc<Mutex<Vec<AlarmChange>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Manager {
    async fn start(sim: &Vcsim) -> Manager {
        let settings = ConnectSettings::new(&sim.url, MANAGER, Password::new("secret"), sim.tls());
        let (client, session) = am_vsphere::connect(&settings).await.expect("connect to vcsim");
        let clock: Arc<dyn Clock> = Arc::new(TestClock(tokio::time::Instant::now()));
        let opts = Options {
            targets: am_vsphere::Targets::none(),
            ..Options::default()
        };
        let backend = VsphereBackend::new(client, opts, clock.clone())
            .await
            .expect("backend");
        let mut cfg = EngineConfig::default();
        cfg.supervisor.manager_user = session.user_name.clone();
        // No management probe: the connection state alone makes a host unreachable after this.
        cfg.supervisor.single_signal_confirm = Duration::from_secs(2);
        cfg.supervisor.revive_interval = Duration::from_secs(5);
        let journal = MemoryJournal::default();
        let alarms = Arc::new(Mutex::new(Vec::new()));
        let backends = Backends {
            hypervisor: Arc::new(executor::Retrying::new(Arc::new(backend.clone()))),
            source: Arc::new(backend),
            prober: Arc::new(NoProbes),
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
    async fn wait_for_inventory(&self) {
        eventually(self, "the inventory to be read", || async {
            self.log()
                .iter()
                .any(|e| matches!(&e.kind, LogKind::Transition { from, .. } if from == "new"))
                .then_some(())
        })
        .await;
    }

    fn log(&self) -> Vec<am_core::LogEntry> {
        self.journal
            .records()
            .into_iter()
            .filter_map(|r| match r {
                Record::Decision(e) => Some(e),
                _ => None,
            })
            .collect()
    }

    fn intents(&self) -> Vec<Action> {
        self.journal
            .records()
            .into_iter()
            .filter_map(|r| match r {
                Record::Intent { action, .. } => Some(action),
                _ => None,
            })
            .collect()
    }

    fn alarm_raised(&self, kind: AlarmKind, subject: &Subject) -> bool {
        self.alarms
            .lock()
            .unwrap()
            .iter()
            .any(|c| matches!(c, AlarmChange::Raise(a) if a.kind == kind && a.subject == *subject))
    }

    /// The audit trail, for failure messages.
    fn story(&self) -> String {
        self.log()
            .iter()
            .filter(|e| !matches!(&e.kind, LogKind::Transition { from, .. } if from == "new"))
            .map(|e| format!("  {e}\n"))
            .collect()
    }

    async fn stop(mut self) {
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
async fn eventually<T, F, Fut>(m: &Manager, what: &str, mut check: F) -> T
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
async fn observer(sim: &Vcsim) -> Client {
    Client::builder(&sim.url)
        .tls(sim.tls())
        .credentials(Credentials::new("observer", Password::new("x")))
        .connect()
        .await
        .expect("observer login")
}

/// Every VM: moref, name, power state and host.
async fn vms(c: &Client) -> Vec<(MoRef, String, String, Option<MoRef>)> {
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

// ----- the tests -------------------------------------------------------------------------------

/// (a) A host vCenter stops hearing from (and which cannot be reconnected) is declared dead; its
/// VMs end up registered and running on the other hosts, as vcsim reports them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_not_responding_has_its_vms_restarted_elsewhere() {
    let sim = Vcsim::start(3, 2, true, None);
    let m = Manager::start(&sim).await;
    let obs = observer(&sim).await;
    let inv = sim.inventory().await;
    let (dead_name, (dead_ref, dead_vms)) = inv
        .iter()
        .max_by_key(|(_, (_, vms))| vms.len())
        .map(|(n, v)| (n.clone(), v.clone()))
        .expect("a host");
    assert!(!dead_vms.is_empty(), "the busiest host has VMs: {inv:?}");
    // A dead host cannot be reconnected.
    sim.ctl("/fault?method=ReconnectHost_Task&fault=HostConnectFault&count=-1")
        .await;
    sim.ctl(&format!("/host/not-responding?name={dead_name}")).await;

    let dead = MoRef::new("HostSystem", dead_ref.clone());
    eventually(&m, "the dead host's VMs to run on other hosts", || async {
        let all = vms(&obs).await;
        dead_vms
            .iter()
            .all(|name| {
                all.iter().any(|(_, n, power, host)| {
                    n == name && power == "poweredOn" && host.as_ref().is_some_and(|h| *h != dead)
                })
            })
            .then_some(())
    })
    .await;
    // No copy of them is left on the dead host, and none runs twice.
    let all = vms(&obs).await;
    for name in &dead_vms {
        let copies: Vec<_> = all.iter().filter(|(_, n, _, _)| n == name).collect();
        assert_eq!(copies.len(), 1, "{name} is registered once: {copies:?}");
    }
    let after = sim.inventory().await;
    assert!(
        after[&dead_name].1.is_empty(),
        "nothing registered on the dead host any more: {:?}",
        after[&dead_name]
    );
    let story = m.story();
    println!("{story}");
    assert!(
        m.intents()
            .iter()
            .filter(|a| matches!(a, Action::Failover { .. }))
            .count()
            >= dead_vms.len(),
        "one failover per VM:\n{story}"
    );
    assert!(
        m.alarm_raised(
            AlarmKind::HostUnreachable,
            &Subject::Host(dead_ref.as_str().into())
        ),
        "{story}"
    );
    m.stop().await;
}

/// (b) A VM a named user powers off raises a VmPoweredOff alarm and stays off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_power_off_raises_an_alarm_and_the_vm_stays_off() {
    let sim = Vcsim::start(2, 2, true, None);
    let m = Manager::start(&sim).await;
    let obs = observer(&sim).await;
    let (vm, name, _, _) = vms(&obs).await.into_iter().next().expect("a VM");
    sim.ctl(&format!("/vm/power-off?name={name}&user=alice")).await;
    let subject = Subject::Vm(vm.value.as_str().into());
    eventually(&m, "the VmPoweredOff alarm", || async {
        m.alarm_raised(AlarmKind::VmPoweredOff, &subject).then_some(())
    })
    .await;
    let message = m
        .alarms
        .lock()
        .unwrap()
        .iter()
        .find_map(|c| match c {
            AlarmChange::Raise(a) if a.kind == AlarmKind::VmPoweredOff => Some(a.message.clone()),
            _ => None,
        })
        .unwrap();
    assert!(message.contains("alice"), "{message}");
    // Longer than the power-off grace and a recovery step: still off, nothing done to it.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let now = vms(&obs).await;
    let (_, _, power, _) = now
        .iter()
        .find(|(r, _, _, _)| *r == vm)
        .expect("still registered");
    assert_eq!(power, "poweredOff", "the user's power-off stands:\n{}", m.story());
    let acted: Vec<Action> = m
        .intents()
        .into_iter()
        .filter(|a| {
            a.vm().is_some_and(|v| v.as_str() == vm.value)
                && !matches!(a, Action::CreateSnapshot { .. } | Action::RemoveSnapshot { .. })
        })
        .collect();
    assert!(
        acted.is_empty(),
        "no action on a VM a user switched off: {acted:?}\n{}",
        m.story()
    );
    m.stop().await;
}

/// (c) A red VMware Tools heartbeat gets the VM reset (vcsim records the manager powering it off
/// and on again), and no failover or migration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_red_heartbeat_resets_the_vm_and_moves_nothing() {
    let sim = Vcsim::start(2, 2, true, None);
    let m = Manager::start(&sim).await;
    let obs = observer(&sim).await;
    let (vm, name, _, host) = vms(&obs).await.into_iter().next().expect("a VM");
    let events_of = |vm: MoRef| {
        let obs = obs.clone();
        async move {
            obs.query_events(&EventFilter {
                entity: Some(vm),
                max_count: Some(1000),
                ..EventFilter::default()
            })
            .await
            .expect("events")
        }
    };
    let before = events_of(vm.clone())
        .await
        .iter()
        .map(|e| e.key)
        .max()
        .unwrap_or(0);
    sim.ctl(&format!("/vm/heartbeat?name={name}&status=red")).await;

    eventually(&m, "vcsim to record the reset", || async {
        let evs = events_of(vm.clone()).await;
        evs.iter()
            .any(|e| e.key > before && e.type_name == "VmPoweredOnEvent" && e.user_name == MANAGER)
            .then_some(())
    })
    .await;
    assert!(
        m.intents()
            .iter()
            .any(|a| matches!(a, Action::Reset { vm: v } if v.as_str() == vm.value)),
        "the manager reset it:\n{}",
        m.story()
    );
    // The guest is back after its reboot.
    sim.ctl(&format!("/vm/heartbeat?name={name}&status=green")).await;
    eventually(&m, "the VM to be healthy again", || async {
        m.log()
            .iter()
            .any(|e| {
                e.subject == Subject::Vm(vm.value.as_str().into())
                    && matches!(&e.kind, LogKind::Transition { to, reason, .. } if to == "healthy" && reason.contains("restart"))
            })
            .then_some(())
    })
    .await;
    let moved: Vec<Action> = m
        .intents()
        .into_iter()
        .filter(|a| {
            matches!(
                a,
                Action::Failover { .. }
                    | Action::MigrateCold { .. }
                    | Action::MigrateLive { .. }
                    | Action::RestoreClone { .. }
            )
        })
        .collect();
    assert!(moved.is_empty(), "nothing moved: {moved:?}\n{}", m.story());
    let now = vms(&obs).await;
    let (_, _, power, on) = now
        .iter()
        .find(|(r, _, _, _)| *r == vm)
        .expect("still registered");
    assert_eq!((power.as_str(), on), ("poweredOn", &host), "running where it was");
    m.stop().await;
}

/// (d) vCenter restarts (the process is killed and started again on the same port, its sessions
/// gone): the manager logs in again, reads the inventory again and keeps working (a user
/// power-off after the restart raises its alarm). Then its session is lost in the middle of a
/// wait for updates: same again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manager_survives_a_vcenter_restart() {
    let mut sim = Vcsim::start(2, 1, false, Some(&format!("127.0.0.1:{}", free_port())));
    let m = Manager::start(&sim).await;
    let first_sight = |m: &Manager| {
        m.log()
            .iter()
            .filter(|e| matches!(&e.kind, LogKind::Transition { from, .. } if from == "new"))
            .count()
    };
    let seen = first_sight(&m);
    let listen = sim.listen_addr();
    let url = sim.url.clone();
    sim.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The new instance has more VMs: the manager has logged in again and read the inventory again
    // when it sees them.
    let sim = Vcsim::start(2, 2, false, Some(&listen));
    assert_eq!(sim.url, url, "same address after the restart");
    eventually(&m, "the inventory of the restarted vCenter", || async {
        (first_sight(&m) > seen).then_some(())
    })
    .await;
    let obs = observer(&sim).await;
    let (vm, name, _, _) = vms(&obs).await.into_iter().next().expect("a VM");
    sim.ctl(&format!("/vm/power-off?name={name}&user=bob")).await;
    let subject = Subject::Vm(vm.value.as_str().into());
    eventually(&m, "the VmPoweredOff alarm after the restart", || async {
        m.alarm_raised(AlarmKind::VmPoweredOff, &subject).then_some(())
    })
    .await;
    // The session expires while the manager waits for updates: it logs in again, makes its
    // collectors again in the new session, and still sees what happens.
    sim.ctl("/fault?method=WaitForUpdatesEx&fault=NotAuthenticated")
        .await;
    let (vm2, name2, _, _) = vms(&obs)
        .await
        .into_iter()
        .find(|(r, _, power, _)| *r != vm && power == "poweredOn")
        .expect("another VM");
    tokio::time::sleep(Duration::from_secs(2)).await;
    sim.ctl(&format!("/vm/power-off?name={name2}&user=carol")).await;
    let subject2 = Subject::Vm(vm2.value.as_str().into());
    eventually(&m, "the VmPoweredOff alarm after a lost session", || async {
        m.alarm_raised(AlarmKind::VmPoweredOff, &subject2).then_some(())
    })
    .await;
    m.stop().await;
}

/// Connection problems are told apart and name the URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_errors_say_what_is_wrong() {
    let sim = Vcsim::start(1, 1, true, None);
    // The system trust store does not know the test bed's CA.
    let e = am_vsphere::connect(&ConnectSettings::new(
        &sim.url,
        "am",
        Password::new("x"),
        TlsMode::SystemRoots,
    ))
    .await
    .unwrap_err();
    assert!(matches!(e, ConnectError::Tls { .. }), "{e:?}");
    assert!(e.to_string().contains(&sim.url), "{e}");
    // Bad credentials.
    sim.ctl("/fault?method=Login&fault=InvalidLogin&message=bad%20password")
        .await;
    let e = am_vsphere::connect(&ConnectSettings::new(
        &sim.url,
        "am",
        Password::new("x"),
        sim.tls(),
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(e, ConnectError::Login { ref user, .. } if user == "am"),
        "{e:?}"
    );
    // Nobody listening.
    let nowhere = format!("https://127.0.0.1:{}/sdk", free_port());
    let e = am_vsphere::connect(&ConnectSettings::new(
        &nowhere,
        "am",
        Password::new("x"),
        sim.tls(),
    ))
    .await
    .unwrap_err();
    assert!(matches!(e, ConnectError::Unreachable { .. }), "{e:?}");
    assert!(e.to_string().contains(&nowhere), "{e}");
}

/// The inventory as a reader of `src` sees it, kept current with `changes`.
struct View<'a> {
    src: &'a VsphereBackend,
    inv: am_core::Inventory,
    version: String,
}

impl<'a> View<'a> {
    async fn new(src: &'a VsphereBackend) -> View<'a> {
        use am_core::InventorySource;
        let (inv, version) = src.snapshot().await.expect("inventory");
        View { src, inv, version }
    }

    /// Applies changes until `pred` holds (at most [`WAIT`]).
    async fn until(&mut self, what: &str, pred: impl Fn(&am_core::Inventory) -> bool) {
        use am_core::InventorySource;
        let deadline = tokio::time::Instant::now() + WAIT;
        while !pred(&self.inv) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; inventory: {:#?}",
                self.inv.vms
            );
            let c = self
                .src
                .changes(&self.version, Duration::from_secs(1))
                .await
                .expect("changes");
            for d in &c.deltas {
                self.inv.apply(d);
            }
            self.version = c.version;
        }
    }
}

/// Every action of the adapter, one after the other, as the inventory then shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_action_does_what_it_says_in_vcsim() {
    use am_core::{HostId, HvError, Hypervisor, PowerState, RestartPriority, VmId};
    let sim = Vcsim::start(2, 1, true, None);
    let settings = ConnectSettings::new(&sim.url, MANAGER, Password::new("secret"), sim.tls());
    let (client, _) = am_vsphere::connect(&settings).await.expect("connect");
    let mut opts = Options::default();
    opts.spares.insert(
        "spare-1".into(),
        am_vsphere::SpareHost {
            address: "esx-spare.example".into(),
            port: None,
            user: "root".into(),
            password: Password::new("esx"),
            thumbprint: None,
            cluster: None,
        },
    );
    opts.fence_hook = Some(am_vsphere::Hook::new(
        &["sh", "-c", "test {host_id} != ''"],
        Duration::from_secs(10),
    ));
    let clock: Arc<dyn Clock> = Arc::new(TestClock(tokio::time::Instant::now()));
    let hv = VsphereBackend::new(client, opts, clock).await.expect("backend");
    let mut view = View::new(&hv).await;
    assert_eq!(view.inv.hosts.len(), 2);
    let vm: VmId = view.inv.vms.keys().next().cloned().expect("a VM");
    let home: HostId = view.inv.vms[&vm].host.clone().expect("registered");
    let other: HostId = view.inv.hosts.keys().find(|h| **h != home).cloned().unwrap();
    let on = |vm: &VmId, host: &HostId| {
        let (vm, host) = (vm.clone(), host.clone());
        move |inv: &am_core::Inventory| {
            inv.vms
                .get(&vm)
                .is_some_and(|v| v.host.as_ref() == Some(&host) && v.power == PowerState::PoweredOn)
        }
    };

    // Power.
    let e = hv.execute(&Action::PowerOn { vm: vm.clone() }).await.unwrap_err();
    assert!(matches!(e, HvError::InvalidState { .. }), "{e:?}");
    hv.execute(&Action::PowerOff { vm: vm.clone() }).await.unwrap();
    view.until("power off", |i| i.vms[&vm].power == PowerState::PoweredOff)
        .await;
    hv.execute(&Action::PowerOn { vm: vm.clone() }).await.unwrap();
    hv.execute(&Action::Reset { vm: vm.clone() }).await.unwrap();
    view.until("power on", on(&vm, &home)).await;

    // Snapshots.
    let snap = hv
        .execute(&Action::CreateSnapshot {
            vm: vm.clone(),
            name: "am-backup-1".into(),
        })
        .await
        .unwrap();
    let snap = snap.snapshot().cloned().expect("a snapshot");
    view.until("the snapshot", |i| {
        i.snapshots
            .get(&vm)
            .is_some_and(|s| s.iter().any(|s| s.id == snap && s.name == "am-backup-1"))
    })
    .await;
    hv.execute(&Action::RevertSnapshot {
        vm: vm.clone(),
        snapshot: Some(snap.clone()),
    })
    .await
    .unwrap();
    hv.execute(&Action::RevertSnapshot {
        vm: vm.clone(),
        snapshot: None,
    })
    .await
    .unwrap();
    hv.execute(&Action::RemoveSnapshot {
        vm: vm.clone(),
        snapshot: snap.clone(),
    })
    .await
    .unwrap();
    view.until("no snapshot", |i| !i.snapshots.contains_key(&vm))
        .await;
    let e = hv
        .execute(&Action::RemoveSnapshot {
            vm: vm.clone(),
            snapshot: snap.clone(),
        })
        .await
        .unwrap_err();
    assert!(matches!(e, HvError::NotFound { .. }), "{e:?}");

    // Migrations.
    hv.execute(&Action::MigrateLive {
        vm: vm.clone(),
        to: other.clone(),
    })
    .await
    .unwrap();
    view.until("live migration", on(&vm, &other)).await;
    hv.execute(&Action::MigrateCold {
        vm: vm.clone(),
        to: home.clone(),
    })
    .await
    .unwrap();
    view.until("cold migration", on(&vm, &home)).await;

    // A backup clone, and a restore from it onto the other host.
    let backup = hv
        .execute(&Action::Clone {
            vm: vm.clone(),
            name: "bk-1".into(),
            host: other.clone(),
            datastore: None,
        })
        .await
        .unwrap();
    let backup = backup.vm().cloned().expect("a clone");
    view.until("the backup clone, on the host asked for", |i| {
        i.vms.get(&backup).is_some_and(|b| {
            b.host.as_ref() == Some(&other)
                && b.backup_of.as_ref() == Some(&vm)
                && b.priority == RestartPriority::Disabled
                && b.power == PowerState::PoweredOff
        })
    })
    .await;
    assert_eq!(
        view.inv.latest_clone(&vm).map(|c| c.id.clone()),
        Some(backup.clone())
    );
    hv.execute(&Action::RestoreClone {
        vm: vm.clone(),
        backup: backup.clone(),
        host: other.clone(),
    })
    .await
    .unwrap();
    view.until("the VM restored on the other host, same id", on(&vm, &other))
        .await;
    assert!(
        view.inv.vms[&vm].backup_of.is_none(),
        "the restored VM is no backup"
    );
    assert!(view.inv.vms.contains_key(&backup), "the backup stays");
    // Its new moref works for every action under the old id.
    hv.execute(&Action::Reset { vm: vm.clone() }).await.unwrap();

    // Unregister, register again (another VM: vcsim cannot register a clone's files again).
    let vm2: VmId = view
        .inv
        .vms
        .keys()
        .find(|v| **v != vm && **v != backup)
        .cloned()
        .expect("a second VM");
    let home2 = view.inv.vms[&vm2].host.clone().expect("registered");
    hv.execute(&Action::PowerOff { vm: vm2.clone() }).await.unwrap();
    hv.execute(&Action::Unregister { vm: vm2.clone() }).await.unwrap();
    view.until("unregistered: no host", |i| {
        i.vms.get(&vm2).is_some_and(|v| v.host.is_none())
    })
    .await;
    let e = hv
        .execute(&Action::PowerOn { vm: vm2.clone() })
        .await
        .unwrap_err();
    assert!(matches!(e, HvError::InvalidState { .. }), "{e:?}");
    hv.execute(&Action::Register {
        vm: vm2.clone(),
        host: home2.clone(),
    })
    .await
    .unwrap();
    view.until("registered on its home, same id", |i| {
        i.vms.get(&vm2).is_some_and(|v| v.host.as_ref() == Some(&home2))
    })
    .await;
    hv.execute(&Action::Failover {
        vm: vm2.clone(),
        to: home2.clone(),
    })
    .await
    .unwrap();
    view.until("powered on where it is", on(&vm2, &home2)).await;

    // Hosts.
    hv.execute(&Action::EnterMaintenance { host: other.clone() })
        .await
        .unwrap();
    view.until("maintenance", |i| i.hosts[&other].maintenance).await;
    hv.execute(&Action::ExitMaintenance { host: other.clone() })
        .await
        .unwrap();
    view.until("out of maintenance", |i| !i.hosts[&other].maintenance)
        .await;
    hv.execute(&Action::FenceHost { host: other.clone() })
        .await
        .unwrap();
    let e = hv
        .execute(&Action::ReviveHost { host: other.clone() })
        .await
        .unwrap_err();
    assert!(matches!(e, HvError::NotSupported { .. }), "{e:?}");
    let spare = hv
        .execute(&Action::AddHost {
            spare: "spare-1".into(),
        })
        .await
        .unwrap();
    let spare = spare.host().cloned().expect("a host");
    view.until("the spare host", |i| {
        i.hosts.get(&spare).is_some_and(|h| h.name == "esx-spare.example")
    })
    .await;
    assert_eq!(
        hv.execute(&Action::AddHost {
            spare: "spare-1".into()
        })
        .await
        .unwrap()
        .host(),
        Some(&spare),
        "added once"
    );
    let e = hv
        .execute(&Action::AddHost {
            spare: "spare-9".into(),
        })
        .await
        .unwrap_err();
    assert!(matches!(e, HvError::NotFound { .. }), "{e:?}");
    hv.execute(&Action::RemoveHost { host: spare.clone() })
        .await
        .unwrap();
    view.until("the spare removed", |i| !i.hosts.contains_key(&spare))
        .await;
}

/// The daemon's own entry point (`am_daemon::run::run_with`, what `am-daemon run` calls): TLS
/// with the configured CA file, the password from a file, the manager's user from the session;
/// a user's power-off raises its alarm; the shutdown future stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_runs_against_vcenter_until_shut_down() {
    use am_daemon::config::{DaemonConfig, SecretSource, VcenterConfig};
    use am_daemon::run::{RunExtras, run_with};
    let sim = Vcsim::start(2, 1, true, None);
    let dir = std::env::temp_dir().join(format!("am-e2e-pw-{}", std::process::id()));
    std::fs::write(&dir, "secret\n").unwrap();
    let cfg = DaemonConfig {
        vcenter: Some(VcenterConfig {
            url: sim.url.clone(),
            user: "svc-am".into(),
            password: SecretSource {
                env: None,
                file: Some(dir.clone()),
            },
            ca_file: sim.ca_file.clone(),
            ..VcenterConfig::default()
        }),
        // Its own ephemeral port: never the default one another process may hold.
        api: am_daemon::config::ApiConfig {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            token: None,
        },
        ..DaemonConfig::default()
    };
    let journal = MemoryJournal::default();
    let alarms = Arc::new(Mutex::new(Vec::new()));
    let extras = RunExtras {
        journal: Some(Box::new(journal.clone())),
        sinks: vec![Box::new(Alarms(alarms.clone()))],
        ..RunExtras::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(run_with(cfg, extras, async {
        let _ = stopped.await;
    }));
    let obs = observer(&sim).await;
    let (vm, name, _, _) = vms(&obs).await.into_iter().next().expect("a VM");
    let read = || {
        journal
            .records()
            .iter()
            .any(|r| matches!(r, Record::Decision(e) if matches!(&e.kind, LogKind::Transition { from, .. } if from == "new")))
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while !read() {
        assert!(!daemon.is_finished(), "the daemon stopped: {:?}", daemon.await);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the daemon never read the inventory"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    sim.ctl(&format!("/vm/power-off?name={name}&user=alice")).await;
    let subject = Subject::Vm(vm.value.as_str().into());
    let raised = || {
        alarms.lock().unwrap().iter().any(
            |c| matches!(c, AlarmChange::Raise(a) if a.kind == AlarmKind::VmPoweredOff && a.subject == subject),
        )
    };
    while !raised() {
        assert!(tokio::time::Instant::now() < deadline, "no VmPoweredOff alarm");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop.send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(30), daemon)
        .await
        .expect("the daemon stops on shutdown")
        .expect("the daemon task");
    let _ = std::fs::remove_file(&dir);
    result.expect("a clean stop");
}

/// `run` with its SQLite journal and its HTTP API, against vcsim: the API serves the status and
/// the alarm; after a restart of the daemon on the same journal, the VM alice switched off is
/// still known as hers (never failed over), and action ids do not restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_keeps_its_journal_and_serves_its_api() {
    use am_daemon::config::{ApiConfig, DaemonConfig, SecretSource, VcenterConfig};
    use am_daemon::run::{RunExtras, run_with};
    let sim = Vcsim::start(2, 1, true, None);
    let tag = format!("{}-{}", std::process::id(), line!());
    let pw = std::env::temp_dir().join(format!("am-e2e-pw-{tag}"));
    let journal = std::env::temp_dir().join(format!("am-e2e-journal-{tag}.db"));
    let _ = std::fs::remove_file(&journal);
    std::fs::write(&pw, "secret\n").unwrap();
    // A free loopback port for the API.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let cfg = DaemonConfig {
        vcenter: Some(VcenterConfig {
            url: sim.url.clone(),
            user: "svc-am".into(),
            password: SecretSource {
                env: None,
                file: Some(pw.clone()),
            },
            ca_file: sim.ca_file.clone(),
            ..VcenterConfig::default()
        }),
        journal: Some(journal.clone()),
        api: ApiConfig {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            token: None,
        },
        ..DaemonConfig::default()
    };
    let start = |cfg: DaemonConfig| {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let daemon = tokio::spawn(run_with(cfg, RunExtras::default(), async {
            let _ = stopped.await;
        }));
        (stop, daemon)
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    let until = |what: &'static str| {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250))
    };

    let (stop, daemon) = start(cfg.clone());
    while !am_api::fetch_ready(&url).await.unwrap_or(false) {
        assert!(!daemon.is_finished(), "the daemon stopped: {:?}", daemon.await);
        until("/readyz").await;
    }
    let status = am_api::fetch_status(&url).await.expect("status over HTTP");
    assert!(
        !status.hosts.is_empty() && !status.vms.is_empty(),
        "the status lists hosts and VMs"
    );
    let obs = observer(&sim).await;
    let (vm, name, _, _) = vms(&obs).await.into_iter().next().expect("a VM");
    sim.ctl(&format!("/vm/power-off?name={name}&user=alice")).await;
    let id = am_core::VmId::from(vm.value.as_str());
    while !am_api::fetch_alarms(&url)
        .await
        .unwrap_or_default()
        .iter()
        .any(|a| a.kind == AlarmKind::VmPoweredOff && a.subject == Subject::Vm(id.clone()))
    {
        until("the VmPoweredOff alarm over HTTP").await;
    }
    stop_daemon(stop, daemon).await;

    let recovered = recover(&journal);
    assert_eq!(
        recovered.user_offs.get(&id).map(String::as_str),
        Some("alice"),
        "the mark is journaled"
    );
    let first_next = recovered.next_action_id;

    // A new daemon on the same journal: alice's VM is still hers.
    let (stop, daemon) = start(cfg);
    loop {
        if let Ok(s) = am_api::fetch_status(&url).await
            && let Some(row) = s.vms.iter().find(|v| v.id == id)
        {
            assert_eq!(row.state, "off(by alice)", "restored as switched off by alice");
            break;
        }
        assert!(
            !daemon.is_finished(),
            "the second daemon stopped: {:?}",
            daemon.await
        );
        until("the second daemon's status").await;
    }
    stop_daemon(stop, daemon).await;
    let again = recover(&journal);
    assert!(again.next_action_id >= first_next, "action ids never restart");
    let _ = std::fs::remove_file(&pw);
    let _ = std::fs::remove_file(&journal);
}

/// Stops a daemon started with `run_with` and waits (bounded) for its clean stop.
async fn stop_daemon(
    stop: tokio::sync::oneshot::Sender<()>,
    daemon: tokio::task::JoinHandle<Result<(), am_daemon::run::RunError>>,
) {
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), daemon)
        .await
        .expect("stops")
        .expect("task")
        .expect("clean stop");
}

/// What a journal file recovers.
fn recover(path: &std::path::Path) -> am_store::Recovered {
    am_store::SqliteJournal::open(path).unwrap().recover().unwrap()
}
