//! Hosts: two signals, isolation, fencing, revival, removal, spares, storms, plans.

use super::*;

#[test]
fn a_dead_host_needs_two_signals_and_a_silent_heartbeat_then_its_vms_fail_over() {
    let mut s = Story::new(Config::default(), inventory(3, 2));
    s.at(2.0).mgmt("h1", false);
    assert_eq!(s.host_state("h1").name(), "suspect");
    s.at(10.0).heartbeat("h1", 10.0);
    assert_eq!(
        s.host_state("h1").name(),
        "suspect",
        "a lost ping alone never kills a host"
    );
    assert!(s.take_actions().is_empty());
    s.at(11.0).connection("h1", ConnectionState::NotResponding);
    assert_eq!(s.host_state("h1").name(), "unreachable");
    s.guest("vm-11", false).guest("vm-12", false);
    s.at(15.9);
    assert_eq!(
        s.host_state("h1").name(),
        "unreachable",
        "heartbeat written at 10.0 is still fresh"
    );
    s.at(16.0); // storage heartbeat (10.0) is 6s old: the host stopped writing it
    assert_eq!(s.host_state("h1").name(), "dead");
    let actions = s.take_actions();
    let failovers: Vec<&Action> = actions
        .iter()
        .map(|(_, a)| a)
        .filter(|a| a.name() == "failover")
        .collect();
    assert_eq!(failovers.len(), 2);
    for a in &failovers {
        assert_ne!(a.host(), Some(&HostId::from("h1")));
    }
    assert!(
        actions
            .iter()
            .any(|(_, a)| *a == Action::ReconnectHost { host: "h1".into() })
    );
}

#[test]
fn an_isolated_host_keeps_its_vms_no_failover_ever() {
    let mut s = Story::new(Config::default(), inventory(3, 2));
    crash_host(&mut s, "h2", 5.0);
    assert_eq!(s.host_state("h2").name(), "unreachable");
    // Still writing its storage heartbeat: alive, only cut off.
    s.at(7.0).heartbeat("h2", 7.0);
    assert_eq!(s.host_state("h2").name(), "isolated");
    assert!(matches!(s.state("vm-21"), VmState::Frozen { .. }));
    for t in 8..120 {
        s.at(t as f64).heartbeat("h2", t as f64);
    }
    let actions = s.take_actions();
    assert!(
        actions.iter().all(|(_, a)| a.name() == "reconnect_host"),
        "only reconnects: {actions:?}"
    );
    assert!(s.alarmed(AlarmKind::HostIsolated));
    // The network comes back.
    s.mgmt("h2", true)
        .connection("h2", ConnectionState::Connected)
        .guest("vm-21", true)
        .guest("vm-22", true);
    assert_eq!(s.host_state("h2"), HostState::Up);
    assert_eq!(s.state("vm-21"), VmState::Healthy);
    assert!(!s.alarmed(AlarmKind::HostIsolated));
}

#[test]
fn isolation_with_power_off_policy_fences_first_then_fails_over() {
    let cfg = Config {
        isolation_response: IsolationResponse::PowerOffAndRestart,
        ..Config::default()
    };
    let mut s = Story::new(cfg, inventory(3, 1));
    crash_host(&mut s, "h2", 5.0);
    s.at(6.0).heartbeat("h2", 6.0);
    let actions = s.take_actions();
    assert_eq!(
        actions.iter().map(|(_, a)| a.name()).collect::<Vec<_>>(),
        vec!["fence_host"]
    );
    s.at(8.0).done(actions[0].0, ok());
    assert_eq!(s.host_state("h2").name(), "dead");
    let after = s.take_actions();
    assert!(
        after
            .iter()
            .any(|(_, a)| matches!(a, Action::Failover { vm, .. } if vm.as_str() == "vm-21"))
    );
}

#[test]
fn a_failed_fence_never_leads_to_a_restart_elsewhere() {
    let cfg = Config {
        isolation_response: IsolationResponse::PowerOffAndRestart,
        ..Config::default()
    };
    let mut s = Story::new(cfg, inventory(3, 1));
    crash_host(&mut s, "h2", 5.0);
    s.at(6.0).heartbeat("h2", 6.0);
    let a = s.take_actions();
    s.at(7.0).done(a[0].0, unreachable());
    for t in 8..60 {
        s.at(t as f64).heartbeat("h2", t as f64);
    }
    let later = s.take_actions();
    assert!(later.iter().all(|(_, a)| a.name() == "fence_host"), "{later:?}");
    assert!(matches!(s.state("vm-21"), VmState::Frozen { .. }));
}

#[test]
fn a_dead_host_is_reconnected_revived_fenced_then_removed() {
    let cfg = Config {
        revive_attempts: 2,
        ..Config::default()
    };
    let mut s = Story::new(cfg, inventory(2, 1));
    crash_host(&mut s, "h1", 1.0);
    s.at(8.0);
    assert_eq!(s.host_state("h1").name(), "dead");
    let mut names = Vec::new();
    let mut t = 8.0;
    for _ in 0..6 {
        let actions = s.take_actions();
        let (host_actions, vm_actions): (Vec<_>, Vec<_>) =
            actions.into_iter().partition(|(_, a)| a.vm().is_none());
        assert_eq!(host_actions.len(), 1, "at {t}");
        names.push(host_actions[0].1.name());
        t += 1.0;
        // Its VM restarts elsewhere (until then the host is not removed).
        for (id, a) in vm_actions {
            s.at(t).done(id, ok());
            if let (Some(vm), Some(to)) = (a.vm(), a.host()) {
                let mut v = s.vm(vm.as_str());
                v.host = Some(to.clone());
                s.upsert_vm(v);
            }
        }
        let fence_or_remove = matches!(host_actions[0].1.name(), "remove_host" | "fence_host");
        s.at(t).done(
            host_actions[0].0,
            if fence_or_remove { ok() } else { unreachable() },
        );
        t += 10.0;
        s.at(t);
    }
    assert_eq!(
        names,
        vec![
            "reconnect_host",
            "revive_host",
            "reconnect_host",
            "revive_host",
            "fence_host",
            "remove_host"
        ]
    );
    assert_eq!(s.host_state("h1"), HostState::Removed);
    assert!(s.alarmed(AlarmKind::HostRemoved));
}

#[test]
fn a_revived_host_is_up_again() {
    let mut s = Story::new(Config::default(), inventory(2, 1));
    crash_host(&mut s, "h1", 1.0);
    s.at(8.0);
    assert_eq!(s.host_state("h1").name(), "dead");
    s.at(30.0)
        .connection("h1", ConnectionState::Connected)
        .mgmt("h1", true);
    assert_eq!(s.host_state("h1"), HostState::Up);
    assert!(!s.alarmed(AlarmKind::HostUnreachable));
}

#[test]
fn no_live_host_left_adds_a_spare_and_restarts_there() {
    let cfg = Config {
        spares: vec!["spare-1".into()],
        ..Config::default()
    };
    let mut s = Story::new(cfg, inventory(1, 2));
    crash_host(&mut s, "h1", 1.0);
    s.at(8.0);
    let actions = s.take_actions();
    let add = actions
        .iter()
        .find(|(_, a)| a.name() == "add_host")
        .expect("spare added");
    assert!(actions.iter().all(|(_, a)| a.name() != "failover"));
    assert_eq!(s.state("vm-11"), VmState::AwaitingCapacity);
    assert!(s.alarmed(AlarmKind::CapacityInsufficient));
    s.at(20.0).done(add.0, Ok(ActionOutcome::HostAdded("s1".into())));
    s.upsert_host(Host::new("s1", Resources::new(20_000, 64_000)));
    let failovers: Vec<Action> = s
        .take_actions()
        .into_iter()
        .map(|(_, a)| a)
        .filter(|a| a.name() == "failover")
        .collect();
    assert_eq!(failovers.len(), 2);
    assert!(failovers.iter().all(|a| a.host() == Some(&HostId::from("s1"))));
    assert!(!s.alarmed(AlarmKind::CapacityInsufficient));
}

#[test]
fn high_priority_vms_fail_over_first_and_low_ones_wait_when_capacity_is_short() {
    let mut inv = Inventory::default();
    for h in ["h1", "h2"] {
        let mut host = Host::new(h, Resources::new(10_000, 10_000));
        host.mgmt_address = Some(format!("10.0.0.{h}"));
        inv.apply(&InventoryDelta::HostUpsert(host));
    }
    for (id, p) in [("hi", RestartPriority::High), ("lo", RestartPriority::Low)] {
        let mut vm = Vm::new(id, Resources::new(1_000, 6_000), "h1");
        vm.priority = p;
        inv.apply(&InventoryDelta::VmUpsert(vm));
    }
    let mut s = Story::new(Config::default(), inv);
    s.at(1.0)
        .mgmt("h1", false)
        .connection("h1", ConnectionState::NotResponding);
    s.at(5.9);
    assert_eq!(
        s.host_state("h1").name(),
        "unreachable",
        "no storage heartbeat: guests are judged after 5s"
    );
    s.at(6.0);
    let actions = s.take_actions();
    let failovers: Vec<&Action> = actions
        .iter()
        .map(|(_, a)| a)
        .filter(|a| a.name() == "failover")
        .collect();
    assert_eq!(
        failovers,
        vec![&Action::Failover {
            vm: "hi".into(),
            to: "h2".into()
        }]
    );
    assert_eq!(s.state("lo"), VmState::AwaitingCapacity);
}

#[test]
fn a_storm_of_unreachable_hosts_fails_nothing_over() {
    let mut s = Story::new(Config::default(), inventory(4, 1));
    for h in ["h1", "h2", "h3"] {
        crash_host(&mut s, h, 1.0);
    }
    s.at(30.0);
    assert!(s.alarmed(AlarmKind::StormSuspected));
    let actions = s.take_actions();
    assert!(actions.iter().all(|(_, a)| a.name() != "failover"), "{actions:?}");
    assert!(
        ["h1", "h2", "h3"]
            .iter()
            .all(|h| s.host_state(h).name() == "unreachable")
    );
}

#[test]
fn a_storm_that_subsides_to_one_host_judges_that_host_as_a_single_failure() {
    let mut inv = inventory(4, 1);
    for h in inv.hosts.values_mut() {
        h.storage_heartbeat = None;
    }
    let mut s = Story::new(Config::default(), inv);
    for h in ["h1", "h2", "h3"] {
        s.at(1.0).mgmt(h, false).guest(&format!("vm-{}1", &h[1..]), false);
        s.connection(h, ConnectionState::NotResponding);
    }
    s.at(10.0);
    assert!(s.alarmed(AlarmKind::StormSuspected));
    // The switch comes back for h1 and h2; h3 really crashed.
    for h in ["h1", "h2"] {
        s.at(40.0).mgmt(h, true).connection(h, ConnectionState::Connected);
    }
    assert!(!s.alarmed(AlarmKind::StormSuspected));
    assert_eq!(
        s.host_state("h3").name(),
        "unreachable",
        "not at once: judged afresh"
    );
    s.at(46.0);
    assert_eq!(s.host_state("h3").name(), "dead");
}

#[test]
fn an_isolated_host_known_alive_by_its_guests_alone_is_dead_once_they_go_silent() {
    let mut inv = inventory(2, 1);
    for h in inv.hosts.values_mut() {
        h.storage_heartbeat = None;
        h.mgmt_address = None;
    }
    let mut s = Story::new(Config::default(), inv);
    s.guest("vm-11", true);
    s.at(1.0).connection("h1", ConnectionState::NotResponding);
    s.at(20.0);
    assert_eq!(s.host_state("h1").name(), "isolated", "its guest answers");
    s.at(30.0).guest("vm-11", false);
    s.at(31.0);
    assert_eq!(s.host_state("h1").name(), "dead");
    assert!(
        s.take_actions()
            .iter()
            .any(|(_, a)| matches!(a, Action::Failover { .. }))
    );
}

#[test]
fn hosts_already_down_when_first_seen_do_not_make_a_storm() {
    // A restarted daemon finds h1 and h2 already not connected; then h3 dies: one new loss.
    let mut inv = inventory(4, 1);
    for h in ["h1", "h2"] {
        if let Some(host) = inv.hosts.get_mut(&HostId::from(h)) {
            host.connection = ConnectionState::NotResponding;
        }
    }
    let mut s = Story::new(Config::default(), inv);
    s.at(0.5).mgmt("h1", false).mgmt("h2", false);
    crash_host(&mut s, "h3", 1.0);
    s.at(10.0);
    assert!(!s.alarmed(AlarmKind::StormSuspected));
    assert_eq!(s.host_state("h3").name(), "dead");
}

#[test]
fn admission_control_alarms_while_a_host_failure_would_leave_vms_without_a_place() {
    let mut inv = Inventory::default();
    for h in ["h1", "h2"] {
        inv.apply(&InventoryDelta::HostUpsert(Host::new(
            h,
            Resources::new(10_000, 10_000),
        )));
    }
    inv.apply(&InventoryDelta::VmUpsert(Vm::new(
        "a",
        Resources::new(1_000, 6_000),
        "h1",
    )));
    inv.apply(&InventoryDelta::VmUpsert(Vm::new(
        "b",
        Resources::new(1_000, 6_000),
        "h2",
    )));
    let mut s = Story::new(Config::default(), inv);
    s.at(1.0);
    assert!(
        s.alarmed(AlarmKind::FailoverAtRisk),
        "neither host can take the other's VM"
    );
    // b shrinks: now each host's VM fits on the other.
    let mut b = s.vm("b");
    b.demand = Resources::new(1_000, 3_000);
    s.upsert_vm(b);
    let mut a = s.vm("a");
    a.demand = Resources::new(1_000, 3_000);
    s.upsert_vm(a);
    s.at(2.0);
    assert!(!s.alarmed(AlarmKind::FailoverAtRisk));
}

#[test]
fn an_isolated_manager_acts_on_nothing() {
    let mut s = Story::new(Config::default(), inventory(2, 1));
    s.at(1.0).feed(Observation::ManagerIsolation {
        isolated: true,
        evidence: "gateway lost".into(),
    });
    crash_host(&mut s, "h1", 2.0);
    s.guest("vm-21", false);
    s.at(60.0);
    assert!(s.take_actions().is_empty());
    assert!(s.alarmed(AlarmKind::ManagerIsolated));
    s.feed(Observation::ManagerIsolation {
        isolated: false,
        evidence: "gateway back".into(),
    });
    assert!(!s.alarmed(AlarmKind::ManagerIsolated));
}

#[test]
fn restarts_are_rate_limited_per_vm() {
    let cfg = Config {
        restart_limit: 2,
        ..Config::default()
    };
    let mut s = Story::new(cfg, inventory(1, 1));
    let mut resets = 0;
    let mut t = 0.0;
    for _ in 0..4 {
        t += 10.0;
        s.at(t).guest("vm-11", false);
        t += 4.0;
        s.at(t);
        for (id, a) in s.take_actions() {
            if a.name() == "reset" {
                resets += 1;
            }
            s.done(id, ok());
        }
        t += 1.0;
        s.at(t).guest("vm-11", true);
        if s.state("vm-11") != VmState::Healthy {
            break;
        }
    }
    assert_eq!(resets, 2);
    assert!(s.alarmed(AlarmKind::RestartLimit));
}

#[test]
fn a_hung_guest_with_zero_cpu_is_reset() {
    let mut s = Story::new(Config::default(), inventory(1, 1));
    let mut vm = s.vm("vm-11");
    vm.cpu_usage_mhz = Some(0);
    s.at(10.0).upsert_vm(vm);
    s.at(25.0);
    assert!(s.take_actions().is_empty());
    s.at(30.0); // 20s of zero CPU = hung, then vm_confirm (3s)
    s.at(33.0);
    assert_eq!(s.take_actions()[0].1, Action::Reset { vm: "vm-11".into() });
}

#[test]
fn a_red_heartbeat_on_a_live_host_is_reset() {
    let mut s = Story::new(Config::default(), inventory(1, 1));
    let mut vm = s.vm("vm-11");
    vm.heartbeat = GuestHeartbeat::Red;
    s.at(10.0).upsert_vm(vm);
    s.at(13.0);
    assert_eq!(s.take_actions()[0].1, Action::Reset { vm: "vm-11".into() });
}

#[test]
fn a_crashed_host_is_not_taken_for_isolated_while_its_guests_verdicts_lag() {
    let mut s = Story::new(Config::default(), inventory(2, 2));
    s.at(10.0).heartbeat("h1", 9.5);
    // Host verdict first; the guests' detectors have not noticed yet (still alive).
    s.mgmt("h1", false)
        .connection("h1", ConnectionState::NotResponding);
    assert_eq!(s.host_state("h1").name(), "unreachable");
    s.at(12.0);
    assert_eq!(
        s.host_state("h1").name(),
        "unreachable",
        "guests' verdicts are not evidence yet"
    );
    s.guest("vm-11", false).guest("vm-12", false);
    s.at(15.5);
    assert_eq!(s.host_state("h1").name(), "dead");
    assert!(s.sup.incidents().iter().all(|i| i.cause != "isolated"));
}

#[test]
fn guests_still_answering_well_after_the_loss_mean_isolation() {
    let mut s = Story::new(Config::default(), inventory(2, 1));
    s.at(10.0)
        .mgmt("h1", false)
        .connection("h1", ConnectionState::NotResponding);
    // No storage heartbeat signal at all; its guest answers throughout.
    let mut h = s.host("h1");
    h.storage_heartbeat = None;
    s.upsert_host(h);
    s.guest("vm-11", true);
    s.at(15.0);
    assert_eq!(s.host_state("h1").name(), "isolated");
    assert!(s.take_actions().iter().all(|(_, a)| a.name() != "failover"));
}

#[test]
fn a_user_off_vm_on_a_dead_host_is_registered_elsewhere_and_stays_off() {
    let mut s = Story::new(Config::default(), inventory(2, 2));
    let mut vm = s.vm("vm-12");
    vm.power = PowerState::PoweredOff;
    s.at(1.0).upsert_vm(vm);
    s.feed(Observation::Event(ClusterEvent {
        at: Time::from_secs(1),
        kind: EventKind::VmPoweredOff {
            vm: "vm-12".into(),
            user: Some("carol".into()),
        },
    }));
    crash_host(&mut s, "h1", 5.0);
    s.at(12.0);
    let actions: Vec<Action> = s.take_actions().into_iter().map(|(_, a)| a).collect();
    assert!(
        actions.contains(&Action::Register {
            vm: "vm-12".into(),
            host: "h2".into()
        }),
        "{actions:?}"
    );
    assert!(!actions.iter().any(
        |a| matches!(a, Action::Failover { vm, .. } | Action::PowerOn { vm } if vm.as_str() == "vm-12")
    ));
    assert_eq!(
        s.state("vm-12"),
        VmState::StayOff {
            by: Some("carol".into())
        }
    );
}

#[test]
fn anti_affinity_is_relaxed_only_when_no_spare_can_help() {
    let mut inv = Inventory::default();
    for h in ["h1", "h2"] {
        let mut host = Host::new(h, Resources::new(10_000, 10_000));
        host.mgmt_address = Some(format!("10.0.0.{h}"));
        inv.apply(&InventoryDelta::HostUpsert(host));
    }
    for (id, h) in [("web-1", "h1"), ("web-2", "h2")] {
        let mut vm = Vm::new(id, Resources::new(1_000, 1_000), h);
        vm.anti_affinity_group = Some("web".into());
        inv.apply(&InventoryDelta::VmUpsert(vm));
    }
    // With a spare in the pool, the spare is added rather than breaking the rule.
    let cfg = Config {
        spares: vec!["spare-1".into()],
        ..Config::default()
    };
    let mut s = Story::new(cfg, inv.clone());
    s.at(1.0)
        .mgmt("h1", false)
        .connection("h1", ConnectionState::NotResponding);
    s.at(7.0);
    let names: Vec<&str> = s.take_actions().iter().map(|(_, a)| a.name()).collect();
    assert!(
        names.contains(&"add_host") && !names.contains(&"failover"),
        "{names:?}"
    );
    // Without one, web-1 runs beside web-2 rather than not at all.
    let mut s = Story::new(Config::default(), inv);
    s.at(1.0)
        .mgmt("h1", false)
        .connection("h1", ConnectionState::NotResponding);
    s.at(7.0);
    let actions: Vec<Action> = s.take_actions().into_iter().map(|(_, a)| a).collect();
    assert!(
        actions.contains(&Action::Failover {
            vm: "web-1".into(),
            to: "h2".into()
        }),
        "{actions:?}"
    );
}

#[test]
fn the_vms_of_two_dead_hosts_are_placed_together_not_by_each_hosts_plan() {
    let mut inv = Inventory::default();
    // h3 and h4 have no room: the VMs wait for a spare.
    for (h, room) in [("h1", 10_000), ("h2", 10_000), ("h3", 100), ("h4", 100)] {
        let mut host = Host::new(h, Resources::new(room, room));
        host.mgmt_address = Some(format!("10.0.0.{h}"));
        host.storage_heartbeat = Some(Time::ZERO);
        inv.apply(&InventoryDelta::HostUpsert(host));
    }
    inv.apply(&InventoryDelta::DatastoreUpsert(am_core::Datastore {
        id: "ds".into(),
        name: "ds".into(),
        capacity_mib: 1_000_000,
        free_mib: 1_000_000,
        hosts: ["h1", "h2", "h3", "h4"].into_iter().map(HostId::from).collect(),
    }));
    for (id, h) in [("db-1", "h1"), ("db-2", "h2")] {
        let mut vm = Vm::new(id, Resources::new(1_000, 1_000), h);
        vm.anti_affinity_group = Some("db".into());
        vm.datastore = Some("ds".into());
        inv.apply(&InventoryDelta::VmUpsert(vm));
    }
    let cfg = Config {
        spares: vec!["spare-1".into(), "spare-2".into()],
        ..Config::default()
    };
    let mut s = Story::new(cfg, inv);
    s.at(1.0);
    crash_host(&mut s, "h1", 2.0);
    crash_host(&mut s, "h2", 2.0);
    s.at(9.0);
    let add = s
        .take_actions()
        .into_iter()
        .find(|(_, a)| a.name() == "add_host")
        .unwrap();
    s.at(20.0)
        .done(add.0, Ok(ActionOutcome::HostAdded("spare-1".into())));
    let mut spare = Host::new("spare-1", Resources::new(10_000, 10_000));
    spare.storage_heartbeat = Some(Time::from_secs(20));
    s.upsert_host(spare);
    // The spare mounts the VMs' datastore; meanwhile the plans catch up with it, and each
    // host's own plan sends its VM there.
    let mount = s
        .take_actions()
        .into_iter()
        .find(|(_, a)| a.name() == "mount_datastore")
        .unwrap();
    s.at(21.0).at(22.0).done(mount.0, ok());
    s.at(30.0);
    let actions: Vec<Action> = s.take_actions().into_iter().map(|(_, a)| a).collect();
    let to_spare = actions
        .iter()
        .filter(|a| matches!(a, Action::Failover { to, .. } if to.as_str() == "spare-1"))
        .count();
    assert_eq!(to_spare, 1, "not both beside each other: {actions:?}");
    assert_eq!(s.state("db-2"), VmState::AwaitingCapacity, "it waits for spare-2");
}

#[test]
fn a_dead_hosts_vms_follow_its_precomputed_plan() {
    let mut s = Story::new(Config::default(), inventory(3, 2));
    crash_host(&mut s, "h1", 5.0);
    s.at(12.0);
    let reasons = failover_reasons(&s);
    assert_eq!(reasons.len(), 2);
    assert!(
        reasons.iter().all(|r| r.ends_with("by precomputed plan")),
        "{reasons:?}"
    );
    // What was executed is exactly the stored plan.
    let plans = planner::FailoverPlans::new(
        &inventory(3, 2),
        &planner::Constraints::default(),
        &planner::Policy::default(),
    )
    .unwrap();
    let stored = plans.plan_for(&"h1".into()).unwrap().placements.clone();
    let done: BTreeMap<VmId, HostId> = s
        .take_actions()
        .into_iter()
        .filter_map(|(_, a)| match a {
            Action::Failover { vm, to } => Some((vm, to)),
            _ => None,
        })
        .collect();
    assert_eq!(done, stored);
}

#[test]
fn a_plan_that_sends_vms_to_a_host_not_up_is_replaced_by_a_fresh_one() {
    let mut s = Story::new(Config::default(), inventory(3, 2));
    // The stored plan for h1 sends its VMs to h2; h2 is suspect (ping lost, still connected).
    s.at(1.0).mgmt("h2", false);
    crash_host(&mut s, "h1", 5.0);
    s.at(12.0);
    let reasons = failover_reasons(&s);
    assert_eq!(reasons.len(), 2);
    assert!(
        reasons.iter().all(|r| r.ends_with("by fresh plan")),
        "{reasons:?}"
    );
    let actions = s.take_actions();
    assert!(
        actions
            .iter()
            .filter(|(_, a)| a.name() == "failover")
            .all(|(_, a)| a.host() == Some(&HostId::from("h3")))
    );
}

#[test]
fn a_guest_failing_because_its_host_died_is_not_reset() {
    let mut s = Story::new(Config::default(), inventory(2, 1));
    s.at(1.0).guest("vm-11", false).mgmt("h1", false);
    s.at(5.0);
    assert!(s.take_actions().iter().all(|(_, a)| a.name() != "reset"));
}

#[test]
fn unprotected_vms_are_left_alone() {
    let mut inv = inventory(2, 1);
    if let Some(vm) = inv.vms.get_mut(&VmId::from("vm-11")) {
        vm.priority = RestartPriority::Disabled;
    }
    let mut s = Story::new(Config::default(), inv);
    crash_host(&mut s, "h1", 1.0);
    s.at(10.0);
    // Never restarted; only registered, still off, away from the dead host (which may be
    // removed and take it out of the inventory).
    let actions = s.take_actions();
    let vm_actions: Vec<&Action> = actions.iter().filter_map(|(_, a)| a.vm().map(|_| a)).collect();
    assert!(
        vm_actions.iter().all(|a| matches!(a, Action::Register { .. })),
        "{vm_actions:?}"
    );
    assert_eq!(s.state("vm-11"), VmState::Unprotected);
}

#[test]
fn a_disconnected_but_pingable_host_is_reconnected_not_failed_over() {
    let mut s = Story::new(Config::default(), inventory(2, 1));
    s.at(1.0)
        .mgmt("h1", true)
        .connection("h1", ConnectionState::NotResponding);
    s.at(7.0);
    let actions = s.take_actions();
    assert_eq!(
        actions.iter().map(|(_, a)| a.name()).collect::<Vec<_>>(),
        vec!["reconnect_host"]
    );
    s.done(actions[0].0, ok())
        .connection("h1", ConnectionState::Connected);
    assert_eq!(s.host_state("h1"), HostState::Up);
}

#[test]
fn every_transition_is_logged_with_a_reason() {
    let mut s = Story::new(Config::default(), inventory(1, 1));
    let out = s.sup.step(
        Time::from_secs(1),
        Observation::Liveness {
            subject: Subject::Vm("vm-11".into()),
            alive: false,
            evidence: "3 of 3 lost".into(),
        },
    );
    assert!(out.log.is_empty());
    let out = s.sup.step(Time::from_secs(4), Observation::Tick);
    let transition = out
        .log
        .iter()
        .find(|e| matches!(e.kind, LogKind::Transition { .. }))
        .unwrap();
    assert!(
        transition
            .to_string()
            .contains("healthy -> recovering(restart) (guest not answering: 3 of 3 lost)")
    );
    assert!(out.log.iter().any(|e| matches!(e.kind, LogKind::Issued { .. })));
    let _ = Duration::ZERO;
}
