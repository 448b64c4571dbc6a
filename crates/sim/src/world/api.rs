//! What a hypervisor call meets before it reaches the truth: the injected API faults (counted or
//! probabilistic, drawn from their own PRNG stream), the injected extra latency, and the objects
//! an operation is in flight on. Owns [`ApiGate`]; touches nothing else of the world (latency
//! reads the configured base latencies).

use super::World;
use crate::fault::{ApiErrorKind, ApiTrigger};
use crate::prng::Prng;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Hypervisor operations that `*` in an API fault matches (every `Action` name).
const HV_OPS: &[&str] = &[
    "power_on",
    "power_off",
    "reset",
    "revert_snapshot",
    "create_snapshot",
    "remove_snapshot",
    "clone",
    "restore_clone",
    "migrate_cold",
    "migrate_live",
    "failover",
    "register",
    "unregister",
    "reconnect_host",
    "revive_host",
    "fence_host",
    "remove_host",
    "add_host",
    "enter_maintenance",
    "exit_maintenance",
];

/// Whether an API fault for `method` applies to a call of `op`.
fn method_matches(method: &str, op: &str) -> bool {
    method == op
        || (method == "*" && HV_OPS.contains(&op))
        || (method == "migrate" && op.starts_with("migrate_"))
        || (method == "clone_vm" && op == "clone")
        || (method == "register_vm" && op == "register")
        || (method == "unregister_vm" && op == "unregister")
}

/// Injected API faults and latency, and busy objects.
#[derive(Debug)]
pub(super) struct ApiGate {
    /// Injected faults, in injection order: method, error, trigger.
    faults: Vec<(String, ApiErrorKind, ApiTrigger)>,
    /// Extra latency by method.
    latency: BTreeMap<String, Duration>,
    /// Draws for probabilistic faults.
    rng: Prng,
    /// Keys of the objects an operation is in flight on.
    busy: BTreeSet<String>,
}

impl ApiGate {
    /// No faults, no extra latency, nothing busy.
    pub(super) fn new(seed: u64) -> Self {
        ApiGate {
            faults: Vec::new(),
            latency: BTreeMap::new(),
            rng: Prng::stream(seed, 0xA91),
            busy: BTreeSet::new(),
        }
    }

    /// Adds an injected fault for calls of `method`. A probability replaces the method's earlier
    /// probability (0 only removes it); `Err` says why a fault changes nothing.
    pub(super) fn add_fault(
        &mut self,
        method: &str,
        error: ApiErrorKind,
        trigger: ApiTrigger,
    ) -> Result<(), String> {
        if let ApiTrigger::Probability(p) = trigger {
            self.faults
                .retain(|(m, _, t)| !(m == method && matches!(t, ApiTrigger::Probability(_))));
            if p == 0.0 {
                return Ok(());
            }
        }
        if matches!(trigger, ApiTrigger::Count(0)) {
            return Err("a count of zero fails nothing".into());
        }
        self.faults.push((method.to_owned(), error, trigger));
        Ok(())
    }

    /// Sets the extra latency of calls of `method` (zero removes it).
    pub(super) fn set_latency(&mut self, method: &str, extra: Duration) {
        if extra.is_zero() {
            self.latency.remove(method);
        } else {
            self.latency.insert(method.to_owned(), extra);
        }
    }
}

impl World {
    /// The injected fault a call of `op` hits, if any (consumes counts, draws probabilities).
    pub fn take_api_fault(&mut self, op: &str) -> Option<ApiErrorKind> {
        let mut hit = None;
        let mut exhausted = None;
        for (i, (method, kind, trigger)) in self.api.faults.iter_mut().enumerate() {
            if !method_matches(method, op) {
                continue;
            }
            match trigger {
                ApiTrigger::Count(n) => {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        exhausted = Some(i);
                    }
                    hit = Some(*kind);
                    break;
                }
                ApiTrigger::Probability(p) => {
                    if self.api.rng.chance(*p) {
                        hit = Some(*kind);
                        break;
                    }
                }
            }
        }
        if let Some(i) = exhausted {
            self.api.faults.remove(i);
        }
        hit
    }

    /// The latency of `op`, injected extra latency included.
    pub fn latency(&self, op: &str) -> Duration {
        let extra: Duration = self
            .api
            .latency
            .iter()
            .filter(|(m, _)| method_matches(m, op))
            .map(|(_, d)| *d)
            .sum();
        self.cfg.latencies.get(op) + extra
    }

    /// Marks `key` busy; false if it already was.
    pub fn set_busy(&mut self, key: &str) -> bool {
        self.api.busy.insert(key.to_owned())
    }

    /// Marks `key` not busy.
    pub fn clear_busy(&mut self, key: &str) {
        self.api.busy.remove(key);
    }
}
