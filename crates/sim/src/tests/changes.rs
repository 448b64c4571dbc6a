//! The inventory feed: snapshot, versions, waiting, resyncs.

use super::*;
use crate::{Fault, FaultDepth};
use am_core::{Action, Hypervisor};
use am_core::{Inventory, InventoryDelta, PowerState};

#[tokio::test(start_paused = true)]
async fn snapshot_then_changes_rebuild_the_view() {
    let sim = new_sim();
    let (mut inv, mut version) = sim.snapshot().await.unwrap();
    assert_eq!(inv.hosts.len(), 3);
    assert_eq!(
        inv.vms.len(),
        5 + 4,
        "five VMs and the backups of the four protected ones"
    );
    assert_eq!(inv.datastores.len(), 1);
    assert_eq!(inv.snapshots.len(), 4);
    assert_eq!(inv.vms[&vm("batch")].power, PowerState::PoweredOff);
    sim.inject(Fault::HostCrash {
        host: host("h3"),
        permanent: false,
    })
    .unwrap();
    sim.inject(Fault::VmHang {
        vm: vm("web"),
        depth: FaultDepth::Corrupt,
    })
    .unwrap();
    sleep_s(30).await;
    let c = drain(&sim, &version).await;
    for d in &c.deltas {
        inv.apply(d);
    }
    version = c.version;
    assert_eq!(inv, sim.view());
    assert_eq!(sim.snapshot().await.unwrap(), (sim.view(), version));
}

#[tokio::test(start_paused = true)]
async fn changes_waits_for_the_first_change() {
    let sim = new_sim();
    let v = sim.version();
    let injector = sim.clone();
    let task = tokio::spawn(async move {
        sleep_s(2).await;
        injector
            .inject(Fault::VmPowerOff {
                vm: vm("app"),
                user: Some("carol".into()),
            })
            .unwrap();
    });
    let c = sim.changes(&v, Duration::from_secs(60)).await.unwrap();
    assert_eq!(sim.now(), secs(2), "returned when the change happened");
    assert!(
        c.deltas
            .iter()
            .any(|d| matches!(d, InventoryDelta::VmUpsert(x) if x.id == vm("app")))
    );
    assert_eq!(c.events.len(), 1);
    assert_eq!(c.events[0].at, secs(2));
    assert_ne!(c.version, v);
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn changes_returns_empty_with_the_same_version_after_max_wait() {
    let sim = new_sim();
    let v = sim.version();
    let c = sim.changes(&v, Duration::from_secs(2)).await.unwrap();
    assert_eq!(sim.now(), secs(2));
    assert_eq!(c.version, v);
    assert!(c.deltas.is_empty() && c.events.is_empty());
}

#[tokio::test(start_paused = true)]
async fn storage_heartbeats_arrive_every_five_seconds() {
    let sim = new_sim();
    let v = sim.version();
    let c = sim.changes(&v, Duration::from_secs(60)).await.unwrap();
    assert_eq!(sim.now(), secs(5));
    let hbs: Vec<_> = c
        .deltas
        .iter()
        .filter_map(|d| match d {
            InventoryDelta::HostUpsert(h) => Some((h.id.clone(), h.storage_heartbeat)),
            _ => None,
        })
        .collect();
    assert_eq!(
        hbs,
        vec![
            (host("h1"), Some(secs(5))),
            (host("h2"), Some(secs(5))),
            (host("h3"), Some(secs(5)))
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn ticks_nobody_watched_are_replayed_with_their_own_times() {
    let sim = new_sim();
    let v = sim.version();
    sleep_s(17).await;
    let c = drain(&sim, &v).await;
    let h1: Vec<_> = c
        .deltas
        .iter()
        .filter_map(|d| match d {
            InventoryDelta::HostUpsert(h) if h.id == host("h1") => h.storage_heartbeat,
            _ => None,
        })
        .collect();
    assert_eq!(h1, vec![secs(5), secs(10), secs(15)]);
}

#[tokio::test(start_paused = true)]
async fn a_version_older_than_the_log_gets_a_full_resync() {
    let mut spec = small_spec();
    spec.change_log_capacity = 4;
    let sim = Sim::new(&spec).unwrap();
    let (mut inv, v0) = sim.snapshot().await.unwrap();
    sim.inject(Fault::HostCrash {
        host: host("h1"),
        permanent: true,
    })
    .unwrap();
    sim.execute(&Action::Failover {
        vm: vm("web"),
        to: host("h2"),
    })
    .await
    .unwrap();
    sim.execute(&Action::RemoveHost { host: host("h1") })
        .await
        .unwrap();
    sleep_s(30).await;
    let c = drain(&sim, &v0).await;
    assert!(c.deltas.contains(&InventoryDelta::HostRemoved(host("h1"))));
    assert!(c.deltas.contains(&InventoryDelta::VmRemoved(vm("db"))));
    for d in &c.deltas {
        inv.apply(d);
    }
    assert_eq!(inv, sim.view(), "the resync rebuilds the view");
    // Garbage and future versions resync too.
    for since in ["garbage", "999999"] {
        let c = drain(&sim, since).await;
        let mut fresh = Inventory::default();
        for d in &c.deltas {
            fresh.apply(d);
        }
        assert_eq!(fresh, sim.view(), "{since}");
    }
}
