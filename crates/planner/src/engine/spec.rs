//! What a plan is for: the VMs to place, in placement order, and the hosts that are gone, for
//! the failure of one host, of a failure domain, or any VMs and hosts.

use super::Engine;
use super::VmIx;
use super::index::{DomainIx, HostIx};
use crate::hash::hash_str;
use am_core::{HostId, VmId};
use std::collections::BTreeSet;

/// What to plan: the VMs, in order, and the hosts that are gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Spec {
    /// Excluded host slots, sorted.
    pub excluded: Vec<HostIx>,
    /// Seed of the host order.
    pub seed: u64,
    /// VM slots in placement order.
    pub vms: Vec<VmIx>,
}

impl Spec {
    pub fn excludes(&self, host: HostIx) -> bool {
        self.excluded.binary_search(&host).is_ok()
    }
}

impl Engine {
    /// Placement order: priority, memory, CPU (each highest first), then id.
    fn placement_cmp(&self, a: VmIx, b: VmIx) -> std::cmp::Ordering {
        let (x, y) = (&self.vms[a], &self.vms[b]);
        y.priority
            .cmp(&x.priority)
            .then(y.demand.mem_mib.cmp(&x.demand.mem_mib))
            .then(y.demand.cpu_mhz.cmp(&x.demand.cpu_mhz))
            .then_with(|| x.id.cmp(&y.id))
    }

    /// Sorts `vms` into placement order.
    fn order_vms(&self, vms: &mut [VmIx]) {
        vms.sort_by(|&a, &b| self.placement_cmp(a, b));
    }

    /// The spec of the same failure as `old` (a host's or a domain's, current before VM `v`
    /// changed) now that only `v` changed: `v` taken out, and put back in its place if the
    /// failure now plans it. The same as making the spec anew, without sorting every VM again.
    pub(crate) fn spec_after_vm(&self, old: &Spec, v: VmIx) -> Spec {
        let mut vms: Vec<VmIx> = Vec::with_capacity(old.vms.len() + 1);
        vms.extend(old.vms.iter().copied().filter(|&x| x != v));
        let r = &self.vms[v];
        if r.planned() && r.host.is_some_and(|h| old.excludes(h)) {
            let i = vms.partition_point(|&x| self.placement_cmp(x, v) == std::cmp::Ordering::Less);
            vms.insert(i, v);
        }
        Spec {
            excluded: old.excluded.clone(),
            seed: old.seed,
            vms,
        }
    }

    /// The VMs a failure of `hosts` puts to plan, in order.
    fn planned_on(&self, hosts: &[HostIx]) -> Vec<VmIx> {
        let mut vms: Vec<VmIx> = hosts
            .iter()
            .flat_map(|&h| self.hosts[h].vms.iter().copied())
            .filter(|&v| self.vms[v].planned())
            .collect();
        self.order_vms(&mut vms);
        vms
    }

    /// The failure of one host: its protected, powered-on VMs.
    pub(crate) fn host_spec(&self, h: HostIx) -> Spec {
        Spec {
            excluded: vec![h],
            seed: hash_str("fail", self.hosts[h].id.as_str()),
            vms: self.planned_on(&[h]),
        }
    }

    /// The failure of a whole domain.
    pub(crate) fn domain_spec(&self, d: DomainIx) -> Spec {
        let excluded: Vec<HostIx> = self.domain_hosts[d].iter().copied().collect();
        Spec {
            seed: hash_str("domain", self.domain_name(d)),
            vms: self.planned_on(&excluded),
            excluded,
        }
    }

    /// Any VMs (known ones; others are ignored) with any hosts excluded.
    pub(crate) fn custom_spec(&self, tag: &str, vms: &[VmId], exclude: &BTreeSet<HostId>) -> Spec {
        let mut excluded: Vec<HostIx> = exclude.iter().filter_map(|h| self.host_of(h)).collect();
        excluded.sort_unstable();
        let names: Vec<&str> = exclude.iter().map(HostId::as_str).collect();
        let seed = if exclude.len() == 1 {
            hash_str("fail", names.concat().as_str())
        } else {
            hash_str(tag, names.join("\0").as_str())
        };
        let mut slots: Vec<VmIx> = vms
            .iter()
            .filter_map(|v| self.vm_of(v))
            .filter(|&v| self.vms[v].present)
            .collect();
        slots.sort_unstable();
        slots.dedup();
        self.order_vms(&mut slots);
        Spec {
            excluded,
            seed,
            vms: slots,
        }
    }

    /// Powered-on VMs (protected or not) registered on `hosts`.
    pub(crate) fn running_on(&self, hosts: &BTreeSet<HostId>) -> Vec<VmId> {
        hosts
            .iter()
            .filter_map(|h| self.host_of(h))
            .flat_map(|h| self.hosts[h].vms.iter().copied())
            .filter(|&v| self.vms[v].present && self.vms[v].on)
            .map(|v| self.vms[v].id.clone())
            .collect()
    }
}
