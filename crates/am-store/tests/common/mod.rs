//! Helpers shared by the integration tests: a temporary directory and record builders.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use am_core::{
    Action, ActionId, Alarm, AlarmChange, AlarmKind, HvError, LogEntry, LogKind, Record, Severity, Subject,
    Time,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A directory removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh directory under the system's temporary directory.
    pub fn new(name: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "am-store-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// A path inside it.
    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn vm(v: &str) -> Subject {
    Subject::Vm(v.into())
}

pub fn note(at: u64, subject: Subject, message: &str) -> Record {
    Record::Decision(LogEntry {
        at: Time::from_millis(at),
        subject,
        name: None,
        kind: LogKind::Note {
            message: message.into(),
        },
    })
}

pub fn transition(at: u64, v: &str, from: &str, to: &str) -> Record {
    Record::Decision(LogEntry {
        at: Time::from_millis(at),
        subject: vm(v),
        name: None,
        kind: LogKind::Transition {
            from: from.into(),
            to: to.into(),
            reason: "test".into(),
        },
    })
}

/// The `Issued` audit line and the intent of one action, as the engine journals them.
pub fn issue(at: u64, id: u64, action: Action) -> [Record; 2] {
    let subject = match (action.vm(), action.host()) {
        (Some(v), _) => Subject::Vm(v.clone()),
        (None, Some(h)) => Subject::Host(h.clone()),
        _ => Subject::Cluster,
    };
    [
        Record::Decision(LogEntry {
            at: Time::from_millis(at),
            subject,
            name: None,
            kind: LogKind::Issued {
                id: ActionId(id),
                action: action.clone(),
            },
        }),
        Record::Intent {
            id: ActionId(id),
            action,
            vm: None,
        },
    ]
}

pub fn outcome(id: u64, error: Option<HvError>) -> Record {
    Record::Outcome {
        id: ActionId(id),
        error,
    }
}

pub fn alarm(at: u64, kind: AlarmKind, subject: Subject, message: &str) -> Alarm {
    Alarm {
        name: None,
        kind,
        subject,
        severity: Severity::Warning,
        message: message.into(),
        at: Time::from_millis(at),
    }
}

pub fn raise(a: Alarm) -> Record {
    Record::Alarm(AlarmChange::Raise(a))
}

pub fn clear(at: u64, kind: AlarmKind, subject: Subject) -> Record {
    Record::Alarm(AlarmChange::Clear {
        kind,
        subject,
        at: Time::from_millis(at),
    })
}

pub fn reset(v: &str) -> Action {
    Action::Reset { vm: v.into() }
}

pub fn power_on(v: &str) -> Action {
    Action::PowerOn { vm: v.into() }
}
