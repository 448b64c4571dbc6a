//! The truth of the simulated cluster (what really runs where), as the queries return it, and
//! the invariant violations and histories the simulator records.

use crate::fault::{Fault, FaultDepth};
use am_core::{
    Action, ActionOutcome, DatastoreId, HostId, HvError, Resources, RestartPriority, Snapshot, Time, VmId,
};
use serde::{Deserialize, Serialize};
use std::fmt;

/// What really is the matter with a host.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostCondition {
    /// Running and managed.
    Up,
    /// Stopped, its VMs with it. `permanent`: revival fails.
    Crashed {
        /// Whether revival fails.
        permanent: bool,
    },
    /// Running with its VMs, but nobody reaches it over the network; its datastore heartbeat goes
    /// on.
    Isolated,
    /// Running, pingable, but its management agent lost vCenter.
    Disconnected,
    /// Powered off out of band (fenced).
    Off,
}

impl HostCondition {
    /// Whether VMs keep running on it (and it writes its datastore heartbeat).
    pub fn is_alive(self) -> bool {
        matches!(
            self,
            HostCondition::Up | HostCondition::Isolated | HostCondition::Disconnected
        )
    }

    /// Whether its management address answers pings.
    pub fn is_pingable(self) -> bool {
        matches!(self, HostCondition::Up | HostCondition::Disconnected)
    }

    /// Whether vCenter can manage it.
    pub fn is_managed(self) -> bool {
        self == HostCondition::Up
    }
}

impl fmt::Display for HostCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostCondition::Up => f.write_str("up"),
            HostCondition::Crashed { permanent: false } => f.write_str("crashed"),
            HostCondition::Crashed { permanent: true } => f.write_str("crashed permanently"),
            HostCondition::Isolated => f.write_str("isolated"),
            HostCondition::Disconnected => f.write_str("disconnected"),
            HostCondition::Off => f.write_str("off (fenced)"),
        }
    }
}

/// The truth about one host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostTruth {
    /// Id.
    pub id: HostId,
    /// Capacity.
    pub capacity: Resources,
    /// Failure domain.
    pub failure_domain: Option<String>,
    /// Management address.
    pub mgmt_address: Option<String>,
    /// What is the matter with it.
    pub condition: HostCondition,
    /// Removed from the inventory (it may still run, e.g. if it was isolated).
    pub removed: bool,
    /// In maintenance mode.
    pub maintenance: bool,
    /// What a red health alarm on it says (a hardware sensor: it may fail soon), if one is up.
    #[serde(default)]
    pub health_alarm: Option<String>,
    /// Last time it wrote its datastore heartbeat.
    pub last_heartbeat: Time,
    /// Added from the spare pool: it mounts only the datastores mounted on it since.
    #[serde(default)]
    pub spare: bool,
    /// Datastores mounted on it by `mount_datastore`.
    #[serde(default)]
    pub mounted: std::collections::BTreeSet<am_core::DatastoreId>,
}

/// A VM guest's state.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuestState {
    /// Healthy (or not running).
    Ok,
    /// Crashed (blue screen): powered on, no heartbeat.
    Crashed,
    /// Hung: powered on, zero CPU, no heartbeat.
    Hung,
}

/// A fault a VM carries until the right recovery step clears it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmFault {
    /// Which recovery fixes it.
    pub depth: FaultDepth,
    /// It shows as a hang (else as a crash).
    pub hang: bool,
    /// For [`FaultDepth::HostLocal`]: the host it happens on.
    pub host: Option<HostId>,
    /// When it was injected.
    pub since: Time,
}

/// A snapshot and whether the disk was good when it was taken.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotTruth {
    /// The snapshot as the inventory shows it.
    pub snapshot: Snapshot,
    /// Taken while the disk had no fault: reverting to it fixes a corrupt disk.
    pub good: bool,
}

/// The truth about one VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmTruth {
    /// Id.
    pub id: VmId,
    /// Display name.
    pub name: String,
    /// Demand.
    pub demand: Resources,
    /// Restart priority.
    pub priority: RestartPriority,
    /// Affinity group.
    pub affinity_group: Option<String>,
    /// Anti-affinity group.
    pub anti_affinity_group: Option<String>,
    /// Guest address.
    pub guest_address: Option<String>,
    /// Datastore.
    pub datastore: Option<DatastoreId>,
    /// The space its files take (MiB), if reported.
    pub storage_mib: Option<u64>,
    /// For backup clones: the VM it is a copy of.
    pub backup_of: Option<VmId>,
    /// The host it is registered on in vCenter.
    pub registered: Option<HostId>,
    /// Hosts where an instance of it really runs (two or more: split brain).
    pub running_on: Vec<HostId>,
    /// Guest state.
    pub guest: GuestState,
    /// Since when the guest is in that state (its last boot or fault).
    pub guest_since: Time,
    /// The fault it carries, if any.
    pub fault: Option<VmFault>,
    /// Snapshots, oldest first.
    pub snapshots: Vec<SnapshotTruth>,
    /// Powered off by this user at this time, and not powered on since.
    pub user_off: Option<(String, Time)>,
    /// Still in the inventory (false after its host was removed).
    pub listed: bool,
    /// CPU it uses when healthy, in MHz.
    pub cpu_usage: u64,
}

impl VmTruth {
    /// Whether it runs somewhere.
    pub fn is_running(&self) -> bool {
        !self.running_on.is_empty()
    }

    /// Whether it runs with a healthy guest.
    pub fn is_healthy(&self) -> bool {
        self.is_running() && self.guest == GuestState::Ok
    }

    /// Whether the manager must keep it running.
    pub fn is_protected(&self) -> bool {
        self.priority.is_protected() && self.backup_of.is_none()
    }
}

/// A broken invariant, recorded when it happens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Violation {
    /// A VM ran on two or more hosts at once (split brain).
    DoubleRun {
        /// The VM.
        vm: VmId,
        /// Where it ran.
        hosts: Vec<HostId>,
        /// When it started.
        at: Time,
    },
    /// A host's running VMs needed more than its capacity.
    OverCapacity {
        /// The host.
        host: HostId,
        /// What its running VMs needed.
        used: Resources,
        /// Its capacity.
        capacity: Resources,
        /// When.
        at: Time,
    },
    /// A VM a user had powered off was powered on by the manager (no user powered it on since).
    UserPowerOffOverridden {
        /// The VM.
        vm: VmId,
        /// Who had powered it off.
        user: String,
        /// When it was powered off.
        powered_off_at: Time,
        /// When the manager powered it on.
        powered_on_at: Time,
    },
    /// A VM (not one of the manager's backup clones) left the inventory with a host the manager
    /// removed: vCenter drops what is registered on a removed host.
    VmLost {
        /// The VM.
        vm: VmId,
        /// The removed host.
        host: HostId,
        /// When.
        at: Time,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::DoubleRun { vm, hosts, at } => {
                let hosts: Vec<&str> = hosts.iter().map(|h| h.as_str()).collect();
                write!(
                    f,
                    "{at}: vm {vm} runs on {} hosts at once: {}",
                    hosts.len(),
                    hosts.join(", ")
                )
            }
            Violation::OverCapacity {
                host,
                used,
                capacity,
                at,
            } => write!(
                f,
                "{at}: host {host} over capacity: {} MHz / {} MiB used of {} MHz / {} MiB",
                used.cpu_mhz, used.mem_mib, capacity.cpu_mhz, capacity.mem_mib
            ),
            Violation::UserPowerOffOverridden {
                vm,
                user,
                powered_off_at,
                powered_on_at,
            } => write!(
                f,
                "{powered_on_at}: vm {vm} powered on by the manager although {user} powered it off at \
                 {powered_off_at}"
            ),
            Violation::VmLost { vm, host, at } => {
                write!(
                    f,
                    "{at}: vm {vm} left the inventory with host {host}, which the manager removed"
                )
            }
        }
    }
}

/// A stretch of time during which a protected VM did not run with a healthy guest (the truth, not
/// what the manager believed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outage {
    /// The VM.
    pub vm: VmId,
    /// When it stopped running healthy.
    pub from: Time,
    /// When it ran healthy again; `None` while it is still down.
    pub to: Option<Time>,
}

impl Outage {
    /// How long it lasted, up to `now` if it is still going on.
    pub fn duration(&self, now: Time) -> std::time::Duration {
        self.to.unwrap_or(now).since(self.from)
    }
}

/// One injected fault, for reports (detection and recovery times).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultRecord {
    /// When it was injected.
    pub at: Time,
    /// What.
    pub fault: Fault,
    /// Whether it changed anything (a crash of a VM that is off does not).
    pub applied: bool,
    /// Why it was not applied, if it was not.
    pub note: String,
}

impl fmt::Display for FaultRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.at, self.fault)?;
        if !self.applied {
            write!(f, " (not applied: {})", self.note)?;
        }
        Ok(())
    }
}

/// One hypervisor call, for reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpRecord {
    /// When it was called.
    pub started: Time,
    /// When it returned.
    pub finished: Time,
    /// What was asked.
    pub action: Action,
    /// What came back.
    pub result: Result<ActionOutcome, HvError>,
}

impl fmt::Display for OpRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{} {}: ", self.started, self.finished, self.action)?;
        match &self.result {
            Ok(ActionOutcome::Done) => f.write_str("ok"),
            Ok(ActionOutcome::SnapshotCreated(s)) => write!(f, "ok, snapshot {s}"),
            Ok(ActionOutcome::VmCreated(v)) => write!(f, "ok, vm {v}"),
            Ok(ActionOutcome::HostAdded(h)) => write!(f, "ok, host {h}"),
            Err(e) => write!(f, "error: {e}"),
        }
    }
}
