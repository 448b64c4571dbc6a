//! Batches of every kind of record, deterministic, for equivalence tests of journal backends:
//! every backend must recover from them what the SQLite journal recovers.

use am_core::{
    Action, ActionId, Alarm, AlarmChange, AlarmKind, HvError, LogEntry, LogKind, Record, Resources, Severity,
    Subject, Time, Vm,
};

const VMS: u64 = 5;

fn decision(at: u64, subject: Subject, kind: LogKind) -> Record {
    Record::Decision(LogEntry {
        at: Time::from_millis(at),
        subject,
        name: None,
        kind,
    })
}

fn action(k: u64, vm: &str) -> Action {
    match k % 5 {
        0 => Action::PowerOn { vm: vm.into() },
        1 => Action::Reset { vm: vm.into() },
        2 => Action::CreateSnapshot {
            vm: vm.into(),
            name: format!("b{k}"),
        },
        3 => Action::MigrateCold {
            vm: vm.into(),
            to: "h2".into(),
        },
        _ => Action::FenceHost { host: "h3".into() },
    }
}

/// Batch `k` (from 1) of a run: a note, the `Issued` line and intent of action `k` (some
/// carrying the VM they move), a VM's state change (every third to `off(by USER)`), the outcome of
/// action `k - 3` (every tenth failed, every seventh for an id never journaled), and an alarm
/// raised or cleared. Times grow with `k`; an intent without its `Issued` line every eleventh.
pub fn batch(k: u64) -> Vec<Record> {
    let at = k * 1_000;
    let v = format!("vm-{}", k % VMS);
    let a = action(k, &v);
    let mut b = vec![decision(
        at,
        Subject::Cluster,
        LogKind::Note {
            message: format!("batch {k}"),
        },
    )];
    if k % 11 != 0 {
        b.push(decision(
            at + 1,
            Subject::Vm(v.as_str().into()),
            LogKind::Issued {
                id: ActionId(k),
                action: a.clone(),
            },
        ));
    }
    let moving = (k % 5 == 3).then(|| {
        let mut vm = Vm::new(v.as_str(), Resources::default(), "h1");
        vm.config_path = Some(format!("[ds1] {v}/{v}.vmx"));
        Box::new(vm)
    });
    b.push(Record::Intent {
        id: ActionId(k),
        action: a,
        vm: moving,
    });
    let to = if k % 3 == 0 {
        format!("off(by user{})", k % 7)
    } else {
        "healthy".to_owned()
    };
    b.push(decision(
        at + 2,
        Subject::Vm(v.as_str().into()),
        LogKind::Transition {
            from: "verifying(restart)".into(),
            to,
            reason: "sample".into(),
        },
    ));
    if k > 3 {
        let id = if k % 7 == 0 { 1_000_000 + k } else { k - 3 };
        b.push(Record::Outcome {
            id: ActionId(id),
            error: (k % 10 == 0).then(|| HvError::Timeout { op: "x".into() }),
        });
    }
    let subject = Subject::Vm(format!("vm-{}", k % 3).as_str().into());
    b.push(Record::Alarm(if k % 2 == 0 {
        AlarmChange::Raise(Alarm {
            kind: if k % 4 == 0 {
                AlarmKind::RestartLimit
            } else {
                AlarmKind::VmPoweredOff
            },
            subject,
            name: None,
            severity: Severity::Warning,
            message: format!("batch {k}"),
            at: Time::from_millis(at + 3),
        })
    } else {
        AlarmChange::Clear {
            kind: AlarmKind::RestartLimit,
            subject,
            at: Time::from_millis(at + 3),
        }
    }));
    b
}
