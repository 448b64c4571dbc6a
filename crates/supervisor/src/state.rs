//! The states of the per-host and per-VM machines and of the two guards. Every change goes
//! through one transition writer (`Supervisor::record_transition`, reached through
//! `set_host_state`, `set_vm_state`, `set_manager_net` and `set_storm`), which records it in the
//! audit log with its reason.

use am_core::{ActionId, HostId, Time};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;

/// One rung of the VM recovery ladder, tried in this order.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Reset the VM (or power it on if it is off).
    Restart,
    /// Revert to the last snapshot taken while it was healthy.
    RevertSnapshot,
    /// Restore it from its backup clone.
    RestoreClone,
    /// Move it to another live host.
    ColdMigrate,
    /// Restart on a survivor after its host died (not part of the ladder; verified the same way).
    Failover,
}

impl Step {
    /// The ladder, in order.
    pub const LADDER: [Step; 4] = [
        Step::Restart,
        Step::RevertSnapshot,
        Step::RestoreClone,
        Step::ColdMigrate,
    ];

    /// Short name for logs.
    pub fn name(self) -> &'static str {
        match self {
            Step::Restart => "restart",
            Step::RevertSnapshot => "revert-snapshot",
            Step::RestoreClone => "restore-clone",
            Step::ColdMigrate => "cold-migrate",
            Step::Failover => "failover",
        }
    }
}

/// A VM's health and recovery state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum VmState {
    /// Running and answering (or no evidence against it).
    Healthy,
    /// Not protected (restart priority disabled, or a backup clone): watched, never acted on.
    Unprotected,
    /// Off on purpose: powered off by a user, or already off when the manager started. Never
    /// failed over.
    StayOff {
        /// Who switched it off, if known.
        by: Option<String>,
    },
    /// Powered off with no user named yet; waiting a moment for the event that says who did it.
    OffUnexplained {
        /// When it was seen off.
        since: Time,
    },
    /// A ladder step (or a failover) is running.
    Recovering {
        /// The step.
        step: Step,
        /// Its action.
        action: ActionId,
    },
    /// A step finished; waiting for the VM to answer again.
    Verifying {
        /// The step that ran.
        step: Step,
        /// When the next step starts if it still does not answer.
        until: Time,
    },
    /// A recovery step waits for vCenter: it came due while vCenter did not answer, or its call
    /// failed because vCenter itself could not be reached (nothing was done to the VM, and
    /// nothing is counted against it). It is issued once vCenter answers.
    Deferred {
        /// The step.
        step: Step,
    },
    /// Its host is isolated and may still run it: nothing is done.
    Frozen {
        /// The isolated host.
        host: HostId,
    },
    /// Must run but no host has room; waits for capacity (a spare host, a recovered host).
    AwaitingCapacity,
    /// An action from before the daemon restarted may still be running on it: nothing is done
    /// until the inventory shows its outcome or `until` passes.
    Reconciling {
        /// The unfinished action, as journaled.
        action: String,
        /// Where that action was moving the VM, if it was a move.
        target: Option<HostId>,
        /// When the VM is judged normally again.
        until: Time,
    },
    /// The ladder ran out of steps: alarm raised, waits for a person or for the VM to come back.
    Failed,
}

impl VmState {
    /// Short name for logs and status (borrowed where it has no detail: a status row of a
    /// healthy VM allocates nothing for it).
    pub fn label(&self) -> Cow<'static, str> {
        match self {
            VmState::Healthy => "healthy".into(),
            VmState::Unprotected => "unprotected".into(),
            VmState::StayOff { by: Some(u) } => Cow::Owned(format!("off(by {u})")),
            VmState::StayOff { by: None } => "off".into(),
            VmState::OffUnexplained { .. } => "off-unexplained".into(),
            VmState::Recovering { step, .. } => Cow::Owned(format!("recovering({})", step.name())),
            VmState::Verifying { step, .. } => Cow::Owned(format!("verifying({})", step.name())),
            VmState::Deferred { step } => Cow::Owned(format!("deferred({})", step.name())),
            VmState::Frozen { host } => Cow::Owned(format!("frozen(host {host} isolated)")),
            VmState::AwaitingCapacity => "awaiting-capacity".into(),
            VmState::Reconciling { .. } => "reconciling".into(),
            VmState::Failed => "failed".into(),
        }
    }

    /// [`VmState::label`] as an owned string.
    pub fn name(&self) -> String {
        self.label().into_owned()
    }
}

impl VmState {
    /// The kind of state, without its details.
    pub fn class(&self) -> VmClass {
        match self {
            VmState::Healthy => VmClass::Healthy,
            VmState::Unprotected => VmClass::Unprotected,
            VmState::StayOff { .. } => VmClass::Off,
            VmState::OffUnexplained { .. } => VmClass::OffUnexplained,
            VmState::Recovering { .. } | VmState::Deferred { .. } => VmClass::Recovering,
            VmState::Verifying { .. } => VmClass::Verifying,
            VmState::Frozen { .. } => VmClass::Frozen,
            VmState::AwaitingCapacity => VmClass::AwaitingCapacity,
            VmState::Reconciling { .. } => VmClass::Reconciling,
            VmState::Failed => VmClass::Failed,
        }
    }
}

/// The kinds of VM state, without their details: the label of the metrics and the key of
/// `am_api::ClusterStats::vms_by_state`. Owned here, next to the states, so that a state added
/// to [`VmState`] cannot build until it has a class.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmClass {
    /// Running and answering.
    Healthy,
    /// Not protected: watched, never acted on.
    Unprotected,
    /// Off on purpose.
    Off,
    /// Off, nobody named yet.
    OffUnexplained,
    /// A recovery step runs (or waits for vCenter to answer to run).
    Recovering,
    /// A step ran; waiting for the VM to answer.
    Verifying,
    /// Its host is isolated: left alone.
    Frozen,
    /// Must run, no host has room.
    AwaitingCapacity,
    /// An action from before a daemon restart may still be running on it: left alone until the
    /// inventory shows its outcome.
    Reconciling,
    /// The ladder ran out of steps.
    Failed,
    /// In the inventory but not (yet) known to the supervisor.
    Unknown,
}

impl VmClass {
    /// Every class, in display order.
    pub const ALL: [VmClass; 11] = [
        VmClass::Healthy,
        VmClass::Unprotected,
        VmClass::Off,
        VmClass::OffUnexplained,
        VmClass::Recovering,
        VmClass::Verifying,
        VmClass::Frozen,
        VmClass::AwaitingCapacity,
        VmClass::Reconciling,
        VmClass::Failed,
        VmClass::Unknown,
    ];

    /// Its name (as serialized).
    pub fn name(self) -> &'static str {
        match self {
            VmClass::Healthy => "healthy",
            VmClass::Unprotected => "unprotected",
            VmClass::Off => "off",
            VmClass::OffUnexplained => "off_unexplained",
            VmClass::Recovering => "recovering",
            VmClass::Verifying => "verifying",
            VmClass::Frozen => "frozen",
            VmClass::AwaitingCapacity => "awaiting_capacity",
            VmClass::Reconciling => "reconciling",
            VmClass::Failed => "failed",
            VmClass::Unknown => "unknown",
        }
    }
}

impl fmt::Display for VmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// A host's liveness and recovery state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum HostState {
    /// Connected and answering.
    Up,
    /// One failure signal; waiting for a second, independent one.
    Suspect {
        /// Since when.
        since: Time,
    },
    /// Both signals say unreachable; judging whether it is dead or only isolated from the storage
    /// heartbeat and its guests.
    Unreachable {
        /// Since the first failure signal (the guests' evidence is judged from then).
        since: Time,
        /// Its storage heartbeat when it became unreachable.
        heartbeat_at_loss: Option<Time>,
    },
    /// Unreachable but alive (storage heartbeat or guests still answer): its VMs may still run.
    Isolated {
        /// Since when.
        since: Time,
    },
    /// Dead: its VMs were restarted elsewhere; reconnect and revival are tried.
    Dead {
        /// Since when.
        since: Time,
    },
    /// Removed from the cluster after failed revival.
    Removed,
    /// An operator asked to empty it: its VMs leave by live migration, in waves. No target.
    Evacuating {
        /// Since when.
        since: Time,
        /// Why (maintenance, predicted failure).
        reason: String,
    },
    /// Emptied by an evacuation and kept out of service: no target until `maintenance exit`.
    Drained {
        /// Since when.
        since: Time,
    },
    /// In maintenance mode (entered by the manager): no target until `maintenance exit`.
    Maintenance {
        /// Since when.
        since: Time,
    },
}

impl HostState {
    /// Every state's name, in display order (the label values of the host metrics).
    pub const NAMES: [&'static str; 9] = [
        "up",
        "suspect",
        "unreachable",
        "isolated",
        "dead",
        "removed",
        "evacuating",
        "drained",
        "maintenance",
    ];

    /// Short name for logs and status.
    pub fn name(&self) -> &'static str {
        match self {
            HostState::Up => "up",
            HostState::Suspect { .. } => "suspect",
            HostState::Unreachable { .. } => "unreachable",
            HostState::Isolated { .. } => "isolated",
            HostState::Dead { .. } => "dead",
            HostState::Removed => "removed",
            HostState::Evacuating { .. } => "evacuating",
            HostState::Drained { .. } => "drained",
            HostState::Maintenance { .. } => "maintenance",
        }
    }

    /// Connected and in service or held out of it by the operator: its VMs are judged as on a
    /// host that is up, but only `Up` takes new VMs.
    pub fn is_live(&self) -> bool {
        matches!(
            self,
            HostState::Up
                | HostState::Evacuating { .. }
                | HostState::Drained { .. }
                | HostState::Maintenance { .. }
        )
    }
}

impl fmt::Display for HostState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The manager's view of its own network (its isolation addresses).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ManagerNet {
    /// It reaches its isolation addresses: it may act.
    #[default]
    Connected,
    /// It cannot: it fails nothing over, takes no backups, places nothing.
    Isolated,
}

impl ManagerNet {
    /// Short name for logs and status.
    pub fn name(self) -> &'static str {
        match self {
            ManagerNet::Connected => "connected",
            ManagerNet::Isolated => "isolated",
        }
    }
}

/// The storm guard: many hosts lost at once means the manager's own network is suspect.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StormGuard {
    /// Hosts fail one by one: failover goes on.
    #[default]
    Calm,
    /// More than `storm_fraction` of the hosts became unreachable within `storm_window`: no host
    /// is declared dead until at most one is still unreachable (what a single failure would be);
    /// that one's silence is then counted from the end of the storm.
    Storm,
}

impl StormGuard {
    /// Short name for logs and status.
    pub fn name(self) -> &'static str {
        match self {
            StormGuard::Calm => "calm",
            StormGuard::Storm => "storm",
        }
    }
}

/// Whether the inventory source (vCenter) answers: while it does not, the inventory is stale.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceState {
    /// It answers: the inventory is current.
    #[default]
    Connected,
    /// It does not: nothing that needs a fresh inventory is decided (admission, backups).
    Lost,
}

impl SourceState {
    /// Short name for logs and status.
    pub fn name(self) -> &'static str {
        match self {
            SourceState::Connected => "connected",
            SourceState::Lost => "lost",
        }
    }
}
