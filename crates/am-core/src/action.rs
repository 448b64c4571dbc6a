//! Actions on the cluster: what the supervisor asks the executor to do through a
//! [`Hypervisor`](crate::Hypervisor).

use crate::ids::{DatastoreId, HostId, SnapshotId, VmId};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Identifies one action from the moment the supervisor decides it until its outcome returns.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ActionId(pub u64);

impl fmt::Display for ActionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// One hypervisor action.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Action {
    /// Power a VM on where it is registered.
    PowerOn {
        /// The VM.
        vm: VmId,
    },
    /// Power a VM off (hard).
    PowerOff {
        /// The VM.
        vm: VmId,
    },
    /// Reset a VM (hard reboot).
    Reset {
        /// The VM.
        vm: VmId,
    },
    /// Revert a VM to a snapshot (`None`: its current snapshot) and power it on.
    RevertSnapshot {
        /// The VM.
        vm: VmId,
        /// The snapshot, or the current one.
        snapshot: Option<SnapshotId>,
    },
    /// Take a snapshot.
    CreateSnapshot {
        /// The VM.
        vm: VmId,
        /// Its name.
        name: String,
    },
    /// Remove a snapshot.
    RemoveSnapshot {
        /// The VM.
        vm: VmId,
        /// The snapshot.
        snapshot: SnapshotId,
    },
    /// Clone a VM as a powered-off backup on `host`.
    Clone {
        /// The source VM.
        vm: VmId,
        /// Name of the clone.
        name: String,
        /// Where the clone is registered.
        host: HostId,
        /// Where its files go (`None`: the source's datastore).
        datastore: Option<DatastoreId>,
    },
    /// Bring `vm` back from its backup clone `backup`, running on `host`.
    RestoreClone {
        /// The VM to restore.
        vm: VmId,
        /// The backup clone.
        backup: VmId,
        /// Where it runs afterwards.
        host: HostId,
    },
    /// Move a powered-off (or crashed) VM to another host and power it on there.
    MigrateCold {
        /// The VM.
        vm: VmId,
        /// The target host.
        to: HostId,
    },
    /// Move a running VM to another host without stopping it.
    MigrateLive {
        /// The VM.
        vm: VmId,
        /// The target host.
        to: HostId,
    },
    /// Restart a VM whose host died on host `to`: register it there and power it on.
    Failover {
        /// The VM.
        vm: VmId,
        /// The surviving host.
        to: HostId,
    },
    /// Register a VM's files on a host.
    Register {
        /// The VM.
        vm: VmId,
        /// The host.
        host: HostId,
    },
    /// Unregister a VM (its files stay).
    Unregister {
        /// The VM.
        vm: VmId,
    },
    /// Delete one of the manager's own backup clones (powered off), files and all. The backend
    /// refuses any VM that is not such a clone.
    DeleteBackup {
        /// The backup clone.
        vm: VmId,
    },
    /// Look at a VM's files for fresh locks, changing nothing: `Err(HvError::Locked)` while a
    /// host still runs it, done when nothing holds them. What tells a host that is only cut off
    /// from one that died when its connection state is the only other signal.
    CheckLocks {
        /// The VM.
        vm: VmId,
    },
    /// Ask the management server to reconnect a host.
    ReconnectHost {
        /// The host.
        host: HostId,
    },
    /// Out-of-band revival: a hook, IPMI power cycle, or reverting the host's own snapshot in an
    /// admin vCenter. Kills whatever still ran on the host.
    ReviveHost {
        /// The host.
        host: HostId,
    },
    /// Out-of-band power-off (fencing) so that the host's VMs can no longer run anywhere.
    FenceHost {
        /// The host.
        host: HostId,
    },
    /// Remove a host from the inventory.
    RemoveHost {
        /// The host.
        host: HostId,
    },
    /// Add a spare host from the configured pool.
    AddHost {
        /// The spare's name in the pool.
        spare: String,
    },
    /// Make a datastore available on a host (after adding a spare): mount the same NFS export the
    /// other hosts mount, or rescan for a VMFS volume.
    MountDatastore {
        /// The host.
        host: HostId,
        /// The datastore.
        datastore: DatastoreId,
    },
    /// Move a VM's registration and/or its files without changing its power (`RelocateVM_Task`):
    /// a running VM with only `datastore` is a Storage vMotion, a powered-off VM with `host` a
    /// cold move (within the same cluster: its resource pool stays). At least one of the two is
    /// set; `None` keeps where it is.
    Relocate {
        /// The VM.
        vm: VmId,
        /// The host to register (or run) it on, or `None`: where it is.
        host: Option<HostId>,
        /// The datastore to move all its files to, or `None`: where they are.
        datastore: Option<DatastoreId>,
    },
    /// Put a host into maintenance mode.
    EnterMaintenance {
        /// The host.
        host: HostId,
    },
    /// Take a host out of maintenance mode.
    ExitMaintenance {
        /// The host.
        host: HostId,
    },
}

impl Action {
    /// The VM this action is about, if it is about one.
    pub fn vm(&self) -> Option<&VmId> {
        match self {
            Action::PowerOn { vm }
            | Action::PowerOff { vm }
            | Action::Reset { vm }
            | Action::RevertSnapshot { vm, .. }
            | Action::CreateSnapshot { vm, .. }
            | Action::RemoveSnapshot { vm, .. }
            | Action::Clone { vm, .. }
            | Action::RestoreClone { vm, .. }
            | Action::MigrateCold { vm, .. }
            | Action::MigrateLive { vm, .. }
            | Action::Failover { vm, .. }
            | Action::Register { vm, .. }
            | Action::Unregister { vm }
            | Action::CheckLocks { vm }
            | Action::Relocate { vm, .. }
            | Action::DeleteBackup { vm } => Some(vm),
            _ => None,
        }
    }

    /// The host this action targets or acts on, if any (the target host for moves).
    pub fn host(&self) -> Option<&HostId> {
        match self {
            Action::Clone { host, .. }
            | Action::RestoreClone { host, .. }
            | Action::Register { host, .. } => Some(host),
            Action::MigrateCold { to, .. } | Action::MigrateLive { to, .. } | Action::Failover { to, .. } => {
                Some(to)
            }
            Action::Relocate { host, .. } => host.as_ref(),
            Action::ReconnectHost { host }
            | Action::ReviveHost { host }
            | Action::FenceHost { host }
            | Action::RemoveHost { host }
            | Action::MountDatastore { host, .. }
            | Action::EnterMaintenance { host }
            | Action::ExitMaintenance { host } => Some(host),
            _ => None,
        }
    }

    /// A short name of the operation, e.g. `reset`.
    pub fn name(&self) -> &'static str {
        match self {
            Action::PowerOn { .. } => "power_on",
            Action::PowerOff { .. } => "power_off",
            Action::Reset { .. } => "reset",
            Action::RevertSnapshot { .. } => "revert_snapshot",
            Action::CreateSnapshot { .. } => "create_snapshot",
            Action::RemoveSnapshot { .. } => "remove_snapshot",
            Action::Clone { .. } => "clone",
            Action::RestoreClone { .. } => "restore_clone",
            Action::MigrateCold { .. } => "migrate_cold",
            Action::MigrateLive { .. } => "migrate_live",
            Action::Failover { .. } => "failover",
            Action::Register { .. } => "register",
            Action::Unregister { .. } => "unregister",
            Action::CheckLocks { .. } => "check_locks",
            Action::DeleteBackup { .. } => "delete_backup",
            Action::ReconnectHost { .. } => "reconnect_host",
            Action::ReviveHost { .. } => "revive_host",
            Action::FenceHost { .. } => "fence_host",
            Action::RemoveHost { .. } => "remove_host",
            Action::AddHost { .. } => "add_host",
            Action::MountDatastore { .. } => "mount_datastore",
            Action::Relocate { .. } => "relocate",
            Action::EnterMaintenance { .. } => "enter_maintenance",
            Action::ExitMaintenance { .. } => "exit_maintenance",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::RevertSnapshot {
                vm,
                snapshot: Some(s),
            } => write!(f, "revert_snapshot {vm} to {s}"),
            Action::CreateSnapshot { vm, name } => write!(f, "create_snapshot {vm} {name}"),
            Action::RemoveSnapshot { vm, snapshot } => write!(f, "remove_snapshot {vm} {snapshot}"),
            Action::Clone { vm, name, host, .. } => write!(f, "clone {vm} as {name} on {host}"),
            Action::RestoreClone { vm, backup, host } => {
                write!(f, "restore_clone {vm} from {backup} on {host}")
            }
            Action::MigrateCold { vm, to } | Action::MigrateLive { vm, to } | Action::Failover { vm, to } => {
                write!(f, "{} {vm} to {to}", self.name())
            }
            Action::Register { vm, host } => write!(f, "register {vm} on {host}"),
            Action::AddHost { spare } => write!(f, "add_host {spare}"),
            Action::MountDatastore { host, datastore } => write!(f, "mount_datastore {datastore} on {host}"),
            Action::Relocate { vm, host, datastore } => {
                write!(f, "relocate {vm}")?;
                if let Some(h) = host {
                    write!(f, " to {h}")?;
                }
                if let Some(d) = datastore {
                    write!(f, " onto {d}")?;
                }
                Ok(())
            }
            other => match (other.vm(), other.host()) {
                (Some(vm), _) => write!(f, "{} {vm}", other.name()),
                (None, Some(h)) => write!(f, "{} {h}", other.name()),
                (None, None) => f.write_str(other.name()),
            },
        }
    }
}

/// What a successful action produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionOutcome {
    /// Done, nothing to report.
    Done,
    /// A snapshot was created.
    SnapshotCreated(SnapshotId),
    /// A VM (clone) was created.
    VmCreated(VmId),
    /// A host was added.
    HostAdded(HostId),
}

impl ActionOutcome {
    /// The snapshot created, if this outcome is one.
    pub fn snapshot(&self) -> Option<&SnapshotId> {
        match self {
            ActionOutcome::SnapshotCreated(s) => Some(s),
            _ => None,
        }
    }

    /// The VM created, if this outcome is one.
    pub fn vm(&self) -> Option<&VmId> {
        match self {
            ActionOutcome::VmCreated(v) => Some(v),
            _ => None,
        }
    }

    /// The host added, if this outcome is one.
    pub fn host(&self) -> Option<&HostId> {
        match self {
            ActionOutcome::HostAdded(h) => Some(h),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_subject_and_target() {
        let a = Action::Failover {
            vm: "vm-1".into(),
            to: "h2".into(),
        };
        assert_eq!(a.to_string(), "failover vm-1 to h2");
        assert_eq!(a.vm(), Some(&VmId::from("vm-1")));
        assert_eq!(a.host(), Some(&HostId::from("h2")));
        assert_eq!(Action::Reset { vm: "v".into() }.to_string(), "reset v");
        assert_eq!(
            Action::ReviveHost { host: "h3".into() }.to_string(),
            "revive_host h3"
        );
    }

    #[test]
    fn relocate_names_its_targets() {
        let storage = Action::Relocate {
            vm: "vm-1".into(),
            host: None,
            datastore: Some("ds-2".into()),
        };
        assert_eq!(storage.to_string(), "relocate vm-1 onto ds-2");
        assert_eq!(storage.host(), None);
        assert_eq!(storage.vm(), Some(&VmId::from("vm-1")));
        let cold = Action::Relocate {
            vm: "vm-1".into(),
            host: Some("h2".into()),
            datastore: None,
        };
        assert_eq!(cold.to_string(), "relocate vm-1 to h2");
        assert_eq!(cold.host(), Some(&HostId::from("h2")));
        let json = serde_json::to_string(&storage).unwrap();
        assert_eq!(
            json,
            r#"{"op":"relocate","vm":"vm-1","host":null,"datastore":"ds-2"}"#
        );
    }

    #[test]
    fn serializes_with_an_op_tag() {
        let json = serde_json::to_string(&Action::PowerOn { vm: "vm-9".into() }).unwrap();
        assert_eq!(json, r#"{"op":"power_on","vm":"vm-9"}"#);
    }
}
