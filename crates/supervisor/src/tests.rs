//! Stories told to the supervisor alone: observations in, commands and states checked.

use super::*;
use am_core::{Host, Resources, RestartPriority, Snapshot};
use std::time::Duration;

struct Story {
    sup: Supervisor,
    now: Time,
    commands: Vec<Command>,
    log: Vec<LogEntry>,
}

fn inventory(hosts: usize, vms_per_host: usize) -> Inventory {
    let mut inv = Inventory::default();
    for h in 1..=hosts {
        let mut host = Host::new(format!("h{h}").as_str(), Resources::new(20_000, 64_000));
        host.mgmt_address = Some(format!("10.0.0.{h}"));
        host.storage_heartbeat = Some(Time::ZERO);
        inv.apply(&InventoryDelta::HostUpsert(host));
        for v in 1..=vms_per_host {
            let id = format!("vm-{h}{v}");
            let mut vm = Vm::new(
                id.as_str(),
                Resources::new(1_000, 8_000),
                format!("h{h}").as_str(),
            );
            vm.guest_address = Some(format!("10.1.{h}.{v}"));
            inv.apply(&InventoryDelta::VmUpsert(vm));
        }
    }
    inv
}

impl Story {
    /// A story without the backup cache (its snapshots would crowd the actions under test).
    fn new(cfg: Config, inv: Inventory) -> Story {
        let backup = BackupPolicy {
            snapshot_every: Duration::ZERO,
            ..cfg.backup.clone()
        };
        Story::with_backups(Config { backup, ..cfg }, inv)
    }

    fn with_backups(cfg: Config, inv: Inventory) -> Story {
        let mut s = Story {
            sup: Supervisor::new(cfg),
            now: Time::ZERO,
            commands: Vec::new(),
            log: Vec::new(),
        };
        s.feed(Observation::Inventory(inv));
        s
    }

    fn at(&mut self, secs: f64) -> &mut Self {
        self.now = Time::from_millis((secs * 1000.0) as u64);
        self.feed(Observation::Tick);
        self
    }

    fn feed(&mut self, obs: Observation) -> &mut Self {
        let out = self.sup.step(self.now, obs);
        self.commands.extend(out.commands);
        self.log.extend(out.log);
        self
    }

    fn guest(&mut self, vm: &str, alive: bool) -> &mut Self {
        self.feed(Observation::Liveness {
            subject: Subject::Vm(vm.into()),
            alive,
            evidence: "probe".into(),
        })
    }

    fn mgmt(&mut self, host: &str, alive: bool) -> &mut Self {
        self.feed(Observation::Liveness {
            subject: Subject::Host(host.into()),
            alive,
            evidence: "probe".into(),
        })
    }

    fn vm(&self, id: &str) -> Vm {
        self.sup.inventory().vms[&VmId::from(id)].clone()
    }

    fn host(&self, id: &str) -> Host {
        self.sup.inventory().hosts[&HostId::from(id)].clone()
    }

    fn upsert_vm(&mut self, vm: Vm) -> &mut Self {
        self.feed(Observation::Delta(InventoryDelta::VmUpsert(vm)))
    }

    fn upsert_host(&mut self, host: Host) -> &mut Self {
        self.feed(Observation::Delta(InventoryDelta::HostUpsert(host)))
    }

    fn connection(&mut self, host: &str, c: ConnectionState) -> &mut Self {
        let mut h = self.host(host);
        h.connection = c;
        self.upsert_host(h)
    }

    fn heartbeat(&mut self, host: &str, at: f64) -> &mut Self {
        let mut h = self.host(host);
        h.storage_heartbeat = Some(Time::from_millis((at * 1000.0) as u64));
        self.upsert_host(h)
    }

    /// The actions issued since the last call, as "name subject" strings.
    fn take_actions(&mut self) -> Vec<(ActionId, Action)> {
        let cmds = std::mem::take(&mut self.commands);
        cmds.into_iter()
            .filter_map(|c| match c {
                Command::Execute { id, action, .. } => Some((id, action)),
                Command::Alarm(_) => None,
            })
            .collect()
    }

    fn done(&mut self, id: ActionId, result: Result<ActionOutcome, HvError>) -> &mut Self {
        self.feed(Observation::ActionDone { id, result })
    }

    fn state(&self, vm: &str) -> VmState {
        self.sup.vm_state(&vm.into()).cloned().unwrap()
    }

    fn host_state(&self, host: &str) -> HostState {
        self.sup.host_state(&host.into()).cloned().unwrap()
    }

    fn alarmed(&self, kind: AlarmKind) -> bool {
        self.sup.alarms().any(|a| a.kind == kind)
    }
}

fn ok() -> Result<ActionOutcome, HvError> {
    Ok(ActionOutcome::Done)
}

fn unreachable() -> Result<ActionOutcome, HvError> {
    Err(HvError::Unreachable {
        target: "host".into(),
        detail: "down".into(),
    })
}

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
fn the_backup_cache_snapshots_healthy_vms_spread_over_the_period_and_keeps_the_newest() {
    let cfg = Config {
        backup: BackupPolicy {
            snapshot_every: Duration::from_secs(300),
            keep_snapshots: 2,
            max_in_flight: 8,
            ..BackupPolicy::default()
        },
        ..Config::default()
    };
    let mut s = Story::with_backups(cfg, inventory(2, 3));
    let mut taken: Vec<(f64, VmId)> = Vec::new();
    for t in 0..=600 {
        s.at(t as f64);
        for (id, a) in s.take_actions() {
            if let Action::CreateSnapshot { vm, name } = &a {
                assert!(name.starts_with("am-backup-"));
                taken.push((t as f64, vm.clone()));
                // The snapshot appears in the inventory, then the action completes.
                let mut snaps = s.sup.inventory().snapshots.get(vm).cloned().unwrap_or_default();
                snaps.push(Snapshot {
                    id: format!("{vm}-{t}").into(),
                    vm: vm.clone(),
                    name: name.clone(),
                    created: s.now,
                });
                s.feed(Observation::Delta(InventoryDelta::Snapshots {
                    vm: vm.clone(),
                    snapshots: snaps,
                }));
                s.done(id, Ok(ActionOutcome::SnapshotCreated(format!("{vm}-{t}").into())));
            }
        }
    }
    // Every VM twice or three times in 600 s, at its own offset (not all at once).
    for vm in ["vm-11", "vm-12", "vm-13", "vm-21", "vm-22", "vm-23"] {
        let n = taken.iter().filter(|(_, v)| v.as_str() == vm).count();
        assert!((2..=3).contains(&n), "{vm}: {n} snapshots");
    }
    let distinct_times: std::collections::BTreeSet<u64> = taken.iter().map(|(t, _)| *t as u64).collect();
    assert!(
        distinct_times.len() >= 5,
        "spread over the period: {distinct_times:?}"
    );
    let _ = &mut s;
}

#[test]
fn backup_retention_removes_the_oldest_of_the_managers_snapshots_only() {
    let cfg = Config {
        backup: BackupPolicy {
            keep_snapshots: 2,
            ..BackupPolicy::default()
        },
        ..Config::default()
    };
    let mut inv = inventory(1, 1);
    let vm: VmId = "vm-11".into();
    let snap = |id: &str, name: &str, at: u64| Snapshot {
        id: id.into(),
        vm: vm.clone(),
        name: name.into(),
        created: Time::from_secs(at),
    };
    inv.apply(&InventoryDelta::Snapshots {
        vm: vm.clone(),
        snapshots: vec![
            snap("mine", "before-upgrade", 1),
            snap("b1", "am-backup-1", 2),
            snap("b2", "am-backup-2", 3),
            snap("b3", "am-backup-3", 4),
        ],
    });
    let mut s = Story::with_backups(cfg, inv);
    let mut removed = Vec::new();
    for t in 0..=300 {
        s.at(t as f64);
        for (id, a) in s.take_actions() {
            match a {
                Action::RemoveSnapshot { snapshot, .. } => removed.push(snapshot),
                Action::CreateSnapshot { .. } => {
                    s.done(id, Ok(ActionOutcome::SnapshotCreated("b4".into())));
                }
                _ => {}
            }
        }
        if !removed.is_empty() {
            break;
        }
    }
    assert_eq!(
        removed,
        vec![SnapshotId::from("b1")],
        "the oldest of the manager's, never a person's"
    );
}

#[test]
fn a_failing_vm_gets_no_backup() {
    let mut s = Story::with_backups(Config::default(), inventory(1, 1));
    s.at(1.0).guest("vm-11", false);
    let mut t = 1.0;
    while t < 400.0 {
        t += 1.0;
        s.at(t);
        for (id, a) in s.take_actions() {
            assert!(
                !matches!(a, Action::CreateSnapshot { .. }),
                "no snapshot of a failing VM"
            );
            s.done(id, ok()); // resets succeed, but the guest stays silent
        }
    }
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

/// The host stops: its last storage heartbeat was written one second before.
fn crash_host(s: &mut Story, host: &str, at: f64) {
    s.at(at).heartbeat(host, (at - 1.0).max(0.0));
    s.mgmt(host, false);
    let vms: Vec<VmId> = s
        .sup
        .inventory()
        .vms_on(&host.into())
        .map(|v| v.id.clone())
        .collect();
    for vm in vms {
        s.guest(vm.as_str(), false);
    }
    s.connection(host, ConnectionState::NotResponding);
}

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
        inv.apply(&InventoryDelta::HostUpsert(Host::new(
            h,
            Resources::new(10_000, 10_000),
        )));
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
        inv.apply(&InventoryDelta::HostUpsert(Host::new(
            h,
            Resources::new(10_000, 10_000),
        )));
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

/// The reasons given for the failovers of these VMs.
fn failover_reasons(s: &Story) -> Vec<String> {
    s.log
        .iter()
        .filter_map(|e| match &e.kind {
            LogKind::Transition { to, reason, .. } if to == "recovering(failover)" => Some(reason.clone()),
            _ => None,
        })
        .collect()
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
