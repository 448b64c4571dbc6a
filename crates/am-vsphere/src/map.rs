//! Pure mappings from vim25 properties and events to `am-core` types. No I/O: unit tests feed them
//! property maps and events as vCenter (and vcsim) send them.

use crate::options::{GuestAddress, HostAddress, MemoryModel, Options, glob};
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
    "overallStatus",
    "summary.hardware.cpuMhz",
    "summary.hardware.numCpuCores",
    "summary.hardware.memorySize",
    "config.network.vnic",
    "datastore",
];

/// Properties of the folders and resource pools VMs are in (their names decide priorities).
pub(crate) const NAMED_PROPS: &[&str] = &["name"];

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
    "summary.config.memoryReservation",
    "config.instanceUuid",
    "config.annotation",
    "customValue",
    "guest.ipAddress",
    "guest.net",
    "guestHeartbeatStatus",
    "summary.quickStats.overallCpuUsage",
    "summary.quickStats.uptimeSeconds",
    "summary.quickStats.guestMemoryUsage",
    "summary.quickStats.consumedOverheadMemory",
    "datastore",
    "summary.storage.committed",
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

/// A `HostSystem`: capacity is cores x MHz per core and the physical memory (times the memory
/// overcommit ratio); its management address as [`Options::targets`] says.
pub(crate) fn host(id: &MoRef, p: &Props, opts: &Options) -> Host {
    let name = text(p, "name").unwrap_or(&id.value).to_owned();
    let cores = non_negative(int(p, "summary.hardware.numCpuCores"));
    let mhz = non_negative(int(p, "summary.hardware.cpuMhz"));
    let mem = non_negative(int(p, "summary.hardware.memorySize").map(|b| b / MIB));
    let ratio = opts.capacity.memory_overcommit.clamp(1.0, 100.0);
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let mem = (mem as f64 * ratio) as u64;
    let t = &opts.targets.hosts;
    let ip = match t.address {
        HostAddress::Vmk => management_ip(p),
        HostAddress::Name => name.parse::<IpAddr>().ok(),
        HostAddress::None => None,
    };
    let mgmt_address = t
        .addresses
        .get(&name)
        .cloned()
        .or_else(|| ip.and_then(|ip| probe_address(ip, t.port)));
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
        // Red while connected: a red alarm on it (a disconnected host is red for that alone).
        health_alarm: (text(p, "overallStatus") == Some("red")
            && text(p, "runtime.connectionState") == Some("connected"))
        .then(|| "vCenter shows its overall status red (a red alarm, e.g. hardware health)".to_owned()),
    }
}

/// An address as the prober reads it: the IP for ICMP, `tcp:IP:PORT` for a TCP connect. An IPv6
/// address is not probed by ICMP (the prober has no ICMPv6): `None`.
pub(crate) fn probe_address(ip: IpAddr, port: u16) -> Option<String> {
    match (port, ip) {
        (0, IpAddr::V6(_)) => None,
        (0, ip) => Some(ip.to_string()),
        (port, IpAddr::V6(ip)) => Some(format!("tcp:[{ip}]:{port}")),
        (port, ip) => Some(format!("tcp:{ip}:{port}")),
    }
}

/// The management VMkernel address of a host: the IPv4 address of the vnic on a management port
/// group, else of `vmk0`, else of the first vnic with one.
pub(crate) fn management_ip(p: &Props) -> Option<IpAddr> {
    let vnics = get(p, "config.network.vnic")?.items();
    let ip_of = |v: &Value| {
        v.path("spec.ip.ipAddress")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<IpAddr>().ok())
            .filter(|ip| !ip.is_unspecified())
    };
    let management = |v: &&Value| {
        v.field("portgroup")
            .and_then(Value::as_str)
            .is_some_and(|g| g.to_ascii_lowercase().contains("management"))
    };
    let vmk0 = |v: &&Value| v.field("device").and_then(Value::as_str) == Some("vmk0");
    vnics
        .iter()
        .filter(management)
        .find_map(ip_of)
        .or_else(|| vnics.iter().filter(vmk0).find_map(ip_of))
        .or_else(|| vnics.iter().find_map(ip_of))
}

/// The datastores a host mounts (its `datastore` list).
pub(crate) fn host_datastores(p: &Props) -> Vec<DatastoreId> {
    morefs(p, "datastore")
        .into_iter()
        .map(|d| DatastoreId::new(d.value.clone()))
        .collect()
}

/// What the VM mapping reads besides the VM's own properties: names of folders and pools, and
/// the custom attribute definitions (key to name).
pub(crate) struct VmContext<'a> {
    /// The options.
    pub opts: &'a Options,
    /// The name of a folder or resource pool.
    pub name_of: &'a dyn Fn(&MoRef) -> Option<String>,
    /// Custom attribute names by key.
    pub fields: &'a BTreeMap<i64, String>,
}

/// A VM's custom attribute values by attribute name.
pub(crate) fn custom_values(p: &Props, fields: &BTreeMap<i64, String>) -> BTreeMap<String, String> {
    get(p, "customValue")
        .map(Value::items)
        .unwrap_or_default()
        .iter()
        .filter_map(|v| {
            let key = v.field("key").and_then(Value::as_i64)?;
            let name = fields.get(&key)?;
            let value = v.field("value").and_then(Value::as_str).unwrap_or_default();
            Some((name.clone(), value.to_owned()))
        })
        .collect()
}

/// The guest addresses VMware Tools reports, IPv4 first, link-local ones left out.
pub(crate) fn tools_addresses(p: &Props) -> Vec<IpAddr> {
    let mut found: Vec<IpAddr> = Vec::new();
    let mut add = |s: &str| {
        if let Ok(ip) = s.trim().parse::<IpAddr>() {
            let link_local = match ip {
                IpAddr::V4(v4) => v4.is_link_local() || v4.is_unspecified(),
                IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80 || v6.is_unspecified(),
            };
            if !link_local && !found.contains(&ip) {
                found.push(ip);
            }
        }
    };
    if let Some(ip) = text(p, "guest.ipAddress") {
        add(ip);
    }
    for nic in get(p, "guest.net").map(Value::items).unwrap_or_default() {
        for a in nic.field("ipAddress").map(Value::items).unwrap_or_default() {
            if let Some(s) = a.as_str() {
                add(s);
            }
        }
    }
    found.sort_by_key(|ip| !ip.is_ipv4());
    found
}

/// `off`, `no`, `false` or `0`.
fn is_off(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "off" | "no" | "false" | "0"
    )
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
/// Demand: CPU is the reservation (MHz); memory as [`Options::capacity`] says. CPU usage is
/// reported only while quick stats are live (`uptimeSeconds` > 0): vCenter leaves them at zero
/// for a VM whose host does not report, and zero would read as a hang. Priority: the custom
/// attribute, else the first matching rule, else the default. The guest address: from Tools, an
/// attribute or the annotation, unless the VM or its folder is excluded from probing.
pub(crate) fn vm(id: VmId, obj: &MoRef, p: &Props, cx: &VmContext<'_>) -> Option<Vm> {
    if is_template(p) {
        return None;
    }
    let opts = cx.opts;
    let name = text(p, "name").unwrap_or(&obj.value).to_owned();
    let backup_of = backup_source(&name).filter(|source| *source != id);
    let folder = moref(p, "parent").and_then(|f| (cx.name_of)(f));
    let pool = moref(p, "resourcePool").and_then(|r| (cx.name_of)(r));
    let attrs = custom_values(p, cx.fields);
    let attr = |key: &str| (!key.is_empty()).then(|| attrs.get(key)).flatten();
    let priority = if backup_of.is_some() {
        RestartPriority::Disabled
    } else {
        attr(&opts.attributes.priority)
            .and_then(|v| parse_priority(v))
            .unwrap_or_else(|| opts.priorities.of(&name, folder.as_deref(), pool.as_deref()))
    };
    let power = power(text(p, "runtime.powerState"));
    let live_stats = int(p, "summary.quickStats.uptimeSeconds").is_some_and(|u| u > 0);
    let cpu_usage_mhz = (power == PowerState::PoweredOn && live_stats)
        .then(|| int(p, "summary.quickStats.overallCpuUsage"))
        .flatten()
        .and_then(|v| u64::try_from(v).ok());
    let g = &opts.targets.guests;
    let excluded = g.exclude_vms.iter().any(|pat| glob(pat, &name))
        || folder.as_ref().is_some_and(|f| g.exclude_folders.contains(f))
        || attr(&opts.attributes.probe).is_some_and(|v| is_off(v));
    let ip = match g.address {
        _ if excluded || backup_of.is_some() => None,
        GuestAddress::Tools => tools_addresses(p)
            .into_iter()
            .find(|ip| g.port != 0 || ip.is_ipv4()),
        GuestAddress::Attribute => attr(&opts.attributes.address).and_then(|a| a.trim().parse().ok()),
        GuestAddress::Annotation => text(p, "config.annotation").and_then(annotation_address),
        GuestAddress::None => None,
    };
    let guest_address = ip.and_then(|ip| probe_address(ip, g.port));
    let reservation = non_negative(int(p, "summary.config.memoryReservation"));
    let memory = match opts.capacity.memory {
        MemoryModel::Configured => non_negative(int(p, "summary.config.memorySizeMB")),
        MemoryModel::Reserved => {
            reservation + non_negative(int(p, "summary.quickStats.consumedOverheadMemory"))
        }
        MemoryModel::Active => non_negative(int(p, "summary.quickStats.guestMemoryUsage")).max(reservation),
    };
    Some(Vm {
        id,
        name,
        demand: Resources::new(non_negative(int(p, "summary.config.cpuReservation")), memory),
        power,
        host: moref(p, "runtime.host").map(|h| HostId::new(h.value.clone())),
        priority,
        affinity_group: None,
        anti_affinity_group: None,
        guest_address,
        heartbeat: heartbeat(text(p, "guestHeartbeatStatus")),
        cpu_usage_mhz,
        datastore: crate::storage::datastore_of(p).map(|d| DatastoreId::new(d.value)),
        backup_of,
        config_path: vmx_path(p).map(str::to_owned),
        instance_uuid: text(p, "config.instanceUuid").map(str::to_owned),
        backup: !attr(&opts.attributes.backup).is_some_and(|v| is_off(v)),
        storage_mib: int(p, "summary.storage.committed").map(|b| non_negative(Some(b / MIB))),
    })
}

/// `highest`, `high`, `medium`, `low`, `lowest`, `disabled` (any case).
pub(crate) fn parse_priority(v: &str) -> Option<RestartPriority> {
    Some(match v.trim().to_ascii_lowercase().as_str() {
        "highest" => RestartPriority::Highest,
        "high" => RestartPriority::High,
        "medium" => RestartPriority::Medium,
        "low" => RestartPriority::Low,
        "lowest" => RestartPriority::Lowest,
        "disabled" | "off" | "none" => RestartPriority::Disabled,
        _ => return None,
    })
}

/// The address of a line `am.address=IP` (or `am.address: IP`) in an annotation.
pub(crate) fn annotation_address(notes: &str) -> Option<IpAddr> {
    notes.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("am.address")?;
        rest.trim_start_matches([' ', '=', ':']).trim().parse().ok()
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

    /// A mapping context with no folders, pools or attribute definitions.
    fn plain(opts: &Options) -> VmContext<'_> {
        static NO_FIELDS: std::sync::OnceLock<BTreeMap<i64, String>> = std::sync::OnceLock::new();
        VmContext {
            opts,
            name_of: &|_| None,
            fields: NO_FIELDS.get_or_init(BTreeMap::new),
        }
    }

    fn vnic(device: &str, portgroup: &str, ip: &str) -> Value {
        let ip = Value::Data(vsphere_soap::DataObject {
            type_name: Some("HostIpConfig".into()),
            fields: vec![("ipAddress".into(), t(ip))],
        });
        let spec = Value::Data(vsphere_soap::DataObject {
            type_name: None,
            fields: vec![("ip".into(), ip)],
        });
        Value::Data(vsphere_soap::DataObject {
            type_name: Some("HostVirtualNic".into()),
            fields: vec![
                ("device".into(), t(device)),
                ("portgroup".into(), t(portgroup)),
                ("spec".into(), spec),
            ],
        })
    }

    #[test]
    fn hosts_map_capacity_connection_and_addresses() {
        let mut p = props(&[
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
        assert_eq!(h.mgmt_address, None, "no vmk reported: nothing to probe");
        assert_eq!(h.storage_heartbeat, None);
        // The management VMkernel address, by TCP to 443 by default.
        p.insert(
            "config.network.vnic".into(),
            Value::Array(vec![
                vnic("vmk1", "vMotion", "10.0.9.7"),
                vnic("vmk0", "Management Network", "10.0.1.7"),
            ]),
        );
        assert_eq!(
            host(&id, &p, &opts).mgmt_address.as_deref(),
            Some("tcp:10.0.1.7:443")
        );
        opts.targets.hosts.port = 0;
        assert_eq!(
            host(&id, &p, &opts).mgmt_address.as_deref(),
            Some("10.0.1.7"),
            "ICMP"
        );
        opts.targets.hosts.address = HostAddress::Name;
        assert_eq!(host(&id, &p, &opts).mgmt_address.as_deref(), Some("10.0.0.7"));
        opts.targets.hosts.address = HostAddress::None;
        assert_eq!(host(&id, &p, &opts).mgmt_address, None);
        opts.targets
            .hosts
            .addresses
            .insert("10.0.0.7".into(), "tcp:10.0.1.7:902".into());
        assert_eq!(
            host(&id, &p, &opts).mgmt_address.as_deref(),
            Some("tcp:10.0.1.7:902")
        );
        opts.capacity.memory_overcommit = 1.5;
        assert_eq!(host(&id, &p, &opts).capacity.mem_mib, 6142);
        assert_eq!(connection(Some("connected")), ConnectionState::Connected);
        assert_eq!(connection(Some("disconnected")), ConnectionState::Disconnected);
        assert_eq!(connection(None), ConnectionState::NotResponding);
    }

    fn vm_props() -> Props {
        props(&[
            ("name", t("web-1")),
            ("parent", r("Folder", "group-v4")),
            ("resourcePool", r("ResourcePool", "resgroup-8")),
            ("runtime.powerState", t("poweredOn")),
            ("runtime.host", r("HostSystem", "host-21")),
            ("summary.config.memorySizeMB", Value::Int(2048)),
            ("summary.config.memoryReservation", Value::Int(512)),
            ("summary.quickStats.consumedOverheadMemory", Value::Int(40)),
            ("summary.quickStats.guestMemoryUsage", Value::Int(900)),
            ("summary.config.numCpu", Value::Int(2)),
            ("summary.config.cpuReservation", Value::Int(500)),
            ("summary.config.vmPathName", t("[ds1] web-1/web-1.vmx")),
            ("config.instanceUuid", t("5012-abcd")),
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
        let v = vm(VmId::from("vm-42"), &obj, &p, &plain(&opts)).unwrap();
        assert_eq!(v.name, "web-1");
        assert_eq!(
            v.demand,
            Resources::new(500, 552),
            "reservation + overhead by default"
        );
        assert_eq!(v.power, PowerState::PoweredOn);
        assert_eq!(v.host, Some(HostId::from("host-21")));
        assert_eq!(v.priority, RestartPriority::Medium);
        assert_eq!(v.heartbeat, GuestHeartbeat::Red);
        assert_eq!(
            v.guest_address.as_deref(),
            Some("192.0.2.10"),
            "Tools' address, ICMP"
        );
        assert_eq!(v.cpu_usage_mhz, None, "stats without uptime are not live");
        assert_eq!(v.datastore, Some(DatastoreId::from("datastore-1")));
        assert_eq!(v.backup_of, None);
        assert_eq!(v.config_path.as_deref(), Some("[ds1] web-1/web-1.vmx"));
        assert_eq!(v.instance_uuid.as_deref(), Some("5012-abcd"));
        assert!(v.is_protected() && v.backup);
        assert_eq!(vmx_path(&p), Some("[ds1] web-1/web-1.vmx"));

        opts.capacity.memory = MemoryModel::Configured;
        opts.targets.guests.port = 22;
        opts.priorities.rules.push(crate::PriorityRule {
            vms: Some("web-*".into()),
            folder: None,
            pool: None,
            priority: RestartPriority::High,
        });
        let mut p = p;
        p.insert("summary.quickStats.uptimeSeconds".into(), Value::Int(300));
        p.insert("summary.quickStats.overallCpuUsage".into(), Value::Int(0));
        let v = vm(VmId::from("vm-1"), &obj, &p, &plain(&opts)).unwrap();
        assert_eq!(v.id, VmId::from("vm-1"), "the id given, not the moref");
        assert_eq!(v.guest_address.as_deref(), Some("tcp:192.0.2.10:22"));
        assert_eq!(v.cpu_usage_mhz, Some(0), "live stats: zero is zero");
        assert_eq!(v.priority, RestartPriority::High);
        assert_eq!(v.demand.mem_mib, 2048, "configured size");
        opts.capacity.memory = MemoryModel::Active;
        assert_eq!(
            vm(VmId::from("vm-1"), &obj, &p, &plain(&opts))
                .unwrap()
                .demand
                .mem_mib,
            900
        );

        p.insert("guest.ipAddress".into(), t("fe80::1"));
        assert_eq!(
            vm(VmId::from("vm-1"), &obj, &p, &plain(&opts))
                .unwrap()
                .guest_address,
            None,
            "link-local addresses are not probed"
        );
        opts.targets.guests.exclude_vms.push("web-*".into());
        p.insert("guest.ipAddress".into(), t("192.0.2.10"));
        assert_eq!(
            vm(VmId::from("vm-1"), &obj, &p, &plain(&opts))
                .unwrap()
                .guest_address,
            None,
            "excluded"
        );
        p.insert("runtime.powerState".into(), t("poweredOff"));
        let v = vm(VmId::from("vm-1"), &obj, &p, &plain(&opts)).unwrap();
        assert_eq!((v.power, v.cpu_usage_mhz), (PowerState::PoweredOff, None));
        p.insert("config.template".into(), Value::Bool(true));
        assert!(vm(VmId::from("vm-1"), &obj, &p, &plain(&opts)).is_none());
    }

    fn custom(key: i64, value: &str) -> Value {
        Value::Data(vsphere_soap::DataObject {
            type_name: Some("CustomFieldStringValue".into()),
            fields: vec![("key".into(), Value::Int(key)), ("value".into(), t(value))],
        })
    }

    #[test]
    fn folders_pools_and_custom_attributes_set_policy() {
        let obj = MoRef::new("VirtualMachine", "vm-42");
        let mut opts = Options::default();
        opts.priorities.rules = vec![
            crate::PriorityRule {
                vms: None,
                folder: Some("prod".into()),
                pool: None,
                priority: RestartPriority::Highest,
            },
            crate::PriorityRule {
                vms: None,
                folder: None,
                pool: Some("batch".into()),
                priority: RestartPriority::Low,
            },
        ];
        opts.targets.guests.exclude_folders.push("lab".into());
        let fields: BTreeMap<i64, String> = [
            (101, "am.priority".to_owned()),
            (102, "am.backup".to_owned()),
            (103, "am.address".to_owned()),
        ]
        .into();
        let mut p = vm_props();
        let folder = std::cell::Cell::new("prod");
        let name_of = |m: &MoRef| match m.kind.as_str() {
            "Folder" => Some(folder.get().to_owned()),
            _ => Some("batch".to_owned()),
        };
        let cx = VmContext {
            opts: &opts,
            name_of: &name_of,
            fields: &fields,
        };
        assert_eq!(
            vm(VmId::from("vm-1"), &obj, &p, &cx).unwrap().priority,
            RestartPriority::Highest
        );
        folder.set("test");
        assert_eq!(
            vm(VmId::from("vm-1"), &obj, &p, &cx).unwrap().priority,
            RestartPriority::Low
        );
        folder.set("lab");
        assert_eq!(
            vm(VmId::from("vm-1"), &obj, &p, &cx).unwrap().guest_address,
            None,
            "lab is not probed"
        );
        p.insert(
            "customValue".into(),
            Value::Array(vec![
                custom(101, "disabled"),
                custom(102, "off"),
                custom(103, "198.51.100.4"),
            ]),
        );
        let v = vm(VmId::from("vm-1"), &obj, &p, &cx).unwrap();
        assert_eq!(v.priority, RestartPriority::Disabled, "the attribute wins");
        assert!(!v.backup);
        folder.set("prod");
        let mut opts2 = opts.clone();
        opts2.targets.guests.address = GuestAddress::Attribute;
        let cx = VmContext {
            opts: &opts2,
            name_of: &name_of,
            fields: &fields,
        };
        assert_eq!(
            vm(VmId::from("vm-1"), &obj, &p, &cx)
                .unwrap()
                .guest_address
                .as_deref(),
            Some("198.51.100.4")
        );
        assert_eq!(
            annotation_address("owner: ops\nam.address = 10.1.2.3\n"),
            Some("10.1.2.3".parse().unwrap())
        );
    }

    #[test]
    fn tools_addresses_put_ipv4_first() {
        let nic = Value::Data(vsphere_soap::DataObject {
            type_name: Some("GuestNicInfo".into()),
            fields: vec![(
                "ipAddress".into(),
                Value::Array(vec![t("2001:db8::5"), t("169.254.1.1"), t("10.0.0.5")]),
            )],
        });
        let p = props(&[("guest.net", Value::Array(vec![nic]))]);
        let got: Vec<String> = tools_addresses(&p).iter().map(ToString::to_string).collect();
        assert_eq!(got, ["10.0.0.5", "2001:db8::5"]);
    }

    #[test]
    fn unset_properties_are_neutral() {
        let obj = MoRef::new("VirtualMachine", "vm-9");
        let opts = Options::default();
        let v = vm(VmId::from("vm-9"), &obj, &Props::new(), &plain(&opts)).unwrap();
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
        let v = vm(VmId::from("vm-77"), &obj, &p, &plain(&Options::default())).unwrap();
        assert_eq!(v.backup_of, Some(VmId::from("vm-42")));
        assert_eq!(v.priority, RestartPriority::Disabled);
        assert!(!v.is_protected());
        // A clone restored as the VM itself (same id) is no backup of itself.
        let v = vm(VmId::from("vm-42"), &obj, &p, &plain(&Options::default())).unwrap();
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
        let m = vm(VmId::from("vm-36"), v, vp, &plain(&opts)).unwrap();
        assert_eq!(m.name, "DC0_C0_RP0_VM0");
        assert_eq!(m.power, PowerState::PoweredOn);
        assert_eq!(m.host, Some(HostId::from("host-31")));
        assert_eq!(
            m.demand,
            Resources::ZERO,
            "no reservation: as vSphere HA counts it"
        );
        let configured = Options {
            capacity: crate::Capacity {
                memory: MemoryModel::Configured,
                memory_overcommit: 1.0,
            },
            ..Options::default()
        };
        let m2 = vm(VmId::from("vm-36"), v, vp, &plain(&configured)).unwrap();
        assert_eq!(m2.demand, Resources::new(0, 32), "the configured size");
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
