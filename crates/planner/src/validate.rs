//! Checking a plan against a cluster, independently of how it was made.

use crate::constraints::{Constraints, RuleKind};
use crate::engine::limit_of;
use crate::{Plan, Policy};
use am_core::{HostId, Inventory, PowerState, Resources, VmId};
use std::collections::{BTreeMap, BTreeSet};
use thiserror::Error;

/// A way a plan does not fit the cluster that remains after its failure.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum Violation {
    /// The target is one of the failed hosts, unknown, disconnected or in maintenance.
    #[error("VM {vm} goes to {host}, which does not accept VMs")]
    TargetUnusable {
        /// The VM.
        vm: VmId,
        /// Its target.
        host: HostId,
    },
    /// A VM of the plan is not in the inventory.
    #[error("VM {0} is unknown")]
    UnknownVm(VmId),
    /// What runs on the host and what the plan puts there exceed what the policy lets VMs use.
    #[error("host {host} would need {needed:?} of {limit:?}")]
    Capacity {
        /// The host.
        host: HostId,
        /// What would run there.
        needed: Resources,
        /// What VMs may use there.
        limit: Resources,
    },
    /// Two VMs of one anti-affinity group on one host.
    #[error("VM {vm} joins anti-affinity group {group} on {host}")]
    AntiAffinity {
        /// The VM placed.
        vm: VmId,
        /// The group.
        group: String,
        /// The host.
        host: HostId,
    },
    /// A fault-tolerant pair on one host.
    #[error("VM {vm} joins its fault-tolerant partner on {host}")]
    FaultTolerance {
        /// The VM placed.
        vm: VmId,
        /// The host.
        host: HostId,
    },
    /// A must (not) run on rule is broken.
    #[error("VM {vm} on {host} breaks host rule {rule}")]
    HostRule {
        /// The VM.
        vm: VmId,
        /// The host.
        host: HostId,
        /// The rule's name.
        rule: String,
    },
}

/// Checks that `plan` is valid on what remains of `inv` when `failed` hosts are gone: targets
/// accept VMs, capacity (under `policy`) holds on every target, anti-affinity groups and
/// fault-tolerant pairs stay apart, and must (not) run on rules hold. Only what the plan adds is
/// judged: a host already over its limit, with nothing placed on it, is no violation.
///
/// The supervisor can use it to decide whether a stale plan may still be executed.
pub fn check_plan(
    inv: &Inventory,
    constraints: &Constraints,
    failed: &BTreeSet<HostId>,
    plan: &Plan,
    policy: &Policy,
) -> Result<(), Violation> {
    // Where every VM ends up: its target, or where it is if it stays on a surviving host.
    let mut final_host: BTreeMap<&VmId, &HostId> = BTreeMap::new();
    for vm in inv.vms.values() {
        if let Some(h) = &vm.host {
            if !failed.contains(h) && !plan.placements.contains_key(&vm.id) {
                final_host.insert(&vm.id, h);
            }
        }
    }
    let mut added: BTreeMap<&HostId, Resources> = BTreeMap::new();
    for (vm, host) in &plan.placements {
        let Some(v) = inv.vms.get(vm) else {
            return Err(Violation::UnknownVm(vm.clone()));
        };
        if failed.contains(host) || !inv.hosts.get(host).is_some_and(|h| h.accepts_vms()) {
            return Err(Violation::TargetUnusable {
                vm: vm.clone(),
                host: host.clone(),
            });
        }
        final_host.insert(vm, host);
        *added.entry(host).or_default() += v.demand;
    }
    let mut staying: BTreeMap<&HostId, Resources> = BTreeMap::new();
    let mut groups: BTreeMap<(&HostId, &str), u32> = BTreeMap::new();
    for (vm, at) in &final_host {
        let Some(v) = inv.vms.get(*vm) else { continue };
        if v.power == PowerState::PoweredOn && !plan.placements.contains_key(*vm) {
            *staying.entry(at).or_default() += v.demand;
        }
        if let Some(g) = &v.anti_affinity_group {
            *groups.entry((at, g.as_str())).or_default() += 1;
        }
    }
    for (host, add) in &added {
        if *add == Resources::ZERO {
            continue;
        }
        let Some(h) = inv.hosts.get(*host) else { continue };
        let needed = staying.get(host).copied().unwrap_or_default() + *add;
        let limit = limit_of(policy, h.capacity);
        if !needed.fits_in(&limit) {
            return Err(Violation::Capacity {
                host: (*host).clone(),
                needed,
                limit,
            });
        }
    }
    let mut partner: BTreeMap<&VmId, &VmId> = BTreeMap::new();
    for p in &constraints.ft_pairs {
        partner.insert(&p.primary, &p.secondary);
        partner.insert(&p.secondary, &p.primary);
    }
    for (vm, host) in &plan.placements {
        let Some(v) = inv.vms.get(vm) else { continue };
        if let Some(g) = &v.anti_affinity_group {
            let clash = groups.get(&(host, g.as_str())).copied().unwrap_or(0) > 1;
            if clash {
                return Err(Violation::AntiAffinity {
                    vm: vm.clone(),
                    group: g.clone(),
                    host: host.clone(),
                });
            }
        }
        if let Some(p) = partner.get(vm) {
            if final_host.get(p) == Some(&host) {
                return Err(Violation::FaultTolerance {
                    vm: vm.clone(),
                    host: host.clone(),
                });
            }
        }
        for rule in &constraints.host_rules {
            if !rule.vms.contains(vm) {
                continue;
            }
            let in_group = constraints
                .host_groups
                .get(&rule.host_group)
                .is_some_and(|g| g.contains(host));
            let broken = match rule.kind {
                RuleKind::MustRunOn => !in_group,
                RuleKind::MustNotRunOn => in_group,
                RuleKind::ShouldRunOn | RuleKind::ShouldNotRunOn => false,
            };
            if broken {
                return Err(Violation::HostRule {
                    vm: vm.clone(),
                    host: host.clone(),
                    rule: rule.name.clone(),
                });
            }
        }
    }
    Ok(())
}
