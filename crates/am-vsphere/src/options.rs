//! What the adapter needs to know beyond the vCenter connection: its scope, the spare hosts, the
//! out-of-band hooks, what to probe and how VMs are prioritised.

use am_core::RestartPriority;
use std::collections::BTreeMap;
use std::time::Duration;
use vsphere_soap::Password;

/// Settings of a [`VsphereBackend`](crate::VsphereBackend). [`Options::default`] watches the whole
/// vCenter, probes nothing, has no spares and no hooks, and protects every VM at medium priority.
#[derive(Clone, Debug)]
pub struct Options {
    /// Only the inventory under this datacenter (by name).
    pub datacenter: Option<String>,
    /// Only the inventory under this cluster (by name); wins over `datacenter`. Datastores are not
    /// children of a cluster: with a cluster scope the inventory has no datastores.
    pub cluster: Option<String>,
    /// The spare hosts `add_host` may add, by the name the supervisor's `spares` list uses.
    pub spares: BTreeMap<String, SpareHost>,
    /// Out-of-band revival (`revive_host`), e.g. an IPMI power cycle. `NotSupported` when unset.
    pub revive_hook: Option<Hook>,
    /// Out-of-band power-off (`fence_host`). `NotSupported` when unset.
    pub fence_hook: Option<Hook>,
    /// Report each VM's `guest.ipAddress` as its guest address, so the manager probes it.
    pub probe_guests: bool,
    /// Management addresses to probe, by host name (an IP address, or `tcp:IP:PORT`).
    pub host_addresses: BTreeMap<String, String>,
    /// Probe a host whose inventory name is an IP address at that address (when `host_addresses`
    /// does not name it).
    pub probe_host_names: bool,
    /// Restart priority by VM name; VMs not named get `default_priority`.
    pub priorities: BTreeMap<String, RestartPriority>,
    /// The restart priority of VMs `priorities` does not name (`Disabled`: unprotected).
    pub default_priority: RestartPriority,
    /// How long to wait for one vCenter task (the executor's per-action deadline also applies).
    pub task_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            datacenter: None,
            cluster: None,
            spares: BTreeMap::new(),
            revive_hook: None,
            fence_hook: None,
            probe_guests: false,
            host_addresses: BTreeMap::new(),
            probe_host_names: false,
            priorities: BTreeMap::new(),
            default_priority: RestartPriority::Medium,
            task_timeout: Duration::from_secs(3600),
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
