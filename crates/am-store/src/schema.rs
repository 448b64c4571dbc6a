//! The schema, versioned with `PRAGMA user_version`, and its migrations.
//!
//! A journal file is recognised by `PRAGMA application_id` ([`APPLICATION_ID`], "amj1"). Version
//! `n` of the schema is reached by running `MIGRATIONS[0..n]` in order, each in its own
//! transaction that also sets `user_version`, so a daemon killed during a migration leaves the
//! file at the previous version and the next start runs the step again.

use rusqlite::Connection;

/// `PRAGMA application_id` of a journal: the bytes `amj1`.
pub const APPLICATION_ID: i64 = 0x616d_6a31;

/// The schema version this program writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Version 1.
///
/// - `meta`: counters that must survive pruning (the largest action id ever journaled, the
///   latest time journaled).
/// - `audit`: every record, in order (`seq`), with its time, subject and JSON.
/// - `intents`: one row per action, unfinished until its outcome arrives.
/// - `alarms`: the active alarms, by kind and subject.
/// - `user_offs`: VMs a user switched off, and by whom.
/// - `restarts`: when each VM was restarted (reset or power-on intents).
/// - `backups`: snapshots and clones requested, and whether they were made.
const V1: &str = "
PRAGMA application_id = 1634560561;

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO meta (key, value) VALUES ('max_action_id', 0), ('last_at_ms', 0);

CREATE TABLE audit (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms   INTEGER NOT NULL,
    wall_ms INTEGER NOT NULL,
    subject TEXT NOT NULL,
    kind    TEXT NOT NULL CHECK (kind IN ('decision', 'intent', 'outcome', 'alarm')),
    detail  TEXT NOT NULL,
    record  TEXT NOT NULL
);
CREATE INDEX audit_subject ON audit (subject, seq);

CREATE TABLE intents (
    id           INTEGER PRIMARY KEY,
    op           TEXT NOT NULL,
    vm           TEXT,
    host         TEXT,
    action       TEXT NOT NULL,
    issued_seq   INTEGER NOT NULL,
    issued_at_ms INTEGER NOT NULL,
    finished     INTEGER NOT NULL DEFAULT 0 CHECK (finished IN (0, 1)),
    finished_seq INTEGER,
    error        TEXT
);
CREATE INDEX intents_unfinished ON intents (id) WHERE finished = 0;
CREATE INDEX intents_finished ON intents (finished_seq) WHERE finished = 1;
CREATE INDEX intents_vm ON intents (vm, id);

CREATE TABLE alarms (
    kind       TEXT NOT NULL,
    subject    TEXT NOT NULL,
    severity   TEXT NOT NULL,
    alarm      TEXT NOT NULL,
    raised_seq INTEGER NOT NULL,
    PRIMARY KEY (kind, subject)
) WITHOUT ROWID;

CREATE TABLE user_offs (
    vm       TEXT PRIMARY KEY,
    user     TEXT NOT NULL,
    since_ms INTEGER NOT NULL,
    seq      INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE restarts (
    action_id INTEGER PRIMARY KEY,
    vm        TEXT NOT NULL,
    op        TEXT NOT NULL,
    at_ms     INTEGER NOT NULL
);
CREATE INDEX restarts_vm ON restarts (vm, at_ms);

CREATE TABLE backups (
    action_id       INTEGER PRIMARY KEY,
    vm              TEXT NOT NULL,
    op              TEXT NOT NULL CHECK (op IN ('create_snapshot', 'clone')),
    name            TEXT NOT NULL,
    host            TEXT,
    datastore       TEXT,
    requested_at_ms INTEGER NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'failed')),
    error           TEXT,
    finished_seq    INTEGER
);
CREATE INDEX backups_vm ON backups (vm, action_id);
";

/// Version 2: `intents.subject`, the VM an intent moves as the manager saw it (JSON), so that a
/// restarted daemon finds a VM registered anew under another id by its configuration path.
const V2: &str = "ALTER TABLE intents ADD COLUMN subject TEXT;";

/// The migrations, in order: `MIGRATIONS[i]` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[V1, V2];

/// Brings the schema from version `from` to [`SCHEMA_VERSION`], one transaction per step.
pub(crate) fn migrate(conn: &mut Connection, from: i64) -> rusqlite::Result<()> {
    let start = usize::try_from(from).unwrap_or(0);
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(start) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}
