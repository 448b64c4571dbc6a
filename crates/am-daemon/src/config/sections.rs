//! The sections of the configuration that are the daemon's own (the rest are the libraries'
//! types: supervisor, probe, the adapter's targets, priorities, attributes and capacity).

use super::SecretSource;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How to reach vCenter, and which part of it to watch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VcenterConfig {
    /// The SDK URL, e.g. `https://vcenter.example/sdk`.
    pub url: String,
    /// The user the manager logs in as (its power operations carry this name in events).
    pub user: String,
    /// Its password.
    #[serde(default)]
    pub password: SecretSource,
    /// A PEM file of CA certificates to trust (instead of the system's).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Pin the server certificate by its SHA-256 thumbprint (hex, colons allowed).
    #[serde(default)]
    pub thumbprint: Option<String>,
    /// Turn TLS verification off. Only when asked for by name; never the default.
    #[serde(default)]
    pub insecure_skip_tls_verify: bool,
    /// Only this datacenter (by name).
    #[serde(default)]
    pub datacenter: Option<String>,
    /// Only these clusters (by name; within `datacenter` when given).
    #[serde(default)]
    pub clusters: Vec<String>,
    /// How long one vCenter task may take.
    #[serde(default = "one_hour", with = "am_core::time::duration_str")]
    pub task_timeout: Duration,
    /// How long one SOAP call may take before it fails (long polls add their own wait).
    #[serde(default = "sixty_seconds", with = "am_core::time::duration_str")]
    pub call_timeout: Duration,
    /// How often vCenter is asked the time, to notice one that stopped answering.
    #[serde(default = "two_seconds", with = "am_core::time::duration_str")]
    pub health_interval: Duration,
    /// How long that question may take before vCenter counts as not answering.
    #[serde(default = "three_seconds", with = "am_core::time::duration_str")]
    pub health_timeout: Duration,
    /// A response larger than this (MiB) is refused with an error naming its size.
    #[serde(default = "sixty_four")]
    pub max_response_mib: u64,
    /// A VM's lock file refreshed this recently proves it still runs where it was.
    #[serde(default = "thirty_seconds", with = "am_core::time::duration_str")]
    pub lock_fresh: Duration,
    /// How long an answer to the inventory feed's long poll (`WaitForUpdatesEx`) may take
    /// beyond its wait before the inventory is read again. vCenter answers within the wait; a
    /// busy one is waited for, as reading 10,000 VMs again costs more (TCP keepalives fail a
    /// dead connection within some 30 s, and `health_interval` notices a vCenter that stops
    /// answering).
    #[serde(default = "five_minutes", with = "am_core::time::duration_str")]
    pub update_wait_timeout: Duration,
}

impl Default for VcenterConfig {
    fn default() -> Self {
        VcenterConfig {
            url: String::new(),
            user: String::new(),
            password: SecretSource::default(),
            ca_file: None,
            thumbprint: None,
            insecure_skip_tls_verify: false,
            datacenter: None,
            clusters: Vec::new(),
            task_timeout: one_hour(),
            call_timeout: sixty_seconds(),
            health_interval: two_seconds(),
            health_timeout: three_seconds(),
            max_response_mib: sixty_four(),
            lock_fresh: thirty_seconds(),
            update_wait_timeout: five_minutes(),
        }
    }
}

fn one_hour() -> Duration {
    Duration::from_secs(3600)
}
fn sixty_seconds() -> Duration {
    Duration::from_secs(60)
}
fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}
fn two_seconds() -> Duration {
    Duration::from_secs(2)
}
fn three_seconds() -> Duration {
    Duration::from_secs(3)
}
fn five_minutes() -> Duration {
    Duration::from_secs(300)
}
fn two_minutes() -> Duration {
    Duration::from_secs(120)
}
fn sixty_four() -> u64 {
    64
}

/// A spare ESXi host that may be added to a cluster (`AddHost_Task`) when protected VMs fit
/// nowhere.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpareConfig {
    /// DNS name or IP address, as vCenter should reach it.
    pub address: String,
    /// Its HTTPS port, when not 443.
    #[serde(default)]
    pub port: Option<u16>,
    /// An administrator account on the host (e.g. `root`).
    pub user: String,
    /// Its password (environment variable or file).
    pub password: SecretSource,
    /// The host certificate's SHA-1 thumbprint (`AA:BB:...`), so vCenter trusts it.
    #[serde(default)]
    pub thumbprint: Option<String>,
    /// The cluster to add it to (default: the only cluster in scope).
    #[serde(default)]
    pub cluster: Option<String>,
}

/// An out-of-band command, run without a shell; `{host}`, `{host_id}` and `{address}` in its
/// arguments become the host's name, id and management address. Exit status 0 means done.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    /// Program and arguments.
    pub command: Vec<String>,
    /// Killed after this long.
    #[serde(default = "two_minutes", with = "am_core::time::duration_str")]
    pub timeout: Duration,
}

/// Out-of-band commands.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HooksConfig {
    /// Revives a dead host (a power cycle through its BMC, a snapshot revert of a nested host).
    pub revive: Option<HookConfig>,
    /// Powers a host off (fencing), so that none of its VMs can still run.
    pub fence: Option<HookConfig>,
}

/// Where the HTTP API listens.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Listen address (loopback by default).
    pub listen: SocketAddr,
    /// The token required for requests that change state.
    pub token: Option<SecretSource>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8480)),
            token: None,
        }
    }
}

/// How many actions run against vCenter at once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutorSettings {
    /// Actions in flight in all (at least 1).
    pub max_in_flight: usize,
    /// Actions in flight per target host (at least 1; vSphere HA powers on up to 32 VMs per host
    /// at once).
    pub per_host: usize,
}

impl Default for ExecutorSettings {
    fn default() -> Self {
        ExecutorSettings {
            max_in_flight: 128,
            per_host: 32,
        }
    }
}

/// Alarm delivery.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlarmConfig {
    /// A webhook receiving every alarm change as JSON.
    pub webhook_url: Option<String>,
    /// Send the Alertmanager-compatible payload instead of ours.
    pub alertmanager: bool,
    /// Also post alarms to vCenter as events.
    pub vcenter_events: bool,
}
