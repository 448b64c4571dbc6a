//! What `run` can be told, one capability each: guest probes, spares and their datastores,
//! revival hooks, priorities from custom attributes, the capacity model; and how vCenter's own
//! failures show: a vCenter that hangs.

use std::time::Duration;

use am_core::{Action, AlarmKind, HostId, LogKind, Subject, VmId};
use am_testbed::{Spec, Vcsim};
use am_vsphere::vsphere_soap::Password;
use am_vsphere::{Hook, Options, SpareHost};

use crate::common::*;

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

/// The VMs of the test bed: name -> moref.
fn vm_refs(sim: &Vcsim) -> std::collections::BTreeMap<String, String> {
    sim.inventory()
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|h| h["vms"].as_array().cloned().unwrap_or_default())
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_owned(),
                v["ref"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// A guest whose network goes away while VMware Tools stay green: its probe is lost, the
/// ladder resets it; when it answers again it is healthy. Nothing else is touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_that_stops_answering_with_tools_green_is_reset() {
    let sim = listening(2, 2);
    let m = Manager::start_with(
        &sim,
        Setup {
            opts: probing(&sim),
            probes: true,
            tune: Box::new(quick_probes),
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (name, moref) = vm_refs(&sim).into_iter().next().expect("a VM");
    let vm = VmId::from(moref.as_str());
    sim.post(&format!("/vm/guest-net?name={name}&state=down"));
    eventually(&m, "the reset", || async {
        m.intents()
            .iter()
            .any(|a| matches!(a, Action::Reset { vm: v } if *v == vm))
            .then_some(())
    })
    .await;
    sim.post(&format!("/vm/guest-net?name={name}&state=up"));
    eventually(&m, "the guest to answer again", || async {
        m.log()
            .iter()
            .any(|e| {
                e.subject == Subject::Vm(vm.clone())
                    && matches!(&e.kind, LogKind::Transition { to, reason, .. } if to == "healthy" && reason.contains("restart"))
            })
            .then_some(())
    })
    .await;
    let others: Vec<Action> = m
        .intents()
        .into_iter()
        .filter(|a| a.vm().is_some_and(|v| *v != vm) && !matches!(a, Action::CreateSnapshot { .. }))
        .collect();
    assert!(others.is_empty(), "{others:?}\n{}", m.story());
    m.stop().await;
}

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

/// Every host of the cluster dies: the spare is added, the NFS datastore the VMs live on is
/// mounted on it (the same export, by `CreateNasDatastore`), and the VMs restart there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_host_lost_the_spare_is_added_its_datastore_mounted_and_vms_restart_there() {
    let sim = listening(2, 2);
    let mut opts = probing(&sim);
    opts.spares.insert("spare-1".into(), spare("127.3.200.1"));
    let isolation = isolation_address(&sim);
    let m = Manager::start_with(
        &sim,
        Setup {
            opts,
            probes: true,
            tune: Box::new(move |cfg| {
                quick_probes(cfg);
                cfg.supervisor.spares = vec!["spare-1".into()];
                // With every host lost, only this proves the manager's own network works.
                cfg.isolation_addresses = vec![isolation];
            }),
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let names: Vec<String> = hosts(&sim).keys().cloned().collect();
    for h in &names {
        sim.post(&format!("/host/crash?name={h}"));
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    eventually(&m, "every VM running on the spare", || async {
        let running = sim.running();
        let all_on_spare = !running.is_empty()
            && running
                .iter()
                .filter(|(vmx, _)| !vmx.contains("am backup"))
                .all(|(_, on)| on.len() == 1 && on[0] == "127.3.200.1");
        all_on_spare.then_some(())
    })
    .await;
    let intents = m.intents();
    assert!(
        intents.iter().any(|a| matches!(a, Action::AddHost { .. })),
        "{}",
        m.story()
    );
    assert!(
        intents.iter().any(|a| matches!(a, Action::MountDatastore { .. })),
        "the datastore was mounted on the spare:\n{}",
        m.story()
    );
    assert!(
        m.alarm_raised(
            AlarmKind::SpareHostAdded,
            &Subject::Host(
                intents
                    .iter()
                    .find_map(|a| match a {
                        Action::MountDatastore { host, .. } => Some(host.clone()),
                        _ => None,
                    })
                    .unwrap()
            )
        )
    );
    m.stop().await;
}

/// A host crashes; the revival hook (here: the test bed's power cycle, through its client mode)
/// brings it back: it is up again and never removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revival_hook_brings_a_dead_host_back_and_it_is_not_removed() {
    let sim = listening(3, 1);
    let (name, moref, _) = busiest(&sim);
    let mut opts = probing(&sim);
    let cmd = sim.hook_command("/host/revive?name={host}");
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    opts.revive_hook = Some(Hook::new(&cmd, Duration::from_secs(30)));
    let m = Manager::start_with(
        &sim,
        Setup {
            opts,
            probes: true,
            tune: Box::new(quick_probes),
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let host = Subject::Host(HostId::from(moref.as_str()));
    sim.post(&format!("/host/crash?name={name}"));
    eventually(&m, "the host to die", || async {
        (m.state_of(&host).as_deref() == Some("dead")).then_some(())
    })
    .await;
    eventually(&m, "the revival to bring it back", || async {
        m.log()
            .iter()
            .any(|e| {
                e.subject == host
                    && matches!(&e.kind, LogKind::Transition { to, reason, .. } if to == "up" && reason.contains("revival"))
            })
            .then_some(())
    })
    .await;
    assert!(
        m.intents().iter().any(|a| matches!(a, Action::ReviveHost { .. })),
        "{}",
        m.story()
    );
    assert!(
        !m.intents().iter().any(|a| matches!(a, Action::RemoveHost { .. })),
        "{}",
        m.story()
    );
    m.stop().await;
}

/// Priorities from a vCenter custom attribute (`am.priority`) decide the restart order: with
/// `restart_order.wait_for = "ready"` the high-priority VM is restarted first and the low one
/// only once the high one is ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priorities_from_a_custom_attribute_decide_the_restart_order() {
    let sim = listening(2, 3);
    let (name, _, on_host) = busiest(&sim);
    assert!(on_host.len() >= 2, "two VMs on one host");
    let (high, low) = (on_host[0].clone(), on_host[1].clone());
    sim.post(&format!("/vm/attribute?name={high}&key=am.priority&value=high"));
    sim.post(&format!("/vm/attribute?name={low}&key=am.priority&value=low"));
    let refs = vm_refs(&sim);
    let (high_id, low_id) = (VmId::from(refs[&high].as_str()), VmId::from(refs[&low].as_str()));
    let m = Manager::start_with(
        &sim,
        Setup {
            opts: probing(&sim),
            probes: true,
            tune: Box::new(|cfg| {
                quick_probes(cfg);
                cfg.supervisor.restart_order.wait_for = supervisor::Readiness::Ready;
            }),
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    sim.post(&format!("/host/crash?name={name}"));
    eventually(&m, "both restarted", || async {
        let restarted = |id: &VmId| {
            m.intents()
                .iter()
                .any(|a| matches!(a, Action::Failover { vm, .. } if vm == id))
        };
        (restarted(&high_id) && restarted(&low_id)).then_some(())
    })
    .await;
    let log = m.log();
    let pos = |pred: &dyn Fn(&am_core::LogEntry) -> bool| log.iter().position(pred);
    let high_ready = pos(&|e| {
        e.subject == Subject::Vm(high_id.clone())
            && matches!(&e.kind, LogKind::Transition { to, .. } if to == "healthy")
    })
    .expect("the high-priority VM became ready");
    let low_started = pos(&|e| {
        e.subject == Subject::Vm(low_id.clone())
            && matches!(
                &e.kind,
                LogKind::Issued {
                    action: Action::Failover { .. },
                    ..
                }
            )
    })
    .expect("the low-priority VM was restarted");
    assert!(
        high_ready < low_started,
        "high ready before low starts:\n{}",
        m.story()
    );
    m.stop().await;
}

/// A cluster that overcommits memory (here: the hosts keep almost all of it for themselves, so
/// the VMs' configured sizes do not fit): with the default capacity model (reservation +
/// overhead, what vSphere HA counts) a crashed host's VMs all restart, where counting their
/// configured size would leave them waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overcommitted_cluster_fails_over_under_the_default_capacity_model() {
    let sim = listening(2, 3);
    let (name, _, on_host) = busiest(&sim);
    let m = Manager::start_with(
        &sim,
        Setup {
            opts: probing(&sim),
            probes: true,
            tune: Box::new(|cfg| {
                quick_probes(cfg);
                cfg.supervisor.placement.host_reserve = am_core::Resources::new(0, 4090);
            }),
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    sim.post(&format!("/host/crash?name={name}"));
    eventually(&m, "every VM of the crashed host running elsewhere", || async {
        let running = sim.running();
        on_host
            .iter()
            .all(|vm| {
                running
                    .iter()
                    .any(|(vmx, on)| vmx.contains(&format!("/{vm}.vmx")) && on.len() == 1 && on[0] != name)
            })
            .then_some(())
    })
    .await;
    assert!(
        !m.alarm_raised(AlarmKind::CapacityInsufficient, &Subject::Cluster),
        "{}",
        m.story()
    );
    m.stop().await;
}

/// A vCenter that accepts connections but stops answering is noticed within seconds (the
/// health check's timeout), not when a long call times out: an alarm, cleared when it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_vcenter_is_noticed_within_seconds() {
    let sim = Vcsim::start(&Spec {
        hosts: 2,
        vms_per_host: 1,
        ..Spec::default()
    });
    let m = Manager::start_with(
        &sim,
        Setup {
            opts: Options {
                targets: am_vsphere::Targets::none(),
                ..Options::default()
            },
            ..Setup::default()
        },
    )
    .await;
    sim.post("/hold?method=CurrentTime");
    eventually(&m, "the VcenterUnreachable alarm", || async {
        m.alarm_raised(AlarmKind::VcenterUnreachable, &Subject::Cluster)
            .then_some(())
    })
    .await;
    sim.post("/release?method=CurrentTime");
    eventually(&m, "vCenter answering again", || async {
        m.log()
            .iter()
            .any(|e| matches!(&e.kind, LogKind::AlarmCleared { alarm } if *alarm == AlarmKind::VcenterUnreachable))
            .then_some(())
    })
    .await;
    m.stop().await;
}

/// The backup cache's clones on vCenter: each VM gets a powered-off clone on a host other than
/// its own, refreshed every `clone_every`; once a newer one exists the older is destroyed, so
/// each VM keeps exactly `keep_clones` (1) of the manager's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_clones_are_kept_on_another_host_and_refreshed() {
    let sim = Vcsim::start(&Spec {
        hosts: 2,
        vms_per_host: 1,
        ..Spec::default()
    });
    let m = Manager::start_with(
        &sim,
        Setup {
            tune: Box::new(|cfg| {
                cfg.supervisor.backup.snapshot_every = Duration::ZERO;
                cfg.supervisor.backup.clone_every = Duration::from_secs(4);
                cfg.supervisor.backup.keep_clones = 1;
            }),
            ..Setup::default()
        },
    )
    .await;
    let originals: Vec<(String, String)> = sim
        .inventory()
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|h| {
            let host = h["name"].as_str().unwrap().to_owned();
            h["vms"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |v| (v["ref"].as_str().unwrap().to_owned(), host.clone()))
        })
        .collect();
    // clone name -> host, for the manager's clones of `vm`.
    let clones_of = |vm: &str| -> Vec<(String, String)> {
        sim.inventory()
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|h| {
                let host = h["name"].as_str().unwrap().to_owned();
                h["vms"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(move |v| {
                        let name = v["name"].as_str()?.to_owned();
                        (name.starts_with("am-backup-") && name.ends_with(&format!("(am backup of {vm})")))
                            .then(|| (name, host.clone()))
                    })
            })
            .collect()
    };
    eventually(
        &m,
        "a second round of clones, the first ones destroyed",
        || async {
            m.intents()
                .iter()
                .filter(|a| matches!(a, Action::DeleteBackup { .. }))
                .count()
                .ge(&originals.len())
                .then_some(())
        },
    )
    .await;
    eventually(&m, "exactly one clone per VM, each off its VM's host", || async {
        originals
            .iter()
            .all(|(vm, home)| {
                let c = clones_of(vm);
                c.len() == 1 && c[0].1 != *home
            })
            .then_some(())
    })
    .await;
    m.stop().await;
}
