//! `am_daemon::run::run_with`, what `am-daemon run` calls: TLS, secrets from files, the session's
//! user, the journal and the HTTP API.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use am_core::{AlarmChange, AlarmKind, LogKind, MemoryJournal, Record, Subject};
use am_testbed::{Spec, Vcsim};

use crate::common::*;

/// The daemon's own entry point (`am_daemon::run::run_with`, what `am-daemon run` calls): TLS
/// with the configured CA file, the password from a file, the manager's user from the session;
/// a user's power-off raises its alarm; the shutdown future stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_runs_against_vcenter_until_shut_down() {
    use am_daemon::config::{DaemonConfig, SecretSource, VcenterConfig};
    use am_daemon::run::{RunExtras, run_with};
    let sim = Vcsim::start(&Spec {
        hosts: 2,
        vms_per_host: 1,
        tls: true,
        ..Spec::default()
    });
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
    sim.post(&format!("/vm/power-off?name={name}&user=alice"));
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
    let sim = Vcsim::start(&Spec {
        hosts: 2,
        vms_per_host: 1,
        tls: true,
        ..Spec::default()
    });
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
    sim.post(&format!("/vm/power-off?name={name}&user=alice"));
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

/// `GET path` on the daemon's API: status and body (status 0 while nothing listens yet).
fn get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// vCenter hangs (it accepts calls and never answers them): `/readyz` turns 503 and says why;
/// when it answers again the daemon is ready again. Stopped while vCenter hangs (its calls and
/// the logout held), the daemon does not wait for them: it has stopped while they are still held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_vcenter_makes_the_daemon_unready_and_does_not_hold_its_stop() {
    use am_daemon::config::{ApiConfig, DaemonConfig, SecretSource, VcenterConfig};
    use am_daemon::run::{RunExtras, run_with};
    let sim = Vcsim::start(&Spec {
        hosts: 2,
        vms_per_host: 1,
        tls: true,
        ..Spec::default()
    });
    let pw = std::env::temp_dir().join(format!("am-e2e-pw-{}-{}", std::process::id(), line!()));
    std::fs::write(&pw, "secret\n").unwrap();
    let port = am_testbed::free_port();
    let cfg = DaemonConfig {
        vcenter: Some(VcenterConfig {
            url: sim.url.clone(),
            user: "svc-am".into(),
            password: SecretSource {
                env: None,
                file: Some(pw.clone()),
            },
            ca_file: sim.ca_file.clone(),
            health_interval: Duration::from_millis(500),
            health_timeout: Duration::from_secs(1),
            ..VcenterConfig::default()
        }),
        api: ApiConfig {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            token: None,
        },
        ..DaemonConfig::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(run_with(cfg, RunExtras::default(), async {
        let _ = stopped.await;
    }));
    let deadline = tokio::time::Instant::now() + WAIT;
    let until = |what: &'static str| {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200))
    };
    while get(port, "/readyz").0 != 200 {
        assert!(!daemon.is_finished(), "the daemon stopped: {:?}", daemon.await);
        until("ready").await;
    }
    sim.post("/hold?method=CurrentTime");
    let body = loop {
        let (status, body) = get(port, "/readyz");
        if status == 503 {
            break body;
        }
        until("/readyz 503 while vCenter hangs").await;
    };
    assert!(body.contains("vCenter"), "the reason is given: {body}");
    sim.post("/release?method=CurrentTime");
    while get(port, "/readyz").0 != 200 {
        until("ready again once vCenter answers").await;
    }
    // Hang again, logout included, and stop.
    sim.post("/hold?method=CurrentTime");
    sim.post("/hold?method=Logout");
    while get(port, "/readyz").0 != 503 {
        until("unready again").await;
    }
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), daemon)
        .await
        .expect("stops")
        .expect("task")
        .expect("clean stop");
    let held = sim.get("/held");
    assert!(
        held.as_array().is_some_and(|h| !h.is_empty()),
        "stopped while its vCenter calls were still held (it did not wait for them): {held}"
    );
    let _ = std::fs::remove_file(&pw);
}

/// The first answer of the inventory feed is the whole inventory: 1,000 VMs are some 6 MB of
/// vcsim's XML, over a limit of 1 MiB on any one answer. Read object by object as it arrives,
/// every VM shows. (The whole answer once had to fit under the limit: past some 11,000 VMs at
/// the default 64 MiB, `run` could not start.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inventory_larger_than_the_response_limit_is_read_object_by_object() {
    let sim = Vcsim::start(&Spec {
        hosts: 10,
        vms_per_host: 100,
        tls: true,
        ..Spec::default()
    });
    let d = crate::rund::RunDaemon::start(&sim, |cfg| {
        if let Some(vc) = cfg.vcenter.as_mut() {
            vc.max_response_mib = 1;
        }
    })
    .await;
    let vms = d
        .wait_for("every VM", Duration::from_millis(200), |s| {
            (s.vms.len() >= 1000).then_some(s.vms.len())
        })
        .await;
    assert_eq!(vms, 1000, "vcsim's 10 x 100 VMs, each once");
    let status = d.status().await;
    assert!(
        status.vms.iter().all(|v| !v.name.is_empty() && v.host.is_some()),
        "every VM mapped with its name and host"
    );
    d.stop().await;
}
