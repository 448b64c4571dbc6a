//! Placement rules that the inventory does not carry: VM-host rules and fault-tolerant pairs.
//!
//! [`am_core::Vm`] already has an affinity group (soft: prefer a host that runs the group) and an
//! anti-affinity group (hard: never two on one host). Everything else lives here, keyed by id, so
//! that the rules can name VMs and hosts that are not (yet) in the inventory.

use am_core::{HostId, VmId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use thiserror::Error;

/// What a [`HostRule`] asks of its VMs, as vSphere's VM-host rules.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RuleKind {
    /// Hard: the VMs only ever run on a host of the group.
    MustRunOn,
    /// Hard: the VMs never run on a host of the group.
    MustNotRunOn,
    /// Soft: a host of the group is preferred.
    ShouldRunOn,
    /// Soft: a host outside the group is preferred.
    ShouldNotRunOn,
}

impl RuleKind {
    /// Whether a plan may break the rule (it then only prefers hosts that keep it).
    pub fn is_soft(self) -> bool {
        matches!(self, RuleKind::ShouldRunOn | RuleKind::ShouldNotRunOn)
    }
}

/// A VM-host rule: `vms` must (not) / should (not) run on the hosts of `host_group`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRule {
    /// Name, for messages.
    pub name: String,
    /// The VMs the rule applies to.
    pub vms: BTreeSet<VmId>,
    /// A key of [`Constraints::host_groups`].
    pub host_group: String,
    /// What the rule asks.
    pub kind: RuleKind,
}

/// A fault-tolerant pair: a primary and its secondary (a live shadow copy). The two never share a
/// host, in the running cluster or in any plan.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FtPair {
    /// The primary VM.
    pub primary: VmId,
    /// The secondary VM.
    pub secondary: VmId,
}

/// The rules of a cluster beyond what [`am_core::Inventory`] says. Empty by default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Constraints {
    /// Named groups of hosts, referred to by [`HostRule::host_group`].
    pub host_groups: BTreeMap<String, BTreeSet<HostId>>,
    /// VM-host rules.
    pub host_rules: Vec<HostRule>,
    /// Fault-tolerant pairs.
    pub ft_pairs: Vec<FtPair>,
}

impl Constraints {
    /// No rules at all.
    pub fn none() -> Self {
        Constraints::default()
    }

    /// Checks that every rule names a known host group and that every VM is in at most one
    /// fault-tolerant pair, and not paired with itself.
    pub fn validate(&self) -> Result<(), PlanError> {
        for rule in &self.host_rules {
            if !self.host_groups.contains_key(&rule.host_group) {
                return Err(PlanError::UnknownHostGroup {
                    rule: rule.name.clone(),
                    group: rule.host_group.clone(),
                });
            }
        }
        let mut seen = BTreeSet::new();
        for pair in &self.ft_pairs {
            if pair.primary == pair.secondary {
                return Err(PlanError::FtPairWithItself(pair.primary.clone()));
            }
            for vm in [&pair.primary, &pair.secondary] {
                if !seen.insert(vm) {
                    return Err(PlanError::FtPairOverlap(vm.clone()));
                }
            }
        }
        Ok(())
    }
}

/// Why the planner refuses its input.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum PlanError {
    /// A host rule names a host group that [`Constraints::host_groups`] lacks.
    #[error("host rule {rule:?} names unknown host group {group:?}")]
    UnknownHostGroup {
        /// The rule.
        rule: String,
        /// The group it names.
        group: String,
    },
    /// A VM is in more than one fault-tolerant pair.
    #[error("VM {0} is in more than one fault-tolerant pair")]
    FtPairOverlap(VmId),
    /// A fault-tolerant pair names the same VM twice.
    #[error("fault-tolerant pair of VM {0} with itself")]
    FtPairWithItself(VmId),
}

/// `Result` with [`PlanError`].
pub type Result<T, E = PlanError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_broken_rule() {
        let mut c = Constraints::none();
        assert_eq!(c.validate(), Ok(()));
        c.host_rules.push(HostRule {
            name: "db-on-ssd".into(),
            vms: BTreeSet::from(["db".into()]),
            host_group: "ssd".into(),
            kind: RuleKind::MustRunOn,
        });
        assert_eq!(
            c.validate(),
            Err(PlanError::UnknownHostGroup {
                rule: "db-on-ssd".into(),
                group: "ssd".into()
            })
        );
        c.host_groups.insert("ssd".into(), BTreeSet::new());
        assert_eq!(c.validate(), Ok(()));
        c.ft_pairs.push(FtPair {
            primary: "a".into(),
            secondary: "b".into(),
        });
        c.ft_pairs.push(FtPair {
            primary: "c".into(),
            secondary: "b".into(),
        });
        assert_eq!(c.validate(), Err(PlanError::FtPairOverlap("b".into())));
        c.ft_pairs[1].secondary = "c".into();
        assert_eq!(c.validate(), Err(PlanError::FtPairWithItself("c".into())));
    }
}
