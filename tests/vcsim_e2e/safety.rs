//! Safety on vCenter: a partitioned host is never treated as dead while it shows life, a VM whose
//! files are locked is never started twice, nothing is left registered twice or lost, a host is
//! removed only when dead beyond doubt, and a capacity shortage keeps adding spares.

use std::time::Duration;

use am_core::{Action, AlarmKind, HostId, Subject};
use am_testbed::{Spec, Vcsim};
use am_vsphere::vsphere_soap::Password;
use am_vsphere::{Options, SpareHost};

use crate::common::*;

/// A test bed whose guests and hosts listen (so they can be probed), on an NFS datastore.
fn listening(hosts: u32, vms_per_host: u32) -> Vcsim {
    Vcsim::start(&Spec {
        hosts,
        vms_per_host,
        guest_port: am_testbed::free_port(),
        mgmt_port: am_testbed::free_port(),
        nfs: true,
        ..Spec::default()
    })
}

/// Actions that move a VM away from its host or take a host out.
fn moves(m: &Manager) -> Vec<Action> {
    m.intents()
        .into_iter()
        .filter(|a| {
            matches!(
                a,
                Action::Failover { .. }
                    | Action::Unregister { .. }
                    | Action::Register { .. }
                    | Action::RemoveHost { .. }
                    | Action::MigrateCold { .. }
            )
        })
        .collect()
}

/// A host cut off from vCenter and from the manager's management probe, whose guests keep
/// running and answer their probes: isolated, not dead. Nothing is unregistered, failed over or
/// removed; when the partition heals every VM runs once, where it ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_host_whose_guests_answer_is_isolated_and_nothing_moves() {
    let sim = listening(3, 2);
    let m = Manager::start_with(
        &sim,
        Setup {
            opts: probing(&sim),
            probes: true,
            tune: Box::new(quick_probes),
        },
    )
    .await;
    let (name, moref, _) = busiest(&sim);
    let host = Subject::Host(HostId::from(moref.as_str()));
    // Probes settle (every host and guest answers) before the fault.
    tokio::time::sleep(Duration::from_secs(3)).await;
    sim.post(&format!("/host/partition?name={name}&mgmt=down&guests=up"));
    eventually(&m, "the partitioned host to be isolated", || async {
        m.alarm_raised(AlarmKind::HostIsolated, &host).then_some(())
    })
    .await;
    // Longer than any failover would take: nothing moves.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(m.state_of(&host).as_deref(), Some("isolated"), "{}", m.story());
    assert!(
        moves(&m).is_empty(),
        "nothing moved: {:?}\n{}",
        moves(&m),
        m.story()
    );
    each_runs_once(&sim).unwrap_or_else(|e| panic!("{e}\n{}", m.story()));
    sim.post(&format!("/host/heal?name={name}"));
    eventually(&m, "the host to be up again", || async {
        (m.state_of(&host).as_deref() == Some("up")).then_some(())
    })
    .await;
    each_runs_once(&sim).unwrap_or_else(|e| panic!("{e}\n{}", m.story()));
    assert!(moves(&m).is_empty(), "{}", m.story());
    m.stop().await;
}

/// The same partition with nothing probed (vCenter's connection state is the one signal): the
/// host is declared dead on it, but before anything is unregistered the first VM's lock file is
/// found fresh: it still runs there. The host is isolated, not dead; no other VM is touched,
/// nothing is removed, every VM stays registered once; when the partition heals every VM runs
/// exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_with_nothing_probed_is_found_alive_by_the_locks() {
    let sim = listening(3, 2);
    let m = Manager::start(&sim).await;
    let (name, moref, _) = busiest(&sim);
    let host = Subject::Host(HostId::from(moref.as_str()));
    sim.post(&format!("/host/partition?name={name}"));
    eventually(&m, "the host found alive by a lock and isolated", || async {
        m.alarm_raised(AlarmKind::HostIsolated, &host).then_some(())
    })
    .await;
    let text = m.alarm_text(AlarmKind::HostIsolated).unwrap_or_default();
    assert!(text.contains("found running there"), "{text}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let failovers = m
        .intents()
        .iter()
        .filter(|a| matches!(a, Action::Failover { .. }))
        .count();
    assert_eq!(
        failovers,
        1,
        "one VM first, and it was found locked:\n{}",
        m.story()
    );
    assert!(
        !m.intents().iter().any(|a| matches!(a, Action::RemoveHost { .. })),
        "never removed:\n{}",
        m.story()
    );
    each_runs_once(&sim).unwrap_or_else(|e| panic!("nothing was unregistered: {e}\n{}", m.story()));
    assert!(
        m.alarm_raised(AlarmKind::FailoverDegraded, &Subject::Cluster),
        "the hosts with one signal are named:\n{}",
        m.story()
    );
    sim.post(&format!("/host/heal?name={name}"));
    eventually(&m, "the host to be up again", || async {
        (m.state_of(&host).as_deref() == Some("up")).then_some(())
    })
    .await;
    each_runs_once(&sim).unwrap_or_else(|e| panic!("{e}\n{}", m.story()));
    m.stop().await;
}

/// The same partition, and then the partitioned host crashes: its VMs' locks were the only sign
/// of life, and they go stale. The manager looks at one VM's lock every `lock_recheck`; once it
/// is stale the host is dead, that VM is failed over first and the others follow: every VM runs
/// exactly once, on the survivors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_host_that_crashes_is_found_dead_by_its_stale_locks() {
    let sim = listening(3, 2);
    let m = Manager::start_with(
        &sim,
        Setup {
            opts: Options {
                lock_fresh: Duration::from_secs(3),
                ..Setup::default().opts
            },
            probes: false,
            tune: Box::new(|cfg| cfg.supervisor.lock_recheck = Duration::from_secs(2)),
        },
    )
    .await;
    let (name, moref, _) = busiest(&sim);
    let host = Subject::Host(HostId::from(moref.as_str()));
    sim.post(&format!("/host/partition?name={name}"));
    eventually(&m, "the host found alive by a lock and isolated", || async {
        m.alarm_raised(AlarmKind::HostIsolated, &host).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(m.state_of(&host).as_deref(), Some("isolated"), "{}", m.story());
    each_runs_once(&sim).unwrap_or_else(|e| panic!("still isolated, nothing moved: {e}\n{}", m.story()));
    sim.post(&format!("/host/crash?name={name}"));
    eventually(&m, "every VM to run exactly once on the survivors", || async {
        let on_dead = sim.running().values().any(|hosts| hosts.contains(&name));
        (each_runs_once(&sim).is_ok() && !on_dead).then_some(())
    })
    .await;
    assert!(
        m.story().contains("lock is gone"),
        "found dead by the lock check:\n{}",
        m.story()
    );
    m.stop().await;
}

/// Where the lock is not a file the manager can see (VMFS; here: the datastore browser fails),
/// the failover gets as far as the power-on on the new host, which fails with `FileLocked`. The
/// manager undoes its registration there (the VM is registered once: by its host, when the host
/// comes back), isolates the host and touches nothing else; after the heal every VM runs exactly
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_power_on_is_undone_and_the_host_comes_back_with_its_vms() {
    let sim = listening(3, 2);
    let m = Manager::start(&sim).await;
    sim.post("/fault?method=SearchDatastore_Task&fault=NotSupported&count=-1");
    let (name, moref, _) = busiest(&sim);
    let host = Subject::Host(HostId::from(moref.as_str()));
    sim.post(&format!("/host/partition?name={name}"));
    eventually(&m, "the locked power-on to isolate the host", || async {
        m.alarm_raised(AlarmKind::HostIsolated, &host).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    // The copy on the other host was unregistered again: nothing is registered twice.
    let twice: Vec<(String, usize)> = sim.registrations().into_iter().filter(|(_, n)| *n > 1).collect();
    assert!(twice.is_empty(), "registered twice: {twice:?}\n{}", m.story());
    assert!(
        !m.intents().iter().any(|a| matches!(a, Action::RemoveHost { .. })),
        "{}",
        m.story()
    );
    sim.post(&format!("/host/heal?name={name}"));
    eventually(&m, "the host to be up again", || async {
        (m.state_of(&host).as_deref() == Some("up")).then_some(())
    })
    .await;
    // Its own registration came back with the host; the manager knows the VM again.
    eventually(&m, "every VM to run exactly once", || async {
        each_runs_once(&sim).ok()
    })
    .await;
    m.stop().await;
}

/// A spare the test bed can add: a host named by an IP address, which listens there.
fn spare(ip: &str) -> SpareHost {
    SpareHost {
        address: ip.into(),
        port: None,
        user: "root".into(),
        password: Password::new("spare"),
        thumbprint: None,
        cluster: None,
    }
}

/// Capacity runs out as hosts crash: each time more VMs wait than fit, the next spare is added
/// (its datastore mounted before anything restarts there); with the pool empty an alarm says so.
/// Dead hosts whose VMs wait are never removed, and removal is never tried in a loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_growing_shortage_adds_spares_and_never_loops_on_removal() {
    let sim = listening(3, 3);
    let mut opts = Options {
        targets: am_vsphere::Targets::none(),
        ..Options::default()
    };
    opts.capacity.memory = am_vsphere::MemoryModel::Configured;
    opts.spares.insert("spare-1".into(), spare("127.3.200.1"));
    opts.spares.insert("spare-2".into(), spare("127.3.200.2"));
    let m = Manager::start_with(
        &sim,
        Setup {
            opts,
            probes: false,
            tune: Box::new(|cfg| {
                cfg.supervisor.spares = vec!["spare-1".into(), "spare-2".into()];
                // Hosts of ~4 GiB keep all but ~100 MiB for themselves: room for 3 VMs of 32 MiB.
                cfg.supervisor.placement.host_reserve = am_core::Resources::new(0, 3995);
                cfg.supervisor.placement.fan_in = 0;
                cfg.supervisor.revive_attempts = 1;
                cfg.supervisor.storm_fraction = 1.0;
            }),
        },
    )
    .await;
    let inv = hosts(&sim);
    let names: Vec<String> = inv.keys().cloned().collect();
    sim.post(&format!("/host/crash?name={}", names[0]));
    eventually(&m, "a spare to be added", || async {
        m.intents()
            .iter()
            .any(|a| matches!(a, Action::AddHost { spare } if spare == "spare-1"))
            .then_some(())
    })
    .await;
    eventually(&m, "its datastore to be mounted", || async {
        m.intents()
            .iter()
            .any(|a| matches!(a, Action::MountDatastore { .. }))
            .then_some(())
    })
    .await;
    sim.post(&format!("/host/crash?name={}", names[1]));
    eventually(&m, "the second spare as the shortage grows", || async {
        m.intents()
            .iter()
            .any(|a| matches!(a, Action::AddHost { spare } if spare == "spare-2"))
            .then_some(())
    })
    .await;
    sim.post(&format!("/host/crash?name={}", names[2]));
    eventually(&m, "the empty pool to be said", || async {
        m.alarm_raised(AlarmKind::SparePoolEmpty, &Subject::Cluster)
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(15)).await;
    let removals = m
        .intents()
        .iter()
        .filter(|a| matches!(a, Action::RemoveHost { .. }))
        .count();
    assert_eq!(
        removals,
        0,
        "no fence configured: dead hosts stay, and are never removed in a loop:\n{}",
        m.story()
    );
    let adds = m
        .intents()
        .iter()
        .filter(|a| matches!(a, Action::AddHost { .. }))
        .count();
    assert_eq!(adds, 2, "each spare added once:\n{}", m.story());
    // Whatever runs, runs once.
    for (vmx, on) in sim.running() {
        assert!(on.len() <= 1, "{vmx} runs on {on:?}\n{}", m.story());
    }
    m.stop().await;
}
