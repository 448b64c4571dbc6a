//! State the hypervisor half and the inventory half share: VM identities across re-registration,
//! and the VMs the manager unregistered and means to register again.
//!
//! vCenter gives a VM registered anew from its `.vmx` a new managed object id. The manager keeps
//! calling it by its first id: `alias` maps the new moref to it (checked against the `.vmx` path,
//! so a moref a restarted vCenter hands to another VM is not mistaken for it). A VM the manager
//! unregistered is an *orphan* until it is registered again: the inventory keeps showing it (a
//! failover in progress keeps it on its old host, so a failed attempt is tried again), and a VM
//! appearing with an orphan's `.vmx` path is that orphan, whoever registered it.

use std::collections::{BTreeMap, BTreeSet};

use am_core::VmId;
use vsphere_soap::MoRef;

/// A VM the manager unregistered and has not registered again yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Orphan {
    /// The moref it had.
    pub moref: String,
    /// Its `.vmx` path.
    pub vmx: String,
    /// Its name.
    pub name: String,
    /// The folder it was in.
    pub folder: Option<MoRef>,
    /// The host it was registered on.
    pub host: Option<MoRef>,
    /// Keep showing it on its old host (a failover in progress); else it shows with no host.
    pub keep_host: bool,
    /// How it looked when the manager last saw it (after a restart of the daemon: from its
    /// journal), to show it before vCenter lists it again.
    pub ghost: Option<am_core::Vm>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Alias {
    id: VmId,
    vmx: String,
}

/// See the module docs.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    alias: BTreeMap<String, Alias>,
    current: BTreeMap<VmId, String>,
    orphans: BTreeMap<VmId, Orphan>,
    /// Bumped whenever an id mapping changes (the inventory remaps its VMs).
    epoch: u64,
    /// Objects whose properties changed without vCenter saying so (re-read them).
    refresh: BTreeSet<MoRef>,
}

impl Shared {
    /// The id of the VM `moref` whose `.vmx` path is `vmx`. Adopts an orphan with that path (it
    /// was registered again) and forgets an alias whose path no longer matches.
    pub(crate) fn id_of(&mut self, moref: &str, vmx: Option<&str>) -> VmId {
        if let Some(a) = self.alias.get(moref) {
            match vmx {
                Some(p) if p != a.vmx => {
                    tracing::info!(moref, old = %a.id, "vm path changed: the alias no longer holds");
                    self.unalias(moref);
                }
                _ => return a.id.clone(),
            }
        }
        if let Some(p) = vmx {
            let adopt = self
                .orphans
                .iter()
                .find(|(_, o)| o.vmx == p && o.moref != moref)
                .map(|(id, _)| id.clone());
            if let Some(id) = adopt {
                tracing::info!(vm = %id, moref, "an orphan is registered again");
                self.set_alias(moref, &id, p);
                return id;
            }
        }
        VmId::new(moref)
    }

    /// The id of `moref` without adopting anything (events).
    pub(crate) fn peek_id(&self, moref: &str) -> VmId {
        self.alias
            .get(moref)
            .map_or_else(|| VmId::new(moref), |a| a.id.clone())
    }

    /// The moref the VM `id` has now.
    pub(crate) fn moref_of(&self, id: &VmId) -> MoRef {
        let value = self.current.get(id).map_or(id.as_str(), String::as_str);
        MoRef::new("VirtualMachine", value)
    }

    /// From now on `moref` (with `.vmx` at `vmx`) is the VM `id`; it is no orphan any more.
    pub(crate) fn set_alias(&mut self, moref: &str, id: &VmId, vmx: &str) {
        self.orphans.remove(id);
        if moref == id.as_str() {
            if let Some(old) = self.current.remove(id) {
                self.alias.remove(&old);
            }
        } else {
            if let Some(old) = self.current.insert(id.clone(), moref.to_owned()) {
                self.alias.remove(&old);
            }
            self.alias.insert(
                moref.to_owned(),
                Alias {
                    id: id.clone(),
                    vmx: vmx.to_owned(),
                },
            );
        }
        self.epoch += 1;
    }

    /// `id` is known by `moref` again (a registration elsewhere was undone).
    pub(crate) fn set_current(&mut self, id: &VmId, moref: &str) {
        if let Some(old) = self.current.remove(id) {
            self.alias.remove(&old);
        }
        if moref != id.as_str() {
            self.current.insert(id.clone(), moref.to_owned());
        }
        self.epoch += 1;
    }

    fn unalias(&mut self, moref: &str) {
        if let Some(a) = self.alias.remove(moref) {
            if self.current.get(&a.id).is_some_and(|m| m == moref) {
                self.current.remove(&a.id);
            }
            self.epoch += 1;
        }
    }

    /// Records that the manager unregistered `id` (its moref keeps its id until it is gone).
    pub(crate) fn add_orphan(&mut self, id: &VmId, orphan: Orphan) {
        self.orphans.insert(id.clone(), orphan);
        self.epoch += 1;
    }

    /// Forgets that `id` was unregistered (the unregistration did not happen after all).
    pub(crate) fn drop_orphan(&mut self, id: &VmId) {
        if self.orphans.remove(id).is_some() {
            self.epoch += 1;
        }
    }

    /// The orphan `id`, if the manager unregistered it.
    pub(crate) fn orphan(&self, id: &VmId) -> Option<&Orphan> {
        self.orphans.get(id)
    }

    /// Every orphan.
    pub(crate) fn orphans(&self) -> &BTreeMap<VmId, Orphan> {
        &self.orphans
    }

    /// The mapping epoch.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Asks the inventory to re-read `obj`.
    pub(crate) fn refresh(&mut self, obj: MoRef) {
        self.refresh.insert(obj);
    }

    /// The objects to re-read.
    pub(crate) fn take_refresh(&mut self) -> Vec<MoRef> {
        std::mem::take(&mut self.refresh).into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn orphan(moref: &str, vmx: &str) -> Orphan {
        Orphan {
            moref: moref.into(),
            vmx: vmx.into(),
            name: "web".into(),
            folder: None,
            host: None,
            keep_host: true,
            ghost: None,
        }
    }

    #[test]
    fn a_vm_registered_again_keeps_its_first_id() {
        let mut s = Shared::default();
        let id = VmId::from("vm-1");
        assert_eq!(s.id_of("vm-1", Some("[ds] web/web.vmx")), id);
        s.add_orphan(&id, orphan("vm-1", "[ds] web/web.vmx"));
        // The old moref, still seen before its removal, is not an adoption.
        assert_eq!(s.id_of("vm-1", Some("[ds] web/web.vmx")), id);
        assert!(s.orphan(&id).is_some());
        let e = s.epoch();
        // A new moref with the orphan's path is the orphan.
        assert_eq!(s.id_of("vm-57", Some("[ds] web/web.vmx")), id);
        assert!(s.orphan(&id).is_none());
        assert!(s.epoch() > e);
        assert_eq!(s.moref_of(&id), MoRef::new("VirtualMachine", "vm-57"));
        assert_eq!(s.peek_id("vm-57"), id);
        // Another VM's moref is its own id.
        assert_eq!(s.id_of("vm-2", Some("[ds] db/db.vmx")), VmId::from("vm-2"));
        assert_eq!(s.moref_of(&VmId::from("vm-2")).value, "vm-2");
    }

    #[test]
    fn an_alias_whose_path_changed_is_dropped() {
        let mut s = Shared::default();
        let id = VmId::from("vm-1");
        s.set_alias("vm-57", &id, "[ds] web/web.vmx");
        // A restarted vCenter gave vm-57 to another VM.
        assert_eq!(
            s.id_of("vm-57", Some("[ds] other/other.vmx")),
            VmId::from("vm-57")
        );
        assert_eq!(s.moref_of(&id).value, "vm-1");
        // Registering it back under its own moref clears the mapping.
        s.set_alias("vm-58", &id, "[ds] web/web.vmx");
        s.set_alias("vm-1", &id, "[ds] web/web.vmx");
        assert_eq!(s.peek_id("vm-58"), VmId::from("vm-58"));
        assert_eq!(s.moref_of(&id).value, "vm-1");
    }

    #[test]
    fn refresh_requests_are_taken_once() {
        let mut s = Shared::default();
        s.refresh(MoRef::new("HostSystem", "host-1"));
        s.refresh(MoRef::new("HostSystem", "host-1"));
        assert_eq!(s.take_refresh().len(), 1);
        assert!(s.take_refresh().is_empty());
    }
}
