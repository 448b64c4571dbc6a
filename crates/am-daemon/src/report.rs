//! The demo's closing report: one row per injected fault (detection time, recovery time, ladder
//! steps) and the totals (VMs recovered, VMs rightly left off, MTTR, availability).

use am_core::{Subject, Time, VmId};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;
use supervisor::Incident;

/// A fault that was injected, as the report needs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FaultRecord {
    /// When.
    pub at: Time,
    /// On what.
    pub subject: Subject,
    /// What (e.g. "guest crash", "host crash").
    pub what: String,
}

/// One row of the table.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    /// When the fault was injected.
    pub at: Time,
    /// The fault.
    pub fault: String,
    /// On what.
    pub subject: String,
    /// From fault to the supervisor's decision.
    pub detection_s: Option<f64>,
    /// From fault to the last affected VM answering again (or the decision for faults with
    /// nothing to recover).
    pub recovery_s: Option<f64>,
    /// Steps taken.
    pub steps: String,
    /// How it ended.
    pub outcome: String,
}

/// The report.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    /// One row per fault.
    pub rows: Vec<Row>,
    /// VM incidents that ended with the VM answering again.
    pub vms_recovered: usize,
    /// VMs left off because a user switched them off.
    pub vms_left_off: usize,
    /// VM incidents still open or failed.
    pub vms_unrecovered: usize,
    /// Mean time to recovery over VM incidents, from fault to answering again.
    pub mttr_s: f64,
    /// Protected VM-time up over protected VM-time total.
    pub availability: f64,
    /// Protected VMs the simulator says are not running at the end (and that no user switched off).
    pub protected_not_running: Vec<VmId>,
    /// Invariant violations the simulator saw (a VM on two hosts, capacity exceeded, ...).
    pub violations: Vec<String>,
    /// Virtual seconds the run lasted.
    pub duration_s: f64,
    /// Snapshots the backup cache took.
    pub backups_taken: usize,
}

impl Summary {
    /// Whether the run succeeded: every protected VM runs again and no invariant broke.
    pub fn ok(&self) -> bool {
        self.protected_not_running.is_empty() && self.violations.is_empty()
    }
}

fn secs(d: Duration) -> f64 {
    d.as_millis() as f64 / 1000.0
}

/// Builds the summary from the faults injected and the supervisor's incidents.
pub fn summarize(
    faults: &[FaultRecord],
    incidents: &[Incident],
    protected_vms: usize,
    end: Time,
    protected_not_running: Vec<VmId>,
    violations: Vec<String>,
) -> Summary {
    let mut rows = Vec::new();
    // Which fault each VM incident belongs to (for MTTR and downtime): the latest fault at or
    // before the incident on the VM itself or on the host whose death it follows.
    let fault_of = |inc: &Incident| -> Option<&FaultRecord> {
        faults
            .iter()
            .filter(|f| f.at <= inc.detected)
            .filter(|f| match (&f.subject, &inc.subject) {
                (Subject::Vm(a), Subject::Vm(b)) => a == b,
                (Subject::Host(h), Subject::Vm(_)) => inc.cause == format!("host {h} dead"),
                (a, b) => a == b,
            })
            .max_by_key(|f| f.at)
    };
    for f in faults {
        let mine: Vec<&Incident> = incidents
            .iter()
            .filter(|i| fault_of(i).is_some_and(|g| std::ptr::eq(g, f)))
            .collect();
        let own = mine.iter().find(|i| i.subject == f.subject).copied();
        let vm_incidents: Vec<&Incident> = mine
            .iter()
            .filter(|i| matches!(i.subject, Subject::Vm(_)))
            .copied()
            .collect();
        let detection = mine.iter().map(|i| i.detected).min().map(|t| t.since(f.at));
        let recovery = if vm_incidents.is_empty() {
            own.and_then(|i| i.resolved).map(|t| t.since(f.at))
        } else if vm_incidents.iter().all(|i| i.resolved.is_some()) {
            vm_incidents
                .iter()
                .filter_map(|i| i.resolved)
                .max()
                .map(|t| t.since(f.at))
        } else {
            None
        };
        let (steps, outcome) = match (&f.subject, own) {
            (Subject::Host(_), _) => {
                let mut per_step: BTreeMap<String, usize> = BTreeMap::new();
                for i in &vm_incidents {
                    for s in &i.steps {
                        let key = s.split(' ').next().unwrap_or(s).to_owned();
                        *per_step.entry(key).or_default() += 1;
                    }
                }
                let mut steps: Vec<String> = per_step.iter().map(|(s, n)| format!("{s} x{n}")).collect();
                if let Some(host_inc) = own {
                    steps.extend(host_inc.steps.iter().cloned());
                }
                let recovered = vm_incidents
                    .iter()
                    .filter(|i| i.ending == Some(supervisor::Ending::Recovered))
                    .count();
                let mut outcome = match own {
                    Some(i) => format!("host {}", i.outcome.as_deref().unwrap_or(i.cause.as_str())),
                    None => "host: no incident".to_owned(),
                };
                if !vm_incidents.is_empty() {
                    let _ = write!(outcome, "; {recovered}/{} VMs recovered", vm_incidents.len());
                }
                (steps.join(", "), outcome)
            }
            (_, Some(i)) => (
                i.steps.join(" -> "),
                i.outcome.clone().unwrap_or_else(|| "open".into()),
            ),
            (_, None) => (String::new(), "no incident".into()),
        };
        rows.push(Row {
            at: f.at,
            fault: f.what.clone(),
            subject: f.subject.to_string(),
            detection_s: detection.map(secs),
            recovery_s: recovery.map(secs),
            steps,
            outcome,
        });
    }

    let vm_incidents: Vec<&Incident> = incidents
        .iter()
        .filter(|i| matches!(i.subject, Subject::Vm(_)))
        .collect();
    let recovered: Vec<&&Incident> = vm_incidents
        .iter()
        .filter(|i| i.ending == Some(supervisor::Ending::Recovered))
        .collect();
    let left_off = vm_incidents
        .iter()
        .filter(|i| i.ending == Some(supervisor::Ending::LeftOff))
        .count();
    let unrecovered = vm_incidents.iter().filter(|i| i.resolved.is_none()).count();
    let repair: Vec<f64> = recovered
        .iter()
        .filter_map(|i| {
            let start = fault_of(i).map(|f| f.at).unwrap_or(i.detected);
            i.resolved.map(|r| secs(r.since(start)))
        })
        .collect();
    let mttr = if repair.is_empty() {
        0.0
    } else {
        repair.iter().sum::<f64>() / repair.len() as f64
    };
    let downtime: f64 = vm_incidents
        .iter()
        .filter(|i| i.ending != Some(supervisor::Ending::LeftOff))
        .map(|i| {
            let start = fault_of(i).map(|f| f.at).unwrap_or(i.detected);
            secs(i.resolved.unwrap_or(end).since(start))
        })
        .sum();
    let total = protected_vms as f64 * secs(end.since(Time::ZERO));
    Summary {
        rows,
        vms_recovered: recovered.len(),
        vms_left_off: left_off,
        vms_unrecovered: unrecovered,
        mttr_s: mttr,
        availability: if total > 0.0 { 1.0 - downtime / total } else { 1.0 },
        protected_not_running,
        violations,
        duration_s: secs(end.since(Time::ZERO)),
        backups_taken: 0,
    }
}

fn opt(v: Option<f64>) -> String {
    v.map(|s| format!("{s:.1}s")).unwrap_or_else(|| "-".into())
}

/// The summary as a text table.
pub fn render(summary: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>8}  {:<22} {:<14} {:>8} {:>9}  {:<40} outcome",
        "at", "fault", "subject", "detect", "recover", "steps"
    );
    for r in &summary.rows {
        let _ = writeln!(
            out,
            "{:>8}  {:<22} {:<14} {:>8} {:>9}  {:<40} {}",
            r.at.to_string(),
            r.fault,
            r.subject,
            opt(r.detection_s),
            opt(r.recovery_s),
            r.steps,
            r.outcome
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "VMs recovered            {}", summary.vms_recovered);
    let _ = writeln!(out, "VMs rightly left off     {}", summary.vms_left_off);
    let _ = writeln!(out, "VMs not recovered        {}", summary.vms_unrecovered);
    let _ = writeln!(out, "MTTR                     {:.1}s", summary.mttr_s);
    let _ = writeln!(out, "backup snapshots taken   {}", summary.backups_taken);
    let _ = writeln!(
        out,
        "availability             {:.5}% over {:.0}s",
        summary.availability * 100.0,
        summary.duration_s
    );
    let _ = writeln!(
        out,
        "protected VMs not running {}",
        if summary.protected_not_running.is_empty() {
            "none".to_owned()
        } else {
            summary
                .protected_not_running
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    let _ = writeln!(
        out,
        "invariants               {}",
        if summary.violations.is_empty() {
            "held".to_owned()
        } else {
            summary.violations.join("; ")
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incident(
        subject: Subject,
        cause: &str,
        detected: u64,
        resolved: Option<u64>,
        steps: &[&str],
        outcome: &str,
    ) -> Incident {
        Incident {
            subject,
            cause: cause.into(),
            detected: Time::from_secs(detected),
            resolved: resolved.map(Time::from_secs),
            steps: steps.iter().map(|s| s.to_string()).collect(),
            outcome: Some(outcome.into()),
            // As the supervisor classifies its words.
            ending: Some(if outcome.starts_with("recovered") {
                supervisor::Ending::Recovered
            } else if outcome.starts_with("left off") {
                supervisor::Ending::LeftOff
            } else {
                supervisor::Ending::HostBack
            }),
        }
    }

    #[test]
    fn rows_measure_from_the_fault_and_totals_add_up() {
        let faults = vec![
            FaultRecord {
                at: Time::from_secs(10),
                subject: Subject::Vm("a".into()),
                what: "guest crash".into(),
            },
            FaultRecord {
                at: Time::from_secs(20),
                subject: Subject::Host("h1".into()),
                what: "host crash".into(),
            },
            FaultRecord {
                at: Time::from_secs(30),
                subject: Subject::Vm("c".into()),
                what: "user power-off".into(),
            },
        ];
        let incidents = vec![
            incident(
                Subject::Vm("a".into()),
                "guest not answering",
                14,
                Some(19),
                &["restart"],
                "recovered by restart",
            ),
            incident(Subject::Host("h1".into()), "dead", 27, None, &[], "open"),
            incident(
                Subject::Vm("b".into()),
                "host h1 dead",
                27,
                Some(31),
                &["failover to h2"],
                "recovered by failover",
            ),
            incident(
                Subject::Vm("c".into()),
                "powered off by alice",
                30,
                Some(30),
                &[],
                "left off (user alice)",
            ),
        ];
        let s = summarize(&faults, &incidents, 10, Time::from_secs(100), vec![], vec![]);
        assert_eq!(s.rows[0].detection_s, Some(4.0));
        assert_eq!(s.rows[0].recovery_s, Some(9.0));
        assert_eq!(s.rows[1].detection_s, Some(7.0));
        assert_eq!(s.rows[1].recovery_s, Some(11.0));
        assert_eq!(s.rows[1].steps, "failover x1");
        assert_eq!(s.rows[2].outcome, "left off (user alice)");
        assert_eq!(s.vms_recovered, 2);
        assert_eq!(s.vms_left_off, 1);
        assert!((s.mttr_s - 10.0).abs() < 1e-9); // (9 + 11) / 2
        // 20 s of downtime over 10 VMs x 100 s.
        assert!((s.availability - 0.98).abs() < 1e-9);
        assert!(s.ok());
        assert!(render(&s).contains("MTTR                     10.0s"));
    }

    #[test]
    fn a_violation_or_a_vm_left_down_fails_the_run() {
        let s = summarize(&[], &[], 1, Time::from_secs(1), vec!["x".into()], vec![]);
        assert!(!s.ok());
        let s = summarize(
            &[],
            &[],
            1,
            Time::from_secs(1),
            vec![],
            vec!["vm a ran on h1 and h2".into()],
        );
        assert!(!s.ok());
    }
}
