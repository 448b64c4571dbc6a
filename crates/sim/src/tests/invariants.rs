//! The invariants the simulator checks: split brain, capacity, user power-offs.

use super::*;
use crate::{Fault, Violation};
use am_core::{Action, Hypervisor, PowerState};

/// A cluster whose VMs' files are not locked: nothing but the manager stands between a VM and
/// a second copy.
fn unlocked_sim() -> Sim {
    let mut spec = small_spec();
    spec.file_locks = false;
    Sim::new(&spec).unwrap()
}

#[tokio::test(start_paused = true)]
async fn the_file_lock_refuses_a_second_copy() {
    let sim = new_sim();
    sleep_s(10).await;
    sim.inject(Fault::HostIsolate { host: host("h1") }).unwrap();
    let e = sim
        .execute(&Action::Failover {
            vm: vm("web"),
            to: host("h2"),
        })
        .await
        .unwrap_err();
    assert!(matches!(e, am_core::HvError::Locked { .. }), "{e:?}");
    assert_eq!(sim.vm_truth(&vm("web")).unwrap().running_on, vec![host("h1")]);
    assert!(sim.violations().is_empty());
}

#[tokio::test(start_paused = true)]
async fn failing_over_a_vm_of_an_isolated_host_is_a_split_brain() {
    let sim = unlocked_sim();
    sleep_s(10).await;
    sim.inject(Fault::HostIsolate { host: host("h1") }).unwrap();
    sim.execute(&Action::Failover {
        vm: vm("web"),
        to: host("h2"),
    })
    .await
    .unwrap();
    let truth = sim.vm_truth(&vm("web")).unwrap();
    assert_eq!(truth.running_on, vec![host("h1"), host("h2")]);
    assert_eq!(
        sim.violations(),
        vec![Violation::DoubleRun {
            vm: vm("web"),
            hosts: vec![host("h1"), host("h2")],
            at: secs(12),
        }]
    );
    assert!(sim.violations()[0].to_string().contains("runs on 2 hosts"));
    let by_host = sim.running_by_host();
    assert!(by_host[&host("h1")].contains(&vm("web")));
    assert!(by_host[&host("h2")].contains(&vm("web")));
    // When the host comes back, its stale copy loses its disk lock and dies; the record stays.
    sim.inject(Fault::HostHeal { host: host("h1") }).unwrap();
    assert_eq!(sim.vm_truth(&vm("web")).unwrap().running_on, vec![host("h2")]);
    assert!(
        sim.vm_truth(&vm("db")).unwrap().is_running(),
        "db was not restarted elsewhere"
    );
    assert_eq!(sim.violations().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_disconnected_host_is_a_split_brain_trap_too() {
    let sim = unlocked_sim();
    sim.inject(Fault::HostDisconnect { host: host("h2") }).unwrap();
    sim.execute(&Action::Failover {
        vm: vm("app"),
        to: host("h1"),
    })
    .await
    .unwrap();
    assert!(matches!(
        sim.violations().as_slice(),
        [Violation::DoubleRun { .. }]
    ));
}

#[tokio::test(start_paused = true)]
async fn overloading_a_host_is_recorded_when_capacity_is_not_enforced() {
    let mut spec = small_spec();
    spec.enforce_capacity = false;
    let sim = Sim::new(&spec).unwrap();
    sim.execute(&Action::MigrateLive {
        vm: vm("db"),
        to: host("h3"),
    })
    .await
    .unwrap();
    match sim.violations().as_slice() {
        [
            Violation::OverCapacity {
                host: h,
                used,
                capacity,
                at,
            },
        ] => {
            assert_eq!(*h, host("h3"));
            assert_eq!(used.cpu_mhz, 12_000);
            assert_eq!(capacity.cpu_mhz, 10_000);
            assert_eq!(*at, secs(8));
        }
        other => panic!("{other:?}"),
    }
    // Recorded once per episode.
    sim.execute(&Action::Reset { vm: vm("db") }).await.unwrap();
    assert_eq!(sim.violations().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_overloaded_spec_is_a_violation_from_the_start() {
    let mut spec = small_spec();
    spec.vms.push(crate::VmSpec::new("huge", "h2", 9_000, 1_024));
    let sim = Sim::new(&spec).unwrap();
    assert!(matches!(sim.violations().as_slice(), [Violation::OverCapacity { at, .. }] if *at == Time::ZERO));
}

#[tokio::test(start_paused = true)]
async fn the_manager_must_not_power_on_what_a_user_powered_off() {
    let sim = new_sim();
    sleep_s(5).await;
    sim.inject(Fault::VmPowerOff {
        vm: vm("web"),
        user: Some("alice".into()),
    })
    .unwrap();
    sleep_s(5).await;
    sim.execute(&Action::PowerOn { vm: vm("web") }).await.unwrap();
    assert_eq!(
        sim.violations(),
        vec![Violation::UserPowerOffOverridden {
            vm: vm("web"),
            user: "alice".into(),
            powered_off_at: secs(5),
            powered_on_at: secs(11),
        }]
    );
}

#[tokio::test(start_paused = true)]
async fn after_a_user_powers_it_back_on_the_manager_may_restart_it() {
    let sim = new_sim();
    sim.inject(Fault::VmPowerOff {
        vm: vm("web"),
        user: Some("alice".into()),
    })
    .unwrap();
    sim.inject(Fault::VmPowerOn {
        vm: vm("web"),
        user: Some("alice".into()),
    })
    .unwrap();
    sim.execute(&Action::PowerOff { vm: vm("web") }).await.unwrap();
    sim.execute(&Action::PowerOn { vm: vm("web") }).await.unwrap();
    // A crash power-off (no user) may be recovered too.
    sim.inject(Fault::VmPowerOff {
        vm: vm("app"),
        user: None,
    })
    .unwrap();
    sim.execute(&Action::PowerOn { vm: vm("app") }).await.unwrap();
    assert_eq!(sim.view().vms[&vm("app")].power, PowerState::PoweredOn);
    assert!(sim.violations().is_empty());
}

#[tokio::test(start_paused = true)]
async fn cold_migration_of_a_user_powered_off_vm_overrides_the_user_too() {
    let sim = new_sim();
    sim.inject(Fault::VmPowerOff {
        vm: vm("app"),
        user: Some("dave".into()),
    })
    .unwrap();
    sim.execute(&Action::MigrateCold {
        vm: vm("app"),
        to: host("h1"),
    })
    .await
    .unwrap();
    assert!(matches!(
        sim.violations().as_slice(),
        [Violation::UserPowerOffOverridden { .. }]
    ));
}

#[tokio::test(start_paused = true)]
async fn outages_measure_the_true_downtime() {
    let sim = new_sim();
    sleep_s(10).await;
    sim.inject(Fault::VmGuestCrash {
        vm: vm("web"),
        depth: crate::FaultDepth::Transient,
    })
    .unwrap();
    sleep_s(20).await;
    sim.execute(&Action::Reset { vm: vm("web") }).await.unwrap();
    sim.inject(Fault::HostCrash {
        host: host("h2"),
        permanent: false,
    })
    .unwrap();
    let outages = sim.outages();
    assert_eq!(outages.len(), 2);
    assert_eq!(outages[0].vm, vm("web"));
    assert_eq!((outages[0].from, outages[0].to), (secs(10), Some(secs(31))));
    assert_eq!(outages[0].duration(sim.now()), Duration::from_secs(21));
    assert_eq!((outages[1].vm.clone(), outages[1].to), (vm("app"), None));
    // Powered-off backups and unprotected VMs do not count.
    assert!(outages.iter().all(|o| o.vm != vm("batch")));
}
