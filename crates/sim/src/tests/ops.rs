//! Each hypervisor operation: happy path and failure paths.

use super::*;
use crate::{Fault, FaultDepth, GuestState, HostCondition};
use am_core::{
    Action, ConnectionState, EventKind, GuestHeartbeat, HvError, Hypervisor, InventoryDelta, PowerState,
    SnapshotId,
};

fn user() -> Option<String> {
    Some("am-manager".into())
}

#[tokio::test(start_paused = true)]
async fn power_off_and_on_take_their_latency_and_emit_manager_events() {
    let sim = new_sim();
    let v0 = sim.version();
    sim.execute(&Action::PowerOff { vm: vm("web") }).await.unwrap();
    assert_eq!(sim.now(), secs(1), "power_off takes 1s");
    assert!(!sim.vm_truth(&vm("web")).unwrap().is_running());
    let c = drain(&sim, &v0).await;
    assert!(event_kinds(&c).contains(&EventKind::VmPoweredOff {
        vm: vm("web"),
        user: user()
    }));
    let shown = sim.view().vms[&vm("web")].clone();
    assert_eq!(shown.power, PowerState::PoweredOff);
    assert_eq!(shown.heartbeat, GuestHeartbeat::Gray);
    assert_eq!(shown.cpu_usage_mhz, Some(0));

    let v1 = c.version;
    sim.execute(&Action::PowerOn { vm: vm("web") }).await.unwrap();
    assert_eq!(sim.now(), secs(2));
    assert!(sim.vm_healthy(&vm("web")));
    let c = drain(&sim, &v1).await;
    assert!(event_kinds(&c).contains(&EventKind::VmPoweredOn {
        vm: vm("web"),
        user: user()
    }));
    let shown = sim.view().vms[&vm("web")].clone();
    assert_eq!(shown.power, PowerState::PoweredOn);
    assert_eq!(shown.heartbeat, GuestHeartbeat::Green);
    assert!(shown.cpu_usage_mhz.unwrap() > 0);
    assert_eq!(sim.op_history().len(), 2);
    assert!(sim.violations().is_empty());
}

#[tokio::test(start_paused = true)]
async fn power_operations_check_state_ids_reachability_and_capacity() {
    let sim = new_sim();
    assert!(matches!(
        sim.execute(&Action::PowerOn { vm: vm("web") }).await,
        Err(HvError::InvalidState { .. })
    ));
    assert!(matches!(
        sim.execute(&Action::PowerOff { vm: vm("batch") }).await,
        Err(HvError::InvalidState { .. })
    ));
    assert!(matches!(
        sim.execute(&Action::Reset { vm: vm("batch") }).await,
        Err(HvError::InvalidState { .. })
    ));
    assert_eq!(
        sim.execute(&Action::PowerOn { vm: vm("nope") }).await,
        Err(HvError::not_found("vm", "nope"))
    );
    // h3 has 2 GHz free: batch (1 GHz) fits, then nothing of 2 GHz more does.
    sim.execute(&Action::PowerOn { vm: vm("batch") }).await.unwrap();
    sim.execute(&Action::PowerOff { vm: vm("big") }).await.unwrap();
    sim.execute(&Action::MigrateCold {
        vm: vm("app"),
        to: host("h3"),
    })
    .await
    .unwrap();
    assert!(matches!(
        sim.execute(&Action::PowerOn { vm: vm("big") }).await,
        Err(HvError::InsufficientResources { host, .. }) if host == "h3"
    ));
    sim.inject(Fault::HostCrash {
        host: host("h1"),
        permanent: false,
    })
    .unwrap();
    let err = sim
        .execute(&Action::PowerOff { vm: vm("web") })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, HvError::Unreachable { target, .. } if target == "h1"),
        "{err}"
    );
    assert!(err.is_retryable());
}

#[tokio::test(start_paused = true)]
async fn reset_fixes_transient_faults_only() {
    let sim = new_sim();
    sim.inject(Fault::VmGuestCrash {
        vm: vm("web"),
        depth: FaultDepth::Transient,
    })
    .unwrap();
    assert!(!sim.vm_healthy(&vm("web")));
    sim.execute(&Action::Reset { vm: vm("web") }).await.unwrap();
    assert!(sim.vm_healthy(&vm("web")));

    sim.inject(Fault::VmHang {
        vm: vm("db"),
        depth: FaultDepth::Corrupt,
    })
    .unwrap();
    sim.execute(&Action::Reset { vm: vm("db") }).await.unwrap();
    let t = sim.vm_truth(&vm("db")).unwrap();
    assert_eq!(
        t.guest,
        GuestState::Hung,
        "a corrupt disk hangs again after the reset"
    );
    assert!(t.is_running());
    // The heartbeat goes red again heartbeat_delay after the reset.
    sleep_s(6).await;
    assert_eq!(sim.view().vms[&vm("db")].heartbeat, GuestHeartbeat::Red);
}

#[tokio::test(start_paused = true)]
async fn revert_to_a_snapshot_from_before_a_corruption_fixes_it() {
    let sim = new_sim();
    let initial = sim.view().snapshots[&vm("web")][0].id.clone();
    sleep_s(10).await;
    sim.inject(Fault::VmGuestCrash {
        vm: vm("web"),
        depth: FaultDepth::Corrupt,
    })
    .unwrap();
    // A snapshot taken after the fault captures the corrupt disk.
    let late = sim
        .execute(&Action::CreateSnapshot {
            vm: vm("web"),
            name: "late".into(),
        })
        .await
        .unwrap();
    let late = late.snapshot().cloned().unwrap();
    assert_ne!(late, initial);
    sim.execute(&Action::RevertSnapshot {
        vm: vm("web"),
        snapshot: None,
    })
    .await
    .unwrap();
    assert!(
        !sim.vm_healthy(&vm("web")),
        "the current (latest) snapshot is corrupt too"
    );
    sim.execute(&Action::RevertSnapshot {
        vm: vm("web"),
        snapshot: Some(initial.clone()),
    })
    .await
    .unwrap();
    assert!(sim.vm_healthy(&vm("web")));
    // Errors.
    assert_eq!(
        sim.execute(&Action::RevertSnapshot {
            vm: vm("web"),
            snapshot: Some(SnapshotId::from("snap-999"))
        })
        .await,
        Err(HvError::not_found("snapshot", "snap-999"))
    );
    assert!(matches!(
        sim.execute(&Action::RevertSnapshot { vm: vm("batch"), snapshot: None }).await,
        Err(HvError::NotFound { kind, .. }) if kind == "snapshot"
    ));
}

#[tokio::test(start_paused = true)]
async fn revert_powers_a_powered_off_vm_on() {
    let sim = new_sim();
    sim.execute(&Action::PowerOff { vm: vm("app") }).await.unwrap();
    let v = sim.version();
    sim.execute(&Action::RevertSnapshot {
        vm: vm("app"),
        snapshot: None,
    })
    .await
    .unwrap();
    assert!(sim.vm_healthy(&vm("app")));
    let c = drain(&sim, &v).await;
    assert!(event_kinds(&c).contains(&EventKind::VmPoweredOn {
        vm: vm("app"),
        user: user()
    }));
}

#[tokio::test(start_paused = true)]
async fn disk_lost_survives_revert_and_reset() {
    let sim = new_sim();
    sim.inject(Fault::VmGuestCrash {
        vm: vm("app"),
        depth: FaultDepth::DiskLost,
    })
    .unwrap();
    sim.execute(&Action::Reset { vm: vm("app") }).await.unwrap();
    assert!(!sim.vm_healthy(&vm("app")));
    sim.execute(&Action::RevertSnapshot {
        vm: vm("app"),
        snapshot: None,
    })
    .await
    .unwrap();
    assert!(!sim.vm_healthy(&vm("app")));
}

#[tokio::test(start_paused = true)]
async fn snapshots_are_created_listed_and_removed() {
    let sim = new_sim();
    let v = sim.version();
    let a = sim
        .execute(&Action::CreateSnapshot {
            vm: vm("app"),
            name: "one".into(),
        })
        .await
        .unwrap();
    let a = a.snapshot().cloned().unwrap();
    let b = sim
        .execute(&Action::CreateSnapshot {
            vm: vm("app"),
            name: "two".into(),
        })
        .await
        .unwrap();
    let b = b.snapshot().cloned().unwrap();
    assert_ne!(a, b);
    let list = &sim.view().snapshots[&vm("app")];
    assert_eq!(list.len(), 3);
    assert_eq!(list[2].name, "two");
    assert_eq!(list[2].created, secs(4), "taken after two 2s calls");
    let c = drain(&sim, &v).await;
    assert!(
        c.deltas
            .iter()
            .any(|d| matches!(d, InventoryDelta::Snapshots { vm: v, snapshots } if *v == vm("app") && snapshots.len() == 3))
    );
    sim.execute(&Action::RemoveSnapshot {
        vm: vm("app"),
        snapshot: a.clone(),
    })
    .await
    .unwrap();
    assert_eq!(sim.view().snapshots[&vm("app")].len(), 2);
    assert_eq!(
        sim.execute(&Action::RemoveSnapshot {
            vm: vm("app"),
            snapshot: a.clone()
        })
        .await,
        Err(HvError::not_found("snapshot", &a))
    );
    assert!(matches!(
        sim.execute(&Action::CreateSnapshot {
            vm: vm("ghost"),
            name: "x".into()
        })
        .await,
        Err(HvError::NotFound { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn clones_are_powered_off_backups_that_copy_the_disk_state() {
    let sim = new_sim();
    let clone = sim
        .execute(&Action::Clone {
            vm: vm("app"),
            name: "app-nightly".into(),
            host: host("h1"),
            datastore: None,
        })
        .await
        .unwrap();
    let clone = clone.vm().cloned().unwrap();
    assert_eq!(sim.now(), secs(10));
    let inv = sim.view();
    let c = &inv.vms[&clone];
    assert_eq!(c.name, "app-nightly");
    assert_eq!(c.backup_of, Some(vm("app")));
    assert_eq!(c.power, PowerState::PoweredOff);
    assert_eq!(c.host, Some(host("h1")));
    assert!(!c.is_protected());
    assert_eq!(
        inv.latest_clone(&vm("app")).map(|v| v.id.clone()),
        Some(clone.clone())
    );
    // A clone of a corrupt VM is corrupt: restoring it does not help; an older good one does.
    sim.inject(Fault::VmGuestCrash {
        vm: vm("app"),
        depth: FaultDepth::Corrupt,
    })
    .unwrap();
    let bad = sim
        .execute(&Action::Clone {
            vm: vm("app"),
            name: "app-bad".into(),
            host: host("h1"),
            datastore: None,
        })
        .await
        .unwrap();
    let bad = bad.vm().cloned().unwrap();
    sim.execute(&Action::RestoreClone {
        vm: vm("app"),
        backup: bad.clone(),
        host: host("h2"),
    })
    .await
    .unwrap();
    assert!(!sim.vm_healthy(&vm("app")));
    sim.execute(&Action::RestoreClone {
        vm: vm("app"),
        backup: clone.clone(),
        host: host("h2"),
    })
    .await
    .unwrap();
    assert!(sim.vm_healthy(&vm("app")));
    // Errors.
    assert!(matches!(
        sim.execute(&Action::Clone { vm: vm("app"), name: "x".into(), host: host("h9"), datastore: None }).await,
        Err(HvError::NotFound { kind, .. }) if kind == "host"
    ));
    assert!(matches!(
        sim.execute(&Action::Clone { vm: vm("app"), name: "x".into(), host: host("h1"), datastore: Some("ds-nope".into()) }).await,
        Err(HvError::NotFound { kind, .. }) if kind == "datastore"
    ));
    assert!(matches!(
        sim.execute(&Action::RestoreClone {
            vm: vm("web"),
            backup: clone.clone(),
            host: host("h1")
        })
        .await,
        Err(HvError::InvalidState { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn restoring_a_backup_fixes_a_lost_disk_and_moves_the_vm() {
    let sim = new_sim();
    let backup = sim.view().latest_clone(&vm("web")).unwrap().id.clone();
    sim.inject(Fault::VmGuestCrash {
        vm: vm("web"),
        depth: FaultDepth::DiskLost,
    })
    .unwrap();
    let v = sim.version();
    sim.execute(&Action::RestoreClone {
        vm: vm("web"),
        backup: backup.clone(),
        host: host("h2"),
    })
    .await
    .unwrap();
    assert_eq!(sim.now(), secs(8));
    let t = sim.vm_truth(&vm("web")).unwrap();
    assert!(t.is_healthy());
    assert_eq!(t.running_on, vec![host("h2")]);
    assert_eq!(sim.view().vms[&vm("web")].host, Some(host("h2")));
    let events = event_kinds(&drain(&sim, &v).await);
    assert!(events.contains(&EventKind::VmPoweredOff {
        vm: vm("web"),
        user: user()
    }));
    assert!(events.contains(&EventKind::VmPoweredOn {
        vm: vm("web"),
        user: user()
    }));
}

#[tokio::test(start_paused = true)]
async fn host_local_faults_need_another_host() {
    let sim = new_sim();
    let backup = sim.view().latest_clone(&vm("web")).unwrap().id.clone();
    sim.inject(Fault::VmHang {
        vm: vm("web"),
        depth: FaultDepth::HostLocal,
    })
    .unwrap();
    sim.execute(&Action::Reset { vm: vm("web") }).await.unwrap();
    assert!(!sim.vm_healthy(&vm("web")));
    sim.execute(&Action::RestoreClone {
        vm: vm("web"),
        backup: backup.clone(),
        host: host("h1"),
    })
    .await
    .unwrap();
    assert!(
        !sim.vm_healthy(&vm("web")),
        "restoring on the same host does not help"
    );
    sim.execute(&Action::MigrateCold {
        vm: vm("web"),
        to: host("h2"),
    })
    .await
    .unwrap();
    assert!(sim.vm_healthy(&vm("web")));
    assert_eq!(sim.vm_truth(&vm("web")).unwrap().running_on, vec![host("h2")]);
    // Moving back is fine: the fault is gone.
    sim.execute(&Action::MigrateLive {
        vm: vm("web"),
        to: host("h1"),
    })
    .await
    .unwrap();
    assert!(sim.vm_healthy(&vm("web")));
}

#[tokio::test(start_paused = true)]
async fn live_migration_needs_a_healthy_running_vm() {
    let sim = new_sim();
    let v = sim.version();
    sim.execute(&Action::MigrateLive {
        vm: vm("web"),
        to: host("h2"),
    })
    .await
    .unwrap();
    assert_eq!(sim.now(), secs(8));
    assert_eq!(sim.vm_truth(&vm("web")).unwrap().running_on, vec![host("h2")]);
    let c = drain(&sim, &v).await;
    assert!(
        !c.events.iter().any(|e| matches!(
            e.kind,
            EventKind::VmPoweredOff { .. } | EventKind::VmPoweredOn { .. }
        )),
        "a live migration does not stop the VM"
    );
    assert!(matches!(
        sim.execute(&Action::MigrateLive {
            vm: vm("batch"),
            to: host("h1")
        })
        .await,
        Err(HvError::InvalidState { .. })
    ));
    sim.inject(Fault::VmGuestCrash {
        vm: vm("app"),
        depth: FaultDepth::Transient,
    })
    .unwrap();
    assert!(matches!(
        sim.execute(&Action::MigrateLive {
            vm: vm("app"),
            to: host("h1")
        })
        .await,
        Err(HvError::InvalidState { .. })
    ));
    assert!(matches!(
        sim.execute(&Action::MigrateCold {
            vm: vm("web"),
            to: host("h2")
        })
        .await,
        Err(HvError::InvalidState { .. })
    ));
    assert!(matches!(
        sim.execute(&Action::MigrateLive {
            vm: vm("db"),
            to: host("h3")
        })
        .await,
        Err(HvError::InsufficientResources { .. })
    ));
    sim.execute(&Action::EnterMaintenance { host: host("h3") })
        .await
        .unwrap();
    assert!(matches!(
        sim.execute(&Action::MigrateCold { vm: vm("web"), to: host("h3") }).await,
        Err(HvError::InvalidState { id, .. }) if id == "h3"
    ));
}

#[tokio::test(start_paused = true)]
async fn failover_restarts_a_vm_of_a_dead_host_elsewhere() {
    let sim = new_sim();
    assert!(
        matches!(
            sim.execute(&Action::Failover {
                vm: vm("web"),
                to: host("h2")
            })
            .await,
            Err(HvError::InvalidState { .. })
        ),
        "not while it runs on a managed host"
    );
    sim.inject(Fault::HostCrash {
        host: host("h1"),
        permanent: false,
    })
    .unwrap();
    let v = sim.version();
    sim.execute(&Action::Failover {
        vm: vm("web"),
        to: host("h2"),
    })
    .await
    .unwrap();
    assert_eq!(sim.now(), secs(4), "2s for the refused call, 2s for the failover");
    assert!(sim.vm_healthy(&vm("web")));
    assert_eq!(sim.view().vms[&vm("web")].host, Some(host("h2")));
    let events = event_kinds(&drain(&sim, &v).await);
    assert!(events.contains(&EventKind::VmPoweredOn {
        vm: vm("web"),
        user: user()
    }));
    assert!(matches!(
        sim.execute(&Action::Failover {
            vm: vm("db"),
            to: host("h3")
        })
        .await,
        Err(HvError::InsufficientResources { .. })
    ));
    assert!(matches!(
        sim.execute(&Action::Failover {
            vm: vm("db"),
            to: host("h1")
        })
        .await,
        Err(HvError::Unreachable { .. })
    ));
    assert!(sim.violations().is_empty());
}

#[tokio::test(start_paused = true)]
async fn register_and_unregister() {
    let sim = new_sim();
    assert!(matches!(
        sim.execute(&Action::Unregister { vm: vm("web") }).await,
        Err(HvError::InvalidState { .. })
    ));
    sim.execute(&Action::PowerOff { vm: vm("web") }).await.unwrap();
    sim.execute(&Action::Unregister { vm: vm("web") }).await.unwrap();
    assert_eq!(sim.view().vms[&vm("web")].host, None);
    assert!(matches!(
        sim.execute(&Action::PowerOn { vm: vm("web") }).await,
        Err(HvError::InvalidState { .. })
    ));
    sim.execute(&Action::Register {
        vm: vm("web"),
        host: host("h2"),
    })
    .await
    .unwrap();
    assert!(matches!(
        sim.execute(&Action::Register {
            vm: vm("web"),
            host: host("h3")
        })
        .await,
        Err(HvError::InvalidState { .. })
    ));
    sim.execute(&Action::PowerOn { vm: vm("web") }).await.unwrap();
    assert_eq!(sim.vm_truth(&vm("web")).unwrap().running_on, vec![host("h2")]);
    // A VM of a crashed host can be registered elsewhere.
    sim.inject(Fault::HostCrash {
        host: host("h1"),
        permanent: false,
    })
    .unwrap();
    sim.execute(&Action::Register {
        vm: vm("db"),
        host: host("h2"),
    })
    .await
    .unwrap();
    assert_eq!(sim.view().vms[&vm("db")].power, PowerState::PoweredOff);
}

#[tokio::test(start_paused = true)]
async fn reconnect_fixes_a_disconnected_host_only() {
    let sim = new_sim();
    sim.inject(Fault::HostDisconnect { host: host("h2") }).unwrap();
    assert_eq!(
        sim.view().hosts[&host("h2")].connection,
        ConnectionState::NotResponding
    );
    sim.execute(&Action::ReconnectHost { host: host("h2") })
        .await
        .unwrap();
    assert_eq!(
        sim.view().hosts[&host("h2")].connection,
        ConnectionState::Connected
    );
    assert!(sim.vm_healthy(&vm("app")), "its VMs ran on");
    sim.inject(Fault::HostCrash {
        host: host("h2"),
        permanent: false,
    })
    .unwrap();
    assert!(matches!(
        sim.execute(&Action::ReconnectHost { host: host("h2") }).await,
        Err(HvError::Unreachable { .. })
    ));
    sim.inject(Fault::HostIsolate { host: host("h1") }).unwrap();
    assert!(matches!(
        sim.execute(&Action::ReconnectHost { host: host("h1") }).await,
        Err(HvError::Unreachable { .. })
    ));
    assert_eq!(
        sim.execute(&Action::ReconnectHost { host: host("h9") }).await,
        Err(HvError::not_found("host", "h9"))
    );
}

#[tokio::test(start_paused = true)]
async fn revive_brings_a_crashed_host_back_with_its_vms_off() {
    let sim = new_sim();
    sim.inject(Fault::HostCrash {
        host: host("h1"),
        permanent: false,
    })
    .unwrap();
    assert_eq!(
        sim.view().vms[&vm("web")].power,
        PowerState::PoweredOn,
        "last known state"
    );
    let v = sim.version();
    sim.execute(&Action::ReviveHost { host: host("h1") })
        .await
        .unwrap();
    assert_eq!(sim.now(), secs(20));
    let inv = sim.view();
    assert_eq!(inv.hosts[&host("h1")].connection, ConnectionState::Connected);
    assert_eq!(inv.hosts[&host("h1")].storage_heartbeat, Some(secs(20)));
    assert_eq!(inv.vms[&vm("web")].power, PowerState::PoweredOff);
    assert_eq!(inv.vms[&vm("db")].power, PowerState::PoweredOff);
    let events = event_kinds(&drain(&sim, &v).await);
    assert!(
        events.contains(&EventKind::VmPoweredOff {
            vm: vm("web"),
            user: None
        }),
        "found off, nobody asked"
    );
    // A permanent crash cannot be revived.
    sim.inject(Fault::HostCrash {
        host: host("h2"),
        permanent: true,
    })
    .unwrap();
    let err = sim
        .execute(&Action::ReviveHost { host: host("h2") })
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert_eq!(
        sim.host_truth(&host("h2")).unwrap().condition,
        HostCondition::Crashed { permanent: true }
    );
}

#[tokio::test(start_paused = true)]
async fn revive_power_cycles_an_isolated_host() {
    let sim = new_sim();
    sim.inject(Fault::HostIsolate { host: host("h1") }).unwrap();
    assert!(sim.vm_healthy(&vm("web")));
    sim.execute(&Action::ReviveHost { host: host("h1") })
        .await
        .unwrap();
    assert_eq!(sim.host_truth(&host("h1")).unwrap().condition, HostCondition::Up);
    assert!(!sim.vm_truth(&vm("web")).unwrap().is_running());
    assert_eq!(sim.view().vms[&vm("web")].power, PowerState::PoweredOff);
}

#[tokio::test(start_paused = true)]
async fn fencing_stops_an_isolated_host_and_its_vms() {
    let sim = new_sim();
    sim.inject(Fault::HostIsolate { host: host("h1") }).unwrap();
    sim.execute(&Action::FenceHost { host: host("h1") })
        .await
        .unwrap();
    assert_eq!(sim.host_truth(&host("h1")).unwrap().condition, HostCondition::Off);
    assert!(sim.running_on(&host("h1")).is_empty());
    // Now a failover cannot make a double run.
    sim.execute(&Action::Failover {
        vm: vm("web"),
        to: host("h2"),
    })
    .await
    .unwrap();
    assert!(sim.violations().is_empty());
    // Its storage heartbeat stops.
    let hb = sim.view().hosts[&host("h1")].storage_heartbeat;
    sleep_s(20).await;
    assert_eq!(sim.view().hosts[&host("h1")].storage_heartbeat, hb);
    assert!(sim.view().hosts[&host("h2")].storage_heartbeat > hb);
}

#[tokio::test(start_paused = true)]
async fn remove_host_takes_its_vms_out_of_the_inventory() {
    let sim = new_sim();
    assert!(matches!(
        sim.execute(&Action::RemoveHost { host: host("h1") }).await,
        Err(HvError::InvalidState { .. })
    ));
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
    let v = sim.version();
    sim.execute(&Action::RemoveHost { host: host("h1") })
        .await
        .unwrap();
    let inv = sim.view();
    assert!(!inv.hosts.contains_key(&host("h1")));
    assert!(inv.vms.contains_key(&vm("web")), "failed over before");
    assert!(!inv.vms.contains_key(&vm("db")), "still registered on h1");
    assert!(!inv.datastores["ds-shared"].hosts.contains(&host("h1")));
    let c = drain(&sim, &v).await;
    assert!(c.deltas.contains(&InventoryDelta::HostRemoved(host("h1"))));
    assert!(c.deltas.contains(&InventoryDelta::VmRemoved(vm("db"))));
    assert_eq!(
        sim.execute(&Action::PowerOn { vm: vm("db") }).await,
        Err(HvError::not_found("vm", "db"))
    );
    assert_eq!(
        sim.execute(&Action::RemoveHost { host: host("h1") }).await,
        Err(HvError::not_found("host", "h1"))
    );
}

#[tokio::test(start_paused = true)]
async fn add_host_takes_a_spare_from_the_pool() {
    let sim = new_sim();
    let id = sim
        .execute(&Action::AddHost { spare: "s1".into() })
        .await
        .unwrap();
    let id = id.host().cloned().unwrap();
    assert_eq!(id, host("s1"));
    assert_eq!(sim.now(), secs(15));
    let inv = sim.view();
    assert_eq!(inv.hosts[&id].connection, ConnectionState::Connected);
    assert!(
        !inv.datastores["ds-shared"].hosts.contains(&id),
        "a new host mounts nothing"
    );
    let e = sim
        .execute(&Action::MigrateLive {
            vm: vm("db"),
            to: id.clone(),
        })
        .await;
    assert!(matches!(e, Err(HvError::InvalidState { .. })), "{e:?}");
    sim.execute(&Action::MountDatastore {
        host: id.clone(),
        datastore: "ds-shared".into(),
    })
    .await
    .unwrap();
    assert!(sim.view().datastores["ds-shared"].hosts.contains(&id));
    assert_eq!(
        sim.execute(&Action::AddHost { spare: "s1".into() }).await,
        Err(HvError::not_found("spare", "s1"))
    );
    assert_eq!(
        sim.execute(&Action::AddHost { spare: "s9".into() }).await,
        Err(HvError::not_found("spare", "s9"))
    );
    sim.execute(&Action::MigrateLive {
        vm: vm("db"),
        to: id.clone(),
    })
    .await
    .unwrap();
    assert_eq!(sim.running_on(&id), vec![vm("db")]);
}

#[tokio::test(start_paused = true)]
async fn maintenance_mode_is_a_flag_that_keeps_new_vms_out() {
    let sim = new_sim();
    sim.execute(&Action::EnterMaintenance { host: host("h2") })
        .await
        .unwrap();
    assert!(sim.view().hosts[&host("h2")].maintenance);
    sim.execute(&Action::PowerOff { vm: vm("app") }).await.unwrap();
    assert!(matches!(
        sim.execute(&Action::PowerOn { vm: vm("app") }).await,
        Err(HvError::InvalidState { .. })
    ));
    sim.execute(&Action::ExitMaintenance { host: host("h2") })
        .await
        .unwrap();
    sim.execute(&Action::PowerOn { vm: vm("app") }).await.unwrap();
    sim.inject(Fault::HostCrash {
        host: host("h2"),
        permanent: false,
    })
    .unwrap();
    assert!(matches!(
        sim.execute(&Action::EnterMaintenance { host: host("h2") }).await,
        Err(HvError::Unreachable { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn concurrent_operations_on_one_vm_get_busy() {
    let sim = new_sim();
    let web = vm("web");
    let reset = Action::Reset { vm: web.clone() };
    let (a, b) = tokio::join!(sim.execute(&reset), async {
        sleep_s(0).await;
        sim.execute(&Action::PowerOff { vm: vm("web") }).await
    });
    assert_eq!(a, Ok(am_core::ActionOutcome::Done));
    assert!(matches!(b, Err(HvError::Busy { .. })), "{b:?}");
    // Once the first is done, the VM is free again.
    sim.execute(&Action::PowerOff { vm: vm("web") }).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_dropped_operation_frees_its_vm() {
    let sim = new_sim();
    let r = tokio::time::timeout(
        std::time::Duration::from_millis(500),
        sim.execute(&Action::Reset { vm: vm("web") }),
    )
    .await;
    assert!(r.is_err());
    assert!(
        sim.vm_truth(&vm("web")).unwrap().is_healthy(),
        "a dropped call did nothing"
    );
    sim.execute(&Action::Reset { vm: vm("web") }).await.unwrap();
}
