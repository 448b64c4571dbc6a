//! The published view and the change log: what vCenter shows (derived from the truth, frozen for
//! VMs on hosts it cannot manage), the versioned log of deltas and events, the events waiting for
//! the next publication, and [`World::changes_since`]. Owns [`Feed`]; reads the truth, asks
//! `timers.rs` to look for the next timer again and `recorder.rs` to check the invariants after
//! each publication.

use super::World;
use crate::truth::{GuestState, VmTruth};
use am_core::{
    Changes, ClusterEvent, ConnectionState, Datastore, EventKind, GuestHeartbeat, Host, HostId, Inventory,
    InventoryDelta, PowerState, Time, Vm, VmId,
};
use std::collections::{BTreeSet, VecDeque};

#[derive(Clone, Debug, PartialEq)]
enum Entry {
    Delta(Box<InventoryDelta>),
    Event(ClusterEvent),
}

/// The view as last published and the change log.
#[derive(Debug, Default)]
pub(super) struct Feed {
    /// What vCenter shows, as last published.
    view: Inventory,
    /// Ids that were in the view and are not any more (for full resyncs).
    gone_hosts: BTreeSet<HostId>,
    gone_vms: BTreeSet<VmId>,
    version: u64,
    log: VecDeque<(u64, Entry)>,
    pending_events: Vec<EventKind>,
    /// Something changed since the last publication.
    dirty: bool,
}

impl Feed {
    /// Queues an event for the next publication.
    pub(super) fn event(&mut self, kind: EventKind) {
        self.pending_events.push(kind);
    }

    /// Whether something changed since the last publication.
    pub(super) fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Publishes `new` as the view at `t`: logs the deltas from the old view, the pending events
    /// and the power and connection changes vCenter notices by itself, keeping the last
    /// `log_capacity` entries.
    fn replace_view(&mut self, new: Inventory, t: Time, log_capacity: usize) {
        let old = std::mem::take(&mut self.view);
        let deltas = diff(&old, &new);
        let mut events = std::mem::take(&mut self.pending_events);
        // What vCenter notices by itself: VMs found off or on, hosts that stopped answering.
        for (id, vm) in &new.vms {
            let Some(prev) = old.vms.get(id) else { continue };
            let said = |off: bool| {
                events.iter().any(|e| match e {
                    EventKind::VmPoweredOff { vm, .. } => off && vm == id,
                    EventKind::VmPoweredOn { vm, .. } => !off && vm == id,
                    _ => false,
                })
            };
            match (prev.power, vm.power) {
                (PowerState::PoweredOn, PowerState::PoweredOff) if !said(true) => {
                    events.push(EventKind::VmPoweredOff {
                        vm: id.clone(),
                        user: None,
                    });
                }
                (PowerState::PoweredOff, PowerState::PoweredOn) if !said(false) => {
                    events.push(EventKind::VmPoweredOn {
                        vm: id.clone(),
                        user: None,
                    });
                }
                _ => {}
            }
        }
        for (id, h) in &new.hosts {
            let was_connected = old
                .hosts
                .get(id)
                .is_some_and(|p| p.connection == ConnectionState::Connected);
            if was_connected && h.connection != ConnectionState::Connected {
                events.push(EventKind::HostConnectionLost { host: id.clone() });
            }
        }
        for id in old.hosts.keys().filter(|h| !new.hosts.contains_key(*h)) {
            self.gone_hosts.insert(id.clone());
        }
        for id in old.vms.keys().filter(|v| !new.vms.contains_key(*v)) {
            self.gone_vms.insert(id.clone());
        }
        for id in new.hosts.keys() {
            self.gone_hosts.remove(id);
        }
        for id in new.vms.keys() {
            self.gone_vms.remove(id);
        }
        self.view = new;
        for d in deltas {
            self.version += 1;
            self.log.push_back((self.version, Entry::Delta(Box::new(d))));
        }
        for kind in events {
            self.version += 1;
            self.log
                .push_back((self.version, Entry::Event(ClusterEvent { at: t, kind })));
        }
        while self.log.len() > log_capacity {
            self.log.pop_front();
        }
    }

    /// Changes after version `since`, or `None` when there are none. A version that is too old, in
    /// the future or unreadable gets a full resync.
    pub(super) fn changes_since(&self, since: &str) -> Option<Changes> {
        let parsed: Option<u64> = since.trim().parse().ok();
        if parsed == Some(self.version) {
            return None;
        }
        let first_kept = self.log.front().map_or(self.version + 1, |(v, _)| *v);
        let mut changes = Changes {
            version: self.version.to_string(),
            deltas: Vec::new(),
            events: Vec::new(),
        };
        match parsed {
            Some(v) if v < self.version && v + 1 >= first_kept => {
                for (_, entry) in self.log.iter().filter(|(ev, _)| *ev > v) {
                    match entry {
                        Entry::Delta(d) => changes.deltas.push((**d).clone()),
                        Entry::Event(e) => changes.events.push(e.clone()),
                    }
                }
            }
            _ => {
                changes.deltas = self.full_resync();
                if let Some(v) = parsed.filter(|v| *v < self.version) {
                    for (_, entry) in self.log.iter().filter(|(ev, _)| *ev > v) {
                        if let Entry::Event(e) = entry {
                            changes.events.push(e.clone());
                        }
                    }
                }
            }
        }
        Some(changes)
    }

    fn full_resync(&self) -> Vec<InventoryDelta> {
        let mut out = Vec::new();
        out.extend(self.gone_vms.iter().cloned().map(InventoryDelta::VmRemoved));
        out.extend(self.gone_hosts.iter().cloned().map(InventoryDelta::HostRemoved));
        out.extend(self.view.hosts.values().cloned().map(InventoryDelta::HostUpsert));
        out.extend(
            self.view
                .datastores
                .values()
                .cloned()
                .map(InventoryDelta::DatastoreUpsert),
        );
        out.extend(self.view.vms.values().cloned().map(InventoryDelta::VmUpsert));
        for id in self.view.vms.keys() {
            out.push(InventoryDelta::Snapshots {
                vm: id.clone(),
                snapshots: self.view.snapshots.get(id).cloned().unwrap_or_default(),
            });
        }
        out
    }
}

impl World {
    fn derive_view(&self, t: Time) -> Inventory {
        let mut inv = Inventory::default();
        for h in self.hosts.values().filter(|h| !h.removed) {
            inv.hosts.insert(
                h.id.clone(),
                Host {
                    id: h.id.clone(),
                    name: h.id.to_string(),
                    capacity: h.capacity,
                    connection: if h.condition.is_managed() {
                        ConnectionState::Connected
                    } else {
                        ConnectionState::NotResponding
                    },
                    maintenance: h.maintenance,
                    failure_domain: h.failure_domain.clone(),
                    mgmt_address: h.mgmt_address.clone(),
                    storage_heartbeat: self.cfg.storage_heartbeats.then_some(h.last_heartbeat),
                    health_alarm: h.health_alarm.clone(),
                },
            );
        }
        for vm in self.vms.values().filter(|v| v.listed) {
            let managed = match &vm.registered {
                None => true,
                Some(h) => self
                    .hosts
                    .get(h)
                    .is_some_and(|h| h.condition.is_managed() && !h.removed),
            };
            let frozen = if managed {
                None
            } else {
                self.feed.view.vms.get(&vm.id)
            };
            let shown = match frozen {
                Some(prev) => prev.clone(),
                None => self.fresh_vm_view(vm, t),
            };
            inv.vms.insert(vm.id.clone(), shown);
            if !vm.snapshots.is_empty() {
                inv.snapshots.insert(
                    vm.id.clone(),
                    vm.snapshots.iter().map(|s| s.snapshot.clone()).collect(),
                );
            }
        }
        for ds in self.datastores.values() {
            let hosts: Vec<HostId> = inv
                .hosts
                .keys()
                .filter(|h| self.mounts(h, &ds.id))
                .cloned()
                .collect();
            inv.datastores.insert(
                ds.id.clone(),
                Datastore {
                    id: ds.id.clone(),
                    name: ds.id.to_string(),
                    capacity_mib: ds.capacity_mib,
                    free_mib: self.ds_free(ds),
                    hosts,
                },
            );
        }
        inv
    }

    fn fresh_vm_view(&self, vm: &VmTruth, t: Time) -> Vm {
        let on = vm.registered.as_ref().is_some_and(|h| vm.running_on.contains(h));
        let red = t >= vm.guest_since + self.cfg.heartbeat_delay;
        let (heartbeat, cpu) = match (on, vm.guest) {
            (false, _) => (GuestHeartbeat::Gray, 0),
            (true, GuestState::Ok) => (GuestHeartbeat::Green, vm.cpu_usage),
            (true, GuestState::Hung) => (
                if red {
                    GuestHeartbeat::Red
                } else {
                    GuestHeartbeat::Green
                },
                0,
            ),
            (true, GuestState::Crashed) => (
                if red {
                    GuestHeartbeat::Red
                } else {
                    GuestHeartbeat::Green
                },
                (vm.cpu_usage / 20).max(1),
            ),
        };
        Vm {
            id: vm.id.clone(),
            name: vm.name.clone(),
            demand: vm.demand,
            power: if on {
                PowerState::PoweredOn
            } else {
                PowerState::PoweredOff
            },
            host: vm.registered.clone(),
            priority: vm.priority,
            affinity_group: vm.affinity_group.clone(),
            anti_affinity_group: vm.anti_affinity_group.clone(),
            guest_address: vm.guest_address.clone(),
            heartbeat,
            cpu_usage_mhz: Some(cpu),
            datastore: vm.datastore.clone(),
            backup_of: vm.backup_of.clone(),
            config_path: Some(match &vm.datastore {
                Some(ds) => format!("[{ds}] {}/{}.vmx", vm.name, vm.name),
                None => format!("{}/{}.vmx", vm.name, vm.name),
            }),
            instance_uuid: None,
            backup: true,
            storage_mib: vm.storage_mib,
        }
    }

    /// Recomputes the view at `t`, logs the deltas and pending events, checks the invariants.
    pub fn publish(&mut self, t: Time) {
        if !self.feed.dirty {
            return;
        }
        self.feed.dirty = false;
        self.timers.forget_next();
        let new = self.derive_view(t);
        self.feed.replace_view(new, t, self.cfg.log_capacity);
        self.check_invariants(t);
    }

    /// The inventory view (as last published).
    pub fn view(&self) -> &Inventory {
        &self.feed.view
    }

    /// The change log's latest version.
    pub fn version(&self) -> u64 {
        self.feed.version
    }

    /// Notes that something changed since the last publication.
    pub fn mark_dirty(&mut self) {
        self.feed.dirty = true;
    }

    /// Changes after version `since`, or `None` when there are none (see [`Feed::changes_since`]).
    pub fn changes_since(&self, since: &str) -> Option<Changes> {
        self.feed.changes_since(since)
    }

    /// Derives the first view, at time zero (nothing logged).
    pub(super) fn publish_initial_view(&mut self) {
        self.feed.view = self.derive_view(Time::ZERO);
    }

    /// Queues a note (an `Other` event) for the next publication.
    pub(super) fn note(&mut self, message: String) {
        self.feed.event(EventKind::Other { message });
    }
}

/// The deltas that turn `old` into `new`: upserts (hosts, datastores, VMs, snapshot lists), then
/// VM removals, then host removals.
fn diff(old: &Inventory, new: &Inventory) -> Vec<InventoryDelta> {
    let mut out = Vec::new();
    for (id, h) in &new.hosts {
        if old.hosts.get(id) != Some(h) {
            out.push(InventoryDelta::HostUpsert(h.clone()));
        }
    }
    for (id, d) in &new.datastores {
        if old.datastores.get(id) != Some(d) {
            out.push(InventoryDelta::DatastoreUpsert(d.clone()));
        }
    }
    for (id, v) in &new.vms {
        if old.vms.get(id) != Some(v) {
            out.push(InventoryDelta::VmUpsert(v.clone()));
        }
    }
    for id in new.vms.keys() {
        let (o, n) = (old.snapshots.get(id), new.snapshots.get(id));
        if o != n {
            out.push(InventoryDelta::Snapshots {
                vm: id.clone(),
                snapshots: n.cloned().unwrap_or_default(),
            });
        }
    }
    for id in old.vms.keys().filter(|id| !new.vms.contains_key(*id)) {
        out.push(InventoryDelta::VmRemoved(id.clone()));
    }
    for id in old.hosts.keys().filter(|id| !new.hosts.contains_key(*id)) {
        out.push(InventoryDelta::HostRemoved(id.clone()));
    }
    out
}
