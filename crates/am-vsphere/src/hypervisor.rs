//! [`Hypervisor`] for vCenter: each action as vim25 tasks, awaited (see [`VsphereBackend`]).

use am_core::{Action, ActionOutcome, DatastoreId, HostId, HvError, Hypervisor, SnapshotId, VmId};
use async_trait::async_trait;
use vsphere_soap::{CloneSpec, HostConnectSpec, MoRef, MovePriority, PropertySpec, RelocateSpec, TaskInfo};

use crate::fault::{Subject, hv_error};
use crate::map::{self, Props};
use crate::shared::Orphan;
use crate::{Inner, VsphereBackend, find_by_name, hooks};
mod lookup;
mod registration;
mod relocate;

/// What an action needs to know about a VM now.
const VM_NOW: &[&str] = &[
    "name",
    "parent",
    "resourcePool",
    "runtime.powerState",
    "runtime.host",
    "summary.config.vmPathName",
    "datastore",
];

struct VmNow {
    moref: MoRef,
    props: Props,
}

impl VmNow {
    fn name(&self) -> &str {
        map::text(&self.props, "name").unwrap_or(&self.moref.value)
    }

    fn on(&self) -> bool {
        map::text(&self.props, "runtime.powerState") == Some("poweredOn")
    }

    fn host(&self) -> Option<&MoRef> {
        map::moref(&self.props, "runtime.host")
    }

    fn folder(&self) -> Option<&MoRef> {
        map::moref(&self.props, "parent")
    }

    fn vmx(&self) -> Option<&str> {
        map::vmx_path(&self.props)
    }
}

fn host_ref(h: &HostId) -> MoRef {
    MoRef::new("HostSystem", h.as_str())
}

fn is_state_error(e: &HvError) -> bool {
    matches!(e, HvError::InvalidState { .. })
}

/// vCenter itself did not answer (or not in time): nothing is known of what the call did.
fn unanswered(e: &HvError) -> bool {
    matches!(e, HvError::Unreachable { .. } | HvError::Timeout { .. })
}

/// Ignores "already in that state" (a power operation finding the VM as wanted).
fn done_if_state(r: Result<TaskInfo, HvError>) -> Result<(), HvError> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if is_state_error(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

impl Inner {
    /// The moref of a registered VM; an orphan is not registered.
    fn registered(&self, id: &VmId) -> Result<MoRef, HvError> {
        let shared = self.shared();
        if shared.orphan(id).is_some() {
            return Err(HvError::invalid_state(
                id,
                "not registered in vCenter (the manager unregistered it; register it first)",
            ));
        }
        Ok(shared.moref_of(id))
    }

    async fn vm_now(&self, id: &VmId, op: &'static str) -> Result<VmNow, HvError> {
        let moref = self.registered(id)?;
        let s = Subject::new(op, "vm", id.as_str());
        let o = self
            .client
            .retrieve_object(&moref, VM_NOW)
            .await
            .map_err(|e| hv_error(&e, &s))?;
        if o.props.is_empty() {
            return Err(HvError::not_found("vm", id));
        }
        Ok(VmNow {
            moref,
            props: o.props.into_iter().collect(),
        })
    }

    /// Waits for the task a call started.
    async fn wait(&self, s: &Subject<'_>, started: vsphere_soap::Result<MoRef>) -> Result<TaskInfo, HvError> {
        let task = started.map_err(|e| hv_error(&e, s))?;
        self.client
            .wait_for_task(&task, self.opts.task_timeout)
            .await
            .map_err(|e| hv_error(&e, s))
    }

    async fn props(&self, obj: &MoRef, paths: &[&str], s: &Subject<'_>) -> Result<Props, HvError> {
        let o = self
            .client
            .retrieve_object(obj, paths)
            .await
            .map_err(|e| hv_error(&e, s))?;
        Ok(o.props.into_iter().collect())
    }

    async fn host_connected(&self, host: &MoRef, s: &Subject<'_>) -> Result<bool, HvError> {
        let p = self.props(host, &["runtime.connectionState"], s).await?;
        Ok(map::text(&p, "runtime.connectionState") == Some("connected"))
    }

    async fn power_on_ref(&self, vm: &MoRef, s: &Subject<'_>) -> Result<(), HvError> {
        done_if_state(self.wait(s, self.client.power_on_vm(vm, None).await).await)
    }

    async fn power_off_ref(&self, vm: &MoRef, s: &Subject<'_>) -> Result<(), HvError> {
        done_if_state(self.wait(s, self.client.power_off_vm(vm).await).await)
    }

    async fn host_vars(&self, host: &HostId) -> (String, String) {
        let name = match self.client.retrieve_object(&host_ref(host), &["name"]).await {
            Ok(o) => o.get_str("name").map(str::to_owned),
            Err(_) => None,
        }
        .unwrap_or_else(|| host.to_string());
        let address = self
            .opts
            .targets
            .hosts
            .addresses
            .get(&name)
            .cloned()
            .unwrap_or_default();
        (name, address)
    }

    async fn hook(&self, host: &HostId, op: &'static str) -> Result<(), HvError> {
        let hook = match op {
            "revive_host" => self.opts.revive_hook.as_ref(),
            _ => self.opts.fence_hook.as_ref(),
        };
        let Some(hook) = hook else {
            return Err(HvError::NotSupported {
                op: format!("{op} (no hook configured)"),
            });
        };
        let (name, address) = self.host_vars(host).await;
        hooks::run(
            hook,
            op,
            &[("host", &name), ("host_id", host.as_str()), ("address", &address)],
        )
        .await?;
        self.shared().refresh(host_ref(host));
        Ok(())
    }

    async fn cluster_for(&self, wanted: Option<&String>, s: &Subject<'_>) -> Result<MoRef, HvError> {
        let err = |e: vsphere_soap::Error| hv_error(&e, s);
        if let Some(name) = wanted.or(self.opts.clusters.first()) {
            return find_by_name(&self.client, "ClusterComputeResource", name)
                .await
                .map_err(err)?
                .ok_or_else(|| HvError::not_found("cluster", name));
        }
        let all = self
            .client
            .retrieve_inventory(vec![PropertySpec::new("ClusterComputeResource", &["name"])])
            .await
            .map_err(err)?;
        match all.as_slice() {
            [one] => Ok(one.obj.clone()),
            _ => Err(HvError::NotSupported {
                op: format!(
                    "add_host {}: {} clusters, name the spare's cluster",
                    s.id,
                    all.len()
                ),
            }),
        }
    }
}

#[async_trait]
impl Hypervisor for VsphereBackend {
    async fn execute(&self, action: &Action) -> Result<ActionOutcome, HvError> {
        use ActionOutcome::Done;
        Ok(match action {
            Action::PowerOn { vm } => self.power_on(vm).await.map(|()| Done)?,
            Action::PowerOff { vm } => self.power_off(vm).await.map(|()| Done)?,
            Action::Reset { vm } => self.reset(vm).await.map(|()| Done)?,
            Action::RevertSnapshot { vm, snapshot } => {
                self.revert_snapshot(vm, snapshot.clone()).await.map(|()| Done)?
            }
            Action::CreateSnapshot { vm, name } => {
                ActionOutcome::SnapshotCreated(self.create_snapshot(vm, name).await?)
            }
            Action::RemoveSnapshot { vm, snapshot } => {
                self.remove_snapshot(vm, snapshot).await.map(|()| Done)?
            }
            Action::Clone {
                vm,
                name,
                host,
                datastore,
            } => ActionOutcome::VmCreated(self.clone_vm(vm, name, host, datastore.clone()).await?),
            Action::RestoreClone { vm, backup, host } => {
                self.restore_clone(vm, backup, host).await.map(|()| Done)?
            }
            Action::MigrateCold { vm, to } => self.migrate(vm, to, false).await.map(|()| Done)?,
            Action::MigrateLive { vm, to } => self.migrate(vm, to, true).await.map(|()| Done)?,
            Action::Failover { vm, to } => self.failover(vm, to).await.map(|()| Done)?,
            Action::Register { vm, host } => self.register_vm(vm, host).await.map(|()| Done)?,
            Action::Unregister { vm } => self.unregister_vm(vm).await.map(|()| Done)?,
            Action::CheckLocks { vm } => self.check_locks(vm).await.map(|()| Done)?,
            Action::DeleteBackup { vm } => self.delete_backup(vm).await.map(|()| Done)?,
            Action::ReconnectHost { host } => self.reconnect_host(host).await.map(|()| Done)?,
            Action::ReviveHost { host } => self.inner.hook(host, "revive_host").await.map(|()| Done)?,
            Action::FenceHost { host } => self.inner.hook(host, "fence_host").await.map(|()| Done)?,
            Action::RemoveHost { host } => self.remove_host(host).await.map(|()| Done)?,
            Action::AddHost { spare } => ActionOutcome::HostAdded(self.add_host(spare).await?),
            Action::MountDatastore { host, datastore } => {
                self.inner.mount_datastore(host, datastore).await.map(|()| Done)?
            }
            Action::Relocate { vm, host, datastore } => {
                self.relocate(vm, host.as_ref(), datastore.as_ref()).await?
            }
            Action::EnterMaintenance { host } => self.enter_maintenance(host).await.map(|()| Done)?,
            Action::ExitMaintenance { host } => self.exit_maintenance(host).await.map(|()| Done)?,
        })
    }
}

/// What out-of-band control outside the adapter needs (a host's BMC, an admin vCenter).
impl VsphereBackend {
    /// A host's name in vCenter (its id when vCenter does not answer): what out-of-band
    /// controllers are configured by.
    pub async fn host_name(&self, host: &HostId) -> String {
        self.inner.host_vars(host).await.0
    }

    /// Has the inventory feed read a host again now (an out-of-band action changed it).
    pub fn refresh_host(&self, host: &HostId) {
        self.inner.shared().refresh(host_ref(host));
    }
}

/// One method per action, as `execute` dispatches them.
impl VsphereBackend {
    /// Destroys one of the manager's backup clones: only a VM named as one (`... (am backup of
    /// vm-42)`) and powered off; anything else is refused.
    async fn delete_backup(&self, vm: &VmId) -> Result<(), HvError> {
        let s = Subject::new("delete_backup", "vm", vm.as_str());
        let now = self.inner.vm_now(vm, "delete_backup").await?;
        if map::backup_source(now.name()).is_none() {
            return Err(HvError::invalid_state(
                vm,
                format!(
                    "{:?} is not a backup clone of the manager's: never deleted",
                    now.name()
                ),
            ));
        }
        if now.on() {
            return Err(HvError::invalid_state(vm, "the backup clone is powered on"));
        }
        let t = self.inner.client.destroy(&now.moref).await;
        self.inner.wait(&s, t).await.map(drop)
    }

    /// Lists the VM's folder for fresh lock files (a VM whose host is cut off: its orphan's
    /// `.vmx`, else the registered one's).
    async fn check_locks(&self, vm: &VmId) -> Result<(), HvError> {
        if let Some(o) = self.inner.still_orphan(vm).await {
            return self.inner.lock_files(vm, &o.vmx, None).await;
        }
        let now = self.inner.vm_now(vm, "check_locks").await?;
        let vmx = now
            .vmx()
            .ok_or_else(|| HvError::invalid_state(vm, "vCenter shows no .vmx path"))?
            .to_owned();
        let ds = crate::storage::datastore_of(&now.props);
        self.inner.lock_files(vm, &vmx, ds.as_ref()).await
    }

    async fn power_on(&self, vm: &VmId) -> Result<(), HvError> {
        let s = Subject::new("power_on", "vm", vm.as_str());
        let m = self.inner.registered(vm)?;
        self.inner
            .wait(&s, self.inner.client.power_on_vm(&m, None).await)
            .await?;
        Ok(())
    }

    async fn power_off(&self, vm: &VmId) -> Result<(), HvError> {
        let s = Subject::new("power_off", "vm", vm.as_str());
        let m = self.inner.registered(vm)?;
        self.inner
            .wait(&s, self.inner.client.power_off_vm(&m).await)
            .await?;
        Ok(())
    }

    async fn reset(&self, vm: &VmId) -> Result<(), HvError> {
        let s = Subject::new("reset", "vm", vm.as_str());
        let m = self.inner.registered(vm)?;
        self.inner.wait(&s, self.inner.client.reset_vm(&m).await).await?;
        Ok(())
    }

    async fn migrate(&self, vm: &VmId, to: &HostId, live: bool) -> Result<(), HvError> {
        let op = if live { "migrate_live" } else { "migrate_cold" };
        let s = Subject::new(op, "vm", vm.as_str()).on_host(to.as_str());
        let inner = &self.inner;
        let now = inner.vm_now(vm, op).await?;
        let to_ref = host_ref(to);
        if now.host() == Some(&to_ref) {
            return Err(HvError::invalid_state(vm, format!("already on {to}")));
        }
        let pool = inner.pool_for_move(now.host(), &to_ref, &s).await?;
        if live {
            if !now.on() {
                return Err(HvError::invalid_state(vm, "live migration needs a powered-on VM"));
            }
            let t = inner
                .client
                .migrate_vm(&now.moref, pool.as_ref(), Some(&to_ref), MovePriority::High)
                .await;
            inner.wait(&s, t).await?;
            return Ok(());
        }
        if now.on() {
            inner.power_off_ref(&now.moref, &s).await?;
        }
        let t = inner
            .client
            .migrate_vm(&now.moref, pool.as_ref(), Some(&to_ref), MovePriority::Default)
            .await;
        inner.wait(&s, t).await?;
        inner.power_on_ref(&now.moref, &s).await
    }

    async fn revert_snapshot(&self, vm: &VmId, snapshot: Option<SnapshotId>) -> Result<(), HvError> {
        let inner = &self.inner;
        let m = inner.registered(vm)?;
        let s = Subject::new("revert_snapshot", "vm", vm.as_str());
        let reverted = match &snapshot {
            Some(id) => {
                let snap = MoRef::new("VirtualMachineSnapshot", id.as_str());
                let t = inner.client.revert_to_snapshot(&snap, None, Some(false)).await;
                inner
                    .wait(&Subject::new("revert_snapshot", "snapshot", id.as_str()), t)
                    .await
            }
            None => {
                let t = inner
                    .client
                    .revert_to_current_snapshot(&m, None, Some(false))
                    .await;
                inner.wait(&s, t).await
            }
        };
        match reverted {
            Err(HvError::Api { fault, .. }) if fault == "NotFound" => {
                return Err(HvError::not_found("snapshot", format!("current of {vm}")));
            }
            other => {
                other?;
            }
        }
        // A snapshot without memory leaves the VM off.
        let p = inner.props(&m, &["runtime.powerState"], &s).await?;
        if map::text(&p, "runtime.powerState") != Some("poweredOn") {
            inner.power_on_ref(&m, &s).await?;
        }
        inner.shared().refresh(m);
        Ok(())
    }

    async fn create_snapshot(&self, vm: &VmId, name: &str) -> Result<SnapshotId, HvError> {
        let inner = &self.inner;
        let m = inner.registered(vm)?;
        let s = Subject::new("create_snapshot", "vm", vm.as_str());
        let t = inner
            .client
            .create_snapshot(&m, name, Some("taken by the availability manager"), false, false)
            .await;
        let info = inner.wait(&s, t).await?;
        inner.shared().refresh(m);
        info.result_moref()
            .map(|r| SnapshotId::new(r.value.clone()))
            .ok_or_else(|| HvError::Api {
                fault: "MalformedResponse".into(),
                message: "CreateSnapshot_Task returned no snapshot".into(),
                retryable: false,
            })
    }

    async fn remove_snapshot(&self, vm: &VmId, snapshot: &SnapshotId) -> Result<(), HvError> {
        let inner = &self.inner;
        let m = inner.registered(vm)?;
        let snap = MoRef::new("VirtualMachineSnapshot", snapshot.as_str());
        let s = Subject::new("remove_snapshot", "snapshot", snapshot.as_str());
        let t = inner.client.remove_snapshot(&snap, false, Some(true)).await;
        inner.wait(&s, t).await?;
        inner.shared().refresh(m);
        Ok(())
    }

    async fn clone_vm(
        &self,
        vm: &VmId,
        name: &str,
        host: &HostId,
        datastore: Option<DatastoreId>,
    ) -> Result<VmId, HvError> {
        let inner = &self.inner;
        let s = Subject::new("clone", "vm", vm.as_str()).on_host(host.as_str());
        let now = inner.vm_now(vm, "clone").await?;
        let to = host_ref(host);
        let datastore = datastore.map(|d| MoRef::new("Datastore", d.as_str()));
        let (folder, spec) = inner.clone_target(&to, now.folder(), datastore, &s).await?;
        let t = inner
            .client
            .clone_vm(&now.moref, &folder, &map::backup_name(name, vm), &spec)
            .await;
        let info = inner.wait(&s, t).await?;
        let clone = info.result_moref().cloned().ok_or_else(|| HvError::Api {
            fault: "MalformedResponse".into(),
            message: "CloneVM_Task returned no VM".into(),
            retryable: false,
        })?;
        inner.ensure_on(&clone, &to, &s).await?;
        Ok(VmId::new(clone.value))
    }

    /// Powers the VM off and unregisters it (its files stay), clones the backup under the VM's
    /// name on `host` and powers the copy on: it is the VM from then on. The backup stays a
    /// backup. If the copy fails, the VM is registered again where it was.
    async fn restore_clone(&self, vm: &VmId, backup: &VmId, host: &HostId) -> Result<(), HvError> {
        let inner = &self.inner;
        let s = Subject::new("restore_clone", "vm", vm.as_str()).on_host(host.as_str());
        let b = inner.vm_now(backup, "restore_clone").await?;
        if map::backup_source(b.name()).as_ref() != Some(vm) {
            return Err(HvError::invalid_state(backup, format!("not a backup of {vm}")));
        }
        if b.on() {
            return Err(HvError::invalid_state(backup, "the backup clone is powered on"));
        }
        let orphan = match inner.still_orphan(vm).await {
            Some(o) => o,
            None => {
                let now = inner.vm_now(vm, "restore_clone").await?;
                if now.on() {
                    inner.power_off_ref(&now.moref, &s).await?;
                }
                inner.unregister(vm, &now, true, false, &s).await?
            }
        };
        let to = host_ref(host);
        let (folder, spec) = inner.clone_target(&to, orphan.folder.as_ref(), None, &s).await?;
        let t = inner
            .client
            .clone_vm(&b.moref, &folder, &orphan.name, &spec)
            .await;
        let copy = match inner.wait(&s, t).await {
            Ok(info) => info.result_moref().cloned(),
            Err(e) => {
                // Put the VM back where it was, as it was (off).
                if let Some(h) = orphan.host.as_ref().map(|h| HostId::new(h.value.clone())) {
                    if let Err(back) = inner.register_on(vm, &orphan, &h, &s).await {
                        tracing::warn!(vm = %vm, error = %back, "could not register the VM again after a failed restore");
                    }
                }
                return Err(e);
            }
        };
        let copy = copy.ok_or_else(|| HvError::Api {
            fault: "MalformedResponse".into(),
            message: "CloneVM_Task returned no VM".into(),
            retryable: false,
        })?;
        let p = inner.props(&copy, &["summary.config.vmPathName"], &s).await?;
        let vmx = map::vmx_path(&p).unwrap_or_default().to_owned();
        inner.shared().set_alias(&copy.value, vm, &vmx);
        inner.ensure_on(&copy, &to, &s).await?;
        inner.power_on_ref(&copy, &s).await
    }

    async fn register_vm(&self, vm: &VmId, host: &HostId) -> Result<(), HvError> {
        let inner = &self.inner;
        let s = Subject::new("register", "vm", vm.as_str()).on_host(host.as_str());
        if let Some(orphan) = inner.release_for(vm, host, false, &s).await? {
            inner.register_on(vm, &orphan, host, &s).await?;
        }
        Ok(())
    }

    async fn unregister_vm(&self, vm: &VmId) -> Result<(), HvError> {
        let inner = &self.inner;
        let s = Subject::new("unregister", "vm", vm.as_str());
        let now = inner.vm_now(vm, "unregister").await?;
        inner.unregister(vm, &now, false, false, &s).await.map(drop)
    }

    /// Registers the VM's `.vmx` on `to` (unregistering it from its dead host first) and powers
    /// it on. Already registered on `to`: only powers it on.
    async fn failover(&self, vm: &VmId, to: &HostId) -> Result<(), HvError> {
        let inner = &self.inner;
        let s = Subject::new("failover", "vm", vm.as_str()).on_host(to.as_str());
        let (moref, orphan) = match inner.release_for(vm, to, true, &s).await? {
            Some(orphan) => (inner.register_on(vm, &orphan, to, &s).await?, Some(orphan)),
            None => (inner.registered(vm)?, None),
        };
        match inner.power_on_ref(&moref, &s).await {
            Err(e @ HvError::Locked { .. }) => {
                // It still runs where it was: undo the registration made here, so that it is
                // registered once (its host's registration comes back with the host).
                if let Some(orphan) = orphan {
                    inner.undo_register(vm, &moref, orphan, &s).await;
                }
                Err(e)
            }
            other => other,
        }
    }

    async fn reconnect_host(&self, host: &HostId) -> Result<(), HvError> {
        let inner = &self.inner;
        let s = Subject::new("reconnect_host", "host", host.as_str());
        let h = host_ref(host);
        inner.wait(&s, inner.client.reconnect_host(&h).await).await?;
        inner.shared().refresh(h);
        Ok(())
    }

    async fn remove_host(&self, host: &HostId) -> Result<(), HvError> {
        let inner = &self.inner;
        let s = Subject::new("remove_host", "host", host.as_str());
        let h = host_ref(host);
        inner.wait(&s, inner.client.destroy(&h).await).await?;
        inner.shared().refresh(h);
        Ok(())
    }

    async fn add_host(&self, spare: &str) -> Result<HostId, HvError> {
        let inner = &self.inner;
        let s = Subject::new("add_host", "spare", spare);
        let Some(cfg) = inner.opts.spares.get(spare) else {
            return Err(HvError::not_found("spare", spare));
        };
        // Added before (an earlier attempt whose answer was lost): that is the host.
        if let Ok(Some(h)) = find_by_name(&inner.client, "HostSystem", &cfg.address).await {
            return Ok(HostId::new(h.value));
        }
        let cluster = inner.cluster_for(cfg.cluster.as_ref(), &s).await?;
        let spec = HostConnectSpec {
            host_name: cfg.address.clone(),
            port: cfg.port,
            ssl_thumbprint: cfg.thumbprint.clone(),
            user_name: cfg.user.clone(),
            password: cfg.password.clone(),
            force: false,
        };
        let info = inner
            .wait(&s, inner.client.add_host(&cluster, &spec, true, None).await)
            .await?;
        let added = info.result_moref().cloned().ok_or_else(|| HvError::Api {
            fault: "MalformedResponse".into(),
            message: "AddHost_Task returned no host".into(),
            retryable: false,
        })?;
        inner.shared().refresh(added.clone());
        Ok(HostId::new(added.value))
    }

    async fn enter_maintenance(&self, host: &HostId) -> Result<(), HvError> {
        let inner = &self.inner;
        let s = Subject::new("enter_maintenance", "host", host.as_str());
        let h = host_ref(host);
        inner
            .wait(&s, inner.client.enter_maintenance_mode(&h, 0, None).await)
            .await?;
        inner.shared().refresh(h);
        Ok(())
    }

    async fn exit_maintenance(&self, host: &HostId) -> Result<(), HvError> {
        let inner = &self.inner;
        let s = Subject::new("exit_maintenance", "host", host.as_str());
        let h = host_ref(host);
        inner
            .wait(&s, inner.client.exit_maintenance_mode(&h, 0).await)
            .await?;
        inner.shared().refresh(h);
        Ok(())
    }
}
