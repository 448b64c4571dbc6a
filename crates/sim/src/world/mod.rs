//! The simulator's state machine: the truth, the manager's view derived from it, the versioned
//! change log, fault injection, and every hypervisor operation as a synchronous function. No I/O,
//! no clock: the async layer (`sim.rs`) passes `now` in.
//!
//! One [`World`], its `impl` split by concern:
//!
//! - this file: the struct, the settings taken from the spec, and building the world from a spec;
//! - `cluster.rs`: the truth's shared rules (lookups, capacity, datastores and mounts, file locks,
//!   booting a VM, making snapshots and clones) and the truth queries;
//! - `vm_ops.rs` and `host_ops.rs`: the hypervisor operations on VMs and on hosts;
//! - `inject.rs`: fault injection ([`InjectError`], `check_fault`, `inject`);
//! - `api.rs`: injected API faults and latency, busy objects ([`ApiGate`](api::ApiGate));
//! - `network.rs`: manager isolation and probe answers ([`Network`](network::Network));
//! - `feed.rs`: the published view and the change log ([`Feed`](feed::Feed));
//! - `timers.rs`: virtual time, advancing to now ([`Timers`](timers::Timers));
//! - `recorder.rs`: invariant violations, outages and histories ([`Recorder`](recorder::Recorder)).
//!
//! The truth (hosts, VMs, datastores, spares) is `World`'s own fields; every other concern keeps
//! its state in its own sub-struct, whose fields only its file touches.

mod api;
mod cluster;
mod feed;
mod host_ops;
mod inject;
mod network;
mod recorder;
mod timers;
mod vm_ops;

pub use inject::InjectError;

use crate::prng::Prng;
use crate::spec::{ClusterSpec, HostSpec, Latencies, SpecError, SpecPower};
use crate::truth::{GuestState, HostTruth, VmTruth};
use am_core::{DatastoreId, HostId, Time, VmId};
use api::ApiGate;
use cluster::{DsTruth, host_truth};
use feed::Feed;
use network::Network;
use recorder::Recorder;
use std::collections::BTreeMap;
use std::time::Duration;
use timers::Timers;

/// Settings taken from the spec.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub manager_user: String,
    pub latencies: Latencies,
    pub heartbeat_delay: Duration,
    pub hb_period_ms: u64,
    pub unreachable_delay: Duration,
    pub enforce_capacity: bool,
    pub log_capacity: usize,
    pub storage_heartbeats: bool,
    pub file_locks: bool,
    /// Hosts have BMCs the manager reads.
    pub bmc: bool,
}

pub(crate) struct World {
    pub cfg: Settings,
    // The truth.
    hosts: BTreeMap<HostId, HostTruth>,
    vms: BTreeMap<VmId, VmTruth>,
    datastores: BTreeMap<DatastoreId, DsTruth>,
    spares: BTreeMap<String, HostSpec>,
    next_snapshot: u64,
    next_clone: u64,
    /// The published view and the change log.
    feed: Feed,
    /// How far virtual time is processed.
    timers: Timers,
    /// Violations, outages, histories.
    record: Recorder,
    /// Injected API faults and latency, busy objects.
    api: ApiGate,
    /// Manager isolation and probe loss.
    net: Network,
}

impl World {
    pub fn new(spec: &ClusterSpec) -> Result<World, SpecError> {
        spec.validate()?;
        let cfg = Settings {
            manager_user: spec.manager_user.clone(),
            latencies: spec.latencies.clone(),
            heartbeat_delay: spec.heartbeat_delay,
            hb_period_ms: u64::try_from(spec.storage_heartbeat_period.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
            unreachable_delay: spec.unreachable_delay,
            enforce_capacity: spec.enforce_capacity,
            log_capacity: spec.change_log_capacity.max(1),
            storage_heartbeats: spec.storage_heartbeats,
            file_locks: spec.file_locks,
            bmc: spec.bmc,
        };
        let hosts = spec
            .hosts
            .iter()
            .map(|h| (HostId::new(&h.id), host_truth(&h.id, h, Time::ZERO)))
            .collect();
        let datastores = spec
            .datastores
            .iter()
            .map(|d| {
                let id = DatastoreId::new(&d.id);
                let ds = DsTruth {
                    id: id.clone(),
                    capacity_mib: d.capacity_mib,
                    hosts: d.hosts.as_ref().map(|hs| hs.iter().map(HostId::new).collect()),
                };
                (id, ds)
            })
            .collect();
        let default_ds = spec.datastores.first().map(|d| DatastoreId::new(&d.id));
        let mut cpu_rng = Prng::stream(spec.seed, 0xC9);
        let vms = spec
            .vms
            .iter()
            .map(|v| {
                let host = HostId::new(&v.host);
                let pct = 20 + cpu_rng.below(50);
                let vm = VmTruth {
                    id: VmId::new(&v.id),
                    name: v.id.clone(),
                    demand: v.demand(),
                    priority: v.priority,
                    affinity_group: v.affinity_group.clone(),
                    anti_affinity_group: v.anti_affinity_group.clone(),
                    guest_address: v.guest_address.clone(),
                    datastore: v
                        .datastore
                        .as_ref()
                        .map(DatastoreId::new)
                        .or_else(|| default_ds.clone()),
                    storage_mib: v.storage_mib,
                    backup_of: None,
                    registered: Some(host.clone()),
                    running_on: if v.power == SpecPower::On {
                        vec![host]
                    } else {
                        Vec::new()
                    },
                    guest: GuestState::Ok,
                    guest_since: Time::ZERO,
                    fault: None,
                    snapshots: Vec::new(),
                    user_off: None,
                    listed: true,
                    cpu_usage: (v.cpu_mhz * pct / 100).max(1),
                };
                (vm.id.clone(), vm)
            })
            .collect();
        let mut w = World {
            cfg,
            hosts,
            vms,
            datastores,
            spares: spec.spares.clone(),
            next_snapshot: 1,
            next_clone: 1,
            feed: Feed::default(),
            timers: Timers::new(),
            record: Recorder::default(),
            api: ApiGate::new(spec.seed),
            net: Network::new(spec.probe_loss, spec.seed),
        };
        let protected: Vec<VmId> = w
            .vms
            .values()
            .filter(|v| v.is_protected())
            .map(|v| v.id.clone())
            .collect();
        if spec.initial_snapshots {
            for id in &protected {
                w.add_snapshot(id, "initial", Time::ZERO);
            }
        }
        if spec.initial_clones {
            let host_ids: Vec<HostId> = w.hosts.keys().cloned().collect();
            for id in &protected {
                let Some(src) = w.vms.get(id).and_then(|v| v.registered.clone()) else {
                    continue;
                };
                let pos = host_ids.iter().position(|h| *h == src).unwrap_or(0);
                let target = host_ids[(pos + 1) % host_ids.len()].clone();
                w.make_clone(id, &format!("{id}-backup"), &target, None);
            }
        }
        w.publish_initial_view();
        w.check_invariants(Time::ZERO);
        Ok(w)
    }
}
