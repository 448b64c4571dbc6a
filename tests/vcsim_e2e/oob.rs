//! Out-of-band control end to end: `am_daemon::run::run_with` (what `am-daemon run` calls) with
//! `[bmc]` pointing at sushy-tools' Redfish emulator over TLS (its fake driver notifies the vcsim
//! test bed, so a Redfish power-off takes the host down) or `[admin_vcenter]` pointing at an
//! admin vcsim whose VMs are the managed hosts. A missing sushy-emulator fails these tests.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use am_core::{Action, AlarmChange, AlarmKind, LogEntry, LogKind, MemoryJournal, Record, Subject};
use am_daemon::config::DaemonConfig;
use am_daemon::run::{RunError, RunExtras, run_with};
use am_testbed::{Spec, Sushy, SushySpec, Vcsim};

use crate::common::*;

/// `run_with` on a configuration, and what it journaled.
struct Daemon {
    journal: MemoryJournal,
    alarms: Arc<Mutex<Vec<AlarmChange>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), RunError>>,
    files: Vec<std::path::PathBuf>,
}

fn secret_file(tag: &str, secret: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("am-e2e-oob-{tag}-{}-{}", std::process::id(), rand_tag()));
    std::fs::write(&p, format!("{secret}\n")).unwrap();
    p
}

fn rand_tag() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

impl Daemon {
    /// The daemon against `sim` (nothing probed: vCenter's connection state and the power read
    /// out of band are the signals), with `extra` TOML after its `[supervisor]` keys.
    async fn start(sim: &Vcsim, supervisor: &str, extra: &str) -> Daemon {
        let pw = secret_file("vc", "secret");
        let ca = sim
            .ca_file
            .as_ref()
            .map(|c| format!("ca_file = {:?}\n", c.display().to_string()))
            .unwrap_or_default();
        let text = format!(
            "[vcenter]\nurl = {:?}\nuser = \"svc-am\"\npassword = {{ file = {:?} }}\n{ca}\
             [api]\nlisten = \"127.0.0.1:0\"\n\
             [targets.hosts]\naddress = \"none\"\n[targets.guests]\naddress = \"none\"\n\
             [supervisor]\nsingle_signal_confirm = \"2s\"\nrevive_interval = \"5s\"\n{supervisor}\n{extra}",
            sim.url,
            pw.display().to_string(),
        );
        let cfg = DaemonConfig::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let journal = MemoryJournal::default();
        let alarms = Arc::new(Mutex::new(Vec::new()));
        let extras = RunExtras {
            journal: Some(Box::new(journal.clone())),
            sinks: vec![Box::new(Alarms(alarms.clone()))],
            ..RunExtras::default()
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run_with(cfg, extras, async {
            let _ = stopped.await;
        }));
        let d = Daemon {
            journal,
            alarms,
            stop: Some(stop),
            task,
            files: vec![pw],
        };
        d.wait("the inventory to be read", |log| {
            log.iter()
                .any(|e| matches!(&e.kind, LogKind::Transition { from, .. } if from == "new"))
        })
        .await;
        d
    }

    fn log(&self) -> Vec<LogEntry> {
        self.journal
            .records()
            .into_iter()
            .filter_map(|r| match r {
                Record::Decision(e) => Some(e),
                _ => None,
            })
            .collect()
    }

    fn story(&self) -> String {
        self.log()
            .iter()
            .filter(|e| !matches!(&e.kind, LogKind::Transition { from, .. } if from == "new"))
            .map(|e| format!("  {e}\n"))
            .collect()
    }

    fn issued(&self) -> Vec<(am_core::Time, Action)> {
        self.log()
            .into_iter()
            .filter_map(|e| match e.kind {
                LogKind::Issued { action, .. } => Some((e.at, action)),
                _ => None,
            })
            .collect()
    }

    fn alarm_text(&self, kind: AlarmKind, subject: &Subject) -> Option<String> {
        self.alarms.lock().unwrap().iter().rev().find_map(|c| match c {
            AlarmChange::Raise(a) if a.kind == kind && a.subject == *subject => Some(a.message.clone()),
            _ => None,
        })
    }

    /// Waits (every 20 ms, at most [`WAIT`]) until `check` holds of the audit trail.
    async fn wait(&self, what: &str, check: impl Fn(&[LogEntry]) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            if check(&self.log()) {
                return;
            }
            assert!(
                !self.task.is_finished(),
                "the daemon stopped while waiting for {what}:\n{}",
                self.story()
            );
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the daemon's story:\n{}",
                self.story()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the daemon (`AM_E2E_STORY=1` prints its story first).
    async fn stop(mut self) {
        if std::env::var_os("AM_E2E_STORY").is_some() {
            println!("{}", self.story());
        }
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let r = tokio::time::timeout(Duration::from_secs(30), &mut self.task)
            .await
            .expect("the daemon stops on shutdown")
            .expect("the daemon task");
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
        r.expect("a clean stop");
    }
}

fn tls_bed() -> Vcsim {
    Vcsim::start(&Spec {
        hosts: 3,
        vms_per_host: 2,
        tls: true,
        ..Spec::default()
    })
}

/// sushy over TLS with basic auth, one system per host, notifying `sim`.
fn bmcs(sim: &Vcsim, refuse_power_off: bool) -> Sushy {
    Sushy::start(&SushySpec {
        user_password: Some(("am".into(), "bmc-secret".into())),
        tls: true,
        disable_power_off: refuse_power_off,
        ..sim.sushy_spec()
    })
}

/// `[bmc]` for every host of `sim` at `sushy`, trusting its CA; the password from a file.
fn bmc_toml(sim: &Vcsim, sushy: &Sushy, d_files: &mut Vec<std::path::PathBuf>, poll: &str) -> String {
    let pw = secret_file("bmc", "bmc-secret");
    let mut t = format!(
        "[bmc]\nuser = \"am\"\npassword = {{ file = {:?} }}\nca_file = {:?}\npoll_interval = {poll:?}\nconfirm_timeout = \"30s\"\n",
        pw.display().to_string(),
        sushy.ca_file.as_ref().unwrap().display().to_string(),
    );
    for h in sim.host_names() {
        t.push_str(&format!(
            "[bmc.hosts.{h:?}]\nurl = {:?}\nsystem = {:?}\n",
            sushy.url,
            sushy.system_id(&h)
        ));
    }
    d_files.push(pw);
    t
}

fn host_subject(moref: &str) -> Subject {
    Subject::Host(moref.into())
}

fn failovers(d: &Daemon) -> Vec<(am_core::Time, String)> {
    d.issued()
        .into_iter()
        .filter_map(|(at, a)| match a {
            Action::Failover { vm, .. } => Some((at, vm.to_string())),
            _ => None,
        })
        .collect()
}

/// The VMs (by `.vmx`) that run on `host`, by the test bed's truth.
fn running_on(sim: &Vcsim, host: &str) -> Vec<String> {
    sim.running()
        .into_iter()
        .filter(|(_, hosts)| hosts.iter().any(|h| h == host))
        .map(|(vmx, _)| vmx)
        .collect()
}

/// (a) A host loses power: its BMC reads Off. The daemon, told by vCenter that the host is not
/// responding, reads the BMC at once: two independent signals, dead, its VMs restart. Measured
/// (and printed): from the host going down to the first failover issued, by the wall clock and by
/// the daemon's own audit timestamps (goal: 1 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_its_bmc_reads_off_has_its_vms_restarted_at_once() {
    let sim = tls_bed();
    let sushy = bmcs(&sim, false);
    let (host, moref, vms) = busiest(&sim);
    let mut files = Vec::new();
    // Polled rarely: the read that decides is the one made when vCenter loses the host.
    let bmc = bmc_toml(&sim, &sushy, &mut files, "60s");
    let mut d = Daemon::start(&sim, "", &bmc).await;
    d.files.extend(files);
    let before = running_on(&sim, &host);
    assert!(!before.is_empty(), "nothing runs on {host}");

    sushy.force(&host, "ForceOff");
    // The fake driver applies the power-off on the first read after its apply time, and the host
    // goes down inside that read: read every 20 ms, so that when Off is read the host is down.
    let sushy = Arc::new(sushy);
    let s = sushy.clone();
    let h = host.clone();
    let down_at = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if s.power_state(&h) == "Off" {
                return Instant::now();
            }
            assert!(
                Instant::now() < deadline,
                "{h}'s BMC never applied the ForceOff:\n{}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap();
    assert!(
        !sim.host_alive(&host),
        "{host} is still alive after its BMC read Off"
    );
    let failover_seen = loop {
        if !failovers(&d).is_empty() {
            break Instant::now();
        }
        assert!(
            down_at.elapsed() < WAIT,
            "no failover after {host} lost power; the story:\n{}",
            d.story()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let log = d.log();
    let subject = host_subject(&moref);
    let lost = log
        .iter()
        .find(|e| e.subject == subject && matches!(&e.kind, LogKind::Transition { from, .. } if from == "up"))
        .unwrap_or_else(|| panic!("no transition of {host} out of up:\n{}", d.story()));
    let first = failovers(&d)[0].0;
    let audit_ms = first.since(lost.at).as_millis();
    let wall_ms = failover_seen.saturating_duration_since(down_at).as_millis();
    println!(
        "MEASURED {host} powered off (BMC Off): first failover issued {audit_ms} ms after the daemon saw it not responding \
         (audit timestamps: {} -> {}), {wall_ms} ms after the host went down (wall clock, test's view, 5 ms polling)",
        lost.at, first
    );
    let dead = log
        .iter()
        .find(|e| e.subject == subject && matches!(&e.kind, LogKind::Transition { to, .. } if to == "dead"))
        .unwrap_or_else(|| panic!("{host} never dead:\n{}", d.story()));
    assert!(
        matches!(&dead.kind, LogKind::Transition { reason, .. } if reason.contains("powered off out of band") && reason.contains("two independent signals")),
        "{dead}"
    );
    assert!(
        audit_ms <= 1000,
        "{audit_ms} ms from not responding to the first failover (goal 1 s):\n{}",
        d.story()
    );
    assert!(
        !d.issued()
            .iter()
            .any(|(_, a)| matches!(a, Action::FenceHost { .. })),
        "a host read Off needs no fence:\n{}",
        d.story()
    );
    // Every VM of the host runs again, once, elsewhere.
    let deadline = Instant::now() + WAIT;
    loop {
        let moved = before.iter().all(|vmx| {
            sim.running()
                .get(vmx)
                .is_some_and(|hs| hs.len() == 1 && hs[0] != host)
        });
        if moved && each_runs_once(&sim).is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{vms:?} not running elsewhere:\n{}",
            d.story()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    d.stop().await;
}

/// (b) A host hangs: vCenter loses it, its VMs still run (the test bed keeps them as ghosts), its
/// BMC reads On. Under `power_off_and_restart` it is isolated, fenced through the BMC (ForceOff,
/// confirmed Off: the test bed kills its ghosts), then its VMs restart elsewhere, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_host_is_fenced_through_its_bmc_then_its_vms_restart() {
    let sim = tls_bed();
    let sushy = bmcs(&sim, false);
    let (host, moref, _) = busiest(&sim);
    let mut files = Vec::new();
    let bmc = bmc_toml(&sim, &sushy, &mut files, "1s");
    let mut d = Daemon::start(&sim, "isolation_response = \"power_off_and_restart\"\n", &bmc).await;
    d.files.extend(files);
    let before = running_on(&sim, &host);
    assert!(!before.is_empty());
    sim.post(&format!("/host/partition?name={host}"));
    let subject = host_subject(&moref);
    d.wait("the hung host's VMs to be failed over", |log| {
        log.iter().any(|e| {
            matches!(
                &e.kind,
                LogKind::Issued {
                    action: Action::Failover { .. },
                    ..
                }
            )
        })
    })
    .await;
    let log = d.log();
    let pos = |f: &dyn Fn(&LogEntry) -> bool| log.iter().position(f);
    let isolated = pos(&|e| {
        e.subject == subject
            && matches!(&e.kind, LogKind::Transition { to, reason, .. } if to.starts_with("isolated") && reason.contains("powered on out of band"))
    });
    let fence_issued = pos(&|e| {
        e.subject == subject
            && matches!(
                &e.kind,
                LogKind::Issued {
                    action: Action::FenceHost { .. },
                    ..
                }
            )
    });
    // Dead once the fence is confirmed, or, when the engine's own poll of the BMC reads the host
    // off first (the ForceOff applied, the fence still confirming), dead on that reading: both
    // say nothing of it runs.
    let dead = pos(&|e| {
        e.subject == subject
            && matches!(&e.kind, LogKind::Transition { to, reason, .. } if to == "dead"
                && (reason.contains("fenced") || reason.contains("powered off out of band")))
    });
    let failover = pos(&|e| {
        matches!(
            &e.kind,
            LogKind::Issued {
                action: Action::Failover { .. },
                ..
            }
        )
    });
    let story = d.story();
    let (Some(i), Some(f), Some(x), Some(o)) = (isolated, fence_issued, dead, failover) else {
        panic!(
            "isolated {isolated:?}, fence issued {fence_issued:?}, dead {dead:?}, failover {failover:?}:\n{story}"
        );
    };
    assert!(i < f && f < x && x < o, "out of order:\n{story}");
    d.wait("the fence to be confirmed", |log| {
        log.iter().any(|e| {
            e.subject == subject
                && matches!(&e.kind, LogKind::Finished { ok: true, detail, .. } if detail.contains("fence_host"))
        })
    })
    .await;
    // Confirmed Off: the BMC says so, and the host's VMs no longer run there.
    assert_eq!(sushy.power_state(&host), "Off");
    assert!(!sim.host_alive(&host));
    let deadline = Instant::now() + WAIT;
    loop {
        let moved = before.iter().all(|vmx| {
            sim.running()
                .get(vmx)
                .is_some_and(|hs| hs.len() == 1 && hs[0] != host)
        });
        if moved && each_runs_once(&sim).is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not restarted elsewhere once each:\n{}",
            d.story()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    d.stop().await;
}

/// (c) The same hang, but the BMC refuses to power off: the fence fails, `FenceFailed` names the
/// BMC and its reason, and nothing of the host is restarted; its VMs still run where they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fence_the_bmc_refuses_restarts_nothing() {
    let sim = tls_bed();
    let sushy = bmcs(&sim, true);
    let (host, moref, _) = busiest(&sim);
    let mut files = Vec::new();
    let bmc = bmc_toml(&sim, &sushy, &mut files, "1s");
    let mut d = Daemon::start(&sim, "isolation_response = \"power_off_and_restart\"\n", &bmc).await;
    d.files.extend(files);
    let before = running_on(&sim, &host);
    assert!(!before.is_empty());
    sim.post(&format!("/host/partition?name={host}"));
    let subject = host_subject(&moref);
    let deadline = Instant::now() + WAIT;
    let text = loop {
        if let Some(t) = d.alarm_text(AlarmKind::FenceFailed, &subject) {
            break t;
        }
        assert!(Instant::now() < deadline, "no FenceFailed:\n{}", d.story());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        text.contains(&host)
            && text.contains(&sushy.url)
            && text.contains("HTTP 400")
            && text.contains("none of its VMs is restarted"),
        "{text}"
    );
    // Given time, still nothing moves: the VMs run where they ran, once each, and no failover.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(
        failovers(&d).is_empty(),
        "a failover after a failed fence:\n{}",
        d.story()
    );
    for vmx in &before {
        assert_eq!(
            sim.running().get(vmx),
            Some(&vec![host.clone()]),
            "{vmx}:\n{}",
            d.story()
        );
    }
    each_runs_once(&sim).unwrap();
    assert_eq!(sushy.power_state(&host), "On");
    d.stop().await;
}

/// (d) A nested host: the admin vCenter powers its VM off (the host dies), the daemon reads it
/// Off there, fails its VMs over at once, then revives it by reverting its VM to its snapshot;
/// the host answers again and is never removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nested_host_is_revived_by_its_snapshot_and_not_removed() {
    let sim = tls_bed();
    let admin = Vcsim::start(&Spec {
        vms_per_host: 0,
        nested_of: Some(sim.control.clone()),
        nested_hosts: sim.host_names(),
        ..Spec::default()
    });
    let (host, moref, _) = busiest(&sim);
    let pw = secret_file("admin", "admin-secret");
    let hosts: Vec<String> = sim
        .host_names()
        .iter()
        .map(|h| format!("{h:?} = {h:?}"))
        .collect();
    let extra = format!(
        "[bmc]\npoll_interval = \"1s\"\n[admin_vcenter]\nurl = {:?}\nuser = \"admin\"\npassword = {{ file = {:?} }}\nca_file = {:?}\nhosts = {{ {} }}\n",
        admin.url,
        pw.display().to_string(),
        admin.ca_file.as_ref().unwrap().display().to_string(),
        hosts.join(", ")
    );
    let mut d = Daemon::start(&sim, "", &extra).await;
    d.files.push(pw);
    admin.post(&format!("/vm/power-off?name={host}&user=ops"));
    assert!(!sim.host_alive(&host));
    let subject = host_subject(&moref);
    d.wait("the nested host to be revived and answer", |log| {
        log.iter().any(|e| {
            e.subject == subject
                && matches!(&e.kind, LogKind::Transition { from, to, .. } if from == "dead" && to == "up")
        })
    })
    .await;
    let issued = d.issued();
    assert!(
        issued
            .iter()
            .any(|(_, a)| matches!(a, Action::ReviveHost { host } if host.as_str() == moref)),
        "{}",
        d.story()
    );
    assert!(
        !failovers(&d).is_empty(),
        "its VMs were not failed over:\n{}",
        d.story()
    );
    assert!(
        !issued.iter().any(|(_, a)| matches!(a, Action::RemoveHost { .. })),
        "a revived host was removed:\n{}",
        d.story()
    );
    assert!(sim.host_alive(&host));
    assert!(hosts_of(&sim).contains(&host), "{host} left vCenter");
    let sent: Vec<String> = admin.get("/nested")["sent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["method"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        sent,
        ["PowerOffVM_Task", "RevertToCurrentSnapshot_Task"],
        "{}",
        d.story()
    );
    d.stop().await;
}

fn hosts_of(sim: &Vcsim) -> Vec<String> {
    hosts(sim).into_keys().collect()
}
