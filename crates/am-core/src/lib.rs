//! # am-core
//!
//! Domain types of the Availability Manager (ids, hosts, VMs, resources, health) and the traits
//! between its layers. This crate has no I/O and almost no dependencies: every other crate of the
//! workspace speaks these types.
//!
//! Data flows one way:
//!
//! ```text
//! InventorySource / Prober  --Observation-->  supervisor  --Command-->  executor  --Action-->  Hypervisor
//!          ^                                      ^                                               |
//!          +--------------------------------------+------- Observation::ActionDone <-------------+
//! ```

pub mod action;
pub mod error;
pub mod event;
pub mod glob;
pub mod ids;
pub mod journal;
pub mod model;
pub mod protocol;
pub mod time;
pub mod traits;

pub use action::{Action, ActionId, ActionOutcome};
pub use error::HvError;
pub use event::{ClusterEvent, EventKind, InventoryDelta};
pub use ids::{DatastoreId, HostId, SnapshotId, VmId};
pub use journal::{Journal, JournalError, MemoryJournal, Record};
pub use model::{
    ConnectionState, Datastore, GuestHeartbeat, Host, Inventory, PowerState, Resources, RestartPriority,
    Snapshot, Vm,
};
pub use protocol::{
    Alarm, AlarmChange, AlarmKind, Command, LogEntry, LogKind, Observation, OperatorRequest, Output,
    Severity, Subject,
};
pub use time::Time;
pub use traits::{
    Changes, Clock, Hypervisor, InventorySource, PowerReading, PowerSource, ProbeResult, ProbeTarget, Prober,
};
#[cfg(feature = "mock")]
pub use traits::{MockHypervisor, MockInventorySource, MockProber};
