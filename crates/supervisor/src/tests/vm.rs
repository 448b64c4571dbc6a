//! A VM's own trouble: the ladder, user and unexplained power-offs, a restarted daemon.

use super::*;

#[test]
fn a_guest_that_stops_answering_is_reset_after_confirmation_and_healthy_again() {
    let mut s = Story::new(Config::default(), inventory(2, 2));
    s.at(10.0).guest("vm-11", false);
    s.at(10.9);
    assert!(s.take_actions().is_empty(), "no action before vm_confirm (1s)");
    s.at(11.0);
    let actions = s.take_actions();
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0].1, Action::Reset { vm: "vm-11".into() });
    s.at(14.0).done(actions[0].0, ok());
    assert!(matches!(
        s.state("vm-11"),
        VmState::Verifying {
            step: Step::Restart,
            ..
        }
    ));
    s.at(20.0).guest("vm-11", true);
    assert_eq!(s.state("vm-11"), VmState::Healthy);
    let inc = s.sup.incidents().last().unwrap();
    assert_eq!(inc.steps, vec!["restart"]);
    assert_eq!(inc.resolved, Some(Time::from_secs(20)));
}

#[test]
fn the_ladder_climbs_restart_revert_restore_migrate_then_gives_up() {
    let mut inv = inventory(2, 1);
    let vm: VmId = "vm-11".into();
    inv.apply(&InventoryDelta::Snapshots {
        vm: vm.clone(),
        snapshots: vec![Snapshot {
            id: "snap-1".into(),
            vm: vm.clone(),
            name: "am-backup".into(),
            created: Time::ZERO,
        }],
    });
    let mut clone = Vm::new("vm-11-backup", Resources::new(1_000, 8_000), "h2");
    clone.power = PowerState::PoweredOff;
    clone.backup_of = Some(vm.clone());
    inv.apply(&InventoryDelta::VmUpsert(clone));
    let mut s = Story::new(Config::default(), inv);
    s.at(5.0).guest("vm-11", false);
    let mut seen = Vec::new();
    let mut t = 8.0;
    for _ in 0..4 {
        s.at(t);
        let actions = s.take_actions();
        assert_eq!(actions.len(), 1, "one step at a time at t={t}: {actions:?}");
        seen.push(actions[0].1.clone());
        s.at(t + 1.0).done(actions[0].0, ok());
        t += 1.0 + 30.0; // recovery_grace passes with the guest still silent
    }
    assert_eq!(
        seen,
        vec![
            Action::Reset { vm: vm.clone() },
            Action::RevertSnapshot {
                vm: vm.clone(),
                snapshot: Some("snap-1".into())
            },
            Action::RestoreClone {
                vm: vm.clone(),
                backup: "vm-11-backup".into(),
                host: "h1".into()
            },
            Action::MigrateCold {
                vm: vm.clone(),
                to: "h2".into()
            },
        ]
    );
    s.at(t);
    assert_eq!(s.state("vm-11"), VmState::Failed);
    assert!(s.alarmed(AlarmKind::RecoveryFailed));
    assert!(s.take_actions().is_empty());
    // It comes back by itself (an operator fixed it): healthy, alarm cleared.
    s.guest("vm-11", true);
    assert_eq!(s.state("vm-11"), VmState::Healthy);
    assert!(!s.alarmed(AlarmKind::RecoveryFailed));
}

#[test]
fn a_failed_step_moves_to_the_next_at_once_and_missing_backups_are_skipped() {
    let mut s = Story::new(Config::default(), inventory(2, 1));
    s.at(1.0).guest("vm-11", false);
    s.at(4.0);
    let a = s.take_actions();
    assert_eq!(a[0].1, Action::Reset { vm: "vm-11".into() });
    s.done(
        a[0].0,
        Err(HvError::Api {
            fault: "GenericVmConfigFault".into(),
            message: "x".into(),
            retryable: false,
        }),
    );
    let b = s.take_actions();
    // No snapshot and no clone: straight to cold migration.
    assert_eq!(
        b[0].1,
        Action::MigrateCold {
            vm: "vm-11".into(),
            to: "h2".into()
        }
    );
}

#[test]
fn a_user_power_off_raises_an_alarm_and_is_never_recovered() {
    let mut s = Story::new(Config::default(), inventory(1, 2));
    let mut vm = s.vm("vm-11");
    vm.power = PowerState::PoweredOff;
    s.at(10.0).upsert_vm(vm.clone());
    assert!(matches!(s.state("vm-11"), VmState::OffUnexplained { .. }));
    s.feed(Observation::Event(ClusterEvent {
        at: Time::from_secs(10),
        kind: EventKind::VmPoweredOff {
            vm: "vm-11".into(),
            user: Some("alice".into()),
        },
    }));
    assert_eq!(
        s.state("vm-11"),
        VmState::StayOff {
            by: Some("alice".into())
        }
    );
    assert!(s.alarmed(AlarmKind::VmPoweredOff));
    s.at(100.0).guest("vm-11", false).at(200.0);
    assert!(
        s.take_actions().is_empty(),
        "nothing is done to a VM a user switched off"
    );
    vm.power = PowerState::PoweredOn;
    s.upsert_vm(vm);
    assert_eq!(s.state("vm-11"), VmState::Healthy);
    assert!(!s.alarmed(AlarmKind::VmPoweredOff));
}

#[test]
fn a_vm_a_user_powers_on_again_gets_time_to_boot_before_it_is_judged() {
    let mut s = Story::new(Config::default(), inventory(1, 1));
    let mut vm = s.vm("vm-11");
    vm.power = PowerState::PoweredOff;
    s.at(10.0).upsert_vm(vm.clone());
    s.feed(Observation::Event(ClusterEvent {
        at: Time::from_secs(10),
        kind: EventKind::VmPoweredOff {
            vm: "vm-11".into(),
            user: Some("alice".into()),
        },
    }));
    s.guest("vm-11", false); // its probes went silent while it was off
    vm.power = PowerState::PoweredOn;
    s.at(100.0).upsert_vm(vm);
    assert_eq!(s.state("vm-11"), VmState::Healthy);
    s.at(129.0);
    assert!(
        s.take_actions().is_empty(),
        "a stale verdict does not reset a booting guest"
    );
    s.at(131.0);
    assert_eq!(
        s.take_actions()[0].1,
        Action::Reset { vm: "vm-11".into() },
        "still silent after the grace"
    );
}

#[test]
fn after_a_restart_ids_continue_user_power_offs_stand_and_restart_history_counts() {
    let mut inv = inventory(1, 2);
    if let Some(vm) = inv.vms.get_mut(&VmId::from("vm-12")) {
        vm.power = PowerState::PoweredOff;
    }
    let mut sup = Supervisor::new(Config {
        restart_limit: 2,
        ..Config::default()
    });
    let restore = Restore {
        next_action_id: 500,
        user_offs: BTreeMap::from([("vm-12".into(), "alice".to_owned())]),
        restarts: BTreeMap::from([("vm-11".into(), vec![Time::ZERO, Time::from_secs(1)])]),
        ..Restore::default()
    };
    sup.restore(Time::ZERO, restore);
    let mut s = Story {
        sup,
        now: Time::ZERO,
        commands: Vec::new(),
        log: Vec::new(),
    };
    s.feed(Observation::Inventory(inv));
    assert_eq!(
        s.state("vm-12"),
        VmState::StayOff {
            by: Some("alice".into())
        }
    );
    s.at(10.0).guest("vm-11", false);
    s.at(12.0);
    let actions = s.take_actions();
    // Two restarts already in the window: the limit holds across the restart; the ladder goes on.
    assert!(actions.iter().all(|(_, a)| a.name() != "reset"), "{actions:?}");
    assert!(
        actions.iter().all(|(id, _)| id.0 >= 500),
        "ids continue after the journal's: {actions:?}"
    );
}

#[test]
fn a_vm_whose_failover_was_unfinished_at_the_crash_is_not_failed_over_again_at_once() {
    let mut sup = Supervisor::new(Config::default());
    sup.restore(
        Time::ZERO,
        Restore {
            next_action_id: 10,
            unfinished: vec![(
                ActionId(9),
                Action::Failover {
                    vm: "vm-11".into(),
                    to: "h2".into(),
                },
            )],
            ..Restore::default()
        },
    );
    let mut s = Story {
        sup,
        now: Time::ZERO,
        commands: Vec::new(),
        log: Vec::new(),
    };
    s.feed(Observation::Inventory(inventory(3, 2)));
    assert!(matches!(s.state("vm-11"), VmState::Reconciling { .. }));
    crash_host(&mut s, "h1", 1.0);
    s.at(10.0);
    let actions = s.take_actions();
    assert_eq!(s.host_state("h1").name(), "dead");
    assert!(
        actions
            .iter()
            .any(|(_, a)| matches!(a, Action::Failover { vm, .. } if vm.as_str() == "vm-12"))
    );
    assert!(
        !actions.iter().any(|(_, a)| a.vm() == Some(&VmId::from("vm-11"))),
        "held: {actions:?}"
    );
    // The old failover never shows: after the window the VM is restarted like the others.
    s.at(61.0);
    let later = s.take_actions();
    assert!(
        later
            .iter()
            .any(|(_, a)| matches!(a, Action::Failover { vm, .. } if vm.as_str() == "vm-11")),
        "{later:?}"
    );
}

#[test]
fn an_unfinished_action_that_took_effect_ends_reconciliation_at_once() {
    let mut sup = Supervisor::new(Config::default());
    sup.restore(
        Time::ZERO,
        Restore {
            unfinished: vec![(ActionId(3), Action::Reset { vm: "vm-11".into() })],
            ..Restore::default()
        },
    );
    let mut s = Story {
        sup,
        now: Time::ZERO,
        commands: Vec::new(),
        log: Vec::new(),
    };
    s.feed(Observation::Inventory(inventory(1, 1)));
    s.at(2.0).guest("vm-11", true);
    assert_eq!(s.state("vm-11"), VmState::Healthy);
}

#[test]
fn a_vm_that_went_off_while_vcenter_was_unreachable_is_judged_at_the_resync() {
    let mut s = Story::new(Config::default(), inventory(1, 2));
    // vCenter unreachable meanwhile: the next thing is a full inventory with both VMs off, then
    // the events (one named user, one crash).
    let mut inv = s.sup.inventory().clone();
    for id in ["vm-11", "vm-12"] {
        if let Some(vm) = inv.vms.get_mut(&VmId::from(id)) {
            vm.power = PowerState::PoweredOff;
        }
    }
    s.at(30.0).feed(Observation::Inventory(inv));
    assert!(matches!(s.state("vm-11"), VmState::OffUnexplained { .. }));
    s.feed(Observation::Event(ClusterEvent {
        at: Time::from_secs(29),
        kind: EventKind::VmPoweredOff {
            vm: "vm-11".into(),
            user: Some("alice".into()),
        },
    }));
    assert_eq!(
        s.state("vm-11"),
        VmState::StayOff {
            by: Some("alice".into())
        }
    );
    s.at(33.0);
    let actions = s.take_actions();
    assert_eq!(
        actions.iter().map(|(_, a)| a.clone()).collect::<Vec<_>>(),
        vec![Action::PowerOn { vm: "vm-12".into() }]
    );
}

#[test]
fn the_event_may_come_before_the_state_change() {
    let mut s = Story::new(Config::default(), inventory(1, 1));
    s.at(10.0).feed(Observation::Event(ClusterEvent {
        at: Time::from_secs(10),
        kind: EventKind::VmPoweredOff {
            vm: "vm-11".into(),
            user: Some("bob".into()),
        },
    }));
    let mut vm = s.vm("vm-11");
    vm.power = PowerState::PoweredOff;
    s.upsert_vm(vm);
    assert_eq!(
        s.state("vm-11"),
        VmState::StayOff {
            by: Some("bob".into())
        }
    );
    s.at(60.0);
    assert!(s.take_actions().is_empty());
}

#[test]
fn a_power_off_nobody_asked_for_is_a_crash_and_is_powered_on() {
    let mut s = Story::new(Config::default(), inventory(1, 1));
    let mut vm = s.vm("vm-11");
    vm.power = PowerState::PoweredOff;
    s.at(10.0).upsert_vm(vm);
    s.at(11.0);
    assert!(s.take_actions().is_empty(), "waits power_off_grace for the event");
    s.at(12.0);
    assert_eq!(s.take_actions()[0].1, Action::PowerOn { vm: "vm-11".into() });
}

#[test]
fn the_managers_own_power_off_is_not_a_user_power_off() {
    let mut s = Story::new(Config::default(), inventory(1, 1));
    s.at(10.0).feed(Observation::Event(ClusterEvent {
        at: Time::from_secs(10),
        kind: EventKind::VmPoweredOff {
            vm: "vm-11".into(),
            user: Some("am-manager".into()),
        },
    }));
    assert!(!s.alarmed(AlarmKind::VmPoweredOff));
}

#[test]
fn a_revert_that_does_not_help_is_followed_by_one_to_the_next_older_snapshot() {
    let mut inv = inventory(2, 1);
    let vm: VmId = "vm-11".into();
    let snap = |id: &str, at: u64| Snapshot {
        id: id.into(),
        vm: vm.clone(),
        name: "am-backup".into(),
        created: Time::from_secs(at),
    };
    inv.apply(&InventoryDelta::Snapshots {
        vm: vm.clone(),
        snapshots: vec![snap("old", 1), snap("new", 4)],
    });
    let mut s = Story::new(Config::default(), inv);
    s.at(5.0).guest("vm-11", false);
    let mut reverts = Vec::new();
    let mut t = 6.0;
    for _ in 0..4 {
        s.at(t);
        for (id, a) in s.take_actions() {
            if let Action::RevertSnapshot { snapshot, .. } = &a {
                reverts.push(snapshot.clone());
            }
            s.at(t + 1.0).done(id, ok());
        }
        t += 1.0 + 30.0;
    }
    assert_eq!(reverts, vec![Some("new".into()), Some("old".into())]);
}
