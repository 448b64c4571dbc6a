//! Inventory deltas applied to the engine's tables, and what each one changed: which hosts
//! changed as targets (and whether they only got tighter), and which failure plans have other
//! VMs now.

use super::index::{DomainIx, HostIx, VmIx};
use super::{Engine, HostRec, VmRec, has, limit_of};
use am_core::{HostId, InventoryDelta, PowerState, Vm};
use std::collections::BTreeSet;

/// What a delta changed.
#[derive(Clone, Debug, Default)]
pub(crate) struct Change {
    /// Hosts whose state as a target changed.
    pub targets: Vec<HostIx>,
    /// Those of `targets` that only got tighter: no VM can fit them now that did not before,
    /// and no key got smaller (less room, more groups and VMs, no new affinity group, not
    /// newly usable).
    pub tight: Vec<HostIx>,
    /// Hosts whose own failure plan has other VMs (or VMs with other attributes) now.
    pub respec_hosts: Vec<HostIx>,
    /// Failure domains likewise.
    pub respec_domains: Vec<DomainIx>,
    /// A host that left.
    pub removed_host: Option<HostId>,
    /// The VM whose planning attributes changed, if the change was to a VM.
    pub vm: Option<VmIx>,
}

impl Change {
    fn push<T: PartialEq>(v: &mut Vec<T>, x: Option<T>) {
        if let Some(x) = x {
            if !v.contains(&x) {
                v.push(x);
            }
        }
    }
}

/// Counts one more `g`; true if it is new.
fn add_count<G: Ord + Copy>(v: &mut Vec<(G, u32)>, g: G) -> bool {
    match v.binary_search_by(|e| e.0.cmp(&g)) {
        Ok(i) => {
            v[i].1 += 1;
            false
        }
        Err(i) => {
            v.insert(i, (g, 1));
            true
        }
    }
}

/// Counts one `g` less; true if it is gone.
fn sub_count<G: Ord>(v: &mut Vec<(G, u32)>, g: G) -> bool {
    if let Ok(i) = v.binary_search_by(|e| e.0.cmp(&g)) {
        if v[i].1 > 1 {
            v[i].1 -= 1;
        } else {
            v.remove(i);
            return true;
        }
    }
    false
}

impl Engine {
    /// Takes VM `v` off its host's state.
    fn detach(&mut self, v: VmIx) {
        let r = &self.vms[v];
        let (on, demand, anti, aff) = (r.on, r.demand, r.anti, r.aff);
        let Some(h) = r.host else {
            return;
        };
        let host = &mut self.hosts[h];
        host.vms.remove(&v);
        if on {
            host.used = host.used.saturating_sub(&demand);
        }
        if let Some(anti) = anti {
            sub_count(&mut host.anti, anti);
        }
        if let Some(aff) = aff {
            if sub_count(&mut host.aff, aff) {
                if let Some(list) = self.aff_holders.get_mut(aff) {
                    list.retain(|&x| x != h);
                }
            }
        }
    }

    /// Adds VM `v` to its host's state.
    fn attach(&mut self, v: VmIx) {
        let r = &self.vms[v];
        let (on, demand, anti, aff) = (r.on, r.demand, r.anti, r.aff);
        let Some(h) = r.host else {
            return;
        };
        let host = &mut self.hosts[h];
        host.vms.insert(v);
        if on {
            host.used += demand;
        }
        if let Some(anti) = anti {
            add_count(&mut host.anti, anti);
        }
        if let Some(aff) = aff {
            if add_count(&mut host.aff, aff) {
                let holders = self.aff_holders.ensure(aff, Vec::new());
                if let Err(i) = holders.binary_search(&h) {
                    holders.insert(i, h);
                }
            }
        }
    }

    /// Whether host `h` now is at most as good a target as `old` for any VM.
    fn tighter(&self, h: HostIx, old: &HostRec) -> bool {
        let new = &self.hosts[h];
        (!new.present || !new.accepts || (old.present && old.accepts))
            && new.limit.fits_in(&old.limit)
            && old.used.fits_in(&new.used)
            && old.anti.iter().all(|(g, _)| has(&new.anti, *g))
            && new.aff.iter().all(|(g, _)| has(&old.aff, *g))
            && old.vms.is_subset(&new.vms)
    }

    pub(super) fn upsert_vm(&mut self, vm: &Vm) -> Change {
        let (slot, old, new) = self.vm_records(vm);
        self.replace_vm(slot, old, new)
    }

    /// [`Engine::upsert_vm`] without working out what changed: for building the tables, where
    /// no plan exists yet (no host record is copied to compare).
    pub(super) fn insert_vm(&mut self, vm: &Vm) {
        let (slot, old, new) = self.vm_records(vm);
        if old.present {
            self.detach(slot);
        }
        let present = new.present;
        self.vms[slot] = new;
        if present {
            self.attach(slot);
        }
    }

    /// VM `vm`'s slot, its record now and its record from `vm`.
    fn vm_records(&mut self, vm: &Vm) -> (VmIx, VmRec, VmRec) {
        let slot = self.vm_slot(&vm.id);
        let host = vm.host.as_ref().map(|h| self.host_slot(h));
        let anti = vm
            .anti_affinity_group
            .as_deref()
            .map(|g| self.anti_names.get_or_add(g));
        let aff = vm.affinity_group.as_deref().map(|g| self.aff_names.get_or_add(g));
        let old = self.vms[slot].clone();
        let mut new = old.clone();
        new.present = true;
        new.demand = vm.demand;
        new.on = vm.power == PowerState::PoweredOn;
        new.protected = vm.is_protected();
        new.priority = vm.priority;
        new.host = host;
        new.anti = anti;
        new.aff = aff;
        (slot, old, new)
    }

    fn replace_vm(&mut self, slot: VmIx, old: VmRec, new: VmRec) -> Change {
        let mut ch = Change::default();
        if old.plan_sig() == new.plan_sig() {
            return ch;
        }
        ch.vm = Some(slot);
        let moved = old.host_sig() != new.host_sig();
        let mut before: Vec<(HostIx, HostRec)> = Vec::new();
        if moved {
            for h in [old.host, new.host].into_iter().flatten() {
                if !before.iter().any(|(x, _)| *x == h) {
                    before.push((h, self.hosts[h].clone()));
                }
            }
        }
        if old.present {
            self.detach(slot);
        }
        self.vms[slot] = new.clone();
        if new.present {
            self.attach(slot);
        }
        for (h, snap) in before {
            ch.targets.push(h);
            if self.tighter(h, &snap) {
                ch.tight.push(h);
            }
        }
        for r in [&old, &new] {
            if let Some(h) = r.host.filter(|&h| r.planned() && self.hosts[h].present) {
                Change::push(&mut ch.respec_hosts, Some(h));
                Change::push(&mut ch.respec_domains, self.hosts[h].domain);
            }
        }
        ch
    }

    /// Applies one inventory change and says what it changed.
    pub(crate) fn apply(&mut self, delta: &InventoryDelta) -> Change {
        match delta {
            InventoryDelta::VmUpsert(vm) => self.upsert_vm(vm),
            InventoryDelta::VmRemoved(id) => match self.vm_ix.get(id) {
                Some(&slot) => {
                    let old = self.vms[slot].clone();
                    let mut new = old.clone();
                    new.present = false;
                    self.replace_vm(slot, old, new)
                }
                None => Change::default(),
            },
            InventoryDelta::HostUpsert(h) => self.upsert_host(h),
            InventoryDelta::HostRemoved(id) => self.remove_host(id),
            InventoryDelta::DatastoreUpsert(_) | InventoryDelta::Snapshots { .. } => Change::default(),
        }
    }

    fn upsert_host(&mut self, h: &am_core::Host) -> Change {
        let slot = self.host_slot(&h.id);
        let domain = h
            .failure_domain
            .as_deref()
            .map(|d| self.domain_names.get_or_add(d));
        let limit = limit_of(&self.policy, h.capacity);
        let accepts = h.accepts_vms();
        let rec = &self.hosts[slot];
        let mut ch = Change::default();
        if rec.present && rec.capacity == h.capacity && rec.accepts == accepts && rec.domain == domain {
            return ch;
        }
        let (was, old_domain) = (rec.present, rec.domain);
        if !was || rec.capacity != h.capacity || rec.accepts != accepts {
            ch.targets.push(slot);
            if was && limit.fits_in(&rec.limit) && (rec.accepts || !accepts) {
                ch.tight.push(slot);
            }
        }
        if !was {
            ch.respec_hosts.push(slot);
        }
        if !was || old_domain != domain {
            if let Some(old) = old_domain.filter(|_| was) {
                self.domain_hosts[old].remove(&slot);
                ch.respec_domains.push(old);
            }
            if let Some(d) = domain {
                self.domain_hosts.ensure(d, BTreeSet::new()).insert(slot);
                Change::push(&mut ch.respec_domains, Some(d));
            }
        }
        let rec = &mut self.hosts[slot];
        rec.present = true;
        rec.capacity = h.capacity;
        rec.limit = limit;
        rec.accepts = accepts;
        rec.domain = domain;
        ch
    }

    fn remove_host(&mut self, id: &HostId) -> Change {
        let mut ch = Change::default();
        let Some(&slot) = self.host_ix.get(id) else {
            return ch;
        };
        let rec = &mut self.hosts[slot];
        if !rec.present {
            return ch;
        }
        rec.present = false;
        rec.accepts = false;
        if let Some(domain) = rec.domain.take() {
            self.domain_hosts[domain].remove(&slot);
            ch.respec_domains.push(domain);
        }
        ch.targets.push(slot);
        ch.tight.push(slot);
        ch.removed_host = Some(id.clone());
        ch
    }

    /// Hosts whose state `delta` may change (a superset of [`Change::targets`]).
    pub(crate) fn predict_targets(&self, delta: &InventoryDelta) -> Vec<HostIx> {
        let mut out = Vec::new();
        match delta {
            InventoryDelta::VmUpsert(vm) => {
                if let Some(&v) = self.vm_ix.get(&vm.id) {
                    Change::push(&mut out, self.vms[v].host);
                }
                if let Some(h) = vm.host.as_ref().and_then(|h| self.host_ix.get(h)) {
                    Change::push(&mut out, Some(*h));
                }
            }
            InventoryDelta::VmRemoved(id) => {
                if let Some(&v) = self.vm_ix.get(id) {
                    Change::push(&mut out, self.vms[v].host);
                }
            }
            InventoryDelta::HostUpsert(h) => {
                if let Some(&x) = self.host_ix.get(&h.id) {
                    out.push(x);
                }
            }
            InventoryDelta::HostRemoved(id) => {
                if let Some(&x) = self.host_ix.get(id) {
                    out.push(x);
                }
            }
            InventoryDelta::DatastoreUpsert(_) | InventoryDelta::Snapshots { .. } => {}
        }
        out
    }
}
