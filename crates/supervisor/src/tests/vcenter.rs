//! vCenter itself unreachable: a call that never got to its object says nothing about it. It is
//! not counted against the VM or host, rules no failover target out, and is tried again once
//! vCenter answers; nothing is issued while vCenter is known down.

use super::*;

fn vcenter_down() -> Result<ActionOutcome, HvError> {
    Err(HvError::vcenter_unreachable("connection refused"))
}

fn source(s: &mut Story, connected: bool) {
    s.feed(Observation::SourceHealth {
        connected,
        detail: "test".into(),
    });
}

#[test]
fn a_ladder_step_that_cannot_reach_vcenter_is_issued_again_not_climbed_past() {
    let mut s = Story::new(Config::default(), inventory(2, 1));
    s.at(5.0).guest("vm-11", false);
    s.at(6.0);
    let actions = s.take_actions();
    assert_eq!(actions[0].1, Action::Reset { vm: "vm-11".into() });
    s.at(7.0).done(actions[0].0, vcenter_down());
    assert_eq!(s.state("vm-11"), VmState::Deferred { step: Step::Restart });
    source(&mut s, false);
    s.at(60.0);
    assert!(
        s.take_actions().is_empty(),
        "nothing is issued while vCenter is down"
    );
    source(&mut s, true);
    let actions = s.take_actions();
    assert_eq!(
        actions.iter().map(|(_, a)| a.clone()).collect::<Vec<_>>(),
        vec![Action::Reset { vm: "vm-11".into() }],
        "the same step again, not a revert"
    );
    assert!(!s.alarmed(AlarmKind::RestartLimit));
    let rec = s.sup.vms.get(&VmId::from("vm-11")).unwrap();
    assert_eq!(
        rec.restarts.len(),
        1,
        "the restart that never reached it is not counted"
    );
}

#[test]
fn a_guest_failing_while_vcenter_is_down_waits_for_it() {
    let mut s = Story::new(Config::default(), inventory(2, 1));
    source(&mut s, false);
    s.at(5.0).guest("vm-11", false);
    s.at(10.0);
    assert!(s.take_actions().is_empty());
    assert_eq!(s.state("vm-11"), VmState::Deferred { step: Step::Restart });
    // It comes back on its own meanwhile: nothing is done.
    s.at(20.0).guest("vm-11", true);
    assert_eq!(s.state("vm-11"), VmState::Healthy);
    source(&mut s, true);
    assert!(s.take_actions().is_empty());
}

#[test]
fn a_failover_that_cannot_reach_vcenter_keeps_its_target() {
    let mut s = Story::new(Config::default(), inventory(2, 1));
    crash_host(&mut s, "h1", 1.0);
    s.at(8.0);
    let failover: Vec<_> = s
        .take_actions()
        .into_iter()
        .filter(|(_, a)| matches!(a, Action::Failover { .. }))
        .collect();
    assert_eq!(failover.len(), 1);
    s.at(9.0).done(failover[0].0, vcenter_down());
    let rec = s.sup.vms.get(&VmId::from("vm-11")).unwrap();
    assert!(rec.failover_excluded.is_empty(), "h2 is not ruled out");
    assert_eq!(rec.failover_tries, 0);
    s.at(30.0);
    let again: Vec<_> = s
        .take_actions()
        .into_iter()
        .filter(|(_, a)| matches!(a, Action::Failover { .. }))
        .map(|(_, a)| a)
        .collect();
    assert_eq!(
        again,
        vec![Action::Failover {
            vm: "vm-11".into(),
            to: "h2".into()
        }]
    );
    assert!(!s.alarmed(AlarmKind::CapacityInsufficient));
}

#[test]
fn revival_attempts_that_never_reached_the_host_are_not_counted_and_none_go_while_isolated() {
    let cfg = Config {
        revive_attempts: 1,
        ..Config::default()
    };
    let mut s = Story::new(cfg, inventory(2, 1));
    crash_host(&mut s, "h1", 1.0);
    s.at(8.0);
    let reconnect = s
        .take_actions()
        .into_iter()
        .find(|(_, a)| matches!(a, Action::ReconnectHost { .. }))
        .unwrap();
    s.feed(Observation::ManagerIsolation {
        isolated: true,
        evidence: "test".into(),
    });
    s.at(9.0).done(reconnect.0, vcenter_down());
    for t in [20.0, 40.0, 80.0, 160.0] {
        s.at(t);
        let host_actions: Vec<_> = s
            .take_actions()
            .into_iter()
            .filter(|(_, a)| a.vm().is_none())
            .collect();
        assert!(
            host_actions.is_empty(),
            "no host action while isolated (t={t}): {host_actions:?}"
        );
    }
    s.feed(Observation::ManagerIsolation {
        isolated: false,
        evidence: "test".into(),
    });
    s.at(170.0);
    let names: Vec<&str> = s
        .take_actions()
        .iter()
        .filter(|(_, a)| a.vm().is_none())
        .map(|(_, a)| a.name())
        .collect();
    assert_eq!(names, vec!["reconnect_host"], "attempt 1 again, from the start");
    assert_ne!(s.host_state("h1"), HostState::Removed);
}

#[test]
fn a_fence_that_cannot_reach_vcenter_raises_no_fence_alarm_and_is_tried_again() {
    let cfg = Config {
        revive_attempts: 0,
        ..Config::default()
    };
    let mut s = Story::new(cfg, inventory(2, 1));
    crash_host(&mut s, "h1", 1.0);
    s.at(8.0);
    for (id, a) in s.take_actions() {
        if let (Some(vm), Some(to)) = (a.vm(), a.host()) {
            let mut v = s.vm(vm.as_str());
            v.host = Some(to.clone());
            s.at(9.0).done(id, ok()).upsert_vm(v);
        }
    }
    s.at(20.0);
    let fence: Vec<_> = s
        .take_actions()
        .into_iter()
        .filter(|(_, a)| matches!(a, Action::FenceHost { .. }))
        .collect();
    assert_eq!(fence.len(), 1);
    s.at(21.0).done(fence[0].0, vcenter_down());
    assert!(!s.alarmed(AlarmKind::FenceFailed));
    s.at(40.0);
    let again = s
        .take_actions()
        .into_iter()
        .filter(|(_, a)| matches!(a, Action::FenceHost { .. }))
        .count();
    assert_eq!(again, 1, "the fence is tried again");
}
