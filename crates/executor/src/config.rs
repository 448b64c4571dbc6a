//! Executor settings: concurrency bounds and per-operation deadlines.

use am_core::Action;
use std::collections::BTreeMap;
use std::time::Duration;

const MIN: Duration = Duration::from_secs(60);

/// The default deadline of each operation, by [`Action::name`]. Operations missing here get
/// [`ExecutorConfig::default_timeout`].
///
/// Power operations are quick; anything that copies disks (clones, restores, relocations) or moves
/// memory (live migration) or boots a whole host can take many minutes.
pub const DEFAULT_TIMEOUTS: &[(&str, Duration)] = &[
    ("power_on", Duration::from_secs(2 * 60)),
    ("power_off", Duration::from_secs(2 * 60)),
    ("reset", Duration::from_secs(2 * 60)),
    ("revert_snapshot", Duration::from_secs(10 * 60)),
    ("create_snapshot", Duration::from_secs(10 * 60)),
    ("remove_snapshot", Duration::from_secs(30 * 60)),
    ("clone", Duration::from_secs(30 * 60)),
    ("restore_clone", Duration::from_secs(30 * 60)),
    ("migrate_cold", Duration::from_secs(10 * 60)),
    ("migrate_live", Duration::from_secs(30 * 60)),
    ("relocate", Duration::from_secs(60 * 60)),
    ("failover", Duration::from_secs(5 * 60)),
    ("register", Duration::from_secs(5 * 60)),
    ("unregister", Duration::from_secs(2 * 60)),
    ("reconnect_host", Duration::from_secs(5 * 60)),
    ("revive_host", Duration::from_secs(15 * 60)),
    ("fence_host", Duration::from_secs(5 * 60)),
    ("remove_host", Duration::from_secs(5 * 60)),
    ("add_host", Duration::from_secs(15 * 60)),
    ("enter_maintenance", Duration::from_secs(30 * 60)),
    ("exit_maintenance", Duration::from_secs(5 * 60)),
];

/// Bounds and deadlines of an [`Executor`](crate::Executor).
///
/// ```
/// use executor::ExecutorConfig;
/// use std::time::Duration;
///
/// let cfg = ExecutorConfig::default()
///     .with_max_in_flight(8)
///     .with_per_host(2)
///     .with_timeout("power_on", Duration::from_secs(30));
/// assert_eq!(cfg.timeout_for(&am_core::Action::PowerOn { vm: "vm-1".into() }), Duration::from_secs(30));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecutorConfig {
    /// How many actions may run at once in total (0 is treated as 1).
    pub max_in_flight: usize,
    /// How many actions may run at once per host, keyed by [`Action::host`] (0 is treated as 1).
    /// Actions without a host (power operations, snapshots, `add_host`) count only towards
    /// `max_in_flight`.
    pub per_host: usize,
    /// Deadline of one action (including retries of a [`Retrying`](crate::Retrying) hypervisor),
    /// keyed by [`Action::name`].
    pub timeouts: BTreeMap<String, Duration>,
    /// Deadline of operations missing from `timeouts`.
    pub default_timeout: Duration,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            max_in_flight: 32,
            per_host: 4,
            timeouts: DEFAULT_TIMEOUTS
                .iter()
                .map(|(op, d)| ((*op).to_owned(), *d))
                .collect(),
            default_timeout: 10 * MIN,
        }
    }
}

impl ExecutorConfig {
    /// Sets [`max_in_flight`](Self::max_in_flight).
    pub fn with_max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n;
        self
    }

    /// Sets [`per_host`](Self::per_host).
    pub fn with_per_host(mut self, n: usize) -> Self {
        self.per_host = n;
        self
    }

    /// Sets the deadline of operation `op` (an [`Action::name`], e.g. `"clone"`).
    pub fn with_timeout(mut self, op: &str, timeout: Duration) -> Self {
        self.timeouts.insert(op.to_owned(), timeout);
        self
    }

    /// Sets [`default_timeout`](Self::default_timeout).
    pub fn with_default_timeout(mut self, timeout: Duration) -> Self {
        self.default_timeout = timeout;
        self
    }

    /// The deadline of `action`.
    pub fn timeout_for(&self, action: &Action) -> Duration {
        self.timeouts
            .get(action.name())
            .copied()
            .unwrap_or(self.default_timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_cover_every_operation_and_can_be_overridden() {
        let cfg = ExecutorConfig::default();
        assert_eq!(cfg.max_in_flight, 32);
        assert_eq!(cfg.per_host, 4);
        assert_eq!(
            cfg.timeout_for(&Action::PowerOn { vm: "v".into() }),
            Duration::from_secs(120)
        );
        let clone = Action::Clone {
            vm: "v".into(),
            name: "v-bak".into(),
            host: "h".into(),
            datastore: None,
        };
        assert_eq!(cfg.timeout_for(&clone), Duration::from_secs(30 * 60));
        assert_eq!(cfg.timeouts.len(), 21, "one entry per Action variant");
        let cfg = cfg.with_timeout("clone", Duration::from_secs(5));
        assert_eq!(cfg.timeout_for(&clone), Duration::from_secs(5));
        let mut cfg = cfg;
        cfg.timeouts.clear();
        assert_eq!(cfg.timeout_for(&clone), Duration::from_secs(600));
    }
}
