//! The disarm switch and predicted failures.

use super::*;

fn say(s: &mut Story, req: OperatorRequest) {
    s.feed(Observation::Operator(req));
}

#[test]
fn disarmed_nothing_is_restarted_until_armed_and_the_switch_survives_a_restart() {
    let mut s = Story::new(Config::default(), inventory(2, 1));
    s.at(1.0);
    s.take_actions();
    say(
        &mut s,
        OperatorRequest::Disarm {
            reason: "core switch upgrade".into(),
        },
    );
    assert!(s.alarmed(AlarmKind::Disarmed));
    assert_eq!(s.sup.status().disarmed.as_deref(), Some("core switch upgrade"));
    // A guest stops answering: seen, judged, not acted on.
    s.at(2.0).guest("vm-11", false);
    s.at(10.0);
    assert!(s.take_actions().is_empty(), "acted while disarmed");
    assert!(
        matches!(s.state("vm-11"), VmState::Deferred { step: Step::Restart }),
        "{:?}",
        s.state("vm-11")
    );
    // A restarted daemon reads the switch from its journaled alarm.
    let alarms: Vec<Alarm> = s.sup.alarms().cloned().collect();
    let mut again = Supervisor::new(Config::default());
    let _ = again.restore(
        Time::from_secs(11),
        Restore {
            alarms,
            ..Restore::default()
        },
    );
    assert!(again.disarmed().is_some());
    // Armed: the VM is restarted as things stand.
    say(&mut s, OperatorRequest::Arm);
    assert!(!s.alarmed(AlarmKind::Disarmed));
    s.at(11.0);
    let actions = s.take_actions();
    assert!(
        actions
            .iter()
            .any(|(_, a)| matches!(a, Action::Reset { vm } if vm.as_str() == "vm-11")),
        "{actions:?}"
    );
}

#[test]
fn disarmed_a_dead_host_is_reported_but_its_vms_wait() {
    let mut s = Story::new(Config::default(), inventory(3, 1));
    s.at(1.0);
    s.take_actions();
    say(
        &mut s,
        OperatorRequest::Disarm {
            reason: "vCenter upgrade".into(),
        },
    );
    crash_host(&mut s, "h1", 2.0);
    for t in 3..30 {
        s.at(f64::from(t));
    }
    assert!(matches!(s.host_state("h1"), HostState::Dead { .. }));
    assert!(s.take_actions().is_empty(), "acted while disarmed");
    say(&mut s, OperatorRequest::Arm);
    s.at(31.0);
    let actions = s.take_actions();
    assert!(
        actions
            .iter()
            .any(|(_, a)| a.vm().is_some_and(|v| v.as_str() == "vm-11")),
        "{actions:?}"
    );
}

#[test]
fn a_predicted_failure_evacuates_into_maintenance_or_only_alarms_by_policy() {
    let degraded = || OperatorRequest::Degraded {
        host: "h1".into(),
        reason: "DIMM correctable errors".into(),
        source: "alertmanager".into(),
    };
    let mut s = Story::new(Config::default(), inventory(3, 2));
    s.at(1.0);
    s.take_actions();
    say(&mut s, degraded());
    assert!(s.alarmed(AlarmKind::HostDegraded));
    assert!(matches!(s.host_state("h1"), HostState::Evacuating { .. }));
    let moves = s.take_actions();
    assert_eq!(moves.len(), 2, "{moves:?}");
    // The alert repeats: nothing more.
    say(&mut s, degraded());
    assert!(s.take_actions().is_empty());

    let cfg = Config {
        predicted_failure: PredictedFailure::Alarm,
        ..Config::default()
    };
    let mut s = Story::new(cfg, inventory(3, 2));
    s.at(1.0);
    s.take_actions();
    say(&mut s, degraded());
    assert!(s.alarmed(AlarmKind::HostDegraded));
    assert_eq!(s.host_state("h1"), HostState::Up);
    assert!(s.take_actions().is_empty());
    say(
        &mut s,
        OperatorRequest::DegradedClear {
            host: "h1".into(),
            source: "alertmanager".into(),
        },
    );
    assert!(!s.alarmed(AlarmKind::HostDegraded));
}
