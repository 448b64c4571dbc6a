//! Retention: under a long run of appends with a periodic prune, row counts and the file's size
//! stop growing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use am_core::{Action, AlarmKind, HvError, Record, Subject};
use am_store::SqliteJournal;
use common::*;

/// One supervisor step's worth of records: an action issued, the outcome of the one before,
/// state changes and alarms on a rotating set of 20 VMs.
fn step(i: u64) -> Vec<Record> {
    let v = format!("vm-{}", i % 20);
    let action = match i % 4 {
        0 => reset(&v),
        1 => power_on(&v),
        2 => Action::CreateSnapshot {
            vm: v.as_str().into(),
            name: format!("am-{i}"),
        },
        _ => Action::MigrateCold {
            vm: v.as_str().into(),
            to: "h2".into(),
        },
    };
    let at = i * 1_000;
    let mut b = vec![
        note(
            at,
            vm(&v),
            &format!("step {i}: guest not answering, evidence {}", "x".repeat(60)),
        ),
        transition(
            at,
            &v,
            "healthy",
            if i % 7 == 0 {
                "off(by alice)"
            } else {
                "recovering(restart)"
            },
        ),
    ];
    b.extend(issue(at, i, action));
    if i > 1 {
        let error = (i % 5 == 0).then(|| HvError::Timeout { op: "reset".into() });
        b.push(outcome(i - 1, error));
    }
    let key = (AlarmKind::RestartLimit, vm(&format!("vm-{}", i % 13)));
    b.push(if i % 2 == 0 {
        raise(alarm(at, key.0, key.1, "3 restarts within 600s"))
    } else {
        clear(at, key.0, key.1)
    });
    b.push(note(at, Subject::Cluster, "tick"));
    b
}

#[test]
fn under_a_long_append_loop_the_file_stops_growing() {
    const STEPS: u64 = 3_000;
    const PRUNE_EVERY: u64 = 100;
    const KEEP_AUDIT: usize = 1_000;
    const KEEP_FINISHED: usize = 200;
    let dir = TempDir::new("retention");
    let path = dir.file("j.db");
    let mut j = SqliteJournal::open(&path).unwrap();
    let started = std::time::Instant::now();
    let mut sizes = Vec::new();
    for i in 1..=STEPS {
        j.append_batch(&step(i)).unwrap();
        if i % PRUNE_EVERY == 0 {
            j.prune(KEEP_AUDIT, KEEP_FINISHED).unwrap();
            let s = j.stats().unwrap();
            // Bounded rows: the limits plus what a restart needs (one unfinished intent, marks
            // and alarms of at most 20 VMs), whatever the number of steps so far.
            assert!(s.audit_rows <= KEEP_AUDIT as u64, "{s:?}");
            assert!(s.intents <= KEEP_FINISHED as u64 + 1, "{s:?}");
            assert_eq!(s.unfinished_intents, 1, "{s:?}");
            assert!(s.user_offs <= 20 && s.active_alarms <= 13, "{s:?}");
            assert!(s.restarts <= 20 * am_store::RESTARTS_KEPT_PER_VM as u64, "{s:?}");
            assert!(
                s.backups <= 20 * (am_store::BACKUPS_KEPT_PER_VM as u64 + 1),
                "{s:?}"
            );
            sizes.push(s.file_bytes());
        }
    }
    let elapsed = started.elapsed();
    // The file reaches its size once the per-VM tables are full, then stays there: the last
    // third of the run is no bigger than the middle third.
    let third = sizes.len() / 3;
    let middle = sizes[third..2 * third].iter().copied().max().unwrap();
    let last = sizes[2 * third..].iter().copied().max().unwrap();
    println!(
        "{STEPS} appends of {} records in {elapsed:?} ({:.2} ms each); file bytes after prunes: \
         first {}, middle third max {middle}, last third max {last}",
        step(2).len(),
        elapsed.as_secs_f64() * 1_000.0 / STEPS as f64,
        sizes[0],
    );
    assert!(last <= middle + 64 * 1024, "file grew: {sizes:?}");

    // Everything a restart needs is still there.
    let r = j.recover().unwrap();
    assert_eq!(r.next_action_id, STEPS + 1);
    assert_eq!(r.unfinished.len(), 1);
    assert!(!r.user_offs.is_empty());
    assert_eq!(j.quick_check().unwrap(), Ok(()));
}
