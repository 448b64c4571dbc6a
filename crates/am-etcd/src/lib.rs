//! # am-etcd
//!
//! Manager HA on etcd: the pieces that let several `am-daemon`s share the work of watching VMs
//! with exactly one acting on each unit (a vCenter scope) at a time. Knows nothing of vCenter.
//!
//! - [`Etcd`]: a connected client on a thread of its own (the seam between the synchronous
//!   journal and the async client).
//! - [`campaign`] and [`Lease`]: leader election on a lease with a short TTL; the leader key's
//!   creation revision is the fencing token; [`Lease::check`] tells whether enough of the lease
//!   is left to start an action.
//! - [`EtcdJournal`]: the `am_core::Journal` in etcd, every append a transaction that succeeds
//!   only while the token holds; recovery by the same fold as the SQLite journal's
//!   ([`am_store::Recovery`]), so both give the same [`am_store::Recovered`].
//!
//! - [`shard`]: N daemons share M units: members, a balanced assignment, each unit led by
//!   exactly one member at a time, rebalanced when one joins or dies.
//!
//! Keys are laid out under `<prefix>/<unit>/` (see [`keys`]).

mod client;
mod error;
pub mod journal;
pub mod keys;
mod leader;
mod settings;
pub mod shard;

pub use client::Etcd;
pub use error::{EtcdError, Result};
pub use journal::{EtcdJournal, History, LastLeader, history, resign};
pub use keys::Keys;
pub use leader::{LeaderInfo, Lease, campaign, leader_of};
pub use settings::{Password, Settings, Tls};
