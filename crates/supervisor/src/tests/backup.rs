//! The backup cache: snapshots, clones, retention, the task budget.

use super::*;

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

/// Runs the cache for `secs`, completing every snapshot and clone at once (they appear in the
/// inventory); returns each backup action with the second it was issued.
fn run_cache(s: &mut Story, secs: u64) -> Vec<(u64, Action)> {
    run_cache_from(s, 0, secs)
}

/// [`run_cache`] from second `from` to second `to`.
fn run_cache_from(s: &mut Story, from: u64, to: u64) -> Vec<(u64, Action)> {
    let mut issued = Vec::new();
    for t in from..=to {
        s.at(t as f64);
        for (id, a) in s.take_actions() {
            issued.push((t, a.clone()));
            match &a {
                Action::CreateSnapshot { vm, name } => {
                    let mut snaps = s.sup.inventory().snapshots.get(vm).cloned().unwrap_or_default();
                    let sid: SnapshotId = format!("{vm}-s{t}").into();
                    snaps.push(Snapshot {
                        id: sid.clone(),
                        vm: vm.clone(),
                        name: name.clone(),
                        created: s.now,
                    });
                    s.feed(Observation::Delta(InventoryDelta::Snapshots {
                        vm: vm.clone(),
                        snapshots: snaps,
                    }));
                    s.done(id, Ok(ActionOutcome::SnapshotCreated(sid)));
                }
                Action::Clone { vm, name, host, .. } => {
                    let cid = VmId::from(format!("{vm}-c{t:04}").as_str());
                    let mut c = Vm::new(cid.clone(), Resources::new(1_000, 8_000), host.clone());
                    c.name = name.clone();
                    c.power = PowerState::PoweredOff;
                    c.priority = RestartPriority::Disabled;
                    c.backup_of = Some(vm.clone());
                    s.upsert_vm(c);
                    s.done(id, Ok(ActionOutcome::VmCreated(cid)));
                }
                Action::RemoveSnapshot { vm, snapshot } => {
                    let snaps: Vec<Snapshot> = s.sup.inventory().snapshots[vm]
                        .iter()
                        .filter(|x| x.id != *snapshot)
                        .cloned()
                        .collect();
                    s.feed(Observation::Delta(InventoryDelta::Snapshots {
                        vm: vm.clone(),
                        snapshots: snaps,
                    }));
                    s.done(id, ok());
                }
                Action::DeleteBackup { vm } => {
                    s.feed(Observation::Delta(InventoryDelta::VmRemoved(vm.clone())));
                    s.done(id, ok());
                }
                _ => {}
            }
        }
    }
    issued
}

#[test]
fn no_minute_starts_more_backup_tasks_than_the_budget_and_the_lag_is_said() {
    let cfg = Config {
        backup: BackupPolicy {
            snapshot_every: Duration::from_secs(60),
            keep_snapshots: 1,
            max_in_flight: 16,
            tasks_per_minute: 5,
            ..BackupPolicy::default()
        },
        ..Config::default()
    };
    let mut s = Story::with_backups(cfg, inventory(3, 4));
    let issued = run_cache(&mut s, 400);
    let times: Vec<u64> = issued.iter().map(|(t, _)| *t).collect();
    assert!(times.len() >= 25, "the cache works within the budget: {times:?}");
    for &t in &times {
        let in_minute = times.iter().filter(|u| (t..t + 60).contains(*u)).count();
        assert!(
            in_minute <= 5,
            "{in_minute} tasks in the minute from {t}s: {times:?}"
        );
    }
    assert!(
        issued
            .iter()
            .any(|(_, a)| matches!(a, Action::RemoveSnapshot { .. })),
        "retention counts against the same budget"
    );
    assert!(
        s.log
            .iter()
            .any(|l| l.to_string().contains("tasks_per_minute = 5")),
        "the audit trail says the cache is behind and why"
    );
}

#[test]
fn only_vms_the_patterns_name_are_backed_up() {
    let cfg = Config {
        backup: BackupPolicy {
            snapshot_every: Duration::from_secs(60),
            vms: vec!["vm-1*".into()],
            exclude_vms: vec!["vm-12".into()],
            ..BackupPolicy::default()
        },
        ..Config::default()
    };
    let mut inv = inventory(2, 3);
    let mut opted_out = inv.vms[&VmId::from("vm-13")].clone();
    opted_out.backup = false;
    inv.apply(&InventoryDelta::VmUpsert(opted_out));
    let mut s = Story::with_backups(cfg, inv);
    let snapped: std::collections::BTreeSet<String> = run_cache(&mut s, 130)
        .into_iter()
        .filter_map(|(_, a)| match a {
            Action::CreateSnapshot { vm, .. } => Some(vm.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(
        snapped,
        ["vm-11".to_owned()].into_iter().collect(),
        "vm-1* but not vm-12 (excluded) nor vm-13 (its attribute says off)"
    );
}

#[test]
fn clones_go_to_another_host_and_only_the_newest_of_the_managers_is_kept() {
    let cfg = Config {
        backup: BackupPolicy {
            snapshot_every: Duration::ZERO,
            clone_every: Duration::from_secs(100),
            keep_clones: 1,
            ..BackupPolicy::default()
        },
        ..Config::default()
    };
    let mut inv = inventory(2, 1);
    // A clone someone else made: never the manager's to delete.
    let mut theirs = Vm::new("theirs", Resources::new(1_000, 8_000), "h2");
    theirs.name = "nightly copy".into();
    theirs.power = PowerState::PoweredOff;
    theirs.priority = RestartPriority::Disabled;
    theirs.backup_of = Some("vm-11".into());
    inv.apply(&InventoryDelta::VmUpsert(theirs));
    let mut s = Story::with_backups(cfg, inv);
    let issued = run_cache(&mut s, 450);
    let clones: Vec<(VmId, HostId)> = issued
        .iter()
        .filter_map(|(_, a)| match a {
            Action::Clone { vm, host, .. } => Some((vm.clone(), host.clone())),
            _ => None,
        })
        .collect();
    assert!(clones.len() >= 6, "each VM about every 100 s: {clones:?}");
    for (vm, host) in &clones {
        let own = s.vm(vm.as_str()).host.unwrap();
        assert_ne!(&own, host, "{vm}'s clone is kept off its own host");
    }
    let deleted: Vec<VmId> = issued
        .iter()
        .filter_map(|(_, a)| match a {
            Action::DeleteBackup { vm } => Some(vm.clone()),
            _ => None,
        })
        .collect();
    assert!(!deleted.is_empty(), "older clones are deleted");
    assert!(
        !deleted.contains(&VmId::from("theirs")),
        "never a clone it did not make"
    );
    for vm in ["vm-11", "vm-21"] {
        let ours = s
            .sup
            .inventory()
            .vms
            .values()
            .filter(|c| {
                c.backup_of.as_ref().is_some_and(|b| b.as_str() == vm) && c.name.starts_with("am-backup-")
            })
            .count();
        assert_eq!(ours, 1, "{vm} keeps one clone of the manager's");
    }
}

#[test]
fn vms_late_because_their_host_was_in_trouble_are_not_blamed_on_the_budget() {
    let cfg = Config {
        backup: BackupPolicy {
            snapshot_every: Duration::from_secs(60),
            keep_snapshots: 1,
            ..BackupPolicy::default()
        },
        ..Config::default()
    };
    let mut s = Story::with_backups(cfg, inventory(2, 2));
    run_cache(&mut s, 30);
    // h1 answers no pings for four minutes (suspect): its VMs get no snapshot meanwhile.
    s.at(31.0).mgmt("h1", false);
    run_cache_from(&mut s, 32, 270);
    s.at(271.0).mgmt("h1", true);
    let issued = run_cache_from(&mut s, 272, 340);
    assert!(
        issued
            .iter()
            .any(|(_, a)| matches!(a, Action::CreateSnapshot { vm, .. } if vm.as_str() == "vm-11")),
        "h1's VMs are backed up again: {issued:?}"
    );
    assert!(
        !s.log.iter().any(|l| l.to_string().contains("tasks_per_minute")),
        "the budget was never the limit"
    );
}

#[test]
fn a_dead_hosts_backup_clones_are_kept_unless_the_cache_makes_new_ones() {
    let run = |clone_every: Duration| {
        let mut inv = inventory(3, 1);
        let mut clone = Vm::new("vm-21-clone", Resources::new(1_000, 8_000), "h1");
        clone.power = PowerState::PoweredOff;
        clone.priority = RestartPriority::Disabled;
        clone.backup_of = Some("vm-21".into());
        inv.apply(&InventoryDelta::VmUpsert(clone));
        let cfg = Config {
            backup: BackupPolicy {
                snapshot_every: Duration::ZERO,
                clone_every,
                ..BackupPolicy::default()
            },
            ..Config::default()
        };
        let mut s = Story::with_backups(cfg, inv);
        crash_host(&mut s, "h1", 1.0);
        s.at(8.0);
        s.take_actions()
            .into_iter()
            .filter_map(|(_, a)| match a {
                Action::Register { vm, host } => Some((vm.to_string(), host.to_string())),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let kept = run(Duration::ZERO);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0].0, "vm-21-clone");
    assert_ne!(kept[0].1, "h2", "not on its own VM's host");
    assert!(
        run(Duration::from_secs(600)).is_empty(),
        "the cache makes new ones"
    );
}
