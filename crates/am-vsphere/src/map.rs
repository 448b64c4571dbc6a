//! Pure mappings from vim25 properties and events to `am-core` types. No I/O: unit tests feed them
//! property maps and events as vCenter (and vcsim) send them.

use crate::options::Options;
use am_core::{
    ClusterEvent, ConnectionState, Datastore, DatastoreId, EventKind, GuestHeartbeat, Host, HostId,
    PowerState, Resources, RestartPriority, Snapshot, SnapshotId, Time, Vm, VmId,
};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;
use vsphere_soap::{Event, MoRef, Value};

/// An object's properties by path, as collected (unset properties are absent).
pub(crate) type Props = BTreeMap<String, Value>;

/// `HostSystem` properties the adapter reads.
pub(crate) const HOST_PROPS: &[&str] = &[
    "name",
    "parent",
    "runtime.connectionState",
    "runtime.inMaintenanceMode",
    "summary.hardware.cpuMhz",
    "summary.hardware.numCpuCores",
    "summary.hardware.memorySize",
];

/// `VirtualMachine` properties the adapter reads.
pub(crate) const VM_PROPS: &[&str] = &[
    "name",
    "parent",
    "resourcePool",
    "config.template",
    "runtime.powerState",
    "runtime.host",
    "runtime.connectionState",
    "summary.config.memorySizeMB",
    "summary.config.numCpu",
    "summary.config.cpuReservation",
    "summary.config.vmPathName",
    "config.instanceUuid",
    "guest.ipAddress",
    "guestHeartbeatStatus",
    "summary.quickStats.overallCpuUsage",
    "summary.quickStats.uptimeSeconds",
    "datastore",
    "snapshot",
];

/// `Datastore` properties the adapter reads.
pub(crate) const DS_PROPS: &[&str] = &["name", "summary.capacity", "summary.freeSpace", "host"];

/// Event types the adapter reads (the history collector's filter).
pub(crate) const EVENT_TYPES: &[&str] = &[
    "VmPoweredOffEvent",
    "VmPoweredOnEvent",
    "HostConnectionLostEvent",
    "HostConnectedEvent",
    "HostDisconnectedEvent",
    "HostShutdownEvent",
    "VmRegisteredEvent",
    "VmRemovedEvent",
    "VmFailedToPowerOnEvent",
    "VmGuestShutdownEvent",
    "VmGuestRebootEvent",
    "VmResettingEvent",
    "VmSuspendedEvent",
    "VmMigratedEvent",
    "VmRelocatedEvent",
    "EnteredMaintenanceModeEvent",
    "ExitMaintenanceModeEvent",
];

const MIB: i64 = 1024 * 1024;

/// Converts wall-clock times (event and snapshot times) to the engine's [`Time`], anchored once so
/// that the same wall-clock time always maps to the same `Time`. Times before the run start map to
/// [`Time::ZERO`].
#[derive(Clone)]
pub(crate) struct TimeMap {
    anchor_wall: SystemTime,
    anchor: Time,
}

impl TimeMap {
    /// Anchored at `now` on the wall clock and `at` on the engine's clock.
    pub(crate) fn new(now: SystemTime, at: Time) -> Self {
        TimeMap {
            anchor_wall: now,
            anchor: at,
        }
    }

    /// Anchored now on both clocks.
    pub(crate) fn now(clock: &Arc<dyn am_core::Clock>) -> Self {
        TimeMap::new(SystemTime::now(), clock.now())
    }

    /// The engine time of the wall-clock time `t`.
    pub(crate) fn at(&self, t: SystemTime) -> Time {
        match t.duration_since(self.anchor_wall) {
            Ok(after) => self.anchor + after,
            Err(e) => self.anchor - e.duration(),
        }
    }

    /// The engine time of an `xsd:dateTime` (anchor time when it does not parse).
    pub(crate) fn at_text(&self, t: &str) -> Time {
        vsphere_soap::datetime::parse(t).map_or(self.anchor, |t| self.at(t))
    }
}

fn get<'a>(p: &'a Props, k: &str) -> Option<&'a Value> {
    p.get(k)
}

pub(crate) fn text<'a>(p: &'a Props, k: &str) -> Option<&'a str> {
    get(p, k).and_then(Value::as_str)
}

fn int(p: &Props, k: &str) -> Option<i64> {
    get(p, k).and_then(Value::as_i64)
}

fn flag(p: &Props, k: &str) -> Option<bool> {
    get(p, k).and_then(Value::as_bool)
}

pub(crate) fn moref<'a>(p: &'a Props, k: &str) -> Option<&'a MoRef> {
    get(p, k).and_then(Value::as_moref)
}

fn morefs<'a>(p: &'a Props, k: &str) -> Vec<&'a MoRef> {
    get(p, k).map(Value::morefs).unwrap_or_default()
}

fn non_negative(v: Option<i64>) -> u64 {
    v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0)
}

/// `HostSystemConnectionState` to ours (`connected`, `disconnected`, `notResponding`; anything
/// unknown counts as not responding).
pub(crate) fn connection(state: Option<&str>) -> ConnectionState {
    match state {
        Some("connected") => ConnectionState::Connected,
        Some("disconnected") => ConnectionState::Disconnected,
        _ => ConnectionState::NotResponding,
    }
}

/// A `HostSystem`: capacity is cores x MHz per core and the physical memory.
pub(crate) fn host(id: &MoRef, p: &Props, opts: &Options) -> Host {
    let name = text(p, "name").unwrap_or(&id.value).to_owned();
    let cores = non_negative(int(p, "summary.hardware.numCpuCores"));
    let mhz = non_negative(int(p, "summary.hardware.cpuMhz"));
    let mem = non_negative(int(p, "summary.hardware.memorySize").map(|b| b / MIB));
    let mgmt_address = opts
        .host_addresses
        .get(&name)
        .cloned()
        .or_else(|| (opts.probe_host_names && name.parse::<IpAddr>().is_ok()).then(|| name.clone()));
    Host {
        id: HostId::new(id.value.clone()),
        name,
        capacity: Resources::new(cores.saturating_mul(mhz), mem),
        connection: connection(text(p, "runtime.connectionState")),
        maintenance: flag(p, "runtime.inMaintenanceMode").unwrap_or(false),
        failure_domain: None,
        mgmt_address,
        // vCenter does not expose datastore heartbeats.
        storage_heartbeat: None,
    }
}

/// Whether a VM is a template (templates are not VMs the manager runs: left out).
pub(crate) fn is_template(p: &Props) -> bool {
    flag(p, "config.template").unwrap_or(false)
}

/// The `.vmx` path of a VM (`[datastore] dir/name.vmx`).
pub(crate) fn vmx_path(p: &Props) -> Option<&str> {
    text(p, "summary.config.vmPathName").filter(|s| !s.is_empty())
}

/// The name a backup clone of `source` gets: `"{name} (am backup of {source})"`. The manager
/// recognises its clones by it (see [`backup_source`]).
pub fn backup_name(name: &str, source: &VmId) -> String {
    format!("{name} (am backup of {source})")
}

/// The VM a backup clone was made from, from its name (see [`backup_name`]).
pub fn backup_source(name: &str) -> Option<VmId> {
    let inner = name.strip_suffix(')')?;
    let (_, source) = inner.rsplit_once(" (am backup of ")?;
    (!source.is_empty() && !source.contains(' ')).then(|| VmId::new(source))
}

/// `VirtualMachineGuestHeartbeatStatus`-style `ManagedEntityStatus` to ours (unset: gray).
pub(crate) fn heartbeat(status: Option<&str>) -> GuestHeartbeat {
    match status {
        Some("green") => GuestHeartbeat::Green,
        Some("yellow") => GuestHeartbeat::Yellow,
        Some("red") => GuestHeartbeat::Red,
        _ => GuestHeartbeat::Gray,
    }
}

/// `VirtualMachinePowerState` to ours (unknown: off).
pub(crate) fn power(state: Option<&str>) -> PowerState {
    match state {
        Some("poweredOn") => PowerState::PoweredOn,
        Some("suspended") => PowerState::Suspended,
        _ => PowerState::PoweredOff,
    }
}

/// A `VirtualMachine` as the id `id` (its moref, or the id it had before the manager registered
/// it anew). `None` for templates.
///
/// Demand: CPU is the reservation (MHz), memory the configured size. CPU usage is reported only
/// while quick stats are live (`uptimeSeconds` > 0): vCenter leaves them at zero for a VM whose
/// host does not report, and zero would read as a hang.
pub(crate) fn vm(id: VmId, obj: &MoRef, p: &Props, opts: &Options) -> Option<Vm> {
    if is_template(p) {
        return None;
    }
    let name = text(p, "name").unwrap_or(&obj.value).to_owned();
    let backup_of = backup_source(&name).filter(|source| *source != id);
    let priority = if backup_of.is_some() {
        RestartPriority::Disabled
    } else {
        opts.priorities
            .get(&name)
            .copied()
            .unwrap_or(opts.default_priority)
    };
    let power = power(text(p, "runtime.powerState"));
    let live_stats = int(p, "summary.quickStats.uptimeSeconds").is_some_and(|u| u > 0);
    let cpu_usage_mhz = (power == PowerState::PoweredOn && live_stats)
        .then(|| int(p, "summary.quickStats.overallCpuUsage"))
        .flatten()
        .and_then(|v| u64::try_from(v).ok());
    let guest_address = opts
        .probe_guests
        .then(|| text(p, "guest.ipAddress"))
        .flatten()
        .filter(|a| a.parse::<IpAddr>().is_ok())
        .map(str::to_owned);
    Some(Vm {
        id,
        name,
        demand: Resources::new(
            non_negative(int(p, "summary.config.cpuReservation")),
            non_negative(int(p, "summary.config.memorySizeMB")),
        ),
        power,
        host: moref(p, "runtime.host").map(|h| HostId::new(h.value.clone())),
        priority,
        affinity_group: None,
        anti_affinity_group: None,
        guest_address,
        heartbeat: heartbeat(text(p, "guestHeartbeatStatus")),
        cpu_usage_mhz,
        datastore: morefs(p, "datastore")
            .first()
            .map(|d| DatastoreId::new(d.value.clone())),
        backup_of,
        config_path: vmx_path(p).map(str::to_owned),
        instance_uuid: text(p, "config.instanceUuid").map(str::to_owned),
        backup: true,
    })
}

/// A `Datastore`, with the hosts that mount it.
pub(crate) fn datastore(id: &MoRef, p: &Props) -> Datastore {
    let hosts = get(p, "host")
        .map(|v| {
            v.items()
                .iter()
                .filter_map(|m| m.field("key").and_then(Value::as_moref))
                .map(|h| HostId::new(h.value.clone()))
                .collect()
        })
        .unwrap_or_default();
    Datastore {
        id: DatastoreId::new(id.value.clone()),
        name: text(p, "name").unwrap_or(&id.value).to_owned(),
        capacity_mib: non_negative(int(p, "summary.capacity").map(|b| b / MIB)),
        free_mib: non_negative(int(p, "summary.freeSpace").map(|b| b / MIB)),
        hosts,
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct SnapshotInfo {
    #[serde(default)]
    root_snapshot_list: Vec<SnapshotTree>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct SnapshotTree {
    snapshot: MoRef,
    #[serde(default)]
    name: String,
    #[serde(default)]
    create_time: String,
    #[serde(default)]
    child_snapshot_list: Vec<SnapshotTree>,
}

/// The snapshots of a VM (its `snapshot` tree, flattened), oldest first.
pub(crate) fn snapshots(vm: &VmId, p: &Props, time: &TimeMap) -> Vec<Snapshot> {
    let Some(v) = get(p, "snapshot") else {
        return Vec::new();
    };
    let info: SnapshotInfo = match vsphere_soap::from_value(v) {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(vm = %vm, error = %e, "cannot read the snapshot tree");
            return Vec::new();
        }
    };
    let mut flat: Vec<(Option<SystemTime>, Snapshot)> = Vec::new();
    let mut stack: Vec<&SnapshotTree> = info.root_snapshot_list.iter().collect();
    while let Some(t) = stack.pop() {
        flat.push((
            vsphere_soap::datetime::parse(&t.create_time),
            Snapshot {
                id: SnapshotId::new(t.snapshot.value.clone()),
                vm: vm.clone(),
                name: t.name.clone(),
                created: time.at_text(&t.create_time),
            },
        ));
        stack.extend(t.child_snapshot_list.iter());
    }
    // Oldest first by the real time (snapshots older than the run all map to `Time::ZERO`).
    flat.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.id.cmp(&b.1.id)));
    flat.into_iter().map(|(_, s)| s).collect()
}

/// An event as the supervisor sees it; `None` for events it does not need. `vm_id` maps a VM's
/// moref to its id (re-registered VMs keep their first id).
pub(crate) fn event(e: &Event, vm_id: &dyn Fn(&MoRef) -> VmId, time: &TimeMap) -> Option<ClusterEvent> {
    let at = time.at_text(&e.created_time);
    let user = (!e.user_name.is_empty()).then(|| e.user_name.clone());
    let vm = e.vm.as_ref().and_then(|a| a.entity.as_ref()).map(vm_id);
    let kind = match (e.type_name.as_str(), vm) {
        ("VmPoweredOffEvent", Some(vm)) => EventKind::VmPoweredOff { vm, user },
        ("VmPoweredOnEvent", Some(vm)) => EventKind::VmPoweredOn { vm, user },
        ("VmPoweredOffEvent" | "VmPoweredOnEvent", None) => return None,
        ("HostConnectionLostEvent", _) => EventKind::HostConnectionLost {
            host: HostId::new(e.host.as_ref()?.entity.as_ref()?.value.clone()),
        },
        (t, _) if EVENT_TYPES.contains(&t) => EventKind::Other {
            message: if e.full_formatted_message.is_empty() {
                t.to_owned()
            } else {
                format!("{t}: {}", e.full_formatted_message)
            },
        },
        _ => return None,
    };
    Some(ClusterEvent { at, kind })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn props(items: &[(&str, Value)]) -> Props {
        items.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
    }

    fn t(s: &str) -> Value {
        Value::Text(s.into())
    }

    fn r(kind: &str, v: &str) -> Value {
        Value::MoRef(MoRef::new(kind, v))
    }

    fn time() -> TimeMap {
        // 2024-01-01T00:00:00Z is engine time 100 s.
        TimeMap::new(
            UNIX_EPOCH + Duration::from_secs(1_704_067_200),
            Time::from_secs(100),
        )
    }

    #[test]
    fn hosts_map_capacity_connection_and_addresses() {
        let p = props(&[
            ("name", t("10.0.0.7")),
            ("runtime.connectionState", t("notResponding")),
            ("runtime.inMaintenanceMode", Value::Bool(true)),
            ("summary.hardware.cpuMhz", Value::Int(2294)),
            ("summary.hardware.numCpuCores", Value::Int(2)),
            ("summary.hardware.memorySize", Value::Int(4_294_430_720)),
        ]);
        let id = MoRef::new("HostSystem", "host-21");
        let mut opts = Options::default();
        let h = host(&id, &p, &opts);
        assert_eq!(h.id, HostId::from("host-21"));
        assert_eq!(h.name, "10.0.0.7");
        assert_eq!(h.capacity, Resources::new(4588, 4095));
        assert_eq!(h.connection, ConnectionState::NotResponding);
        assert!(h.maintenance);
        assert_eq!(h.mgmt_address, None, "probing host names is off by default");
        assert_eq!(h.storage_heartbeat, None);
        opts.probe_host_names = true;
        assert_eq!(host(&id, &p, &opts).mgmt_address.as_deref(), Some("10.0.0.7"));
        opts.host_addresses
            .insert("10.0.0.7".into(), "tcp:10.0.1.7:443".into());
        assert_eq!(
            host(&id, &p, &opts).mgmt_address.as_deref(),
            Some("tcp:10.0.1.7:443")
        );
        assert_eq!(connection(Some("connected")), ConnectionState::Connected);
        assert_eq!(connection(Some("disconnected")), ConnectionState::Disconnected);
        assert_eq!(connection(None), ConnectionState::NotResponding);
    }

    fn vm_props() -> Props {
        props(&[
            ("name", t("web-1")),
            ("runtime.powerState", t("poweredOn")),
            ("runtime.host", r("HostSystem", "host-21")),
            ("summary.config.memorySizeMB", Value::Int(2048)),
            ("summary.config.numCpu", Value::Int(2)),
            ("summary.config.cpuReservation", Value::Int(500)),
            ("summary.config.vmPathName", t("[ds1] web-1/web-1.vmx")),
            ("guest.ipAddress", t("192.0.2.10")),
            ("guestHeartbeatStatus", t("red")),
            ("summary.quickStats.overallCpuUsage", Value::Int(0)),
            ("summary.quickStats.uptimeSeconds", Value::Int(0)),
            (
                "datastore",
                Value::Array(vec![r("Datastore", "datastore-1"), r("Datastore", "datastore-2")]),
            ),
        ])
    }

    #[test]
    fn vms_map_every_property() {
        let obj = MoRef::new("VirtualMachine", "vm-42");
        let mut opts = Options::default();
        let p = vm_props();
        let v = vm(VmId::from("vm-42"), &obj, &p, &opts).unwrap();
        assert_eq!(v.name, "web-1");
        assert_eq!(v.demand, Resources::new(500, 2048));
        assert_eq!(v.power, PowerState::PoweredOn);
        assert_eq!(v.host, Some(HostId::from("host-21")));
        assert_eq!(v.priority, RestartPriority::Medium);
        assert_eq!(v.heartbeat, GuestHeartbeat::Red);
        assert_eq!(v.guest_address, None, "guests are probed only when asked");
        assert_eq!(v.cpu_usage_mhz, None, "stats without uptime are not live");
        assert_eq!(v.datastore, Some(DatastoreId::from("datastore-1")));
        assert_eq!(v.backup_of, None);
        assert!(v.is_protected());
        assert_eq!(vmx_path(&p), Some("[ds1] web-1/web-1.vmx"));

        opts.probe_guests = true;
        opts.priorities.insert("web-1".into(), RestartPriority::High);
        let mut p = p;
        p.insert("summary.quickStats.uptimeSeconds".into(), Value::Int(300));
        p.insert("summary.quickStats.overallCpuUsage".into(), Value::Int(0));
        let v = vm(VmId::from("vm-1"), &obj, &p, &opts).unwrap();
        assert_eq!(v.id, VmId::from("vm-1"), "the id given, not the moref");
        assert_eq!(v.guest_address.as_deref(), Some("192.0.2.10"));
        assert_eq!(v.cpu_usage_mhz, Some(0), "live stats: zero is zero");
        assert_eq!(v.priority, RestartPriority::High);

        p.insert("guest.ipAddress".into(), t("fe80::1%eth0"));
        assert_eq!(
            vm(VmId::from("vm-1"), &obj, &p, &opts).unwrap().guest_address,
            None
        );
        p.insert("runtime.powerState".into(), t("poweredOff"));
        let v = vm(VmId::from("vm-1"), &obj, &p, &opts).unwrap();
        assert_eq!((v.power, v.cpu_usage_mhz), (PowerState::PoweredOff, None));
        p.insert("config.template".into(), Value::Bool(true));
        assert!(vm(VmId::from("vm-1"), &obj, &p, &opts).is_none());
    }

    #[test]
    fn unset_properties_are_neutral() {
        let obj = MoRef::new("VirtualMachine", "vm-9");
        let v = vm(VmId::from("vm-9"), &obj, &Props::new(), &Options::default()).unwrap();
        assert_eq!(v.name, "vm-9");
        assert_eq!(v.heartbeat, GuestHeartbeat::Gray, "no tools: no evidence");
        assert_eq!(v.power, PowerState::PoweredOff);
        assert_eq!((v.host, v.datastore), (None, None));
        assert_eq!(v.demand, Resources::ZERO);
        assert_eq!(heartbeat(Some("yellow")), GuestHeartbeat::Yellow);
        assert_eq!(heartbeat(Some("green")), GuestHeartbeat::Green);
        assert_eq!(power(Some("suspended")), PowerState::Suspended);
    }

    #[test]
    fn backup_clones_are_recognised_by_name_and_never_protected() {
        let name = backup_name("web-1-1700000000", &VmId::from("vm-42"));
        assert_eq!(name, "web-1-1700000000 (am backup of vm-42)");
        assert_eq!(backup_source(&name), Some(VmId::from("vm-42")));
        assert_eq!(backup_source("web-1"), None);
        assert_eq!(backup_source("x (am backup of )"), None);
        let mut p = vm_props();
        p.insert("name".into(), t(&name));
        let obj = MoRef::new("VirtualMachine", "vm-77");
        let v = vm(VmId::from("vm-77"), &obj, &p, &Options::default()).unwrap();
        assert_eq!(v.backup_of, Some(VmId::from("vm-42")));
        assert_eq!(v.priority, RestartPriority::Disabled);
        assert!(!v.is_protected());
        // A clone restored as the VM itself (same id) is no backup of itself.
        let v = vm(VmId::from("vm-42"), &obj, &p, &Options::default()).unwrap();
        assert_eq!(v.backup_of, None);
    }

    #[test]
    fn datastores_map_capacity_and_mounts() {
        let mount = |h: &str| {
            Value::Data(vsphere_soap::DataObject {
                type_name: Some("DatastoreHostMount".into()),
                fields: vec![("key".into(), r("HostSystem", h))],
            })
        };
        let p = props(&[
            ("name", t("ds1")),
            ("summary.capacity", Value::Int(10 * MIB * 1024)),
            ("summary.freeSpace", Value::Int(3 * MIB)),
            ("host", Value::Array(vec![mount("host-1"), mount("host-2")])),
        ]);
        let d = datastore(&MoRef::new("Datastore", "datastore-5"), &p);
        assert_eq!(d.id, DatastoreId::from("datastore-5"));
        assert_eq!((d.capacity_mib, d.free_mib), (10_240, 3));
        assert_eq!(d.hosts, vec![HostId::from("host-1"), HostId::from("host-2")]);
    }

    #[test]
    fn snapshot_trees_flatten_oldest_first() {
        let xml = br#"<val xmlns:xsi="x" xsi:type="VirtualMachineSnapshotInfo">
          <currentSnapshot type="VirtualMachineSnapshot">snapshot-3</currentSnapshot>
          <rootSnapshotList><snapshot type="VirtualMachineSnapshot">snapshot-1</snapshot><vm type="VirtualMachine">vm-42</vm><name>a</name><createTime>2024-01-01T00:00:10Z</createTime><id>1</id><state>poweredOff</state><quiesced>false</quiesced>
            <childSnapshotList><snapshot type="VirtualMachineSnapshot">snapshot-3</snapshot><vm type="VirtualMachine">vm-42</vm><name>c</name><createTime>2024-01-01T00:00:30Z</createTime><id>3</id><state>poweredOff</state><quiesced>false</quiesced></childSnapshotList>
          </rootSnapshotList>
          <rootSnapshotList><snapshot type="VirtualMachineSnapshot">snapshot-2</snapshot><vm type="VirtualMachine">vm-42</vm><name>b</name><createTime>2024-01-01T00:00:20Z</createTime><id>2</id><state>poweredOff</state><quiesced>false</quiesced></rootSnapshotList>
        </val>"#;
        let doc = vsphere_soap::xml::parse(xml).unwrap();
        let p = props(&[("snapshot", doc.root)]);
        let s = snapshots(&VmId::from("vm-1"), &p, &time());
        let names: Vec<(&str, u64)> = s
            .iter()
            .map(|s| (s.name.as_str(), s.created.as_millis()))
            .collect();
        assert_eq!(names, vec![("a", 110_000), ("b", 120_000), ("c", 130_000)]);
        assert!(s.iter().all(|s| s.vm == VmId::from("vm-1")));
        assert_eq!(s[2].id, SnapshotId::from("snapshot-3"));
        assert!(snapshots(&VmId::from("vm-1"), &Props::new(), &time()).is_empty());
        // Before the run: time zero.
        assert_eq!(time().at_text("2023-01-01T00:00:00Z"), Time::ZERO);
    }

    /// The `returnval`s of a response recorded from vcsim (vsphere-soap's fixtures).
    fn recorded(method: &str, body: &[u8]) -> Vec<Value> {
        vsphere_soap::decode_response(method, 200, body).unwrap()
    }

    /// The objects of a recorded `RetrievePropertiesEx` answer, as property maps.
    fn recorded_objects(body: &[u8]) -> Vec<(MoRef, Props)> {
        let page = recorded("RetrievePropertiesEx", body).remove(0);
        let Value::Data(page) = page else {
            panic!("no page")
        };
        page.get_all("objects")
            .map(|o| {
                let obj = o.field("obj").and_then(Value::as_moref).unwrap().clone();
                let props = o
                    .as_data()
                    .unwrap()
                    .get_all("propSet")
                    .map(|p| {
                        let name = p.field("name").and_then(Value::as_str).unwrap().to_owned();
                        (name, p.field("val").unwrap().clone())
                    })
                    .collect();
                (obj, props)
            })
            .collect()
    }

    #[test]
    fn recorded_hosts_vms_and_snapshots_map() {
        let objects = recorded_objects(include_bytes!(
            "../../vsphere-soap/tests/fixtures/RetrievePropertiesEx-1.xml"
        ));
        let opts = Options::default();
        let (h, hp) = objects.iter().find(|(o, _)| o.kind == "HostSystem").unwrap();
        let host = host(h, hp, &opts);
        assert_eq!(host.capacity, Resources::new(2 * 2294, 4095));
        assert_eq!(host.connection, ConnectionState::Connected);
        assert!(!host.maintenance);
        let (v, vp) = objects.iter().find(|(o, _)| o.value == "vm-36").unwrap();
        let m = vm(VmId::from("vm-36"), v, vp, &opts).unwrap();
        assert_eq!(m.name, "DC0_C0_RP0_VM0");
        assert_eq!(m.power, PowerState::PoweredOn);
        assert_eq!(m.host, Some(HostId::from("host-31")));
        assert_eq!(m.demand, Resources::new(0, 32));
        assert_eq!(m.heartbeat, GuestHeartbeat::Gray, "vcsim sets no heartbeat");
        assert_eq!(m.cpu_usage_mhz, None, "vcsim's zero quick stats are not live");
        assert!(m.datastore.is_some());
        assert!(vmx_path(vp).is_some_and(|p| p.ends_with(".vmx")));

        let objects = recorded_objects(include_bytes!(
            "../../vsphere-soap/tests/fixtures/RetrievePropertiesEx-2.xml"
        ));
        let s = snapshots(&VmId::from("vm-36"), &objects[0].1, &time());
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].name, "s1");
        assert!(s[0].id.as_str().starts_with("snapshot-"));
    }

    #[test]
    fn recorded_events_map() {
        let values = recorded(
            "QueryEvents",
            include_bytes!("../../vsphere-soap/tests/fixtures/QueryEvents-1.xml"),
        );
        let events: Vec<Event> = values
            .into_iter()
            .map(|v| Event::from_value(v).unwrap())
            .collect();
        let id = |r: &MoRef| VmId::new(r.value.clone());
        let mapped: Vec<ClusterEvent> = events.iter().filter_map(|e| event(e, &id, &time())).collect();
        assert!(
            mapped.iter().any(
                |e| matches!(&e.kind, EventKind::VmPoweredOn { vm, .. } if vm.as_str().starts_with("vm-"))
            ),
            "{mapped:?}"
        );
        // Session and creation events are not the supervisor's business.
        assert!(mapped.len() < events.len());
        assert!(
            !mapped
                .iter()
                .any(|e| matches!(&e.kind, EventKind::Other { message } if message.contains("logged out")))
        );
    }

    fn ev(ty: &str, user: &str, vm: Option<&str>, host: Option<&str>) -> Event {
        let arg = |kind: &str, field: &str, id: &str| {
            Value::Data(vsphere_soap::DataObject {
                type_name: None,
                fields: vec![("name".into(), t(id)), (field.into(), r(kind, id))],
            })
        };
        let mut fields = vec![
            ("key".into(), Value::Int(7)),
            ("chainId".into(), Value::Int(7)),
            ("createdTime".into(), t("2024-01-01T00:00:05Z")),
            ("userName".into(), t(user)),
            ("fullFormattedMessage".into(), t("something happened")),
        ];
        if let Some(v) = vm {
            fields.push(("vm".into(), arg("VirtualMachine", "vm", v)));
        }
        if let Some(h) = host {
            fields.push(("host".into(), arg("HostSystem", "host", h)));
        }
        Event::from_value(Value::Data(vsphere_soap::DataObject {
            type_name: Some(ty.into()),
            fields,
        }))
        .unwrap()
    }

    #[test]
    fn events_name_the_user_and_the_vm_by_its_id() {
        let alias = |r: &MoRef| {
            if r.value == "vm-57" {
                VmId::from("vm-1")
            } else {
                VmId::new(r.value.clone())
            }
        };
        let e = event(
            &ev("VmPoweredOffEvent", "alice", Some("vm-57"), Some("host-1")),
            &alias,
            &time(),
        )
        .unwrap();
        assert_eq!(e.at, Time::from_secs(105));
        assert_eq!(
            e.kind,
            EventKind::VmPoweredOff {
                vm: "vm-1".into(),
                user: Some("alice".into())
            }
        );
        let e = event(&ev("VmPoweredOffEvent", "", Some("vm-2"), None), &alias, &time()).unwrap();
        assert_eq!(
            e.kind,
            EventKind::VmPoweredOff {
                vm: "vm-2".into(),
                user: None
            }
        );
        let e = event(&ev("VmPoweredOnEvent", "am", Some("vm-2"), None), &alias, &time()).unwrap();
        assert!(matches!(e.kind, EventKind::VmPoweredOn { user: Some(u), .. } if u == "am"));
        let e = event(
            &ev("HostConnectionLostEvent", "", None, Some("host-9")),
            &alias,
            &time(),
        )
        .unwrap();
        assert_eq!(
            e.kind,
            EventKind::HostConnectionLost {
                host: "host-9".into()
            }
        );
        let e = event(
            &ev("HostConnectedEvent", "", None, Some("host-9")),
            &alias,
            &time(),
        )
        .unwrap();
        assert_eq!(
            e.kind,
            EventKind::Other {
                message: "HostConnectedEvent: something happened".into()
            }
        );
        assert!(event(&ev("UserLoginSessionEvent", "bob", None, None), &alias, &time()).is_none());
        assert!(event(&ev("VmPoweredOffEvent", "bob", None, None), &alias, &time()).is_none());
    }
}
