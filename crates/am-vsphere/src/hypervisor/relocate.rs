//! `Action::Relocate`: one `RelocateVM_Task` moving a VM's registration and/or its files, its
//! power unchanged (a Storage vMotion for a running VM given only a datastore, a cold move for a
//! powered-off VM given a host). A host in another cluster gets that cluster's root pool.

use super::*;

impl VsphereBackend {
    pub(super) async fn relocate(
        &self,
        vm: &VmId,
        host: Option<&HostId>,
        datastore: Option<&DatastoreId>,
    ) -> Result<ActionOutcome, HvError> {
        let inner = &self.inner;
        let s = Subject::new("relocate", "vm", vm.as_str());
        let s = match host {
            Some(h) => s.on_host(h.as_str()),
            None => s,
        };
        let now = inner.vm_now(vm, "relocate").await?;
        let to_host = host.map(host_ref);
        let to_ds = datastore.map(|d| MoRef::new("Datastore", d.as_str()));
        let same_host = to_host.is_none() || to_host.as_ref() == now.host();
        let same_ds = to_ds.is_none() || to_ds == crate::storage::datastore_of(&now.props);
        if same_host && same_ds {
            return Err(HvError::invalid_state(
                vm,
                "relocate to where it is already (same host and datastore, or neither given)",
            ));
        }
        let pool = match &to_host {
            Some(h) if !same_host => inner.pool_for_move(now.host(), h, &s).await?,
            _ => None,
        };
        let spec = RelocateSpec {
            folder: None,
            datastore: to_ds,
            pool,
            host: to_host.filter(|_| !same_host),
        };
        let t = inner
            .client
            .relocate_vm(&now.moref, &spec, Some(MovePriority::Default))
            .await;
        inner.wait(&s, t).await.map(|_| ActionOutcome::Done)
    }
}
