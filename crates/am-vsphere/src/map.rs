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

pub(crate) use crate::props::Props;

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
mod tests;
