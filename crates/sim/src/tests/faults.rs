//! Each fault's visible effects: the inventory view, events, probes.

use super::*;
use crate::{Fault, FaultDepth, FaultScript, GuestState, HostCondition, InjectError, SimProber};
use am_core::{
    Action, ConnectionState, EventKind, GuestHeartbeat, HvError, Hypervisor, InventoryDelta, PowerState,
    ProbeResult, ProbeTarget, Prober,
};

const TIMEOUT: Duration = Duration::from_secs(1);

async fn host_answers(p: &SimProber, h: &str) -> bool {
    let t = ProbeTarget::Host {
        host: host(h),
        address: format!("mgmt-{h}"),
    };
    p.probe(&t, TIMEOUT).await.is_reply()
}

async fn guest_answers(p: &SimProber, v: &str) -> bool {
    let t = ProbeTarget::Guest {
        vm: vm(v),
        address: format!("guest-{v}"),
        host: None,
    };
    p.probe(&t, TIMEOUT).await.is_reply()
}

async fn isolation_answers(p: &SimProber) -> bool {
    let t = ProbeTarget::Isolation {
        address: "10.0.0.254".into(),
    };
    p.probe(&t, TIMEOUT).await.is_reply()
}

#[tokio::test(start_paused = true)]
async fn probes_take_a_millisecond_to_answer_and_the_timeout_not_to() {
    let sim = new_sim();
    let p = sim.prober();
    let t = ProbeTarget::Host {
        host: host("h1"),
        address: "10.0.0.1".into(),
    };
    let start = tokio::time::Instant::now();
    assert_eq!(
        p.probe(&t, TIMEOUT).await,
        ProbeResult::Reply {
            rtt: Duration::from_millis(1)
        }
    );
    assert_eq!(start.elapsed(), Duration::from_millis(1));
    sim.inject(Fault::HostCrash {
        host: host("h1"),
        permanent: false,
    })
    .unwrap();
    let start = tokio::time::Instant::now();
    assert_eq!(p.probe(&t, TIMEOUT).await, ProbeResult::NoReply);
    assert_eq!(start.elapsed(), TIMEOUT);
}

#[tokio::test(start_paused = true)]
async fn a_host_crash_freezes_the_view_and_silences_the_host() {
    let sim = new_sim();
    let p = sim.prober();
    sleep_s(3).await;
    let v = sim.version();
    sim.inject(Fault::HostCrash {
        host: host("h1"),
        permanent: false,
    })
    .unwrap();
    let c = drain(&sim, &v).await;
    assert!(event_kinds(&c).contains(&EventKind::HostConnectionLost { host: host("h1") }));
    let inv = sim.view();
    assert_eq!(inv.hosts[&host("h1")].connection, ConnectionState::NotResponding);
    assert_eq!(
        inv.vms[&vm("web")].power,
        PowerState::PoweredOn,
        "last known state"
    );
    assert_eq!(
        inv.vms[&vm("web")].heartbeat,
        GuestHeartbeat::Green,
        "last known state"
    );
    assert!(!sim.vm_truth(&vm("web")).unwrap().is_running());
    assert_eq!(sim.protected_not_running(), vec![vm("db"), vm("web")]);
    assert!(!host_answers(&p, "h1").await);
    assert!(!guest_answers(&p, "web").await);
    assert!(host_answers(&p, "h2").await);
    assert!(guest_answers(&p, "app").await);
    // The storage heartbeat stops at the last write (t=0); the others go on every 5s.
    sleep_s(20).await;
    let inv = sim.view();
    assert_eq!(inv.hosts[&host("h1")].storage_heartbeat, Some(secs(0)));
    assert_eq!(inv.hosts[&host("h2")].storage_heartbeat, Some(secs(25)));
}

#[tokio::test(start_paused = true)]
async fn an_isolated_host_runs_on_unseen_but_keeps_its_storage_heartbeat() {
    let sim = new_sim();
    let p = sim.prober();
    let v = sim.version();
    sim.inject(Fault::HostIsolate { host: host("h1") }).unwrap();
    let c = drain(&sim, &v).await;
    assert!(event_kinds(&c).contains(&EventKind::HostConnectionLost { host: host("h1") }));
    assert_eq!(
        sim.view().hosts[&host("h1")].connection,
        ConnectionState::NotResponding
    );
    assert!(sim.vm_healthy(&vm("web")), "still runs");
    assert!(!host_answers(&p, "h1").await);
    assert!(!guest_answers(&p, "web").await);
    assert!(isolation_answers(&p).await, "the manager itself is fine");
    sleep_s(12).await;
    let hb = sim.view().hosts[&host("h1")].storage_heartbeat.unwrap();
    assert_eq!(hb, secs(10), "still writing its datastore heartbeat");
    assert!(matches!(
        sim.execute(&Action::Reset { vm: vm("web") }).await,
        Err(HvError::Unreachable { .. })
    ));
    // Healing brings it back as it is.
    sim.inject(Fault::HostHeal { host: host("h1") }).unwrap();
    assert_eq!(
        sim.view().hosts[&host("h1")].connection,
        ConnectionState::Connected
    );
    assert!(host_answers(&p, "h1").await);
    assert!(guest_answers(&p, "web").await);
}

#[tokio::test(start_paused = true)]
async fn a_disconnected_host_is_not_responding_but_pingable() {
    let sim = new_sim();
    let p = sim.prober();
    sim.inject(Fault::HostDisconnect { host: host("h2") }).unwrap();
    assert_eq!(
        sim.view().hosts[&host("h2")].connection,
        ConnectionState::NotResponding
    );
    assert!(host_answers(&p, "h2").await);
    assert!(guest_answers(&p, "app").await);
    assert!(matches!(
        sim.execute(&Action::PowerOff { vm: vm("app") }).await,
        Err(HvError::Unreachable { .. })
    ));
    sim.inject(Fault::HostHeal { host: host("h2") }).unwrap();
    assert_eq!(
        sim.view().hosts[&host("h2")].connection,
        ConnectionState::Connected
    );
}

#[tokio::test(start_paused = true)]
async fn a_guest_crash_turns_the_heartbeat_red_after_the_delay() {
    let sim = new_sim();
    let p = sim.prober();
    sleep_s(1).await;
    sim.inject(Fault::VmGuestCrash {
        vm: vm("web"),
        depth: FaultDepth::Transient,
    })
    .unwrap();
    assert!(
        !guest_answers(&p, "web").await,
        "the guest stops answering at once"
    );
    let shown = &sim.view().vms[&vm("web")];
    assert_eq!(shown.power, PowerState::PoweredOn);
    assert_eq!(
        shown.heartbeat,
        GuestHeartbeat::Green,
        "tools have not noticed yet"
    );
    let v = sim.version();
    // Red at 1s + 5s, announced by a delta at that time.
    let c = sim.changes(&v, Duration::from_secs(60)).await.unwrap();
    assert_eq!(sim.now(), secs(5), "first the storage heartbeat tick");
    assert!(!c.deltas.iter().any(|d| matches!(d, InventoryDelta::VmUpsert(_))));
    let c = sim.changes(&c.version, Duration::from_secs(60)).await.unwrap();
    assert_eq!(sim.now(), secs(6));
    let upsert = c
        .deltas
        .iter()
        .find_map(|d| match d {
            InventoryDelta::VmUpsert(v) if v.id == vm("web") => Some(v.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(upsert.heartbeat, GuestHeartbeat::Red);
    assert!(upsert.cpu_usage_mhz.unwrap() > 0, "a crashed guest is not hung");
}

#[tokio::test(start_paused = true)]
async fn a_hang_shows_zero_cpu_and_a_red_heartbeat() {
    let sim = new_sim();
    sim.inject(Fault::VmHang {
        vm: vm("app"),
        depth: FaultDepth::Transient,
    })
    .unwrap();
    assert_eq!(sim.vm_truth(&vm("app")).unwrap().guest, GuestState::Hung);
    assert_eq!(sim.view().vms[&vm("app")].cpu_usage_mhz, Some(0));
    sleep_s(5).await;
    assert_eq!(sim.view().vms[&vm("app")].heartbeat, GuestHeartbeat::Red);
    assert_eq!(sim.view().vms[&vm("app")].power, PowerState::PoweredOn);
}

#[tokio::test(start_paused = true)]
async fn power_off_faults_name_the_user_or_nobody() {
    let sim = new_sim();
    let v = sim.version();
    sim.inject(Fault::VmPowerOff {
        vm: vm("web"),
        user: Some("alice".into()),
    })
    .unwrap();
    sim.inject(Fault::VmPowerOff {
        vm: vm("app"),
        user: None,
    })
    .unwrap();
    let events = event_kinds(&drain(&sim, &v).await);
    assert_eq!(
        events,
        vec![
            EventKind::VmPoweredOff {
                vm: vm("web"),
                user: Some("alice".into())
            },
            EventKind::VmPoweredOff {
                vm: vm("app"),
                user: None
            },
        ]
    );
    assert_eq!(sim.view().vms[&vm("web")].power, PowerState::PoweredOff);
    // Left off by a user: not counted as a protected VM that should run.
    assert_eq!(sim.protected_not_running(), vec![vm("app")]);
    // A crash of a VM that is off changes nothing, and says so.
    sim.inject(Fault::VmGuestCrash {
        vm: vm("app"),
        depth: FaultDepth::Transient,
    })
    .unwrap();
    let last = sim.fault_history().pop().unwrap();
    assert!(!last.applied);
    assert!(last.note.contains("not running"));
}

#[tokio::test(start_paused = true)]
async fn unknown_ids_are_injection_errors() {
    let sim = new_sim();
    assert!(matches!(
        sim.inject(Fault::HostCrash {
            host: host("h9"),
            permanent: false
        }),
        Err(InjectError::UnknownHost { .. })
    ));
    assert!(matches!(
        sim.inject(Fault::VmHang {
            vm: vm("nope"),
            depth: FaultDepth::Transient
        }),
        Err(InjectError::UnknownVm { .. })
    ));
    assert!(matches!(
        sim.inject(Fault::ProbeLoss { probability: 1.5 }),
        Err(InjectError::BadProbability { .. })
    ));
    let script = FaultScript::parse("at 1s host s1 crash\nat 2s vm ghost crash").unwrap();
    assert!(matches!(
        sim.check_script(&script),
        Err(InjectError::UnknownVm { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn probe_loss_drops_about_that_share_of_probes() {
    let sim = new_sim();
    let p = sim.prober();
    sim.inject(Fault::ProbeLoss { probability: 0.3 }).unwrap();
    let mut lost = 0;
    for _ in 0..400 {
        if !host_answers(&p, "h2").await {
            lost += 1;
        }
    }
    assert!((80..160).contains(&lost), "{lost} of 400 lost");
    sim.inject(Fault::ProbeLoss { probability: 0.0 }).unwrap();
    assert!(host_answers(&p, "h2").await);
}

#[tokio::test(start_paused = true)]
async fn manager_isolation_cuts_everything_off() {
    let sim = new_sim();
    let p = sim.prober();
    sim.inject(Fault::ManagerIsolate).unwrap();
    assert!(!isolation_answers(&p).await);
    assert!(!host_answers(&p, "h1").await);
    assert!(matches!(sim.snapshot().await, Err(HvError::Unreachable { .. })));
    let v = sim.version();
    assert!(matches!(
        sim.changes(&v, Duration::from_secs(30)).await,
        Err(HvError::Unreachable { .. })
    ));
    let t = sim.now();
    assert!(matches!(
        sim.execute(&Action::Reset { vm: vm("web") }).await,
        Err(HvError::Unreachable { .. })
    ));
    assert_eq!(
        sim.now(),
        t + Duration::from_secs(1),
        "fails after unreachable_delay"
    );
    sim.inject(Fault::ManagerHeal).unwrap();
    assert!(isolation_answers(&p).await);
    // What happened meanwhile is in the feed.
    let c = sim.changes(&v, Duration::ZERO).await.unwrap();
    assert!(!c.deltas.is_empty());
}

#[tokio::test(start_paused = true)]
async fn api_faults_fail_a_count_of_calls_then_stop() {
    let sim = new_sim();
    sim.run_script(FaultScript::parse("at 0s api power_off fail 2 busy").unwrap())
        .await;
    let r1 = sim.execute(&Action::PowerOff { vm: vm("web") }).await;
    let r2 = sim.execute(&Action::PowerOff { vm: vm("web") }).await;
    assert!(matches!(r1, Err(HvError::Busy { .. })));
    assert!(matches!(r2, Err(HvError::Busy { .. })));
    assert!(sim.vm_healthy(&vm("web")), "failed calls change nothing");
    sim.execute(&Action::Reset { vm: vm("web") }).await.unwrap();
    sim.execute(&Action::PowerOff { vm: vm("web") }).await.unwrap();
    // `*` matches every hypervisor call; `api` errors are not retryable.
    sim.inject(
        FaultScript::parse("at 0s api * fail 1 api").unwrap().faults[0]
            .fault
            .clone(),
    )
    .unwrap();
    let err = sim.execute(&Action::PowerOn { vm: vm("web") }).await.unwrap_err();
    assert!(matches!(err, HvError::Api { retryable: false, .. }), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_lost_reply_still_does_the_operation() {
    let sim = new_sim();
    sim.inject(
        FaultScript::parse("at 0s api power_off fail 1 lost-reply")
            .unwrap()
            .faults[0]
            .fault
            .clone(),
    )
    .unwrap();
    assert_eq!(
        sim.execute(&Action::PowerOff { vm: vm("web") }).await,
        Err(HvError::Timeout {
            op: "power_off".into()
        })
    );
    assert!(
        !sim.vm_truth(&vm("web")).unwrap().is_running(),
        "it happened anyway"
    );
    assert!(matches!(
        sim.execute(&Action::PowerOff { vm: vm("web") }).await,
        Err(HvError::InvalidState { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn injected_latency_adds_up_and_can_be_removed() {
    let sim = new_sim();
    let s = FaultScript::parse("at 0s api * latency 3s\nat 0s api reset latency 1s").unwrap();
    for f in s.faults {
        sim.inject(f.fault).unwrap();
    }
    sim.execute(&Action::Reset { vm: vm("web") }).await.unwrap();
    assert_eq!(sim.now(), secs(5), "1s + 3s + 1s");
    sim.inject(
        FaultScript::parse("at 0s api * latency 0s").unwrap().faults[0]
            .fault
            .clone(),
    )
    .unwrap();
    sim.execute(&Action::Reset { vm: vm("web") }).await.unwrap();
    assert_eq!(sim.now(), secs(7), "1s + 1s");
}

#[tokio::test(start_paused = true)]
async fn inventory_calls_can_fail_by_name() {
    let sim = new_sim();
    sim.inject(
        FaultScript::parse("at 0s api changes fail 1 timeout")
            .unwrap()
            .faults[0]
            .fault
            .clone(),
    )
    .unwrap();
    // `*` does not touch the inventory feed, a named fault does.
    sim.inject(
        FaultScript::parse("at 0s api * fail 5 busy").unwrap().faults[0]
            .fault
            .clone(),
    )
    .unwrap();
    assert!(sim.snapshot().await.is_ok());
    let v = sim.version();
    assert!(matches!(
        sim.changes(&v, Duration::from_secs(1)).await,
        Err(HvError::Timeout { .. })
    ));
    assert!(sim.changes(&v, Duration::from_secs(1)).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn user_power_on_fault_runs_the_vm() {
    let sim = new_sim();
    sim.inject(Fault::VmPowerOn {
        vm: vm("batch"),
        user: Some("bob".into()),
    })
    .unwrap();
    assert!(sim.vm_healthy(&vm("batch")));
    assert_eq!(sim.host_truth(&host("h3")).unwrap().condition, HostCondition::Up);
}
