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

/// What to do with a host predicted to fail (an Alertmanager alert, the API, vCenter's health
/// status).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictedFailure {
    /// Raise `HostDegraded` and evacuate it into maintenance mode at once.
    #[default]
    Evacuate,
    /// Raise `HostDegraded` and wait for the operator (`am-daemon evacuate`).
    Alarm,
}

/// What to do with a host whose only failure signal is the management server's connection state
/// (no management probe, no storage heartbeat, no probed guest, no out-of-band power state).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SingleSignal {
    /// Declare it dead after `single_signal_confirm` and fail its VMs over, each behind the check
    /// of its files' lock: a VM found locked still runs there, and the host is isolated, not
    /// dead. What vSphere HA does without heartbeat datastores.
    #[default]
    CheckLocks,
    /// Never declare it dead on one signal: it stays unreachable, under an alarm, until a person
    /// acts or a second signal appears.
    Wait,
}

/// When a dead host may be removed from the management server (which drops whatever it still
/// lists on it). Never while any sign of life was seen since it became unreachable, nor while
/// protected VMs that were on it wait for a place or their failover is unfinished.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Removal {
    /// After the revival attempts failed and an out-of-band fence of it is confirmed: then
    /// nothing of it can run. Without a fence configured it is never removed.
    #[default]
    AfterFence,
    /// After the revival attempts failed.
    AfterRevival,
    /// Never: it stays in the inventory, dead, under its alarm.
    Never,
}

/// When the restarts of a lower priority start (vSphere HA's restart orchestration).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Readiness {
    /// As soon as they are placed (vSphere HA's default, "resources allocated").
    #[default]
    None,
    /// Once every VM of the higher priorities being restarted is ready (VMware Tools heartbeat
    /// green or its guest probe answering), or `ready_timeout` after its restart began.
    Ready,
}

/// The order of restarts after a host failure: highest priority first, always; whether lower
/// priorities also wait for the higher ones to be ready.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RestartOrder {
    /// What a lower priority waits for.
    pub wait_for: Readiness,
    /// How long it waits at most for a VM of a higher priority to be ready.
    #[serde(with = "am_core::time::duration_str")]
    pub ready_timeout: Duration,
}

impl Default for RestartOrder {
    fn default() -> Self {
        RestartOrder {
            wait_for: Readiness::None,
            ready_timeout: Duration::from_secs(120),
        }
    }
}

/// What the backend can do out of band (set by the daemon from its configuration, not read from
/// the file): revival and fencing are only tried where they can work.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// `ReviveHost` can work (a hook, a BMC, an admin vCenter).
    pub revive: bool,
    /// `FenceHost` can work.
    pub fence: bool,
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            revive: true,
            fence: true,
        }
    }
}

/// Supervisor settings. Every duration is virtual time in the simulator and monotonic time in the
/// daemon.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The user name the manager's own operations carry in events (power-offs by it are not user
    /// power-offs).
    pub manager_user: String,
    /// How long a VM must be failing, with its host up, before the recovery ladder starts. The
    /// probe detector already confirms a lost guest; this only gives the host's own verdict time
    /// to arrive first.
    #[serde(with = "am_core::time::duration_str")]
    pub vm_confirm: Duration,
    /// Guests answering count as a sign that an unreachable host is alive only once the host has
    /// been unreachable this long: the guests' detectors need that long to notice they stopped.
    /// Keep it above the guest detector's detection bound (the daemon raises it to that).
    #[serde(with = "am_core::time::duration_str")]
    pub guest_evidence_after: Duration,
    /// How long to wait for an event naming who powered a VM off before treating it as a crash.
    #[serde(with = "am_core::time::duration_str")]
    pub power_off_grace: Duration,
    /// How long a recovery step has to bring the VM back before the next step.
    #[serde(with = "am_core::time::duration_str")]
    pub recovery_grace: Duration,
    /// A powered-on VM using zero CPU this long is hung.
    #[serde(with = "am_core::time::duration_str")]
    pub hang_after: Duration,
    /// At most this many restarts (reset or power-on) of one VM per `restart_window`.
    pub restart_limit: u32,
    /// The window of `restart_limit`.
    #[serde(with = "am_core::time::duration_str")]
    pub restart_window: Duration,
    /// A host whose only failure signal is its connection state (no management probe) is
    /// unreachable after this long.
    #[serde(with = "am_core::time::duration_str")]
    pub single_signal_confirm: Duration,
    /// A host found isolated by its VMs' file locks alone (no second signal) has one of its VMs'
    /// locks looked at again this often: a lock that is gone means the host died since (it is
    /// then declared dead, that VM failed over first).
    #[serde(with = "am_core::time::duration_str")]
    pub lock_recheck: Duration,
    /// A host that answers pings but is not connected in the management server gets a reconnect
    /// after this long.
    #[serde(with = "am_core::time::duration_str")]
    pub reconnect_after: Duration,
    /// A storage heartbeat older than this means the host stopped writing it.
    #[serde(with = "am_core::time::duration_str")]
    pub storage_heartbeat_window: Duration,
    /// Revival attempts (each: reconnect, then out-of-band revival) before a dead host is removed.
    pub revive_attempts: u32,
    /// An evacuation's live migrations leaving one host at a time (at least 1; vSphere allows 8
    /// vMotions per host on 10 GbE). Also the size of a planned wave.
    pub evacuation_per_host: u32,
    /// Live migrations of evacuations entering one host at a time (at least 1).
    pub evacuation_per_target: u32,
    /// Live migrations of all evacuations at a time, for the whole vCenter (at least 1).
    pub evacuation_in_flight: u32,
    /// What to do with a host predicted to fail.
    pub predicted_failure: PredictedFailure,
    /// A storage evacuation's relocations (Storage vMotion) in flight at once (at least 1).
    /// vSphere runs at most 2 per host and 8 per datastore at a time; 2 keeps within both.
    pub storage_migrations_in_flight: u32,
    /// The share of a datastore's capacity a storage evacuation keeps free on the datastores it
    /// moves files to, in percent.
    pub storage_free_margin_pct: u32,
    /// Time between revival actions, and for a revived host to show up again.
    #[serde(with = "am_core::time::duration_str")]
    pub revive_interval: Duration,
    /// After a restart, a VM whose action was unfinished in the journal is left alone this long
    /// (or until the inventory shows the action took effect): the old action may still run.
    #[serde(with = "am_core::time::duration_str")]
    pub reconcile_window: Duration,
    /// What to do with the VMs of an isolated host.
    pub isolation_response: IsolationResponse,
    /// What to do with a host that has only one failure signal.
    pub single_signal: SingleSignal,
    /// When a dead host may be removed.
    pub removal: Removal,
    /// The order of restarts after a host failure.
    pub restart_order: RestartOrder,
    /// What the backend can do out of band (from the daemon's configuration).
    #[serde(skip)]
    pub capabilities: Capabilities,
    /// More than this fraction of the hosts unreachable within `storm_window` is a storm: the
    /// manager suspects its own network and fails nothing over.
    pub storm_fraction: f64,
    /// The window of the storm guard.
    #[serde(with = "am_core::time::duration_str")]
    pub storm_window: Duration,
    /// Spare hosts (names in the backend's pool) that may be added when capacity runs out.
    pub spares: Vec<String>,
    /// Placement policy.
    pub placement: planner::Policy,
    /// The backup cache: snapshots of healthy VMs.
    pub backup: BackupPolicy,
}

/// The backup cache: every protected VM that is healthy gets a fresh snapshot every
/// `snapshot_every` (spread over the period by VM, at most `max_in_flight` at once so vCenter is
/// never flooded); the manager's own snapshots beyond `keep_snapshots` are removed, oldest first.
/// The recovery ladder reverts to the newest snapshot taken before an incident began.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupPolicy {
    /// How often each VM gets a new snapshot; `0s` turns the backup cache off.
    #[serde(with = "am_core::time::duration_str")]
    pub snapshot_every: Duration,
    /// How many of the manager's snapshots to keep per VM.
    pub keep_snapshots: usize,
    /// At most this many backup actions at once in the cluster.
    pub max_in_flight: usize,
    /// Name prefix of the manager's snapshots and clones (others are never removed).
    pub prefix: String,
    /// Only VMs whose name matches one of these patterns (`*`, `?`) are backed up.
    pub vms: Vec<String>,
    /// VMs whose name matches one of these are not (the `am.backup = off` attribute also says so).
    pub exclude_vms: Vec<String>,
    /// At most this many backup tasks (snapshots, clones, removals) are started per minute in
    /// the whole cluster: vCenter's budget. A period the budget cannot keep stretches; the
    /// status says by how much.
    pub tasks_per_minute: u32,
    /// How often each VM gets a fresh backup clone, kept powered off on another host; `0s` (the
    /// default) takes none. Clones are full copies: mind the datastore space.
    #[serde(with = "am_core::time::duration_str")]
    pub clone_every: Duration,
    /// How many of the manager's clones to keep per VM (older ones are deleted).
    pub keep_clones: usize,
}

impl Default for BackupPolicy {
    fn default() -> Self {
        BackupPolicy {
            snapshot_every: Duration::from_secs(300),
            keep_snapshots: 3,
            max_in_flight: 4,
            prefix: "am-backup-".into(),
            vms: vec!["*".into()],
            exclude_vms: Vec::new(),
            tasks_per_minute: 60,
            clone_every: Duration::ZERO,
            keep_clones: 1,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            manager_user: "am-manager".into(),
            vm_confirm: Duration::from_secs(1),
            guest_evidence_after: Duration::from_secs(5),
            power_off_grace: Duration::from_secs(2),
            recovery_grace: Duration::from_secs(30),
            hang_after: Duration::from_secs(20),
            restart_limit: 3,
            restart_window: Duration::from_secs(3600),
            single_signal_confirm: Duration::from_secs(10),
            lock_recheck: Duration::from_secs(30),
            reconnect_after: Duration::from_secs(5),
            storage_heartbeat_window: Duration::from_secs(6),
            revive_attempts: 2,
            evacuation_per_host: 8,
            evacuation_per_target: 8,
            evacuation_in_flight: 32,
            predicted_failure: PredictedFailure::Evacuate,
            storage_migrations_in_flight: 2,
            storage_free_margin_pct: 10,
            revive_interval: Duration::from_secs(10),
            reconcile_window: Duration::from_secs(60),
            isolation_response: IsolationResponse::LeaveRunning,
            single_signal: SingleSignal::CheckLocks,
            removal: Removal::AfterFence,
            restart_order: RestartOrder::default(),
            capabilities: Capabilities::default(),
            storm_fraction: 0.5,
            storm_window: Duration::from_secs(10),
            spares: Vec::new(),
            placement: planner::Policy::default(),
            backup: BackupPolicy::default(),
        }
    }
}

/// A supervisor setting that makes no sense, named by its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidSetting {
    /// The key, e.g. `storm_fraction`.
    pub key: &'static str,
    /// What is wrong with its value.
    pub reason: String,
}

impl Config {
    /// Checks values that parse but make no sense; returns every problem, each naming its key.
    pub fn validate(&self) -> Vec<InvalidSetting> {
        let mut bad = Vec::new();
        let mut check = |ok: bool, key: &'static str, reason: &str| {
            if !ok {
                bad.push(InvalidSetting {
                    key,
                    reason: reason.to_owned(),
                });
            }
        };
        check(
            self.evacuation_per_host >= 1,
            "evacuation_per_host",
            "must be at least 1",
        );
        check(
            self.evacuation_per_target >= 1,
            "evacuation_per_target",
            "must be at least 1",
        );
        check(
            self.evacuation_in_flight >= 1,
            "evacuation_in_flight",
            "must be at least 1",
        );
        check(
            self.storage_migrations_in_flight >= 1,
            "storage_migrations_in_flight",
            "must be at least 1",
        );
        check(
            self.storage_free_margin_pct < 100,
            "storage_free_margin_pct",
            "must be below 100",
        );
        check(
            !self.manager_user.trim().is_empty(),
            "manager_user",
            "must name the manager's vCenter user",
        );
        check(
            self.storm_fraction > 0.0 && self.storm_fraction <= 1.0,
            "storm_fraction",
            "must be more than 0 and at most 1",
        );
        check(
            self.restart_limit > 0,
            "restart_limit",
            "must be at least 1 (0 would never restart anything)",
        );
        check(
            !self.restart_window.is_zero(),
            "restart_window",
            "must be longer than 0s",
        );
        check(
            !self.recovery_grace.is_zero(),
            "recovery_grace",
            "must be longer than 0s",
        );
        check(
            !self.lock_recheck.is_zero(),
            "lock_recheck",
            "must be longer than 0s",
        );
        check(
            !self.storage_heartbeat_window.is_zero(),
            "storage_heartbeat_window",
            "must be longer than 0s, or every unreachable host would look dead at once",
        );
        check(
            self.placement.headroom_pct <= 90,
            "placement.headroom_pct",
            "must be at most 90 (percent)",
        );
        check(
            self.backup.keep_snapshots >= 1,
            "backup.keep_snapshots",
            "must be at least 1",
        );
        check(
            self.backup.max_in_flight >= 1,
            "backup.max_in_flight",
            "must be at least 1 (set backup.snapshot_every = \"0s\" to turn backups off)",
        );
        check(
            self.backup.tasks_per_minute >= 1,
            "backup.tasks_per_minute",
            "must be at least 1 (turn the cache off with snapshot_every = \"0s\")",
        );
        check(
            self.backup.keep_clones >= 1,
            "backup.keep_clones",
            "must be at least 1 (turn clones off with clone_every = \"0s\")",
        );
        check(
            self.backup.clone_every.is_zero() || self.backup.clone_every >= Duration::from_secs(60),
            "backup.clone_every",
            "must be 0s (off) or at least 60s: a clone is a full copy",
        );
        check(
            !self.backup.prefix.is_empty(),
            "backup.prefix",
            "must not be empty: it marks the manager's own snapshots",
        );
        bad
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_nonsense_is_named() {
        assert!(Config::default().validate().is_empty());
        let cfg = Config {
            storm_fraction: 1.5,
            restart_limit: 0,
            ..Config::default()
        };
        let keys: Vec<&str> = cfg.validate().iter().map(|b| b.key).collect();
        assert_eq!(keys, vec!["storm_fraction", "restart_limit"]);
    }
}
