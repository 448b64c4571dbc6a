//! Evacuation and maintenance, as an operator asks for them.

use super::*;

fn evacuate(s: &mut Story, host: &str, enter_maintenance: bool) {
    s.feed(Observation::Operator(OperatorRequest::Evacuate {
        host: host.into(),
        reason: "maintenance".into(),
        enter_maintenance,
    }));
}

#[test]
fn waves_are_bounded_and_follow_each_other_then_maintenance() {
    let mut s = Story::new(Config::default(), inventory(3, 5));
    s.at(1.0);
    s.take_actions();
    evacuate(&mut s, "h1", true);
    assert!(matches!(s.host_state("h1"), HostState::Evacuating { .. }));
    let mut moved = 0;
    for _ in 0..10 {
        let wave = s.take_actions();
        if wave.is_empty() {
            break;
        }
        if let [(id, Action::EnterMaintenance { host })] = wave.as_slice() {
            assert_eq!(host.as_str(), "h1");
            s.done(*id, ok());
            break;
        }
        // At most two leave h1 at a time; the next wave waits for the whole wave.
        assert!(wave.len() <= 2, "{wave:?}");
        for (i, (id, a)) in wave.iter().enumerate() {
            let Action::MigrateLive { vm, to } = a else {
                panic!("not a live migration: {a}");
            };
            assert_ne!(to.as_str(), "h1");
            let mut v = s.vm(vm.as_str());
            v.host = Some(to.clone());
            s.upsert_vm(v);
            s.done(*id, ok());
            moved += 1;
            if i + 1 < wave.len() {
                assert!(
                    s.take_actions().is_empty(),
                    "a wave started before the last one ended"
                );
            }
        }
    }
    assert_eq!(moved, 5);
    assert!(matches!(s.host_state("h1"), HostState::Maintenance { .. }));
    // No VM goes to a host in maintenance; taking it back makes it up.
    s.feed(Observation::Operator(OperatorRequest::MaintenanceExit {
        host: "h1".into(),
    }));
    let exit = s.take_actions();
    assert!(
        matches!(exit.as_slice(), [(_, Action::ExitMaintenance { .. })]),
        "{exit:?}"
    );
    s.done(exit[0].0, ok());
    assert_eq!(s.host_state("h1"), HostState::Up);
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
