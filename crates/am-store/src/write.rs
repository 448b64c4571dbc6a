//! Turning records into rows: one batch, inside the caller's transaction.

use crate::error::Fail;
use am_core::{Action, ActionId, AlarmChange, LogKind, Record, Subject, Time};
use rusqlite::{Transaction, params};
use std::collections::HashMap;

/// How a [`Subject`] is stored: `vm:<id>`, `host:<id>`, `datastore:<id>`, `cluster` or `manager`.
pub(crate) fn subject_key(s: &Subject) -> String {
    match s {
        Subject::Host(h) => format!("host:{h}"),
        Subject::Vm(v) => format!("vm:{v}"),
        Subject::Cluster => "cluster".into(),
        Subject::Manager => "manager".into(),
        Subject::Datastore(d) => format!("datastore:{d}"),
    }
}

/// The user named in a VM state `off(by USER)` (the supervisor's `VmState::StayOff` name).
pub(crate) fn user_off(state: &str) -> Option<&str> {
    state.strip_prefix("off(by ")?.strip_suffix(')')
}

/// A `u64` as an SQLite integer.
pub(crate) fn int(what: &'static str, v: u64) -> Result<i64, Fail> {
    i64::try_from(v).map_err(|_| Fail::Range(what, v))
}

/// An SQLite integer written by [`int`] (never negative) as a `u64`.
pub(crate) fn uint(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The serde name of a unit enum variant (`AlarmKind`, `Severity`).
pub(crate) fn tag<T: serde::Serialize>(v: &T) -> Result<String, Fail> {
    Ok(match serde_json::to_value(v)? {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    })
}

fn log_tag(k: &LogKind) -> &'static str {
    match k {
        LogKind::Transition { .. } => "transition",
        LogKind::Issued { .. } => "issued",
        LogKind::Finished { .. } => "finished",
        LogKind::AlarmRaised { .. } => "alarm_raised",
        LogKind::AlarmCleared { .. } => "alarm_cleared",
        LogKind::Note { .. } => "note",
    }
}

fn action_subject(a: &Action) -> String {
    match (a.vm(), a.host()) {
        (Some(vm), _) => format!("vm:{vm}"),
        (None, Some(h)) => format!("host:{h}"),
        (None, None) => "cluster".into(),
    }
}

/// One batch being written.
pub(crate) struct Batch<'t> {
    tx: &'t Transaction<'t>,
    wall_ms: i64,
    /// The latest time journaled so far: the time given to intents and outcomes, which carry
    /// none of their own.
    last_at: Time,
    /// When each action of this batch was issued (from its `Issued` audit line).
    issued_at: HashMap<ActionId, Time>,
    /// The largest action id in this batch.
    max_id: u64,
    /// The audit sequence number of the last record written.
    last_seq: i64,
}

impl<'t> Batch<'t> {
    /// A batch in `tx`, after `last_at`, written at wall-clock `wall_ms`.
    pub(crate) fn new(tx: &'t Transaction<'t>, last_at: Time, wall_ms: i64) -> Self {
        Batch {
            tx,
            wall_ms,
            last_at,
            issued_at: HashMap::new(),
            max_id: 0,
            last_seq: 0,
        }
    }

    fn audit<R: serde::Serialize>(
        &mut self,
        at: Time,
        subject: &str,
        kind: &str,
        detail: &str,
        r: &R,
    ) -> Result<i64, Fail> {
        let json = serde_json::to_string(r)?;
        self.last_at = self.last_at.max(at);
        self.tx
            .prepare_cached(
                "INSERT INTO audit (at_ms, wall_ms, subject, kind, detail, record)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                int("time", at.as_millis())?,
                self.wall_ms,
                subject,
                kind,
                detail,
                json
            ])?;
        self.last_seq = self.tx.last_insert_rowid();
        Ok(self.last_seq)
    }

    /// Writes one record: its audit row, and the rows of the tables it changes.
    pub(crate) fn apply(&mut self, r: &Record) -> Result<(), Fail> {
        match r {
            Record::Decision(e) => self.decision(e),
            Record::Intent { id, action, vm } => self.intent(r, *id, action, vm.as_deref()),
            Record::Outcome { id, error } => self.outcome(r, *id, error.as_ref()),
            Record::Alarm(change) => self.alarm(r, change),
        }
    }

    /// Writes one audit line, as [`Record::Decision`] of it would be (without copying it).
    pub(crate) fn decision(&mut self, e: &am_core::LogEntry) -> Result<(), Fail> {
        let r = DecisionRef::Decision(e);
        let seq = self.audit(e.at, &subject_key(&e.subject), "decision", log_tag(&e.kind), &r)?;
        match (&e.kind, &e.subject) {
            (LogKind::Transition { to, .. }, Subject::Vm(vm)) => match user_off(to) {
                Some(user) => {
                    self.tx
                        .prepare_cached(
                            "INSERT INTO user_offs (vm, user, since_ms, seq) VALUES (?1, ?2, ?3, ?4)
                             ON CONFLICT (vm) DO UPDATE SET
                                 user = excluded.user, since_ms = excluded.since_ms, seq = excluded.seq",
                        )?
                        .execute(params![vm.as_str(), user, int("time", e.at.as_millis())?, seq])?;
                }
                None => {
                    self.tx
                        .prepare_cached("DELETE FROM user_offs WHERE vm = ?1")?
                        .execute(params![vm.as_str()])?;
                }
            },
            (LogKind::Issued { id, .. }, _) => {
                self.issued_at.insert(*id, e.at);
            }
            _ => {}
        }
        Ok(())
    }

    fn intent(
        &mut self,
        r: &Record,
        id: ActionId,
        action: &Action,
        vm: Option<&am_core::Vm>,
    ) -> Result<(), Fail> {
        let at = self.issued_at.get(&id).copied().unwrap_or(self.last_at);
        let seq = self.audit(at, &action_subject(action), "intent", action.name(), r)?;
        let id_sql = int("action id", id.0)?;
        let at_sql = int("time", at.as_millis())?;
        self.tx
            .prepare_cached(
                "INSERT INTO intents (id, op, vm, host, action, issued_seq, issued_at_ms, subject)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                id_sql,
                action.name(),
                action.vm().map(|v| v.as_str()),
                action.host().map(|h| h.as_str()),
                serde_json::to_string(action)?,
                seq,
                at_sql,
                vm.map(serde_json::to_string).transpose()?
            ])?;
        self.max_id = self.max_id.max(id.0);
        match action {
            Action::PowerOn { vm } | Action::Reset { vm } => {
                self.tx
                    .prepare_cached(
                        "INSERT INTO restarts (action_id, vm, op, at_ms) VALUES (?1, ?2, ?3, ?4)",
                    )?
                    .execute(params![id_sql, vm.as_str(), action.name(), at_sql])?;
            }
            Action::CreateSnapshot { vm, name } => {
                self.tx
                    .prepare_cached(
                        "INSERT INTO backups (action_id, vm, op, name, requested_at_ms)
                         VALUES (?1, ?2, 'create_snapshot', ?3, ?4)",
                    )?
                    .execute(params![id_sql, vm.as_str(), name, at_sql])?;
            }
            Action::Clone {
                vm,
                name,
                host,
                datastore,
            } => {
                self.tx
                    .prepare_cached(
                        "INSERT INTO backups (action_id, vm, op, name, host, datastore, requested_at_ms)
                         VALUES (?1, ?2, 'clone', ?3, ?4, ?5, ?6)",
                    )?
                    .execute(params![
                        id_sql,
                        vm.as_str(),
                        name,
                        host.as_str(),
                        datastore.as_ref().map(|d| d.as_str()),
                        at_sql
                    ])?;
            }
            _ => {}
        }
        Ok(())
    }

    fn outcome(&mut self, r: &Record, id: ActionId, error: Option<&am_core::HvError>) -> Result<(), Fail> {
        let id_sql = int("action id", id.0)?;
        let target: Option<(Option<String>, Option<String>)> = {
            let mut st = self
                .tx
                .prepare_cached("SELECT vm, host FROM intents WHERE id = ?1")?;
            let mut rows = st.query(params![id_sql])?;
            match rows.next()? {
                Some(row) => Some((row.get(0)?, row.get(1)?)),
                None => None,
            }
        };
        let subject = match target {
            Some((Some(vm), _)) => format!("vm:{vm}"),
            Some((None, Some(host))) => format!("host:{host}"),
            _ => "cluster".into(),
        };
        let detail = if error.is_some() { "failed" } else { "ok" };
        let seq = self.audit(self.last_at, &subject, "outcome", detail, r)?;
        let error_json = error.map(serde_json::to_string).transpose()?;
        self.tx
            .prepare_cached(
                "UPDATE intents SET finished = 1, finished_seq = ?2, error = ?3
                 WHERE id = ?1 AND finished = 0",
            )?
            .execute(params![id_sql, seq, error_json])?;
        self.tx
            .prepare_cached(
                "UPDATE backups SET state = ?2, error = ?3, finished_seq = ?4
                 WHERE action_id = ?1 AND state = 'pending'",
            )?
            .execute(params![
                id_sql,
                if error.is_some() { "failed" } else { "done" },
                error_json,
                seq
            ])?;
        Ok(())
    }

    fn alarm(&mut self, r: &Record, change: &AlarmChange) -> Result<(), Fail> {
        match change {
            AlarmChange::Raise(a) => {
                let subject = subject_key(&a.subject);
                let seq = self.audit(a.at, &subject, "alarm", "raise", r)?;
                self.tx
                    .prepare_cached(
                        "INSERT INTO alarms (kind, subject, severity, alarm, raised_seq)
                         VALUES (?1, ?2, ?3, ?4, ?5)
                         ON CONFLICT (kind, subject) DO UPDATE SET
                             severity = excluded.severity, alarm = excluded.alarm",
                    )?
                    .execute(params![
                        tag(&a.kind)?,
                        subject,
                        tag(&a.severity)?,
                        serde_json::to_string(a)?,
                        seq
                    ])?;
            }
            AlarmChange::Clear { kind, subject, at } => {
                let subject = subject_key(subject);
                self.audit(*at, &subject, "alarm", "clear", r)?;
                self.tx
                    .prepare_cached("DELETE FROM alarms WHERE kind = ?1 AND subject = ?2")?
                    .execute(params![tag(kind)?, subject])?;
            }
        }
        Ok(())
    }

    /// Updates the counters that outlive pruning; returns the latest time and the last audit
    /// sequence number of the batch.
    pub(crate) fn finish(self) -> Result<(Time, i64), Fail> {
        self.tx
            .prepare_cached("UPDATE meta SET value = max(value, ?1) WHERE key = 'max_action_id'")?
            .execute(params![int("action id", self.max_id)?])?;
        self.tx
            .prepare_cached("UPDATE meta SET value = max(value, ?1) WHERE key = 'last_at_ms'")?
            .execute(params![int("time", self.last_at.as_millis())?])?;
        Ok((self.last_at, self.last_seq))
    }
}

/// [`Record::Decision`] of a borrowed line: serialized as that record is.
#[derive(serde::Serialize)]
#[serde(tag = "record", rename_all = "snake_case")]
enum DecisionRef<'a> {
    Decision(&'a am_core::LogEntry),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_borrowed_decision_is_stored_as_its_record() {
        let e = am_core::LogEntry {
            at: Time::from_millis(7),
            subject: am_core::Subject::Vm("vm-7".into()),
            name: Some("web-7".into()),
            kind: LogKind::Transition {
                from: "unknown".into(),
                to: "off(by alice)".into(),
                reason: "first seen".into(),
            },
        };
        assert_eq!(
            serde_json::to_string(&DecisionRef::Decision(&e)).unwrap(),
            serde_json::to_string(&Record::Decision(e.clone())).unwrap()
        );
    }

    #[test]
    fn user_off_names_the_user_only() {
        assert_eq!(user_off("off(by alice)"), Some("alice"));
        assert_eq!(user_off("off(by svc account)"), Some("svc account"));
        assert_eq!(user_off("off"), None);
        assert_eq!(user_off("off-unexplained"), None);
        assert_eq!(user_off("healthy"), None);
    }

    #[test]
    fn subjects_have_stable_keys() {
        assert_eq!(subject_key(&Subject::Vm("vm-1".into())), "vm:vm-1");
        assert_eq!(subject_key(&Subject::Host("h1".into())), "host:h1");
        assert_eq!(subject_key(&Subject::Cluster), "cluster");
        assert_eq!(subject_key(&Subject::Manager), "manager");
    }
}
