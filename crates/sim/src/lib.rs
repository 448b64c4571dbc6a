//! # sim
//!
//! A simulated vSphere-like cluster for the Availability Manager: it implements the am-core
//! traits ([`Hypervisor`](am_core::Hypervisor), [`InventorySource`](am_core::InventorySource),
//! [`Prober`](am_core::Prober) through [`SimProber`], [`Clock`](am_core::Clock) through
//! [`SimClock`]), injects faults, runs on virtual time and knows the truth, so tests and the demo
//! can check invariants ([`Sim::violations`]).
//!
//! ## Time
//!
//! The simulator uses tokio's clock. Run it on a runtime with paused time
//! (`#[tokio::test(start_paused = true)]`, or a current-thread runtime built with
//! `start_paused(true)`): time jumps ahead whenever every task waits, so a ten-minute scenario
//! takes milliseconds and is deterministic. [`am_core::Time`] is milliseconds since the [`Sim`]
//! was created; create it inside the runtime. All randomness (probe loss, probabilistic API
//! faults, generated clusters) comes from [`ClusterSpec::seed`].
//!
//! ## What the manager sees
//!
//! [`InventorySource::snapshot`](am_core::InventorySource::snapshot) and
//! [`changes`](am_core::InventorySource::changes) show what vCenter would: a crashed, isolated,
//! disconnected or fenced host is `NotResponding` and its VMs keep their last known state. Live
//! hosts (up, isolated, disconnected) write their datastore heartbeat every 5 s
//! (`Host::storage_heartbeat`, one `HostUpsert` each time); crashed and fenced hosts' heartbeat
//! freezes. A VM's tools heartbeat is green while its guest is fine, red `heartbeat_delay` after a
//! guest crash or hang, gray when off; its CPU usage is zero when hung or off. Versions are decimal
//! strings; a version older than the bounded change log (or unreadable) gets a full resync
//! (removals, then upserts of everything).
//!
//! Operations through the [`Hypervisor`](am_core::Hypervisor) trait sleep their latency, then fail
//! if the manager is isolated or an injected API fault fires, then check their preconditions
//! against the truth, then change it. Their power events carry the user
//! [`ClusterSpec::manager_user`] (`am-manager`). A VM on a host vCenter cannot manage gets
//! `Unreachable` for everything except `failover`, which registers and powers the VM on elsewhere
//! without looking whether it still runs: on an isolated host it then runs twice, and
//! [`Violation::DoubleRun`] records it.
//!
//! ## Cluster spec (TOML)
//!
//! ```toml
//! seed = 42                      # every random draw derives from it
//! manager_user = "am-manager"    # default
//! initial_snapshots = true       # every protected VM starts with a good snapshot "initial"
//! initial_clones = true          # ... and a powered-off backup clone on the next host
//! heartbeat_delay = "5s"         # guest crash/hang -> tools heartbeat red (default 5s)
//! storage_heartbeat_period = "5s"
//! unreachable_delay = "1s"       # how long calls take to fail while the manager is isolated
//! enforce_capacity = true        # false: let the OverCapacity invariant catch bad placements
//! probe_loss = 0.0               # probability a probe is lost
//! change_log_capacity = 20000
//!
//! [latencies]                    # any Action name; defaults shown for a few
//! power_on = "1s"
//! revert_snapshot = "3s"
//! clone = "10s"
//! migrate_cold = "5s"
//! migrate_live = "8s"
//! revive_host = "20s"
//! add_host = "15s"
//!
//! [[hosts]]
//! id = "h1"
//! cpu_mhz = 32000
//! mem_mib = 131072
//! failure_domain = "rack-1"      # optional
//! mgmt_address = "10.0.0.11"     # optional; what the manager probes
//!
//! [[hosts]]
//! id = "h2"
//! cpu_mhz = 32000
//! mem_mib = 131072
//!
//! [[datastores]]                 # optional; default: one "ds-shared" mounted by every host
//! id = "ds-shared"
//! capacity_mib = 4194304
//! # hosts = ["h1", "h2"]         # absent: every host, spares added later included
//!
//! [[vms]]
//! id = "vm-001"
//! host = "h1"
//! cpu_mhz = 2000
//! mem_mib = 4096
//! priority = "high"              # disabled | lowest | low | medium (default) | high | highest
//! power = "on"                   # on (default) | off
//! anti_affinity_group = "web"    # optional; also affinity_group
//! guest_address = "10.1.0.1"     # optional; what the manager probes
//! # datastore = "ds-shared"      # optional; default the first datastore
//!
//! [spares.spare-1]               # add_host("spare-1") takes it; id defaults to the name
//! cpu_mhz = 32000
//! mem_mib = 131072
//! mgmt_address = "10.0.1.10"
//! ```
//!
//! [`ClusterSpec::generate`] makes a plausible cluster of any size.
//!
//! ## Fault script
//!
//! One fault per line, `at <time> <fault>`; `#` starts a comment; times are `30s`, `1500ms`, `2m`,
//! `1m30s`; lines need not be in order.
//!
//! ```text
//! # comment
//! at 30s host h3 crash
//! at 31s host h4 crash permanent     # revive_host fails
//! at 45s vm vm-007 crash             # depth transient by default
//! at 46s vm vm-008 crash corrupt     # transient | corrupt | disklost | hostlocal
//! at 60s vm vm-010 hang              # (a depth may follow, as for crash)
//! at 70s vm vm-011 poweroff by alice # a user powers it off
//! at 71s vm vm-012 poweroff          # no user: its process died (a crash power-off)
//! at 72s vm vm-011 poweron by alice  # a user powers it on
//! at 80s host h2 isolate             # runs on, unreachable: the split-brain trap
//! at 95s host h2 heal                # ends isolate / disconnect
//! at 85s host h5 disconnect          # agent hiccup: NotResponding but pingable
//! at 90s api power_on fail 2 timeout # the next 2 power_on calls fail
//! at 90s api * fail 10% busy         # each hypervisor call fails with 10% (0% removes it)
//! at 90s api reset fail 1 lost-reply # the reset happens, the caller sees a timeout
//! at 91s api * latency 3s            # every call takes 3s longer (0s removes it)
//! at 100s probes loss 20%
//! at 110s manager isolate            # vCenter calls fail, every probe fails
//! at 120s manager heal
//! at 130s operator evacuate h2 reason maintenance enter-maintenance
//! at 140s operator maintenance exit h2  # (also `maintenance enter`): to the manager, not the cluster
//! ```
//!
//! Error kinds: `timeout`, `unreachable`, `busy`, `api` (not retryable), `lost-reply`. Methods: an
//! [`Action`](am_core::Action) name (`power_on`, `migrate_cold`, `clone`, ...), `migrate` (both
//! kinds), `snapshot` and `changes` (the inventory feed), or `*` (every hypervisor operation, not
//! the inventory feed).
//!
//! What each VM fault depth needs: `transient`: any restart; `corrupt`: a revert to a snapshot
//! taken before the fault, or a restore of a good backup clone; `disklost`: a restore of a good
//! backup clone; `hostlocal`: running on another host (cold migration, failover, restore there).
//!
//! ```
//! use am_core::{Action, Hypervisor, InventorySource};
//! use sim::{ClusterSpec, FaultScript, Sim};
//!
//! let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
//! rt.block_on(async {
//!     let sim = Sim::new(&ClusterSpec::generate(4, 20, 1, 7)).unwrap();
//!     let script = FaultScript::parse("at 10s vm vm-001 crash").unwrap();
//!     sim.run_script(script).await;
//!     tokio::time::sleep(std::time::Duration::from_secs(6)).await;
//!     let (inv, _version) = sim.snapshot().await.unwrap();
//!     assert_eq!(inv.vms["vm-001"].heartbeat, am_core::GuestHeartbeat::Red);
//!     sim.execute(&Action::Reset { vm: "vm-001".into() }).await.unwrap();
//!     assert!(sim.vm_healthy(&"vm-001".into()));
//!     assert!(sim.violations().is_empty());
//! });
//! ```

mod duration;
mod fault;
mod prng;
mod sim;
mod spec;
mod truth;
mod world;

#[cfg(test)]
mod tests;

pub use duration::{format_duration, parse_duration, serde_duration};
pub use fault::{ApiErrorKind, ApiTrigger, Fault, FaultDepth, FaultScript, ScheduledFault, ScriptError};
pub use prng::Prng;
pub use sim::{BMC_RTT, PROBE_RTT, Sim, SimClock, SimPower, SimProber};
pub use spec::{ClusterSpec, DatastoreSpec, HostSpec, Latencies, SpecError, SpecPower, VmSpec};
pub use truth::{
    FaultRecord, GuestState, HostCondition, HostTruth, OpRecord, Outage, SnapshotTruth, Violation, VmFault,
    VmTruth,
};
pub use world::InjectError;
