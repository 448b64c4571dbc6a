//! Storage maintenance through `am-daemon run`'s API: the operator asks to evacuate a datastore
//! (by name), every VM's files leave it by RelocateVM_Task with only a datastore (Storage vMotion
//! of the running ones), and vCenter shows them on the other datastore.

use crate::common::WAIT;
use am_core::OperatorRequest;
use am_daemon::config::{ApiConfig, DaemonConfig, SecretSource, VcenterConfig};
use am_daemon::run::{RunExtras, run_with};
use am_testbed::{Spec, Vcsim};
use std::collections::BTreeMap;
use std::time::Duration;

/// Every VM's name and the datastores (ids) vCenter shows its files on, and whether it runs.
fn vm_datastores(sim: &Vcsim) -> BTreeMap<String, (Vec<String>, bool)> {
    let inv = sim.inventory();
    let mut out = BTreeMap::new();
    for h in inv.as_array().expect("inventory is a list") {
        for vm in h["vms"].as_array().into_iter().flatten() {
            let ds = vm["datastores"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| d.as_str().map(str::to_owned))
                .collect();
            let on = vm["power"].as_str() == Some("poweredOn");
            out.insert(vm["name"].as_str().unwrap().to_owned(), (ds, on));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evacuated_datastore_is_emptied_by_storage_vmotion() {
    let sim = Vcsim::start(&Spec {
        hosts: 2,
        vms_per_host: 2,
        datastores: 2,
        tls: true,
        ..Spec::default()
    });
    let before = vm_datastores(&sim);
    let (source, _) = before.values().next().expect("VMs").clone();
    let source = source.first().expect("a VM has a datastore").clone();
    assert!(
        before.values().all(|(ds, _)| ds == &vec![source.clone()]),
        "every VM starts on {source}: {before:?}"
    );
    let tag = format!("{}-{}", std::process::id(), line!());
    let dir = std::env::temp_dir().join(format!("am-e2e-storage-{tag}"));
    std::fs::create_dir_all(&dir).unwrap();
    let (pw, token) = (dir.join("pw"), dir.join("token"));
    std::fs::write(&pw, "secret\n").unwrap();
    std::fs::write(&token, "storage-token-0123456789\n").unwrap();
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
        targets: am_vsphere::Targets::none(),
        api: ApiConfig {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            token: Some(SecretSource {
                env: None,
                file: Some(token.clone()),
            }),
        },
        // vcsim's datastores are directories on the test machine's disk: their free space is the
        // disk's, which may be less than 10 % of its capacity. The VMs' files are tiny.
        supervisor: supervisor::Config {
            storage_free_margin_pct: 0,
            ..supervisor::Config::default()
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
    // Named as an operator would (vcsim's first local datastore), not by its id.
    let secret = am_api::Secret::new("storage-token-0123456789").unwrap();
    let req = OperatorRequest::EvacuateDatastore {
        datastore: "LocalDS_0".into(),
    };
    am_api::operator_request(&url, &secret, &req)
        .await
        .expect("the storage evacuation is accepted");

    // The daemon says it is done, and vCenter shows every VM's files on the other datastore.
    loop {
        let status = am_api::fetch_status(&url).await.ok();
        let recent: Vec<String> = status
            .map(|s| s.recent.iter().map(|e| e.to_string()).collect())
            .unwrap_or_default();
        let done = recent
            .iter()
            .any(|l| l.contains("storage evacuation of") && l.contains("done"));
        let now = vm_datastores(&sim);
        let left = now.values().filter(|(ds, _)| ds.contains(&source)).count();
        if done && left == 0 {
            break;
        }
        assert!(
            !recent.iter().any(|l| l.contains("EvacuationFailed")),
            "the storage evacuation failed:\n{}",
            recent.join("\n")
        );
        until(format!(
            "every VM off {source} ({left} left: {now:?}); recent:\n{}",
            recent.join("\n")
        ))
        .await;
    }
    let after = vm_datastores(&sim);
    assert_eq!(after.len(), before.len(), "no VM lost: {after:?}");
    for (name, (ds, on)) in &after {
        assert_eq!(ds.len(), 1, "{name} is on one datastore: {ds:?}");
        assert_ne!(ds[0], source, "{name} left {source}");
        assert_eq!(
            Some(on),
            before.get(name).map(|(_, was)| was),
            "{name}'s power did not change"
        );
    }
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), daemon).await;
    let _ = std::fs::remove_dir_all(&dir);
}
