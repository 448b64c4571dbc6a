//! The property collector: container views, `RetrievePropertiesEx` with paging, and
//! `CreateFilter` + `WaitForUpdatesEx` for incremental updates.

use std::time::Duration;

use crate::client::{Client, decode_err, single_moref};
use crate::error::{Error, FaultKind, Result, VimFault};
use crate::value::{DataObject, MoRef, Value};
use crate::xml::XmlWriter;

/// Which properties of which type to collect (`PropertySpec`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertySpec {
    /// The managed object type, e.g. `VirtualMachine`.
    pub type_name: String,
    /// Collect all properties (expensive; prefer `path_set`).
    pub all: bool,
    /// Property paths, e.g. `runtime.powerState`.
    pub path_set: Vec<String>,
}

impl PropertySpec {
    /// These `paths` of objects of type `type_name`.
    pub fn new(type_name: &str, paths: &[&str]) -> Self {
        Self {
            type_name: type_name.into(),
            all: false,
            path_set: paths.iter().map(|p| p.to_string()).collect(),
        }
    }
}

/// A selection step: by name (a reference to a named traversal) or a traversal itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectionSpec {
    /// Refers to a `TraversalSpec` by its name (for recursion).
    Name(String),
    /// A traversal.
    Traversal(TraversalSpec),
}

/// Follow property `path` of objects of type `type_name` (`TraversalSpec`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraversalSpec {
    /// The name other selections can refer to.
    pub name: Option<String>,
    /// The type that has `path`.
    pub type_name: String,
    /// The property holding references to follow.
    pub path: String,
    /// Do not collect the objects reached, only traverse them.
    pub skip: bool,
    /// Further selections from the objects reached.
    pub select_set: Vec<SelectionSpec>,
}

/// The starting object of a filter (`ObjectSpec`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectSpec {
    /// The object.
    pub obj: MoRef,
    /// Do not collect the object itself.
    pub skip: bool,
    /// Traversals from it.
    pub select_set: Vec<SelectionSpec>,
}

/// What to collect: properties and starting objects (`PropertyFilterSpec`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PropertyFilterSpec {
    /// Properties per type.
    pub prop_set: Vec<PropertySpec>,
    /// Starting objects.
    pub object_set: Vec<ObjectSpec>,
}

impl PropertyFilterSpec {
    /// Properties `paths` of a single object.
    pub fn for_object(obj: &MoRef, paths: &[&str]) -> Self {
        Self::for_objects(&obj.kind, vec![obj.clone()], paths)
    }

    /// Properties `paths` of objects of one kind, each named.
    pub fn for_objects(kind: &str, objects: Vec<MoRef>, paths: &[&str]) -> Self {
        Self {
            prop_set: vec![PropertySpec::new(kind, paths)],
            object_set: objects
                .into_iter()
                .map(|obj| ObjectSpec {
                    obj,
                    skip: false,
                    select_set: Vec::new(),
                })
                .collect(),
        }
    }

    /// The objects of a container view (see [`Client::create_container_view`]), with `props` per type.
    pub fn for_container_view(view: &MoRef, props: Vec<PropertySpec>) -> Self {
        Self {
            prop_set: props,
            object_set: vec![ObjectSpec {
                obj: view.clone(),
                skip: true,
                select_set: vec![SelectionSpec::Traversal(TraversalSpec {
                    name: Some("traverseView".into()),
                    type_name: "ContainerView".into(),
                    path: "view".into(),
                    skip: false,
                    select_set: Vec::new(),
                })],
            }],
        }
    }

    pub(crate) fn write(&self, w: &mut XmlWriter, name: &str) {
        w.start(name);
        for p in &self.prop_set {
            w.start("propSet").text("type", &p.type_name);
            if p.all {
                w.bool("all", true);
            }
            for path in &p.path_set {
                w.text("pathSet", path);
            }
            w.end("propSet");
        }
        for o in &self.object_set {
            w.start("objectSet").moref("obj", &o.obj).bool("skip", o.skip);
            for s in &o.select_set {
                write_selection(w, s);
            }
            w.end("objectSet");
        }
        w.end(name);
    }
}

fn write_selection(w: &mut XmlWriter, s: &SelectionSpec) {
    match s {
        SelectionSpec::Name(n) => {
            w.start("selectSet").text("name", n).end("selectSet");
        }
        SelectionSpec::Traversal(t) => {
            w.start_typed("selectSet", "TraversalSpec")
                .opt_text("name", t.name.as_deref())
                .text("type", &t.type_name)
                .text("path", &t.path)
                .bool("skip", t.skip);
            for s in &t.select_set {
                write_selection(w, s);
            }
            w.end("selectSet");
        }
    }
}

/// A property that could not be read (`MissingProperty`).
#[derive(Debug, Clone, PartialEq)]
pub struct MissingProperty {
    /// The property path.
    pub path: String,
    /// Why.
    pub fault: VimFault,
}

/// One object and its collected properties (`ObjectContent`). Unset properties are absent.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectContent {
    /// The object.
    pub obj: MoRef,
    /// Property path and value, in the server's order.
    pub props: Vec<(String, Value)>,
    /// Properties that could not be read.
    pub missing: Vec<MissingProperty>,
}

impl ObjectContent {
    /// The value of property `path`.
    pub fn get(&self, path: &str) -> Option<&Value> {
        self.props.iter().find(|(k, _)| k == path).map(|(_, v)| v)
    }

    /// Remove and return property `path`.
    pub fn take(&mut self, path: &str) -> Option<Value> {
        let i = self.props.iter().position(|(k, _)| k == path)?;
        Some(self.props.swap_remove(i).1)
    }

    /// A text property (strings, enums, dates).
    pub fn get_str(&self, path: &str) -> Option<&str> {
        self.get(path).and_then(Value::as_str)
    }

    /// An integer property.
    pub fn get_i64(&self, path: &str) -> Option<i64> {
        self.get(path).and_then(Value::as_i64)
    }

    /// A boolean property.
    pub fn get_bool(&self, path: &str) -> Option<bool> {
        self.get(path).and_then(Value::as_bool)
    }

    /// A reference property (e.g. `runtime.host`).
    pub fn get_moref(&self, path: &str) -> Option<&MoRef> {
        self.get(path).and_then(Value::as_moref)
    }

    /// A list of references (e.g. `datastore`, `vm`); empty when unset.
    pub fn get_morefs(&self, path: &str) -> Vec<&MoRef> {
        self.get(path).map(Value::morefs).unwrap_or_default()
    }

    /// Map property `path` onto a serde type (see [`crate::from_value`]).
    pub fn get_as<'a, T: serde::Deserialize<'a>>(&'a self, path: &str) -> Option<Result<T>> {
        self.get(path)
            .map(|v| crate::from_value(v).map_err(|e| decode_err(path, e.to_string())))
    }

    fn from_value(v: Value) -> Result<Self> {
        let Value::Data(DataObject { fields, .. }) = v else {
            return Err(decode_err("ObjectContent", "not a data object"));
        };
        let mut obj = None;
        let mut props = Vec::new();
        let mut missing = Vec::new();
        for (k, v) in fields {
            match k.as_str() {
                "obj" => obj = v.as_moref().cloned(),
                "propSet" => {
                    if let Value::Data(mut d) = v {
                        let name = d.take("name").and_then(|n| match n {
                            Value::Text(s) => Some(s),
                            _ => None,
                        });
                        if let (Some(name), Some(val)) = (name, d.take("val")) {
                            props.push((name, val));
                        }
                    }
                }
                "missingSet" => missing.push(missing_property(&v)),
                _ => {}
            }
        }
        let obj = obj.ok_or_else(|| decode_err("ObjectContent", "no obj"))?;
        Ok(ObjectContent { obj, props, missing })
    }
}

fn missing_property(v: &Value) -> MissingProperty {
    let path = v
        .field("path")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let fault = v.field("fault").map(VimFault::from_localized).unwrap_or_else(|| {
        VimFault::from_value(
            "MethodFault",
            Value::Text(String::new()),
            String::new(),
            String::new(),
        )
    });
    MissingProperty { path, fault }
}

/// How an object changed in an update (`ObjectUpdateKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectUpdateKind {
    /// Now matched by the filter (also: every object in the first update).
    Enter,
    /// Properties changed.
    Modify,
    /// No longer matched (deleted or moved out).
    Leave,
}

/// How a property changed (`PropertyChangeOp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropertyChangeOp {
    /// Set to a new value.
    Assign,
    /// Element added to a list.
    Add,
    /// Element removed from a list.
    Remove,
    /// Removed because a containing property was removed.
    IndirectRemove,
}

/// A change of one property (`PropertyChange`).
#[derive(Debug, Clone, PartialEq)]
pub struct PropertyChange {
    /// The property path.
    pub name: String,
    /// The kind of change.
    pub op: PropertyChangeOp,
    /// The new value; `None` when the property became unset.
    pub val: Option<Value>,
}

/// Changes to one object (`ObjectUpdate`).
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectUpdate {
    /// Enter, modify or leave.
    pub kind: ObjectUpdateKind,
    /// The object.
    pub obj: MoRef,
    /// Property changes.
    pub changes: Vec<PropertyChange>,
    /// Properties that could not be read.
    pub missing: Vec<MissingProperty>,
}

/// One `WaitForUpdatesEx` result (`UpdateSet`), flattened over filters.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateSet {
    /// The version to pass to the next wait.
    pub version: String,
    /// More updates are ready: call again at once.
    pub truncated: bool,
    /// Object updates, in the server's order.
    pub objects: Vec<ObjectUpdate>,
    /// The watch was re-created (new session): `objects` is a full state, not a delta.
    pub resync: bool,
}

impl UpdateSet {
    fn from_value(v: Value) -> Result<Self> {
        let Value::Data(d) = v else {
            return Err(decode_err("WaitForUpdatesEx", "UpdateSet is not a data object"));
        };
        let mut set = UpdateSet {
            version: String::new(),
            truncated: false,
            objects: Vec::new(),
            resync: false,
        };
        for (k, v) in d.fields {
            match k.as_str() {
                "version" => set.version = v.as_str().unwrap_or_default().to_string(),
                "truncated" => set.truncated = v.as_bool().unwrap_or(false),
                "filterSet" => {
                    let Value::Data(fs) = v else { continue };
                    for (k, v) in fs.fields {
                        if k == "objectSet" {
                            set.objects.push(object_update(v)?);
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(set)
    }
}

fn object_update(v: Value) -> Result<ObjectUpdate> {
    let Value::Data(d) = v else {
        return Err(decode_err(
            "WaitForUpdatesEx",
            "ObjectUpdate is not a data object",
        ));
    };
    let mut kind = None;
    let mut obj = None;
    let mut changes = Vec::new();
    let mut missing = Vec::new();
    for (k, v) in d.fields {
        match k.as_str() {
            "kind" => {
                kind = match v.as_str() {
                    Some("enter") => Some(ObjectUpdateKind::Enter),
                    Some("modify") => Some(ObjectUpdateKind::Modify),
                    Some("leave") => Some(ObjectUpdateKind::Leave),
                    _ => None,
                }
            }
            "obj" => obj = v.as_moref().cloned(),
            "changeSet" => {
                let Value::Data(mut c) = v else { continue };
                let name = c
                    .take("name")
                    .and_then(|n| n.as_str().map(str::to_string))
                    .unwrap_or_default();
                let op = match c.get("op").and_then(Value::as_str) {
                    Some("add") => PropertyChangeOp::Add,
                    Some("remove") => PropertyChangeOp::Remove,
                    Some("indirectRemove") => PropertyChangeOp::IndirectRemove,
                    _ => PropertyChangeOp::Assign,
                };
                changes.push(PropertyChange {
                    name,
                    op,
                    val: c.take("val"),
                });
            }
            "missingSet" => missing.push(missing_property(&v)),
            _ => {}
        }
    }
    Ok(ObjectUpdate {
        kind: kind.ok_or_else(|| decode_err("WaitForUpdatesEx", "ObjectUpdate without a known kind"))?,
        obj: obj.ok_or_else(|| decode_err("WaitForUpdatesEx", "ObjectUpdate without obj"))?,
        changes,
        missing,
    })
}

impl Client {
    fn view_manager(&self) -> Result<&MoRef> {
        self.service_content()
            .view_manager
            .as_ref()
            .ok_or_else(|| Error::Config("server has no ViewManager".into()))
    }

    /// `CreateContainerView`: a view of the objects of `types` under `container`.
    pub async fn create_container_view(
        &self,
        container: &MoRef,
        types: &[&str],
        recursive: bool,
    ) -> Result<MoRef> {
        let vm = self.view_manager()?.clone();
        let res = self
            .invoke("CreateContainerView", &vm, |w| {
                w.moref("container", container);
                for t in types {
                    w.text("type", t);
                }
                w.bool("recursive", recursive);
            })
            .await?;
        single_moref("CreateContainerView", res)
    }

    /// `DestroyView`.
    pub async fn destroy_view(&self, view: &MoRef) -> Result<()> {
        self.invoke("DestroyView", view, |_| {}).await.map(drop)
    }

    /// `RetrievePropertiesEx` on the default collector, following `ContinueRetrievePropertiesEx`
    /// tokens until every page is read. `page_size` sets `maxObjects` (server default when `None`).
    pub async fn retrieve_properties(
        &self,
        spec: &PropertyFilterSpec,
        page_size: Option<u32>,
    ) -> Result<Vec<ObjectContent>> {
        let pc = self.service_content().property_collector.clone();
        let res = self
            .invoke("RetrievePropertiesEx", &pc, |w| {
                spec.write(w, "specSet");
                w.start("options");
                if let Some(n) = page_size {
                    w.int("maxObjects", i64::from(n));
                }
                w.end("options");
            })
            .await?;
        let mut out = Vec::new();
        let mut token = read_page(res, &mut out)?;
        while let Some(t) = token {
            let res = self.invoke("ContinueRetrievePropertiesEx", &pc, |w| {
                w.text("token", &t);
            });
            token = read_page(res.await?, &mut out)?;
        }
        Ok(out)
    }

    /// All objects of the given types under the root folder, with their properties, via a
    /// temporary container view. This is the inventory read an adapter does at start-up.
    pub async fn retrieve_inventory(&self, props: Vec<PropertySpec>) -> Result<Vec<ObjectContent>> {
        let root = self.service_content().root_folder.clone();
        let types: Vec<&str> = props.iter().map(|p| p.type_name.as_str()).collect();
        let view = self.create_container_view(&root, &types, true).await?;
        let spec = PropertyFilterSpec::for_container_view(&view, props.clone());
        let result = self.retrieve_properties(&spec, None).await;
        if let Err(e) = self.destroy_view(&view).await {
            tracing::debug!(error = %e, "DestroyView failed");
        }
        result
    }

    /// Start following changes of `spec` with a property collector of our own.
    ///
    /// The first [`PropertyWatch::next`] returns the full state (`Enter` for every object).
    pub async fn watch(&self, spec: PropertyFilterSpec) -> Result<PropertyWatch> {
        let (collector, filter) = self.create_collector_filter(&spec).await?;
        Ok(PropertyWatch {
            client: self.clone(),
            spec,
            collector,
            filter,
            version: String::new(),
            generation: self.session_generation(),
            page_size: None,
            patience: None,
        })
    }

    async fn create_collector_filter(&self, spec: &PropertyFilterSpec) -> Result<(MoRef, MoRef)> {
        let pc = self.service_content().property_collector.clone();
        let collector = single_moref(
            "CreatePropertyCollector",
            self.invoke("CreatePropertyCollector", &pc, |_| {}).await?,
        )?;
        let filter = self
            .invoke("CreateFilter", &collector, |w| {
                spec.write(w, "spec");
                w.bool("partialUpdates", false);
            })
            .await
            .and_then(|r| single_moref("CreateFilter", r));
        match filter {
            Ok(f) => Ok((collector, f)),
            Err(e) => {
                let _ = self.invoke("DestroyPropertyCollector", &collector, |_| {}).await;
                Err(e)
            }
        }
    }
}

fn read_page(res: Vec<Value>, out: &mut Vec<ObjectContent>) -> Result<Option<String>> {
    let Some(Value::Data(d)) = res.into_iter().next() else {
        return Ok(None); // no returnval: nothing matched
    };
    let mut token = None;
    for (k, v) in d.fields {
        match k.as_str() {
            "objects" => out.push(ObjectContent::from_value(v)?),
            "token" => token = v.as_str().map(str::to_string),
            _ => {}
        }
    }
    Ok(token)
}

/// Follows a filter with `WaitForUpdatesEx`, keeping the version between calls.
///
/// If the session is lost and the client logs in again, the collector is gone with the old
/// session: the watch re-creates it and the next update has `resync` set.
#[derive(Debug)]
pub struct PropertyWatch {
    client: Client,
    spec: PropertyFilterSpec,
    collector: MoRef,
    filter: MoRef,
    version: String,
    generation: u64,
    page_size: Option<u32>,
    /// How long an answer may take beyond the wait (`None`: the client's call timeout).
    patience: Option<Duration>,
}

impl PropertyWatch {
    /// The version of the last update received ("" before the first).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// At most `n` object updates per answer (`maxObjectUpdates`; vCenter then sets `truncated`
    /// and the next call returns the rest at once). Servers may ignore it (vcsim does).
    pub fn page_size(mut self, n: u32) -> Self {
        self.page_size = Some(n);
        self
    }

    /// An answer may take up to `max_wait` and then `d` (default: the client's call timeout)
    /// before the wait fails with a timeout. vCenter answers within `max_wait`; a busy
    /// simulator can take minutes (vcsim recomputes the whole filter per changed object), and a
    /// wait that fails is paid for by reading everything again.
    pub fn patience(mut self, d: Duration) -> Self {
        self.patience = Some(d);
        self
    }

    /// Wait up to `max_wait` (whole seconds) for changes. `Ok(None)`: nothing changed in time.
    pub async fn next(&mut self, max_wait: Duration) -> Result<Option<UpdateSet>> {
        let mut objects = Vec::new();
        let set = self
            .next_each(max_wait, &mut |u| {
                objects.push(u);
                Ok(())
            })
            .await?;
        Ok(set.map(|s| UpdateSet { objects, ..s }))
    }

    /// [`PropertyWatch::next`], handing each object update to `each` as it arrives, decoded on
    /// its own (the set returned has none): a full state of any size is never held whole. With
    /// `resync` set, the updates were a full state.
    pub async fn next_each(
        &mut self,
        max_wait: Duration,
        each: &mut (dyn FnMut(ObjectUpdate) -> Result<()> + Send),
    ) -> Result<Option<UpdateSet>> {
        let mut resync = false;
        if self.client.session_generation() != self.generation {
            self.recreate().await?;
            resync = true;
        }
        let mut decode = |v: Value| each(object_update(v)?);
        let res = match self.wait(max_wait, &mut decode).await {
            // A fault carries no object updates: none was handed on before the retry.
            Err(e) if self.client.session_generation() != self.generation && lost_collector(&e) => {
                self.recreate().await?;
                resync = true;
                self.wait(max_wait, &mut decode).await?
            }
            other => other?,
        };
        match res.into_iter().next() {
            None => Ok(None),
            Some(v) => {
                let mut set = UpdateSet::from_value(v)?;
                self.version = set.version.clone();
                set.resync = resync;
                Ok(Some(set))
            }
        }
    }

    async fn wait(&self, max_wait: Duration, each: &mut crate::client::Each<'_>) -> Result<Vec<Value>> {
        let secs = i64::try_from(max_wait.as_secs()).unwrap_or(i64::MAX);
        let timeout = self.patience.unwrap_or_else(|| self.client.timeout()) + max_wait;
        self.client
            .invoke_split(
                "WaitForUpdatesEx",
                &self.collector,
                timeout,
                |w| {
                    w.text("version", &self.version)
                        .start("options")
                        .int("maxWaitSeconds", secs);
                    if let Some(n) = self.page_size {
                        w.int("maxObjectUpdates", i64::from(n));
                    }
                    w.end("options");
                },
                &["returnval", "filterSet", "objectSet"],
                each,
            )
            .await
    }

    async fn recreate(&mut self) -> Result<()> {
        tracing::info!("re-creating property collector after a new login");
        let (collector, filter) = self.client.create_collector_filter(&self.spec).await?;
        self.collector = collector;
        self.filter = filter;
        self.version.clear();
        self.generation = self.client.session_generation();
        Ok(())
    }

    /// Destroy the collector (and its filter). Dropping a watch without closing it leaves them to
    /// the session's end.
    pub async fn close(self) -> Result<()> {
        self.client
            .invoke("DestroyPropertyCollector", &self.collector, |_| {})
            .await
            .map(drop)
    }
}

fn lost_collector(e: &Error) -> bool {
    matches!(
        e.vim_fault().map(|f| &f.kind),
        Some(FaultKind::ManagedObjectNotFound { .. } | FaultKind::NotAuthenticated)
    )
}
