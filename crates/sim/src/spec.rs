//! The description of a simulated cluster: hosts, VMs, datastores, spare hosts, latencies.
//! Loadable from TOML (see the crate documentation for the format).

use crate::duration::serde_duration;
use crate::prng::Prng;
use am_core::{Resources, RestartPriority};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Why a [`ClusterSpec`] could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The TOML text does not parse or does not match the format.
    #[error("cluster spec: {0}")]
    Toml(#[from] toml::de::Error),
    /// The spec could not be written as TOML.
    #[error("cluster spec: cannot write TOML: {0}")]
    TomlWrite(#[from] toml::ser::Error),
    /// Two objects of one kind have the same id.
    #[error("cluster spec: duplicate {kind} id `{id}`")]
    Duplicate {
        /// `host`, `vm`, `datastore` or `spare`.
        kind: &'static str,
        /// The id.
        id: String,
    },
    /// An object refers to one that does not exist.
    #[error("cluster spec: {from} refers to unknown {kind} `{id}`")]
    UnknownRef {
        /// Who refers to it (e.g. `vm vm-001`).
        from: String,
        /// What kind of object (`host`, `datastore`).
        kind: &'static str,
        /// The id.
        id: String,
    },
    /// A value is out of range (e.g. a probability above 1).
    #[error("cluster spec: {0}")]
    Invalid(String),
}

/// A VM's initial power state in a spec.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpecPower {
    /// Running (the default).
    #[default]
    On,
    /// Off.
    Off,
}

/// A host (or a spare host).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    /// Id (and name). For a spare, empty means the spare's name in the pool.
    #[serde(default)]
    pub id: String,
    /// CPU capacity in MHz.
    pub cpu_mhz: u64,
    /// Memory capacity in MiB.
    pub mem_mib: u64,
    /// Failure domain (rack, chassis...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_domain: Option<String>,
    /// Management address (what the manager probes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mgmt_address: Option<String>,
}

impl HostSpec {
    /// A host with this id and capacity and nothing else.
    pub fn new(id: impl Into<String>, cpu_mhz: u64, mem_mib: u64) -> Self {
        HostSpec {
            id: id.into(),
            cpu_mhz,
            mem_mib,
            failure_domain: None,
            mgmt_address: None,
        }
    }

    /// Its capacity.
    pub fn capacity(&self) -> Resources {
        Resources::new(self.cpu_mhz, self.mem_mib)
    }
}

fn default_priority() -> RestartPriority {
    RestartPriority::Medium
}

/// A VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    /// Id (and name).
    pub id: String,
    /// The host it is registered (and runs) on.
    pub host: String,
    /// CPU demand in MHz.
    pub cpu_mhz: u64,
    /// Memory demand in MiB.
    pub mem_mib: u64,
    /// Restart priority (`disabled`, `lowest`, `low`, `medium`, `high`, `highest`); default `medium`.
    #[serde(default = "default_priority")]
    pub priority: RestartPriority,
    /// Initial power state (`on` or `off`); default `on`.
    #[serde(default)]
    pub power: SpecPower,
    /// Affinity group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity_group: Option<String>,
    /// Anti-affinity group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anti_affinity_group: Option<String>,
    /// Guest address (what the manager probes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_address: Option<String>,
    /// Datastore holding its files; default: the first datastore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datastore: Option<String>,
    /// The space its files take in MiB; default: not reported (and taking none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_mib: Option<u64>,
}

impl VmSpec {
    /// A powered-on, medium-priority VM on `host`.
    pub fn new(id: impl Into<String>, host: impl Into<String>, cpu_mhz: u64, mem_mib: u64) -> Self {
        VmSpec {
            id: id.into(),
            host: host.into(),
            cpu_mhz,
            mem_mib,
            priority: RestartPriority::Medium,
            power: SpecPower::On,
            affinity_group: None,
            anti_affinity_group: None,
            guest_address: None,
            datastore: None,
            storage_mib: None,
        }
    }

    /// Its demand.
    pub fn demand(&self) -> Resources {
        Resources::new(self.cpu_mhz, self.mem_mib)
    }
}

fn default_ds_capacity() -> u64 {
    4 * 1024 * 1024
}

/// A datastore.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatastoreSpec {
    /// Id (and name).
    pub id: String,
    /// Capacity in MiB (default 4 TiB). 40 % of it is taken by other files; the VMs' files
    /// (`storage_mib`) take the rest of what is used.
    #[serde(default = "default_ds_capacity")]
    pub capacity_mib: u64,
    /// Hosts that mount it; absent means every host of the cluster (shared). A spare added later
    /// mounts it only when asked to (`mount_datastore`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
}

fn default_datastores() -> Vec<DatastoreSpec> {
    vec![DatastoreSpec {
        id: "ds-shared".into(),
        capacity_mib: default_ds_capacity(),
        hosts: None,
    }]
}

macro_rules! latencies {
    ($($(#[$doc:meta])* $name:ident = $ms:expr;)*) => {
        /// How long each hypervisor operation takes (virtual time). Keys are the operation names of
        /// [`am_core::Action::name`].
        #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct Latencies {
            $($(#[$doc])* #[serde(with = "serde_duration")] pub $name: Duration,)*
        }

        impl Default for Latencies {
            fn default() -> Self {
                Latencies { $($name: Duration::from_millis($ms),)* }
            }
        }

        impl Latencies {
            /// The latency of the operation named `op` (an [`am_core::Action::name`]); zero if
            /// unknown.
            pub fn get(&self, op: &str) -> Duration {
                match op {
                    $(stringify!($name) => self.$name,)*
                    _ => Duration::ZERO,
                }
            }
        }
    };
}

latencies! {
    /// Power on (default 1s).
    power_on = 1_000;
    /// Power off (default 1s).
    power_off = 1_000;
    /// Reset (default 1s).
    reset = 1_000;
    /// Revert to a snapshot (default 3s).
    revert_snapshot = 3_000;
    /// Take a snapshot (default 2s).
    create_snapshot = 2_000;
    /// Remove a snapshot (default 1s).
    remove_snapshot = 1_000;
    /// Clone (default 10s).
    clone = 10_000;
    /// Restore from a backup clone (default 8s).
    restore_clone = 8_000;
    /// Cold migration (default 5s).
    migrate_cold = 5_000;
    /// Live migration (default 8s).
    migrate_live = 8_000;
    /// Failover (default 2s).
    failover = 2_000;
    /// Register (default 1s).
    register = 1_000;
    /// Unregister (default 1s).
    unregister = 1_000;
    /// Reconnect a host (default 2s).
    reconnect_host = 2_000;
    /// Out-of-band revival (default 20s).
    revive_host = 20_000;
    /// Fence (default 2s).
    fence_host = 2_000;
    /// Remove a host (default 1s).
    remove_host = 1_000;
    /// Add a spare host (default 15s).
    add_host = 15_000;
    /// Mount a datastore on a host (default 2s).
    mount_datastore = 2_000;
    /// Relocate a VM's files and/or registration, e.g. a Storage vMotion (default 12s).
    relocate = 12_000;
    /// Enter maintenance mode (default 1s).
    enter_maintenance = 1_000;
    /// Exit maintenance mode (default 1s).
    exit_maintenance = 1_000;
    /// The inventory snapshot call (default 0s).
    snapshot = 0;
}

fn default_manager_user() -> String {
    "am-manager".into()
}
fn default_heartbeat_delay() -> Duration {
    Duration::from_secs(5)
}
fn default_storage_heartbeat_period() -> Duration {
    Duration::from_secs(5)
}
fn default_unreachable_delay() -> Duration {
    Duration::from_secs(1)
}
fn default_true() -> bool {
    true
}
fn default_log_capacity() -> usize {
    20_000
}

/// A whole simulated cluster. See the crate documentation for the TOML format.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    /// Seed of every random draw (probe loss, probabilistic API faults, generated values).
    #[serde(default)]
    pub seed: u64,
    /// The user name of operations done through the `Hypervisor` trait (default `am-manager`).
    #[serde(default = "default_manager_user")]
    pub manager_user: String,
    /// Every protected VM starts with a good snapshot named `initial`.
    #[serde(default)]
    pub initial_snapshots: bool,
    /// Every protected VM starts with a powered-off backup clone on another host.
    #[serde(default)]
    pub initial_clones: bool,
    /// How long after a guest crash or hang its tools heartbeat turns red (default 5s).
    #[serde(default = "default_heartbeat_delay", with = "serde_duration")]
    pub heartbeat_delay: Duration,
    /// How often live hosts write their datastore heartbeat (default 5s).
    #[serde(default = "default_storage_heartbeat_period", with = "serde_duration")]
    pub storage_heartbeat_period: Duration,
    /// Whether hosts have a storage heartbeat the manager can read (default true). vCenter does
    /// not expose one: `false` is a cluster as `am-daemon run` sees it.
    #[serde(default = "default_true")]
    pub storage_heartbeats: bool,
    /// Whether a VM's files are locked by the host that runs it (default true), as on VMFS and
    /// NFS: powering it on elsewhere fails with `Locked` while it still runs. `false` lets a
    /// manager's mistake through, so the split-brain invariant can catch it.
    #[serde(default = "default_true")]
    pub file_locks: bool,
    /// Whether every host has a BMC the manager reads its power from (default false): `On` while
    /// the host is up, crashed (hung) or cut off; `Off` once it lost power or was fenced.
    #[serde(default)]
    pub bmc: bool,
    /// How long a call takes to fail when the manager is isolated (default 1s).
    #[serde(default = "default_unreachable_delay", with = "serde_duration")]
    pub unreachable_delay: Duration,
    /// Whether powering on / moving onto a full host fails with `InsufficientResources` (default
    /// true). Turn it off to let the over-capacity invariant catch the manager's placement errors.
    #[serde(default = "default_true")]
    pub enforce_capacity: bool,
    /// Probability that one probe is lost, from the start (default 0).
    #[serde(default)]
    pub probe_loss: f64,
    /// How many changes `changes()` can replay; older versions get a full resync (default 20000).
    #[serde(default = "default_log_capacity")]
    pub change_log_capacity: usize,
    /// Operation latencies.
    #[serde(default)]
    pub latencies: Latencies,
    /// Hosts.
    pub hosts: Vec<HostSpec>,
    /// Datastores; default: one datastore `ds-shared` mounted by every host.
    #[serde(default = "default_datastores")]
    pub datastores: Vec<DatastoreSpec>,
    /// VMs.
    #[serde(default)]
    pub vms: Vec<VmSpec>,
    /// Spare hosts that `add_host(name)` takes from, by name.
    #[serde(default)]
    pub spares: BTreeMap<String, HostSpec>,
}

impl ClusterSpec {
    /// A spec with these hosts and VMs and every default.
    pub fn new(hosts: Vec<HostSpec>, vms: Vec<VmSpec>) -> Self {
        ClusterSpec {
            seed: 0,
            manager_user: default_manager_user(),
            initial_snapshots: false,
            initial_clones: false,
            heartbeat_delay: default_heartbeat_delay(),
            storage_heartbeat_period: default_storage_heartbeat_period(),
            storage_heartbeats: true,
            file_locks: true,
            bmc: false,
            unreachable_delay: default_unreachable_delay(),
            enforce_capacity: true,
            probe_loss: 0.0,
            change_log_capacity: default_log_capacity(),
            latencies: Latencies::default(),
            hosts,
            datastores: default_datastores(),
            vms,
            spares: BTreeMap::new(),
        }
    }

    /// Reads a spec from TOML text and checks it.
    pub fn from_toml_str(text: &str) -> Result<Self, SpecError> {
        let spec: ClusterSpec = toml::from_str(text)?;
        spec.validate()?;
        Ok(spec)
    }

    /// Writes the spec as TOML.
    pub fn to_toml_string(&self) -> Result<String, SpecError> {
        Ok(toml::to_string(self)?)
    }

    /// Checks ids are unique and references resolve.
    pub fn validate(&self) -> Result<(), SpecError> {
        let mut hosts = BTreeSet::new();
        for h in &self.hosts {
            if h.id.is_empty() {
                return Err(SpecError::Invalid("a host has an empty id".into()));
            }
            if !hosts.insert(h.id.as_str()) {
                return Err(SpecError::Duplicate {
                    kind: "host",
                    id: h.id.clone(),
                });
            }
        }
        let mut spare_ids = BTreeSet::new();
        for (name, s) in &self.spares {
            let id = if s.id.is_empty() {
                name.as_str()
            } else {
                s.id.as_str()
            };
            if hosts.contains(id) || !spare_ids.insert(id) {
                return Err(SpecError::Duplicate {
                    kind: "spare",
                    id: id.to_owned(),
                });
            }
        }
        let mut dss = BTreeSet::new();
        for ds in &self.datastores {
            if !dss.insert(ds.id.as_str()) {
                return Err(SpecError::Duplicate {
                    kind: "datastore",
                    id: ds.id.clone(),
                });
            }
            for h in ds.hosts.iter().flatten() {
                if !hosts.contains(h.as_str()) {
                    return Err(SpecError::UnknownRef {
                        from: format!("datastore {}", ds.id),
                        kind: "host",
                        id: h.clone(),
                    });
                }
            }
        }
        if self.datastores.is_empty() {
            return Err(SpecError::Invalid("at least one datastore is needed".into()));
        }
        let mut vms = BTreeSet::new();
        for vm in &self.vms {
            if !vms.insert(vm.id.as_str()) {
                return Err(SpecError::Duplicate {
                    kind: "vm",
                    id: vm.id.clone(),
                });
            }
            if !hosts.contains(vm.host.as_str()) {
                return Err(SpecError::UnknownRef {
                    from: format!("vm {}", vm.id),
                    kind: "host",
                    id: vm.host.clone(),
                });
            }
            if let Some(ds) = &vm.datastore
                && !dss.contains(ds.as_str())
            {
                return Err(SpecError::UnknownRef {
                    from: format!("vm {}", vm.id),
                    kind: "datastore",
                    id: ds.clone(),
                });
            }
        }
        if !(0.0..=1.0).contains(&self.probe_loss) {
            return Err(SpecError::Invalid(format!(
                "probe_loss {} is not a probability",
                self.probe_loss
            )));
        }
        if self.storage_heartbeat_period.is_zero() {
            return Err(SpecError::Invalid(
                "storage_heartbeat_period must not be zero".into(),
            ));
        }
        Ok(())
    }

    /// A plausible cluster: `hosts` hosts `h1..` in a few racks, `vms` VMs `vm-001..` of varied
    /// sizes and priorities (about one in ten `disabled`), two anti-affinity groups, guest and
    /// management addresses, `spares` spare hosts `spare-1..`, initial snapshots and clones. The
    /// VMs fit with room for the loss of the largest host. Deterministic in `seed`.
    pub fn generate(hosts: usize, vms: usize, spares: usize, seed: u64) -> ClusterSpec {
        let mut rng = Prng::stream(seed, 0x5EC);
        const HOST_SIZES: [(u64, u64); 3] = [(32_000, 131_072), (48_000, 196_608), (64_000, 262_144)];
        const VM_SIZES: [(u64, u64); 5] = [
            (500, 1_024),
            (1_000, 2_048),
            (2_000, 4_096),
            (4_000, 8_192),
            (8_000, 16_384),
        ];
        const PRIORITIES: [RestartPriority; 6] = [
            RestartPriority::Lowest,
            RestartPriority::Low,
            RestartPriority::Medium,
            RestartPriority::Medium,
            RestartPriority::High,
            RestartPriority::Highest,
        ];
        let racks = hosts.div_ceil(4).max(1);
        let mut host_specs: Vec<HostSpec> = (0..hosts)
            .map(|i| {
                let (cpu, mem) = HOST_SIZES[rng.below(HOST_SIZES.len() as u64) as usize];
                HostSpec {
                    id: format!("h{}", i + 1),
                    cpu_mhz: cpu,
                    mem_mib: mem,
                    failure_domain: Some(format!("rack-{}", i % racks + 1)),
                    mgmt_address: Some(format!("10.0.0.{}", 10 + i)),
                }
            })
            .collect();
        let vms = if hosts == 0 { 0 } else { vms };
        let mut vm_specs: Vec<VmSpec> = (0..vms)
            .map(|i| {
                // Small VMs are more common than large ones.
                let roll = rng.below(100);
                let size = match roll {
                    0..=24 => 0,
                    25..=54 => 1,
                    55..=79 => 2,
                    80..=94 => 3,
                    _ => 4,
                };
                let (cpu, mem) = VM_SIZES[size];
                let priority = if i % 10 == 9 {
                    RestartPriority::Disabled
                } else {
                    PRIORITIES[rng.below(PRIORITIES.len() as u64) as usize]
                };
                let anti_affinity_group = match i {
                    0..=2 if hosts >= 3 => Some("aa-web".to_owned()),
                    3..=4 if hosts >= 2 => Some("aa-db".to_owned()),
                    _ => None,
                };
                VmSpec {
                    id: format!("vm-{:03}", i + 1),
                    host: String::new(),
                    cpu_mhz: cpu,
                    mem_mib: mem,
                    priority,
                    power: SpecPower::On,
                    affinity_group: None,
                    anti_affinity_group,
                    guest_address: Some(format!("10.1.{}.{}", i / 250, i % 250 + 1)),
                    datastore: None,
                    storage_mib: None,
                }
            })
            .collect();
        if hosts > 0 {
            // Grow the hosts until the VMs fit in 80% of the cluster minus its largest host.
            loop {
                let total = host_specs.iter().fold(Resources::ZERO, |a, h| a + h.capacity());
                let largest = host_specs.iter().fold(Resources::ZERO, |a, h| Resources {
                    cpu_mhz: a.cpu_mhz.max(h.cpu_mhz),
                    mem_mib: a.mem_mib.max(h.mem_mib),
                });
                let budget = total - largest;
                let budget = Resources::new(budget.cpu_mhz * 4 / 5, budget.mem_mib * 4 / 5);
                let demand = vm_specs.iter().fold(Resources::ZERO, |a, v| a + v.demand());
                if hosts == 1 || demand.fits_in(&budget) {
                    break;
                }
                for h in &mut host_specs {
                    h.cpu_mhz += h.cpu_mhz / 4;
                    h.mem_mib += h.mem_mib / 4;
                }
            }
            // Place the largest first, each on the host with the most free room (by its fullest
            // dimension), keeping anti-affinity groups apart.
            let mut used: Vec<Resources> = vec![Resources::ZERO; hosts];
            let mut groups: Vec<BTreeSet<String>> = vec![BTreeSet::new(); hosts];
            let mut order: Vec<usize> = (0..vm_specs.len()).collect();
            order.sort_by_key(|&i| (std::cmp::Reverse(vm_specs[i].demand()), i));
            for i in order {
                let vm = &mut vm_specs[i];
                let load = |h: usize| {
                    let c = host_specs[h].capacity();
                    let u = used[h] + vm.demand();
                    (u.cpu_mhz * 1000 / c.cpu_mhz.max(1)).max(u.mem_mib * 1000 / c.mem_mib.max(1))
                };
                let allowed = |h: usize| {
                    vm.anti_affinity_group
                        .as_ref()
                        .is_none_or(|g| !groups[h].contains(g))
                };
                let best = (0..hosts)
                    .filter(|&h| allowed(h))
                    .min_by_key(|&h| (load(h), h))
                    .or_else(|| (0..hosts).min_by_key(|&h| (load(h), h)))
                    .unwrap_or(0);
                used[best] += vm.demand();
                if let Some(g) = &vm.anti_affinity_group {
                    groups[best].insert(g.clone());
                }
                vm.host = host_specs[best].id.clone();
            }
        }
        let biggest = host_specs
            .iter()
            .max_by_key(|h| (h.cpu_mhz, h.mem_mib))
            .map(|h| (h.cpu_mhz, h.mem_mib))
            .unwrap_or(HOST_SIZES[2]);
        let spares = (0..spares)
            .map(|i| {
                let name = format!("spare-{}", i + 1);
                let spec = HostSpec {
                    id: name.clone(),
                    cpu_mhz: biggest.0,
                    mem_mib: biggest.1,
                    failure_domain: Some("rack-spare".into()),
                    mgmt_address: Some(format!("10.0.1.{}", 10 + i)),
                };
                (name, spec)
            })
            .collect();
        let mut spec = ClusterSpec::new(host_specs, vm_specs);
        spec.seed = seed;
        spec.spares = spares;
        spec.initial_snapshots = true;
        spec.initial_clones = true;
        spec
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_cluster_is_plausible_and_survives_one_host_loss() {
        let spec = ClusterSpec::generate(6, 60, 2, 42);
        spec.validate().unwrap();
        assert_eq!(spec, ClusterSpec::generate(6, 60, 2, 42), "deterministic");
        assert_eq!(spec.hosts.len(), 6);
        assert_eq!(spec.vms.len(), 60);
        assert_eq!(spec.spares.len(), 2);
        let disabled = spec
            .vms
            .iter()
            .filter(|v| v.priority == RestartPriority::Disabled)
            .count();
        assert!((1..=10).contains(&disabled));
        let sizes: BTreeSet<_> = spec.vms.iter().map(|v| v.demand()).collect();
        assert!(sizes.len() >= 3, "varied sizes");
        // Anti-affinity groups are spread.
        for g in ["aa-web", "aa-db"] {
            let hosts: Vec<_> = spec
                .vms
                .iter()
                .filter(|v| v.anti_affinity_group.as_deref() == Some(g))
                .map(|v| v.host.clone())
                .collect();
            let distinct: BTreeSet<_> = hosts.iter().collect();
            assert!(hosts.len() >= 2);
            assert_eq!(distinct.len(), hosts.len(), "{g} spread");
        }
        // Every host fits what it runs, and the rest of the cluster can take any one host's VMs.
        for h in &spec.hosts {
            let used = spec
                .vms
                .iter()
                .filter(|v| v.host == h.id)
                .fold(Resources::ZERO, |a, v| a + v.demand());
            assert!(used.fits_in(&h.capacity()), "{} overloaded", h.id);
            let free_elsewhere = spec
                .hosts
                .iter()
                .filter(|o| o.id != h.id)
                .fold(Resources::ZERO, |a, o| {
                    let u = spec
                        .vms
                        .iter()
                        .filter(|v| v.host == o.id)
                        .fold(Resources::ZERO, |a, v| a + v.demand());
                    a + (o.capacity() - u)
                });
            assert!(used.fits_in(&free_elsewhere), "losing {} is survivable", h.id);
        }
    }

    #[test]
    fn toml_round_trip_and_defaults() {
        let text = r#"
            seed = 7
            [[hosts]]
            id = "h1"
            cpu_mhz = 10000
            mem_mib = 32768
            [[hosts]]
            id = "h2"
            cpu_mhz = 10000
            mem_mib = 32768
            mgmt_address = "10.0.0.2"
            [[vms]]
            id = "web"
            host = "h1"
            cpu_mhz = 1000
            mem_mib = 2048
            priority = "high"
            [[vms]]
            id = "batch"
            host = "h2"
            cpu_mhz = 1000
            mem_mib = 2048
            priority = "disabled"
            power = "off"
            [latencies]
            power_on = "2s"
            clone = "15s"
            [spares.s1]
            cpu_mhz = 10000
            mem_mib = 32768
        "#;
        let spec = ClusterSpec::from_toml_str(text).unwrap();
        assert_eq!(spec.seed, 7);
        assert_eq!(spec.manager_user, "am-manager");
        assert_eq!(spec.vms[0].priority, RestartPriority::High);
        assert_eq!(spec.vms[1].power, SpecPower::Off);
        assert_eq!(spec.latencies.power_on, Duration::from_secs(2));
        assert_eq!(spec.latencies.clone, Duration::from_secs(15));
        assert_eq!(spec.latencies.revive_host, Duration::from_secs(20));
        assert_eq!(spec.datastores.len(), 1);
        assert!(spec.datastores[0].hosts.is_none());
        assert!(spec.spares.contains_key("s1"));
        let again = ClusterSpec::from_toml_str(&spec.to_toml_string().unwrap()).unwrap();
        assert_eq!(again, spec);
    }

    #[test]
    fn bad_specs_are_rejected_with_a_reason() {
        let err =
            ClusterSpec::from_toml_str("hosts = []\n[[vms]]\nid='a'\nhost='nope'\ncpu_mhz=1\nmem_mib=1\n")
                .unwrap_err();
        assert!(err.to_string().contains("unknown host `nope`"), "{err}");
        let err = ClusterSpec::from_toml_str("hosts = []\nbogus = 1\n").unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
        let mut spec = ClusterSpec::new(vec![HostSpec::new("h1", 1, 1), HostSpec::new("h1", 1, 1)], vec![]);
        assert!(matches!(
            spec.validate(),
            Err(SpecError::Duplicate { kind: "host", .. })
        ));
        spec.hosts.pop();
        spec.probe_loss = 2.0;
        assert!(matches!(spec.validate(), Err(SpecError::Invalid(_))));
    }
}
