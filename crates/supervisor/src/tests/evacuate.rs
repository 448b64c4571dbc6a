//! Evacuation and maintenance, as an operator asks for them.

use super::*;

fn evacuate(s: &mut Story, host: &str, enter_maintenance: bool) {
    s.feed(Observation::Operator(OperatorRequest::Evacuate {
        host: host.into(),
        reason: "maintenance".into(),
        enter_maintenance,
    }));
}

/// Moves a VM where its live migration took it and reports the migration done.
fn land(s: &mut Story, id: ActionId, vm: &VmId, to: &HostId) {
    let mut v = s.vm(vm.as_str());
    v.host = Some(to.clone());
    s.upsert_vm(v);
    s.done(id, ok());
}

#[test]
fn moves_run_in_a_window_bounded_per_source_then_maintenance_then_they_come_back() {
    let cfg = Config {
        evacuation_per_host: 2,
        evacuation_per_target: 2,
        ..Config::default()
    };
    let mut s = Story::new(cfg, inventory(3, 5));
    s.at(1.0);
    s.take_actions();
    evacuate(&mut s, "h1", true);
    assert!(matches!(s.host_state("h1"), HostState::Evacuating { .. }));
    // Two leave h1 at a time; each one that lands lets the next one start (a sliding window,
    // not a wave that waits for its slowest move).
    let mut running = s.take_actions();
    assert_eq!(running.len(), 2, "{running:?}");
    let mut moved = Vec::new();
    while let Some((id, a)) = running.pop() {
        if let Action::EnterMaintenance { host } = &a {
            assert_eq!(host.as_str(), "h1");
            assert!(running.is_empty());
            s.done(id, ok());
            break;
        }
        let Action::MigrateLive { vm, to } = a else {
            panic!("not a live migration: {a}");
        };
        assert_ne!(to.as_str(), "h1");
        land(&mut s, id, &vm, &to);
        moved.push((vm, to));
        let next = s.take_actions();
        assert!(
            next.len() <= 1,
            "more than one started for one that landed: {next:?}"
        );
        running.extend(next);
        assert!(running.len() <= 2, "{running:?}");
    }
    assert_eq!(moved.len(), 5);
    assert!(matches!(s.host_state("h1"), HostState::Maintenance { .. }));
    assert!(s.sup.status().evacuations.is_empty());
    // Taking it back with its VMs: out of maintenance, then they return, two at a time.
    s.feed(Observation::Operator(OperatorRequest::MaintenanceExit {
        host: "h1".into(),
        return_vms: true,
    }));
    let exit = s.take_actions();
    assert!(
        matches!(exit.as_slice(), [(_, Action::ExitMaintenance { .. })]),
        "{exit:?}"
    );
    s.done(exit[0].0, ok());
    assert_eq!(s.host_state("h1"), HostState::Up);
    let mut back = 0;
    let mut running = s.take_actions();
    assert_eq!(running.len(), 2, "{running:?}");
    while let Some((id, a)) = running.pop() {
        let Action::MigrateLive { vm, to } = a else {
            panic!("not a live migration: {a}");
        };
        assert_eq!(to.as_str(), "h1");
        land(&mut s, id, &vm, &to);
        back += 1;
        running.extend(s.take_actions());
    }
    assert_eq!(back, 5);
    assert!(s.sup.status().evacuations.is_empty());
}

#[test]
fn the_window_is_bounded_per_target_and_in_all() {
    let cfg = Config {
        evacuation_per_host: 8,
        evacuation_per_target: 1,
        evacuation_in_flight: 8,
        ..Config::default()
    };
    let mut s = Story::new(cfg, inventory(3, 4));
    s.at(1.0);
    s.take_actions();
    evacuate(&mut s, "h1", false);
    // One move entering each target at a time.
    let first = s.take_actions();
    let targets: BTreeSet<HostId> = first.iter().filter_map(|(_, a)| a.host().cloned()).collect();
    assert!(!first.is_empty() && targets.len() == first.len(), "{first:?}");
    let progress = &s.sup.status().evacuations[0];
    assert_eq!(
        (progress.planned, progress.in_flight, progress.moved),
        (4, first.len(), 0)
    );

    let cfg = Config {
        evacuation_per_host: 8,
        evacuation_per_target: 8,
        evacuation_in_flight: 3,
        ..Config::default()
    };
    let mut s = Story::new(cfg, inventory(3, 4));
    s.at(1.0);
    s.take_actions();
    evacuate(&mut s, "h1", false);
    assert_eq!(s.take_actions().len(), 3, "bounded in all");
}

#[test]
fn a_host_dying_under_its_evacuation_has_its_migrations_given_up_and_its_vms_failed_over() {
    let cfg = Config {
        evacuation_per_host: 1,
        ..Config::default()
    };
    let mut s = Story::new(cfg, inventory(3, 2));
    s.at(1.0);
    s.take_actions();
    evacuate(&mut s, "h1", false);
    let first = s.take_actions();
    assert!(
        matches!(first.as_slice(), [(_, Action::MigrateLive { .. })]),
        "{first:?}"
    );
    // h1 dies: both signals, no heartbeat, guests silent.
    crash_host(&mut s, "h1", 2.0);
    let mut cancelled = Vec::new();
    let mut restarted = BTreeSet::new();
    for t in 3..40 {
        s.at(f64::from(t));
        for c in std::mem::take(&mut s.commands) {
            match c {
                Command::Cancel { id, .. } => cancelled.push(id),
                Command::Execute { id, action, .. } => {
                    if let Action::Failover { vm, .. } | Action::PowerOn { vm } = &action {
                        restarted.insert(vm.clone());
                    }
                    s.commands.push(Command::Execute {
                        id,
                        action,
                        priority: 0,
                        reason: String::new(),
                    });
                }
                Command::Alarm(_) => {}
            }
        }
        for (id, a) in s.take_actions() {
            if let Action::Failover { vm, to } = &a {
                land(&mut s, id, vm, to);
            }
        }
    }
    assert!(
        cancelled.contains(&first[0].0),
        "the migration was not given up: {cancelled:?}"
    );
    assert!(restarted.contains(&VmId::from("vm-11")), "{restarted:?}");
    assert!(restarted.contains(&VmId::from("vm-12")), "{restarted:?}");
}

#[test]
fn a_failed_move_is_retried_once_elsewhere_then_the_evacuation_says_why() {
    let mut s = Story::new(Config::default(), inventory(3, 1));
    s.at(1.0);
    s.take_actions();
    evacuate(&mut s, "h1", true);
    let first = s.take_actions();
    let [(id, Action::MigrateLive { to, .. })] = first.as_slice() else {
        panic!("{first:?}");
    };
    let refused = || Err(HvError::invalid_state("vm-11", "refused"));
    s.done(*id, refused());
    let again = s.take_actions();
    let [(id2, Action::MigrateLive { to: to2, .. })] = again.as_slice() else {
        panic!("{again:?}");
    };
    assert_ne!(to, to2, "retried on the same host");
    s.done(*id2, refused());
    assert!(s.take_actions().is_empty(), "no maintenance with a VM left");
    assert!(s.alarmed(AlarmKind::EvacuationFailed));
    assert_eq!(s.host_state("h1"), HostState::Up);
}

#[test]
fn a_host_shown_in_maintenance_is_held_so_and_is_no_target() {
    let mut inv = inventory(3, 1);
    if let Some(h) = inv.hosts.get_mut(&HostId::from("h2")) {
        h.maintenance = true;
    }
    let mut s = Story::new(Config::default(), inv);
    s.at(1.0);
    assert!(matches!(s.host_state("h2"), HostState::Maintenance { .. }));
    assert!(s.sup.unusable_hosts().contains(&HostId::from("h2")));
    // A request to evacuate a host not up is refused and moves nothing.
    evacuate(&mut s, "h2", false);
    assert!(s.take_actions().is_empty());
}
