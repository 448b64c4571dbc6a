//! # am-store
//!
//! The journal of the Availability Manager in an embedded SQLite database (bundled, no system
//! library needed). [`SqliteJournal`] implements [`am_core::Journal`]: the daemon appends each
//! supervisor step's audit lines and action intents *before* the actions run, alarms as they
//! change, and each action's outcome as it arrives.
//!
//! - **Durable and atomic.** The file is in write-ahead-log mode with `synchronous=FULL`: an
//!   `append` that returned is on disk, and each `append` is one transaction, so a daemon killed
//!   at any moment (`kill -9`, power loss) leaves whole batches only.
//! - **Built for the restart.** As records are appended, the same transaction maintains tables for
//!   what a restarted daemon asks: intents not yet finished, active alarms, VMs a user switched
//!   off, restart times per VM, and the backup catalog. [`SqliteJournal::recover`] reads them.
//! - **Bounded.** [`SqliteJournal::prune`] keeps the newest audit rows and finished intents up to
//!   given limits and never drops what a restart needs.
//!
//! The schema is versioned (`PRAGMA user_version`, see [`SCHEMA_VERSION`]) and migrated on open;
//! a file that is not a journal is refused with an error naming it.
//!
//! ```
//! use am_core::{Action, ActionId, Journal, LogEntry, LogKind, Record, Subject, Time, VmId};
//! use am_store::SqliteJournal;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = std::env::temp_dir().join(format!("am-store-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let path = dir.join("journal.db");
//! # let _ = std::fs::remove_file(&path);
//!
//! let mut journal = SqliteJournal::open(&path)?;
//! let reset = Action::Reset { vm: "vm-7".into() };
//! journal.append(&[
//!     Record::Decision(LogEntry {
//!         at: Time::from_secs(13),
//!         subject: Subject::Vm("vm-7".into()),
//!         name: None,
//!         kind: LogKind::Issued { id: ActionId(4), action: reset.clone() },
//!     }),
//!     Record::Intent { id: ActionId(4), action: reset.clone(), vm: None },
//! ])?;
//! drop(journal); // the daemon dies before the outcome arrives
//!
//! let journal = SqliteJournal::open(&path)?;
//! let recovered = journal.recover()?;
//! assert_eq!(recovered.unfinished, vec![(ActionId(4), reset)]);
//! assert_eq!(recovered.next_action_id, 5);
//! assert_eq!(recovered.restarts[&VmId::from("vm-7")], vec![Time::from_secs(13)]);
//! # drop(journal);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```
//!
//! ## Schema (version 1)
//!
//! | table | one row per | written from |
//! | --- | --- | --- |
//! | `audit (seq, at_ms, wall_ms, subject, kind, detail, record)` | record, in order | every record; `record` is its JSON |
//! | `intents (id, op, vm, host, action, issued_seq, issued_at_ms, finished, finished_seq, error)` | action | `Intent` inserts, `Outcome` finishes |
//! | `alarms (kind, subject, severity, alarm, raised_seq)` | active alarm | `Alarm` raise upserts, clear deletes |
//! | `user_offs (vm, user, since_ms, seq)` | VM off by a user | a VM's `Transition` to `off(by USER)`; any other transition of it deletes |
//! | `restarts (action_id, vm, op, at_ms)` | restart | `Intent` of `reset` or `power_on` |
//! | `backups (action_id, vm, op, name, host, datastore, requested_at_ms, state, error, finished_seq)` | snapshot or clone asked for | `Intent` of `create_snapshot` or `clone`, then its `Outcome` |
//! | `meta (key, value)` | counter | `max_action_id`, `last_at_ms` (survive pruning) |
//!
//! `subject` is `vm:<id>`, `host:<id>`, `cluster` or `manager`. Times (`at_ms`) are the daemon's
//! [`Time`](am_core::Time); intents and outcomes carry none, so an intent gets the time of its
//! `Issued` audit line in the same batch and an outcome the latest time journaled before it.
//! `wall_ms` is the wall clock when the batch was written.
//!
//! Known gap: an `Outcome` record carries only the error, so the backup catalog knows a snapshot
//! or clone by the name it was requested with, not by the id the hypervisor gave it.

mod error;
mod recovery;
pub mod sample;
mod schema;
mod store;
mod write;

pub use error::StoreError;
pub use recovery::Recovery;
pub use schema::{APPLICATION_ID, SCHEMA_VERSION};
pub use store::{
    BACKUPS_KEPT_PER_VM, Backup, BackupKind, BackupState, Pruned, RESTARTS_KEPT_PER_VM, Recovered,
    SqliteJournal, StoreStats,
};
