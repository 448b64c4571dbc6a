//! The vim25 operations the product needs, one function each, all the same shape.
//!
//! Methods ending in `_Task` return the task; await it with [`Client::wait_for_task`].

use crate::client::{Client, single_moref};
use crate::error::Result;
use crate::secret::Password;
use crate::value::MoRef;
use crate::xml::XmlWriter;

/// Where to move or clone a VM (`VirtualMachineRelocateSpec`), the fields we use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelocateSpec {
    /// Target folder.
    pub folder: Option<MoRef>,
    /// Target datastore.
    pub datastore: Option<MoRef>,
    /// Target resource pool.
    pub pool: Option<MoRef>,
    /// Target host.
    pub host: Option<MoRef>,
}

impl RelocateSpec {
    fn write(&self, w: &mut XmlWriter, name: &str) {
        w.start(name)
            .opt_moref("folder", self.folder.as_ref())
            .opt_moref("datastore", self.datastore.as_ref())
            .opt_moref("pool", self.pool.as_ref())
            .opt_moref("host", self.host.as_ref())
            .end(name);
    }
}

/// How to clone a VM (`VirtualMachineCloneSpec`), the fields we use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloneSpec {
    /// Where the clone goes.
    pub location: RelocateSpec,
    /// Make the clone a template.
    pub template: bool,
    /// Power the clone on.
    pub power_on: bool,
    /// Clone from this snapshot instead of the current state.
    pub snapshot: Option<MoRef>,
}

/// Priority of a migration (`VirtualMachineMovePriority`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MovePriority {
    /// `defaultPriority`.
    #[default]
    Default,
    /// `highPriority`.
    High,
    /// `lowPriority`.
    Low,
}

impl MovePriority {
    fn as_str(self) -> &'static str {
        match self {
            MovePriority::Default => "defaultPriority",
            MovePriority::High => "highPriority",
            MovePriority::Low => "lowPriority",
        }
    }
}

/// How to connect a host (`HostConnectSpec`), for `AddHost_Task`.
#[derive(Debug, Clone)]
pub struct HostConnectSpec {
    /// DNS name or IP of the host.
    pub host_name: String,
    /// The host's HTTPS port, when not 443.
    pub port: Option<u16>,
    /// The host certificate's SHA-1 thumbprint as vCenter wants it (`AA:BB:...`).
    pub ssl_thumbprint: Option<String>,
    /// Administrator account on the host.
    pub user_name: String,
    /// Its password (never printed).
    pub password: Password,
    /// Add the host even if another vCenter manages it.
    pub force: bool,
}

impl Client {
    fn task(&self, method: &'static str, this: &MoRef, args: impl FnOnce(&mut XmlWriter)) -> TaskCall<'_> {
        let mut w = XmlWriter::new();
        args(&mut w);
        TaskCall {
            client: self,
            method,
            this: this.clone(),
            args: w.into_string(),
        }
    }

    /// `PowerOnVM_Task`, optionally on `host`.
    pub async fn power_on_vm(&self, vm: &MoRef, host: Option<&MoRef>) -> Result<MoRef> {
        self.task("PowerOnVM_Task", vm, |w| {
            w.opt_moref("host", host);
        })
        .run()
        .await
    }

    /// `PowerOffVM_Task` (hard power-off).
    pub async fn power_off_vm(&self, vm: &MoRef) -> Result<MoRef> {
        self.task("PowerOffVM_Task", vm, |_| {}).run().await
    }

    /// `ResetVM_Task` (hard reset).
    pub async fn reset_vm(&self, vm: &MoRef) -> Result<MoRef> {
        self.task("ResetVM_Task", vm, |_| {}).run().await
    }

    /// `ShutdownGuest`: ask VMware Tools to shut the guest down. Returns at once, no task.
    pub async fn shutdown_guest(&self, vm: &MoRef) -> Result<()> {
        self.invoke("ShutdownGuest", vm, |_| {}).await.map(drop)
    }

    /// `RelocateVM_Task`.
    pub async fn relocate_vm(
        &self,
        vm: &MoRef,
        spec: &RelocateSpec,
        priority: Option<MovePriority>,
    ) -> Result<MoRef> {
        self.task("RelocateVM_Task", vm, |w| {
            spec.write(w, "spec");
            w.opt_text("priority", priority.map(MovePriority::as_str));
        })
        .run()
        .await
    }

    /// `MigrateVM_Task`: move a VM to `host` and/or `pool` (vMotion when powered on).
    pub async fn migrate_vm(
        &self,
        vm: &MoRef,
        pool: Option<&MoRef>,
        host: Option<&MoRef>,
        priority: MovePriority,
    ) -> Result<MoRef> {
        self.task("MigrateVM_Task", vm, |w| {
            w.opt_moref("pool", pool)
                .opt_moref("host", host)
                .text("priority", priority.as_str());
        })
        .run()
        .await
    }

    /// `CloneVM_Task`: clone `vm` as `name` into `folder`.
    pub async fn clone_vm(&self, vm: &MoRef, folder: &MoRef, name: &str, spec: &CloneSpec) -> Result<MoRef> {
        self.task("CloneVM_Task", vm, |w| {
            w.moref("folder", folder).text("name", name).start("spec");
            spec.location.write(w, "location");
            w.bool("template", spec.template).bool("powerOn", spec.power_on);
            w.opt_moref("snapshot", spec.snapshot.as_ref());
            w.end("spec");
        })
        .run()
        .await
    }

    /// `CreateSnapshot_Task`.
    pub async fn create_snapshot(
        &self,
        vm: &MoRef,
        name: &str,
        description: Option<&str>,
        memory: bool,
        quiesce: bool,
    ) -> Result<MoRef> {
        self.task("CreateSnapshot_Task", vm, |w| {
            w.text("name", name)
                .opt_text("description", description)
                .bool("memory", memory)
                .bool("quiesce", quiesce);
        })
        .run()
        .await
    }

    /// `RevertToCurrentSnapshot_Task`.
    pub async fn revert_to_current_snapshot(
        &self,
        vm: &MoRef,
        host: Option<&MoRef>,
        suppress_power_on: Option<bool>,
    ) -> Result<MoRef> {
        self.task("RevertToCurrentSnapshot_Task", vm, |w| {
            w.opt_moref("host", host)
                .opt_bool("suppressPowerOn", suppress_power_on);
        })
        .run()
        .await
    }

    /// `RevertToSnapshot_Task` on a `VirtualMachineSnapshot`.
    pub async fn revert_to_snapshot(
        &self,
        snapshot: &MoRef,
        host: Option<&MoRef>,
        suppress_power_on: Option<bool>,
    ) -> Result<MoRef> {
        self.task("RevertToSnapshot_Task", snapshot, |w| {
            w.opt_moref("host", host)
                .opt_bool("suppressPowerOn", suppress_power_on);
        })
        .run()
        .await
    }

    /// `RemoveSnapshot_Task` on a `VirtualMachineSnapshot`.
    pub async fn remove_snapshot(
        &self,
        snapshot: &MoRef,
        remove_children: bool,
        consolidate: Option<bool>,
    ) -> Result<MoRef> {
        self.task("RemoveSnapshot_Task", snapshot, |w| {
            w.bool("removeChildren", remove_children)
                .opt_bool("consolidate", consolidate);
        })
        .run()
        .await
    }

    /// `UnregisterVM`: remove from the inventory, keep the files.
    pub async fn unregister_vm(&self, vm: &MoRef) -> Result<()> {
        self.invoke("UnregisterVM", vm, |_| {}).await.map(drop)
    }

    /// `RegisterVM_Task`: add the VM at datastore path `path` (e.g. `[ds1] vm/vm.vmx`) to `folder`.
    pub async fn register_vm(
        &self,
        folder: &MoRef,
        path: &str,
        name: Option<&str>,
        pool: Option<&MoRef>,
        host: Option<&MoRef>,
    ) -> Result<MoRef> {
        self.task("RegisterVM_Task", folder, |w| {
            w.text("path", path)
                .opt_text("name", name)
                .bool("asTemplate", false)
                .opt_moref("pool", pool)
                .opt_moref("host", host);
        })
        .run()
        .await
    }

    /// `ReconnectHost_Task` with the stored connection settings.
    pub async fn reconnect_host(&self, host: &MoRef) -> Result<MoRef> {
        self.task("ReconnectHost_Task", host, |_| {}).run().await
    }

    /// `DisconnectHost_Task`.
    pub async fn disconnect_host(&self, host: &MoRef) -> Result<MoRef> {
        self.task("DisconnectHost_Task", host, |_| {}).run().await
    }

    /// `Destroy_Task` on any managed entity (e.g. remove a host from the inventory).
    pub async fn destroy(&self, entity: &MoRef) -> Result<MoRef> {
        self.task("Destroy_Task", entity, |_| {}).run().await
    }

    /// `EnterMaintenanceMode_Task`; `timeout_secs` 0 waits forever.
    pub async fn enter_maintenance_mode(
        &self,
        host: &MoRef,
        timeout_secs: i32,
        evacuate_powered_off_vms: Option<bool>,
    ) -> Result<MoRef> {
        self.task("EnterMaintenanceMode_Task", host, |w| {
            w.int("timeout", i64::from(timeout_secs))
                .opt_bool("evacuatePoweredOffVms", evacuate_powered_off_vms);
        })
        .run()
        .await
    }

    /// `ExitMaintenanceMode_Task`.
    pub async fn exit_maintenance_mode(&self, host: &MoRef, timeout_secs: i32) -> Result<MoRef> {
        self.task("ExitMaintenanceMode_Task", host, |w| {
            w.int("timeout", i64::from(timeout_secs));
        })
        .run()
        .await
    }

    /// `AddHost_Task`: add a host to `cluster`.
    pub async fn add_host(
        &self,
        cluster: &MoRef,
        spec: &HostConnectSpec,
        as_connected: bool,
        resource_pool: Option<&MoRef>,
    ) -> Result<MoRef> {
        self.task("AddHost_Task", cluster, |w| {
            w.start("spec").text("hostName", &spec.host_name);
            if let Some(p) = spec.port {
                w.int("port", i64::from(p));
            }
            w.opt_text("sslThumbprint", spec.ssl_thumbprint.as_deref())
                .text("userName", &spec.user_name)
                .text("password", spec.password.expose())
                .bool("force", spec.force)
                .end("spec");
            w.bool("asConnected", as_connected)
                .opt_moref("resourcePool", resource_pool);
        })
        .run()
        .await
    }
}

/// An NFS export to mount on a host (`HostNasVolumeSpec`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NasVolumeSpec {
    /// The NFS server.
    pub remote_host: String,
    /// The export's path on it.
    pub remote_path: String,
    /// The datastore's name on the host (the same on every host makes it the same datastore).
    pub local_path: String,
    /// `readWrite` or `readOnly`.
    pub access_mode: String,
    /// `NFS` (v3) or `NFS41`.
    pub nfs_type: String,
}

impl Client {
    /// `CreateNasDatastore` on a host's datastore system: mount an NFS export; returns the
    /// datastore.
    pub async fn create_nas_datastore(
        &self,
        datastore_system: &MoRef,
        spec: &NasVolumeSpec,
    ) -> Result<MoRef> {
        let res = self
            .invoke("CreateNasDatastore", datastore_system, |w| {
                w.start("spec")
                    .text("remoteHost", &spec.remote_host)
                    .text("remotePath", &spec.remote_path)
                    .text("localPath", &spec.local_path)
                    .text("accessMode", &spec.access_mode)
                    .text("type", &spec.nfs_type)
                    .end("spec");
            })
            .await?;
        single_moref("CreateNasDatastore", res)
    }

    /// `RescanAllHba` on a host's storage system (new LUNs show up).
    pub async fn rescan_all_hba(&self, storage_system: &MoRef) -> Result<()> {
        self.invoke("RescanAllHba", storage_system, |_| {})
            .await
            .map(drop)
    }

    /// `RescanVmfs` on a host's storage system (VMFS volumes on the LUNs are mounted).
    pub async fn rescan_vmfs(&self, storage_system: &MoRef) -> Result<()> {
        self.invoke("RescanVmfs", storage_system, |_| {}).await.map(drop)
    }

    /// `SearchDatastore_Task` on a datastore browser: the files of folder `path` (e.g.
    /// `[ds1] web`) matching `patterns`, with their modification times. Await the task; its
    /// result is a `HostDatastoreBrowserSearchResults` (see [`FileInfo::of_search`]).
    pub async fn search_datastore(&self, browser: &MoRef, path: &str, patterns: &[&str]) -> Result<MoRef> {
        self.task("SearchDatastore_Task", browser, |w| {
            w.text("datastorePath", path);
            w.start("searchSpec");
            w.start("details")
                .bool("fileType", true)
                .bool("fileSize", true)
                .bool("modification", true)
                .bool("fileOwner", false)
                .end("details");
            for p in patterns {
                w.text("matchPattern", p);
            }
            w.end("searchSpec");
        })
        .run()
        .await
    }
}

/// A file found by [`Client::search_datastore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// Its name within the folder searched.
    pub path: String,
    /// When it was last written (xsd:dateTime), if the server said.
    pub modification: Option<String>,
    /// Its size in bytes.
    pub size: Option<i64>,
}

impl FileInfo {
    /// The files of a `HostDatastoreBrowserSearchResults` (a search task's result).
    pub fn of_search(result: &crate::value::Value) -> Vec<FileInfo> {
        use crate::value::Value;
        result
            .as_data()
            .map(|d| d.get_all("file").flat_map(Value::items).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|f| {
                Some(FileInfo {
                    path: f.field("path").and_then(Value::as_str)?.to_owned(),
                    modification: f.field("modification").and_then(Value::as_str).map(str::to_owned),
                    size: f.field("fileSize").and_then(Value::as_i64),
                })
            })
            .collect()
    }
}

/// A prepared `_Task` call.
struct TaskCall<'a> {
    client: &'a Client,
    method: &'static str,
    this: MoRef,
    args: String,
}

impl TaskCall<'_> {
    async fn run(self) -> Result<MoRef> {
        let args = self.args;
        let res = self.client.invoke(self.method, &self.this, |w| {
            w.raw(&args);
        });
        single_moref(self.method, res.await?)
    }
}
