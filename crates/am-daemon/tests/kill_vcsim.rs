//! `am-daemon run`, the real binary, killed with SIGKILL at every step of a failover against the
//! vcsim test bed, and started again on its journal: before the unregistration, between the
//! unregistration and the registration, during the registration, before and during the power-on.
//! The test bed holds the SOAP call of that step until the daemon is dead, then lets vCenter
//! finish it (or drops it: the call never happened). Whatever the step, in the end every VM runs
//! exactly once (the test bed's truth: what runs where, whatever vCenter says), is registered
//! once, and none is left off.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use am_testbed::{Spec, Vcsim};

/// Every wait is bounded by this.
const WAIT: Duration = Duration::from_secs(120);

struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(config: &Path, log: &Path) -> Daemon {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_am-daemon"))
            .args(["--log-level", "info", "run", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("starting am-daemon");
        Daemon {
            child,
            log: log.to_path_buf(),
        }
    }

    /// SIGKILL: no goodbye, no logout, no flush beyond what the journal already has.
    fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn until<T>(what: &str, daemon: &Daemon, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; the daemon's log:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The config of a daemon on `sim`, nothing probed (vCenter's connection state is the one
/// signal; a crashed host holds no lock), with short windows.
fn config(dir: &Path, sim: &Vcsim) -> PathBuf {
    let pw = dir.join("pw");
    std::fs::write(&pw, "secret\n").unwrap();
    let text = format!(
        r#"
journal = "{journal}"
[vcenter]
url = "{url}"
user = "svc-am"
password = {{ file = "{pw}" }}
ca_file = "{ca}"
health_interval = "1s"
[api]
listen = "127.0.0.1:{port}"
[targets.hosts]
address = "none"
[targets.guests]
address = "none"
[supervisor]
single_signal_confirm = "2s"
reconcile_window = "10s"
revive_interval = "5s"
[supervisor.backup]
snapshot_every = "0s"
"#,
        journal = dir.join("journal.db").display(),
        url = sim.url,
        pw = pw.display(),
        ca = sim.ca_file.as_ref().unwrap().display(),
        port = am_testbed::free_port(),
    );
    let path = dir.join("am.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Every VM of `vms` (by `.vmx` path) runs exactly once and is registered once; `Err` says which
/// does not (a VM vCenter lost shows as registered 0 times).
fn each_runs_once(sim: &Vcsim, vms: &[String]) -> Result<(), String> {
    let registered = sim.registrations();
    let running = sim.running();
    let mut bad = Vec::new();
    for vmx in vms {
        let on = running.get(vmx).cloned().unwrap_or_default();
        if on.len() != 1 {
            bad.push(format!("{vmx} runs on {on:?}"));
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

/// One kill point: the SOAP method held, and whether vCenter then does it (`forward`) or not
/// (`drop`).
fn kill_during(method: &str, then: &str) {
    let sim = Vcsim::start(&Spec {
        hosts: 3,
        vms_per_host: 2,
        nfs: true,
        ..Spec::default()
    });
    let dir = std::env::temp_dir().join(format!("am-kill-{}-{method}-{then}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = config(&dir, &sim);
    let log = dir.join("daemon.log");
    let first = Daemon::start(&cfg, &log);
    until("the daemon to read the inventory", &first, || {
        first
            .log()
            .contains("-> up (in the inventory, connected)")
            .then_some(())
    });
    let vms: Vec<String> = sim.running().into_keys().collect();
    assert!(vms.len() >= 6, "the VMs to check: {vms:?}");
    let inv = sim.inventory();
    let victim = inv
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|h| h["vms"].as_array().map_or(0, Vec::len))
        .unwrap()["name"]
        .as_str()
        .unwrap()
        .to_owned();
    sim.post(&format!("/hold?method={method}&then={then}"));
    sim.post(&format!("/host/crash?name={victim}"));
    until(&format!("a {method} call to be held"), &first, || {
        sim.get("/held")
            .as_array()
            .is_some_and(|a| !a.is_empty())
            .then_some(())
    });
    first.kill9();
    // vCenter finishes (or never does) what the dead daemon started.
    sim.post(&format!("/release?method={method}"));
    let second = Daemon::start(&cfg, &log);
    until(
        "every VM to run exactly once, registered once, none left off",
        &second,
        || each_runs_once(&sim, &vms).ok(),
    );
    // And it stays so.
    std::thread::sleep(Duration::from_secs(5));
    each_runs_once(&sim, &vms).unwrap_or_else(|e| panic!("{e}\n{}", second.log()));
    let text = second.log();
    assert!(
        !text.contains("off when first seen: left off"),
        "no VM whose failover was unfinished is taken for one a user switched off:\n{text}"
    );
    drop(second);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn killed_before_the_unregistration() {
    kill_during("UnregisterVM", "drop");
}

#[test]
fn killed_between_the_unregistration_and_the_registration() {
    kill_during("RegisterVM_Task", "drop");
}

#[test]
fn killed_during_the_registration() {
    kill_during("RegisterVM_Task", "forward");
}

#[test]
fn killed_before_the_power_on() {
    kill_during("PowerOnVM_Task", "drop");
}

#[test]
fn killed_during_the_power_on() {
    kill_during("PowerOnVM_Task", "forward");
}
