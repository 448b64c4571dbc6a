//! The mirror driven by hand-made updates.

use super::*;
use crate::shared::Orphan;
use am_core::{ConnectionState, PowerState};
use std::time::{Duration, UNIX_EPOCH};
use vsphere_soap::{PropertyChange, Value};

fn t(s: &str) -> Value {
    Value::Text(s.into())
}

fn r(kind: &str, v: &str) -> Value {
    Value::MoRef(MoRef::new(kind, v))
}

fn upd(kind: ObjectUpdateKind, obj: MoRef, changes: &[(&str, Option<Value>)]) -> ObjectUpdate {
    ObjectUpdate {
        kind,
        obj,
        changes: changes
            .iter()
            .map(|(n, v)| PropertyChange {
                name: (*n).to_owned(),
                op: PropertyChangeOp::Assign,
                val: v.clone(),
            })
            .collect(),
        missing: Vec::new(),
    }
}

fn host(v: &str) -> MoRef {
    MoRef::new("HostSystem", v)
}

fn vm(v: &str) -> MoRef {
    MoRef::new("VirtualMachine", v)
}

fn enter_host(id: &str) -> ObjectUpdate {
    upd(
        ObjectUpdateKind::Enter,
        host(id),
        &[
            ("name", Some(t(&format!("esx-{id}")))),
            ("runtime.connectionState", Some(t("connected"))),
            ("summary.hardware.cpuMhz", Some(Value::Int(2000))),
            ("summary.hardware.numCpuCores", Some(Value::Int(4))),
            ("summary.hardware.memorySize", Some(Value::Int(8 << 30))),
        ],
    )
}

fn enter_vm(id: &str, on: &str, vmx: &str) -> ObjectUpdate {
    upd(
        ObjectUpdateKind::Enter,
        vm(id),
        &[
            ("name", Some(t(&format!("name-{id}")))),
            ("runtime.powerState", Some(t("poweredOn"))),
            ("runtime.host", Some(r("HostSystem", on))),
            ("summary.config.memorySizeMB", Some(Value::Int(1024))),
            ("summary.config.vmPathName", Some(t(vmx))),
        ],
    )
}

struct Env {
    opts: Options,
    time: TimeMap,
    shared: Mutex<Shared>,
}

impl Env {
    fn new() -> Env {
        Env {
            opts: Options::default(),
            time: TimeMap::new(
                UNIX_EPOCH + Duration::from_secs(1_700_000_000),
                am_core::Time::ZERO,
            ),
            shared: Mutex::new(Shared::default()),
        }
    }

    fn cx(&self) -> Cx<'_> {
        Cx {
            opts: &self.opts,
            time: &self.time,
            shared: &self.shared,
        }
    }
}

/// Marks `id` as unregistered by the manager (as the hypervisor does before it registers the
/// VM anew): shown by `moref` until then, with its `.vmx` and name, on host `on`.
fn unregistered(env: &Env, id: &str, moref: &str, vmx: &str, name: &str, on: Option<&str>, keep_host: bool) {
    env.shared.lock().unwrap().add_orphan(
        &id.into(),
        Orphan {
            moref: moref.into(),
            vmx: vmx.into(),
            name: name.into(),
            folder: None,
            host: on.map(host),
            keep_host,
            ghost: None,
        },
    );
}

fn names(d: &[InventoryDelta]) -> Vec<String> {
    d.iter()
        .map(|d| match d {
            InventoryDelta::HostUpsert(h) => format!("host+ {}", h.id),
            InventoryDelta::HostRemoved(h) => format!("host- {h}"),
            InventoryDelta::VmUpsert(v) => {
                format!("vm+ {} on {}", v.id, v.host.as_ref().map_or("-", |h| h.as_str()))
            }
            InventoryDelta::VmRemoved(v) => format!("vm- {v}"),
            InventoryDelta::DatastoreUpsert(d) => format!("ds+ {}", d.id),
            InventoryDelta::Snapshots { vm, snapshots } => format!("snap {vm} {}", snapshots.len()),
        })
        .collect()
}

/// A resync as the source makes it: the old mirror `m` thinned, the new one loaded from
/// `updates` with it as the previous one, and the difference. Checks that the thinned mirror
/// tells what the whole one does.
fn resync(m: &Mirror, updates: Vec<ObjectUpdate>, cx: &Cx<'_>) -> (Mirror, Vec<InventoryDelta>) {
    let mut thin = m.clone();
    thin.thin(cx);
    let new = Mirror::full(updates.clone(), cx, Some(&thin));
    let d = thin.diff(&new, cx);
    let whole = Mirror::full(updates, cx, Some(m));
    assert_eq!(
        names(&d),
        names(&m.diff(&whole, cx)),
        "thinned and whole tell the same"
    );
    assert_eq!(d, m.diff(&whole, cx));
    assert_eq!(new.inventory(cx), whole.inventory(cx));
    (new, d)
}

#[test]
fn a_first_update_is_the_inventory_and_modifications_are_deltas() {
    let env = Env::new();
    let cx = env.cx();
    let m = Mirror::full(
        [
            enter_host("host-1"),
            enter_host("host-2"),
            enter_vm("vm-1", "host-1", "[ds] a/a.vmx"),
        ],
        &cx,
        None,
    );
    let inv = m.inventory(&cx);
    assert_eq!(inv.hosts.len(), 2);
    assert_eq!(inv.vms[&VmId::from("vm-1")].host, Some("host-1".into()));
    let mut m = m;
    // A host stops responding: one host delta; its VM's connection state changes nothing.
    let d = m.apply(
        [
            upd(
                ObjectUpdateKind::Modify,
                host("host-1"),
                &[("runtime.connectionState", Some(t("notResponding")))],
            ),
            upd(
                ObjectUpdateKind::Modify,
                vm("vm-1"),
                &[("runtime.connectionState", Some(t("disconnected")))],
            ),
        ],
        &cx,
    );
    assert_eq!(names(&d), vec!["host+ host-1"]);
    let InventoryDelta::HostUpsert(h) = &d[0] else {
        unreachable!()
    };
    assert_eq!(h.connection, ConnectionState::NotResponding);
    // A property becoming unset is removed.
    let d = m.apply(
        [upd(
            ObjectUpdateKind::Modify,
            vm("vm-1"),
            &[("runtime.powerState", None)],
        )],
        &cx,
    );
    let InventoryDelta::VmUpsert(v) = &d[0] else {
        unreachable!()
    };
    assert_eq!(v.power, PowerState::PoweredOff);
    // Leaving objects are removed; hosts last.
    let d = m.apply(
        [
            upd(ObjectUpdateKind::Leave, host("host-2"), &[]),
            upd(ObjectUpdateKind::Leave, vm("vm-1"), &[]),
            enter_vm("vm-2", "host-1", "[ds] b/b.vmx"),
        ],
        &cx,
    );
    assert_eq!(names(&d), vec!["vm+ vm-2 on host-1", "vm- vm-1", "host- host-2"]);
    assert!(m.props(&vm("vm-1")).is_none());
}

#[test]
fn snapshots_and_templates() {
    let env = Env::new();
    let cx = env.cx();
    let mut m = Mirror::full([enter_host("host-1")], &cx, None);
    let xml = br#"<val xmlns:xsi="x" xsi:type="VirtualMachineSnapshotInfo"><rootSnapshotList><snapshot type="VirtualMachineSnapshot">snapshot-1</snapshot><name>am-backup-1</name><createTime>2023-11-14T22:13:30Z</createTime></rootSnapshotList></val>"#;
    let tree = vsphere_soap::xml::parse(xml).unwrap().root;
    let mut e = enter_vm("vm-1", "host-1", "[ds] a/a.vmx");
    e.changes.push(PropertyChange {
        name: "snapshot".into(),
        op: PropertyChangeOp::Assign,
        val: Some(tree),
    });
    let d = m.apply([e], &cx);
    assert_eq!(names(&d), vec!["vm+ vm-1 on host-1", "snap vm-1 1"]);
    assert_eq!(
        m.inventory(&cx).snapshots[&VmId::from("vm-1")][0]
            .created
            .as_millis(),
        10_000
    );
    let d = m.apply(
        [upd(ObjectUpdateKind::Modify, vm("vm-1"), &[("snapshot", None)])],
        &cx,
    );
    assert_eq!(names(&d), vec!["snap vm-1 0"]);
    let d = m.apply(
        [upd(
            ObjectUpdateKind::Modify,
            vm("vm-1"),
            &[("config.template", Some(Value::Bool(true)))],
        )],
        &cx,
    );
    assert_eq!(names(&d), vec!["vm- vm-1"]);
}

#[test]
fn a_failed_over_vm_keeps_its_id_and_never_disappears() {
    let env = Env::new();
    let cx = env.cx();
    let mut m = Mirror::full(
        [
            enter_host("host-1"),
            enter_host("host-2"),
            enter_vm("vm-1", "host-1", "[ds] a/a.vmx"),
        ],
        &cx,
        None,
    );
    // The manager unregisters vm-1 to register it on host-2.
    unregistered(
        &env,
        "vm-1",
        "vm-1",
        "[ds] a/a.vmx",
        "name-vm-1",
        Some("host-1"),
        true,
    );
    let d = m.apply([upd(ObjectUpdateKind::Leave, vm("vm-1"), &[])], &cx);
    assert_eq!(
        names(&d),
        vec!["vm+ vm-1 on host-1"],
        "an orphan in a failover stays where it was, off"
    );
    assert_eq!(
        m.inventory(&cx).vms[&VmId::from("vm-1")].power,
        PowerState::PoweredOff
    );
    assert!(m.inventory(&cx).vms.contains_key("vm-1"));
    // Registered again as vm-57: it is vm-1, now on host-2.
    let d = m.apply([enter_vm("vm-57", "host-2", "[ds] a/a.vmx")], &cx);
    assert_eq!(names(&d), vec!["vm+ vm-1 on host-2"]);
    assert!(env.shared.lock().unwrap().orphan(&"vm-1".into()).is_none());
    let d = m.apply(
        [upd(
            ObjectUpdateKind::Modify,
            vm("vm-57"),
            &[("runtime.powerState", Some(t("poweredOff")))],
        )],
        &cx,
    );
    assert_eq!(names(&d), vec!["vm+ vm-1 on host-2"]);
    assert_eq!(m.inventory(&cx).vms.len(), 1);
    // A resync (new session) finds vm-57 and reports it as vm-1 again: nothing changes.
    let (_, d) = resync(
        &m,
        vec![enter_host("host-1"), enter_host("host-2"), {
            let mut e = enter_vm("vm-57", "host-2", "[ds] a/a.vmx");
            e.changes.push(PropertyChange {
                name: "runtime.powerState".into(),
                op: PropertyChangeOp::Assign,
                val: Some(t("poweredOff")),
            });
            e
        }],
        &cx,
    );
    assert!(d.is_empty(), "{:?}", names(&d));
    // Unregistered again (now as vm-57): it stays vm-1 until gone, then shows with no host.
    unregistered(
        &env,
        "vm-1",
        "vm-57",
        "[ds] a/a.vmx",
        "name-vm-1",
        Some("host-2"),
        false,
    );
    let d = m.apply(
        [upd(
            ObjectUpdateKind::Modify,
            vm("vm-57"),
            &[("runtime.powerState", Some(t("poweredOn")))],
        )],
        &cx,
    );
    assert_eq!(names(&d), vec!["vm+ vm-1 on host-2"]);
    let d = m.apply([upd(ObjectUpdateKind::Leave, vm("vm-57"), &[])], &cx);
    assert_eq!(names(&d), vec!["vm+ vm-1 on -"]);
    assert_eq!(m.inventory(&cx).vms.len(), 1);
}

#[test]
fn an_alias_learnt_late_renames_the_vm() {
    let env = Env::new();
    let cx = env.cx();
    let mut m = Mirror::full(
        [enter_host("host-1"), enter_vm("vm-57", "host-1", "[ds] a/a.vmx")],
        &cx,
        None,
    );
    env.shared
        .lock()
        .unwrap()
        .set_alias("vm-57", &"vm-1".into(), "[ds] a/a.vmx");
    let d = m.apply([], &cx);
    assert_eq!(names(&d), vec!["vm- vm-57", "vm+ vm-1 on host-1"]);
}

#[test]
fn an_unregistered_vm_shows_without_a_host() {
    let env = Env::new();
    let cx = env.cx();
    let mut m = Mirror::full(
        [enter_host("host-1"), enter_vm("vm-3", "host-1", "[ds] c/c.vmx")],
        &cx,
        None,
    );
    unregistered(&env, "vm-3", "vm-3", "[ds] c/c.vmx", "c", None, false);
    let d = m.apply([upd(ObjectUpdateKind::Leave, vm("vm-3"), &[])], &cx);
    assert_eq!(names(&d), vec!["vm+ vm-3 on -"]);
    // A resync keeps the orphan.
    let (again, d) = resync(&m, vec![enter_host("host-1")], &cx);
    assert!(again.inventory(&cx).vms.contains_key("vm-3"));
    assert!(d.is_empty());
}

#[test]
fn a_resync_reports_what_changed_while_away() {
    let env = Env::new();
    let cx = env.cx();
    let m = Mirror::full(
        [
            enter_host("host-1"),
            enter_host("host-2"),
            enter_vm("vm-1", "host-1", "[ds] a/a.vmx"),
            enter_vm("vm-2", "host-1", "[ds] b/b.vmx"),
        ],
        &cx,
        None,
    );
    let (_, d) = resync(
        &m,
        vec![
            enter_host("host-1"),
            enter_vm("vm-1", "host-1", "[ds] a/a.vmx"),
            enter_vm("vm-2", "host-1", "[ds] b/b.vmx"),
            enter_vm("vm-3", "host-1", "[ds] c/c.vmx"),
        ],
        &cx,
    );
    assert_eq!(names(&d), vec!["vm+ vm-3 on host-1", "host- host-2"]);
}

/// A `snapshot` property with one snapshot, `snapshot-{n}`.
fn snapshot_tree(n: u32) -> PropertyChange {
    let xml = format!(
        r#"<val xmlns:xsi="x" xsi:type="VirtualMachineSnapshotInfo"><rootSnapshotList><snapshot type="VirtualMachineSnapshot">snapshot-{n}</snapshot><name>am-backup-{n}</name><createTime>2023-11-14T22:13:30Z</createTime></rootSnapshotList></val>"#
    );
    PropertyChange {
        name: "snapshot".into(),
        op: PropertyChangeOp::Assign,
        val: Some(vsphere_soap::xml::parse(xml.as_bytes()).unwrap().root),
    }
}

fn with_snapshot(mut u: ObjectUpdate, n: u32) -> ObjectUpdate {
    u.changes.push(snapshot_tree(n));
    u
}

/// Applies `d` to `inv` (what the supervisor does) and checks it is what the mirror shows.
fn follow(inv: &mut Inventory, d: &[InventoryDelta], m: &Mirror, cx: &Cx<'_>) {
    d.iter().for_each(|d| inv.apply(d));
    assert_eq!(*inv, m.inventory(cx), "after {:?}", names(d));
}

#[test]
fn a_resync_reports_a_changed_vm_whole() {
    let env = Env::new();
    let cx = env.cx();
    let m = Mirror::full(
        [
            enter_host("host-1"),
            enter_host("host-2"),
            with_snapshot(enter_vm("vm-1", "host-1", "[ds] a/a.vmx"), 1),
            enter_vm("vm-2", "host-1", "[ds] b/b.vmx"),
            with_snapshot(enter_vm("vm-3", "host-1", "[ds] c/c.vmx"), 3),
        ],
        &cx,
        None,
    );
    // Meanwhile vm-1 moved, vm-2 got a snapshot, vm-3 lost its own, vm-4 came.
    let (new, d) = resync(
        &m,
        vec![
            enter_host("host-1"),
            enter_host("host-2"),
            with_snapshot(enter_vm("vm-1", "host-2", "[ds] a/a.vmx"), 1),
            with_snapshot(enter_vm("vm-2", "host-1", "[ds] b/b.vmx"), 2),
            enter_vm("vm-3", "host-1", "[ds] c/c.vmx"),
            enter_vm("vm-4", "host-2", "[ds] d/d.vmx"),
        ],
        &cx,
    );
    assert_eq!(
        names(&d),
        vec![
            "vm+ vm-1 on host-2",
            "vm+ vm-4 on host-2",
            "snap vm-2 1",
            "snap vm-3 0"
        ]
    );
    let InventoryDelta::VmUpsert(v) = &d[0] else {
        unreachable!()
    };
    assert_eq!(
        *v,
        new.inventory(&cx).vms[&VmId::from("vm-1")],
        "the vm whole, as `new` shows it"
    );
    let mut inv = m.inventory(&cx);
    follow(&mut inv, &d, &new, &cx);
    assert_eq!(inv.snapshots[&VmId::from("vm-2")][0].name, "am-backup-2");
    assert!(new.diff(&new, &cx).is_empty());
}

#[test]
fn an_orphan_ghost_survives_a_resync_with_its_snapshots() {
    let env = Env::new();
    let cx = env.cx();
    let mut m = Mirror::full(
        [
            enter_host("host-1"),
            with_snapshot(enter_vm("vm-1", "host-1", "[ds] a/a.vmx"), 1),
            enter_vm("vm-2", "host-1", "[ds] b/b.vmx"),
        ],
        &cx,
        None,
    );
    let mut inv = m.inventory(&cx);
    unregistered(
        &env,
        "vm-1",
        "vm-1",
        "[ds] a/a.vmx",
        "name-vm-1",
        Some("host-1"),
        false,
    );
    // Renamed and unregistered in one batch: it stays as it was last reported, off, on no host.
    let d = m.apply(
        [
            upd(
                ObjectUpdateKind::Modify,
                vm("vm-1"),
                &[("name", Some(t("renamed")))],
            ),
            upd(ObjectUpdateKind::Leave, vm("vm-1"), &[]),
        ],
        &cx,
    );
    assert_eq!(names(&d), vec!["vm+ vm-1 on -"]);
    let InventoryDelta::VmUpsert(ghost) = &d[0] else {
        unreachable!()
    };
    assert_eq!(ghost.name, "name-vm-1");
    assert_eq!(ghost.power, PowerState::PoweredOff);
    follow(&mut inv, &d, &m, &cx);
    assert_eq!(
        inv.snapshots[&VmId::from("vm-1")].len(),
        1,
        "the ghost keeps its snapshots"
    );
    // A resync (vCenter no longer lists it) keeps the ghost, snapshots and all: no change.
    let (again, d) = resync(
        &m,
        vec![enter_host("host-1"), enter_vm("vm-2", "host-1", "[ds] b/b.vmx")],
        &cx,
    );
    assert!(d.is_empty(), "{:?}", names(&d));
    assert_eq!(again.inventory(&cx), inv);
    // Registered again (as vm-9, with its snapshot): it is vm-1, on host-1 again.
    let mut m = again;
    let d = m.apply(
        [with_snapshot(enter_vm("vm-9", "host-1", "[ds] a/a.vmx"), 1)],
        &cx,
    );
    assert_eq!(names(&d), vec!["vm+ vm-1 on host-1"]);
    follow(&mut inv, &d, &m, &cx);
    assert!(env.shared.lock().unwrap().orphan(&"vm-1".into()).is_none());
}

#[test]
fn the_inventory_is_what_the_deltas_built() {
    let env = Env::new();
    let cx = env.cx();
    let mut m = Mirror::full(
        [
            enter_host("host-1"),
            enter_host("host-2"),
            enter_vm("vm-1", "host-1", "[ds] a/a.vmx"),
            with_snapshot(enter_vm("vm-2", "host-1", "[ds] b/b.vmx"), 2),
            enter_vm("vm-3", "host-2", "[ds] c/c.vmx"),
        ],
        &cx,
        None,
    );
    let mut inv = m.inventory(&cx);
    assert_eq!(inv.vms.len(), 3);
    assert_eq!(inv.snapshots.len(), 1);
    let steps: Vec<Vec<ObjectUpdate>> = vec![
        vec![upd(
            ObjectUpdateKind::Modify,
            vm("vm-1"),
            &[("runtime.host", Some(r("HostSystem", "host-2")))],
        )],
        vec![with_snapshot(upd(ObjectUpdateKind::Modify, vm("vm-1"), &[]), 7)],
        vec![upd(ObjectUpdateKind::Modify, vm("vm-2"), &[("snapshot", None)])],
        vec![upd(
            ObjectUpdateKind::Modify,
            vm("vm-3"),
            &[("config.template", Some(Value::Bool(true)))],
        )],
        vec![
            upd(ObjectUpdateKind::Leave, vm("vm-2"), &[]),
            enter_vm("vm-4", "host-1", "[ds] d/d.vmx"),
        ],
        vec![upd(ObjectUpdateKind::Leave, host("host-2"), &[])],
    ];
    for step in steps {
        let d = m.apply(step, &cx);
        assert!(!d.is_empty());
        follow(&mut inv, &d, &m, &cx);
    }
    // An alias learnt late renames a VM.
    env.shared
        .lock()
        .unwrap()
        .set_alias("vm-4", &"vm-40".into(), "[ds] d/d.vmx");
    let d = m.apply([], &cx);
    assert_eq!(names(&d), vec!["vm- vm-4", "vm+ vm-40 on host-1"]);
    follow(&mut inv, &d, &m, &cx);
    assert_eq!(
        inv.vms.keys().map(VmId::as_str).collect::<Vec<_>>(),
        vec!["vm-1", "vm-40"]
    );
}

#[test]
fn a_vm_two_morefs_show_is_shown_as_reported() {
    let env = Env::new();
    let cx = env.cx();
    let mut m = Mirror::full(
        [
            enter_host("host-1"),
            enter_host("host-2"),
            enter_vm("vm-1", "host-1", "[ds] a/a.vmx"),
        ],
        &cx,
        None,
    );
    let mut inv = m.inventory(&cx);
    unregistered(
        &env,
        "vm-1",
        "vm-1",
        "[ds] a/a.vmx",
        "name-vm-1",
        Some("host-1"),
        true,
    );
    // Registered on host-2 before its old registration is gone: both morefs are vm-1, the new one
    // reported last.
    let d = m.apply([enter_vm("vm-57", "host-2", "[ds] a/a.vmx")], &cx);
    assert_eq!(names(&d), vec!["vm+ vm-1 on host-2"]);
    follow(&mut inv, &d, &m, &cx);
    let d = m.apply([upd(ObjectUpdateKind::Leave, vm("vm-1"), &[])], &cx);
    assert!(d.is_empty(), "{:?}", names(&d));
    follow(&mut inv, &d, &m, &cx);
}

#[test]
fn an_orphan_still_shown_when_the_session_broke_survives_the_resync_as_it_was() {
    let env = Env::new();
    let cx = env.cx();
    let m = Mirror::full(
        [
            enter_host("host-1"),
            with_snapshot(enter_vm("vm-5", "host-1", "[ds] e/e.vmx"), 5),
            enter_vm("vm-6", "host-1", "[ds] f/f.vmx"),
        ],
        &cx,
        None,
    );
    // Unregistered in a failover; the session broke before its moref left.
    unregistered(
        &env,
        "vm-5",
        "vm-5",
        "[ds] e/e.vmx",
        "name-vm-5",
        Some("host-1"),
        true,
    );
    let (again, d) = resync(
        &m,
        vec![enter_host("host-1"), enter_vm("vm-6", "host-1", "[ds] f/f.vmx")],
        &cx,
    );
    assert_eq!(names(&d), vec!["vm+ vm-5 on host-1"], "shown off where it was");
    let inv = again.inventory(&cx);
    assert_eq!(inv.vms[&VmId::from("vm-5")].power, PowerState::PoweredOff);
    assert_eq!(inv.vms[&VmId::from("vm-5")].name, "name-vm-5");
    assert_eq!(inv.snapshots[&VmId::from("vm-5")].len(), 1, "with its snapshots");
}
