//! Storage maintenance through `am-daemon run`'s API: the operator asks to evacuate a datastore
//! (by name), every VM's files leave it by RelocateVM_Task with only a datastore (Storage vMotion
//! of the running ones), and vCenter shows them on the other datastore.

use crate::rund::RunDaemon;
use am_core::OperatorRequest;
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
    // vcsim's datastores are directories on the test machine's disk: their free space is the
    // disk's, which may be less than 10 % of its capacity. The VMs' files are tiny.
    let d = RunDaemon::start(&sim, |cfg| cfg.supervisor.storage_free_margin_pct = 0).await;
    // Named as an operator would (vcsim's first local datastore), not by its id.
    d.ask(&OperatorRequest::EvacuateDatastore {
        datastore: "LocalDS_0".into(),
    })
    .await;

    // The daemon says it is done, and vCenter shows every VM's files on the other datastore.
    d.wait_for(
        &format!("every VM off {source}"),
        Duration::from_millis(250),
        |status| {
            let recent: Vec<String> = status.recent.iter().map(|e| e.to_string()).collect();
            assert!(
                !recent.iter().any(|l| l.contains("EvacuationFailed")),
                "the storage evacuation failed:\n{}",
                recent.join("\n")
            );
            let done = recent
                .iter()
                .any(|l| l.contains("storage evacuation of") && l.contains("done"));
            let left = vm_datastores(&sim)
                .values()
                .filter(|(ds, _)| ds.contains(&source))
                .count();
            (done && left == 0).then_some(())
        },
    )
    .await;
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
    d.stop().await;
}
