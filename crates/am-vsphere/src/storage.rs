//! What the adapter reads and does on datastores: the lock check that tells whether a VM still
//! runs where it was, and mounting a datastore on a host (a spare the manager added).
//!
//! ## Locks
//!
//! A running VM's host holds its files locked. On NFS, ESXi shows that lock as `.lck-<id>` files
//! in the VM's folder, refreshed every few seconds; a host that crashed leaves them behind, but
//! stale. Before a failover unregisters anything, the adapter lists the VM's folder through the
//! datastore browser: a lock file refreshed within [`Options::lock_fresh`](crate::Options) of
//! vCenter's own clock means the VM still runs, and the failover stops with
//! [`HvError::Locked`]. On VMFS the lock is not a file: the power-on on the new host fails with
//! `FileLocked` instead, and the adapter undoes the registration it made.
//!
//! ## Mounting
//!
//! A new host mounts nothing. `mount_datastore` mounts the datastore the way the other hosts
//! have it: an NFS datastore by `CreateNasDatastore` with the same server, export and name; a
//! VMFS one by rescanning the host's HBAs and VMFS volumes.

use std::time::{Duration, SystemTime};

use am_core::{DatastoreId, HostId, HvError, VmId};
use vsphere_soap::{FileInfo, MoRef, NasVolumeSpec, Value};

use crate::Inner;
use crate::fault::{Subject, hv_error};
use crate::map;

/// Lock files as ESXi writes them on NFS (and hosted products next to the `.vmx`).
const LOCK_PATTERNS: &[&str] = &[".lck-*", "*.lck"];

/// The datastore name and folder of a `.vmx` path: `[ds1] web/web.vmx` -> (`ds1`, `web`).
pub(crate) fn vmx_folder(vmx: &str) -> Option<(&str, &str)> {
    let rest = vmx.strip_prefix('[')?;
    let (ds, path) = rest.split_once(']')?;
    let path = path.trim();
    let folder = path.rsplit_once('/').map_or("", |(dir, _)| dir);
    Some((ds, folder))
}

/// The lock files among `files` refreshed within `fresh` of `now` (vCenter's clock).
pub(crate) fn fresh_locks(files: &[FileInfo], now: SystemTime, fresh: Duration) -> Vec<String> {
    files
        .iter()
        .filter(|f| f.path.starts_with(".lck-") || f.path.ends_with(".lck"))
        .filter(|f| {
            f.modification
                .as_deref()
                .and_then(vsphere_soap::datetime::parse)
                .is_some_and(|m| now.duration_since(m).map_or(true, |age| age <= fresh))
        })
        .map(|f| f.path.clone())
        .collect()
}

impl Inner {
    /// Whether the VM at `vmx` still runs somewhere: a fresh lock file in its folder. `Ok` when
    /// none is found, or when the folder cannot be listed (the power-on's own lock is then the
    /// guard).
    pub(crate) async fn check_lock(
        &self,
        id: &VmId,
        vmx: &str,
        datastore: Option<&MoRef>,
    ) -> Result<(), HvError> {
        match self.lock_files(id, vmx, datastore).await {
            Ok(()) => Ok(()),
            Err(e @ HvError::Locked { .. }) => Err(e),
            Err(e) => {
                tracing::warn!(vm = %id, error = %e, "cannot list the VM's folder for locks; the power-on's lock stays the guard");
                Ok(())
            }
        }
    }

    /// The lock check itself: `Err(Locked)` on a fresh lock file, `Ok` when the folder holds
    /// none, any other error when the folder cannot be listed (nothing is known then).
    pub(crate) async fn lock_files(
        &self,
        id: &VmId,
        vmx: &str,
        datastore: Option<&MoRef>,
    ) -> Result<(), HvError> {
        let Some((ds_name, folder)) = vmx_folder(vmx) else {
            return Err(HvError::invalid_state(
                id,
                format!("cannot read the .vmx path {vmx:?}"),
            ));
        };
        let s = Subject::new("check_locks", "vm", id.as_str());
        let ds = match datastore {
            Some(d) => d.clone(),
            None => crate::find_by_name(&self.client, "Datastore", ds_name)
                .await
                .map_err(|e| hv_error(&e, &s))?
                .ok_or_else(|| HvError::not_found("datastore", ds_name))?,
        };
        let browser = self
            .fixed_ref(&ds, "browser", &s)
            .await?
            .ok_or_else(|| HvError::not_found("datastore browser", ds.value.clone()))?;
        let path = format!("[{ds_name}] {folder}");
        let task = self
            .client
            .search_datastore(&browser, &path, LOCK_PATTERNS)
            .await
            .map_err(|e| hv_error(&e, &s))?;
        let info = self
            .client
            .wait_for_task(&task, Duration::from_secs(60))
            .await
            .map_err(|e| hv_error(&e, &s))?;
        let files = info.result.as_ref().map(FileInfo::of_search).unwrap_or_default();
        // vCenter's clock when it listed the folder (the files' times are its clock too): the
        // search's completion time, else a call for its time now.
        let listed = info
            .complete_time
            .as_deref()
            .and_then(vsphere_soap::datetime::parse);
        let now = match listed {
            Some(t) => t,
            None => self
                .client
                .current_time()
                .await
                .ok()
                .and_then(|t| vsphere_soap::datetime::parse(&t))
                .unwrap_or_else(SystemTime::now),
        };
        let locks = fresh_locks(&files, now, self.opts.lock_fresh);
        match locks.first() {
            Some(first) => {
                tracing::info!(vm = %id, files = ?locks, "lock files are fresh: the VM still runs where it was");
                Err(HvError::Locked {
                    id: id.to_string(),
                    file: format!("[{ds_name}] {folder}/{first}"),
                })
            }
            None => Ok(()),
        }
    }

    /// Mounts `datastore` on `host` as the other hosts have it.
    pub(crate) async fn mount_datastore(
        &self,
        host: &HostId,
        datastore: &DatastoreId,
    ) -> Result<(), HvError> {
        let s = Subject::new("mount_datastore", "datastore", datastore.as_str()).on_host(host.as_str());
        let err = |e: vsphere_soap::Error| hv_error(&e, &s);
        let ds = MoRef::new("Datastore", datastore.as_str());
        let h = MoRef::new("HostSystem", host.as_str());
        let dp = self
            .client
            .retrieve_object(&ds, &["name", "summary.type", "info"])
            .await
            .map_err(err)?;
        if dp.props.is_empty() {
            return Err(HvError::not_found("datastore", datastore));
        }
        let hp = self
            .client
            .retrieve_object(
                &h,
                &[
                    "datastore",
                    "configManager.datastoreSystem",
                    "configManager.storageSystem",
                ],
            )
            .await
            .map_err(err)?;
        let mounted = hp
            .get("datastore")
            .map(Value::morefs)
            .unwrap_or_default()
            .contains(&&ds);
        if mounted {
            return Ok(());
        }
        let name = dp.get_str("name").unwrap_or(datastore.as_str()).to_owned();
        let kind = dp
            .get_str("summary.type")
            .unwrap_or_default()
            .to_ascii_uppercase();
        let nas = dp.get("info").and_then(|i| i.field("nas"));
        if kind.starts_with("NFS") || nas.is_some() {
            let nas = nas.ok_or_else(|| HvError::Api {
                fault: "NoNasInfo".into(),
                message: format!("datastore {name} is {kind} but vCenter shows no NFS server and export"),
                retryable: false,
            })?;
            let field = |k: &str| {
                nas.field(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            let spec = NasVolumeSpec {
                remote_host: field("remoteHost"),
                remote_path: field("remotePath"),
                local_path: name.clone(),
                access_mode: "readWrite".into(),
                nfs_type: if kind == "NFS41" {
                    "NFS41".into()
                } else {
                    "NFS".into()
                },
            };
            let system = hp
                .get("configManager.datastoreSystem")
                .and_then(Value::as_moref)
                .cloned()
                .ok_or_else(|| HvError::not_found("datastore system of host", host))?;
            tracing::info!(host = %host, datastore = %name, server = %spec.remote_host, export = %spec.remote_path, "mounting NFS datastore");
            let got = self
                .client
                .create_nas_datastore(&system, &spec)
                .await
                .map_err(err)?;
            if got != ds {
                tracing::warn!(host = %host, expected = %ds, got = %got, "the mount made another datastore");
            }
        } else {
            let storage = hp
                .get("configManager.storageSystem")
                .and_then(Value::as_moref)
                .cloned()
                .ok_or_else(|| HvError::not_found("storage system of host", host))?;
            tracing::info!(host = %host, datastore = %name, "rescanning HBAs and VMFS for the datastore");
            self.client.rescan_all_hba(&storage).await.map_err(err)?;
            self.client.rescan_vmfs(&storage).await.map_err(err)?;
            let again = self
                .client
                .retrieve_object(&h, &["datastore"])
                .await
                .map_err(err)?;
            let now = again.get("datastore").map(Value::morefs).unwrap_or_default();
            if !now.contains(&&ds) {
                return Err(HvError::Api {
                    fault: "DatastoreNotVisible".into(),
                    message: format!(
                        "after a rescan, host {host} still does not see datastore {name} (zone or present its LUN to the host)"
                    ),
                    retryable: false,
                });
            }
        }
        self.shared().refresh(h);
        self.shared().refresh(ds);
        Ok(())
    }
}

/// The datastore of a VM as its properties show it.
pub(crate) fn datastore_of(props: &map::Props) -> Option<MoRef> {
    props
        .get("datastore")
        .and_then(|v| v.morefs().first().map(|m| (*m).clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vmx_path_names_its_datastore_and_folder() {
        assert_eq!(vmx_folder("[nfs-1] web/web.vmx"), Some(("nfs-1", "web")));
        assert_eq!(vmx_folder("[ds] a/b/c.vmx"), Some(("ds", "a/b")));
        assert_eq!(vmx_folder("[ds] top.vmx"), Some(("ds", "")));
        assert_eq!(vmx_folder("web/web.vmx"), None);
    }

    #[test]
    fn only_fresh_lock_files_count() {
        let t = |s: &str| vsphere_soap::datetime::parse(s).unwrap();
        let f = |path: &str, m: &str| FileInfo {
            path: path.into(),
            modification: Some(m.into()),
            size: Some(84),
        };
        let files = [
            f(".lck-0a1b2c3d4e5f6071", "2024-01-01T00:00:25Z"),
            f(".lck-stale000000000000", "2024-01-01T00:00:00Z"),
            f("web.vmx", "2024-01-01T00:00:29Z"),
        ];
        let now = t("2024-01-01T00:00:40Z");
        assert_eq!(
            fresh_locks(&files, now, Duration::from_secs(30)),
            vec![".lck-0a1b2c3d4e5f6071".to_owned()]
        );
        assert!(fresh_locks(&files, now, Duration::from_secs(5)).is_empty());
    }
}
