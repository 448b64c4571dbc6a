//! Evacuation through `am-daemon run`'s API: the operator asks, the VMs leave by live migration
//! (MigrateVM_Task) in the planner's waves, the host enters maintenance mode in vCenter.

use crate::common::{WAIT, busiest, hosts};
use am_core::{HostId, OperatorRequest};
use am_daemon::config::{ApiConfig, DaemonConfig, SecretSource, VcenterConfig};
use am_daemon::run::{RunExtras, run_with};
use am_testbed::{Spec, Vcsim};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evacuated_host_is_emptied_by_live_migration_and_enters_maintenance() {
    let sim = Vcsim::start(&Spec {
        hosts: 3,
        vms_per_host: 2,
        tls: true,
        ..Spec::default()
    });
    let tag = format!("{}-{}", std::process::id(), line!());
    let dir = std::env::temp_dir().join(format!("am-e2e-evac-{tag}"));
    std::fs::create_dir_all(&dir).unwrap();
    let (pw, token) = (dir.join("pw"), dir.join("token"));
    std::fs::write(&pw, "secret\n").unwrap();
    std::fs::write(&token, "evac-token-0123456789\n").unwrap();
    let port = am_testbed::free_port();
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
        journal: Some(dir.join("journal.db")),
        // Nothing probed: the test bed's hosts listen on no management port here.
        targets: am_vsphere::Targets::none(),
        api: ApiConfig {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            token: Some(SecretSource {
                env: None,
                file: Some(token.clone()),
            }),
        },
        ..DaemonConfig::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(run_with(cfg, RunExtras::default(), async {
        let _ = stopped.await;
    }));
    let deadline = tokio::time::Instant::now() + WAIT;
    let until = |what: String| {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250))
    };
    while !am_api::fetch_ready(&url).await.unwrap_or(false) {
        assert!(!daemon.is_finished(), "the daemon stopped: {:?}", daemon.await);
        until("/readyz".into()).await;
    }
    let (name, moref, vms) = busiest(&sim);
    let total: usize = hosts(&sim).values().map(|(_, v)| v.len()).sum();
    assert!(!vms.is_empty(), "{name} runs VMs to evacuate");
    let secret = am_api::Secret::new("evac-token-0123456789").unwrap();
    let req = OperatorRequest::Evacuate {
        host: HostId::from(moref.as_str()),
        reason: "maintenance".into(),
        enter_maintenance: true,
    };
    am_api::operator_request(&url, &secret, &req)
        .await
        .expect("the evacuation is accepted");

    // The daemon reports the host in maintenance, and vCenter shows it empty and in maintenance.
    loop {
        let status = am_api::fetch_status(&url).await.ok();
        let state = status
            .as_ref()
            .and_then(|s| s.hosts.iter().find(|h| h.name == name).map(|h| h.state.clone()));
        let left = hosts(&sim).get(&name).map(|(_, v)| v.len()).unwrap_or(usize::MAX);
        if state.as_deref() == Some("maintenance") && left == 0 {
            break;
        }
        let recent: Vec<String> = status
            .map(|s| s.recent.iter().map(|e| e.to_string()).collect())
            .unwrap_or_default();
        until(format!(
            "{name} empty and in maintenance (state {state:?}, {left} VMs left); recent:\n{}",
            recent.join("\n")
        ))
        .await;
    }
    let after = hosts(&sim);
    let moved: usize = after
        .iter()
        .filter(|(n, _)| **n != name)
        .map(|(_, (_, v))| v.len())
        .sum();
    assert_eq!(moved, total, "every VM is on another host, none lost");
    for v in &vms {
        assert!(
            after.iter().any(|(n, (_, on))| *n != name && on.contains(v)),
            "{v} runs on another host: {after:?}"
        );
    }
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), daemon).await;
    let _ = std::fs::remove_dir_all(&dir);
}
