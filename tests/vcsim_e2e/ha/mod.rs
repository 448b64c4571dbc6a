//! Manager HA on etcd (issue 13): real `am-daemon run` processes (built with `--features etcd`)
//! share one unit on an etcd on loopback, against one vcsim. A leader killed with SIGKILL in the
//! middle of a host failover is replaced by the standby, which completes it: no VM runs twice,
//! none is left off. A leader frozen (SIGSTOP) past its lease stops acting once it thaws.
//!
//! Rooms: this file is the harness (the daemon processes, waits, what etcd and vCenter show);
//! `takeover` the leader's death, freeze and cut-off with two and three daemons; `shard` four
//! clusters over three daemons; `bench` the takeover time (`cargo xtask bench-ha`).

mod bench;
mod shard;
mod takeover;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use am_core::Record;
use am_testbed::{EtcdServer, Vcsim, signal};

use crate::common::*;

/// The daemon binary with etcd support, built once per test run (a no-op when `cargo xtask test`
/// built it already).
fn daemon_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = am_testbed::workspace_root();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        // The test's own cargo variables would make build scripts (ring's) run again, and the
        // test build after this one too: build as from a shell.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().into_owned();
            if (k.starts_with("CARGO_") && !matches!(k.as_str(), "CARGO_HOME" | "CARGO_TARGET_DIR"))
                || k == "OUT_DIR"
                || k.starts_with("RUSTC")
            {
                build.env_remove(&k);
            }
        }
        let status = build
            .current_dir(&root)
            .args([
                "build",
                "-q",
                "-p",
                "am-daemon",
                "--features",
                "etcd",
                "--bin",
                "am-daemon",
            ])
            .status()
            .expect("running cargo build for am-daemon");
        assert!(status.success(), "building am-daemon --features etcd failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        let bin = target.join("debug").join("am-daemon");
        assert!(bin.is_file(), "no daemon binary at {}", bin.display());
        bin
    })
    .clone()
}

/// A loopback port such that it and the `n - 1` after it are free now.
fn free_ports(n: u16) -> u16 {
    loop {
        let base = am_testbed::free_port();
        if base.checked_add(n).is_none() {
            continue;
        }
        let held: Vec<_> = (0..n)
            .map_while(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).ok())
            .collect();
        if held.len() == usize::from(n) {
            return base;
        }
    }
}

/// One `am-daemon run` process; killed on drop.
pub(super) struct Daemon {
    child: Option<Child>,
    pub(super) name: String,
    pub(super) url: String,
    pub(super) port: u16,
    log: PathBuf,
}

impl Daemon {
    pub(super) fn start(sim: &Vcsim, etcd: &EtcdServer, name: &str, dir: &std::path::Path) -> Daemon {
        Daemon::start_with_ttl(sim, etcd, name, dir, 2)
    }

    pub(super) fn start_with_ttl(
        sim: &Vcsim,
        etcd: &EtcdServer,
        name: &str,
        dir: &std::path::Path,
        ttl_s: u64,
    ) -> Daemon {
        Daemon::start_config(sim, etcd, name, dir, ttl_s, "unit = \"vc\"")
    }

    /// A daemon sharing `units` (clusters) with the others.
    pub(super) fn start_sharded(
        sim: &Vcsim,
        etcd: &EtcdServer,
        name: &str,
        dir: &std::path::Path,
        units: &[String],
    ) -> Daemon {
        Daemon::start_config(sim, etcd, name, dir, 2, &format!("units = {units:?}"))
    }

    pub(super) fn start_config(
        sim: &Vcsim,
        etcd: &EtcdServer,
        name: &str,
        dir: &std::path::Path,
        ttl_s: u64,
        unit_line: &str,
    ) -> Daemon {
        // The base port and the next four (a sharded daemon's units' APIs) all free now.
        let port = free_ports(5);
        let pw = dir.join("pw");
        std::fs::write(&pw, "secret\n").unwrap();
        let ca = sim
            .ca_file
            .as_ref()
            .map(|c| format!("ca_file = {:?}\n", c.display().to_string()))
            .unwrap_or_default();
        let config = format!(
            r#"
[vcenter]
url = "{url}"
user = "svc-am"
password = {{ file = {pw:?} }}
{ca}health_interval = "1s"
health_timeout = "2s"

[api]
listen = "127.0.0.1:{port}"

[targets.hosts]
address = "none"
[targets.guests]
address = "none"

[supervisor]
single_signal_confirm = "2s"
revive_interval = "5s"

[etcd]
endpoints = ["{etcd}"]
{unit_line}
name = "{name}"
lease_ttl = "{ttl_s}s"
request_timeout = "1s"
poll_interval = "100ms"
"#,
            url = sim.url,
            pw = pw.display().to_string(),
            etcd = etcd.url,
        );
        let cfg = dir.join(format!("{name}.toml"));
        std::fs::write(&cfg, config).unwrap();
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(daemon_binary())
            .args(["--log-level", "info", "run", "--config"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting am-daemon");
        Daemon {
            child: Some(child),
            name: name.into(),
            url: format!("http://127.0.0.1:{port}"),
            port,
            log,
        }
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub(super) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The leadership as its API shows it, if it answers.
    pub(super) async fn ha(&self) -> Option<am_api::HaView> {
        am_api::fetch_status(&self.url).await.ok()?.ha
    }

    /// Whether it exited, and how.
    pub(super) fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    pub(super) fn kill9(&mut self) {
        signal(self.pid(), "KILL");
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-s", "CONT", &c.id().to_string()])
                .stderr(Stdio::null())
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls `check` every 200 ms for at most [`WAIT`]; fails with the daemons' logs.
pub(super) async fn until<T>(
    what: &str,
    daemons: &[&Daemon],
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            let logs: String = daemons
                .iter()
                .map(|d| format!("--- {} ---\n{}\n", d.name, tail(&d.log(), 60)))
                .collect();
            panic!("timed out after {}s waiting for {what}\n{logs}", WAIT.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(super) fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Every batch the unit's journal holds in etcd, in order.
pub(super) async fn journal(etcd: &EtcdServer) -> Vec<Record> {
    let mut c = etcd_client::Client::connect([etcd.url.as_str()], None)
        .await
        .unwrap();
    let keys = am_etcd::Keys::new("/am", "vc");
    let got = c
        .get(
            keys.batch(0),
            Some(etcd_client::GetOptions::new().with_range(keys.batches_end())),
        )
        .await
        .unwrap();
    got.kvs()
        .iter()
        .flat_map(|kv| serde_json::from_slice::<Vec<Record>>(kv.value()).unwrap())
        .collect()
}

pub(super) fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("am-ha-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts `a` and waits until it leads and has read the inventory, then `b` until it stands by.
pub(super) async fn leader_and_standby(
    sim: &Vcsim,
    etcd: &EtcdServer,
    dir: &std::path::Path,
) -> (Daemon, Daemon) {
    leader_and_standby_ttl(sim, etcd, dir, 2).await
}

pub(super) async fn leader_and_standby_ttl(
    sim: &Vcsim,
    etcd: &EtcdServer,
    dir: &std::path::Path,
    ttl_s: u64,
) -> (Daemon, Daemon) {
    let a = Daemon::start_with_ttl(sim, etcd, "a", dir, ttl_s);
    until("a to lead and read the inventory", &[&a], async || {
        let s = am_api::fetch_status(&a.url).await.ok()?;
        (s.ha.as_ref()?.leading && !s.vms.is_empty()).then_some(())
    })
    .await;
    let b = Daemon::start_with_ttl(sim, etcd, "b", dir, ttl_s);
    until("b to stand by behind a", &[&a, &b], async || {
        let ha = b.ha().await?;
        (!ha.leading && ha.leader.as_deref() == Some("a")).then_some(())
    })
    .await;
    (a, b)
}

/// Every event vCenter keeps (vcsim applies no filter but the count).
pub(super) async fn events(obs: &am_vsphere::vsphere_soap::Client) -> Vec<am_vsphere::vsphere_soap::Event> {
    obs.query_events(&am_vsphere::vsphere_soap::EventFilter {
        max_count: Some(1000),
        ..am_vsphere::vsphere_soap::EventFilter::default()
    })
    .await
    .expect("events")
}

/// How many times vCenter powered on each VM (by name) in events after `after` (their key).
pub(super) async fn power_ons(
    obs: &am_vsphere::vsphere_soap::Client,
    after: i64,
) -> std::collections::BTreeMap<String, usize> {
    let mut n = std::collections::BTreeMap::new();
    for e in events(obs).await {
        if e.key > after
            && e.type_name == "VmPoweredOnEvent"
            && let Some(vm) = e.vm
        {
            *n.entry(vm.name).or_insert(0) += 1;
        }
    }
    n
}

/// The dead host's VMs all run, once each, on other hosts.
pub(super) async fn all_moved(
    sim: &Vcsim,
    obs: &am_vsphere::vsphere_soap::Client,
    dead_ref: &str,
    names: &[String],
) -> bool {
    let all = vms(obs).await;
    names.iter().all(|name| {
        all.iter().any(|(_, n, power, host)| {
            n == name && power == "poweredOn" && host.as_ref().is_some_and(|h| h.value != dead_ref)
        })
    }) && each_runs_once(sim).is_ok()
}

/// The largest action id journaled so far.
pub(super) fn max_intent(records: &[Record]) -> u64 {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Intent { id, .. } => Some(id.0),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}
