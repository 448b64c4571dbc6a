//! The network as the manager sees it: whether the manager itself is isolated (every vCenter
//! call and every probe fails) and the answers to probes of hosts, guests and isolation
//! addresses, with the injected probe loss drawn from its own PRNG stream. Owns [`Network`];
//! reads the truth of hosts and VMs, changes nothing else.

use super::World;
use crate::prng::Prng;
use crate::truth::GuestState;
use crate::truth::HostCondition;
use am_core::{HostId, HvError, ProbeTarget};

/// The manager's network.
#[derive(Debug)]
pub(super) struct Network {
    /// Probability that a probe is lost.
    probe_loss: f64,
    /// The manager is cut off: vCenter calls fail, every probe fails.
    manager_isolated: bool,
    /// Draws for probe loss.
    probe_rng: Prng,
}

impl Network {
    /// The manager connected, `probe_loss` of the probes lost.
    pub(super) fn new(probe_loss: f64, seed: u64) -> Self {
        Network {
            probe_loss,
            manager_isolated: false,
            probe_rng: Prng::stream(seed, 0x9B0BE),
        }
    }

    /// Sets the probability that a probe is lost.
    pub(super) fn set_probe_loss(&mut self, probability: f64) {
        self.probe_loss = probability;
    }

    /// Cuts the manager off the network, or heals it.
    pub(super) fn set_manager_isolated(&mut self, isolated: bool) {
        self.manager_isolated = isolated;
    }
}

impl World {
    /// Whether the manager is cut off: vCenter calls fail, every probe fails.
    pub fn manager_isolated(&self) -> bool {
        self.net.manager_isolated
    }

    /// Whether a probe of `target` is answered (draws from the probe loss PRNG).
    pub fn probe(&mut self, target: &ProbeTarget) -> bool {
        if self.net.manager_isolated {
            return false;
        }
        let reachable = match target {
            ProbeTarget::Isolation { .. } => true,
            ProbeTarget::Host { host, .. } => self.hosts.get(host).is_some_and(|h| h.condition.is_pingable()),
            ProbeTarget::Guest { vm, .. } => self.vms.get(vm).is_some_and(|v| {
                v.guest == GuestState::Ok
                    && v.running_on
                        .iter()
                        .any(|h| self.hosts.get(h).is_some_and(|h| h.condition.is_pingable()))
            }),
        };
        reachable && !self.net.probe_rng.chance(self.net.probe_loss)
    }

    /// The hosts with a BMC (all of them, spares included, when the cluster has BMCs).
    pub(crate) fn power_hosts(&self) -> Vec<String> {
        if !self.cfg.bmc {
            return Vec::new();
        }
        self.hosts.keys().map(ToString::to_string).collect()
    }

    /// What host `name`'s BMC reads.
    pub(crate) fn bmc_power(&self, name: &str) -> Result<am_core::PowerReading, HvError> {
        if self.net.manager_isolated {
            return Err(HvError::Unreachable {
                target: format!("BMC of {name}"),
                detail: "the manager is cut off".into(),
            });
        }
        let h = self
            .hosts
            .get(&HostId::from(name))
            .filter(|h| !h.removed)
            .ok_or_else(|| HvError::not_found("host", name))?;
        Ok(match h.condition {
            HostCondition::Off => am_core::PowerReading::Off,
            _ => am_core::PowerReading::On,
        })
    }
}
