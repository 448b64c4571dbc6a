//! The fold of records in memory ([`am_store::Recovery`], what a journal that keeps only records
//! recovers with) gives what the SQLite journal's tables give, after every batch.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use am_core::Journal;
use am_store::{Recovery, SqliteJournal, sample};
use common::TempDir;

#[test]
fn the_fold_recovers_what_sqlite_recovers_after_every_batch() {
    let dir = TempDir::new("fold");
    let mut sqlite = SqliteJournal::open(dir.file("j.db")).unwrap();
    let mut fold = Recovery::default();
    assert_eq!(fold.recovered(), sqlite.recover().unwrap(), "empty");
    for k in 1..=120 {
        let batch = sample::batch(k);
        sqlite.append(&batch).unwrap();
        fold.apply(&batch);
        let want = sqlite.recover().unwrap();
        assert_eq!(fold.recovered(), want, "after batch {k}");
    }
    let end = fold.recovered();
    assert!(!end.unfinished.is_empty() && !end.moving.is_empty(), "{end:?}");
    assert!(
        !end.active_alarms.is_empty() && !end.user_offs.is_empty(),
        "{end:?}"
    );
    assert!(!end.restarts.is_empty(), "{end:?}");
    // A checkpoint of the fold is the fold.
    let json = serde_json::to_string(&fold).unwrap();
    let back: Recovery = serde_json::from_str(&json).unwrap();
    assert_eq!(back.recovered(), end);
}

#[test]
fn prune_keeps_the_newest_restarts_like_sqlite() {
    let dir = TempDir::new("fold-prune");
    let mut sqlite = SqliteJournal::open(dir.file("j.db")).unwrap();
    let mut fold = Recovery::default();
    for id in 1..=50u64 {
        let batch = common::issue(id * 10, id, common::reset("vm-1"));
        sqlite.append(&batch).unwrap();
        fold.apply(&batch);
    }
    sqlite.prune(1_000, 1_000).unwrap();
    fold.prune();
    let got = fold.recovered();
    assert_eq!(got.restarts, sqlite.recover().unwrap().restarts);
    assert_eq!(
        got.restarts[&am_core::VmId::from("vm-1")].len(),
        am_store::RESTARTS_KEPT_PER_VM
    );
}
