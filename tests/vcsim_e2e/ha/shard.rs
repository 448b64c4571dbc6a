//! Sharding: four clusters over three daemons.

use am_testbed::{EtcdServer, Spec, Vcsim};

use super::*;
use crate::common::*;

/// Four clusters, each its own unit, over three daemons: each unit is led by exactly one daemon,
/// whose engine for it serves its API on the daemon's port + 1 + the unit's place; SIGKILL of one
/// daemon moves its units to the other two, which then handle a host failure in a moved unit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_clusters_over_three_daemons_each_managed_by_exactly_one() {
    let sim = Vcsim::start(&Spec {
        clusters: 4,
        hosts: 2,
        vms_per_host: 1,
        tls: true,
        ..Spec::default()
    });
    let etcd = EtcdServer::start();
    let dir = scratch("shard");
    let units: Vec<String> = (0..4).map(|i| format!("DC0_C{i}")).collect();
    let mut daemons: Vec<Daemon> = ["a", "b", "c"]
        .iter()
        .map(|n| Daemon::start_sharded(&sim, &etcd, n, &dir, &units))
        .collect();
    let client = am_etcd::Etcd::connect(am_etcd::Settings::new(vec![etcd.url.clone()], "x", "test"))
        .await
        .unwrap();
    // Who runs each unit: the one daemon whose engine for it leads (by its own API), checked
    // against the unit's leader key; None while any unit has no such daemon or has two.
    async fn owners(client: &am_etcd::Etcd, daemons: &[&Daemon], units: &[String]) -> Option<Vec<String>> {
        let mut out = Vec::new();
        for (i, unit) in units.iter().enumerate() {
            let mut leading = Vec::new();
            for d in daemons {
                let url = format!("http://127.0.0.1:{}", d.port + 1 + i as u16);
                if let Ok(s) = am_api::fetch_status(&url).await
                    && let Some(ha) = &s.ha
                    && ha.leading
                    && ha.unit == *unit
                    && !s.vms.is_empty()
                {
                    leading.push(d.name.clone());
                }
            }
            assert!(leading.len() <= 1, "unit {unit} managed by {leading:?} at once");
            let key = am_etcd::leader_of(&client.for_unit(unit), &am_etcd::Keys::new("/am", unit))
                .await
                .ok()??;
            if leading.first() != Some(&key.name) {
                return None;
            }
            out.push(key.name);
        }
        Some(out)
    }
    let all: Vec<&Daemon> = daemons.iter().collect();
    let first = until("each cluster to be managed by one daemon", &all, async || {
        let o = owners(&client, &all, &units).await?;
        let mut load = std::collections::BTreeMap::new();
        for n in &o {
            *load.entry(n.clone()).or_insert(0) += 1;
        }
        (load.len() == 3 && load.values().all(|n| *n <= 2)).then_some(o)
    })
    .await;
    println!("owners: {first:?}");
    // c dies: its units go to a and b.
    let moved: Vec<usize> = (0..4).filter(|i| first[*i] == "c").collect();
    assert!(!moved.is_empty());
    let mut c = daemons.pop().unwrap();
    c.kill9();
    let survivors: Vec<&Daemon> = daemons.iter().collect();
    let after = until("c's clusters to be managed by a or b", &survivors, async || {
        owners(&client, &survivors, &units).await
    })
    .await;
    println!("owners after c died: {after:?}");
    assert!(after.iter().all(|n| n != "c"));
    // A host of a moved cluster fails: its new manager fails the VM over, once.
    let unit = &units[moved[0]];
    let obs = observer(&sim).await;
    let inv = hosts(&sim);
    let (dead_name, (dead_ref, dead_vms)) = inv
        .iter()
        .find(|(name, (_, vms))| name.starts_with(&format!("{unit}_")) && !vms.is_empty())
        .map(|(n, v)| (n.clone(), v.clone()))
        .expect("a host with a VM in the moved cluster");
    sim.post(&format!("/host/crash?name={dead_name}"));
    until(
        "the moved cluster's VM to run on its other host",
        &survivors,
        async || all_moved(&sim, &obs, &dead_ref, &dead_vms).await.then_some(()),
    )
    .await;
    each_runs_once(&sim).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
