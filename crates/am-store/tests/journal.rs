//! The journal's contract: round trips, all-or-nothing appends, what a restart recovers, errors
//! that name the file, retention that keeps what a restart needs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use am_core::{
    Action, ActionId, AlarmKind, HvError, Journal, JournalError, LogEntry, LogKind, Record, Subject, Time,
    VmId,
};
use am_store::{BackupKind, BackupState, Recovered, SqliteJournal, StoreError};
use common::*;
use std::collections::BTreeMap;

fn every_kind() -> Vec<Record> {
    let mut r = vec![
        note(1_000, Subject::Manager, "started"),
        transition(1_500, "vm-1", "healthy", "recovering(restart)"),
        Record::Decision(LogEntry {
            at: Time::from_millis(1_600),
            subject: Subject::Host("h1".into()),
            name: None,
            kind: LogKind::Transition {
                from: "up".into(),
                to: "suspect".into(),
                reason: "ping lost".into(),
            },
        }),
    ];
    r.extend(issue(2_000, 1, reset("vm-1")));
    r.extend(issue(
        2_000,
        2,
        Action::Clone {
            vm: "vm-2".into(),
            name: "vm-2-backup".into(),
            host: "h2".into(),
            datastore: Some("ds1".into()),
        },
    ));
    r.extend(issue(
        2_000,
        3,
        Action::AddHost {
            spare: "spare-1".into(),
        },
    ));
    r.extend(issue(2_000, 4, Action::FenceHost { host: "h3".into() }));
    r.push(Record::Decision(LogEntry {
        at: Time::from_millis(3_000),
        subject: vm("vm-1"),
        name: None,
        kind: LogKind::Finished {
            id: ActionId(1),
            ok: true,
            detail: "done".into(),
        },
    }));
    r.push(outcome(1, None));
    r.push(outcome(
        2,
        Some(HvError::InsufficientResources {
            host: "h2".into(),
            detail: "disk".into(),
        }),
    ));
    let a = alarm(
        3_500,
        AlarmKind::HostUnreachable,
        Subject::Host("h3".into()),
        "h3 gone",
    );
    r.push(Record::Decision(LogEntry {
        at: Time::from_millis(3_500),
        subject: Subject::Host("h3".into()),
        name: None,
        kind: LogKind::AlarmRaised {
            alarm: AlarmKind::HostUnreachable,
            message: "h3 gone".into(),
        },
    }));
    r.push(raise(a));
    r.push(Record::Decision(LogEntry {
        at: Time::from_millis(4_000),
        subject: Subject::Cluster,
        name: None,
        kind: LogKind::AlarmCleared {
            alarm: AlarmKind::StormSuspected,
        },
    }));
    r.push(clear(4_000, AlarmKind::StormSuspected, Subject::Cluster));
    r
}

#[test]
fn every_record_kind_round_trips_through_a_reopen() {
    let dir = TempDir::new("roundtrip");
    let path = dir.file("j.db");
    let records = every_kind();
    {
        let mut j = SqliteJournal::open(&path).unwrap();
        // Two batches, to check the order across them too.
        j.append(&records[..5]).unwrap();
        j.append(&records[5..]).unwrap();
        j.append(&[]).unwrap();
    }
    let j = SqliteJournal::open(&path).unwrap();
    let back = j.records(0, 1_000).unwrap();
    assert_eq!(back.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(), records);
    assert!(back.windows(2).all(|w| w[0].0 < w[1].0), "sequence numbers grow");
    // Paging from a sequence number.
    let tail = j.records(back[9].0, 3).unwrap();
    assert_eq!(tail, back[10..13].to_vec());

    // The API's view: the supervisor's lines only, oldest first.
    let decisions = decisions(&records);
    assert_eq!(j.recent(1_000).unwrap(), decisions);
    assert_eq!(j.recent(2).unwrap(), decisions[decisions.len() - 2..].to_vec());
    assert_eq!(j.recent(0).unwrap(), vec![]);
}

/// The supervisor's lines among `records`, in order.
fn decisions(records: &[Record]) -> Vec<LogEntry> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Decision(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn snapshot(j: &SqliteJournal) -> (Vec<(u64, Record)>, Recovered, am_store::StoreStats) {
    let mut stats = j.stats().unwrap();
    stats.db_bytes = 0;
    stats.wal_bytes = 0;
    (j.records(0, 100_000).unwrap(), j.recover().unwrap(), stats)
}

#[test]
fn a_failing_batch_stores_nothing() {
    let dir = TempDir::new("atomic");
    let path = dir.file("j.db");
    let mut j = SqliteJournal::open(&path).unwrap();
    let mut first = vec![transition(1_000, "vm-1", "healthy", "off(by alice)")];
    first.extend(issue(1_000, 1, reset("vm-2")));
    first.push(raise(alarm(
        1_000,
        AlarmKind::RestartLimit,
        vm("vm-2"),
        "too many",
    )));
    j.append(&first).unwrap();
    let before = snapshot(&j);

    // A batch that fails half-way at the SQL level: its intent reuses a journaled id (primary
    // key), after records that touch every table.
    let mut dup = vec![
        transition(2_000, "vm-1", "off(by alice)", "healthy"),
        clear(2_000, AlarmKind::RestartLimit, vm("vm-2")),
        outcome(1, None),
    ];
    dup.extend(issue(2_000, 2, power_on("vm-3")));
    dup.extend(issue(2_000, 1, power_on("vm-4")));
    dup.push(note(2_000, Subject::Cluster, "after"));
    let err = j.append_batch(&dup).unwrap_err();
    assert!(matches!(err, StoreError::Sqlite { .. }), "{err}");
    assert!(err.to_string().contains("j.db"), "{err}");
    assert_eq!(snapshot(&j), before);

    // A batch that fails before SQLite sees the bad value: an id beyond SQLite's integers.
    let mut wide = vec![note(3_000, Subject::Cluster, "x"), outcome(1, None)];
    wide.push(Record::Intent {
        id: ActionId(u64::MAX),
        action: reset("vm-9"),
        vm: None,
    });
    let err = j.append_batch(&wide).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::OutOfRange {
                what: "action id",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(snapshot(&j), before);

    // A time beyond SQLite's integers, through the trait.
    let late = [outcome(1, None), note(u64::MAX, Subject::Cluster, "late")];
    let err = j.append(&late).unwrap_err();
    assert!(
        matches!(&err, JournalError::Storage(m) if m.contains("time")),
        "{err}"
    );
    assert_eq!(snapshot(&j), before);

    // The same state after a reopen, and the journal still takes good batches.
    drop(j);
    let mut j = SqliteJournal::open(&path).unwrap();
    assert_eq!(snapshot(&j), before);
    j.append(&[outcome(1, None)]).unwrap();
    assert!(j.recover().unwrap().unfinished.is_empty());
}

#[test]
fn recover_after_reopen_gives_exactly_what_a_restart_needs() {
    let dir = TempDir::new("recover");
    let path = dir.file("j.db");
    {
        let mut j = SqliteJournal::open(&path).unwrap();
        assert_eq!(
            j.recover().unwrap(),
            Recovered {
                next_action_id: 1,
                ..Recovered::default()
            }
        );
        let mut b = vec![transition(1_000, "vm-a", "healthy", "off(by alice)")];
        b.push(transition(1_000, "vm-b", "healthy", "off(by bob)"));
        b.push(transition(1_000, "vm-c", "off-unexplained", "off"));
        b.extend(issue(1_000, 1, reset("vm-1")));
        b.extend(issue(1_000, 2, power_on("vm-2")));
        b.extend(issue(
            1_000,
            3,
            Action::MigrateCold {
                vm: "vm-3".into(),
                to: "h2".into(),
            },
        ));
        b.push(raise(alarm(
            1_000,
            AlarmKind::HostUnreachable,
            Subject::Host("h1".into()),
            "h1 down",
        )));
        b.push(raise(alarm(
            1_000,
            AlarmKind::StormSuspected,
            Subject::Cluster,
            "storm",
        )));
        j.append(&b).unwrap();

        j.append(&[outcome(1, None)]).unwrap();
        let mut b = vec![transition(5_000, "vm-b", "off(by bob)", "healthy")];
        b.push(transition(5_000, "vm-a", "off(by alice)", "off(by carol)"));
        b.extend(issue(5_000, 4, reset("vm-1")));
        b.extend(issue(
            5_500,
            5,
            Action::Failover {
                vm: "vm-5".into(),
                to: "h2".into(),
            },
        ));
        b.push(clear(5_000, AlarmKind::StormSuspected, Subject::Cluster));
        b.push(raise(alarm(
            6_000,
            AlarmKind::HostUnreachable,
            Subject::Host("h1".into()),
            "h1 still down",
        )));
        b.push(raise(alarm(
            6_000,
            AlarmKind::RecoveryFailed,
            vm("vm-3"),
            "ladder done",
        )));
        j.append(&b).unwrap();
        j.append(&[outcome(3, Some(HvError::Timeout { op: "migrate".into() }))])
            .unwrap();
        // An outcome of an action this journal never saw: kept in the audit trail, nothing else.
        j.append(&[outcome(77, None)]).unwrap();
    }
    let j = SqliteJournal::open(&path).unwrap();
    let r = j.recover().unwrap();
    assert_eq!(r.next_action_id, 6);
    assert_eq!(
        r.unfinished,
        vec![
            (ActionId(2), power_on("vm-2")),
            (ActionId(4), reset("vm-1")),
            (
                ActionId(5),
                Action::Failover {
                    vm: "vm-5".into(),
                    to: "h2".into()
                }
            ),
        ]
    );
    assert_eq!(
        r.active_alarms,
        vec![
            alarm(
                6_000,
                AlarmKind::HostUnreachable,
                Subject::Host("h1".into()),
                "h1 still down"
            ),
            alarm(6_000, AlarmKind::RecoveryFailed, vm("vm-3"), "ladder done"),
        ]
    );
    assert_eq!(
        r.user_offs,
        BTreeMap::from([(VmId::from("vm-a"), "carol".to_string())]),
        "bob's VM left the state; a plain `off` names no user"
    );
    assert_eq!(
        r.restarts,
        BTreeMap::from([
            (
                VmId::from("vm-1"),
                vec![Time::from_millis(1_000), Time::from_millis(5_000)]
            ),
            (VmId::from("vm-2"), vec![Time::from_millis(1_000)]),
        ])
    );
    assert_eq!(r.last_time, Time::from_millis(6_000));
    let stats = j.stats().unwrap();
    assert_eq!(stats.intents, 5);
    assert_eq!(stats.unfinished_intents, 3);
    assert_eq!(stats.active_alarms, 2);
    assert_eq!(stats.user_offs, 1);
    assert_eq!(stats.restarts, 3);
    assert_eq!(stats.schema_version, am_store::SCHEMA_VERSION);
    assert!(stats.db_bytes > 0);
}

#[test]
fn an_intent_takes_the_time_of_its_issued_line() {
    let dir = TempDir::new("times");
    let mut j = SqliteJournal::open(dir.file("j.db")).unwrap();
    j.append(&[note(7_000, Subject::Cluster, "tick")]).unwrap();
    // No `Issued` line: the latest time journaled.
    j.append(&[Record::Intent {
        id: ActionId(1),
        action: reset("vm-1"),
        vm: None,
    }])
    .unwrap();
    j.append(&issue(9_000, 2, reset("vm-1"))).unwrap();
    let r = j.recover().unwrap();
    assert_eq!(
        r.restarts[&VmId::from("vm-1")],
        vec![Time::from_millis(7_000), Time::from_millis(9_000)]
    );
}

#[test]
fn the_backup_catalog_follows_intents_and_outcomes() {
    let dir = TempDir::new("backups");
    let mut j = SqliteJournal::open(dir.file("j.db")).unwrap();
    let mut b = Vec::new();
    b.extend(issue(
        1_000,
        1,
        Action::CreateSnapshot {
            vm: "vm-1".into(),
            name: "am-1".into(),
        },
    ));
    b.extend(issue(
        1_000,
        2,
        Action::Clone {
            vm: "vm-1".into(),
            name: "vm-1-clone".into(),
            host: "h2".into(),
            datastore: None,
        },
    ));
    b.extend(issue(
        1_000,
        3,
        Action::CreateSnapshot {
            vm: "vm-2".into(),
            name: "am-2".into(),
        },
    ));
    b.extend(issue(
        1_000,
        4,
        Action::RemoveSnapshot {
            vm: "vm-2".into(),
            snapshot: "snap-0".into(),
        },
    ));
    j.append(&b).unwrap();
    let busy = HvError::Busy {
        id: "vm-1".into(),
        detail: "task running".into(),
    };
    j.append(&[outcome(1, None), outcome(2, Some(busy.clone()))])
        .unwrap();

    let all = j.backups(None).unwrap();
    assert_eq!(all.len(), 3, "remove_snapshot is not a backup");
    assert_eq!(all[0].name, "am-1");
    assert_eq!(all[0].kind, BackupKind::Snapshot);
    assert_eq!(all[0].state, BackupState::Done);
    assert_eq!(all[0].requested_at, Time::from_millis(1_000));
    assert_eq!(
        all[1].kind,
        BackupKind::Clone {
            host: "h2".into(),
            datastore: None
        }
    );
    assert_eq!(all[1].state, BackupState::Failed(busy));
    assert_eq!(all[2].state, BackupState::Pending);
    let vm2 = j.backups(Some(&"vm-2".into())).unwrap();
    assert_eq!(vm2.len(), 1);
    assert_eq!(vm2[0].action, ActionId(3));
}

#[test]
fn errors_name_the_file_and_say_what_is_wrong() {
    let dir = TempDir::new("errors");

    let missing = dir.file("no-such-dir/j.db");
    let err = SqliteJournal::open(&missing).unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err}");
    assert!(err.to_string().contains("no-such-dir/j.db"), "{err}");

    let err = SqliteJournal::open(dir.path()).unwrap_err();
    assert!(
        err.to_string().contains(&dir.path().display().to_string()),
        "{err}"
    );

    let text = dir.file("notes.txt");
    std::fs::write(
        &text,
        "this is not a database, just some text long enough ".repeat(20),
    )
    .unwrap();
    let err = SqliteJournal::open(&text).unwrap_err();
    assert!(matches!(err, StoreError::NotAJournal { .. }), "{err}");
    assert!(
        err.to_string().contains("notes.txt") && err.to_string().contains("not an SQLite database"),
        "{err}"
    );
    assert!(
        std::fs::read_to_string(&text).unwrap().starts_with("this is not"),
        "left as it was"
    );

    let other = dir.file("other.db");
    {
        let c = rusqlite::Connection::open(&other).unwrap();
        c.execute_batch("CREATE TABLE customers (id INTEGER PRIMARY KEY)")
            .unwrap();
    }
    let err = SqliteJournal::open(&other).unwrap_err();
    assert!(matches!(err, StoreError::NotAJournal { .. }), "{err}");
    assert!(err.to_string().contains("another application"), "{err}");

    let newer = dir.file("newer.db");
    drop(SqliteJournal::open(&newer).unwrap());
    {
        let c = rusqlite::Connection::open(&newer).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
    }
    let err = SqliteJournal::open(&newer).unwrap_err();
    assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
    assert!(err.to_string().contains("newer.db"), "{err}");

    // An empty file (created by `touch`) is a new journal.
    let empty = dir.file("empty.db");
    std::fs::write(&empty, b"").unwrap();
    let j = SqliteJournal::open(&empty).unwrap();
    assert_eq!(j.stats().unwrap().schema_version, am_store::SCHEMA_VERSION);
    assert_eq!(j.quick_check().unwrap(), Ok(()));
}

/// A failover journaled with the VM it moves (its `.vmx` path): after a restart the journal says
/// which VMs were being moved, as the manager saw them, so a VM registered anew under another id
/// is found again. The VM goes when the outcome arrives.
#[test]
fn unfinished_moves_keep_the_vm_they_move() {
    let dir = TempDir::new("moving");
    let path = dir.file("j.db");
    let mut j = SqliteJournal::open(&path).unwrap();
    let failover = Action::Failover {
        vm: "vm-42".into(),
        to: "host-2".into(),
    };
    let mut vm = am_core::Vm::new("vm-42", am_core::Resources::new(0, 512), "host-1");
    vm.config_path = Some("[nfs] web/web.vmx".into());
    j.append(&issue(1_000, 7, failover.clone())).unwrap();
    j.append(&[Record::Intent {
        id: ActionId(8),
        action: failover.clone(),
        vm: Some(Box::new(vm.clone())),
    }])
    .unwrap();
    drop(j);
    let j = SqliteJournal::open(&path).unwrap();
    let r = j.recover().unwrap();
    assert_eq!(r.moving.get(&ActionId(8)), Some(&vm));
    assert!(!r.moving.contains_key(&ActionId(7)), "no VM journaled with it");
    drop(j);
    let mut j = SqliteJournal::open(&path).unwrap();
    j.append(&[outcome(8, None)]).unwrap();
    assert!(j.recover().unwrap().moving.is_empty());
}

/// A journal written by the first schema (no `intents.subject`) is migrated when opened.
#[test]
fn a_version_1_journal_is_migrated() {
    let dir = TempDir::new("migrate");
    let path = dir.file("j.db");
    {
        let mut j = SqliteJournal::open(&path).unwrap();
        j.append(&issue(1_000, 3, reset("vm-1"))).unwrap();
    }
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch("ALTER TABLE intents DROP COLUMN subject; PRAGMA user_version = 1;")
            .unwrap();
    }
    let j = SqliteJournal::open(&path).unwrap();
    assert_eq!(j.stats().unwrap().schema_version, am_store::SCHEMA_VERSION);
    assert_eq!(j.recover().unwrap().unfinished.len(), 1);
}

#[test]
fn the_file_is_a_versioned_wal_journal() {
    let dir = TempDir::new("pragmas");
    let path = dir.file("j.db");
    let mut j = SqliteJournal::open(&path).unwrap();
    j.append(&[note(1, Subject::Cluster, "x")]).unwrap();
    let c = rusqlite::Connection::open(&path).unwrap();
    let get = |p: &str| -> i64 { c.pragma_query_value(None, p, |r| r.get(0)).unwrap() };
    assert_eq!(get("application_id"), am_store::APPLICATION_ID);
    assert_eq!(get("user_version"), am_store::SCHEMA_VERSION);
    assert_eq!(get("auto_vacuum"), 2, "incremental");
    let mode: String = c.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    // Reopening an existing journal changes nothing.
    drop(j);
    let j = SqliteJournal::open(&path).unwrap();
    assert_eq!(j.records(0, 10).unwrap().len(), 1);
}

#[test]
fn prune_keeps_what_a_restart_needs() {
    let dir = TempDir::new("prune");
    let path = dir.file("j.db");
    let mut j = SqliteJournal::open(&path).unwrap();
    // Ids 1..=100: every tenth never finishes; user-off marks and alarms early on.
    j.append(&[
        transition(0, "vm-off", "healthy", "off(by alice)"),
        raise(alarm(
            0,
            AlarmKind::HostRemoved,
            Subject::Host("h9".into()),
            "gone",
        )),
    ])
    .unwrap();
    for id in 1..=100u64 {
        let mut b = issue(id * 1_000, id, reset(&format!("vm-{}", id % 4))).to_vec();
        if id % 10 != 0 {
            b.push(outcome(id, None));
        }
        j.append(&b).unwrap();
    }
    let before = j.recover().unwrap();
    assert_eq!(before.unfinished.len(), 10);
    assert_eq!(j.stats().unwrap().audit_rows, 2 + 100 * 2 + 90);

    let pruned = j.prune(50, 20).unwrap();
    assert_eq!(pruned.audit_rows, 292 - 50);
    assert_eq!(pruned.intents, 90 - 20);
    assert_eq!(pruned.restarts, 0, "25 restarts per VM: within the limit");
    let stats = j.stats().unwrap();
    assert_eq!(stats.audit_rows, 50);
    assert_eq!(stats.intents, 30);
    assert_eq!(
        j.recover().unwrap(),
        before,
        "unfinished, alarms, user-offs, next id kept"
    );
    // The newest rows are the ones kept.
    let kept = j.records(0, 100).unwrap();
    assert_eq!(
        kept.last().unwrap().1,
        Record::Intent {
            id: ActionId(100),
            action: reset("vm-0"),
            vm: None,
        }
    );

    let pruned = j.prune(0, 0).unwrap();
    assert_eq!(pruned.audit_rows, 50);
    assert_eq!(pruned.intents, 20);
    let after = j.recover().unwrap();
    assert_eq!(after, before, "even with nothing kept");
    assert_eq!(after.next_action_id, 101);
    assert_eq!(j.stats().unwrap().intents, 10);
    assert_eq!(j.recent(10).unwrap(), vec![]);

    // Sequence numbers are not reused after the audit log was emptied.
    let last_seq = kept.last().unwrap().0;
    j.append(&[note(200_000, Subject::Cluster, "later")]).unwrap();
    assert!(j.records(0, 10).unwrap()[0].0 > last_seq);
    drop(j);
    assert_eq!(
        SqliteJournal::open(&path)
            .unwrap()
            .recover()
            .unwrap()
            .next_action_id,
        101
    );
}

#[test]
fn prune_bounds_restarts_and_backups_per_vm() {
    let dir = TempDir::new("prune-per-vm");
    let mut j = SqliteJournal::open(dir.file("j.db")).unwrap();
    let n = am_store::RESTARTS_KEPT_PER_VM as u64 + 10;
    let mut b = Vec::new();
    for i in 1..=n {
        b.extend(issue(i * 1_000, i, power_on("vm-1")));
        b.push(outcome(i, None));
        b.extend(issue(
            i * 1_000,
            1_000 + i,
            Action::CreateSnapshot {
                vm: "vm-1".into(),
                name: format!("s{i}"),
            },
        ));
        if i != 1 {
            b.push(outcome(1_000 + i, None));
        }
    }
    j.append(&b).unwrap();
    let pruned = j.prune(usize::MAX, usize::MAX).unwrap();
    assert_eq!(pruned.audit_rows, 0);
    assert_eq!(pruned.intents, 0);
    assert_eq!(pruned.restarts, 10);
    let restarts = &j.recover().unwrap().restarts[&VmId::from("vm-1")];
    assert_eq!(restarts.len(), am_store::RESTARTS_KEPT_PER_VM);
    assert_eq!(
        restarts.first(),
        Some(&Time::from_millis(11_000)),
        "the newest are kept"
    );
    let backups = j.backups(None).unwrap();
    assert_eq!(
        backups.len(),
        am_store::BACKUPS_KEPT_PER_VM + 1,
        "plus the pending one"
    );
    assert_eq!(backups[0].state, BackupState::Pending);
    assert_eq!(backups[0].name, "s1");
}

#[test]
fn a_step_journaled_with_its_lines_apart_is_stored_as_one_batch() {
    let dir = TempDir::new("step");
    let (lines, rest): (Vec<Record>, Vec<Record>) = every_kind()
        .into_iter()
        .partition(|r| matches!(r, Record::Decision(_)));
    let log = decisions(&lines);
    assert!(!log.is_empty() && !rest.is_empty());
    let mut whole = SqliteJournal::open(dir.file("whole.db")).unwrap();
    whole.append(&[lines, rest.clone()].concat()).unwrap();
    let mut step = SqliteJournal::open(dir.file("step.db")).unwrap();
    step.append_step(&log, &rest).unwrap();
    step.append_step(&[], &[]).unwrap();
    assert_eq!(
        snapshot(&step),
        snapshot(&whole),
        "the same records, tables and counts"
    );
}
