//! What goes into the supervisor ([`Observation`]) and what comes out ([`Output`]: commands and the
//! audit log).

use crate::action::{Action, ActionId, ActionOutcome};
use crate::error::HvError;
use crate::event::{ClusterEvent, InventoryDelta};
use crate::ids::{DatastoreId, HostId, VmId};
use crate::model::Inventory;
use crate::time::Time;
use serde::{Deserialize, Serialize};
use std::fmt;

/// What a log line, alarm or verdict is about.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "type", content = "id", rename_all = "snake_case")]
pub enum Subject {
    /// A host.
    Host(HostId),
    /// A VM.
    Vm(VmId),
    /// The cluster as a whole (capacity, storms).
    Cluster,
    /// The manager itself (its own network).
    Manager,
    /// A datastore (its storage maintenance).
    Datastore(DatastoreId),
}

impl Subject {
    /// The subject's id (`host-34`), or `cluster` / `manager`.
    pub fn id(&self) -> &str {
        match self {
            Subject::Host(h) => h.as_str(),
            Subject::Vm(v) => v.as_str(),
            Subject::Cluster => "cluster",
            Subject::Manager => "manager",
            Subject::Datastore(d) => d.as_str(),
        }
    }

    /// The subject written with `name` for its id: `host esx-07`.
    pub fn named(&self, name: &str) -> String {
        match self {
            Subject::Host(_) => format!("host {name}"),
            Subject::Vm(_) => format!("vm {name}"),
            Subject::Datastore(_) => format!("datastore {name}"),
            other => other.to_string(),
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Host(h) => write!(f, "host {h}"),
            Subject::Vm(v) => write!(f, "vm {v}"),
            Subject::Cluster => f.write_str("cluster"),
            Subject::Manager => f.write_str("manager"),
            Subject::Datastore(d) => write!(f, "datastore {d}"),
        }
    }
}

/// One input to the supervisor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Observation {
    /// Nothing new; time passed (timeouts are evaluated).
    Tick,
    /// The whole inventory (at start and after a resync).
    Inventory(Inventory),
    /// One inventory change.
    Delta(InventoryDelta),
    /// An event from the management server.
    Event(ClusterEvent),
    /// A failure detector's verdict changed for a host (management address) or a VM (guest address).
    Liveness {
        /// The host or VM.
        subject: Subject,
        /// Whether it now answers.
        alive: bool,
        /// Which probes failed or answered, and when.
        evidence: String,
    },
    /// A host's power as its out-of-band controller reads it changed (`None`: it cannot be read
    /// now, e.g. the BMC does not answer).
    HostPower {
        /// The host.
        host: HostId,
        /// The reading.
        power: Option<crate::traits::PowerReading>,
        /// Which controller, and what it said.
        evidence: String,
    },
    /// The manager's own isolation check changed (it cannot reach its isolation addresses).
    ManagerIsolation {
        /// Whether the manager is now isolated.
        isolated: bool,
        /// Which addresses failed.
        evidence: String,
    },
    /// The inventory source (vCenter) stopped answering, or answers again. While it does not,
    /// the inventory is stale: nothing is judged from it that needs it fresh.
    SourceHealth {
        /// Whether it answers.
        connected: bool,
        /// What was seen (the error, or how long it was gone).
        detail: String,
    },
    /// An operator asked for something (CLI, API, a scenario's script).
    Operator(OperatorRequest),
    /// An action finished.
    ActionDone {
        /// The action's id, as issued.
        id: ActionId,
        /// Its outcome.
        result: Result<ActionOutcome, HvError>,
    },
}

/// What an operator can ask the manager to do with a host or a datastore.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum OperatorRequest {
    /// Empty the host by live migration, in waves, by the planner's evacuation plan; then, if
    /// asked, put it into maintenance mode.
    Evacuate {
        /// The host.
        host: HostId,
        /// Why (`maintenance`, `predicted-failure`), for the audit log.
        reason: String,
        /// Enter maintenance mode once it is empty.
        enter_maintenance: bool,
    },
    /// Put an (empty) host into maintenance mode.
    MaintenanceEnter {
        /// The host.
        host: HostId,
    },
    /// Take a host out of maintenance mode: it is a target again.
    MaintenanceExit {
        /// The host.
        host: HostId,
        /// Live-migrate back the VMs its last evacuation moved away (those still running where
        /// they went).
        #[serde(default)]
        return_vms: bool,
    },
    /// A host is predicted to fail (a hardware alert, vCenter's health status): by the
    /// `predicted_failure` policy it is evacuated into maintenance mode, or an alarm waits for
    /// the operator.
    Degraded {
        /// The host.
        host: HostId,
        /// What predicts it (the alert's name and summary).
        reason: String,
        /// Who said so (`alertmanager`, `api`, `vcenter`).
        source: String,
    },
    /// The prediction is withdrawn (the alert resolved): the alarm clears; VMs already moved
    /// stay where they are.
    DegradedClear {
        /// The host.
        host: HostId,
        /// Who said so.
        source: String,
    },
    /// Stop all automatic recovery, cluster-wide (maintenance of the network or of vCenter):
    /// monitoring and alarms go on, nothing is restarted, failed over, revived, fenced, removed
    /// or backed up until `Arm`. Operator requests still run.
    Disarm {
        /// Why, for the alarm and the audit log.
        reason: String,
    },
    /// Automatic recovery resumes: what failed meanwhile is handled as it stands now.
    Arm,
    /// Storage maintenance: move the files of every VM on the datastore to other datastores
    /// with room (Storage vMotion for running VMs), a few at a time; nothing new is placed on it
    /// meanwhile.
    EvacuateDatastore {
        /// The datastore.
        datastore: DatastoreId,
    },
}

impl OperatorRequest {
    /// The host it is about, if it is about one (`None`: a datastore or cluster-wide request).
    pub fn host(&self) -> Option<&HostId> {
        match self {
            OperatorRequest::Evacuate { host, .. }
            | OperatorRequest::MaintenanceEnter { host }
            | OperatorRequest::MaintenanceExit { host, .. }
            | OperatorRequest::Degraded { host, .. }
            | OperatorRequest::DegradedClear { host, .. } => Some(host),
            OperatorRequest::Disarm { .. }
            | OperatorRequest::Arm
            | OperatorRequest::EvacuateDatastore { .. } => None,
        }
    }
}

impl fmt::Display for OperatorRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OperatorRequest::Evacuate {
                host,
                reason,
                enter_maintenance,
            } => {
                write!(f, "evacuate {host} ({reason})")?;
                if *enter_maintenance {
                    f.write_str(", then enter maintenance")?;
                }
                Ok(())
            }
            OperatorRequest::MaintenanceEnter { host } => write!(f, "maintenance enter {host}"),
            OperatorRequest::MaintenanceExit { host, return_vms } => {
                write!(f, "maintenance exit {host}")?;
                if *return_vms {
                    f.write_str(", returning its VMs")?;
                }
                Ok(())
            }
            OperatorRequest::Degraded { host, reason, source } => {
                write!(f, "host {host} degraded ({reason}; from {source})")
            }
            OperatorRequest::DegradedClear { host, source } => {
                write!(f, "host {host} no longer degraded (from {source})")
            }
            OperatorRequest::Disarm { reason } => write!(f, "disarm ({reason})"),
            OperatorRequest::Arm => f.write_str("arm"),
            OperatorRequest::EvacuateDatastore { datastore } => write!(f, "evacuate-datastore {datastore}"),
        }
    }
}

/// How bad an alarm is.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// For information.
    Info,
    /// Needs attention.
    Warning,
    /// Service is at risk or down.
    Critical,
}

/// The kinds of alarm.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmKind {
    /// A VM was powered off by a user (and is not failed over).
    VmPoweredOff,
    /// The recovery ladder of a VM ran out of steps.
    RecoveryFailed,
    /// A VM hit its restart rate limit.
    RestartLimit,
    /// A host does not answer.
    HostUnreachable,
    /// A host is isolated: its VMs may still run.
    HostIsolated,
    /// A host was removed after failed revival.
    HostRemoved,
    /// A spare host was added.
    SpareHostAdded,
    /// Not enough capacity for the VMs that must run.
    CapacityInsufficient,
    /// Admission control: the failure of some host would leave a protected VM with no place
    /// (the cluster no longer tolerates a host failure).
    FailoverAtRisk,
    /// The manager cannot reach its isolation addresses; it acts on nothing.
    ManagerIsolated,
    /// Most hosts became unreachable at once; no mass failover.
    StormSuspected,
    /// Some hosts have only one failure signal (vCenter's connection state): their death can only
    /// be confirmed by the VMs' file locks at failover.
    FailoverDegraded,
    /// The management server (vCenter) does not answer: the manager sees nothing new.
    VcenterUnreachable,
    /// Protected VMs fit nowhere and no spare host is left to add.
    SparePoolEmpty,
    /// Removing a dead host failed (it is not tried again on its own).
    HostRemovalFailed,
    /// Fencing a host failed: nothing of it is restarted elsewhere.
    FenceFailed,
    /// An evacuation the operator asked for cannot finish (VMs with no place, failed moves,
    /// the host lost): it stopped, and says why.
    EvacuationFailed,
    /// Automatic recovery is disarmed by an operator: failures are seen and reported, not
    /// acted on. Kept across restarts (it is what a restarted daemon reads the switch from).
    Disarmed,
    /// A host is predicted to fail (an alert, vCenter's health status).
    HostDegraded,
    /// Manager HA: a standby has seen no daemon lead its unit for two lease TTLs and cannot
    /// take it over itself (etcd does not answer): nothing watches the unit's VMs.
    UnitWithoutLeader,
}

impl AlarmKind {
    /// Every kind, in declaration order (the label values of the alarm metrics).
    pub const ALL: [AlarmKind; 20] = [
        AlarmKind::VmPoweredOff,
        AlarmKind::RecoveryFailed,
        AlarmKind::RestartLimit,
        AlarmKind::HostUnreachable,
        AlarmKind::HostIsolated,
        AlarmKind::HostRemoved,
        AlarmKind::SpareHostAdded,
        AlarmKind::CapacityInsufficient,
        AlarmKind::FailoverAtRisk,
        AlarmKind::ManagerIsolated,
        AlarmKind::StormSuspected,
        AlarmKind::FailoverDegraded,
        AlarmKind::VcenterUnreachable,
        AlarmKind::SparePoolEmpty,
        AlarmKind::HostRemovalFailed,
        AlarmKind::FenceFailed,
        AlarmKind::EvacuationFailed,
        AlarmKind::Disarmed,
        AlarmKind::HostDegraded,
        AlarmKind::UnitWithoutLeader,
    ];

    /// Its place in [`AlarmKind::ALL`]. Exhaustive: a new kind does not build until it is listed
    /// (a test checks the two agree).
    pub const fn position(self) -> usize {
        match self {
            AlarmKind::VmPoweredOff => 0,
            AlarmKind::RecoveryFailed => 1,
            AlarmKind::RestartLimit => 2,
            AlarmKind::HostUnreachable => 3,
            AlarmKind::HostIsolated => 4,
            AlarmKind::HostRemoved => 5,
            AlarmKind::SpareHostAdded => 6,
            AlarmKind::CapacityInsufficient => 7,
            AlarmKind::FailoverAtRisk => 8,
            AlarmKind::ManagerIsolated => 9,
            AlarmKind::StormSuspected => 10,
            AlarmKind::FailoverDegraded => 11,
            AlarmKind::VcenterUnreachable => 12,
            AlarmKind::SparePoolEmpty => 13,
            AlarmKind::HostRemovalFailed => 14,
            AlarmKind::FenceFailed => 15,
            AlarmKind::EvacuationFailed => 16,
            AlarmKind::Disarmed => 17,
            AlarmKind::HostDegraded => 18,
            AlarmKind::UnitWithoutLeader => 19,
        }
    }
}

#[cfg(test)]
mod alarm_kind_tests {
    use super::AlarmKind;

    #[test]
    fn every_alarm_kind_is_listed_once_in_its_place() {
        for (i, k) in AlarmKind::ALL.iter().enumerate() {
            assert_eq!(k.position(), i, "{k:?}");
        }
    }
}

/// An alarm, identified by its kind and subject (raising it again does not duplicate it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alarm {
    /// Kind.
    pub kind: AlarmKind,
    /// What it is about.
    pub subject: Subject,
    /// The subject's inventory name, where it differs from its id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// How bad.
    pub severity: Severity,
    /// Human text.
    pub message: String,
    /// When it was raised.
    pub at: Time,
}

/// An alarm raised or cleared.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlarmChange {
    /// Raised (or still raised, with new text).
    Raise(Alarm),
    /// The condition cleared.
    Clear {
        /// Kind.
        kind: AlarmKind,
        /// Subject.
        subject: Subject,
        /// When.
        at: Time,
    },
}

/// One output of the supervisor for the outside world.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Run an action; its outcome comes back as [`Observation::ActionDone`] with the same id.
    Execute {
        /// Id to report the outcome with.
        id: ActionId,
        /// What to do.
        action: Action,
        /// Larger runs first when the executor has a queue.
        priority: u8,
        /// Why (for the journal).
        reason: String,
    },
    /// Raise or clear an alarm.
    Alarm(AlarmChange),
    /// Give up an action issued earlier (queued or running): its call is dropped and no outcome
    /// comes back. Only for actions that re-register nothing (backups, a reset or a revert of a
    /// VM whose host died), so that a more urgent action on the VM need not wait for it.
    Cancel {
        /// The action.
        id: ActionId,
        /// Why (for the journal).
        reason: String,
    },
}

/// What an audit log line records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LogKind {
    /// A state machine changed state.
    Transition {
        /// Old state.
        from: String,
        /// New state.
        to: String,
        /// Why.
        reason: String,
    },
    /// An action was issued.
    Issued {
        /// Its id.
        id: ActionId,
        /// The action.
        action: Action,
    },
    /// An action finished.
    Finished {
        /// Its id.
        id: ActionId,
        /// Whether it succeeded.
        ok: bool,
        /// The outcome or the error.
        detail: String,
    },
    /// An alarm was raised.
    AlarmRaised {
        /// Kind.
        alarm: AlarmKind,
        /// Text.
        message: String,
    },
    /// An alarm cleared.
    AlarmCleared {
        /// Kind.
        alarm: AlarmKind,
    },
    /// A decision not to act, with the reason (e.g. "user power-off: no failover").
    Note {
        /// Text.
        message: String,
    },
}

/// One line of the audit trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// When (virtual or monotonic time).
    pub at: Time,
    /// About what.
    pub subject: Subject,
    /// The subject's inventory name, where it differs from its id (`esx-07` for `host-34`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What.
    #[serde(flatten)]
    pub kind: LogKind,
}

impl fmt::Display for LogEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(
                f,
                "{:>9} {} ({}): ",
                self.at.to_string(),
                self.subject.named(name),
                self.subject.id()
            )?,
            None => write!(f, "{:>9} {}: ", self.at.to_string(), self.subject)?,
        }
        match &self.kind {
            LogKind::Transition { from, to, reason } => write!(f, "{from} -> {to} ({reason})"),
            LogKind::Issued { id, action } => write!(f, "issue {id} {action}"),
            LogKind::Finished { id, ok: true, detail } => write!(f, "done {id} {detail}"),
            LogKind::Finished {
                id,
                ok: false,
                detail,
            } => write!(f, "failed {id} {detail}"),
            LogKind::AlarmRaised { alarm, message } => write!(f, "ALARM {alarm:?} {message}"),
            LogKind::AlarmCleared { alarm } => write!(f, "alarm cleared {alarm:?}"),
            LogKind::Note { message } => write!(f, "{message}"),
        }
    }
}

/// What one supervisor step produced: commands to carry out, and the audit lines to journal
/// before carrying them out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    /// Commands, in the order they were decided.
    pub commands: Vec<Command>,
    /// Audit trail lines.
    pub log: Vec<LogEntry>,
}

impl Output {
    /// Appends another step's output.
    pub fn extend(&mut self, other: Output) {
        self.commands.extend(other.commands);
        self.log.extend(other.log);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_read_like_a_story() {
        let e = LogEntry {
            at: Time::from_millis(12_500),
            subject: Subject::Vm("vm-7".into()),
            name: None,
            kind: LogKind::Transition {
                from: "healthy".into(),
                to: "resetting".into(),
                reason: "guest ping lost".into(),
            },
        };
        assert_eq!(
            e.to_string(),
            "  12.500s vm vm-7: healthy -> resetting (guest ping lost)"
        );
        let i = LogEntry {
            at: Time::from_secs(13),
            subject: Subject::Vm("vm-7".into()),
            name: None,
            kind: LogKind::Issued {
                id: ActionId(4),
                action: Action::Reset { vm: "vm-7".into() },
            },
        };
        assert_eq!(i.to_string(), "  13.000s vm vm-7: issue #4 reset vm-7");
    }
}
