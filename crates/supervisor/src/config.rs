//! Supervisor policies and timings.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What to do with the VMs of a host that is isolated (unreachable, but still alive and maybe
/// still running them).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IsolationResponse {
    /// Leave them running where they are; raise an alarm and wait for the host to come back.
    #[default]
    LeaveRunning,
    /// Fence the host out of band (power it off); once that is confirmed, restart its VMs elsewhere.
    PowerOffAndRestart,
}

/// Supervisor settings. Every duration is virtual time in the simulator and monotonic time in the
/// daemon.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// The user name the manager's own operations carry in events (power-offs by it are not user
    /// power-offs).
    pub manager_user: String,
    /// How long a VM must be failing, with its host up, before the recovery ladder starts.
    pub vm_confirm: Duration,
    /// How long to wait for an event naming who powered a VM off before treating it as a crash.
    pub power_off_grace: Duration,
    /// How long a recovery step has to bring the VM back before the next step.
    pub recovery_grace: Duration,
    /// A powered-on VM using zero CPU this long is hung.
    pub hang_after: Duration,
    /// At most this many restarts (reset or power-on) of one VM per `restart_window`.
    pub restart_limit: u32,
    /// The window of `restart_limit`.
    pub restart_window: Duration,
    /// A host whose only failure signal is its connection state (no management probe) is
    /// unreachable after this long.
    pub single_signal_confirm: Duration,
    /// A host that answers pings but is not connected in the management server gets a reconnect
    /// after this long.
    pub reconnect_after: Duration,
    /// A storage heartbeat older than this means the host stopped writing it.
    pub storage_heartbeat_window: Duration,
    /// Revival attempts (each: reconnect, then out-of-band revival) before a dead host is removed.
    pub revive_attempts: u32,
    /// Time between revival actions, and for a revived host to show up again.
    pub revive_interval: Duration,
    /// What to do with the VMs of an isolated host.
    pub isolation_response: IsolationResponse,
    /// More than this fraction of the hosts unreachable within `storm_window` is a storm: the
    /// manager suspects its own network and fails nothing over.
    pub storm_fraction: f64,
    /// The window of the storm guard.
    pub storm_window: Duration,
    /// Spare hosts (names in the backend's pool) that may be added when capacity runs out.
    pub spares: Vec<String>,
    /// Placement policy.
    pub placement: planner::Policy,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            manager_user: "am-manager".into(),
            vm_confirm: Duration::from_secs(3),
            power_off_grace: Duration::from_secs(2),
            recovery_grace: Duration::from_secs(30),
            hang_after: Duration::from_secs(20),
            restart_limit: 3,
            restart_window: Duration::from_secs(3600),
            single_signal_confirm: Duration::from_secs(10),
            reconnect_after: Duration::from_secs(5),
            storage_heartbeat_window: Duration::from_secs(6),
            revive_attempts: 2,
            revive_interval: Duration::from_secs(10),
            isolation_response: IsolationResponse::LeaveRunning,
            storm_fraction: 0.5,
            storm_window: Duration::from_secs(10),
            spares: Vec::new(),
            placement: planner::Policy::default(),
        }
    }
}
