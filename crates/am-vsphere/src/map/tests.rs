//! The mapping of vCenter's properties to the model, on properties as vCenter sends them.

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
        "../../../vsphere-soap/tests/fixtures/RetrievePropertiesEx-1.xml"
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
        "../../../vsphere-soap/tests/fixtures/RetrievePropertiesEx-2.xml"
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
        include_bytes!("../../../vsphere-soap/tests/fixtures/QueryEvents-1.xml"),
    );
    let events: Vec<Event> = values
        .into_iter()
        .map(|v| Event::from_value(v).unwrap())
        .collect();
    let id = |r: &MoRef| VmId::new(r.value.clone());
    let mapped: Vec<ClusterEvent> = events.iter().filter_map(|e| event(e, &id, &time())).collect();
    assert!(
        mapped
            .iter()
            .any(|e| matches!(&e.kind, EventKind::VmPoweredOn { vm, .. } if vm.as_str().starts_with("vm-"))),
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
