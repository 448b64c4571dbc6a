//! Changes to the inventory and events from the management server.

use crate::ids::{HostId, VmId};
use crate::model::{Datastore, Host, Snapshot, Vm};
use crate::time::Time;
use serde::{Deserialize, Serialize};

/// One change to the [`Inventory`](crate::Inventory).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InventoryDelta {
    /// A host appeared or changed.
    HostUpsert(Host),
    /// A host left the inventory.
    HostRemoved(HostId),
    /// A VM appeared or changed.
    VmUpsert(Vm),
    /// A VM left the inventory.
    VmRemoved(VmId),
    /// A datastore appeared or changed.
    DatastoreUpsert(Datastore),
    /// The snapshot list of a VM changed (the whole list, oldest first).
    Snapshots {
        /// The VM.
        vm: VmId,
        /// Its snapshots now.
        snapshots: Vec<Snapshot>,
    },
}

/// An event from the management server, such as vCenter's event manager.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterEvent {
    /// When it happened.
    pub at: Time,
    /// What happened.
    pub kind: EventKind,
}

/// What an event says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// A VM was powered off; `user` is who asked, `None` when nobody did (a crash, the host).
    VmPoweredOff {
        /// The VM.
        vm: VmId,
        /// Who asked for it.
        user: Option<String>,
    },
    /// A VM was powered on; `user` is who asked.
    VmPoweredOn {
        /// The VM.
        vm: VmId,
        /// Who asked for it.
        user: Option<String>,
    },
    /// The management server lost its connection to a host.
    HostConnectionLost {
        /// The host.
        host: HostId,
    },
    /// Anything else, kept for the audit trail.
    Other {
        /// The event's text.
        message: String,
    },
}
