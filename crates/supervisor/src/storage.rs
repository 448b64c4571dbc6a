//! Storage maintenance, as an operator asks for it (`evacuate-datastore`): the files of every VM
//! on a datastore are moved to other datastores with room by `Action::Relocate` (a Storage
//! vMotion for a running VM; no power change), at most `storage_migrations_in_flight` at a time,
//! a failed move retried once on another datastore. The whole move is planned before the first
//! one starts: if some VM fits nowhere, nothing moves.
//!
//! Which VMs: every VM whose files are on the datastore, powered on or off, protected or not,
//! except the manager's own backup clones (copies: the next clone of a moved VM is made on its new
//! datastore, and retention removes the old ones). Where to: a datastore other than the one
//! emptied, not in storage maintenance itself, mounted by the VM's host, whose free space minus
//! `storage_free_margin_pct` of its capacity minus what is already planned to go there holds the
//! VM (`Vm::storage_mib`; unknown counts as 0); the roomiest such one, largest VMs placed first.
//!
//! While it runs the datastore is in storage maintenance: nothing is relocated onto it, and the
//! backup cache takes no snapshot or clone of the VMs still on it (a clone would land there).

use super::*;
use crate::record::summarize;
use am_core::{Datastore, DatastoreId};

/// A storage evacuation under way.
#[derive(Clone, Debug)]
pub(crate) struct StorageEvac {
    /// Moves not issued yet: each VM and the datastore planned for it.
    queue: VecDeque<(VmId, DatastoreId)>,
    /// Moves in flight: each VM and where it goes.
    running: BTreeMap<ActionId, (VmId, DatastoreId)>,
    /// VMs already retried once elsewhere.
    retried: BTreeSet<VmId>,
    /// VMs to move in all, and moved so far.
    total: usize,
    moved: usize,
    /// The VMs whose relocation reported done (the inventory may lag behind).
    moved_vms: BTreeSet<VmId>,
    /// VMs that could not move, and why.
    failed: Vec<(VmId, String)>,
}

impl Supervisor {
    /// An operator's request about a datastore.
    pub(crate) fn on_storage_request(&mut self, now: Time, req: OperatorRequest) {
        match req {
            OperatorRequest::EvacuateDatastore { datastore } => {
                self.start_storage_evacuation(now, &datastore)
            }
            other => self.note(
                now,
                Subject::Cluster,
                format!("operator: {other}: refused, not a datastore request"),
            ),
        }
    }

    /// A datastore's name and id, for the audit log.
    pub(crate) fn ds_label(&self, ds: &DatastoreId) -> String {
        match self.inv.datastores.get(ds) {
            Some(d) if d.name != ds.as_str() => format!("{} ({ds})", d.name),
            _ => ds.to_string(),
        }
    }

    /// Whether a storage evacuation of `ds` runs (no VM files go there meanwhile).
    pub(crate) fn in_storage_maintenance(&self, ds: &DatastoreId) -> bool {
        self.storage.contains_key(ds)
    }

    /// Whether a relocation of a storage evacuation is in flight for `vm`.
    pub(crate) fn relocating_vm(&self, vm: &VmId) -> bool {
        self.in_flight
            .values()
            .any(|f| matches!(&f.purpose, Purpose::StorageMove(_, v) if v == vm))
    }

    /// Whether the backup cache leaves `vm` alone: its files are on a datastore in storage
    /// maintenance (a clone or snapshot would land there) or being moved.
    pub(crate) fn storage_held(&self, vm: &VmId) -> bool {
        if self.storage.is_empty() {
            return false;
        }
        self.inv
            .vms
            .get(vm)
            .and_then(|v| v.datastore.as_ref())
            .is_some_and(|ds| self.in_storage_maintenance(ds))
            || self.relocating_vm(vm)
    }

    /// The VMs a storage evacuation of `ds` moves: all whose files are there but the manager's
    /// own backup clones.
    fn vms_with_files_on<'a>(&'a self, ds: &'a DatastoreId) -> impl Iterator<Item = &'a Vm> + 'a {
        self.inv
            .vms
            .values()
            .filter(move |v| v.datastore.as_ref() == Some(ds) && v.backup_of.is_none())
    }

    /// What every storage evacuation still plans to put on each datastore (queued or in
    /// flight), in MiB.
    fn storage_planned(&self) -> BTreeMap<DatastoreId, u64> {
        let mut planned: BTreeMap<DatastoreId, u64> = BTreeMap::new();
        for ev in self.storage.values() {
            for (vm, to) in ev.queue.iter().chain(ev.running.values()) {
                *planned.entry(to.clone()).or_default() += self.storage_size(vm);
            }
        }
        planned
    }

    fn storage_size(&self, vm: &VmId) -> u64 {
        self.inv.vms.get(vm).and_then(|v| v.storage_mib).unwrap_or(0)
    }

    /// The space `d` can still take: free, minus the margin, minus what is planned there.
    fn storage_room(&self, d: &Datastore, planned: &BTreeMap<DatastoreId, u64>) -> u64 {
        let pct = u64::from(self.cfg.storage_free_margin_pct);
        let margin = d.capacity_mib.saturating_mul(pct) / 100;
        d.free_mib
            .saturating_sub(margin)
            .saturating_sub(planned.get(&d.id).copied().unwrap_or(0))
    }

    /// Where `vm`'s files go: the roomiest datastore that is not `exclude`d, not its own, not in
    /// storage maintenance, mounted by its host, and holds it.
    fn storage_target(
        &self,
        vm: &Vm,
        exclude: &BTreeSet<DatastoreId>,
        planned: &BTreeMap<DatastoreId, u64>,
    ) -> Option<DatastoreId> {
        let need = vm.storage_mib.unwrap_or(0);
        let host = vm.host.as_ref()?;
        self.inv
            .datastores
            .values()
            .filter(|d| Some(&d.id) != vm.datastore.as_ref() && !exclude.contains(&d.id))
            .filter(|d| !self.in_storage_maintenance(&d.id) && d.hosts.contains(host))
            .map(|d| (self.storage_room(d, planned), d))
            .filter(|(room, _)| *room >= need)
            .max_by(|(ra, a), (rb, b)| ra.cmp(rb).then_with(|| b.id.cmp(&a.id)))
            .map(|(_, d)| d.id.clone())
    }

    /// The datastore an operator named: by id, else by its (unique) name.
    fn find_datastore(&self, named: &DatastoreId) -> Option<DatastoreId> {
        if self.inv.datastores.contains_key(named) {
            return Some(named.clone());
        }
        let mut by_name = self.inv.datastores.values().filter(|d| d.name == named.as_str());
        match (by_name.next(), by_name.next()) {
            (Some(d), None) => Some(d.id.clone()),
            _ => None,
        }
    }

    fn start_storage_evacuation(&mut self, now: Time, named: &DatastoreId) {
        let Some(ds) = self.find_datastore(named) else {
            self.note(
                now,
                Subject::Datastore(named.clone()),
                format!(
                    "operator: evacuate-datastore {named}: refused, no datastore has that id or (unique) name"
                ),
            );
            return;
        };
        let ds = &ds;
        let subject = Subject::Datastore(ds.clone());
        let name = self.ds_label(ds);
        self.note(
            now,
            subject.clone(),
            format!("operator: evacuate-datastore {name}"),
        );
        if self.in_storage_maintenance(ds) {
            self.note(
                now,
                subject,
                "storage evacuation refused: one is under way already",
            );
            return;
        }
        let mut vms: Vec<&Vm> = self.vms_with_files_on(ds).collect();
        if vms.is_empty() {
            self.note(
                now,
                subject,
                "storage evacuation: nothing to move, no VM has its files there",
            );
            return;
        }
        // Largest first: the ones hardest to place get the most room.
        vms.sort_by(|a, b| {
            b.storage_mib
                .unwrap_or(0)
                .cmp(&a.storage_mib.unwrap_or(0))
                .then_with(|| a.id.cmp(&b.id))
        });
        let mut planned = self.storage_planned();
        let exclude = BTreeSet::from([ds.clone()]);
        let mut plan: Vec<(VmId, DatastoreId)> = Vec::new();
        let mut unplaced: Vec<String> = Vec::new();
        for vm in &vms {
            let size = vm.storage_mib.unwrap_or(0);
            match self.storage_target(vm, &exclude, &planned) {
                Some(to) => {
                    *planned.entry(to.clone()).or_default() += size;
                    plan.push((vm.id.clone(), to));
                }
                None if vm.host.is_none() => {
                    unplaced.push(format!("{} (not registered on a host)", self.vm_label(&vm.id)))
                }
                None => unplaced.push(format!("{} ({size} MiB)", self.vm_label(&vm.id))),
            }
        }
        if !unplaced.is_empty() {
            // Refused before anything moves: nothing is left half-moved.
            self.raise(
                now,
                AlarmKind::EvacuationFailed,
                subject,
                Severity::Warning,
                format!(
                    "storage evacuation of {name} refused: no other datastore their host mounts has room for {} (keeping {}% of each free); nothing was moved",
                    summarize(&unplaced),
                    self.cfg.storage_free_margin_pct
                ),
            );
            return;
        }
        self.clear(now, AlarmKind::EvacuationFailed, subject.clone());
        // Issued most important first.
        plan.sort_by_key(|(vm, _)| {
            let p = self.inv.vms.get(vm).map_or(0, crate::ladder::priority_of);
            (std::cmp::Reverse(p), vm.clone())
        });
        let total = plan.len();
        let mib: u64 = plan.iter().map(|(vm, _)| self.storage_size(vm)).sum();
        let limit = self.cfg.storage_migrations_in_flight.max(1);
        self.note(
            now,
            subject,
            format!(
                "storage maintenance: {total} VMs ({mib} MiB) to move off {name}, at most {limit} at a time; nothing new is placed there"
            ),
        );
        self.storage.insert(
            ds.clone(),
            StorageEvac {
                queue: plan.into(),
                running: BTreeMap::new(),
                retried: BTreeSet::new(),
                total,
                moved: 0,
                moved_vms: BTreeSet::new(),
                failed: Vec::new(),
            },
        );
        self.next_storage_moves(now, ds);
    }

    /// Issues queued moves up to the bound, or ends the evacuation when nothing is left.
    fn next_storage_moves(&mut self, now: Time, ds: &DatastoreId) {
        let limit = usize::try_from(self.cfg.storage_migrations_in_flight.max(1)).unwrap_or(usize::MAX);
        loop {
            let Some(ev) = self.storage.get_mut(ds) else {
                return;
            };
            if ev.running.len() >= limit {
                return;
            }
            let Some((vm, to)) = ev.queue.pop_front() else {
                if ev.running.is_empty() {
                    self.finish_storage_evacuation(now, ds);
                }
                return;
            };
            self.relocate(now, ds, &vm, to, "storage maintenance");
        }
    }

    /// Issues one relocation of `vm`'s files from `ds` to `to`, unless it moved meanwhile or is
    /// in the middle of a recovery (then it is counted as not moved).
    fn relocate(&mut self, now: Time, ds: &DatastoreId, vm: &VmId, to: DatastoreId, why: &str) {
        let Some(v) = self.inv.vms.get(vm) else {
            self.storage_failed(ds, vm, "gone from the inventory".into());
            return;
        };
        if v.datastore.as_ref() != Some(ds) {
            return; // Moved by someone else meanwhile.
        }
        let busy = self.in_flight.values().any(|f| f.action.vm() == Some(vm));
        let quiet = self.vms.get(vm).is_none_or(|r| {
            matches!(
                r.state,
                VmState::Healthy | VmState::Unprotected | VmState::StayOff { .. }
            )
        });
        if busy || !quiet {
            self.storage_failed(ds, vm, "busy with its own recovery".into());
            return;
        }
        let priority = crate::ladder::priority_of(v);
        let (vl, fl, tl) = (self.vm_label(vm), self.ds_label(ds), self.ds_label(&to));
        let id = self.issue(
            now,
            Action::Relocate {
                vm: vm.clone(),
                host: None,
                datastore: Some(to.clone()),
            },
            Purpose::StorageMove(ds.clone(), vm.clone()),
            priority,
            format!("{why}: move the files of {vl} from {fl} to {tl}"),
        );
        if let Some(ev) = self.storage.get_mut(ds) {
            ev.running.insert(id, (vm.clone(), to));
        }
    }

    fn storage_failed(&mut self, ds: &DatastoreId, vm: &VmId, why: String) {
        if let Some(ev) = self.storage.get_mut(ds) {
            ev.failed.push((vm.clone(), why));
        }
    }

    /// A relocation of a storage evacuation finished.
    pub(crate) fn storage_move_done(
        &mut self,
        now: Time,
        id: ActionId,
        ds: &DatastoreId,
        vm: &VmId,
        result: Result<ActionOutcome, HvError>,
    ) {
        let home = self.inv.vms.get(vm).and_then(|v| v.host.clone());
        let host_lost = home
            .as_ref()
            .and_then(|h| self.host_state(h))
            .is_some_and(|s| matches!(s, HostState::Dead { .. }));
        if result.is_err() && host_lost && self.is_protected(vm) {
            // Its host died under it: it is failed over with the rest (its files stayed).
            self.await_failover(
                now,
                vm,
                home.clone(),
                format!(
                    "host {} dead during the relocation of its files",
                    home.as_ref().map_or("?", |h| h.as_str())
                ),
            );
            self.place_waiting(now);
        }
        let Some(ev) = self.storage.get_mut(ds) else {
            return;
        };
        let Some((_, to)) = ev.running.remove(&id) else {
            return;
        };
        match result {
            Ok(_) => {
                ev.moved += 1;
                ev.moved_vms.insert(vm.clone());
                let (moved, total) = (ev.moved, ev.total);
                self.moved_files(vm, ds, &to);
                let (vl, dl, tl) = (self.vm_label(vm), self.ds_label(ds), self.ds_label(&to));
                self.note(
                    now,
                    Subject::Datastore(ds.clone()),
                    format!("storage evacuation of {dl}: {moved}/{total} moved ({vl} now on {tl})"),
                );
            }
            Err(e) => {
                if ev.retried.insert(vm.clone()) {
                    // Once more, elsewhere.
                    let exclude = BTreeSet::from([ds.clone(), to]);
                    let planned = self.storage_planned();
                    let target = self
                        .inv
                        .vms
                        .get(vm)
                        .and_then(|v| self.storage_target(v, &exclude, &planned));
                    match target {
                        Some(t) => self.relocate(now, ds, vm, t, &format!("retry after {e}")),
                        None => self.storage_failed(ds, vm, format!("{e}; no other datastore has room")),
                    }
                } else {
                    self.storage_failed(ds, vm, e.to_string());
                }
            }
        }
        self.next_storage_moves(now, ds);
    }

    fn is_protected(&self, vm: &VmId) -> bool {
        self.inv.vms.get(vm).is_some_and(Vm::is_protected)
    }

    /// A relocation went through: the VM's files and the two datastores' free space are counted
    /// so until the inventory says so itself.
    fn moved_files(&mut self, vm: &VmId, from: &DatastoreId, to: &DatastoreId) {
        let size = self.storage_size(vm);
        if let Some(v) = self.inv.vms.get_mut(vm) {
            v.datastore = Some(to.clone());
        }
        if let Some(d) = self.inv.datastores.get_mut(to) {
            d.free_mib = d.free_mib.saturating_sub(size);
        }
        if let Some(d) = self.inv.datastores.get_mut(from) {
            d.free_mib = d.free_mib.saturating_add(size).min(d.capacity_mib);
        }
    }

    fn finish_storage_evacuation(&mut self, now: Time, ds: &DatastoreId) {
        let Some(ev) = self.storage.remove(ds) else {
            return;
        };
        let name = self.ds_label(ds);
        let subject = Subject::Datastore(ds.clone());
        let failed: BTreeSet<&VmId> = ev.failed.iter().map(|(v, _)| v).collect();
        let mut why: Vec<String> = ev
            .failed
            .iter()
            .map(|(v, e)| format!("{}: {e}", self.vm_label(v)))
            .collect();
        // VMs that showed up there meanwhile (or whose move vanished) are left too.
        why.extend(
            self.vms_with_files_on(ds)
                .filter(|v| !ev.moved_vms.contains(&v.id) && !failed.contains(&v.id))
                .map(|v| format!("{}: still there", self.vm_label(&v.id))),
        );
        if !why.is_empty() {
            self.raise(
                now,
                AlarmKind::EvacuationFailed,
                subject,
                Severity::Warning,
                format!(
                    "storage evacuation of {name} did not finish: {}/{} moved, {} left ({}); it is out of storage maintenance",
                    ev.moved,
                    ev.total,
                    why.len(),
                    summarize(&why)
                ),
            );
            return;
        }
        let clones = self
            .inv
            .vms
            .values()
            .filter(|v| v.datastore.as_ref() == Some(ds) && v.backup_of.is_some())
            .count();
        let rest = if clones == 0 {
            String::new()
        } else {
            format!("; {clones} of the manager's backup clones stay there")
        };
        self.note(
            now,
            subject,
            format!(
                "storage evacuation of {name} done: {} VMs moved, none left{rest}",
                ev.moved
            ),
        );
    }
}
