//! The inventory as last seen: every watched object's properties, and the `am-core` objects made
//! from them. Property updates go in, [`InventoryDelta`]s for what changed in the manager's terms
//! come out. Pure: tests drive it with hand-made updates.
//!
//! Of the VMs, the many, only a fingerprint of what was last reported is kept (the supervisor
//! keeps the values): at 10,000 VMs whole copies were some 0.9 KB a VM. Their values are made
//! again from their properties when they are needed whole ([`Mirror::inventory`],
//! [`Mirror::diff`]), by the same mapping. VMs the manager unregistered (ghosts, see
//! [`crate::shared`]) have no properties any more: they are kept whole.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use am_core::{Datastore, DatastoreId, Host, HostId, Inventory, InventoryDelta, Snapshot, Vm, VmId};
use vsphere_soap::{MoRef, ObjectUpdate, ObjectUpdateKind, PropertyChangeOp};

use crate::map::{self, Props, TimeMap};
use crate::options::Options;
use crate::props::Packed;
use crate::shared::Shared;

/// What the mapping needs besides the properties.
pub(crate) struct Cx<'a> {
    pub opts: &'a Options,
    pub time: &'a TimeMap,
    pub shared: &'a Mutex<Shared>,
}

impl Cx<'_> {
    fn with_shared<T>(&self, f: impl FnOnce(&mut Shared) -> T) -> T {
        let mut guard = self
            .shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }
}

/// A fingerprint of a value: a 64-bit hash by std's `DefaultHasher`, whose fixed keys hash the
/// same value the same way within one process, which is all a fingerprint needs (fingerprints are
/// only compared with others made by the same process, never stored or sent). Two different
/// values taken for the same one (a missed change) is a 1 in 2^64 chance per comparison.
fn fingerprint<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut h = DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

/// What the mirror keeps of a VM it reported: fingerprints of the `Vm` and of its snapshot list
/// (an empty list when it has none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    vm: u64,
    snapshots: u64,
}

impl Seen {
    fn of(vm: &Vm, snapshots: &[Snapshot]) -> Seen {
        Seen {
            vm: fingerprint(vm),
            snapshots: fingerprint(snapshots),
        }
    }
}

/// The fingerprint of no snapshots.
fn no_snapshots() -> u64 {
    fingerprint::<[Snapshot]>(&[])
}

/// A VM whole, with its snapshots.
#[derive(Clone, Debug)]
struct Whole {
    vm: Vm,
    snapshots: Vec<Snapshot>,
}

/// See the module docs.
#[derive(Clone, Debug, Default)]
pub(crate) struct Mirror {
    /// Properties of the folders, pools, custom fields (read per VM mapped: kept decoded).
    objects: BTreeMap<MoRef, Props>,
    /// Properties of the VMs, hosts and datastores, packed (at 10,000 VMs decoded values were
    /// most of the daemon's memory; at 1,000 hosts theirs were some 2.5 MB).
    packed: BTreeMap<MoRef, Packed>,
    /// The id each VM moref was last reported as.
    vm_ids: BTreeMap<String, VmId>,
    hosts: BTreeMap<HostId, Host>,
    /// Every VM reported (ghosts too), as last reported.
    vms: BTreeMap<VmId, Seen>,
    /// The VMs the manager unregistered that are still shown, whole: no moref shows them.
    ghosts: BTreeMap<VmId, Whole>,
    datastores: BTreeMap<DatastoreId, Datastore>,
    epoch: u64,
}

#[derive(Default)]
struct Out {
    /// Tells nothing of the VMs (a first look, whose changes nobody reads: at 10,000 VMs they
    /// were some 2 MB made and dropped).
    quiet: bool,
    datastores: Vec<InventoryDelta>,
    hosts: Vec<InventoryDelta>,
    vms: Vec<InventoryDelta>,
    snapshots: Vec<InventoryDelta>,
    gone_hosts: Vec<InventoryDelta>,
}

impl Out {
    fn vm(&mut self, d: InventoryDelta) {
        if !self.quiet {
            self.vms.push(d);
        }
    }

    fn snapshots(&mut self, d: InventoryDelta) {
        if !self.quiet {
            self.snapshots.push(d);
        }
    }

    fn into_vec(self) -> Vec<InventoryDelta> {
        let mut v = self.datastores;
        v.extend(self.hosts);
        v.extend(self.vms);
        v.extend(self.snapshots);
        v.extend(self.gone_hosts);
        v
    }
}

/// A mirror being filled by a first look, update by update as they arrive (a full inventory is
/// never held as one list of updates); [`Mirror::loaded`] makes it whole.
#[derive(Default)]
pub(crate) struct Loading {
    mirror: Mirror,
    dirty: BTreeSet<MoRef>,
    left: Vec<MoRef>,
}

impl Loading {
    /// One update of the first look.
    pub(crate) fn add(&mut self, u: ObjectUpdate) {
        self.mirror.store(u, &mut self.dirty, &mut self.left);
    }
}

impl Mirror {
    /// A mirror of the full state in `updates` (a first `WaitForUpdatesEx`). See [`Mirror::loaded`].
    #[cfg(test)]
    pub(crate) fn full(
        updates: impl IntoIterator<Item = ObjectUpdate>,
        cx: &Cx<'_>,
        previous: Option<&Mirror>,
    ) -> Mirror {
        let mut l = Loading::default();
        updates.into_iter().for_each(|u| l.add(u));
        Mirror::loaded(l, cx, previous)
    }

    /// The mirror of a first look. VMs the manager unregistered and `previous` still showed are
    /// kept (see [`crate::shared`]).
    pub(crate) fn loaded(l: Loading, cx: &Cx<'_>, previous: Option<&Mirror>) -> Mirror {
        let Loading {
            mut mirror,
            dirty,
            left,
        } = l;
        mirror.settle(dirty, left, &BTreeMap::new(), true, cx);
        let mut m = mirror;
        let orphans: Vec<(VmId, bool, Option<Vm>)> = cx.with_shared(|s| {
            s.orphans()
                .iter()
                .map(|(id, o)| (id.clone(), o.keep_host, o.ghost.clone()))
                .collect()
        });
        if let Some(prev) = previous {
            let missing: BTreeSet<&VmId> = orphans
                .iter()
                .map(|(id, _, _)| id)
                .filter(|id| !m.vms.contains_key(*id))
                .collect();
            let mut wholes = prev.wholes(|id| missing.contains(id), cx);
            for (id, keep_host, _) in &orphans {
                if m.vms.contains_key(id) {
                    continue;
                }
                if let Some(w) = wholes.remove(id) {
                    m.add_ghost(
                        id.clone(),
                        Whole {
                            vm: orphaned(w.vm, *keep_host),
                            snapshots: w.snapshots,
                        },
                    );
                }
            }
        }
        // Orphans known from before a restart (the journal's), as they were last seen.
        for (id, keep_host, ghost) in orphans {
            if let (false, Some(ghost)) = (m.vms.contains_key(&id), ghost) {
                m.add_ghost(
                    id,
                    Whole {
                        vm: orphaned(ghost, keep_host),
                        snapshots: Vec::new(),
                    },
                );
            }
        }
        m
    }

    /// Shows `id` as the ghost `w`.
    fn add_ghost(&mut self, id: VmId, w: Whole) {
        self.vms.insert(id.clone(), Seen::of(&w.vm, &w.snapshots));
        self.ghosts.insert(id, w);
    }

    /// The inventory as `am-core` sees it: the VMs made again from their properties (as they
    /// were reported), and the ghosts.
    pub(crate) fn inventory(&self, cx: &Cx<'_>) -> Inventory {
        let mut vms = BTreeMap::new();
        let mut snapshots = BTreeMap::new();
        for (id, w) in self.wholes(|_| true, cx) {
            if !w.snapshots.is_empty() {
                snapshots.insert(id.clone(), w.snapshots);
            }
            vms.insert(id, w.vm);
        }
        let mut inv = Inventory {
            hosts: self.hosts.clone(),
            vms,
            datastores: self.datastores.clone(),
            snapshots,
        };
        inv.share_ids();
        inv
    }

    /// The VMs `want` names, whole, as last reported: ghosts as kept, the others made again from
    /// their properties. One walk of the VMs, however many are wanted.
    fn wholes(&self, want: impl Fn(&VmId) -> bool, cx: &Cx<'_>) -> BTreeMap<VmId, Whole> {
        let fields = self.custom_fields();
        // With whether it is what was reported: two morefs may show one VM for a while (its new
        // registration and its old one, not gone yet); the one reported is the one to show.
        let mut made: BTreeMap<VmId, (Whole, bool)> = BTreeMap::new();
        for (obj, packed) in of_kind(&self.packed, "VirtualMachine") {
            let Some(id) = self.vm_ids.get(&obj.value) else {
                continue;
            };
            let Some(seen) = self.vms.get(id) else {
                continue;
            };
            if !want(id) || self.ghosts.contains_key(id) || made.get(id).is_some_and(|(_, exact)| *exact) {
                continue;
            }
            let Some(w) = self.map_vm(id, obj, &packed.unpack(), &fields, cx) else {
                continue;
            };
            let exact = Seen::of(&w.vm, &w.snapshots) == *seen;
            made.insert(id.clone(), (w, exact));
        }
        let mut out: BTreeMap<VmId, Whole> = made
            .into_iter()
            .map(|(id, (w, exact))| {
                if !exact {
                    tracing::warn!(vm = %id, "a vm made again differs from what was reported");
                }
                (id, w)
            })
            .collect();
        for (id, g) in self.ghosts.iter().filter(|(id, _)| want(id)) {
            out.insert(id.clone(), g.clone());
        }
        out
    }

    /// The properties of `obj`, as last seen.
    #[cfg(test)]
    pub(crate) fn props(&self, obj: &MoRef) -> Option<Props> {
        self.objects
            .get(obj)
            .cloned()
            .or_else(|| self.packed.get(obj).map(Packed::unpack))
    }

    /// Applies property updates (and id mapping changes); returns what changed, hosts and
    /// datastores before the VMs that name them, removed hosts last.
    pub(crate) fn apply(
        &mut self,
        updates: impl IntoIterator<Item = ObjectUpdate>,
        cx: &Cx<'_>,
    ) -> Vec<InventoryDelta> {
        let mut dirty: BTreeSet<MoRef> = BTreeSet::new();
        let mut left: Vec<MoRef> = Vec::new();
        // The properties, before these updates, of the VMs leaving and of the orphans': a VM the
        // manager unregistered stays as it was last reported (see `drop_id`).
        let orphans: BTreeSet<VmId> = cx.with_shared(|s| s.orphans().keys().cloned().collect());
        let mut before: BTreeMap<MoRef, Packed> = BTreeMap::new();
        for u in updates {
            let keep = u.obj.kind == "VirtualMachine"
                && !before.contains_key(&u.obj)
                && (matches!(u.kind, ObjectUpdateKind::Leave)
                    || self
                        .vm_ids
                        .get(&u.obj.value)
                        .is_some_and(|id| orphans.contains(id)));
            if let (true, Some(p)) = (keep, self.packed.get(&u.obj)) {
                before.insert(u.obj.clone(), p.clone());
            }
            self.store(u, &mut dirty, &mut left);
        }
        self.settle(dirty, left, &before, false, cx)
    }

    /// Keeps the properties of one update (its values moved, not copied).
    fn store(&mut self, u: ObjectUpdate, dirty: &mut BTreeSet<MoRef>, left: &mut Vec<MoRef>) {
        match u.kind {
            ObjectUpdateKind::Leave => {
                self.objects.remove(&u.obj);
                self.packed.remove(&u.obj);
                dirty.remove(&u.obj);
                left.push(u.obj);
            }
            ObjectUpdateKind::Enter | ObjectUpdateKind::Modify => {
                let pack = packs(&u.obj);
                let mut props = match (u.kind, pack) {
                    (ObjectUpdateKind::Enter, _) => Props::new(),
                    (_, true) => self.packed.get(&u.obj).map(Packed::unpack).unwrap_or_default(),
                    (_, false) => self.objects.remove(&u.obj).unwrap_or_default(),
                };
                for c in u.changes {
                    match (c.op, c.val) {
                        (PropertyChangeOp::Assign | PropertyChangeOp::Add, Some(v)) => {
                            props.insert(c.name, v);
                        }
                        _ => {
                            props.remove(&c.name);
                        }
                    }
                }
                props.shrink();
                if pack {
                    self.packed.insert(u.obj.clone(), Packed::of(&props));
                } else {
                    self.objects.insert(u.obj.clone(), props);
                }
                dirty.insert(u.obj);
            }
        }
    }

    /// Maps the objects `dirty` and `left` name again: what changed (of the VMs nothing if
    /// `quiet`). `before`: properties of VMs as they were before the updates, if kept.
    fn settle(
        &mut self,
        mut dirty: BTreeSet<MoRef>,
        mut left: Vec<MoRef>,
        before: &BTreeMap<MoRef, Packed>,
        quiet: bool,
        cx: &Cx<'_>,
    ) -> Vec<InventoryDelta> {
        let epoch = cx.with_shared(|s| s.epoch());
        // VMs are mapped again when an id mapping changed, or a folder's or pool's name, or the
        // custom attribute definitions (their priorities and addresses may follow);
        // datastores when a host's mounts changed.
        let names_changed = dirty
            .iter()
            .chain(&left)
            .any(|o| matches!(o.kind.as_str(), "Folder" | "ResourcePool" | "CustomFieldsManager"));
        if epoch != self.epoch || names_changed {
            self.epoch = epoch;
            dirty.extend(self.packed.keys().cloned());
        }
        if dirty.iter().chain(&left).any(|o| o.kind == "HostSystem") {
            dirty.extend(of_kind(&self.packed, "Datastore").map(|(o, _)| o.clone()));
        }
        let mut out = Out {
            quiet,
            ..Out::default()
        };
        // Read once per change set, not once per VM (at 10,000 VMs a resync was quadratic).
        let fields = self.custom_fields();
        // Which hosts list each datastore, by one walk of the hosts (per datastore it was a walk
        // of every host: with 1,000 hosts and a local datastore each, a million).
        let mounts = if dirty.iter().any(|o| o.kind == "Datastore") {
            self.mounts()
        } else {
            BTreeMap::new()
        };
        for obj in &dirty {
            match obj.kind.as_str() {
                "HostSystem" => self.emit_host(obj, cx, &mut out),
                "Datastore" => self.emit_datastore(obj, &mounts, &mut out),
                "VirtualMachine" => self.emit_vm(obj, before, cx, &fields, &mut out),
                _ => {}
            }
        }
        left.retain(|o| !self.objects.contains_key(o) && !self.packed.contains_key(o));
        for obj in &left {
            match obj.kind.as_str() {
                "HostSystem" => {
                    let id = HostId::new(obj.value.clone());
                    if self.hosts.remove(&id).is_some() {
                        out.gone_hosts.push(InventoryDelta::HostRemoved(id));
                    }
                }
                "Datastore" => {
                    self.datastores.remove(&DatastoreId::new(obj.value.clone()));
                }
                "VirtualMachine" => self.vm_left(obj, before, cx, &fields, &mut out),
                _ => {}
            }
        }
        out.into_vec()
    }

    fn emit_host(&mut self, obj: &MoRef, cx: &Cx<'_>, out: &mut Out) {
        let Some(p) = self.packed.get(obj).map(Packed::unpack) else {
            return;
        };
        let h = map::host(obj, &p, cx.opts);
        if self.hosts.get(&h.id) != Some(&h) {
            self.hosts.insert(h.id.clone(), h.clone());
            out.hosts.push(InventoryDelta::HostUpsert(h));
        }
    }

    /// The hosts that list each datastore among theirs.
    fn mounts(&self) -> BTreeMap<DatastoreId, Vec<HostId>> {
        let mut m: BTreeMap<DatastoreId, Vec<HostId>> = BTreeMap::new();
        for (h, hp) in of_kind(&self.packed, "HostSystem") {
            for ds in map::host_datastores(&hp.unpack()) {
                m.entry(ds).or_default().push(HostId::new(h.value.clone()));
            }
        }
        m
    }

    fn emit_datastore(&mut self, obj: &MoRef, mounts: &BTreeMap<DatastoreId, Vec<HostId>>, out: &mut Out) {
        let Some(p) = self.packed.get(obj).map(Packed::unpack) else {
            return;
        };
        let mut d = map::datastore(obj, &p);
        // The hosts that list it among their datastores mount it too (the datastore's own mount
        // list can lag, or miss hosts in simulators).
        d.hosts.extend(mounts.get(&d.id).into_iter().flatten().cloned());
        d.hosts.sort();
        d.hosts.dedup();
        if self.datastores.get(&d.id) != Some(&d) {
            self.datastores.insert(d.id.clone(), d.clone());
            out.datastores.push(InventoryDelta::DatastoreUpsert(d));
        }
    }

    fn emit_vm(
        &mut self,
        obj: &MoRef,
        before: &BTreeMap<MoRef, Packed>,
        cx: &Cx<'_>,
        fields: &BTreeMap<i64, String>,
        out: &mut Out,
    ) {
        let Some(p) = self.packed.get(obj).map(Packed::unpack) else {
            return;
        };
        let vmx = map::vmx_path(&p);
        let id = cx.with_shared(|s| s.id_of(&obj.value, vmx));
        let mapped = self.map_vm(&id, obj, &p, fields, cx);
        if let Some(old) = self.vm_ids.insert(obj.value.clone(), id.clone())
            && old != id
        {
            self.drop_id(&old, obj, before, cx, fields, out);
        }
        // Shown by a moref again (or a template now): no longer a ghost.
        self.ghosts.remove(&id);
        match mapped {
            None => {
                if self.vms.remove(&id).is_some() {
                    out.vm(InventoryDelta::VmRemoved(id));
                }
            }
            Some(w) => {
                let seen = Seen::of(&w.vm, &w.snapshots);
                let was = self.vms.insert(id.clone(), seen);
                if was.map(|s| s.vm) != Some(seen.vm) {
                    out.vm(InventoryDelta::VmUpsert(w.vm));
                }
                if was.map_or_else(no_snapshots, |s| s.snapshots) != seen.snapshots {
                    out.snapshots(InventoryDelta::Snapshots {
                        vm: id,
                        snapshots: w.snapshots,
                    });
                }
            }
        }
    }

    /// The VM `id` made from the properties `p` of `obj`, with its snapshots; `None` for a
    /// template.
    fn map_vm(
        &self,
        id: &VmId,
        obj: &MoRef,
        p: &Props,
        fields: &BTreeMap<i64, String>,
        cx: &Cx<'_>,
    ) -> Option<Whole> {
        let name_of = |m: &MoRef| {
            self.objects
                .get(m)
                .and_then(|p| map::text(p, "name"))
                .map(str::to_owned)
        };
        let vcx = map::VmContext {
            opts: cx.opts,
            name_of: &name_of,
            fields,
        };
        let vm = map::vm(id.clone(), obj, p, &vcx)?;
        Some(Whole {
            vm,
            snapshots: map::snapshots(id, p, cx.time),
        })
    }

    /// The custom attribute definitions (key to name), from the custom fields manager.
    fn custom_fields(&self) -> BTreeMap<i64, String> {
        of_kind(&self.objects, "CustomFieldsManager")
            .filter_map(|(_, p)| p.get("field"))
            .flat_map(|v| v.items().iter())
            .filter_map(|f| {
                let key = f.field("key").and_then(vsphere_soap::Value::as_i64)?;
                let name = f.field("name").and_then(vsphere_soap::Value::as_str)?;
                Some((key, name.to_owned()))
            })
            .collect()
    }

    /// `id` is no longer shown by the moref that showed it (`from`): it goes, unless another
    /// moref shows it or the manager unregistered it (then it stays, as an orphan: as it was last
    /// reported, made again from the properties `from` had before these updates).
    fn drop_id(
        &mut self,
        id: &VmId,
        from: &MoRef,
        before: &BTreeMap<MoRef, Packed>,
        cx: &Cx<'_>,
        fields: &BTreeMap<i64, String>,
        out: &mut Out,
    ) {
        if self.vm_ids.values().any(|v| v == id) {
            return;
        }
        let orphan = cx.with_shared(|s| s.orphan(id).map(|o| (o.keep_host, o.ghost.clone())));
        let Some(seen) = self.vms.get(id).copied() else {
            return;
        };
        let (keep_host, whole) = match orphan {
            None => (None, None),
            // The journal's ghost only if the properties are gone too (`apply` keeps those of the
            // VMs leaving, so it should not come to that).
            Some((keep_host, journal)) => {
                let whole = self
                    .ghosts
                    .remove(id)
                    .or_else(|| {
                        let p = before.get(from).or_else(|| self.packed.get(from))?;
                        self.map_vm(id, from, &p.unpack(), fields, cx)
                    })
                    .or_else(|| {
                        journal.map(|vm| Whole {
                            vm,
                            snapshots: Vec::new(),
                        })
                    });
                (Some(keep_host), whole)
            }
        };
        match (keep_host, whole) {
            (Some(keep_host), Some(w)) => {
                let ghost = Whole {
                    vm: orphaned(w.vm, keep_host),
                    snapshots: w.snapshots,
                };
                if fingerprint(&ghost.vm) != seen.vm {
                    out.vm(InventoryDelta::VmUpsert(ghost.vm.clone()));
                }
                self.add_ghost(id.clone(), ghost);
            }
            (keep_host, _) => {
                if keep_host.is_some() {
                    tracing::warn!(vm = %id, "an unregistered vm cannot be shown: its properties are gone");
                }
                self.ghosts.remove(id);
                self.vms.remove(id);
                out.vm(InventoryDelta::VmRemoved(id.clone()));
            }
        }
    }

    fn vm_left(
        &mut self,
        obj: &MoRef,
        before: &BTreeMap<MoRef, Packed>,
        cx: &Cx<'_>,
        fields: &BTreeMap<i64, String>,
        out: &mut Out,
    ) {
        if let Some(id) = self.vm_ids.remove(&obj.value) {
            self.drop_id(&id, obj, before, cx, fields, out);
        }
    }

    /// Drops what a re-read does not need of the old mirror before it is made (at 10,000 VMs the
    /// VMs' properties, some 5 MB, were held twice while the new ones arrived): the properties of
    /// the VMs but the orphans' ([`Mirror::loaded`] shows those as they were). What stays is all
    /// [`Mirror::diff`] reads. A thinned mirror is only the `previous` of a first look and the
    /// `self` of a diff: it takes no updates.
    pub(crate) fn thin(&mut self, cx: &Cx<'_>) {
        let orphans: BTreeSet<VmId> = cx.with_shared(|s| s.orphans().keys().cloned().collect());
        let vm_ids = &self.vm_ids;
        self.packed = std::mem::take(&mut self.packed)
            .into_iter()
            .filter(|(obj, _)| {
                obj.kind != "VirtualMachine" || vm_ids.get(&obj.value).is_some_and(|id| orphans.contains(id))
            })
            .collect();
    }

    /// The changes that turn `self` into `new` (a resync after a new session). The VMs that
    /// changed are made again from `new`'s properties.
    pub(crate) fn diff(&self, new: &Mirror, cx: &Cx<'_>) -> Vec<InventoryDelta> {
        let mut out = Out::default();
        for (id, d) in &new.datastores {
            if self.datastores.get(id) != Some(d) {
                out.datastores.push(InventoryDelta::DatastoreUpsert(d.clone()));
            }
        }
        for (id, h) in &new.hosts {
            if self.hosts.get(id) != Some(h) {
                out.hosts.push(InventoryDelta::HostUpsert(h.clone()));
            }
        }
        for id in self.hosts.keys().filter(|id| !new.hosts.contains_key(*id)) {
            out.gone_hosts.push(InventoryDelta::HostRemoved(id.clone()));
        }
        for id in self.vms.keys().filter(|id| !new.vms.contains_key(*id)) {
            out.vms.push(InventoryDelta::VmRemoved(id.clone()));
        }
        let empty = no_snapshots();
        // Per VM of `new`: whether the VM changed, whether its snapshots did.
        let changed: BTreeMap<&VmId, (bool, bool)> = new
            .vms
            .iter()
            .map(|(id, after)| {
                let was = self.vms.get(id);
                let vm = was.map(|s| s.vm) != Some(after.vm);
                let snapshots = was.map_or(empty, |s| s.snapshots) != after.snapshots;
                (id, (vm, snapshots))
            })
            .filter(|(_, (vm, snapshots))| *vm || *snapshots)
            .collect();
        let mut wholes = new.wholes(|id| changed.contains_key(id), cx);
        for (id, (vm, snapshots)) in changed {
            let Some(w) = wholes.remove(id) else {
                tracing::warn!(vm = %id, "a changed vm cannot be made again");
                continue;
            };
            if vm {
                out.vms.push(InventoryDelta::VmUpsert(w.vm));
            }
            if snapshots {
                out.snapshots.push(InventoryDelta::Snapshots {
                    vm: id.clone(),
                    snapshots: w.snapshots,
                });
            }
        }
        out.into_vec()
    }
}

/// The objects of one kind in `map`: a range of it, as a map of morefs is ordered by kind first.
fn of_kind<'a, V>(
    map: &'a BTreeMap<MoRef, V>,
    kind: &'a str,
) -> impl Iterator<Item = (&'a MoRef, &'a V)> + 'a {
    map.range(MoRef::new(kind, "")..)
        .take_while(move |(o, _)| o.kind == kind)
}

/// Whether `obj`'s properties are kept packed: the many (VMs) and the hosts and datastores,
/// which are read only when they change. Folders, pools and the custom fields are read per VM.
fn packs(obj: &MoRef) -> bool {
    matches!(obj.kind.as_str(), "VirtualMachine" | "HostSystem" | "Datastore")
}

/// How a VM the manager unregistered shows: off (vCenter unregisters only VMs it has as off),
/// on its old host during a move (so a failed move is tried again), else on no host.
fn orphaned(mut vm: Vm, keep_host: bool) -> Vm {
    vm.power = am_core::PowerState::PoweredOff;
    vm.cpu_usage_mhz = None;
    if !keep_host {
        vm.host = None;
    }
    vm
}

#[cfg(test)]
mod tests;
