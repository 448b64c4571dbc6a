//! [`SqliteJournal`]: opening, appending, the queries of a restarted daemon, and retention.

use crate::error::{Fail, StoreError};
use crate::schema::{self, APPLICATION_ID, SCHEMA_VERSION};
use crate::write::{Batch, int, uint};
use am_core::{
    Action, ActionId, Alarm, DatastoreId, HostId, HvError, Journal, JournalError, LogEntry, Record, Time,
    VmId,
};
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior, params};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How many restart times [`SqliteJournal::prune`] keeps per VM (the newest). The supervisor's
/// restart limit looks at a window of a few restarts; this is far more than it needs.
pub const RESTARTS_KEPT_PER_VM: usize = 32;

/// How many finished (made or failed) backups [`SqliteJournal::prune`] keeps per VM (the
/// newest). Pending ones are always kept.
pub const BACKUPS_KEPT_PER_VM: usize = 32;

/// How long a statement waits for another connection's lock (an operator reading the file)
/// before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The write-ahead log is truncated to this size after a checkpoint.
const WAL_SIZE_LIMIT: i64 = 4 * 1024 * 1024;

/// What a restarted daemon needs to know to carry on (see [`SqliteJournal::recover`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recovered {
    /// The id to give the next action: the largest id ever journaled plus one (ids start at 1,
    /// so an empty journal gives 1). Never goes down, even when old intents are pruned.
    pub next_action_id: u64,
    /// Intents without an outcome, by id: the actions that were (perhaps) running when the
    /// daemon stopped. Reconcile each with the real state before doing anything on its VM.
    pub unfinished: Vec<(ActionId, Action)>,
    /// The VMs unfinished intents were moving, as the manager saw them when deciding (only for
    /// actions that register a VM anew), by action id.
    pub moving: BTreeMap<ActionId, am_core::Vm>,
    /// The alarms raised and not cleared, in the order they were first raised.
    pub active_alarms: Vec<Alarm>,
    /// VMs a user switched off (state `off(by USER)`), and by whom. Never failed over.
    pub user_offs: BTreeMap<VmId, String>,
    /// When each VM was restarted (reset or power-on intents), oldest first; at most
    /// [`RESTARTS_KEPT_PER_VM`] per VM after a prune.
    pub restarts: BTreeMap<VmId, Vec<Time>>,
    /// The latest time journaled ([`Time::ZERO`] for an empty journal). Times are the daemon's
    /// clock of the run that wrote them.
    pub last_time: Time,
}

/// Row counts and file sizes (see [`SqliteJournal::stats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// The schema version of the file.
    pub schema_version: i64,
    /// Rows of the audit log (every record, until pruned).
    pub audit_rows: u64,
    /// Intents kept, finished or not.
    pub intents: u64,
    /// Intents without an outcome.
    pub unfinished_intents: u64,
    /// Active alarms.
    pub active_alarms: u64,
    /// VMs switched off by a user.
    pub user_offs: u64,
    /// Restart times kept.
    pub restarts: u64,
    /// Backup catalog entries.
    pub backups: u64,
    /// Size of the database file, in bytes.
    pub db_bytes: u64,
    /// Size of its write-ahead log (`<file>-wal`), in bytes.
    pub wal_bytes: u64,
}

impl StoreStats {
    /// The database and its write-ahead log together, in bytes.
    pub fn file_bytes(&self) -> u64 {
        self.db_bytes + self.wal_bytes
    }
}

/// What one [`SqliteJournal::prune`] deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Audit rows.
    pub audit_rows: u64,
    /// Finished intents.
    pub intents: u64,
    /// Restart times.
    pub restarts: u64,
    /// Finished backup catalog entries.
    pub backups: u64,
}

/// What kind of backup a catalog entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackupKind {
    /// A snapshot of the VM.
    Snapshot,
    /// A powered-off clone of the VM.
    Clone {
        /// Where the clone is registered.
        host: HostId,
        /// Where its files go (`None`: the source's datastore).
        datastore: Option<DatastoreId>,
    },
}

/// Whether a backup was made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackupState {
    /// Requested; no outcome yet.
    Pending,
    /// The action succeeded. The snapshot's or clone's id is not known: the journal's outcome
    /// record carries only the error (look it up by `name` in the inventory).
    Done,
    /// The action failed.
    Failed(HvError),
}

/// One entry of the backup catalog: a snapshot or clone the manager asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backup {
    /// The action that made it.
    pub action: ActionId,
    /// The VM backed up.
    pub vm: VmId,
    /// Snapshot or clone.
    pub kind: BackupKind,
    /// The snapshot's or clone's name.
    pub name: String,
    /// When it was requested.
    pub requested_at: Time,
    /// Whether it was made.
    pub state: BackupState,
}

/// The journal in an SQLite database file (write-ahead log, `synchronous=FULL`).
///
/// Every [`append`](Journal::append) is one transaction: all its records are stored, or none
/// (a crash, a full disk or a bad record leaves the file as it was before the call). An append
/// that returned is on disk.
#[derive(Debug)]
pub struct SqliteJournal {
    conn: Connection,
    path: PathBuf,
    last_at: Time,
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn wal_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push("-wal");
    PathBuf::from(p)
}

fn file_size(path: &Path) -> Result<u64, std::io::Error> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(m.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

impl SqliteJournal {
    /// Opens the journal at `path`, creating it (and its schema) if the file does not exist, and
    /// migrating an older schema.
    ///
    /// Fails with [`StoreError::Open`] when the file cannot be opened or created,
    /// [`StoreError::NotAJournal`] when it is not an SQLite database or is another application's,
    /// and [`StoreError::TooNew`] when a newer program wrote it.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let open_err = |source: rusqlite::Error| StoreError::Open {
            path: path.clone(),
            source,
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(&path, flags).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;

        // Reading the header tells an SQLite file from anything else.
        let probe = conn.query_row(
            "SELECT (SELECT application_id FROM pragma_application_id),
                    (SELECT user_version FROM pragma_user_version),
                    (SELECT count(*) FROM sqlite_schema)",
            [],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)),
        );
        let (app_id, version, objects) = match probe {
            Ok(v) => v,
            Err(e) if e.sqlite_error_code() == Some(ErrorCode::NotADatabase) => {
                return Err(StoreError::NotAJournal {
                    path,
                    detail: "not an SQLite database".into(),
                });
            }
            Err(e) => return Err(open_err(e)),
        };
        let fresh = app_id == 0 && version == 0 && objects == 0;
        if !fresh && app_id != APPLICATION_ID {
            return Err(StoreError::NotAJournal {
                path,
                detail: format!(
                    "an SQLite database of another application (application_id {app_id:#x}, \
                     {objects} schema objects)"
                ),
            });
        }
        if version > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path,
                found: version,
                supported: SCHEMA_VERSION,
            });
        }

        let setup = |conn: &Connection| -> rusqlite::Result<()> {
            if fresh {
                // Only takes effect before the first table exists.
                conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
            }
            let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(rusqlite::Error::InvalidParameterName(format!(
                    "journal_mode is {mode}, WAL could not be set"
                )));
            }
            conn.pragma_update(None, "synchronous", "FULL")?;
            conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
            // 128 KiB of page cache (SQLite's default is 2 MiB, 10,000 VMs' first step filled
            // it): the journal appends (a B-tree path per table and index) and reads back at
            // start; its pages are in the kernel's cache anyway.
            conn.pragma_update(None, "cache_size", -128)?;
            Ok(())
        };
        setup(&conn).map_err(open_err)?;
        schema::migrate(&mut conn, version).map_err(open_err)?;

        let last_at: i64 = conn
            .query_row("SELECT value FROM meta WHERE key = 'last_at_ms'", [], |r| {
                r.get(0)
            })
            .map_err(open_err)?;
        Ok(SqliteJournal {
            conn,
            path,
            last_at: Time::from_millis(uint(last_at)),
        })
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: impl Into<Fail>) -> StoreError {
        e.into().at(&self.path)
    }

    /// Stores `records` in one transaction and returns the audit sequence number of the last one
    /// (`None` for an empty slice, which writes nothing). [`Journal::append`] calls this.
    ///
    /// Besides the audit row of each record, the same transaction updates the tables a restarted
    /// daemon reads: intents and their outcomes, active alarms, user power-off marks, restart
    /// times and the backup catalog. An `Intent` whose id is already journaled fails the whole
    /// batch: ids must keep growing across restarts ([`Recovered::next_action_id`]).
    pub fn append_batch(&mut self, records: &[Record]) -> Result<Option<u64>, StoreError> {
        self.append_step_batch(&[], records)
    }

    /// [`SqliteJournal::append_batch`] of the audit lines `log` (as `Record::Decision`s, not
    /// copied) and then `records`: one step in one transaction. [`Journal::append_step`] calls
    /// this.
    pub fn append_step_batch(
        &mut self,
        log: &[am_core::LogEntry],
        records: &[Record],
    ) -> Result<Option<u64>, StoreError> {
        if log.is_empty() && records.is_empty() {
            return Ok(None);
        }
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| Fail::from(e).at(&path))?;
        let mut batch = Batch::new(&tx, self.last_at, wall_ms());
        let written = (|| {
            for e in log {
                batch.decision(e)?;
            }
            for r in records {
                batch.apply(r)?;
            }
            batch.finish()
        })();
        // On error the transaction rolls back when dropped.
        let (last_at, last_seq) = written.map_err(|e| e.at(&path))?;
        tx.commit().map_err(|e| Fail::from(e).at(&path))?;
        self.last_at = last_at;
        Ok(Some(uint(last_seq)))
    }

    /// What a restarted daemon needs: the next action id, the intents that never finished, the
    /// active alarms, the VMs users switched off, and the recent restarts of each VM.
    pub fn recover(&self) -> Result<Recovered, StoreError> {
        self.recover_inner().map_err(|e| self.err(e))
    }

    fn recover_inner(&self) -> Result<Recovered, Fail> {
        let meta = |key: &str| -> Result<u64, Fail> {
            let v: i64 = self
                .conn
                .query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
                    r.get(0)
                })?;
            Ok(uint(v))
        };
        let next_action_id = meta("max_action_id")?.saturating_add(1);
        let last_time = Time::from_millis(meta("last_at_ms")?);

        let mut unfinished = Vec::new();
        let mut moving = BTreeMap::new();
        let mut st = self
            .conn
            .prepare("SELECT id, action, subject FROM intents WHERE finished = 0 ORDER BY id")?;
        let mut rows = st.query([])?;
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            let json: String = row.get(1)?;
            let subject: Option<String> = row.get(2)?;
            let id = ActionId(uint(id));
            unfinished.push((id, serde_json::from_str(&json)?));
            if let Some(vm) = subject {
                moving.insert(id, serde_json::from_str(&vm)?);
            }
        }

        let mut active_alarms = Vec::new();
        let mut st = self
            .conn
            .prepare("SELECT alarm FROM alarms ORDER BY raised_seq")?;
        let mut rows = st.query([])?;
        while let Some(row) = rows.next()? {
            let json: String = row.get(0)?;
            active_alarms.push(serde_json::from_str(&json)?);
        }

        let mut user_offs = BTreeMap::new();
        let mut st = self.conn.prepare("SELECT vm, user FROM user_offs")?;
        let mut rows = st.query([])?;
        while let Some(row) = rows.next()? {
            user_offs.insert(VmId::new(row.get::<_, String>(0)?), row.get(1)?);
        }

        let mut restarts: BTreeMap<VmId, Vec<Time>> = BTreeMap::new();
        let mut st = self
            .conn
            .prepare("SELECT vm, at_ms FROM restarts ORDER BY vm, at_ms, action_id")?;
        let mut rows = st.query([])?;
        while let Some(row) = rows.next()? {
            let at: i64 = row.get(1)?;
            restarts
                .entry(VmId::new(row.get::<_, String>(0)?))
                .or_default()
                .push(Time::from_millis(uint(at)));
        }

        Ok(Recovered {
            next_action_id,
            unfinished,
            moving,
            active_alarms,
            user_offs,
            restarts,
            last_time,
        })
    }

    /// The last `limit` lines of the supervisor's audit trail (`Decision` records), oldest first:
    /// what the API shows.
    pub fn recent(&self, limit: usize) -> Result<Vec<LogEntry>, StoreError> {
        let inner = || -> Result<Vec<LogEntry>, Fail> {
            let limit = int("limit", u64::try_from(limit).unwrap_or(u64::MAX)).unwrap_or(i64::MAX);
            let mut st = self
                .conn
                .prepare("SELECT record FROM audit WHERE kind = 'decision' ORDER BY seq DESC LIMIT ?1")?;
            let mut rows = st.query(params![limit])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                let json: String = row.get(0)?;
                if let Record::Decision(e) = serde_json::from_str(&json)? {
                    out.push(e);
                }
            }
            out.reverse();
            Ok(out)
        };
        inner().map_err(|e| self.err(e))
    }

    /// Up to `limit` records with an audit sequence number greater than `after`, in order, with
    /// their sequence numbers (to page through or tail the journal; pass `0` to start at the
    /// oldest record kept).
    pub fn records(&self, after: u64, limit: usize) -> Result<Vec<(u64, Record)>, StoreError> {
        let inner = || -> Result<Vec<(u64, Record)>, Fail> {
            let after = int("sequence number", after)?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let mut st = self
                .conn
                .prepare("SELECT seq, record FROM audit WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
            let mut rows = st.query(params![after, limit])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                let seq: i64 = row.get(0)?;
                let json: String = row.get(1)?;
                out.push((uint(seq), serde_json::from_str(&json)?));
            }
            Ok(out)
        };
        inner().map_err(|e| self.err(e))
    }

    /// The backup catalog, of one VM or of all, oldest request first.
    pub fn backups(&self, vm: Option<&VmId>) -> Result<Vec<Backup>, StoreError> {
        let inner = || -> Result<Vec<Backup>, Fail> {
            let mut st = self.conn.prepare(
                "SELECT action_id, vm, op, name, host, datastore, requested_at_ms, state, error
                 FROM backups WHERE ?1 IS NULL OR vm = ?1 ORDER BY action_id",
            )?;
            let mut rows = st.query(params![vm.map(|v| v.as_str())])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                let id: i64 = row.get(0)?;
                let op: String = row.get(2)?;
                let host: Option<String> = row.get(4)?;
                let datastore: Option<String> = row.get(5)?;
                let at: i64 = row.get(6)?;
                let state: String = row.get(7)?;
                let error: Option<String> = row.get(8)?;
                let kind = match (op.as_str(), host) {
                    ("clone", Some(host)) => BackupKind::Clone {
                        host: HostId::new(host),
                        datastore: datastore.map(DatastoreId::new),
                    },
                    _ => BackupKind::Snapshot,
                };
                let state = match (state.as_str(), error) {
                    ("pending", _) => BackupState::Pending,
                    (_, Some(e)) => BackupState::Failed(serde_json::from_str(&e)?),
                    _ => BackupState::Done,
                };
                out.push(Backup {
                    action: ActionId(uint(id)),
                    vm: VmId::new(row.get::<_, String>(1)?),
                    kind,
                    name: row.get(3)?,
                    requested_at: Time::from_millis(uint(at)),
                    state,
                });
            }
            Ok(out)
        };
        inner().map_err(|e| self.err(e))
    }

    /// Row counts and the size of the file and its write-ahead log.
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        let count = |sql: &str| -> Result<u64, StoreError> {
            let n: i64 = self
                .conn
                .query_row(sql, [], |r| r.get(0))
                .map_err(|e| self.err(e))?;
            Ok(uint(n))
        };
        let size = |p: &Path| {
            file_size(p).map_err(|source| StoreError::Io {
                path: p.to_path_buf(),
                source,
            })
        };
        Ok(StoreStats {
            schema_version: self
                .conn
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .map_err(|e| self.err(e))?,
            audit_rows: count("SELECT count(*) FROM audit")?,
            intents: count("SELECT count(*) FROM intents")?,
            unfinished_intents: count("SELECT count(*) FROM intents WHERE finished = 0")?,
            active_alarms: count("SELECT count(*) FROM alarms")?,
            user_offs: count("SELECT count(*) FROM user_offs")?,
            restarts: count("SELECT count(*) FROM restarts")?,
            backups: count("SELECT count(*) FROM backups")?,
            db_bytes: size(&self.path)?,
            wal_bytes: size(&wal_path(&self.path))?,
        })
    }

    /// Retention: deletes the oldest audit rows beyond the newest `keep_audit_rows`, the oldest
    /// finished intents beyond the newest `keep_finished_intents` (by when they finished), restart
    /// times beyond [`RESTARTS_KEPT_PER_VM`] per VM and finished backups beyond
    /// [`BACKUPS_KEPT_PER_VM`] per VM. Unfinished intents, active alarms, user power-off marks,
    /// pending backups and the next action id are never touched.
    ///
    /// Then it checkpoints the write-ahead log (truncating it) and gives free pages back to the
    /// file system when more than a quarter of the file is free. The daemon calls this
    /// periodically; with fixed limits the file stops growing.
    pub fn prune(
        &mut self,
        keep_audit_rows: usize,
        keep_finished_intents: usize,
    ) -> Result<Pruned, StoreError> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| Fail::from(e).at(&path))?;
        let deleted = (|| -> Result<Pruned, Fail> {
            let keep_nth = |keep: usize| i64::try_from(keep.saturating_sub(1)).unwrap_or(i64::MAX);
            let audit_rows = if keep_audit_rows == 0 {
                tx.execute("DELETE FROM audit", [])?
            } else {
                tx.execute(
                    "DELETE FROM audit WHERE seq <
                         (SELECT seq FROM audit ORDER BY seq DESC LIMIT 1 OFFSET ?1)",
                    params![keep_nth(keep_audit_rows)],
                )?
            };
            let intents = if keep_finished_intents == 0 {
                tx.execute("DELETE FROM intents WHERE finished = 1", [])?
            } else {
                tx.execute(
                    "DELETE FROM intents WHERE finished = 1 AND finished_seq <
                         (SELECT finished_seq FROM intents WHERE finished = 1
                          ORDER BY finished_seq DESC LIMIT 1 OFFSET ?1)",
                    params![keep_nth(keep_finished_intents)],
                )?
            };
            let restarts = tx.execute(
                "DELETE FROM restarts WHERE action_id IN (
                     SELECT action_id FROM (
                         SELECT action_id, row_number() OVER (
                             PARTITION BY vm ORDER BY at_ms DESC, action_id DESC) AS n
                         FROM restarts)
                     WHERE n > ?1)",
                params![i64::try_from(RESTARTS_KEPT_PER_VM).unwrap_or(i64::MAX)],
            )?;
            let backups = tx.execute(
                "DELETE FROM backups WHERE action_id IN (
                     SELECT action_id FROM (
                         SELECT action_id, row_number() OVER (
                             PARTITION BY vm ORDER BY action_id DESC) AS n
                         FROM backups WHERE state <> 'pending')
                     WHERE n > ?1)",
                params![i64::try_from(BACKUPS_KEPT_PER_VM).unwrap_or(i64::MAX)],
            )?;
            Ok(Pruned {
                audit_rows: audit_rows as u64,
                intents: intents as u64,
                restarts: restarts as u64,
                backups: backups as u64,
            })
        })()
        .map_err(|e| e.at(&path))?;
        tx.commit().map_err(|e| Fail::from(e).at(&path))?;
        self.compact()?;
        Ok(deleted)
    }

    /// Gives free pages back when more than a quarter of the file is free, then checkpoints and
    /// truncates the write-ahead log.
    fn compact(&mut self) -> Result<(), StoreError> {
        let pragma = |name: &str| -> Result<i64, StoreError> {
            self.conn
                .pragma_query_value(None, name, |r| r.get(0))
                .map_err(|e| self.err(e))
        };
        let free = pragma("freelist_count")?;
        let pages = pragma("page_count")?;
        if free > 0 && free * 4 > pages {
            // Returns one row per page freed; stepping through them does the work.
            let mut st = self
                .conn
                .prepare("PRAGMA incremental_vacuum")
                .map_err(|e| self.err(e))?;
            let mut rows = st.query([]).map_err(|e| self.err(e))?;
            while rows.next().map_err(|e| self.err(e))?.is_some() {}
        }
        // Busy (a reader holds an old snapshot) is reported in the row, not as an error: the
        // next checkpoint catches up.
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Runs SQLite's `quick_check` (structure of every table and index); `Ok(())` when the file
    /// is sound, else the problems it found. For a start-up check or an operator's command.
    pub fn quick_check(&self) -> Result<Result<(), Vec<String>>, StoreError> {
        let mut st = self.conn.prepare("PRAGMA quick_check").map_err(|e| self.err(e))?;
        let mut rows = st.query([]).map_err(|e| self.err(e))?;
        let mut problems = Vec::new();
        while let Some(row) = rows.next().map_err(|e| self.err(e))? {
            let line: String = row.get(0).map_err(|e| self.err(e))?;
            if line != "ok" {
                problems.push(line);
            }
        }
        Ok(if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        })
    }
}

impl Journal for SqliteJournal {
    fn append(&mut self, records: &[Record]) -> Result<(), JournalError> {
        self.append_batch(records)?;
        Ok(())
    }

    fn append_step(&mut self, log: &[am_core::LogEntry], records: &[Record]) -> Result<(), JournalError> {
        self.append_step_batch(log, records)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_connection_is_durable_and_in_wal_mode() {
        let dir = std::env::temp_dir().join(format!("am-store-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pragmas.db");
        let _ = std::fs::remove_file(&path);
        let j = SqliteJournal::open(&path).unwrap();
        let get = |p: &str| -> String {
            j.conn
                .pragma_query_value(None, p, |r| r.get::<_, rusqlite::types::Value>(0))
                .map(|v| format!("{v:?}"))
                .unwrap()
        };
        assert_eq!(get("synchronous"), "Integer(2)", "FULL");
        assert_eq!(get("journal_mode"), "Text(\"wal\")");
        assert_eq!(get("auto_vacuum"), "Integer(2)", "INCREMENTAL");
        assert_eq!(get("journal_size_limit"), format!("Integer({WAL_SIZE_LIMIT})"));
        assert_eq!(j.path(), path.as_path());
        drop(j);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
