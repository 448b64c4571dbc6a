//! Where things are: a host's cluster and its root pool, the pool for a move, the VM folder
//! near an object, where a clone goes; references that do not change read at most once a minute.

use super::*;

impl Inner {
    /// The reference `path` of `obj`, read at most once a minute: for references that do not
    /// change in practice (a host's cluster, a cluster's root pool, a datastore's browser). A
    /// failover of 100 VMs onto 10 hosts asked for the same few hundred times, each a call
    /// vCenter serves while it registers and powers on.
    pub(crate) async fn fixed_ref(
        &self,
        obj: &MoRef,
        path: &'static str,
        s: &Subject<'_>,
    ) -> Result<Option<MoRef>, HvError> {
        const FOR: std::time::Duration = std::time::Duration::from_secs(60);
        let key = (obj.clone(), path);
        let cached = {
            let c = self
                .fixed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            c.get(&key)
                .filter(|(at, _)| at.elapsed() < FOR)
                .map(|(_, r)| r.clone())
        };
        if cached.is_some() {
            return Ok(cached);
        }
        let p = self.props(obj, &[path], s).await?;
        let found = map::moref(&p, path).cloned();
        if let Some(r) = &found {
            let mut c = self
                .fixed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            c.retain(|_, (at, _)| at.elapsed() < FOR);
            c.insert(key, (std::time::Instant::now(), r.clone()));
        }
        Ok(found)
    }

    /// The compute resource (cluster or standalone) a host belongs to.
    pub(super) async fn compute_resource(&self, host: &MoRef, s: &Subject<'_>) -> Result<MoRef, HvError> {
        self.fixed_ref(host, "parent", s)
            .await?
            .ok_or_else(|| HvError::not_found("host", &host.value))
    }

    /// The root resource pool of a host's cluster.
    pub(super) async fn pool_of(&self, host: &MoRef, s: &Subject<'_>) -> Result<MoRef, HvError> {
        let cr = self.compute_resource(host, s).await?;
        self.fixed_ref(&cr, "resourcePool", s)
            .await?
            .ok_or_else(|| HvError::Api {
                fault: "NoResourcePool".into(),
                message: format!("{} of host {} has no resource pool", cr, host.value),
                retryable: false,
            })
    }

    /// The target pool for a move: only across clusters (within one, the VM keeps its pool).
    pub(super) async fn pool_for_move(
        &self,
        from: Option<&MoRef>,
        to: &MoRef,
        s: &Subject<'_>,
    ) -> Result<Option<MoRef>, HvError> {
        let to_cr = self.compute_resource(to, s).await?;
        let same = match from {
            Some(f) => self.compute_resource(f, s).await.ok().as_ref() == Some(&to_cr),
            None => false,
        };
        if same {
            return Ok(None);
        }
        self.fixed_ref(&to_cr, "resourcePool", s).await
    }

    /// The VM folder of the datacenter `obj` is in.
    /// Where a clone goes on host `to`: into `folder` (else the VM folder nearest the host), in the
    /// host's resource pool, powered off, not a template.
    pub(super) async fn clone_target(
        &self,
        to: &MoRef,
        folder: Option<&MoRef>,
        datastore: Option<MoRef>,
        s: &Subject<'_>,
    ) -> Result<(MoRef, CloneSpec), HvError> {
        let folder = match folder {
            Some(f) => f.clone(),
            None => self.vm_folder_near(to, s).await?,
        };
        let spec = CloneSpec {
            location: RelocateSpec {
                folder: None,
                datastore,
                pool: Some(self.pool_of(to, s).await?),
                host: Some(to.clone()),
            },
            template: false,
            power_on: false,
            snapshot: None,
        };
        Ok((folder, spec))
    }

    pub(super) async fn vm_folder_near(&self, obj: &MoRef, s: &Subject<'_>) -> Result<MoRef, HvError> {
        let mut current = obj.clone();
        for _ in 0..32 {
            if current.kind == "Datacenter" {
                let p = self.props(&current, &["vmFolder"], s).await?;
                return map::moref(&p, "vmFolder")
                    .cloned()
                    .ok_or_else(|| HvError::not_found("folder", format!("vmFolder of {current}")));
            }
            let p = self.props(&current, &["parent"], s).await?;
            match map::moref(&p, "parent") {
                Some(parent) => current = parent.clone(),
                None => break,
            }
        }
        Err(HvError::not_found("datacenter", format!("of {obj}")))
    }
}
