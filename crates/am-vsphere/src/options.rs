//! What the adapter needs to know beyond the vCenter connection: its scope, the spare hosts, the
//! out-of-band hooks, what to probe, how VMs are prioritised and sized, and which custom
//! attributes to read. The rule types are plain data with serde, so that the daemon's
//! configuration uses them as they are (one definition of every key).

use am_core::RestartPriority;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use vsphere_soap::Password;

/// Settings of a [`VsphereBackend`](crate::VsphereBackend). [`Options::default`] watches the whole
/// vCenter, probes hosts at their management VMkernel address (TCP 443) and guests at the
/// address VMware Tools reports (ICMP), has no spares and no hooks, and protects every VM at
/// medium priority, sized by its reservations (as vSphere HA's admission control sizes it).
#[derive(Clone, Debug)]
pub struct Options {
    /// Only the inventory under this datacenter (by name).
    pub datacenter: Option<String>,
    /// Only the inventory under these clusters (by name; under `datacenter` if given). Datastores
    /// are not children of a cluster: they are read from the clusters' hosts.
    pub clusters: Vec<String>,
    /// The spare hosts `add_host` may add, by the name the supervisor's `spares` list uses.
    pub spares: BTreeMap<String, SpareHost>,
    /// Out-of-band revival (`revive_host`), e.g. an IPMI power cycle. `NotSupported` when unset.
    pub revive_hook: Option<Hook>,
    /// Out-of-band power-off (`fence_host`). `NotSupported` when unset.
    pub fence_hook: Option<Hook>,
    /// What to probe.
    pub targets: Targets,
    /// Restart priorities.
    pub priorities: Priorities,
    /// The vCenter custom attributes read per VM.
    pub attributes: Attributes,
    /// How a VM's demand is counted.
    pub capacity: Capacity,
    /// How long to wait for one vCenter task (the executor's per-action deadline also applies).
    pub task_timeout: Duration,
    /// A lock file refreshed this recently proves that the VM runs where it was.
    pub lock_fresh: Duration,
    /// How long an answer to the inventory feed's long poll (`WaitForUpdatesEx`) may take
    /// beyond its wait before the inventory is read again (see
    /// [`vsphere_soap::PropertyWatch::patience`]).
    pub update_wait_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            datacenter: None,
            clusters: Vec::new(),
            spares: BTreeMap::new(),
            revive_hook: None,
            fence_hook: None,
            targets: Targets::default(),
            priorities: Priorities::default(),
            attributes: Attributes::default(),
            capacity: Capacity::default(),
            task_timeout: Duration::from_secs(3600),
            lock_fresh: Duration::from_secs(30),
            update_wait_timeout: Duration::from_secs(300),
        }
    }
}

/// What to probe: hosts' management addresses and guests' addresses.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Targets {
    /// Hosts.
    pub hosts: HostTargets,
    /// Guests.
    pub guests: GuestTargets,
}

impl Targets {
    /// Nothing probed (vCenter's own signals only).
    pub fn none() -> Targets {
        Targets {
            hosts: HostTargets {
                address: HostAddress::None,
                ..HostTargets::default()
            },
            guests: GuestTargets {
                address: GuestAddress::None,
                ..GuestTargets::default()
            },
        }
    }

    /// Whether anything will be probed at all.
    pub fn any(&self) -> bool {
        self.hosts.address != HostAddress::None
            || !self.hosts.addresses.is_empty()
            || self.guests.address != GuestAddress::None
    }
}

/// Where a host's management address comes from.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostAddress {
    /// The management VMkernel interface vCenter reports (`config.network.vnic`: the one on the
    /// management port group, else `vmk0`), IPv4 first.
    #[default]
    Vmk,
    /// The host's inventory name, when it is an IP address.
    Name,
    /// Not probed (only [`HostTargets::addresses`]).
    None,
}

/// How hosts are probed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostTargets {
    /// Where the address comes from.
    pub address: HostAddress,
    /// TCP port to connect to (443: hostd, always listening on ESXi); 0 probes by ICMP.
    pub port: u16,
    /// Explicit addresses by host name (an IP, or `tcp:IP:PORT`); they win over `address`.
    pub addresses: BTreeMap<String, String>,
}

impl Default for HostTargets {
    fn default() -> Self {
        HostTargets {
            address: HostAddress::Vmk,
            port: 443,
            addresses: BTreeMap::new(),
        }
    }
}

/// Where a guest's address comes from.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuestAddress {
    /// What VMware Tools reports: `guest.ipAddress`, else the first of `guest.net[].ipAddress`;
    /// IPv4 before IPv6, link-local addresses skipped.
    #[default]
    Tools,
    /// The VM's custom attribute [`Attributes::address`].
    Attribute,
    /// A line `am.address=IP` in the VM's annotation (notes).
    Annotation,
    /// Guests are not probed.
    None,
}

/// How guests are probed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GuestTargets {
    /// Where the address comes from.
    pub address: GuestAddress,
    /// TCP port to connect to; 0 (the default) probes by ICMP.
    pub port: u16,
    /// VMs (name patterns, `*` and `?`) that are not probed.
    pub exclude_vms: Vec<String>,
    /// VMs in folders of these names that are not probed.
    pub exclude_folders: Vec<String>,
}

/// A restart priority rule: VMs matching every given matcher get `priority`. The first matching
/// rule wins; the custom attribute [`Attributes::priority`] wins over every rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorityRule {
    /// A VM name pattern (`*` and `?`).
    #[serde(default)]
    pub vms: Option<String>,
    /// The name of the VM's folder.
    #[serde(default)]
    pub folder: Option<String>,
    /// The name of the VM's resource pool.
    #[serde(default)]
    pub pool: Option<String>,
    /// The priority (`disabled` leaves the VM unprotected).
    pub priority: RestartPriority,
}

impl PriorityRule {
    /// Whether the rule applies to a VM with this name, folder and pool.
    pub fn matches(&self, name: &str, folder: Option<&str>, pool: Option<&str>) -> bool {
        let named = self.vms.as_deref().is_none_or(|p| glob(p, name));
        let in_folder = self.folder.as_deref().is_none_or(|f| folder == Some(f));
        let in_pool = self.pool.as_deref().is_none_or(|p| pool == Some(p));
        named && in_folder && in_pool
    }
}

/// Restart priorities.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Priorities {
    /// The priority of VMs no rule or attribute names.
    pub default: RestartPriority,
    /// Rules, first match wins.
    pub rules: Vec<PriorityRule>,
}

impl Default for Priorities {
    fn default() -> Self {
        Priorities {
            default: RestartPriority::Medium,
            rules: Vec::new(),
        }
    }
}

impl Priorities {
    /// The priority from the rules for a VM with this name, folder and pool.
    pub fn of(&self, name: &str, folder: Option<&str>, pool: Option<&str>) -> RestartPriority {
        self.rules
            .iter()
            .find(|r| r.matches(name, folder, pool))
            .map_or(self.default, |r| r.priority)
    }
}

/// The vCenter custom attributes read per VM, so that operators set policy where they manage
/// VMs. An empty name turns the attribute off.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Attributes {
    /// The restart priority: `highest`, `high`, `medium`, `low`, `lowest` or `disabled`.
    pub priority: String,
    /// `off` (or `no`, `false`): neither snapshots nor clones of the VM.
    pub backup: String,
    /// `off` (or `no`, `false`): the guest is not probed.
    pub probe: String,
    /// The guest address to probe, with `targets.guests.address = "attribute"`.
    pub address: String,
}

impl Default for Attributes {
    fn default() -> Self {
        Attributes {
            priority: "am.priority".into(),
            backup: "am.backup".into(),
            probe: "am.probe".into(),
            address: "am.address".into(),
        }
    }
}

/// How a VM's memory demand is counted for placement.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryModel {
    /// The configured memory size: strict; a cluster that overcommits memory runs out first.
    Configured,
    /// The memory reservation plus its overhead, what vSphere HA's admission control counts: a
    /// VM vSphere HA would restart is never refused for memory. The default.
    #[default]
    Reserved,
    /// What the guest uses now (quick stats' active memory; the reservation when larger).
    Active,
}

impl MemoryModel {
    /// A short description for plans and status.
    pub fn describe(self) -> &'static str {
        match self {
            MemoryModel::Configured => "configured memory size",
            MemoryModel::Reserved => "memory reservation + overhead (as vSphere HA admission control)",
            MemoryModel::Active => "active memory (quick stats), at least the reservation",
        }
    }
}

/// How demand and capacity are counted. CPU demand is always the reservation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Capacity {
    /// Memory demand.
    pub memory: MemoryModel,
    /// Host memory counts this many times over (1.0: as installed; 1.5 allows 50 % overcommit).
    pub memory_overcommit: f64,
}

impl Default for Capacity {
    fn default() -> Self {
        Capacity {
            memory: MemoryModel::Reserved,
            memory_overcommit: 1.0,
        }
    }
}

/// A spare ESXi host that `add_host` adds to a cluster (`AddHost_Task`).
#[derive(Clone, Debug)]
pub struct SpareHost {
    /// DNS name or IP address of the host, as vCenter should reach it.
    pub address: String,
    /// The host's HTTPS port, when not 443.
    pub port: Option<u16>,
    /// An administrator account on the host (e.g. `root`).
    pub user: String,
    /// Its password (never printed).
    pub password: Password,
    /// The host certificate's SHA-1 thumbprint as vCenter wants it (`AA:BB:...`). Without it,
    /// vCenter refuses hosts whose certificate it does not trust.
    pub thumbprint: Option<String>,
    /// The cluster to add it to (by name); default: the scope's cluster, or the only cluster.
    pub cluster: Option<String>,
}

/// An out-of-band command, run without a shell. In every argument `{host}` becomes the host's
/// name, `{host_id}` its managed object id and `{address}` its management address (empty when
/// unknown). Exit status 0 means done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hook {
    /// Program and arguments, e.g. `["/usr/local/bin/ipmi-cycle", "{host}"]`.
    pub command: Vec<String>,
    /// The command is killed after this long and the action fails with a timeout.
    pub timeout: Duration,
}

impl Hook {
    /// A hook running `command` with a timeout of `timeout`.
    pub fn new(command: &[&str], timeout: Duration) -> Self {
        Hook {
            command: command.iter().map(|s| (*s).to_owned()).collect(),
            timeout,
        }
    }
}

pub use am_core::glob::glob;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_matching_rule_wins_and_every_matcher_must_match() {
        let p = Priorities {
            default: RestartPriority::Medium,
            rules: vec![
                PriorityRule {
                    vms: Some("db-*".into()),
                    folder: Some("prod".into()),
                    pool: None,
                    priority: RestartPriority::Highest,
                },
                PriorityRule {
                    vms: None,
                    folder: None,
                    pool: Some("batch".into()),
                    priority: RestartPriority::Low,
                },
            ],
        };
        assert_eq!(p.of("db-1", Some("prod"), None), RestartPriority::Highest);
        assert_eq!(p.of("db-1", Some("test"), None), RestartPriority::Medium);
        assert_eq!(p.of("job", None, Some("batch")), RestartPriority::Low);
        assert_eq!(p.of("web", None, None), RestartPriority::Medium);
    }
}
