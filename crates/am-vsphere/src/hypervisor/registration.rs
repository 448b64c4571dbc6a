//! Moving a VM's registration: an orphan found again, a VM unregistered from a host vCenter
//! cannot reach (powered off in vCenter's books first), its `.vmx` registered on the target, and
//! a registration undone when the VM turns out to run where it was.

use super::*;

impl Inner {
    /// A VM the manager unregistered, if it still is (a record whose VM vCenter still lists was
    /// an unregistration that did not happen: forgotten).
    pub(super) async fn still_orphan(&self, id: &VmId) -> Option<Orphan> {
        let orphan = self.shared().orphan(id).cloned()?;
        let old = MoRef::new("VirtualMachine", orphan.moref.clone());
        match self
            .client
            .retrieve_object(&old, &["name", "summary.config.vmPathName"])
            .await
        {
            Ok(o) if o.get_str("summary.config.vmPathName") == Some(orphan.vmx.as_str()) => {
                tracing::info!(vm = %id, "still registered: the unregistration did not happen");
                self.shared().drop_orphan(id);
                return None;
            }
            _ => {}
        }
        // Registered again under another id (by an earlier attempt, or by its host coming back).
        if let Some(found) = self.find_by_vmx(&orphan.vmx).await {
            tracing::info!(vm = %id, moref = %found, "registered again under a new id: that is the VM");
            self.shared().set_alias(&found.value, id, &orphan.vmx);
            return None;
        }
        Some(orphan)
    }

    /// Unregisters a VM (keeping what is needed to register it again). With `force_off` (its
    /// host is one vCenter cannot reach: the caller checked), a VM vCenter believes powered on is
    /// powered off in vCenter's books first.
    pub(super) async fn unregister(
        &self,
        id: &VmId,
        now: &VmNow,
        keep_host: bool,
        force_off: bool,
        s: &Subject<'_>,
    ) -> Result<Orphan, HvError> {
        let vmx = now.vmx().ok_or_else(|| HvError::Api {
            fault: "NoVmxPath".into(),
            message: format!("{id} has no summary.config.vmPathName: cannot register it elsewhere"),
            retryable: false,
        })?;
        let orphan = Orphan {
            moref: now.moref.value.clone(),
            vmx: vmx.to_owned(),
            name: now.name().to_owned(),
            folder: now.folder().cloned(),
            host: now.host().cloned(),
            keep_host,
            ghost: None,
        };
        self.shared().add_orphan(id, orphan.clone());
        let unregister = async || {
            self.client
                .unregister_vm(&now.moref)
                .await
                .map_err(|e| hv_error(&e, s))
        };
        let result = if force_off && now.on() {
            // vCenter refuses to unregister a VM it believes powered on (InvalidPowerState: the
            // API's reference and vcsim alike); its host is one vCenter cannot reach (the caller
            // checked: the supervisor found it dead or fenced it). Powered off in vCenter's books
            // first, it can go: one call where trying the unregistration first cost three.
            match self.power_off_ref(&now.moref, s).await {
                Ok(()) => unregister().await,
                Err(off) if unanswered(&off) => Err(off),
                // Some let a VM on a host they cannot reach go without the power-off.
                Err(off) => match unregister().await {
                    Err(e) if !unanswered(&e) => Err(HvError::InvalidState {
                        id: id.to_string(),
                        detail: format!(
                            "vCenter keeps it registered, powered on, on {} which it cannot reach, and refuses to \
                             power it off ({off}) or unregister it ({e}); remove that host from vCenter to \
                             restart the VM elsewhere",
                            now.host().map_or("its host", |h| h.value.as_str()),
                        ),
                    }),
                    other => other,
                },
            }
        } else {
            unregister().await
        };
        match result {
            Ok(()) => Ok(orphan),
            Err(e) => {
                if !unanswered(&e) {
                    self.shared().drop_orphan(id);
                }
                Err(e)
            }
        }
    }

    /// The VM whose `.vmx` is `vmx`, if vCenter lists one.
    pub(super) async fn find_by_vmx(&self, vmx: &str) -> Option<MoRef> {
        let found = self
            .client
            .retrieve_inventory(vec![PropertySpec::new(
                "VirtualMachine",
                &["summary.config.vmPathName"],
            )])
            .await
            .ok()?;
        found
            .into_iter()
            .find(|o| o.get_str("summary.config.vmPathName") == Some(vmx))
            .map(|o| o.obj)
    }

    /// Registers an orphan on `to` (in the resource pool of `to`'s cluster) and makes sure it is
    /// there; returns its new moref, now known by the orphan's id.
    pub(super) async fn register_on(
        &self,
        id: &VmId,
        orphan: &Orphan,
        to: &HostId,
        s: &Subject<'_>,
    ) -> Result<MoRef, HvError> {
        let to_ref = host_ref(to);
        let pool = self.pool_of(&to_ref, s).await?;
        let folder = match &orphan.folder {
            Some(f) => f.clone(),
            None => self.vm_folder_near(&to_ref, s).await?,
        };
        let registered = self
            .wait(
                s,
                self.client
                    .register_vm(&folder, &orphan.vmx, None, Some(&pool), Some(&to_ref))
                    .await,
            )
            .await;
        let new = match registered {
            Ok(info) => info.result_moref().cloned().ok_or_else(|| HvError::Api {
                fault: "MalformedResponse".into(),
                message: "RegisterVM_Task returned no VM".into(),
                retryable: false,
            })?,
            // Already registered (an earlier attempt whose answer was lost, or by someone else):
            // that is the VM.
            Err(e) if is_state_error(&e) => match self.find_by_vmx(&orphan.vmx).await {
                Some(found) => found,
                None => return Err(e),
            },
            Err(e) => return Err(e),
        };
        self.shared().set_alias(&new.value, id, &orphan.vmx);
        self.ensure_on(&new, &to_ref, s).await?;
        Ok(new)
    }

    /// Moves a VM just created or registered on `host` there, if vCenter put it elsewhere
    /// (vcsim ignores the host of `CloneVM_Task`).
    pub(super) async fn ensure_on(&self, vm: &MoRef, host: &MoRef, s: &Subject<'_>) -> Result<(), HvError> {
        let now = self.props(vm, &["runtime.host"], s).await?;
        if map::moref(&now, "runtime.host") == Some(host) {
            return Ok(());
        }
        tracing::info!(vm = %vm, host = %host, "placed elsewhere by vCenter; moving it");
        let t = self
            .client
            .migrate_vm(vm, None, Some(host), MovePriority::Default)
            .await;
        self.wait(s, t).await.map(drop)
    }

    /// Frees a VM from its registration for a move to `to` (failover, register): `Ok(None)` when
    /// it is already registered on `to`.
    pub(super) async fn release_for(
        &self,
        id: &VmId,
        to: &HostId,
        force_off: bool,
        s: &Subject<'_>,
    ) -> Result<Option<Orphan>, HvError> {
        if let Some(o) = self.still_orphan(id).await {
            return Ok(Some(o));
        }
        let now = self.vm_now(id, s.op).await?;
        let to_ref = host_ref(to);
        if now.host() == Some(&to_ref) {
            return Ok(None);
        }
        if let Some(h) = now.host()
            && self.host_connected(h, s).await?
        {
            return Err(HvError::invalid_state(
                id,
                format!(
                    "registered on {}, which vCenter reaches: not a failover (migrate it instead)",
                    h.value
                ),
            ));
        }
        if force_off && let Some(vmx) = now.vmx() {
            // Before anything is unregistered: a VM whose files are still locked runs there.
            self.check_lock(id, vmx, crate::storage::datastore_of(&now.props).as_ref())
                .await?;
        }
        self.unregister(id, &now, true, force_off, s).await.map(Some)
    }

    /// Unregisters the copy registered at `moref` by a failover that found the VM's files locked,
    /// and keeps the VM known as the orphan it was, on its old host.
    pub(super) async fn undo_register(&self, id: &VmId, moref: &MoRef, orphan: Orphan, s: &Subject<'_>) {
        match self.client.unregister_vm(moref).await {
            Ok(()) => {
                tracing::info!(vm = %id, copy = %moref, "failover undone: the copy is unregistered");
                let old = orphan.moref.clone();
                self.shared().add_orphan(id, orphan);
                // The id points at the old moref again, gone from vCenter until its host is back.
                self.shared().set_current(id, &old);
            }
            Err(e) => {
                tracing::warn!(vm = %id, copy = %moref, error = %hv_error(&e, s), "cannot unregister the failover's copy")
            }
        }
        self.shared().refresh(moref.clone());
    }
}
