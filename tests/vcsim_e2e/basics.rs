//! The basics: a crashed host, a user power-off, a red heartbeat, a vCenter restart, connection
//! errors, and every action of the adapter on its own.

use std::sync::Arc;
use std::time::Duration;

use am_core::{Action, AlarmChange, AlarmKind, Clock, LogKind, Subject};
use am_testbed::{Spec, Vcsim, free_port};
use am_vsphere::vsphere_soap::{EventFilter, MoRef, Password, TlsMode};
use am_vsphere::{ConnectError, ConnectSettings, Options, VsphereBackend};

use crate::common::*;

/// (a) A host crashes (nothing probed: vCenter's connection state is the one signal): declared
/// dead after `single_signal_confirm`, its VMs end up registered and running on the other hosts,
/// once each; no lock stood in the way (nothing runs there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_host_has_its_vms_restarted_elsewhere() {
    let sim = Vcsim::start(&Spec {
        hosts: 3,
        vms_per_host: 2,
        tls: true,
        ..Spec::default()
    });
    let m = Manager::start(&sim).await;
    let obs = observer(&sim).await;
    let (dead_name, dead_ref, dead_vms) = busiest(&sim);
    sim.post(&format!("/host/crash?name={dead_name}"));

    let dead = MoRef::new("HostSystem", dead_ref.clone());
    eventually(&m, "the dead host's VMs to run on other hosts", || async {
        let all = vms(&obs).await;
        dead_vms
            .iter()
            .all(|name| {
                all.iter().any(|(_, n, power, host)| {
                    n == name && power == "poweredOn" && host.as_ref().is_some_and(|h| *h != dead)
                })
            })
            .then_some(())
    })
    .await;
    // No copy of them is left on the dead host, and none runs twice.
    let all = vms(&obs).await;
    for name in &dead_vms {
        let copies: Vec<_> = all.iter().filter(|(_, n, _, _)| n == name).collect();
        assert_eq!(copies.len(), 1, "{name} is registered once: {copies:?}");
    }
    let after = hosts(&sim);
    assert!(
        after[&dead_name].1.is_empty(),
        "nothing registered on the dead host any more: {:?}",
        after[&dead_name]
    );
    let story = m.story();
    println!("{story}");
    assert!(
        m.intents()
            .iter()
            .filter(|a| matches!(a, Action::Failover { .. }))
            .count()
            >= dead_vms.len(),
        "one failover per VM:\n{story}"
    );
    assert!(
        m.alarm_raised(
            AlarmKind::HostUnreachable,
            &Subject::Host(dead_ref.as_str().into())
        ),
        "{story}"
    );
    m.stop().await;
}

/// (b) A VM a named user powers off raises a VmPoweredOff alarm and stays off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_power_off_raises_an_alarm_and_the_vm_stays_off() {
    let sim = Vcsim::start(&Spec {
        hosts: 2,
        vms_per_host: 2,
        tls: true,
        ..Spec::default()
    });
    let m = Manager::start(&sim).await;
    let obs = observer(&sim).await;
    let (vm, name, _, _) = vms(&obs).await.into_iter().next().expect("a VM");
    sim.post(&format!("/vm/power-off?name={name}&user=alice"));
    let subject = Subject::Vm(vm.value.as_str().into());
    eventually(&m, "the VmPoweredOff alarm", || async {
        m.alarm_raised(AlarmKind::VmPoweredOff, &subject).then_some(())
    })
    .await;
    let message = m
        .alarms
        .lock()
        .unwrap()
        .iter()
        .find_map(|c| match c {
            AlarmChange::Raise(a) if a.kind == AlarmKind::VmPoweredOff => Some(a.message.clone()),
            _ => None,
        })
        .unwrap();
    assert!(message.contains("alice"), "{message}");
    // Longer than the power-off grace and a recovery step: still off, nothing done to it.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let now = vms(&obs).await;
    let (_, _, power, _) = now
        .iter()
        .find(|(r, _, _, _)| *r == vm)
        .expect("still registered");
    assert_eq!(power, "poweredOff", "the user's power-off stands:\n{}", m.story());
    let acted: Vec<Action> = m
        .intents()
        .into_iter()
        .filter(|a| {
            a.vm().is_some_and(|v| v.as_str() == vm.value)
                && !matches!(a, Action::CreateSnapshot { .. } | Action::RemoveSnapshot { .. })
        })
        .collect();
    assert!(
        acted.is_empty(),
        "no action on a VM a user switched off: {acted:?}\n{}",
        m.story()
    );
    m.stop().await;
}

/// (c) A red VMware Tools heartbeat gets the VM reset (vcsim records the manager powering it off
/// and on again), and no failover or migration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_red_heartbeat_resets_the_vm_and_moves_nothing() {
    let sim = Vcsim::start(&Spec {
        hosts: 2,
        vms_per_host: 2,
        tls: true,
        ..Spec::default()
    });
    let m = Manager::start(&sim).await;
    let obs = observer(&sim).await;
    let (vm, name, _, host) = vms(&obs).await.into_iter().next().expect("a VM");
    let events_of = |vm: MoRef| {
        let obs = obs.clone();
        async move {
            obs.query_events(&EventFilter {
                entity: Some(vm),
                max_count: Some(1000),
                ..EventFilter::default()
            })
            .await
            .expect("events")
        }
    };
    let before = events_of(vm.clone())
        .await
        .iter()
        .map(|e| e.key)
        .max()
        .unwrap_or(0);
    sim.post(&format!("/vm/heartbeat?name={name}&status=red"));

    eventually(&m, "vcsim to record the reset", || async {
        let evs = events_of(vm.clone()).await;
        evs.iter()
            .any(|e| e.key > before && e.type_name == "VmPoweredOnEvent" && e.user_name == MANAGER)
            .then_some(())
    })
    .await;
    assert!(
        m.intents()
            .iter()
            .any(|a| matches!(a, Action::Reset { vm: v } if v.as_str() == vm.value)),
        "the manager reset it:\n{}",
        m.story()
    );
    // The guest is back after its reboot.
    sim.post(&format!("/vm/heartbeat?name={name}&status=green"));
    eventually(&m, "the VM to be healthy again", || async {
        m.log()
            .iter()
            .any(|e| {
                e.subject == Subject::Vm(vm.value.as_str().into())
                    && matches!(&e.kind, LogKind::Transition { to, reason, .. } if to == "healthy" && reason.contains("restart"))
            })
            .then_some(())
    })
    .await;
    let moved: Vec<Action> = m
        .intents()
        .into_iter()
        .filter(|a| {
            matches!(
                a,
                Action::Failover { .. }
                    | Action::MigrateCold { .. }
                    | Action::MigrateLive { .. }
                    | Action::RestoreClone { .. }
            )
        })
        .collect();
    assert!(moved.is_empty(), "nothing moved: {moved:?}\n{}", m.story());
    let now = vms(&obs).await;
    let (_, _, power, on) = now
        .iter()
        .find(|(r, _, _, _)| *r == vm)
        .expect("still registered");
    assert_eq!((power.as_str(), on), ("poweredOn", &host), "running where it was");
    m.stop().await;
}

/// (d) vCenter restarts (the process is killed and started again on the same port, its sessions
/// gone): the manager logs in again, reads the inventory again and keeps working (a user
/// power-off after the restart raises its alarm). Then its session is lost in the middle of a
/// wait for updates: same again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manager_survives_a_vcenter_restart() {
    let mut sim = Vcsim::start(&Spec {
        hosts: 2,
        vms_per_host: 1,
        tls: false,
        listen: Some(format!("127.0.0.1:{}", free_port())),
        ..Spec::default()
    });
    let m = Manager::start(&sim).await;
    let first_sight = |m: &Manager| {
        m.log()
            .iter()
            .filter(|e| matches!(&e.kind, LogKind::Transition { from, .. } if from == "new"))
            .count()
    };
    let seen = first_sight(&m);
    let listen = sim.listen_addr();
    let url = sim.url.clone();
    sim.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The new instance has more VMs: the manager has logged in again and read the inventory again
    // when it sees them.
    let sim = Vcsim::start(&Spec {
        hosts: 2,
        vms_per_host: 2,
        tls: false,
        listen: Some(listen),
        ..Spec::default()
    });
    assert_eq!(sim.url, url, "same address after the restart");
    eventually(&m, "the inventory of the restarted vCenter", || async {
        (first_sight(&m) > seen).then_some(())
    })
    .await;
    let obs = observer(&sim).await;
    let (vm, name, _, _) = vms(&obs).await.into_iter().next().expect("a VM");
    sim.post(&format!("/vm/power-off?name={name}&user=bob"));
    let subject = Subject::Vm(vm.value.as_str().into());
    eventually(&m, "the VmPoweredOff alarm after the restart", || async {
        m.alarm_raised(AlarmKind::VmPoweredOff, &subject).then_some(())
    })
    .await;
    // The session expires while the manager waits for updates: it logs in again, makes its
    // collectors again in the new session, and still sees what happens.
    sim.post("/fault?method=WaitForUpdatesEx&fault=NotAuthenticated");
    let (vm2, name2, _, _) = vms(&obs)
        .await
        .into_iter()
        .find(|(r, _, power, _)| *r != vm && power == "poweredOn")
        .expect("another VM");
    tokio::time::sleep(Duration::from_secs(2)).await;
    sim.post(&format!("/vm/power-off?name={name2}&user=carol"));
    let subject2 = Subject::Vm(vm2.value.as_str().into());
    eventually(&m, "the VmPoweredOff alarm after a lost session", || async {
        m.alarm_raised(AlarmKind::VmPoweredOff, &subject2).then_some(())
    })
    .await;
    m.stop().await;
}

/// Connection problems are told apart and name the URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_errors_say_what_is_wrong() {
    let sim = Vcsim::start(&Spec {
        hosts: 1,
        vms_per_host: 1,
        tls: true,
        ..Spec::default()
    });
    // The system trust store does not know the test bed's CA.
    let e = am_vsphere::connect(&ConnectSettings::new(
        &sim.url,
        "am",
        Password::new("x"),
        TlsMode::SystemRoots,
    ))
    .await
    .unwrap_err();
    assert!(matches!(e, ConnectError::Tls { .. }), "{e:?}");
    assert!(e.to_string().contains(&sim.url), "{e}");
    // Bad credentials.
    sim.post("/fault?method=Login&fault=InvalidLogin&message=bad%20password");
    let e = am_vsphere::connect(&ConnectSettings::new(
        &sim.url,
        "am",
        Password::new("x"),
        tls(&sim),
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(e, ConnectError::Login { ref user, .. } if user == "am"),
        "{e:?}"
    );
    // Nobody listening.
    let nowhere = format!("https://127.0.0.1:{}/sdk", free_port());
    let e = am_vsphere::connect(&ConnectSettings::new(
        &nowhere,
        "am",
        Password::new("x"),
        tls(&sim),
    ))
    .await
    .unwrap_err();
    assert!(matches!(e, ConnectError::Unreachable { .. }), "{e:?}");
    assert!(e.to_string().contains(&nowhere), "{e}");
}

/// The inventory as a reader of `src` sees it, kept current with `changes`.
struct View<'a> {
    src: &'a VsphereBackend,
    inv: am_core::Inventory,
    version: String,
}

impl<'a> View<'a> {
    async fn new(src: &'a VsphereBackend) -> View<'a> {
        use am_core::InventorySource;
        let (inv, version) = src.snapshot().await.expect("inventory");
        View { src, inv, version }
    }

    /// Applies changes until `pred` holds (at most [`WAIT`]).
    async fn until(&mut self, what: &str, pred: impl Fn(&am_core::Inventory) -> bool) {
        use am_core::InventorySource;
        let deadline = tokio::time::Instant::now() + WAIT;
        while !pred(&self.inv) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; inventory: {:#?}",
                self.inv.vms
            );
            let c = self
                .src
                .changes(&self.version, Duration::from_secs(1))
                .await
                .expect("changes");
            for d in &c.deltas {
                self.inv.apply(d);
            }
            self.version = c.version;
        }
    }
}

/// Every action of the adapter, one after the other, as the inventory then shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_action_does_what_it_says_in_vcsim() {
    use am_core::{HostId, HvError, Hypervisor, PowerState, RestartPriority, VmId};
    let sim = Vcsim::start(&Spec {
        hosts: 2,
        vms_per_host: 1,
        tls: true,
        ..Spec::default()
    });
    let settings = ConnectSettings::new(&sim.url, MANAGER, Password::new("secret"), tls(&sim));
    let (client, _) = am_vsphere::connect(&settings).await.expect("connect");
    let mut opts = Options::default();
    opts.spares.insert(
        "spare-1".into(),
        am_vsphere::SpareHost {
            address: "esx-spare.example".into(),
            port: None,
            user: "root".into(),
            password: Password::new("esx"),
            thumbprint: None,
            cluster: None,
        },
    );
    opts.fence_hook = Some(am_vsphere::Hook::new(
        &["sh", "-c", "test {host_id} != ''"],
        Duration::from_secs(10),
    ));
    let clock: Arc<dyn Clock> = Arc::new(TestClock(tokio::time::Instant::now()));
    let hv = VsphereBackend::new(client, opts, clock).await.expect("backend");
    let mut view = View::new(&hv).await;
    assert_eq!(view.inv.hosts.len(), 2);
    let vm: VmId = view.inv.vms.keys().next().cloned().expect("a VM");
    let home: HostId = view.inv.vms[&vm].host.clone().expect("registered");
    let other: HostId = view.inv.hosts.keys().find(|h| **h != home).cloned().unwrap();
    let on = |vm: &VmId, host: &HostId| {
        let (vm, host) = (vm.clone(), host.clone());
        move |inv: &am_core::Inventory| {
            inv.vms
                .get(&vm)
                .is_some_and(|v| v.host.as_ref() == Some(&host) && v.power == PowerState::PoweredOn)
        }
    };

    // Power.
    let e = hv.execute(&Action::PowerOn { vm: vm.clone() }).await.unwrap_err();
    assert!(matches!(e, HvError::InvalidState { .. }), "{e:?}");
    hv.execute(&Action::PowerOff { vm: vm.clone() }).await.unwrap();
    view.until("power off", |i| i.vms[&vm].power == PowerState::PoweredOff)
        .await;
    hv.execute(&Action::PowerOn { vm: vm.clone() }).await.unwrap();
    hv.execute(&Action::Reset { vm: vm.clone() }).await.unwrap();
    view.until("power on", on(&vm, &home)).await;

    // Snapshots.
    let snap = hv
        .execute(&Action::CreateSnapshot {
            vm: vm.clone(),
            name: "am-backup-1".into(),
        })
        .await
        .unwrap();
    let snap = snap.snapshot().cloned().expect("a snapshot");
    view.until("the snapshot", |i| {
        i.snapshots
            .get(&vm)
            .is_some_and(|s| s.iter().any(|s| s.id == snap && s.name == "am-backup-1"))
    })
    .await;
    hv.execute(&Action::RevertSnapshot {
        vm: vm.clone(),
        snapshot: Some(snap.clone()),
    })
    .await
    .unwrap();
    hv.execute(&Action::RevertSnapshot {
        vm: vm.clone(),
        snapshot: None,
    })
    .await
    .unwrap();
    hv.execute(&Action::RemoveSnapshot {
        vm: vm.clone(),
        snapshot: snap.clone(),
    })
    .await
    .unwrap();
    view.until("no snapshot", |i| !i.snapshots.contains_key(&vm))
        .await;
    let e = hv
        .execute(&Action::RemoveSnapshot {
            vm: vm.clone(),
            snapshot: snap.clone(),
        })
        .await
        .unwrap_err();
    assert!(matches!(e, HvError::NotFound { .. }), "{e:?}");

    // Migrations.
    hv.execute(&Action::MigrateLive {
        vm: vm.clone(),
        to: other.clone(),
    })
    .await
    .unwrap();
    view.until("live migration", on(&vm, &other)).await;
    hv.execute(&Action::MigrateCold {
        vm: vm.clone(),
        to: home.clone(),
    })
    .await
    .unwrap();
    view.until("cold migration", on(&vm, &home)).await;

    // A backup clone, and a restore from it onto the other host.
    let backup = hv
        .execute(&Action::Clone {
            vm: vm.clone(),
            name: "bk-1".into(),
            host: other.clone(),
            datastore: None,
        })
        .await
        .unwrap();
    let backup = backup.vm().cloned().expect("a clone");
    view.until("the backup clone, on the host asked for", |i| {
        i.vms.get(&backup).is_some_and(|b| {
            b.host.as_ref() == Some(&other)
                && b.backup_of.as_ref() == Some(&vm)
                && b.priority == RestartPriority::Disabled
                && b.power == PowerState::PoweredOff
        })
    })
    .await;
    assert_eq!(
        view.inv.latest_clone(&vm).map(|c| c.id.clone()),
        Some(backup.clone())
    );
    hv.execute(&Action::RestoreClone {
        vm: vm.clone(),
        backup: backup.clone(),
        host: other.clone(),
    })
    .await
    .unwrap();
    view.until("the VM restored on the other host, same id", on(&vm, &other))
        .await;
    assert!(
        view.inv.vms[&vm].backup_of.is_none(),
        "the restored VM is no backup"
    );
    assert!(view.inv.vms.contains_key(&backup), "the backup stays");
    // Its new moref works for every action under the old id.
    hv.execute(&Action::Reset { vm: vm.clone() }).await.unwrap();
    // Locks: the running VM's lock file is fresh.
    let e = hv
        .execute(&Action::CheckLocks { vm: vm.clone() })
        .await
        .unwrap_err();
    assert!(
        matches!(e, HvError::Locked { .. }),
        "a running VM holds its lock: {e:?}"
    );
    // Retention deletes the manager's clone, and refuses to delete anything else.
    let e = hv
        .execute(&Action::DeleteBackup { vm: vm.clone() })
        .await
        .unwrap_err();
    assert!(
        matches!(e, HvError::InvalidState { .. }) && e.to_string().contains("not a backup clone"),
        "{e}"
    );
    hv.execute(&Action::DeleteBackup { vm: backup.clone() })
        .await
        .unwrap();
    view.until("the backup clone deleted", |i| !i.vms.contains_key(&backup))
        .await;

    // Unregister, register again (another VM: vcsim cannot register a clone's files again).
    let vm2: VmId = view
        .inv
        .vms
        .keys()
        .find(|v| **v != vm)
        .cloned()
        .expect("a second VM");
    let home2 = view.inv.vms[&vm2].host.clone().expect("registered");
    hv.execute(&Action::PowerOff { vm: vm2.clone() }).await.unwrap();
    hv.execute(&Action::Unregister { vm: vm2.clone() }).await.unwrap();
    view.until("unregistered: no host", |i| {
        i.vms.get(&vm2).is_some_and(|v| v.host.is_none())
    })
    .await;
    let e = hv
        .execute(&Action::PowerOn { vm: vm2.clone() })
        .await
        .unwrap_err();
    assert!(matches!(e, HvError::InvalidState { .. }), "{e:?}");
    hv.execute(&Action::Register {
        vm: vm2.clone(),
        host: home2.clone(),
    })
    .await
    .unwrap();
    view.until("registered on its home, same id", |i| {
        i.vms.get(&vm2).is_some_and(|v| v.host.as_ref() == Some(&home2))
    })
    .await;
    hv.execute(&Action::Failover {
        vm: vm2.clone(),
        to: home2.clone(),
    })
    .await
    .unwrap();
    view.until("powered on where it is", on(&vm2, &home2)).await;

    // Hosts.
    hv.execute(&Action::EnterMaintenance { host: other.clone() })
        .await
        .unwrap();
    view.until("maintenance", |i| i.hosts[&other].maintenance).await;
    hv.execute(&Action::ExitMaintenance { host: other.clone() })
        .await
        .unwrap();
    view.until("out of maintenance", |i| !i.hosts[&other].maintenance)
        .await;
    hv.execute(&Action::FenceHost { host: other.clone() })
        .await
        .unwrap();
    let e = hv
        .execute(&Action::ReviveHost { host: other.clone() })
        .await
        .unwrap_err();
    assert!(matches!(e, HvError::NotSupported { .. }), "{e:?}");
    let spare = hv
        .execute(&Action::AddHost {
            spare: "spare-1".into(),
        })
        .await
        .unwrap();
    let spare = spare.host().cloned().expect("a host");
    view.until("the spare host", |i| {
        i.hosts.get(&spare).is_some_and(|h| h.name == "esx-spare.example")
    })
    .await;
    assert_eq!(
        hv.execute(&Action::AddHost {
            spare: "spare-1".into()
        })
        .await
        .unwrap()
        .host(),
        Some(&spare),
        "added once"
    );
    let e = hv
        .execute(&Action::AddHost {
            spare: "spare-9".into(),
        })
        .await
        .unwrap_err();
    assert!(matches!(e, HvError::NotFound { .. }), "{e:?}");
    hv.execute(&Action::RemoveHost { host: spare.clone() })
        .await
        .unwrap();
    view.until("the spare removed", |i| !i.hosts.contains_key(&spare))
        .await;
}
