//! Outcomes that prove nothing failed: a step that timed out (it may have taken effect), a
//! power-on or failover that finds the VM already running. Each is verified before anything
//! heavier; a failover that did fail on a host never goes back there.

use super::*;

fn timed_out() -> Result<ActionOutcome, HvError> {
    Err(HvError::Timeout { op: "reset".into() })
}

fn step_actions(s: &mut Story) -> Vec<(ActionId, Action)> {
    s.take_actions()
        .into_iter()
        .filter(|(_, a)| a.vm().is_some())
        .collect()
}

fn with_snapshot(mut inv: Inventory, vm: &str) -> Inventory {
    inv.apply(&InventoryDelta::Snapshots {
        vm: vm.into(),
        snapshots: vec![Snapshot {
            id: "snap-1".into(),
            vm: vm.into(),
            name: "am-backup".into(),
            created: Time::ZERO,
        }],
    });
    inv
}

#[test]
fn a_reset_that_timed_out_is_verified_and_a_vm_that_answers_is_not_reverted() {
    let mut s = Story::new(Config::default(), with_snapshot(inventory(2, 1), "vm-11"));
    s.at(5.0).guest("vm-11", false);
    s.at(6.0);
    let reset = step_actions(&mut s);
    assert_eq!(reset[0].1, Action::Reset { vm: "vm-11".into() });
    s.at(7.0).done(reset[0].0, timed_out());
    assert!(matches!(
        s.state("vm-11"),
        VmState::Verifying {
            step: Step::Restart,
            ..
        }
    ));
    s.at(9.0).guest("vm-11", true);
    assert_eq!(s.state("vm-11"), VmState::Healthy);
    assert!(step_actions(&mut s).is_empty(), "no revert");
}

#[test]
fn a_reset_that_timed_out_and_did_not_help_is_tried_again_before_a_revert() {
    let mut s = Story::new(Config::default(), with_snapshot(inventory(2, 1), "vm-11"));
    s.at(5.0).guest("vm-11", false);
    s.at(6.0);
    let reset = step_actions(&mut s);
    s.at(7.0).done(reset[0].0, timed_out());
    s.at(7.0 + 30.0);
    let next = step_actions(&mut s);
    assert_eq!(next[0].1, Action::Reset { vm: "vm-11".into() }, "restart again");
    // This one went through and did not help: now the revert.
    s.at(38.0).done(next[0].0, ok());
    s.at(38.0 + 30.0);
    let next = step_actions(&mut s);
    assert!(matches!(next[0].1, Action::RevertSnapshot { .. }), "{next:?}");
}

#[test]
fn a_power_on_that_finds_the_vm_on_is_verified_not_climbed_past() {
    let mut s = Story::new(Config::default(), with_snapshot(inventory(2, 1), "vm-11"));
    let mut v = s.vm("vm-11");
    v.power = PowerState::PoweredOff;
    s.at(5.0).upsert_vm(v);
    s.feed(Observation::Event(ClusterEvent {
        at: Time::from_secs(5),
        kind: EventKind::VmPoweredOff {
            vm: "vm-11".into(),
            user: None,
        },
    }));
    s.at(6.0);
    let on = step_actions(&mut s);
    assert_eq!(on[0].1, Action::PowerOn { vm: "vm-11".into() });
    // A user powers it on meanwhile.
    let mut v = s.vm("vm-11");
    v.power = PowerState::PoweredOn;
    s.upsert_vm(v);
    s.at(7.0).done(
        on[0].0,
        Err(HvError::invalid_state("vm-11", "already powered on")),
    );
    // It runs, with nothing against it: verified at once.
    assert_eq!(s.state("vm-11"), VmState::Healthy);
    s.at(8.0).guest("vm-11", true);
    assert_eq!(s.state("vm-11"), VmState::Healthy);
    assert!(step_actions(&mut s).is_empty(), "no revert");
}

#[test]
fn a_failover_that_finds_the_vm_running_on_its_target_is_done() {
    let mut s = Story::new(Config::default(), inventory(2, 1));
    crash_host(&mut s, "h1", 1.0);
    s.at(8.0);
    let failover = step_actions(&mut s);
    assert_eq!(
        failover[0].1,
        Action::Failover {
            vm: "vm-11".into(),
            to: "h2".into()
        }
    );
    let mut v = s.vm("vm-11");
    v.host = Some("h2".into());
    s.upsert_vm(v);
    s.at(9.0).done(
        failover[0].0,
        Err(HvError::invalid_state("vm-11", "powered on on h2")),
    );
    assert!(matches!(
        s.state("vm-11"),
        VmState::Verifying {
            step: Step::Failover,
            ..
        }
    ));
    s.at(20.0);
    assert!(step_actions(&mut s).is_empty(), "not failed over again");
}

#[test]
fn relaxing_anti_affinity_never_sends_a_vm_back_to_a_host_its_failover_failed_on() {
    let mut inv = Inventory::default();
    for h in ["h1", "h2", "h3"] {
        let mut host = Host::new(h, Resources::new(10_000, 10_000));
        host.mgmt_address = Some(format!("10.0.0.{h}"));
        inv.apply(&InventoryDelta::HostUpsert(host));
    }
    for (id, h) in [("web-1", "h1"), ("web-2", "h2"), ("web-3", "h3")] {
        let mut vm = Vm::new(id, Resources::new(1_000, 1_000), h);
        vm.anti_affinity_group = Some("web".into());
        inv.apply(&InventoryDelta::VmUpsert(vm));
    }
    let mut s = Story::new(Config::default(), inv);
    s.at(1.0)
        .mgmt("h1", false)
        .connection("h1", ConnectionState::NotResponding);
    s.at(7.0);
    let first = step_actions(&mut s);
    let Some((id, Action::Failover { to, .. })) = first.first().cloned() else {
        panic!("a failover: {first:?}")
    };
    s.at(8.0).done(id, Err(HvError::not_found("host", to.as_str())));
    s.at(20.0);
    let again: Vec<HostId> = step_actions(&mut s)
        .into_iter()
        .filter_map(|(_, a)| a.host().cloned())
        .collect();
    assert_eq!(again.len(), 1, "{again:?}");
    assert_ne!(again[0], to, "not back to {to}");
}
