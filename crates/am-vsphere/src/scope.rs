//! The part of vCenter the adapter watches: the whole inventory, one datacenter, or some clusters,
//! resolved by name once, at setup, so that a wrong name fails there.

use vsphere_soap::{Client, MoRef, PropertySpec};

use crate::SetupError;
use crate::options::Options;

/// What the inventory feed reads: containers of hosts and VMs (and resource pools), containers of
/// datastores and folders (not children of a cluster: the clusters' datacenters), and the entity
/// whose events are read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Scope {
    /// Containers whose hosts, VMs and resource pools are watched.
    pub compute: Vec<MoRef>,
    /// Containers whose datastores and folders are watched.
    pub storage: Vec<MoRef>,
    /// Events are read under this entity, recursively.
    pub events: MoRef,
}

/// Types read from a compute container.
pub(crate) const COMPUTE_TYPES: &[&str] = &["HostSystem", "VirtualMachine", "ResourcePool"];
/// Types read from a storage container.
pub(crate) const STORAGE_TYPES: &[&str] = &["Datastore", "Folder"];

impl Scope {
    /// Every container view to make, with its types (one view where a container is both).
    pub(crate) fn views(&self) -> Vec<(MoRef, Vec<&'static str>)> {
        let mut views: Vec<(MoRef, Vec<&'static str>)> = Vec::new();
        for c in &self.compute {
            let mut types = COMPUTE_TYPES.to_vec();
            if self.storage.contains(c) {
                types.extend(STORAGE_TYPES);
            }
            views.push((c.clone(), types));
        }
        for s in self.storage.iter().filter(|s| !self.compute.contains(s)) {
            views.push((s.clone(), STORAGE_TYPES.to_vec()));
        }
        views
    }
}

/// Resolves the scope of `opts`: clusters by name (within the datacenter when one is named), a
/// datacenter, or the whole inventory.
pub(crate) async fn resolve(client: &Client, opts: &Options) -> Result<Scope, SetupError> {
    let root = client.service_content().root_folder.clone();
    let dc = match &opts.datacenter {
        Some(name) => {
            let found = named(client, "Datacenter", name).await?;
            match found.as_slice() {
                [one] => Some(one.clone()),
                [] => {
                    return Err(SetupError::Scope(format!(
                        "no datacenter named `{name}` in vCenter"
                    )));
                }
                _ => {
                    return Err(SetupError::Scope(format!(
                        "{} datacenters are named `{name}`",
                        found.len()
                    )));
                }
            }
        }
        None => None,
    };
    if opts.clusters.is_empty() {
        let top = dc.unwrap_or(root);
        return Ok(Scope {
            compute: vec![top.clone()],
            storage: vec![top.clone()],
            events: top,
        });
    }
    let mut compute = Vec::new();
    let mut storage: Vec<MoRef> = Vec::new();
    for name in &opts.clusters {
        let mut found = Vec::new();
        for c in named(client, "ClusterComputeResource", name).await? {
            let parent_dc = datacenter_of(client, &c).await?;
            if dc.as_ref().is_none_or(|d| Some(d) == parent_dc.as_ref()) {
                found.push((c, parent_dc));
            }
        }
        let where_ = dc
            .as_ref()
            .map_or(String::new(), |d| format!(" in datacenter {}", d.value));
        match found.as_slice() {
            [(c, parent)] => {
                compute.push(c.clone());
                let s = parent.clone().unwrap_or_else(|| root.clone());
                if !storage.contains(&s) {
                    storage.push(s);
                }
            }
            [] => {
                return Err(SetupError::Scope(format!(
                    "no cluster named `{name}`{where_} in vCenter"
                )));
            }
            _ => {
                return Err(SetupError::Scope(format!(
                    "{} clusters are named `{name}`: name the datacenter too",
                    found.len()
                )));
            }
        }
    }
    let events = match storage.as_slice() {
        [one] => one.clone(),
        _ => root,
    };
    Ok(Scope {
        compute,
        storage,
        events,
    })
}

/// Every object of type `kind` named `name`.
async fn named(client: &Client, kind: &str, name: &str) -> Result<Vec<MoRef>, vsphere_soap::Error> {
    let found = client
        .retrieve_inventory(vec![PropertySpec::new(kind, &["name"])])
        .await?;
    Ok(found
        .into_iter()
        .filter(|o| o.obj.kind == kind && o.get_str("name") == Some(name))
        .map(|o| o.obj)
        .collect())
}

/// The datacenter `obj` is in, walking up its parents.
async fn datacenter_of(client: &Client, obj: &MoRef) -> Result<Option<MoRef>, vsphere_soap::Error> {
    let mut current = obj.clone();
    for _ in 0..32 {
        if current.kind == "Datacenter" {
            return Ok(Some(current));
        }
        let o = client.retrieve_object(&current, &["parent"]).await?;
        match o.get("parent").and_then(vsphere_soap::Value::as_moref) {
            Some(p) => current = p.clone(),
            None => return Ok(None),
        }
    }
    Ok(None)
}
