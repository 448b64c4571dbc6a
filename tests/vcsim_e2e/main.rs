//! End to end against vCenter: the real engine (supervisor, executor with retries, journal,
//! alarm sinks) drives the vcsim test bed (`testbed/vcsim`, started per test on free loopback
//! ports by `am-testbed`) through `am-vsphere`. Faults come from the test bed's control endpoint;
//! outcomes are checked in vcsim itself (a second vCenter session), in the test bed's truth (what
//! really runs where, whatever vCenter says) and in the journal.
//!
//! - `basics`: a crashed host, a user power-off, a red heartbeat, a vCenter restart, connection
//!   errors, every action of the adapter;
//! - `daemon`: `am_daemon::run::run_with`, what `am-daemon run` calls, with its journal and API;
//! - `ha`: manager HA on etcd: `am-daemon run` processes, a leader killed or frozen;
//! - `evacuate`: an evacuation asked over the API or by an Alertmanager alert: live migration within
//!   the bounds (latency injected per call), maintenance mode, the VMs' return; the disarm switch;
//! - `oob`: out-of-band control through `run`: BMCs (sushy-tools over TLS) and an admin vCenter;
//! - `safety`: partitions with and without probes, file locks, removal, capacity;
//! - `storage`: a datastore evacuated over the API: every VM's files moved by RelocateVM_Task;
//! - `told`: what `run` can be told (probes, spares and datastores, hooks, priorities, capacity
//!   models) and how vCenter's own failures show (a hang, an oversized answer).

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod basics;
mod common;
mod daemon;
mod evacuate;
mod ha;
mod oob;
mod rund;
mod safety;
mod storage;
mod told;
